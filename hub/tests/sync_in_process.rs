//! Sync between a node replica and a hub served in-process over real gRPC on loopback port 0,
//! with in-memory stores: the protocol's behaviour without process start-up costs.

use std::sync::Arc;
use std::time::Duration;

use linkage_hub::convergence::Registry;
use linkage_hub::service::HubService;
use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::record::{Body, RecordKind, UrgentNoticeBody};
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::{MemoryStore, Store};
use linkage_node::sync::client::{LinkStatus, run_forever};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

fn replica(org: &str) -> Arc<Replica> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Arc::new(Replica::open(org, store, Arc::new(SystemClock), 1024).unwrap())
}

async fn start_hub() -> (String, Arc<Replica>, Arc<Registry>) {
    let hub = replica("district-hub");
    let registry = Arc::new(Registry::load(hub.clone()).unwrap());
    let office = Office::new(hub.clone(), Arc::new(Directory::beidaihe()));
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
    (url, hub, registry)
}

fn office(replica: &Arc<Replica>) -> Office {
    Office::new(replica.clone(), Arc::new(Directory::beidaihe()))
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_reaches_the_hub_and_its_other_party_only() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (url, hub, _registry) = start_hub().await;
    let niutouya = replica("130304103");
    let emergency = replica("bdh-yjgl");
    let haibin = replica("130304100");
    for node in [&niutouya, &emergency, &haibin] {
        tokio::spawn(run_forever(
            node.clone(),
            url.clone(),
            Arc::new(LinkStatus::default()),
        ));
    }

    let body = Body::UrgentNotice(UrgentNoticeBody {
        sender: "130304103".into(),
        receiver: "bdh-yjgl".into(),
        hazard: "gas".into(),
        ..Default::default()
    });
    let view = office(&niutouya)
        .create(RecordKind::UrgentNotice, vec![], body, Act::default())
        .await
        .unwrap();
    let id = view.record.id().to_owned();

    eventually("the hub to hold the notice", || hub.contains(&id).unwrap()).await;
    eventually("the Emergency Management Bureau to hold it", || {
        emergency.contains(&id).unwrap()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !haibin.contains(&id).unwrap(),
        "a non-party received the record"
    );
}
