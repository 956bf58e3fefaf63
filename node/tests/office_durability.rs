//! An office's writes and the disk: a write is answered only once a disk sync covers it, and
//! nobody hears of it before then. Driven over a `MemoryStore` whose syncs a test can slow
//! down or fail, as a loaded or failing disk would.
//!
//! - A write that changes nothing waits for the writes before it: its answer shows their
//!   state.
//! - A record's compaction, every 33rd change, shares its write's sync instead of holding the
//!   caller's thread for one of its own.
//! - A watch of the change log sees a write only once it is on disk, and a watch from the
//!   position `NodeInfo` gives sees a write that was waiting for its sync then.

use std::sync::Arc;
use std::time::Duration;

use linkage_node::office::{Act, Office, OfficeError};
use linkage_node::org::Directory;
use linkage_node::record::{Body, RecordKind};
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::{MemoryStore, Store};
use serde_json::json;
use tokio::sync::{mpsc, watch};

const HAIBIN: &str = "130304100";
const MARKET: &str = "bdh-scjg";

fn office_on(memory: &Arc<MemoryStore>) -> Office {
    let store: Arc<dyn Store> = memory.clone();
    let replica = Arc::new(Replica::open(HAIBIN, store, Arc::new(SystemClock), 64).unwrap());
    Office::new(replica, Arc::new(Directory::beidaihe()))
}

/// Serves `office` over gRPC on a loopback port of its own, until it stops by itself, with a
/// client of it.
async fn serve(
    office: Office,
) -> (
    tokio::task::JoinHandle<Result<(), linkage_node::server::NodeError>>,
    linkage_proto::v1::records_client::RecordsClient<tonic::transport::Channel>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(linkage_node::server::serve(
        listener,
        office,
        None,
        std::future::pending(),
    ));
    let client =
        linkage_proto::v1::records_client::RecordsClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
    (served, client)
}

async fn create_case(office: &Office, title: &str) -> String {
    let body = Body::from_json(RecordKind::Case, &json!({ "title": title }).to_string()).unwrap();
    office
        .create(RecordKind::Case, vec![MARKET.into()], body, Act::default())
        .await
        .unwrap()
        .record
        .id()
        .to_owned()
}

/// The same edit twice, the second while the first waits for a slow sync: the second changes
/// nothing, and is answered only once the first is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_changes_nothing_waits_for_the_one_before_it() {
    let memory = Arc::new(MemoryStore::new());
    let office = office_on(&memory);
    let id = create_case(&office, "before").await;
    memory.set_sync_delay(Duration::from_millis(400));

    let patch = json!({ "title": "after" });
    let first = tokio::spawn({
        let (office, id, patch) = (office.clone(), id.clone(), patch.clone());
        async move { office.edit_body(id, patch).await }
    });
    // The first edit is written and waits for its sync.
    while office
        .get(id.clone())
        .await
        .unwrap()
        .record
        .body
        .to_json_value()["title"]
        != "after"
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let syncs_before = memory.syncs().0;

    let second = office.edit_body(id.clone(), patch).await.unwrap();
    assert!(
        memory.syncs().0 > syncs_before,
        "the identical edit was answered before the first one's sync completed"
    );
    assert_eq!(second.record.body.to_json_value()["title"], "after");
    first.await.unwrap().unwrap();
}

/// After a sync failed, repeating the write that failed, which now changes nothing, fails too
/// while the disk does: it would otherwise confirm a state that may not be on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeating_a_write_whose_sync_failed_is_refused_while_the_disk_fails() {
    let memory = Arc::new(MemoryStore::new());
    let office = office_on(&memory);
    let id = create_case(&office, "before").await;
    memory.set_syncs_fail(true);

    let patch = json!({ "title": "after" });
    for attempt in ["first", "repeated"] {
        let error = office
            .edit_body(id.clone(), patch.clone())
            .await
            .expect_err(attempt);
        assert!(
            matches!(&error, OfficeError::Replica(_))
                && error.to_string().contains("disk sync failed"),
            "{attempt}: {error}"
        );
    }

    memory.set_syncs_fail(false);
    let view = office.edit_body(id.clone(), patch).await.unwrap();
    assert_eq!(view.record.body.to_json_value()["title"], "after");
}

/// The 33rd change of a record compacts it; with the office's write deferred, the compaction
/// is too, and the one sync the write waits for covers both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_shares_its_writes_disk_sync() {
    let memory = Arc::new(MemoryStore::new());
    let office = office_on(&memory);
    let id = create_case(&office, "edit 0").await;
    for n in 1..32 {
        office
            .edit_body(id.clone(), json!({ "title": format!("edit {n}") }))
            .await
            .unwrap();
    }
    assert!(memory.load(&id).unwrap().unwrap().snapshot.is_none());

    let syncs_before = memory.syncs().0;
    office
        .edit_body(id.clone(), json!({ "title": "edit 32" }))
        .await
        .unwrap();
    assert!(
        memory.load(&id).unwrap().unwrap().snapshot.is_some(),
        "the 33rd change compacts the record"
    );
    assert_eq!(memory.syncs().0, syncs_before + 1);
}

/// A watch of the change log (what `linkage watch` and the benchmark follow) sees a write only
/// once its sync has completed: the second of two writes, made while the first one's sync
/// runs, is not seen when the first is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_a_write_only_once_it_is_on_disk() {
    let memory = Arc::new(MemoryStore::new());
    let office = office_on(&memory);
    let (tx, mut changes) = mpsc::channel(16);
    let (_stop, stopping) = watch::channel(false);
    tokio::spawn(linkage_node::watch::run(
        office.replica().clone(),
        0,
        tx,
        stopping,
    ));
    memory.set_sync_delay(Duration::from_millis(400));

    let first = tokio::spawn({
        let office = office.clone();
        async move { create_case(&office, "first").await }
    });
    while office.replica().store().last_seq() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = tokio::spawn({
        let office = office.clone();
        async move { create_case(&office, "second").await }
    });

    let mut seen = Vec::new();
    for _ in 0..2 {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("the watch saw the write")
            .expect("the watch is running")
            .unwrap();
        let synced = memory.syncs().1;
        assert!(
            synced >= change.position,
            "position {} seen with the disk synced to {synced}",
            change.position
        );
        seen.push(change.summary.id.clone());
    }
    assert_eq!(seen, [first.await.unwrap(), second.await.unwrap()]);
}

/// A failed disk sync stops the node, saying why, so that its supervisor starts it again on a
/// reopened store: RocksDB takes no more writes once a sync of its log failed, and a
/// break-test's node ran on refusing every write while it said it was connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_disk_sync_stops_the_node_saying_why() {
    use linkage_node::server::NodeError;
    use linkage_proto::v1 as pb;

    let memory = Arc::new(MemoryStore::new());
    let (served, mut client) = serve(office_on(&memory)).await;
    memory.set_syncs_fail(true);

    let refused = client
        .create(pb::CreateRecordRequest {
            kind: "case".into(),
            body_json: json!({ "title": "on a failing disk" }).to_string(),
            ..Default::default()
        })
        .await
        .expect_err("a write whose sync failed is not acknowledged");
    assert!(
        refused.message().contains("disk sync failed"),
        "{refused:?}"
    );

    let outcome = tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("the node stopped by itself")
        .unwrap();
    assert!(
        matches!(&outcome, Err(NodeError::StoreFailed(why)) if why.contains("the disk failed")),
        "{outcome:?}"
    );
}

/// The store is closed as soon as its last user lets go, even just after a write: the sync
/// task that made the write durable holds the store only while it syncs. (It held the replica
/// until it returned, and a folder reopened right after a write was now and then still
/// locked: "the folder is in use".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_closes_when_its_last_user_lets_go_right_after_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("store");
    for round in 0..50 {
        let store: Arc<dyn Store> = Arc::new(
            linkage_node::store::RocksStore::open(&folder)
                .unwrap_or_else(|e| panic!("round {round}: {e}")),
        );
        let replica = Arc::new(Replica::open(HAIBIN, store, Arc::new(SystemClock), 64).unwrap());
        let office = Office::new(replica, Arc::new(Directory::beidaihe()));
        create_case(&office, &format!("round {round}")).await;
    }
}

/// `NodeInfo.last_seq` is the change log's head as watches see it: a write still waiting for
/// its disk sync is past it, and a watch started from it sees that write once it is on disk.
/// (It was the store's head, which counts such a write, and a watch from there missed it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_the_node_info_position_sees_a_write_that_was_waiting_for_its_sync() {
    use linkage_proto::v1 as pb;
    use tokio_stream::StreamExt;

    let memory = Arc::new(MemoryStore::new());
    let office = office_on(&memory);
    let (_served, mut client) = serve(office.clone()).await;

    memory.set_sync_delay(Duration::from_secs(2));
    let created = tokio::spawn(async move { create_case(&office, "waiting for the disk").await });
    while memory.last_seq() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let info = client
        .node_info(pb::NodeInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.last_seq, 0,
        "the write waiting for its sync is not yet in the log watches read"
    );

    let mut changes = client
        .watch(pb::WatchRequest {
            after: info.last_seq,
        })
        .await
        .unwrap()
        .into_inner();
    let change = tokio::time::timeout(Duration::from_secs(20), changes.next())
        .await
        .expect("the write reaches the watch once it is on disk")
        .expect("the watch goes on")
        .unwrap();
    assert_eq!(change.position, 1);
    assert_eq!(
        change.record.unwrap().envelope.unwrap().id,
        created.await.unwrap()
    );
}
