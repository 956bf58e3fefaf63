//! A node process stops on SIGTERM while an office's screen is watching it: the open
//! `Records.Watch` stream is ended, not waited for (a graceful shutdown waits for every open
//! stream, and a watch never ends on its own).

use std::time::{Duration, Instant};

use linkage_proto::v1 as pb;
use linkage_tests::NodeProcess;

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

    let pid = node.proc.pid().expect("the node runs").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "SIGTERM sent to {pid}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while node.proc.is_running() {
        assert!(
            Instant::now() < deadline,
            "the node still runs 10 s after SIGTERM with a watch open:\n{}",
            node.proc.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        node.proc.log_tail(5).contains("node stopped"),
        "the node shut down gracefully:\n{}",
        node.proc.log_tail(20)
    );
    // The watcher sees its stream end (cleanly or with the connection), not hang.
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message()).await;
    assert!(matches!(ended, Ok(Ok(None)) | Ok(Err(_))), "{ended:?}");
}
