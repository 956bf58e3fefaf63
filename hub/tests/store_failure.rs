//! A hub whose store fails a disk sync stops, saying why, so that its supervisor starts it
//! again on a reopened store: RocksDB takes no more writes once a sync of its log failed,
//! and a break-test's hub ran on for minutes refusing every node.

use std::sync::Arc;
use std::time::Duration;

use linkage_hub::config::HubConfig;
use linkage_hub::server::{self, HubError};
use linkage_node::calendar::PeriodPolicies;
use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::record::{Body, RecordKind, UrgentNoticeBody};
use linkage_node::store::{MemoryStore, Store};
use linkage_node::sync::client::{LinkStatus, run_forever};

mod common;

/// How long the hub may take to notice the failed sync and stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_disk_sync_stops_the_hub_saying_why() {
    let memory = Arc::new(MemoryStore::new());
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

    let haibin = common::replica("130304100");
    let link = Arc::new(LinkStatus::default());
    tokio::spawn(run_forever(
        haibin.clone(),
        format!("http://{addr}"),
        link.clone(),
    ));
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    while !link.connected.load(std::sync::atomic::Ordering::Relaxed) {
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
