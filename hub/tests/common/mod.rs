//! A hub served in-process over real gRPC on loopback port 0, with in-memory stores, and a
//! client that opens a sync session by hand: the set-up the hub's tests share.

// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;

use linkage_hub::convergence::Registry;
use linkage_hub::service::HubService;
use linkage_node::office::Office;
use linkage_node::org::Directory;
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::{MemoryStore, Store};
use linkage_node::sync::PROTOCOL_VERSION;
use linkage_proto::v1::sync_client::SyncClient;
use linkage_proto::v1::sync_frame::Frame;
use linkage_proto::v1::{Hello, SyncFrame};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Streaming;

/// A replica of `org` over a fresh in-memory store.
pub fn replica(org: &str) -> Arc<Replica> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Arc::new(Replica::open(org, store, Arc::new(SystemClock), 1024).unwrap())
}

/// A running hub: where it listens, its replica and its registry of nodes.
pub struct InProcessHub {
    pub url: String,
    pub replica: Arc<Replica>,
    pub registry: Arc<Registry>,
}

/// The hub's replica over a fresh in-memory store, keeping `docs` documents in memory and
/// frontiers as `linkage-hub` does.
pub fn hub_replica(docs: usize) -> Arc<Replica> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Arc::new(
        Replica::open("district-hub", store, Arc::new(SystemClock), docs)
            .unwrap()
            .keep_frontiers(1024),
    )
}

/// Serves a hub's `Sync` and `District` services with the Beidaihe directory.
pub async fn start_hub() -> InProcessHub {
    start_hub_keeping(1024).await
}

/// [`start_hub`], keeping `docs` documents in memory.
pub async fn start_hub_keeping(docs: usize) -> InProcessHub {
    let replica = hub_replica(docs);
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
    InProcessHub {
        url,
        replica,
        registry,
    }
}

/// Opens a sync session with the hub at `url` as `node_id` of `org` (its store id `store_id`),
/// and waits for the hub's hello. The sender keeps the session open.
pub async fn open_session(
    url: &str,
    org: &str,
    node_id: &str,
    store_id: &str,
) -> (mpsc::Sender<SyncFrame>, Streaming<SyncFrame>) {
    let mut client = SyncClient::connect(url.to_owned()).await.unwrap();
    let (outbound, rx) = mpsc::channel(16);
    outbound
        .send(SyncFrame {
            frame: Some(Frame::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                org: org.into(),
                node_id: node_id.into(),
                store_id: store_id.into(),
            })),
        })
        .await
        .unwrap();
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    match inbound.message().await.unwrap() {
        Some(SyncFrame {
            frame: Some(Frame::Hello(_)),
        }) => {}
        other => panic!("the hub did not answer with hello: {other:?}"),
    }
    (outbound, inbound)
}
