//! Sync between a node replica and a hub served in-process over real gRPC on loopback port 0,
//! with in-memory stores: the protocol's behaviour without process start-up costs.

use std::sync::Arc;
use std::time::Duration;

use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::record::{Body, RecordKind, UrgentNoticeBody};
use linkage_node::replica::Replica;
use linkage_node::sync::client::{LinkStatus, run_forever};

mod common;

use common::{replica, start_hub};

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
    let started = start_hub().await;
    let (url, hub) = (started.url, started.replica);
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
