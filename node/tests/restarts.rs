//! Many crash restarts of a real `linkage-node` on one folder: the write-ahead logs and table
//! files the store keeps must not grow with the number of restarts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::NodeBinary;
use linkage_proto::v1 as pb;
use linkage_proto::v1::records_client::RecordsClient;
use serde_json::json;
use tempfile::TempDir;
use tonic::transport::Endpoint;

const HAIBIN: &str = "130304100";
const RESTARTS: usize = 40;

fn files_ending(folder: &Path, suffix: &str) -> usize {
    std::fs::read_dir(folder)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(suffix))
        .count()
}

/// Each restart after a kill used to leave one more write-ahead log, and one more small table
/// file in each column family written since (both found by break-tests): they stay few, and
/// every record survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_forty_times_the_logs_and_table_files_stay_few() {
    let dir = TempDir::new().unwrap();
    let folder = dir.path();
    let store = folder.join("store");
    for restart in 0..RESTARTS {
        let mut node = NodeBinary::start(HAIBIN, folder);
        let channel = Endpoint::from_shared(node.url())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let mut records = RecordsClient::new(channel);
        records
            .create(pb::CreateRecordRequest {
                kind: "case".into(),
                body_json: json!({ "title": format!("case of restart {restart}") }).to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
        node.kill9();
    }

    let mut node = NodeBinary::start(HAIBIN, folder);
    let channel = Endpoint::from_shared(node.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let held = RecordsClient::new(channel)
        .list(pb::ListRecordsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .records
        .len();
    assert_eq!(held, RESTARTS);
    // The open asks for the flush that lets old logs go in RocksDB's background threads, so a
    // busy machine (CI beside other work) may still be flushing: give it up to 15 s. Without
    // that flush the logs never go (41 after 40 restarts).
    let mut logs = files_ending(&store, ".log");
    for _ in 0..150 {
        if logs <= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        logs = files_ending(&store, ".log");
    }
    assert!(
        logs <= 8,
        "{logs} write-ahead logs after {RESTARTS} restarts"
    );

    // A family is merged at open once it holds more than 8 small files; the open's own flush
    // may add one more. Counted read-only, so that no open merges them first.
    node.kill9();
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &store).unwrap();
    let db =
        rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), &store, &families, false)
            .unwrap();
    let mut per_family = std::collections::BTreeMap::<String, usize>::new();
    for file in db.live_files().unwrap() {
        *per_family.entry(file.column_family_name).or_default() += 1;
    }
    assert!(
        per_family.values().all(|files| *files <= 10),
        "table files per column family after {RESTARTS} restarts: {per_family:?}"
    );
}
