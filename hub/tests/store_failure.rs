//! A hub whose store fails a write or a disk sync stops, saying why, so that its supervisor
//! starts it again on a reopened store: RocksDB takes no more writes once one failed, and a
//! break-test's hub ran on for minutes refusing every node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use linkage_hub::config::HubConfig;
use linkage_hub::server::{self, HubError};
use linkage_node::calendar::PeriodPolicies;
use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::record::{Body, RecordKind, UrgentNoticeBody};
use linkage_node::replica::Replica;
use linkage_node::store::{MemoryStore, Store};
use linkage_node::sync::client::{LinkStatus, run_forever};
use linkage_proto::v1 as pb;
use linkage_proto::v1::district_client::DistrictClient;
use tokio::task::JoinHandle;

mod common;

/// How long the hub may take to notice the failure and stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves a hub over `memory` on a loopback port of its own.
async fn serve_hub(memory: &Arc<MemoryStore>) -> (JoinHandle<Result<(), HubError>>, SocketAddr) {
    let store: Arc<dyn Store> = memory.clone();
    let (listener, addr) = linkage_node::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = HubConfig {
        data_dir: "unused: the hub is served over an in-memory store".into(),
        listen: addr,
        directory: Directory::beidaihe(),
        addr_file: None,
        cache_docs: 1024,
        cache_frontiers: 1024,
        tls: None,
        periods: PeriodPolicies::default(),
        refill_from_nodes: false,
    };
    let served = tokio::spawn(server::serve(
        config,
        listener,
        addr,
        store,
        std::future::pending(),
    ));
    (served, addr)
}

/// Haibin Town's node, linked to the hub at `addr`.
fn haibin_linked_to(addr: SocketAddr) -> (Arc<Replica>, Arc<LinkStatus>) {
    let haibin = common::replica("130304100");
    let link = Arc::new(LinkStatus::default());
    tokio::spawn(run_forever(
        haibin.clone(),
        format!("http://{addr}"),
        link.clone(),
    ));
    (haibin, link)
}

/// Waits for the hub to stop by itself, and checks it says the disk failed and what to do.
async fn assert_stops_on_the_failed_disk(served: JoinHandle<Result<(), HubError>>) {
    let outcome = tokio::time::timeout(STOP_TIMEOUT, served)
        .await
        .expect("the hub stopped by itself")
        .unwrap();
    assert!(
        matches!(&outcome, Err(HubError::StoreFailed(why)) if why.contains("the disk failed")),
        "{outcome:?}"
    );
    assert!(
        outcome
            .unwrap_err()
            .to_string()
            .contains("takes no more writes until it is reopened"),
        "the error says what to do"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_disk_sync_of_a_record_stops_the_hub_saying_why() {
    let memory = Arc::new(MemoryStore::new());
    let (served, addr) = serve_hub(&memory).await;
    let (haibin, link) = haibin_linked_to(addr);
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    while !link.connected.load(Ordering::Relaxed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The disk fails; the node's next record is the hub's next write, and its sync fails.
    memory.set_syncs_fail(true);
    let body = Body::UrgentNotice(UrgentNoticeBody {
        sender: "130304100".into(),
        receiver: "bdh-yjgl".into(),
        hazard: "gas cylinders in a basement".into(),
        ..Default::default()
    });
    Office::new(haibin, Arc::new(Directory::beidaihe()))
        .create(RecordKind::UrgentNotice, vec![], body, Act::default())
        .await
        .unwrap();

    assert_stops_on_the_failed_disk(served).await;
}

/// A hub with no records flowing stops too: the first write after the disk failed is a
/// node's hello (where the hub notes the node's store), and that failure is the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_of_a_hello_stops_the_hub_saying_why() {
    let memory = Arc::new(MemoryStore::new());
    let (served, addr) = serve_hub(&memory).await;
    // Serving once it answers: its start-up writes are done, and a failure now is not one
    // of starting.
    let mut district = DistrictClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    district
        .convergence(pb::ConvergenceRequest::default())
        .await
        .unwrap();

    memory.set_syncs_fail(true);
    let _haibin = haibin_linked_to(addr);

    assert_stops_on_the_failed_disk(served).await;
}
