//! Processes stop on SIGTERM while clients hold streams open. A graceful shutdown waits for
//! every open stream, and none of these ends on its own: a node's `Records.Watch` (an office's
//! screen), and on the hub a node's sync session and a department's following feed.

use std::time::{Duration, Instant};

use linkage_proto::v1 as pb;
use linkage_proto::v1::feeds_client::FeedsClient;
use linkage_tests::{HubProcess, NodeProcess, channel, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_an_open_watch_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = tokio::task::block_in_place(|| {
        NodeProcess::start("130304100", &dir.path().join("node"), None)
    })
    .expect("the node starts");
    let mut records = node.records().await.unwrap();
    records
        .create(pb::CreateRecordRequest {
            kind: "shared_info".into(),
            body_json: r#"{"category": 1, "title": "t", "content": "c", "formed_at_ms": 1790000000000, "related_record": ""}"#.into(),
            ..Default::default()
        })
        .await
        .expect("a record is created");
    let mut watch = records
        .watch(pb::WatchRequest { after: 0 })
        .await
        .expect("the watch opens")
        .into_inner();
    // Caught up and idle, as an office's screen is most of the day.
    watch
        .message()
        .await
        .expect("the stream answers")
        .expect("the record is sent");

    stop_gracefully(&mut node.proc, "node stopped", "a watch open").await;
    // The watcher is told the node is stopping (so it resumes rather than taking the end for
    // the end of the log), not left hanging.
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message()).await;
    match ended {
        Ok(Err(status)) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(status.message().contains("shutting down"), "{status:?}");
        }
        other => panic!("the watch should end saying the node stops: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_with_nodes_connected_and_a_feed_following_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, node) = tokio::task::block_in_place(|| {
        let hub = HubProcess::start(&dir.path().join("hub"), "127.0.0.1:0")?;
        let node = NodeProcess::start("130304100", &dir.path().join("node"), Some(&hub.url()))?;
        anyhow::Ok((hub, node))
    })
    .expect("the hub and a node start");
    let mut records = node.records().await.unwrap();
    let created = records
        .create(pb::CreateRecordRequest {
            kind: "shared_info".into(),
            body_json: r#"{"category": 1, "title": "t", "content": "c", "formed_at_ms": 1790000000000, "related_record": ""}"#.into(),
            ..Default::default()
        })
        .await
        .expect("a record is created")
        .into_inner();

    // A department's system follows its feed, and has caught up with the node's record, so the
    // node's session is open and the feed is idle.
    let mut feeds = FeedsClient::new(channel(&hub.url()).await.unwrap());
    let mut feed = feeds
        .subscribe(pb::FeedRequest {
            org: "130304100".into(),
            ..Default::default()
        })
        .await
        .expect("the feed opens")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(30), feed.message())
        .await
        .expect("the node's record reaches the feed within 30 s")
        .expect("the feed answers")
        .expect("an event");
    let id = created.envelope.unwrap().id;
    assert_eq!(first.record.unwrap().envelope.unwrap().id, id);
    node_connected(&hub).await;

    stop_gracefully(
        &mut hub.proc,
        "hub stopped",
        "a node connected and a feed following",
    )
    .await;

    let ended = tokio::time::timeout(Duration::from_secs(5), feed.message()).await;
    match ended {
        Ok(Err(status)) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        other => panic!("the feed should end saying the hub stops: {other:?}"),
    }
    // The node lives on without its hub, holding what it had.
    let held = records
        .get(pb::GetRecordRequest { id: id.clone() })
        .await
        .expect("the node still answers with its hub gone");
    assert_eq!(held.into_inner().envelope.unwrap().id, id);
}

/// Waits until the hub reports a node connected.
async fn node_connected(hub: &HubProcess) {
    let district = hub.district().await.unwrap();
    eventually("the node to be connected", Duration::from_secs(30), || {
        let mut district = district.clone();
        async move {
            let report = district
                .convergence(pb::ConvergenceRequest {})
                .await?
                .into_inner();
            Ok(report.nodes.iter().any(|n| n.connected).then_some(()))
        }
    })
    .await
    .unwrap();
}

/// Sends SIGTERM and waits up to 10 s for the process to exit, having logged `farewell`.
async fn stop_gracefully(proc: &mut linkage_tests::Spawned, farewell: &str, holding: &str) {
    let pid = proc.pid().expect("the process runs").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "SIGTERM sent to {pid}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while proc.is_running() {
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM with {holding}:\n{}",
            proc.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proc.log_tail(5).contains(farewell),
        "shut down gracefully ({farewell:?} logged):\n{}",
        proc.log_tail(20)
    );
}

/// A node that stopped answering (a frozen process, as on a half-open link) does not hold the
/// hub's stop until HTTP/2 keepalive gives up on it (about 25 s): the hub waits a short grace
/// for connections to close, then drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_with_a_frozen_node_connected_stops_within_its_grace() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, mut node) = tokio::task::block_in_place(|| {
        let hub = HubProcess::start(&dir.path().join("hub"), "127.0.0.1:0")?;
        let node = NodeProcess::start("130304100", &dir.path().join("node"), Some(&hub.url()))?;
        anyhow::Ok((hub, node))
    })
    .expect("the hub and a node start");
    node_connected(&hub).await;

    let node_pid = node.proc.pid().expect("the node runs").to_string();
    let signal = |signal: &str, pid: &str| {
        let sent = std::process::Command::new("kill")
            .args([signal, pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "{signal} sent to {pid}");
    };
    signal("-STOP", &node_pid);
    let started = Instant::now();
    stop_gracefully(&mut hub.proc, "hub stopped", "a frozen node connected").await;
    let took = started.elapsed();
    signal("-CONT", &node_pid);
    node.proc.kill9();
    assert!(
        took < Duration::from_secs(10),
        "the hub took {took:?} to stop with a frozen node connected"
    );
}
