//! The hub's admission gate against a rogue client: something that speaks the Sync protocol
//! directly (tonic's `SyncClient`, a hello as Haibin Town) instead of running a node, and sends
//! what no honest node would. Each bad input must be answered with a `Rejected` frame naming
//! its rule, must leave the hub's copy exactly as it was, and must not end the session: the
//! same stream then syncs a valid change.
//!
//! The hub runs in-process over real gRPC on loopback port 0 with an in-memory store.

use std::sync::Arc;
use std::time::Duration;

use automerge::sync::{Message, State, SyncDoc};
use automerge::{Automerge, ChangeHash};
use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::record::doc::{actor_for, append_event, hydrate_record, new_document};
use linkage_node::record::{
    Action, Body, CaseBody, Envelope, Material, MaterialKind, Record, RecordKind, SCHEMA_VERSION,
    TransferBody, WorkflowEvent,
};
use linkage_node::replica::{Clock, Replica, Summary, SystemClock};
use linkage_node::sync::client::{LinkStatus, run_forever};
use linkage_proto::v1::sync_frame::Frame;
use linkage_proto::v1::{DocSync, Rejected, SyncFrame};
use tokio::sync::mpsc;
use tonic::Streaming;

mod common;

use common::{open_session, replica, start_hub, start_hub_keeping};

/// The rogue's claimed organisation: Haibin Town.
const HAIBIN: &str = "130304100";
/// Haibin Town's enforcement team: a unit of the town, which may not send a transfer itself.
const HAIBIN_TEAM: &str = "130304100-zhzfd";
/// The Market Supervision Bureau, receiver of Haibin's transfer.
const MARKET: &str = "bdh-scjg";
/// Daihe Town and the Ecology Branch share a case Haibin is no party to.
const DAIHE: &str = "130304101";
const ECOLOGY: &str = "bdh-sthj";

/// How long the hub gets to answer one frame.
const ANSWER: Duration = Duration::from_secs(10);

/// What the hub said about a pushed record.
#[derive(Debug)]
enum Answer {
    /// The hub holds every change of the pushed document.
    Holds,
    Rejected(Rejected),
}

/// A client that speaks the Sync protocol by hand.
struct Rogue {
    outbound: mpsc::Sender<SyncFrame>,
    inbound: Streaming<SyncFrame>,
}

impl Rogue {
    async fn connect(url: &str, org: &str) -> Rogue {
        let (outbound, inbound) = open_session(url, org, "rogue-node", "rogue-store").await;
        Rogue { outbound, inbound }
    }

    async fn send(&self, record_id: &str, message: Vec<u8>) {
        self.outbound
            .send(SyncFrame {
                frame: Some(Frame::Doc(DocSync {
                    record_id: record_id.to_owned(),
                    message,
                    heads: Vec::new(),
                    ..Default::default()
                })),
            })
            .await
            .expect("the hub closed the session");
    }

    /// The hub's next frame about `record_id`; progress reports and offers of other records
    /// are skipped.
    async fn next_about(&mut self, record_id: &str) -> Frame {
        loop {
            let frame = tokio::time::timeout(ANSWER, self.inbound.message())
                .await
                .unwrap_or_else(|_| panic!("the hub said nothing about {record_id} in {ANSWER:?}"))
                .expect("the hub broke the session")
                .expect("the hub closed the session");
            match frame.frame {
                Some(Frame::Doc(ref d)) if d.record_id == record_id => return frame.frame.unwrap(),
                Some(Frame::Rejected(ref r)) if r.record_id == record_id => {
                    return frame.frame.unwrap();
                }
                _ => {}
            }
        }
    }

    /// Runs Automerge's sync protocol for `doc` until the hub holds all of it or rejects it.
    async fn push(&mut self, record_id: &str, doc: &mut Automerge) -> Answer {
        let mut state = State::new();
        let ours = doc.get_heads();
        loop {
            if let Some(message) = doc.generate_sync_message(&mut state) {
                self.send(record_id, message.encode()).await;
            }
            match self.next_about(record_id).await {
                Frame::Rejected(rejected) => return Answer::Rejected(rejected),
                Frame::Doc(d) if d.message.is_empty() => {
                    let theirs: Vec<ChangeHash> = d
                        .heads
                        .iter()
                        .filter_map(|h| ChangeHash::try_from(h.as_slice()).ok())
                        .collect();
                    if ours.iter().all(|h| theirs.contains(h)) {
                        return Answer::Holds;
                    }
                }
                Frame::Doc(d) => {
                    let bytes = linkage_node::sync::session::message_bytes(&d)
                        .expect("the hub sent a frame that inflates");
                    let message = Message::decode(&bytes).expect("the hub sent a bad message");
                    doc.receive_sync_message(&mut state, message).unwrap();
                    if state
                        .their_heads
                        .as_ref()
                        .is_some_and(|theirs| ours.iter().all(|h| theirs.contains(h)))
                    {
                        return Answer::Holds;
                    }
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The hub's answer to a message that brought `heads` of `record_id`: a refusal, or a
    /// frame saying it holds them. Frames left over from earlier exchanges are skipped.
    async fn answer_to(&mut self, record_id: &str, heads: &[ChangeHash]) -> Answer {
        let deadline = tokio::time::Instant::now() + ANSWER;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the hub did not answer for {record_id} in {ANSWER:?}"
            );
            let theirs = match self.next_about(record_id).await {
                Frame::Rejected(rejected) => return Answer::Rejected(rejected),
                Frame::Doc(d) if d.message.is_empty() => d.heads,
                Frame::Doc(d) => {
                    let bytes = linkage_node::sync::session::message_bytes(&d)
                        .expect("the hub sent a frame that inflates");
                    let message = Message::decode(&bytes).expect("the hub sent a bad message");
                    message.heads.iter().map(|h| h.as_ref().to_vec()).collect()
                }
                other => panic!("unexpected frame {other:?}"),
            };
            if heads.iter().all(|h| theirs.contains(&h.as_ref().to_vec())) {
                return Answer::Holds;
            }
        }
    }

    /// Sends raw bytes as a sync message and returns the hub's answer.
    async fn send_raw(&mut self, record_id: &str, message: Vec<u8>) -> Frame {
        self.send(record_id, message).await;
        self.next_about(record_id).await
    }
}

fn rejected(answer: Answer, what: &str) -> Rejected {
    match answer {
        Answer::Rejected(r) => r,
        Answer::Holds => panic!("the hub admitted {what}"),
    }
}

/// A transfer from Haibin Town to the Market Supervision Bureau, as Haibin's node would write
/// it, signed by an actor of Haibin.
fn haibin_transfer(at_ms: i64) -> (String, Automerge) {
    let record = Record {
        envelope: Envelope {
            id: RecordKind::Transfer.new_record_id(),
            kind: "transfer".into(),
            owner: HAIBIN.into(),
            parties: vec![HAIBIN.into(), MARKET.into()],
            created_at_ms: at_ms,
            schema_version: SCHEMA_VERSION,
        },
        body: Body::Transfer(TransferBody {
            sender: HAIBIN.into(),
            receiver: MARKET.into(),
            title: "food sold past its use-by date".into(),
            matter: "food safety".into(),
            facts: "A stall sells packaged food past its use-by date.".into(),
            discovered_at_ms: at_ms - 60_000,
            materials: vec![Material {
                kind: MaterialKind::TransferLetter,
                name: "transfer letter".into(),
            }],
            ..Default::default()
        }),
        events: vec![WorkflowEvent::new(Action::Sent, at_ms, HAIBIN)],
    };
    let id = record.envelope.id.clone();
    (id, new_document(&record, actor_for(HAIBIN), at_ms).unwrap())
}

/// The hub's copy of a record as far as anyone can tell: its summary (heads, parties, status)
/// and its saved bytes.
fn hub_copy(hub: &Replica, id: &str) -> (Option<Summary>, Option<Vec<u8>>) {
    (
        hub.summary(id).unwrap().map(|s| Summary::clone(&s)),
        hub.read(id, |d| d.save()).unwrap(),
    )
}

/// `doc` with one more event, written by an actor of `signer`.
fn with_event(doc: &Automerge, signer: &str, event: WorkflowEvent) -> Automerge {
    let mut doc = doc.fork().with_actor(actor_for(signer));
    let at = event.at_ms;
    append_event(&mut doc, &event, at).unwrap();
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_client_is_refused_rule_by_rule_and_its_session_goes_on() {
    let started = start_hub().await;
    let (url, hub) = (started.url, started.replica);
    let now = SystemClock.now_ms();

    // A record Haibin is no party to, written by a real Daihe node.
    let daihe = replica(DAIHE);
    tokio::spawn(run_forever(
        daihe.clone(),
        url.clone(),
        Arc::new(LinkStatus::default()),
    ));
    let foreign = Office::new(daihe.clone(), Arc::new(Directory::beidaihe()))
        .create(
            RecordKind::Case,
            vec![ECOLOGY.into()],
            Body::Case(CaseBody {
                title: "noise from a karaoke bar".into(),
                ..Default::default()
            }),
            Act::default(),
        )
        .await
        .unwrap();
    let foreign_id = foreign.record.id().to_owned();
    let deadline = tokio::time::Instant::now() + ANSWER;
    while !hub.contains(&foreign_id).unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Daihe's case never reached the hub"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut rogue = Rogue::connect(&url, HAIBIN).await;

    // A valid transfer first: the session works and the hub holds it.
    let (transfer_id, mut transfer) = haibin_transfer(now);
    assert!(matches!(
        rogue.push(&transfer_id, &mut transfer).await,
        Answer::Holds
    ));
    assert_eq!(
        hub.summary(&transfer_id).unwrap().unwrap().heads,
        transfer
            .get_heads()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    let seq_before = hub.store().last_seq();

    // (a) Haibin forges the Bureau's receipt, signed with an actor of the Bureau.
    let before = hub_copy(&hub, &transfer_id);
    let mut forged = with_event(
        &transfer,
        MARKET,
        WorkflowEvent::new(Action::Received, now + 1_000, MARKET),
    );
    let r = rejected(
        rogue.push(&transfer_id, &mut forged).await,
        "a change signed by another organisation's actor",
    );
    assert_eq!(r.rule, "actor", "{r:?}");
    assert!(
        r.reason.contains(MARKET) && r.reason.contains(HAIBIN),
        "the reason names neither the signer nor the session's organisation: {}",
        r.reason
    );
    assert_eq!(
        hub_copy(&hub, &transfer_id),
        before,
        "the hub's copy changed"
    );

    // (b) A change to a record Haibin is no party to, signed as Haibin.
    let foreign_doc = hub
        .read(&foreign_id, |d| d.fork())
        .unwrap()
        .expect("the hub holds Daihe's case");
    let before_foreign = hub_copy(&hub, &foreign_id);
    let mut meddled = with_event(
        &foreign_doc,
        HAIBIN,
        WorkflowEvent::new(Action::Updated, now + 2_000, HAIBIN),
    );
    let r = rejected(
        rogue.push(&foreign_id, &mut meddled).await,
        "a change to a record of which the sender is no party",
    );
    assert_eq!(r.rule, "party", "{r:?}");
    assert_eq!(
        hub_copy(&hub, &foreign_id),
        before_foreign,
        "the foreign record changed"
    );

    // (c) Haibin, the sender, accepts its own transfer: only the receiver may (T-5).
    let mut received = with_event(
        &transfer,
        HAIBIN,
        WorkflowEvent::new(Action::Received, now + 3_000, HAIBIN),
    );
    let r = rejected(
        rogue.push(&transfer_id, &mut received).await,
        "a receipt by the transfer's sender",
    );
    assert_eq!(r.rule, "T-5", "{r:?}");
    assert!(r.reason.contains("receiver"), "{}", r.reason);
    let mut accepted = with_event(
        &transfer,
        HAIBIN,
        WorkflowEvent::new(Action::Accepted, now + 3_000, HAIBIN),
    );
    let r = rejected(
        rogue.push(&transfer_id, &mut accepted).await,
        "an acceptance by the transfer's sender",
    );
    assert_eq!(r.rule, "T-5", "{r:?}");
    assert_eq!(
        hub_copy(&hub, &transfer_id),
        before,
        "the hub's copy changed"
    );

    // (d) Malformed sync bytes, for a record the hub holds and for one it does not.
    for id in [transfer_id.as_str(), "TR-0000000000000000"] {
        match rogue
            .send_raw(id, b"\x42not an automerge sync message".to_vec())
            .await
        {
            Frame::Rejected(r) => {
                assert_eq!(r.rule, "protocol", "{r:?}");
                assert!(r.reason.contains("malformed"), "{}", r.reason);
            }
            other => panic!("malformed bytes for {id} were answered with {other:?}"),
        }
    }
    assert!(!hub.contains("TR-0000000000000000").unwrap());

    // (d) A record id far over the limit, carrying an otherwise valid new record.
    let long_id = format!("TR-{}", "9".repeat(4096));
    let (_, valid_doc) = haibin_transfer(now);
    let message = valid_doc
        .generate_sync_message(&mut State::new())
        .unwrap()
        .encode();
    match rogue.send_raw(&long_id, message).await {
        Frame::Rejected(r) => {
            assert_eq!(r.rule, "protocol", "{r:?}");
            assert!(r.reason.contains("record id"), "{}", r.reason);
        }
        other => panic!("an oversized record id was answered with {other:?}"),
    }
    assert!(!hub.contains(&long_id).unwrap());

    // (e) A document pushed under one id whose envelope claims another.
    let (claimed_id, mut impostor) = haibin_transfer(now);
    let pushed_as = RecordKind::Transfer.new_record_id();
    let r = rejected(
        rogue.push(&pushed_as, &mut impostor).await,
        "a document whose envelope names another id",
    );
    assert_eq!(r.rule, "schema", "{r:?}");
    assert!(!hub.contains(&pushed_as).unwrap() && !hub.contains(&claimed_id).unwrap());

    assert_eq!(
        hub.store().last_seq(),
        seq_before,
        "a refused change reached the hub's change log"
    );
    assert_eq!(hub_copy(&hub, &transfer_id), before);

    // The same session still syncs valid changes: a note on the transfer and a new record.
    let hub_transfer = hub.read(&transfer_id, |d| d.fork()).unwrap().unwrap();
    let mut noted = with_event(
        &hub_transfer,
        HAIBIN,
        WorkflowEvent::new(Action::Updated, now + 4_000, HAIBIN),
    );
    assert!(matches!(
        rogue.push(&transfer_id, &mut noted).await,
        Answer::Holds
    ));
    let events = hub.record(&transfer_id).unwrap().events;
    assert_eq!(
        events.iter().map(|e| e.action).collect::<Vec<_>>(),
        [Action::Sent, Action::Updated]
    );
    let (second_id, mut second) = haibin_transfer(now + 5_000);
    assert!(matches!(
        rogue.push(&second_id, &mut second).await,
        Answer::Holds
    ));
    assert_eq!(
        hydrate_record(&hub.read(&second_id, |d| d.fork()).unwrap().unwrap()).unwrap(),
        hydrate_record(&second).unwrap()
    );
}

/// A case Haibin opened, shared with the Market Supervision Bureau, as Haibin's node holds it,
/// and a copy with one more act by `author`'s actor and in its name.
async fn case_and_an_act_by(author: &str) -> (String, Automerge, Automerge) {
    let haibin = replica(HAIBIN);
    let office = Office::new(haibin.clone(), Arc::new(Directory::beidaihe()));
    let body = Body::from_json(RecordKind::Case, r#"{"title": "relayed"}"#).unwrap();
    let id = office
        .create(RecordKind::Case, vec![MARKET.into()], body, Act::default())
        .await
        .unwrap()
        .record
        .id()
        .to_owned();
    let before = haibin.read(&id, |doc| doc.clone()).unwrap().unwrap();
    let mut after = before.fork().with_actor(actor_for(author));
    let now = SystemClock.now_ms();
    append_event(
        &mut after,
        &WorkflowEvent::new(Action::Updated, now, author),
        now,
    )
    .unwrap();
    (id, before, after)
}

fn gate(refill: bool) -> linkage_hub::gate::HubGate {
    linkage_hub::gate::HubGate {
        org: HAIBIN.into(),
        directory: Arc::new(Directory::beidaihe()),
        refill,
    }
}

/// Haibin's node hands over an act the Market Supervision Bureau made to their shared case:
/// refused (rule `actor`) unless the hub is refilling from the nodes, and then only for an
/// author who is a party to the record.
#[tokio::test]
async fn another_partys_change_passes_only_while_refilling_and_only_from_a_party() {
    use linkage_node::sync::session::{Before, Gate};

    let (id, before, after) = case_and_an_act_by(MARKET).await;
    let added = after.get_changes_meta(&before.get_heads());
    let before = hydrate_record(&before).unwrap();
    let refused = gate(false)
        .admit(&id, Before::Read(Ok(&before)), &after, &added)
        .unwrap_err();
    assert_eq!(refused.rule, "actor", "{refused}");
    let admitted = gate(true)
        .admit(&id, Before::Read(Ok(&before)), &after, &added)
        .expect("a party's act handed over while refilling")
        .expect("the gate read the record");
    assert!(admitted.events.iter().any(|e| e.org == MARKET));

    let (id, before, after) = case_and_an_act_by(DAIHE).await;
    let added = after.get_changes_meta(&before.get_heads());
    let before = hydrate_record(&before).unwrap();
    let outsider = gate(true)
        .admit(&id, Before::Read(Ok(&before)), &after, &added)
        .unwrap_err();
    assert_eq!(outsider.rule, "actor", "{outsider}");
    assert!(
        outsider.message.contains("not a party"),
        "{}",
        outsider.message
    );
}

/// A first offer may carry a change whose dependency is missing: Automerge holds it back,
/// unapplied, and the gate sees it only once it applies. The hub stores only what applied,
/// not the offer's bytes as they came: stored, the held-back change made the record
/// unloadable (`MissingDeps`) once it left the hub's memory, and sat in its store unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_held_back_for_a_missing_dependency_is_not_stored() {
    use automerge::ReadDoc;
    use automerge::sync::{ChunkList, Have, MessageVersion};

    let started = start_hub().await;
    let (url, hub) = (started.url, started.replica);
    let now = SystemClock.now_ms();
    let (id, transfer) = haibin_transfer(now);
    let opening = transfer.get_changes(&[]);
    let with_h = with_event(
        &transfer,
        HAIBIN,
        WorkflowEvent::new(Action::Updated, now + 1_000, HAIBIN),
    );
    let with_x = with_event(
        &with_h,
        MARKET,
        WorkflowEvent::new(Action::Received, now + 2_000, MARKET),
    );
    let x = with_x
        .get_changes(&with_h.get_heads())
        .pop()
        .expect("one change on top of h");

    let mut chunks: Vec<Vec<u8>> = opening.iter().map(|c| c.raw_bytes().to_vec()).collect();
    chunks.push(x.raw_bytes().to_vec());
    let offer = Message {
        heads: with_x.get_heads(),
        need: Vec::new(),
        have: vec![Have::default()],
        changes: ChunkList::from(chunks),
        flags: None,
        version: MessageVersion::V1,
    };
    let mut rogue = Rogue::connect(&url, HAIBIN).await;
    match rogue.send_raw(&id, offer.encode()).await {
        Frame::Doc(_) => {}
        other => panic!("the hub refused the opening change: {other:?}"),
    }

    let stored = hub
        .store()
        .load(&id)
        .unwrap()
        .expect("the hub stored the opening change");
    let reloaded = Automerge::load(&stored.concat()).unwrap();
    assert_eq!(reloaded.get_heads(), transfer.get_heads());
    assert!(
        reloaded.get_missing_deps(&[]).is_empty(),
        "the held-back change was stored"
    );
}

/// A sync state as a node keeps it for a peer it synced a record with at `heads` (none: the
/// peer holds nothing of it), and that has heard from the peer since: the node's next message
/// carries the changes since `heads` alone.
fn synced_at(heads: &[ChangeHash]) -> State {
    let mut state = if heads.is_empty() {
        linkage_node::sync::session::told_nothing()
    } else {
        let mut state = State::new();
        state.shared_heads = heads.to_vec();
        state.their_heads = Some(heads.to_vec());
        state.their_have = Some(vec![automerge::sync::Have {
            last_sync: heads.to_vec(),
            bloom: Default::default(),
        }]);
        state
    };
    state.their_need = Some(Vec::new());
    state
}

/// An in-process hub, a rogue session as Haibin, and Haibin's transfer (its id and document),
/// which the hub holds.
async fn hub_holding_a_transfer() -> (Arc<Replica>, Rogue, String, Automerge) {
    let started = start_hub().await;
    let mut rogue = Rogue::connect(&started.url, HAIBIN).await;
    let (id, mut transfer) = haibin_transfer(SystemClock.now_ms());
    assert!(matches!(
        rogue.push(&id, &mut transfer).await,
        Answer::Holds
    ));
    (started.replica, rogue, id, transfer)
}

/// A node's edit of a record's body fields is checked without the hub reading the record
/// before it whole: a field set to what the record's owner could not have created is refused
/// by its rule and leaves the hub's copy as it was; a valid edit is admitted, and what the hub
/// stores of it loads into the record the node holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_field_edits_are_checked_without_the_record_before_them() {
    use automerge::transaction::Transactable;
    use automerge::{ROOT, ReadDoc};

    let (hub, mut rogue, id, transfer) = hub_holding_a_transfer().await;
    let before = hub_copy(&hub, &id);
    let put = |field: &str, value: &str| -> Automerge {
        let mut doc = transfer.fork().with_actor(actor_for(HAIBIN));
        let mut tx = doc.transaction();
        let (_, body) = tx.get(ROOT, "body").unwrap().unwrap();
        tx.put(&body, field, value).unwrap();
        tx.commit();
        doc
    };

    // As a node that synced the record before sends its edits: the changes alone, each in
    // its own chunk, not the document.
    let resumed = |edited: &Automerge| -> Message {
        let message = edited
            .generate_sync_message(&mut synced_at(&transfer.get_heads()))
            .unwrap();
        assert!(
            linkage_node::sync::guard::plain_changes(message.changes.iter())
                .is_some_and(|changes| !changes.is_empty()),
            "the edits go as plain changes"
        );
        message
    };

    let forged = put("sender", HAIBIN_TEAM);
    rogue.send(&id, resumed(&forged).encode()).await;
    let r = rejected(
        rogue.answer_to(&id, &forged.get_heads()).await,
        "a unit as a transfer's sender",
    );
    assert_eq!(r.rule, "T-4", "{r:?}");
    assert_eq!(hub_copy(&hub, &id), before);

    // A body edit whose next change, an act, arrived first and waits for it: the hub checks
    // the act too, against the record as it stood before both. The sender may not accept
    // its own transfer (T-5); it may note an update.
    let retitled = put("title", "expired milk on sale");
    let act_after_edit = |action: Action| {
        let acted = with_event(
            &retitled,
            HAIBIN,
            WorkflowEvent::new(action, SystemClock.now_ms(), HAIBIN),
        );
        let mut act_alone = resumed(&acted);
        let act = acted.save_after(&retitled.get_heads());
        act_alone.changes = automerge::sync::ChunkList::from(vec![act]);
        (
            act_alone.encode(),
            resumed(&retitled).encode(),
            acted.get_heads(),
        )
    };
    let (act, edit, heads) = act_after_edit(Action::Accepted);
    rogue.send(&id, act).await;
    rogue.send(&id, edit).await;
    let r = rejected(
        rogue.answer_to(&id, &heads).await,
        "the sender accepting its own transfer",
    );
    assert_eq!(r.rule, "T-5", "{r:?}");
    assert_eq!(hub_copy(&hub, &id), before);

    let (act, edit, heads) = act_after_edit(Action::Updated);
    rogue.send(&id, act).await;
    rogue.send(&id, edit).await;
    assert!(matches!(rogue.answer_to(&id, &heads).await, Answer::Holds));
    let Body::Transfer(held) = hub.record(&id).unwrap().body else {
        panic!("the hub holds a transfer");
    };
    assert_eq!(held.title, "expired milk on sale");
    let stored = hub.store().load(&id).unwrap().unwrap();
    let reloaded = Automerge::load(&stored.concat()).unwrap();
    assert_eq!(
        Some(reloaded.get_heads()),
        hub.read(&id, |doc| doc.get_heads()).unwrap()
    );
    assert_eq!(held.title, "expired milk on sale");
    assert_eq!(hydrate_record(&reloaded).unwrap(), hub.record(&id).unwrap());
}

/// The record's creator, by its own actor, putting `title` into the body of `doc`: its
/// change, decoded so that a test can make one of its facts wrong.
fn creators_title(doc: &Automerge, title: &str) -> automerge::ExpandedChange {
    use automerge::transaction::Transactable;
    use automerge::{ROOT, ReadDoc};

    let creator = doc.get_changes(&[])[0].actor_id().clone();
    let mut put = doc.fork().with_actor(creator);
    let mut tx = put.transaction();
    let (_, body) = tx.get(ROOT, "body").unwrap().unwrap();
    tx.put(&body, "title", title).unwrap();
    tx.commit();
    let mut expanded = put.get_changes(&doc.get_heads()).pop().unwrap().decode();
    expanded.hash = None;
    expanded
}

/// Haibin sends 16 more transfers, so that a hub keeping the fewest documents a replica does
/// (`start_hub_keeping(16)`) lets the ones it held before leave its memory.
async fn push_out_of_the_hubs_memory(rogue: &mut Rogue) {
    for _ in 0..16 {
        let (other, mut doc) = haibin_transfer(SystemClock.now_ms());
        assert!(matches!(rogue.push(&other, &mut doc).await, Answer::Holds));
    }
}

/// A Haibin device's edit putting `value` into body field `field` of `transfer`, and the
/// message its node sends a hub that confirmed `transfer`: the change alone.
fn haibin_edit(transfer: &Automerge, field: &str, value: &str) -> (Automerge, Vec<u8>) {
    use automerge::transaction::Transactable;
    use automerge::{ROOT, ReadDoc};

    let mut doc = transfer.fork().with_actor(actor_for(HAIBIN));
    let mut tx = doc.transaction();
    let (_, body) = tx.get(ROOT, "body").unwrap().unwrap();
    tx.put(&body, field, value).unwrap();
    tx.commit();
    let message = doc
        .generate_sync_message(&mut synced_at(&transfer.get_heads()))
        .unwrap();
    (doc, message.encode())
}

/// Waits until `done`, failing with `what` after [`ANSWER`].
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + ANSWER;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The hub's record as stored, read without loading it: its summary and stored bytes.
fn stored_copy(hub: &Replica, id: &str) -> (Option<Summary>, Vec<u8>) {
    (
        hub.summary(id).unwrap().map(|s| Summary::clone(&s)),
        hub.store().load(id).unwrap().unwrap().concat(),
    )
}

/// A node's edit of body strings of a record the hub no longer holds in memory is checked and
/// stored without loading the record (`Frontier::take`): a forgery is refused by the rule the
/// whole record's check gives and leaves the stored copy as it was; a valid edit is admitted,
/// what is stored loads into the record the node holds, and the hub still has not loaded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_a_record_not_in_memory_is_taken_without_loading_it() {
    // The hub keeps the fewest documents a replica does: the transfer leaves its memory as
    // Haibin sends more records.
    let started = start_hub_keeping(16).await;
    let hub = started.replica.clone();
    let mut rogue = Rogue::connect(&started.url, HAIBIN).await;
    let (id, mut transfer) = haibin_transfer(SystemClock.now_ms());
    assert!(matches!(
        rogue.push(&id, &mut transfer).await,
        Answer::Holds
    ));
    push_out_of_the_hubs_memory(&mut rogue).await;
    assert!(!hub.is_loaded(&id), "the transfer left the hub's memory");
    let before = stored_copy(&hub, &id);
    let edit = |field: &str, value: &str| haibin_edit(&transfer, field, value);

    let (forged, message) = edit("sender", HAIBIN_TEAM);
    rogue.send(&id, message).await;
    let r = rejected(
        rogue.answer_to(&id, &forged.get_heads()).await,
        "a unit as a transfer's sender",
    );
    assert_eq!(r.rule, "T-4", "{r:?}");
    assert_eq!(stored_copy(&hub, &id), before);
    assert!(!hub.is_loaded(&id), "judged without loading the record");

    // An author written on the actor's second change: Automerge takes one only on an actor's
    // first, and panics applying it. Left to Automerge's path, which refuses the message; the
    // stored copy stays loadable (found by a break-test).
    let mut expanded = creators_title(&transfer, "retitled");
    assert_eq!(expanded.seq, 2, "the creator's second change");
    expanded.extra_bytes = vec![1, 3, b'e', b'v', b'e'];
    let authored = automerge::Change::from(expanded);
    let message = Message {
        heads: vec![authored.hash()],
        need: Vec::new(),
        have: vec![automerge::sync::Have {
            last_sync: transfer.get_heads(),
            bloom: Default::default(),
        }],
        changes: vec![authored.raw_bytes().to_vec()].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    rogue.send(&id, message.encode()).await;
    let r = rejected(
        rogue.answer_to(&id, &[authored.hash()]).await,
        "an author on a later change",
    );
    assert_eq!(r.rule, "protocol", "{r:?}");
    assert_eq!(stored_copy(&hub, &id), before);
    Automerge::load(&before.1).unwrap();

    let (retitled, message) = edit("title", "expired milk on sale");
    rogue.send(&id, message).await;
    assert!(matches!(
        rogue.answer_to(&id, &retitled.get_heads()).await,
        Answer::Holds
    ));
    assert!(!hub.is_loaded(&id), "taken without loading the record");
    let (summary, stored) = stored_copy(&hub, &id);
    let reloaded = Automerge::load(&stored).unwrap();
    assert_eq!(reloaded.get_heads(), retitled.get_heads());
    let held = hydrate_record(&reloaded).unwrap();
    assert_eq!(held, hydrate_record(&retitled).unwrap());
    assert_eq!(summary.unwrap().title, "expired milk on sale");
}

/// An edit the hub took without loading the record reaches the record's other party, whose
/// node confirmed the record before: offered from the store (`offer_tail`) and acknowledged
/// against the summary's heads, so the hub never loads the record, and the party's copy is
/// the editor's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_edit_reaches_the_other_party_without_the_hub_loading_the_record() {
    let started = start_hub_keeping(16).await;
    let hub = started.replica.clone();
    let market = replica(MARKET);
    tokio::spawn(run_forever(
        market.clone(),
        started.url.clone(),
        Arc::new(LinkStatus::default()),
    ));
    let mut rogue = Rogue::connect(&started.url, HAIBIN).await;
    let (id, mut transfer) = haibin_transfer(SystemClock.now_ms());
    assert!(matches!(
        rogue.push(&id, &mut transfer).await,
        Answer::Holds
    ));

    // The bureau's node takes the transfer in and confirms it; then the transfer leaves the
    // hub's memory as Haibin sends more.
    let holds = |heads: &[ChangeHash]| {
        let heads: Vec<String> = heads.iter().map(ToString::to_string).collect();
        market
            .summary(&id)
            .unwrap()
            .is_some_and(|summary| summary.heads == heads)
    };
    until("the bureau never got the transfer", || {
        holds(&transfer.get_heads())
    })
    .await;
    push_out_of_the_hubs_memory(&mut rogue).await;
    assert!(!hub.is_loaded(&id), "the transfer left the hub's memory");

    let (retitled, message) = haibin_edit(&transfer, "title", "expired milk on sale");
    rogue.send(&id, message).await;
    assert!(matches!(
        rogue.answer_to(&id, &retitled.get_heads()).await,
        Answer::Holds
    ));
    until("the edit never reached the bureau", || {
        holds(&retitled.get_heads())
    })
    .await;
    assert_eq!(
        market.record(&id).unwrap(),
        hydrate_record(&retitled).unwrap()
    );
    assert!(
        !hub.is_loaded(&id),
        "the hub took, offered and saw acknowledged the edit without loading the record"
    );
}

/// A text field past the limit an office's own API holds its users to is refused from a peer
/// too, under rule `limits`: in a new record, in an edit of a record the hub holds in memory
/// or not, and in an act (its note, its attachments); the hub's copy stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_past_its_limit_is_refused_from_a_peer_as_from_an_office() {
    use automerge::transaction::Transactable;
    use automerge::{ROOT, ReadDoc};
    use linkage_node::office::MAX_FIELD_BYTES;

    let started = start_hub_keeping(16).await;
    let hub = started.replica.clone();
    let mut rogue = Rogue::connect(&started.url, HAIBIN).await;
    let oversized = "x".repeat(MAX_FIELD_BYTES + 1);

    // A new record carrying it.
    let (new_id, mut new) = haibin_transfer(SystemClock.now_ms());
    let mut tx = new.transaction();
    let (_, body) = tx.get(ROOT, "body").unwrap().unwrap();
    tx.put(&body, "facts", oversized.as_str()).unwrap();
    tx.commit();
    let r = rejected(rogue.push(&new_id, &mut new).await, "an oversized field");
    assert_eq!(r.rule, "limits", "{r:?}");
    assert!(r.reason.contains("facts"), "{r:?}");
    assert!(!hub.contains(&new_id).unwrap());

    // An edit of a record in memory, then of one that left it.
    let (id, mut transfer) = haibin_transfer(SystemClock.now_ms());
    assert!(matches!(
        rogue.push(&id, &mut transfer).await,
        Answer::Holds
    ));
    for unloaded in [false, true] {
        if unloaded {
            push_out_of_the_hubs_memory(&mut rogue).await;
        }
        assert_eq!(hub.is_loaded(&id), !unloaded);
        let before = stored_copy(&hub, &id);
        let (edited, message) = haibin_edit(&transfer, "facts", &oversized);
        rogue.send(&id, message).await;
        let r = rejected(
            rogue.answer_to(&id, &edited.get_heads()).await,
            "an oversized field",
        );
        assert_eq!(r.rule, "limits", "unloaded: {unloaded}, {r:?}");
        assert_eq!(stored_copy(&hub, &id), before);
    }

    // An act with a note past the limit, and one naming too many attachments.
    let before = stored_copy(&hub, &id);
    let mut noted = WorkflowEvent::new(Action::Updated, SystemClock.now_ms(), HAIBIN);
    noted.note = oversized.clone();
    let mut attached = WorkflowEvent::new(Action::Updated, SystemClock.now_ms(), HAIBIN);
    attached.attachments = vec!["scan.pdf".into(); 257];
    for event in [noted, attached] {
        let mut acted = with_event(&transfer, HAIBIN, event);
        let r = rejected(rogue.push(&id, &mut acted).await, "an oversized act");
        assert_eq!(r.rule, "limits", "{r:?}");
        assert_eq!(stored_copy(&hub, &id), before);
    }
}

/// The gate's verdict on body-string edits taken without the document (`admit_taken`) is the
/// one it gives with the document (`admit`, told the changes only put body fields), for the
/// edits the T-rules refuse and allow, from the session's own organisation and another's.
#[tokio::test]
async fn the_gate_judges_a_taken_edit_as_it_judges_the_document() {
    use automerge::transaction::Transactable;
    use automerge::{ROOT, ReadDoc};
    use linkage_node::record::doc::frontier::Frontier;
    use linkage_node::sync::session::{Before, Gate};

    let (id, transfer) = haibin_transfer(SystemClock.now_ms());
    let held = hydrate_record(&transfer).unwrap();
    let frontier = Frontier::of(&transfer, &held).unwrap();
    let edits = [
        ("title", "expired milk on sale"),
        ("title", ""),
        ("sender", HAIBIN_TEAM),
        ("sender", MARKET),
        ("receiver", HAIBIN),
        ("receiver", "nowhere"),
        ("facts", ""),
        ("place", "Haibin Road 3"),
    ];
    let mut refused = 0;
    for signer in [HAIBIN, MARKET] {
        for (field, value) in edits {
            let mut doc = transfer.fork().with_actor(actor_for(signer));
            let mut tx = doc.transaction();
            let (_, body) = tx.get(ROOT, "body").unwrap().unwrap();
            tx.put(&body, field, value).unwrap();
            tx.commit();
            let changes = doc.get_changes(&transfer.get_heads());
            let added = doc.get_changes_meta(&transfer.get_heads());
            let taken = frontier.take(&changes).expect("a put of a body string");

            let whole = gate(false)
                .admit(&id, Before::BodyFieldsPut, &doc, &added)
                .map(|_| ());
            let unloaded = gate(false)
                .admit_taken(&id, &changes, taken.record())
                .expect("the hub's gate judges taken edits");
            assert_eq!(unloaded, whole, "{signer} sets {field} to {value:?}");
            refused += usize::from(whole.is_err());
        }
    }
    assert!(
        refused > 8,
        "the T-rules and the actor rule refuse some of them"
    );

    // Refilling, other parties' changes are judged with the document only.
    let changes = transfer.get_changes(&[]);
    assert!(gate(true).admit_taken(&id, &changes, &held).is_none());
}

/// A change whose op ids collide with ops the record already has (a forged `start_op`):
/// Automerge applies it and the record reads, but the change cannot be encoded again, so a
/// hub that kept it could serve the record to no one. Refused, whether it edits a record the
/// hub holds or comes with a new one, and the hub's copy and its other records stay as they
/// were (found by a break-test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_op_ids_collide_is_refused() {
    let (hub, mut rogue, id, transfer) = hub_holding_a_transfer().await;
    let before = hub_copy(&hub, &id);

    // The title put again by the creator's own actor, its first op renumbered to 1.
    let colliding = |doc: &Automerge| -> automerge::Change {
        let mut expanded = creators_title(doc, "collided");
        expanded.start_op = std::num::NonZeroU64::new(1).unwrap();
        automerge::Change::from(expanded)
    };
    // A message about `doc` as a node sends it to a hub holding `doc` (or, new, nothing of
    // it), carrying `chunks` as its changes.
    let message = |doc: &Automerge, held: bool, chunks: Vec<Vec<u8>>| {
        let heads = if held { doc.get_heads() } else { Vec::new() };
        let mut message = doc.generate_sync_message(&mut synced_at(&heads)).unwrap();
        message.changes = automerge::sync::ChunkList::from(chunks);
        message.encode()
    };

    let forged = colliding(&transfer);
    rogue
        .send(
            &id,
            message(&transfer, true, vec![forged.raw_bytes().to_vec()]),
        )
        .await;
    let r = rejected(
        rogue.answer_to(&id, &[forged.hash()]).await,
        "a change whose op ids collide",
    );
    assert_eq!(r.rule, "protocol", "{r:?}");
    assert_eq!(hub_copy(&hub, &id), before);
    let encodable = hub.read(&id, |doc| doc.get_changes(&[]).len()).unwrap();
    assert_eq!(encodable, Some(1));

    // A new record sent as its changes, the second one colliding with the first.
    let (new_id, fresh) = haibin_transfer(SystemClock.now_ms());
    let forged = colliding(&fresh);
    let first = fresh.get_changes(&[])[0].raw_bytes().to_vec();
    rogue
        .send(
            &new_id,
            message(&fresh, false, vec![first, forged.raw_bytes().to_vec()]),
        )
        .await;
    let r = rejected(
        rogue.answer_to(&new_id, &[forged.hash()]).await,
        "a new record whose second change collides with its first",
    );
    assert_eq!(r.rule, "protocol", "{r:?}");
    assert!(!hub.contains(&new_id).unwrap());
}

/// A change to a record the hub holds may not leave its document's root laid out otherwise
/// than a record's: a second body put there concurrently with the first may lose to it, read
/// as nothing and be checked by nothing, and a stray key reads as nothing too (found by a
/// break-test). Refused by the `schema` rule, and the hub's copy stays as it was; the
/// record's later acts still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_writing_at_the_records_root_is_refused() {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ROOT};

    let (hub, mut rogue, id, transfer) = hub_holding_a_transfer().await;
    let before = hub_copy(&hub, &id);
    let rewrite = |write: &dyn Fn(&mut automerge::transaction::Transaction<'_>)| {
        let mut doc = transfer.fork().with_actor(actor_for(HAIBIN));
        let mut tx = doc.transaction();
        write(&mut tx);
        tx.commit();
        doc
    };
    let second_body = rewrite(&|tx| {
        let body = tx.put_object(ROOT, "body", ObjType::Map).unwrap();
        tx.put(&body, "sender", HAIBIN_TEAM).unwrap();
    });
    let stray_key = rewrite(&|tx| {
        tx.put(ROOT, "note", "kept beside the record").unwrap();
    });
    // The second body here is the later write, so it wins and reads as the record's (a body
    // without its fields); a key beside the envelope, body and events reads as nothing, and
    // only the new rule sees it.
    for (what, doc, reason) in [
        ("a second body", &second_body, "not a readable record"),
        ("a stray key", &stray_key, "holds \"note\" at its root"),
    ] {
        let message = doc
            .generate_sync_message(&mut synced_at(&transfer.get_heads()))
            .unwrap();
        rogue.send(&id, message.encode()).await;
        let r = rejected(rogue.answer_to(&id, &doc.get_heads()).await, what);
        assert_eq!(r.rule, "schema", "{what}: {r:?}");
        assert!(r.reason.contains(reason), "{what}: {}", r.reason);
        assert_eq!(hub_copy(&hub, &id), before, "{what}");
    }

    let noted = with_event(
        &transfer,
        HAIBIN,
        WorkflowEvent::new(Action::Updated, SystemClock.now_ms(), HAIBIN),
    );
    let message = noted
        .generate_sync_message(&mut synced_at(&transfer.get_heads()))
        .unwrap();
    rogue.send(&id, message.encode()).await;
    assert!(matches!(
        rogue.answer_to(&id, &noted.get_heads()).await,
        Answer::Holds
    ));
}

/// A record's first message may not lay out a second body beside the first either: merged
/// from a concurrent change of another of the office's devices, it loses to the transfer's,
/// reads as nothing, and edits inside it would be checked by nothing (found by a
/// break-test). Refused by the `schema` rule, and the hub does not take the record; so is a
/// stray key at a new record's root. An honest transfer still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_record_laid_out_otherwise_than_a_records_root_is_refused() {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ROOT, ReadDoc};

    let started = start_hub().await;
    let mut rogue = Rogue::connect(&started.url, HAIBIN).await;
    let (id, transfer) = haibin_transfer(SystemClock.now_ms());
    let mut two_bodies = loop {
        let mut shadow = Automerge::new().with_actor(actor_for(HAIBIN));
        shadow
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                let body = tx.put_object(ROOT, "body", ObjType::Map)?;
                tx.put(&body, "sender", HAIBIN_TEAM)
            })
            .unwrap();
        let mut merged = transfer.fork();
        merged.merge(&mut shadow).unwrap();
        // The transfer's own body must win for the record to read; the other is hidden.
        if hydrate_record(&merged).is_ok() {
            break merged;
        }
    };
    assert_eq!(two_bodies.get_all(ROOT, "body").unwrap().len(), 2);

    let (stray_id, transfer) = haibin_transfer(SystemClock.now_ms());
    let mut stray = transfer.fork().with_actor(actor_for(HAIBIN));
    stray
        .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "note", "beside it"))
        .unwrap();

    for (what, id, doc, reason) in [
        ("two bodies at its root", &id, &mut two_bodies, "2 values"),
        ("a stray key at its root", &stray_id, &mut stray, "note"),
    ] {
        let r = rejected(rogue.push(id, doc).await, what);
        assert_eq!(r.rule, "schema", "{what}: {r:?}");
        assert!(r.reason.contains(reason), "{what}: {}", r.reason);
        assert!(!started.replica.contains(id).unwrap(), "{what}");
    }

    let (id, mut honest) = haibin_transfer(SystemClock.now_ms());
    assert!(matches!(rogue.push(&id, &mut honest).await, Answer::Holds));
}
