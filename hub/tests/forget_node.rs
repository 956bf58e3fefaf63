//! `District.ForgetNode`: the operator retires an offline node (one started again on an empty
//! data folder is a new node, and its old entry would keep the district "not converged"
//! forever). Only an offline node, named by its id or an unambiguous start of it; the node
//! stays gone after the hub restarts.
//!
//! Hand-driven clients stand in for the nodes; the hub runs in-process over real gRPC on
//! loopback port 0 with an in-memory store.

use std::sync::Arc;
use std::time::Duration;

use linkage_hub::convergence::Registry;
use linkage_hub::service::HubService;
use linkage_node::office::Office;
use linkage_node::org::Directory;
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::{MemoryStore, Store};
use linkage_node::sync::PROTOCOL_VERSION;
use linkage_proto::v1::district_client::DistrictClient;
use linkage_proto::v1::sync_client::SyncClient;
use linkage_proto::v1::sync_frame::Frame;
use linkage_proto::v1::{ForgetNodeRequest, Hello, SyncFrame};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Code;
use tonic::transport::Channel;

const HAIBIN: &str = "130304100";

struct Hub {
    url: String,
    replica: Arc<Replica>,
    registry: Arc<Registry>,
}

async fn start_hub() -> Hub {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let replica =
        Arc::new(Replica::open("district-hub", store, Arc::new(SystemClock), 1024).unwrap());
    let registry = Arc::new(Registry::load(replica.clone()).unwrap());
    let office = Office::new(replica.clone(), Arc::new(Directory::beidaihe()));
    let service = HubService::new(office, registry.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service.sync_server())
            .add_service(service.district_server())
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    Hub {
        url,
        replica,
        registry,
    }
}

/// Opens a sync session as `node_id` and returns the sender that keeps it open.
async fn connect(url: &str, node_id: &str) -> mpsc::Sender<SyncFrame> {
    let mut client = SyncClient::connect(url.to_owned()).await.unwrap();
    let (outbound, rx) = mpsc::channel(8);
    outbound
        .send(SyncFrame {
            frame: Some(Frame::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                org: HAIBIN.into(),
                node_id: node_id.into(),
                store_id: node_id.into(),
            })),
        })
        .await
        .unwrap();
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        inbound.message().await.unwrap().and_then(|f| f.frame),
        Some(Frame::Hello(_))
    ));
    // Keep reading so the hub's session is not held up by a full stream.
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    outbound
}

async fn wait_connected(registry: &Registry, node_id: &str, connected: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let report = registry.report().unwrap();
        if report
            .nodes
            .iter()
            .any(|n| n.node_id == node_id && n.connected == connected)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{node_id} never became connected={connected}: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn forget(
    district: &mut DistrictClient<Channel>,
    node: &str,
) -> Result<String, tonic::Status> {
    district
        .forget_node(ForgetNodeRequest {
            node_id: node.into(),
        })
        .await
        .map(|answer| answer.into_inner().org)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_node_is_forgotten_by_an_unambiguous_id_and_stays_gone() {
    let hub = start_hub().await;
    let mut district = DistrictClient::connect(hub.url.clone()).await.unwrap();
    let replaced = connect(&hub.url, "aaaa-replaced-folder").await;
    let other = connect(&hub.url, "aaab-other-device").await;
    wait_connected(&hub.registry, "aaaa-replaced-folder", true).await;

    let refused = forget(&mut district, "aaaa-replaced-folder")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("connected"),
        "{}",
        refused.message()
    );

    drop(replaced);
    drop(other);
    wait_connected(&hub.registry, "aaaa-replaced-folder", false).await;
    wait_connected(&hub.registry, "aaab-other-device", false).await;

    let ambiguous = forget(&mut district, "aaa").await.unwrap_err();
    assert_eq!(ambiguous.code(), Code::InvalidArgument);
    for id in ["aaaa-replaced-folder", "aaab-other-device"] {
        assert!(ambiguous.message().contains(id), "{}", ambiguous.message());
    }
    let unknown = forget(&mut district, "zzz").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("zzz"), "{}", unknown.message());

    assert_eq!(forget(&mut district, "aaaa").await.unwrap(), HAIBIN);
    let ids = |registry: &Registry| -> Vec<String> {
        registry
            .report()
            .unwrap()
            .nodes
            .into_iter()
            .map(|n| n.node_id)
            .collect()
    };
    assert_eq!(ids(&hub.registry), ["aaab-other-device"]);
    // A hub restarted over the same store does not bring it back.
    let reloaded = Registry::load(hub.replica.clone()).unwrap();
    assert_eq!(ids(&reloaded), ["aaab-other-device"]);
}
