//! The sync session's message economy, driven frame by frame: one side is a real session over
//! a real replica, the other is this test, reading and writing the frames.
//!
//! - A record the peer has never confirmed is offered whole in the first message, so it takes
//!   one message to arrive instead of heads, a request and then the document.
//! - The first offer of a record at given heads is made once and shared by every session.
//! - What the peer confirmed is written to the store when the session ends, although the
//!   cursor is written lazily while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use automerge::sync::{Message, MessageVersion, State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeMetadata, ReadDoc};
use futures::StreamExt;
use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::record::doc;
use linkage_node::record::{Body, Record, RecordKind};
use linkage_node::replica::{Replica, ReplicaError, Summary, SystemClock};
use linkage_node::store::{MemoryStore, PeerLog, Store};
use linkage_node::sync::session::{self, Before, SessionContext, TrustHub};
use linkage_node::workflow::RuleViolation;
use linkage_proto::v1::sync_frame::Frame;
use linkage_proto::v1::{DocSync, OfferedRecord, SyncFrame};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

const HAIBIN: &str = "130304100";
const MARKET: &str = "bdh-scjg";
const PEER: &str = "test-peer";

fn replica(org: &str) -> Arc<Replica> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Arc::new(Replica::open(org, store, Arc::new(SystemClock), 64).unwrap())
}

async fn create_case(replica: &Arc<Replica>, title: &str) -> String {
    let office = Office::new(replica.clone(), Arc::new(Directory::beidaihe()));
    let body = Body::from_json(RecordKind::Case, &format!(r#"{{"title": "{title}"}}"#)).unwrap();
    office
        .create(RecordKind::Case, vec![MARKET.into()], body, Act::default())
        .await
        .unwrap()
        .record
        .id()
        .to_owned()
}

/// A copy of `doc` with one body field put by an actor of `org`, as that office's edit.
fn put_body_field(doc: &Automerge, org: &str, field: &str, value: &str) -> Automerge {
    let mut copy = doc.fork().with_actor(doc::actor_for(org));
    copy.transact::<_, _, automerge::AutomergeError>(|tx| {
        let (_, body) = tx
            .get(automerge::ROOT, "body")?
            .expect("a record has a body");
        tx.put(&body, field, value)
    })
    .unwrap();
    copy
}

/// Two cases made by Haibin: one edited by a single chain of changes, and one whose title two
/// offices changed at once. Each with its document.
async fn clean_and_conflicted(origin: &Arc<Replica>) -> [(String, Automerge); 2] {
    let clean_id = create_case(origin, "one chain").await;
    let forked_id = create_case(origin, "edited twice at once").await;
    let clean = origin.read(&clean_id, Automerge::clone).unwrap().unwrap();
    let base = origin.read(&forked_id, Automerge::clone).unwrap().unwrap();
    let mut forked = put_body_field(&base, HAIBIN, "title", "by the township");
    forked
        .merge(&mut put_body_field(&base, MARKET, "title", "by the bureau"))
        .unwrap();
    [(clean_id, clean), (forked_id, forked)]
}

/// Merges `doc` into `replica`'s copy of record `id` (made if missing), as one change.
fn merge_into(replica: &Replica, id: &str, doc: &Automerge) {
    let mut incoming = doc.clone();
    replica
        .change_unsynced(id, true, |ours| {
            ours.merge(&mut incoming)?;
            anyhow::Ok(((), Default::default()))
        })
        .unwrap();
}

/// What a session of `replica` passing `gate` needs, with this test as its peer.
fn context(replica: &Arc<Replica>, gate: Arc<dyn session::Gate>) -> SessionContext {
    SessionContext {
        replica: replica.clone(),
        peer_key: PEER.into(),
        peer_org: MARKET.into(),
        gate,
        figures: Default::default(),
        log_watch: None,
        offer_summaries: false,
    }
}

/// A session of `replica` with this test as its peer.
struct Peer {
    to_session: mpsc::Sender<SyncFrame>,
    from_session: mpsc::Receiver<SyncFrame>,
    session: JoinHandle<Result<(), linkage_node::sync::SyncError>>,
    /// What the session reports of itself (the hub's convergence view reads these).
    figures: session::FiguresHandle,
}

fn start_session(replica: &Arc<Replica>) -> Peer {
    start_watched_session(replica, None)
}

/// [`start_session`], telling `log_watch` when the peer saw the replica's log reach further.
fn start_watched_session(
    replica: &Arc<Replica>,
    log_watch: Option<Arc<dyn session::LogWatch>>,
) -> Peer {
    let (to_session, inbound) = mpsc::channel(64);
    let (outbound, from_session) = mpsc::channel(64);
    let ctx = SessionContext {
        log_watch,
        ..context(replica, Arc::new(TrustHub))
    };
    let figures = ctx.figures.clone();
    let inbound = ReceiverStream::new(inbound).map(Ok::<_, tonic::Status>);
    let session = tokio::spawn(session::run(ctx, inbound, outbound));
    Peer {
        figures,
        to_session,
        from_session,
        session,
    }
}

impl Peer {
    /// The next sync message the session sends for `id`, skipping progress reports.
    async fn next_message(&mut self, id: &str) -> Message {
        let frame = self.next_frame(id).await;
        Message::decode(&session::message_bytes(&frame).unwrap()).unwrap()
    }

    /// The first frame from the session that `pick` makes something of, skipping the others;
    /// fails naming `what` if none comes `within`.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(Frame) -> Option<T>,
    ) -> T {
        let wait = async {
            loop {
                let frame = self.from_session.recv().await.expect("session is running");
                if let Some(found) = frame.frame.and_then(&mut pick) {
                    return found;
                }
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| panic!("{what} within {within:?}"))
    }

    /// The next frame carrying a sync message for `id`, as it came (encoding and all).
    async fn next_frame(&mut self, id: &str) -> DocSync {
        self.wait_for(
            "the session offered the record",
            Duration::from_secs(30),
            |frame| match frame {
                Frame::Doc(doc) if doc.record_id == id && !doc.message.is_empty() => Some(doc),
                _ => None,
            },
        )
        .await
    }

    /// The id of the next record the session offers, whichever it is.
    async fn next_any_record(&mut self) -> String {
        self.wait_for(
            "the session offered a record",
            Duration::from_secs(30),
            |frame| match frame {
                Frame::Doc(doc) if !doc.message.is_empty() => Some(doc.record_id),
                _ => None,
            },
        )
        .await
    }

    /// The record id of the next record frame (a message or an ack), whichever it is.
    async fn next_any_record_frame(&mut self) -> String {
        self.wait_for(
            "the session sent a record frame",
            Duration::from_secs(30),
            |frame| match frame {
                Frame::Doc(doc) => Some(doc.record_id),
                _ => None,
            },
        )
        .await
    }

    /// Waits for the session's ack of `id` (a record frame without a message), which it sends
    /// once it has applied a reply that leaves nothing to send; returns the heads it reports.
    async fn wait_ack(&mut self, id: &str) -> Vec<Vec<u8>> {
        self.wait_for(
            "the session acked the peer's reply",
            Duration::from_secs(10),
            |frame| match frame {
                Frame::Doc(doc) if doc.record_id == id && doc.message.is_empty() => Some(doc.heads),
                _ => None,
            },
        )
        .await
    }

    /// Waits for the session's refusal of `id`; returns its rule.
    async fn wait_rejected(&mut self, id: &str) -> String {
        self.wait_for(
            "the session refused the record",
            Duration::from_secs(10),
            |frame| match frame {
                Frame::Rejected(rejected) if rejected.record_id == id => Some(rejected.rule),
                _ => None,
            },
        )
        .await
    }

    /// Takes record `id` whole from the session's first offer into an empty copy, answers, and
    /// waits for the ack the session sends once it has applied the answer: the record is then
    /// confirmed.
    async fn take_whole(&mut self, id: &str) {
        let mut copy = Automerge::new();
        let mut state = State::new();
        copy.receive_sync_message(&mut state, self.next_message(id).await)
            .unwrap();
        self.send(id, copy.generate_sync_message(&mut state).unwrap())
            .await;
        self.wait_ack(id).await;
    }

    async fn send(&self, id: &str, message: Message) {
        self.send_offered(id, message, None).await;
    }

    /// Sends `message` for `id` carrying `offered`, as a hub's first offer does.
    async fn send_offered(&self, id: &str, message: Message, offered: Option<OfferedRecord>) {
        let frame = SyncFrame {
            frame: Some(Frame::Doc(DocSync {
                record_id: id.to_owned(),
                message: message.encode(),
                heads: Vec::new(),
                offered,
                ..Default::default()
            })),
        };
        self.to_session.send(frame).await.unwrap();
    }
}

#[tokio::test]
async fn a_record_the_peer_never_confirmed_arrives_whole_in_the_first_message() {
    let office = replica(HAIBIN);
    let id = create_case(&office, "first offer").await;
    let mut peer = start_session(&office);

    let first = peer.next_message(&id).await;
    assert!(
        !first.changes.is_empty(),
        "the first message carries the document, not only heads"
    );

    // Applied to an empty document, that one message is the whole record.
    let mut copy = Automerge::new();
    let mut state = State::new();
    copy.receive_sync_message(&mut state, first).unwrap();
    let ours = office.read(&id, Automerge::get_heads).unwrap().unwrap();
    assert_eq!(copy.get_heads(), ours);
}

#[tokio::test]
async fn a_record_the_peer_confirmed_is_offered_by_heads_after_a_change() {
    let office = replica(HAIBIN);
    let id = create_case(&office, "confirmed").await;
    // Automerge sends the whole document again when a peer lacks over a third of its
    // changes; with five, one new change travels alone.
    let edit = Office::new(office.clone(), Arc::new(Directory::beidaihe()));
    for n in 0..4 {
        let patch = serde_json::json!({ "title": format!("draft {n}") });
        edit.edit_body(id.clone(), patch).await.unwrap();
    }
    let mut peer = start_session(&office);

    // The peer takes the record and says so with its reply.
    let mut copy = Automerge::new();
    let mut state = State::new();
    let first = peer.next_message(&id).await;
    let whole = first.clone().encode().len();
    copy.receive_sync_message(&mut state, first).unwrap();
    let reply = copy.generate_sync_message(&mut state).unwrap();
    peer.send(&id, reply).await;
    peer.wait_ack(&id).await;
    assert!(
        office
            .store()
            .peer_state(PEER, &id)
            .unwrap()
            .is_some_and(|bytes| State::decode(&bytes).is_ok()),
        "the confirmation was persisted"
    );

    // An edit is then offered as what changed, not the whole document again.
    edit.edit_body(id.clone(), serde_json::json!({"title": "edited"}))
        .await
        .unwrap();
    let next = peer.next_message(&id).await;
    let incremental = next.clone().encode().len();
    assert!(
        incremental < whole,
        "the edit's message ({incremental} bytes) is smaller than the whole record ({whole} bytes)"
    );
    copy.receive_sync_message(&mut state, next).unwrap();
    let ours = office.read(&id, Automerge::get_heads).unwrap().unwrap();
    assert_eq!(copy.get_heads(), ours, "the peer holds the edit");
}

#[tokio::test]
async fn the_first_offer_of_a_record_is_made_once_for_every_session() {
    let hub = replica(HAIBIN);
    let id = create_case(&hub, "memo").await;
    let made = AtomicUsize::new(0);
    let derive = |_: &Automerge| made.fetch_add(1, Ordering::SeqCst);

    let first = hub.read_memo(&id, derive).unwrap().unwrap();
    let again = hub.read_memo(&id, derive).unwrap().unwrap();
    assert_eq!(
        made.load(Ordering::SeqCst),
        1,
        "made once at the same heads"
    );
    assert!(Arc::ptr_eq(&first, &again), "and shared");

    let office = Office::new(hub.clone(), Arc::new(Directory::beidaihe()));
    office
        .edit_body(id.clone(), serde_json::json!({"title": "changed"}))
        .await
        .unwrap();
    hub.read_memo(&id, derive).unwrap().unwrap();
    assert_eq!(made.load(Ordering::SeqCst), 2, "made again after a change");
    assert!(hub.read_memo("missing", derive).unwrap().is_none());
}

#[tokio::test]
async fn what_the_peer_confirmed_is_written_when_the_session_ends() {
    let office = replica(HAIBIN);
    let id = create_case(&office, "cursor").await;
    let mut peer = start_session(&office);
    peer.take_whole(&id).await;

    let Peer {
        to_session,
        from_session,
        session,
        ..
    } = peer;
    drop((to_session, from_session));
    let ended = tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("the session ends when the link closes")
        .unwrap();
    assert!(
        ended.is_err(),
        "a closed link ends the session with an error"
    );
    let logged = office.store().last_seq();
    assert_eq!(
        office.store().cursor(PEER).unwrap(),
        logged,
        "the cursor covers the confirmed record"
    );
}

impl Peer {
    /// Reports the end of the peer's change log, as a session does every few seconds, and
    /// waits until the session has taken the report in.
    async fn report_log_end(&self, last_seq: u64) {
        self.report(linkage_proto::v1::Progress {
            last_seq,
            ..Default::default()
        })
        .await;
    }

    /// Reports that this peer saw the session's own change log, named `log` (empty: unnamed),
    /// reach `seen`, and waits until the session has taken the report in.
    async fn report_seen_log_end(&self, seen: u64, log: &str) {
        self.report(linkage_proto::v1::Progress {
            your_last_seq_seen: seen,
            your_log_id: log.into(),
            ..Default::default()
        })
        .await;
    }

    async fn report(&self, progress: linkage_proto::v1::Progress) {
        self.figures.lock().unwrap().peer_reported = false;
        let frame = SyncFrame {
            frame: Some(Frame::Progress(progress)),
        };
        self.to_session.send(frame).await.unwrap();
        let taken = async {
            while !self.figures.lock().unwrap().peer_reported {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), taken)
            .await
            .expect("the session took the report in within 10 s");
    }

    /// The next progress report the session sends.
    async fn next_report(&mut self) -> linkage_proto::v1::Progress {
        let wait = async {
            loop {
                let frame = self.from_session.recv().await.expect("session is running");
                if let Some(Frame::Progress(progress)) = frame.frame {
                    return progress;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the session reported within 10 s")
    }

    /// Closes the link and waits for the session to write what it knows and end.
    async fn close(self) {
        let Peer {
            to_session,
            from_session,
            session,
            ..
        } = self;
        drop((to_session, from_session));
        let _ = tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("the session ends when the link closes");
    }
}

/// A peer whose store was restored from an older copy reports a change log shorter than it
/// once did: it may lack what it confirmed since, so what was kept of it is dropped and every
/// record is offered again. A peer reporting the same log end is not.
#[tokio::test]
async fn a_peer_whose_change_log_went_back_is_offered_everything_again() {
    let office = replica(HAIBIN);
    let id = create_case(&office, "confirmed before the copy was restored").await;
    let mut peer = start_session(&office);
    peer.take_whole(&id).await;
    peer.report_log_end(7).await;
    peer.close().await;
    assert_eq!(office.store().peer_log(PEER).unwrap().end, 7);
    assert!(office.store().cursor(PEER).unwrap() > 0);

    // The same log end: the confirmed record is not offered again, only the new one.
    let mut peer = start_session(&office);
    peer.report_log_end(7).await;
    let later = create_case(&office, "made after").await;
    let first_offered = peer.next_any_record().await;
    assert_eq!(
        first_offered, later,
        "the confirmed record was offered again"
    );
    peer.close().await;

    // A shorter log: everything again, and the old cursor and log end are gone.
    let mut peer = start_session(&office);
    peer.report_log_end(3).await;
    let again = peer.next_message(&id).await;
    assert!(!again.changes.is_empty(), "offered whole, as to a new peer");
    peer.close().await;
    assert_eq!(office.store().peer_log(PEER).unwrap().end, 3);
    assert_eq!(office.store().cursor(PEER).unwrap(), 0);
}

/// A hub renames its log only when it found its store gone back. An office offline through
/// that comes back after the renamed log grew past the end it knew: the name alone says the
/// hub may lack what it confirmed, so everything is offered again.
#[tokio::test]
async fn a_peer_whose_log_was_renamed_is_offered_everything_again() {
    let office = replica(HAIBIN);
    let id = create_case(&office, "confirmed by the hub before its restore").await;
    let mut peer = start_session(&office);
    peer.take_whole(&id).await;
    peer.report(named_log(7, "log-1")).await;
    peer.close().await;

    // Further along the same log: nothing offered again.
    let mut peer = start_session(&office);
    peer.report(named_log(9, "log-1")).await;
    let later = create_case(&office, "made after").await;
    assert_eq!(peer.next_any_record().await, later);
    peer.close().await;

    // Further along, but a new log: everything again.
    let mut peer = start_session(&office);
    peer.report(named_log(12, "log-2")).await;
    let again = peer.next_message(&id).await;
    assert!(!again.changes.is_empty(), "offered whole, as to a new peer");
    peer.close().await;
    assert_eq!(
        office.store().peer_log(PEER).unwrap(),
        PeerLog {
            end: 12,
            name: "log-2".into()
        }
    );
    assert_eq!(office.store().cursor(PEER).unwrap(), 0);
}

fn named_log(last_seq: u64, name: &str) -> linkage_proto::v1::Progress {
    linkage_proto::v1::Progress {
        last_seq,
        log_id: name.into(),
        ..Default::default()
    }
}

/// What a [`session::LogWatch`] was told.
#[derive(Debug, Default)]
struct WentBack(std::sync::Mutex<Vec<(u64, u64)>>);

impl session::LogWatch for WentBack {
    fn went_back(&self, seen: u64, end: u64) {
        self.0.lock().unwrap().push((seen, end));
    }

    fn log_name(&self) -> String {
        "log-2".into()
    }

    fn replaced(&self, name: &str) -> bool {
        name == "log-1"
    }
}

/// Each side tells the other how far it saw the other's log, and in which log, first thing in
/// a session; a report past this side's own end means its store went back to an older copy,
/// and whoever else holds positions in the log (the hub's feeds) is told. A report about a
/// log this side replaced is old news.
#[tokio::test]
async fn a_peer_that_saw_the_log_reach_further_tells_the_log_watch() {
    let office = replica(HAIBIN);
    create_case(&office, "in the log").await;
    let end = office.store().last_seq();

    // The first report says how far this side saw the peer's log, kept from the last session.
    office
        .store()
        .put_peer_log(
            PEER,
            &PeerLog {
                end: 42,
                name: "log-1".into(),
            },
        )
        .unwrap();
    let watch = Arc::new(WentBack::default());
    let mut peer = start_watched_session(&office, Some(watch.clone()));
    let first = peer.next_report().await;
    assert_eq!(
        (first.your_last_seq_seen, first.your_log_id.as_str()),
        (42, "log-1")
    );
    assert_eq!(first.log_id, "log-2", "the report names this side's log");

    peer.report_seen_log_end(end, "log-2").await;
    assert!(
        watch.0.lock().unwrap().is_empty(),
        "the log's own end is no sign of going back"
    );
    peer.report_seen_log_end(end + 9, "log-1").await;
    assert!(
        watch.0.lock().unwrap().is_empty(),
        "a position in a log since replaced is no news of this one"
    );
    peer.report_seen_log_end(end + 5, "").await;
    peer.report_seen_log_end(end + 7, "log-2").await;
    // A log this side never named: the store may be a copy from before it named log-1.
    peer.report_seen_log_end(end + 8, "log-0").await;
    assert_eq!(
        *watch.0.lock().unwrap(),
        vec![(end + 5, end), (end + 7, end), (end + 8, end)]
    );

    // The peer's own log, with its name, is kept for the next session's first report.
    peer.report(linkage_proto::v1::Progress {
        last_seq: 50,
        log_id: "their-log".into(),
        ..Default::default()
    })
    .await;
    peer.close().await;
    assert_eq!(
        office.store().peer_log(PEER).unwrap(),
        PeerLog {
            end: 50,
            name: "their-log".into()
        }
    );
}

/// A record's first offer as a hub makes it: the whole document saved plain, at `heads`.
fn whole_at(doc: &Automerge, heads: Vec<automerge::ChangeHash>) -> Message {
    Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: doc.save_nocompress().into(),
        flags: None,
        version: MessageVersion::V2,
    }
}

/// An office takes a record its hub offers whole, with the hub's summary, as it came: stored
/// under that summary (here with a title the document does not have, so that the test can
/// tell), acknowledged by the document's heads, and read whole from the store when used. An
/// offer whose heads are not its document's, or whose document is damaged, goes through
/// Automerge as any other message: summarised from the document, or refused.
#[tokio::test]
async fn a_record_offered_whole_with_the_hubs_summary_is_stored_as_it_came() {
    let origin = replica(HAIBIN);
    let offered = |id: &str| {
        let summary = origin.summary(id).unwrap().unwrap();
        OfferedRecord {
            kind: summary.kind.clone(),
            owner: summary.owner.clone(),
            parties: summary.parties.clone(),
            status: summary.status.clone(),
            title: "as the hub summarised it".into(),
            created_at_ms: summary.created_at_ms,
            conflicted: false,
            category: 0,
        }
    };
    let document = |id: &str| origin.read(id, Automerge::clone).unwrap().unwrap();
    let receiver = replica(MARKET);
    let mut peer = start_session(&receiver);

    let adopted = create_case(&origin, "as the document says").await;
    let doc = document(&adopted);
    let heads = doc.get_heads();
    peer.send_offered(
        &adopted,
        whole_at(&doc, heads.clone()),
        Some(offered(&adopted)),
    )
    .await;
    let acked = peer.wait_ack(&adopted).await;
    assert_eq!(
        acked,
        heads
            .iter()
            .map(|h| h.as_ref().to_vec())
            .collect::<Vec<_>>()
    );
    let summary = receiver.summary(&adopted).unwrap().unwrap();
    assert_eq!(summary.title, "as the hub summarised it");
    assert_eq!(
        summary.heads,
        heads.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert_eq!(
        receiver.record(&adopted).unwrap(),
        origin.record(&adopted).unwrap()
    );

    let other_heads = create_case(&origin, "offered at other heads").await;
    let doc = document(&other_heads);
    peer.send_offered(
        &other_heads,
        whole_at(&doc, Vec::new()),
        Some(offered(&other_heads)),
    )
    .await;
    assert!(holds_within(&receiver, &other_heads, Duration::from_secs(10)).await);
    let summary = receiver.summary(&other_heads).unwrap().unwrap();
    assert_eq!(
        summary.title, "offered at other heads",
        "summarised from the document"
    );

    let damaged = create_case(&origin, "damaged on the way").await;
    let doc = document(&damaged);
    let mut message = whole_at(&doc, doc.get_heads());
    let mut bytes = doc.save_nocompress();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    message.changes = bytes.into();
    peer.send_offered(&damaged, message, Some(offered(&damaged)))
        .await;
    assert_eq!(peer.wait_rejected(&damaged).await, "protocol");
    assert!(receiver.summary(&damaged).unwrap().is_none());
}

/// The changes of `doc` since `heads`, as a hub offers them to a peer that confirmed `heads`:
/// one plain change chunk each, declaring the document's heads.
fn changes_since(doc: &Automerge, heads: &[automerge::ChangeHash]) -> Message {
    Message {
        heads: doc.get_heads(),
        need: Vec::new(),
        have: Vec::new(),
        changes: doc
            .get_changes(heads)
            .iter()
            .map(|change| change.raw_bytes().to_vec())
            .collect::<Vec<_>>()
            .into(),
        flags: None,
        version: MessageVersion::V1,
    }
}

/// An office appends the changes its hub offers, with the hub's summary, to a record it holds
/// and has not loaded, as they came: listed under that summary (a title the document does not
/// have, so that the test can tell), acknowledged by the new heads, and read whole when used.
/// Changes that do not follow from the record's heads (concurrent with a change it holds), or
/// offered to a record in memory, go through Automerge: summarised from the document.
#[tokio::test]
async fn changes_offered_with_the_hubs_summary_to_a_record_not_loaded_are_appended() {
    let origin = replica(HAIBIN);
    let receiver = replica(MARKET);
    let mut peer = start_session(&receiver);
    let summarised = |id: &str, title: &str| {
        let summary = origin.summary(id).unwrap().unwrap();
        OfferedRecord {
            kind: summary.kind.clone(),
            owner: summary.owner.clone(),
            parties: summary.parties.clone(),
            status: summary.status.clone(),
            title: title.into(),
            created_at_ms: summary.created_at_ms,
            conflicted: false,
            category: 0,
        }
    };
    let hashes = |heads: Vec<automerge::ChangeHash>| {
        heads
            .iter()
            .map(|h| h.as_ref().to_vec())
            .collect::<Vec<_>>()
    };
    let listed = |heads: Vec<automerge::ChangeHash>| {
        heads.iter().map(ToString::to_string).collect::<Vec<_>>()
    };

    // Two records taken in whole and left unloaded, as an office takes the district's.
    let mut base = Vec::new();
    for title in ["edited in a line", "edited at once"] {
        let id = create_case(&origin, title).await;
        let doc = origin.read(&id, Automerge::clone).unwrap().unwrap();
        peer.send_offered(
            &id,
            whole_at(&doc, doc.get_heads()),
            Some(summarised(&id, title)),
        )
        .await;
        peer.wait_ack(&id).await;
        base.push((id, doc));
    }

    // Two changes in a line, the second on the first: appended.
    let (line, doc) = &base[0];
    let once = put_body_field(doc, HAIBIN, "title", "edited once");
    let twice = put_body_field(&once, HAIBIN, "title", "edited twice");
    peer.send_offered(
        line,
        changes_since(&twice, &doc.get_heads()),
        Some(summarised(line, "as the hub summarised the edits")),
    )
    .await;
    assert_eq!(peer.wait_ack(line).await, hashes(twice.get_heads()));
    let summary = receiver.summary(line).unwrap().unwrap();
    assert_eq!(summary.title, "as the hub summarised the edits");
    assert_eq!(summary.heads, listed(twice.get_heads()));
    assert_eq!(
        receiver.record(line).unwrap(),
        doc::hydrate_record(&twice).unwrap(),
        "the appended changes load with the document"
    );

    // Now in memory: applied by Automerge, summarised from the document.
    let thrice = put_body_field(&twice, HAIBIN, "title", "edited thrice");
    peer.send_offered(
        line,
        changes_since(&thrice, &twice.get_heads()),
        Some(summarised(line, "not read: the record is in memory")),
    )
    .await;
    let summary = summary_at(&receiver, line, listed(thrice.get_heads())).await;
    assert_eq!(summary.title, "edited thrice");

    // A change concurrent with one the office holds depends on a change that is no longer a
    // head there: applied by Automerge.
    let (forked, doc) = &base[1];
    let ours = put_body_field(doc, HAIBIN, "title", "by the township");
    peer.send_offered(
        forked,
        changes_since(&ours, &doc.get_heads()),
        Some(summarised(forked, "the township's edit, summarised")),
    )
    .await;
    peer.wait_ack(forked).await;
    let mut both = put_body_field(doc, MARKET, "title", "by the bureau");
    both.merge(&mut ours.clone()).unwrap();
    peer.send_offered(
        forked,
        changes_since(&both, &ours.get_heads()),
        Some(summarised(forked, "not read: the change is concurrent")),
    )
    .await;
    let summary = summary_at(&receiver, forked, listed(both.get_heads())).await;
    assert!(
        summary.conflicted,
        "summarised from the document: {summary:?}"
    );
    assert_eq!(
        receiver.record(forked).unwrap(),
        doc::hydrate_record(&both).unwrap()
    );
}

/// Record `id`'s summary once it lists `heads`; fails if that takes 10 s.
async fn summary_at(replica: &Replica, id: &str, heads: Vec<String>) -> Arc<Summary> {
    for _ in 0..500 {
        if let Some(summary) = replica.summary(id).unwrap()
            && summary.heads == heads
        {
            return summary;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} did not reach {heads:?} within 10 s");
}

/// A record new to a replica arrives whole. Its summary says whether its fields hold
/// concurrent values: the field walk is skipped only for a document made by one chain of
/// edits, which cannot hold any.
#[tokio::test]
async fn a_record_arriving_whole_is_listed_conflicted_only_if_its_fields_are() {
    let [(plain_id, plain), (forked_id, forked)] = clean_and_conflicted(&replica(HAIBIN)).await;

    let receiver = replica(MARKET);
    let peer = start_session(&receiver);
    for (id, doc) in [(&plain_id, &plain), (&forked_id, &forked)] {
        peer.send(
            id,
            Message {
                heads: doc.get_heads(),
                need: Vec::new(),
                have: Vec::new(),
                changes: doc.save_nocompress().into(),
                flags: None,
                version: MessageVersion::V2,
            },
        )
        .await;
    }

    let summary = |id: &str| {
        let (receiver, id) = (receiver.clone(), id.to_owned());
        async move {
            for _ in 0..500 {
                if let Some(summary) = receiver.summary(&id).unwrap() {
                    return summary;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("{id} did not arrive within 10 s");
        }
    };
    assert!(!summary(&plain_id).await.conflicted, "one chain of edits");
    assert!(
        summary(&forked_id).await.conflicted,
        "two offices retitled the record at once"
    );
}

/// A record loaded into a replica with nothing in memory takes its conflict flag from its
/// stored summary: a conflicted one stays conflicted through a later linear change, and a
/// clean one still notices a concurrent change.
#[tokio::test]
async fn a_reloaded_records_conflict_flag_follows_later_changes() {
    let [(clean_id, clean), (forked_id, forked)] = clean_and_conflicted(&replica(HAIBIN)).await;
    let put = put_body_field;
    let take = merge_into;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let open = || Replica::open(MARKET, store.clone(), Arc::new(SystemClock), 64).unwrap();
    let conflicted = |replica: &Replica, id: &str| replica.summary(id).unwrap().unwrap().conflicted;

    let first = open();
    take(&first, &clean_id, &clean);
    take(&first, &forked_id, &forked);
    assert!(!conflicted(&first, &clean_id));
    assert!(conflicted(&first, &forked_id));
    drop(first);

    // Cold: both documents are loaded from the store.
    let reopened = open();
    take(
        &reopened,
        &forked_id,
        &put(&forked, HAIBIN, "place", "the pier"),
    );
    assert!(
        conflicted(&reopened, &forked_id),
        "a linear change to a conflicted record leaves its conflict standing"
    );
    take(
        &reopened,
        &clean_id,
        &put(&clean, HAIBIN, "place", "the pier"),
    );
    assert!(
        !conflicted(&reopened, &clean_id),
        "a linear change keeps it clean"
    );
    drop(reopened);

    let again = open();
    take(
        &again,
        &clean_id,
        &put(&clean, MARKET, "place", "the beach"),
    );
    assert!(
        conflicted(&again, &clean_id),
        "a change concurrent with the stored one is noticed"
    );
}

/// A peer that confirmed a record long ago lacks its changes since; many small changes, each
/// with its own header, can outweigh the document they make and pass a frame while the
/// document fits. The record is then offered whole (it used to be skipped, with a warning
/// nobody read, and never reached that peer).
#[tokio::test]
async fn changes_since_past_a_frame_are_offered_as_the_whole_document() {
    let office = replica(HAIBIN);
    let id = create_case(&office, "many small changes").await;
    let created = office.read(&id, Automerge::clone).unwrap().unwrap();

    // Seven MiB in one change, then ten thousand small ones on top.
    let mut grown = put_body_field(&created, HAIBIN, "facts", &"北戴河".repeat((7 << 20) / 9));
    for n in 0..10_000 {
        grown
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                let (_, body) = tx
                    .get(automerge::ROOT, "body")?
                    .expect("a record has a body");
                tx.put(&body, "place", format!("{n}"))
            })
            .unwrap();
    }
    let since: usize = grown
        .get_changes(&created.get_heads())
        .iter()
        .map(|change| change.raw_bytes().len())
        .sum();
    let plain = grown.save_nocompress().len();
    assert!(
        since > linkage_node::sync::MAX_FRAME_BYTES
            && plain <= linkage_node::replica::MAX_DOCUMENT_BYTES,
        "changes since {since} bytes, document {plain} bytes"
    );
    merge_into(&office, &id, &grown);
    office.make_durable().unwrap();

    // The peer confirmed the record as it was created, in an earlier session.
    let mut confirmed = State::new();
    confirmed.shared_heads = created.get_heads();
    office
        .store()
        .put_peer_state(PEER, &id, &confirmed.encode())
        .unwrap();

    let mut peer = start_session(&office);
    let frame = peer.next_frame(&id).await;
    assert!(frame.message.len() <= linkage_node::sync::MAX_FRAME_BYTES);
    let message = Message::decode(&session::message_bytes(&frame).unwrap()).unwrap();
    let mut copy = created.clone();
    copy.receive_sync_message(&mut State::new(), message)
        .unwrap();
    assert_eq!(copy.get_heads(), grown.get_heads(), "the peer holds it all");
}

/// A replica clock the test moves by hand.
#[derive(Debug)]
struct HandClock(std::sync::atomic::AtomicI64);

impl linkage_node::replica::Clock for HandClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The operator's "oldest pending" is when the peer was first offered what it still lacks. A
/// stale offer sent again (a frozen office answers nothing for 20 s) used to move it to the
/// retry, so the office that had waited longest looked the freshest.
#[tokio::test]
async fn a_retried_offer_keeps_the_time_it_has_been_pending_since() {
    let start = chrono::Utc::now().timestamp_millis();
    let clock = Arc::new(HandClock(std::sync::atomic::AtomicI64::new(start)));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let office = Arc::new(Replica::open(HAIBIN, store, clock.clone(), 64).unwrap());
    let id = create_case(&office, "unanswered").await;

    let mut peer = start_session(&office);
    peer.next_frame(&id).await;
    let pending_since = |peer: &Peer| peer.figures.lock().unwrap().oldest_pending_ms;
    assert_eq!(pending_since(&peer), start);

    // The peer answers nothing; past the offer timeout the session offers the record again.
    clock.0.fetch_add(21_000, Ordering::SeqCst);
    peer.next_frame(&id).await;
    assert_eq!(
        pending_since(&peer),
        start,
        "still pending since the first offer"
    );
}

/// Two copies of a record can each fit the limit while their changes together do not (two
/// devices of one office editing offline). The peer's change is then refused under the
/// district's `limits` rule, naming the record and the limit, not as a fault of the link, and
/// the record stays as it was.
#[tokio::test]
async fn changes_that_fit_apart_but_not_together_are_refused_under_the_limits_rule() {
    let office = replica(HAIBIN);
    let id = create_case(&office, "two devices").await;
    let small = office.read(&id, Automerge::clone).unwrap().unwrap();
    let half = linkage_node::replica::MAX_DOCUMENT_BYTES / 2 + 1024;
    merge_into(
        &office,
        &id,
        &put_body_field(&small, HAIBIN, "facts", &"北".repeat(half / 3)),
    );
    office.make_durable().unwrap();
    let before = office.read(&id, Automerge::get_heads).unwrap().unwrap();

    // The other device's copy grew another field by as much, offline.
    let other = put_body_field(&small, HAIBIN, "place", &"戴".repeat(half / 3));
    let mut state = State::new();
    state.their_heads = Some(small.get_heads());
    state.their_need = Some(Vec::new());
    state.their_have = Some(vec![automerge::sync::Have {
        last_sync: small.get_heads(),
        bloom: automerge::sync::BloomFilter::default(),
    }]);
    let message = other.generate_sync_message(&mut state).unwrap();
    assert!(
        !message.changes.is_empty(),
        "the message carries the change"
    );

    let mut peer = start_session(&office);
    peer.send(&id, message).await;
    let rejected = peer
        .wait_for(
            "the change is refused",
            Duration::from_secs(10),
            |frame| match frame {
                Frame::Rejected(rejected) => Some(rejected),
                _ => None,
            },
        )
        .await;
    assert_eq!(rejected.record_id, id);
    assert_eq!(rejected.rule, "limits", "{}", rejected.reason);
    assert!(
        rejected.reason.contains(&id)
            && rejected
                .reason
                .contains(&linkage_node::replica::MAX_DOCUMENT_BYTES.to_string()),
        "{}",
        rejected.reason
    );
    assert_eq!(
        office.read(&id, Automerge::get_heads).unwrap().unwrap(),
        before,
        "the record is as it was"
    );
}

/// A record arriving whole as Automerge sends it, its columns deflated, is stored encoded plain
/// (like everything the replica stores), so the bytes the replica counts toward its size limit
/// are the bytes a peer's guard will count; stored as it came, 200 KB of text counted as 1 KB.
#[tokio::test]
async fn a_record_arriving_deflated_is_stored_plain() {
    let origin = replica(HAIBIN);
    let id = create_case(&origin, "deflated").await;
    let small = origin.read(&id, Automerge::clone).unwrap().unwrap();
    let doc = put_body_field(&small, HAIBIN, "facts", &"北戴河 ".repeat(20_000));
    let plain = doc.save_nocompress().len();
    let message = doc
        .generate_sync_message(&mut session::told_nothing())
        .unwrap();
    let sent: usize = message.changes.iter().map(|blob| blob.len()).sum();
    assert!(sent * 10 < plain, "sent {sent} bytes for {plain} plain");

    let hub = replica(HAIBIN);
    let peer = start_session(&hub);
    peer.send(&id, message).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while !hub.contains(&id).unwrap() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the record is taken in within 10 s");

    // Changes stored plain take about what the document saved plain takes (the encodings
    // differ by a few bytes), ten times what came.
    let stored = hub.store().load(&id).unwrap().unwrap().len();
    assert!(
        stored * 10 >= plain * 9,
        "{stored} bytes stored for a document of {plain} bytes plain"
    );
    assert_eq!(
        hub.read(&id, Automerge::get_heads).unwrap().unwrap(),
        doc.get_heads()
    );
}

/// A record is measured as a peer measures it: saved plain. Text that compresses well once
/// fitted the limit as a compressed save while its plain save was past what any peer's guard
/// inflates, so the record was stored and never synced. Such a change is now refused before
/// anything is stored, and the record stays as it was, still offered.
#[tokio::test]
async fn a_change_taking_the_plain_document_past_the_limit_is_refused() {
    let office = replica(HAIBIN);
    let id = create_case(&office, "large").await;
    let before = office.read(&id, Automerge::get_heads).unwrap().unwrap();
    let facts = "北戴河 ".repeat(linkage_node::replica::MAX_DOCUMENT_BYTES / 10 + 1);
    let small = office.read(&id, Automerge::clone).unwrap().unwrap();
    let large = put_body_field(&small, HAIBIN, "facts", &facts);
    assert!(
        large.save().len() < linkage_node::replica::MAX_DOCUMENT_BYTES / 10,
        "the compressed save fits the limit many times over"
    );

    let mut incoming = large.clone();
    let Err(refused) = office.change_unsynced(&id, true, |ours| {
        ours.merge(&mut incoming)?;
        anyhow::Ok(((), Default::default()))
    }) else {
        panic!("a document past the limit saved plain was accepted");
    };
    assert!(
        matches!(
            refused.downcast_ref::<ReplicaError>(),
            Some(ReplicaError::TooLarge { .. })
        ),
        "{refused:#}"
    );
    assert_eq!(
        office.read(&id, Automerge::get_heads).unwrap().unwrap(),
        before,
        "nothing of the refused change is held"
    );

    let mut peer = start_session(&office);
    let message = peer.next_message(&id).await;
    assert_eq!(
        message.heads, before,
        "offered as it was before the refusal"
    );
}

/// Copies a closed RocksDB folder (flat: files only), as a backup would.
fn copy_folder(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn rocks_replica(folder: &std::path::Path) -> Arc<Replica> {
    let store: Arc<dyn Store> = Arc::new(linkage_node::store::RocksStore::open(folder).unwrap());
    Arc::new(Replica::open(HAIBIN, store, Arc::new(SystemClock), 64).unwrap())
}

/// A node's folder restored from a copy older than its last edit: the edit it makes next must
/// be one a peer holding the lost edit can take. (With one actor id kept for the folder's
/// whole life, the new edit took the lost one's sequence number, and the peer refused it for
/// good: "duplicate seq".)
#[tokio::test]
async fn a_store_restored_from_an_older_copy_makes_changes_peers_can_take() {
    let dir = tempfile::tempdir().unwrap();
    let (live, backup) = (dir.path().join("live"), dir.path().join("backup"));
    let edit = |replica: &Arc<Replica>, id: &str, title: &str| {
        let office = Office::new(replica.clone(), Arc::new(Directory::beidaihe()));
        let (id, patch) = (id.to_owned(), serde_json::json!({ "title": title }));
        async move { office.edit_body(id, patch).await.unwrap() }
    };

    let replica = rocks_replica(&live);
    let id = create_case(&replica, "before the copy").await;
    drop(replica);
    copy_folder(&live, &backup);

    // After the copy: an edit the peer receives, then the folder is lost.
    let replica = rocks_replica(&live);
    edit(&replica, &id, "lost with the folder").await;
    let mut peer = replica.read(&id, |doc| doc.clone()).unwrap().unwrap();
    drop(replica);

    let restored = rocks_replica(&backup);
    edit(&restored, &id, "after the restore").await;
    let theirs = restored
        .read(&id, |doc| doc.get_changes(&[]))
        .unwrap()
        .unwrap();
    peer.apply_changes(theirs)
        .expect("the peer takes the restored folder's new edit");
    let ours = restored.read(&id, Automerge::get_heads).unwrap().unwrap();
    assert!(
        ours.iter()
            .all(|head| peer.get_change_by_hash(head).is_some()),
        "the peer holds the new edit"
    );
}

/// Whether `replica` holds record `id` within `within`, looking every 5 ms.
async fn holds_within(replica: &Replica, id: &str, within: Duration) -> bool {
    let held = async {
        while !replica.contains(id).unwrap() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(within, held).await.is_ok()
}

/// A peer's changes are answered only once a disk sync covers them, and the session takes in
/// the peer's next record while that sync runs: a relay hands records on without waiting for
/// each batch's sync before it reads the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_answered_once_on_disk_while_the_next_are_taken_in() {
    let memory = Arc::new(MemoryStore::new());
    memory.set_sync_delay(Duration::from_millis(400));
    let store: Arc<dyn Store> = memory.clone();
    let node = Arc::new(Replica::open(HAIBIN, store, Arc::new(SystemClock), 64).unwrap());
    let origin = replica(MARKET);
    let first = create_case(&origin, "first").await;
    let second = create_case(&origin, "second").await;
    let mut peer = start_session(&node);

    let offer = |id: &str| {
        let doc = origin.read(id, Automerge::clone).unwrap().unwrap();
        doc.clone()
            .generate_sync_message(&mut session::told_nothing())
            .unwrap()
    };
    peer.send(&first, offer(&first)).await;
    assert!(
        holds_within(&node, &first, Duration::from_secs(10)).await,
        "the session took in the first record"
    );
    peer.send(&second, offer(&second)).await;

    // The first record's sync is still running: the second is taken in meanwhile, and
    // nothing about either is said yet.
    assert!(
        holds_within(&node, &second, Duration::from_millis(300)).await,
        "the second record was taken in while the first one's sync ran"
    );
    while let Ok(frame) = peer.from_session.try_recv() {
        assert!(
            !matches!(frame.frame, Some(Frame::Doc(_))),
            "a record frame was sent before the disk held the changes"
        );
    }

    // The first record is the first entry of the node's change log.
    let answered = peer.next_any_record_frame().await;
    let (_, through) = memory.syncs();
    assert!(through >= 1, "{answered} was answered with nothing synced");
}

/// An office's write is offered to the peer only once it is on disk: the second of two
/// creates, written while the first one's sync runs, is not offered when the first is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_write_is_offered_only_once_on_disk() {
    let memory = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> = memory.clone();
    let node = Arc::new(Replica::open(HAIBIN, store, Arc::new(SystemClock), 64).unwrap());
    let mut peer = start_session(&node);
    memory.set_sync_delay(Duration::from_millis(400));

    let first = tokio::spawn({
        let node = node.clone();
        async move { create_case(&node, "first").await }
    });
    while node.store().last_seq() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = tokio::spawn({
        let node = node.clone();
        async move { create_case(&node, "second").await }
    });

    let mut offered = Vec::new();
    while offered.len() < 2 {
        let id = peer.next_any_record().await;
        let (_, synced) = memory.syncs();
        let at = node
            .store()
            .changed_since(0, 10)
            .unwrap()
            .into_iter()
            .find(|entry| entry.doc == id)
            .expect("an offered record is logged")
            .seq;
        assert!(
            at <= synced,
            "{id} at {at} offered with the disk synced to {synced}"
        );
        offered.push(id);
    }
    assert_eq!(offered, [first.await.unwrap(), second.await.unwrap()]);
}

/// A gate that takes its time over each record it is asked to offer, counting the asks.
#[derive(Debug, Default)]
struct SlowOfferGate {
    asked: AtomicUsize,
}

impl session::Gate for SlowOfferGate {
    fn may_offer(&self, _: &Summary) -> bool {
        std::thread::sleep(Duration::from_millis(3));
        self.asked.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn admit(
        &self,
        _: &str,
        _: Before<'_>,
        _: &Automerge,
        _: &[ChangeMetadata<'_>],
    ) -> Result<Option<Record>, RuleViolation> {
        Ok(None)
    }

    fn admits_everything(&self) -> bool {
        true
    }
}

/// A session with many records to offer and none in the peer's hands sends a small first
/// batch before it prepares the rest, so the peer starts on it meanwhile: a reconnecting
/// office's hundred changes reached the hub only once all hundred offers were made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_nothing_in_hand_gets_a_small_first_batch_of_offers() {
    const RECORDS: usize = 40;
    let node = replica(HAIBIN);
    for i in 0..RECORDS {
        create_case(&node, &format!("case {i}")).await;
    }
    let gate = Arc::new(SlowOfferGate::default());
    let (_to_session, inbound) = mpsc::channel::<SyncFrame>(1);
    let (outbound, mut from_session) = mpsc::channel(RECORDS * 2);
    let ctx = context(&node, gate.clone());
    let inbound = ReceiverStream::new(inbound).map(Ok::<_, tonic::Status>);
    let session = tokio::spawn(session::run(ctx, inbound, outbound));

    let asked_at_first_offer = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let frame = from_session.recv().await.expect("session is running");
            if let Some(Frame::Doc(doc)) = frame.frame
                && !doc.message.is_empty()
            {
                return gate.asked.load(Ordering::SeqCst);
            }
        }
    })
    .await
    .expect("the session offered a record within 30 s");
    let mut offered = 1;
    tokio::time::timeout(Duration::from_secs(30), async {
        while offered < RECORDS {
            let frame = from_session.recv().await.expect("session is running");
            if let Some(Frame::Doc(doc)) = frame.frame
                && !doc.message.is_empty()
            {
                offered += 1;
            }
        }
    })
    .await
    .expect("the session offered every record within 30 s");
    session.abort();

    assert!(
        asked_at_first_offer < RECORDS,
        "the first offer went out only once all {RECORDS} records were prepared"
    );
}

/// A gate that admits every change, noting the threads it was asked on.
#[derive(Debug, Default)]
struct ThreadNotingGate {
    threads: std::sync::Mutex<std::collections::HashSet<std::thread::ThreadId>>,
}

impl session::Gate for ThreadNotingGate {
    fn may_offer(&self, _: &Summary) -> bool {
        true
    }

    fn admit(
        &self,
        _: &str,
        _: Before<'_>,
        _: &Automerge,
        _: &[ChangeMetadata<'_>],
    ) -> Result<Option<Record>, RuleViolation> {
        self.threads
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
        Ok(None)
    }
}

/// A burst of a peer's changes that arrives together is taken in on two threads, and every
/// record of it is stored, checked by the gate and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_is_taken_in_on_two_threads_and_every_record_answered() {
    const RECORDS: usize = 40;
    let origin = replica(MARKET);
    let mut ids = Vec::new();
    for i in 0..RECORDS {
        ids.push(create_case(&origin, &format!("case {i}")).await);
    }
    let node = replica(HAIBIN);
    let gate = Arc::new(ThreadNotingGate::default());
    let (to_session, inbound) = mpsc::channel::<SyncFrame>(RECORDS);
    let (outbound, mut from_session) = mpsc::channel(RECORDS * 4);
    // Every frame is queued before the session starts, so it reads them as one batch.
    for id in &ids {
        let doc = origin.read(id, Automerge::clone).unwrap().unwrap();
        let message = whole_at(&doc, doc.get_heads());
        let frame = SyncFrame {
            frame: Some(Frame::Doc(DocSync {
                record_id: id.clone(),
                message: message.encode(),
                ..Default::default()
            })),
        };
        to_session.send(frame).await.unwrap();
    }
    let ctx = context(&node, gate.clone());
    let inbound = ReceiverStream::new(inbound).map(Ok::<_, tonic::Status>);
    let session = tokio::spawn(session::run(ctx, inbound, outbound));

    let mut answered = std::collections::HashSet::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while answered.len() < RECORDS {
            let frame = from_session.recv().await.expect("session is running");
            if let Some(Frame::Doc(doc)) = frame.frame {
                answered.insert(doc.record_id);
            }
        }
    })
    .await
    .expect("every record answered within 30 s");
    session.abort();

    for id in &ids {
        assert_eq!(node.record(id).unwrap(), origin.record(id).unwrap());
    }
    assert_eq!(
        gate.threads.lock().unwrap().len(),
        2,
        "the gate was asked on two threads"
    );
}
