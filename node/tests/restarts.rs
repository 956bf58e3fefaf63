//! Many crash restarts of a real `linkage-node` on one folder: the write-ahead logs the store
//! keeps must not grow with the number of restarts.

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

/// Each restart after a kill used to leave one more write-ahead log (found by a break-test):
/// they stay few, and every record survives.
///
/// FIXME: the table files still grow, by two to four per restart with a write (96–162
/// after these 40, as many as with the flush at open before): each restart's flush writes
/// small files that RocksDB moves to the bottom level whole when they do not overlap, and
/// never merges (`RocksStore::flush_replayed_logs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_forty_times_the_write_ahead_logs_stay_few() {
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

    let node = NodeBinary::start(HAIBIN, folder);
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
    let logs = files_ending(&store, ".log");
    assert!(
        logs <= 8,
        "{logs} write-ahead logs after {RESTARTS} restarts"
    );
}
