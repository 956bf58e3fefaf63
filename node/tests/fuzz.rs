//! Bad bytes into every decoder and entry point a node has, as proptest properties that run on
//! stable Rust: sync frames into a live session, stored documents into the replica, record
//! bodies, configuration and holiday files, and every gRPC request type. Each property holds
//! that nothing panics, that a refusal says what was wrong, and that a refused input changes
//! nothing stored. Named tests below keep each input that once broke a property.
//!
//! `LINKAGE_FUZZ_CASES=N` multiplies nothing and replaces every property's case count, for a
//! longer run (`LINKAGE_FUZZ_CASES=20000 cargo test -p linkage-node --test fuzz --release`).

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use automerge::sync::{Message, State, SyncDoc};
use automerge::{AutoCommit, Automerge, ROOT, ReadDoc, transaction::Transactable};
use futures::StreamExt;
use linkage_node::calendar::{Calendar, YearCalendar};
use linkage_node::config::{NodeArgs, NodeConfig};
use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::record::{Body, RecordKind};
use linkage_node::replica::{MAX_DOCUMENT_BYTES, Replica, ReplicaError, SystemClock};
use linkage_node::store::{MemoryStore, Store};
use linkage_node::sync::guard::{self, GuardError};
use linkage_node::sync::session::{self, SessionContext, TrustHub};
use linkage_proto::v1 as pb;
use linkage_proto::v1::sync_frame::Frame;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const HAIBIN: &str = "130304100";
const MARKET: &str = "bdh-scjg";

fn cases(default: u32) -> Config {
    let cases = std::env::var("LINKAGE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        // Shrinking a session-level failure replays whole sessions; the failing input is
        // printed either way.
        max_shrink_iters: 256,
        // Inputs that broke a property are kept as named tests below, not in files.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs a property for `default` cases (or `LINKAGE_FUZZ_CASES`). `test` returns whether the
/// code under test refused the input. The tally line printed at the end is what the fault
/// report (`linkage-faults report`) quotes.
fn fuzz<S: Strategy>(
    target: &str,
    default: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) {
    let (inputs, refused) = (Cell::new(0u64), Cell::new(0u64));
    TestRunner::new(cases(default))
        .run(&strategy, |value| {
            inputs.set(inputs.get() + 1);
            if test(value)? {
                refused.set(refused.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz-tally target={target:?} inputs={} refused={}",
        inputs.get(),
        refused.get()
    );
}

/// Mutations of a valid input: bit flips, inserted and deleted bytes, 0xff (a LEB128
/// continuation, so lengths and counts turn huge), truncation and duplicated slices.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0u8..6, any::<prop::sample::Index>(), any::<u8>()), 1..8).prop_map(
        move |edits| {
            let mut bytes = seed.clone();
            for (op, at, value) in edits {
                let len = bytes.len();
                let i = at.index(len.max(1));
                match op {
                    0 if len > 0 => bytes[i] ^= 1 << (value % 8),
                    1 => bytes.insert(i.min(len), value),
                    2 if len > 0 => {
                        bytes.remove(i);
                    }
                    3 if len > 0 => bytes[i] = 0xff,
                    4 => bytes.truncate(i),
                    5 if len > 0 => {
                        let end = (i + 1 + usize::from(value)).min(len);
                        let copy = bytes[i..end].to_vec();
                        bytes.splice(i..i, copy);
                    }
                    _ => {}
                }
            }
            bytes
        },
    )
}

fn bytes_or_mutation(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutations: Vec<_> = seeds.into_iter().map(mutated).collect();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        4 => prop::strategy::Union::new(mutations),
    ]
}

fn replica(org: &str) -> Arc<Replica> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Arc::new(Replica::open(org, store, Arc::new(SystemClock), 64).unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A replica holding one real record, and that record's id.
fn replica_with_a_case(rt: &tokio::runtime::Runtime) -> (Arc<Replica>, String) {
    let replica = replica(HAIBIN);
    let office = Office::new(replica.clone(), Arc::new(Directory::beidaihe()));
    let body = Body::from_json(
        RecordKind::Case,
        r#"{"title": "stall past its licence", "facts": "found on patrol"}"#,
    )
    .unwrap();
    let view = rt
        .block_on(office.create(RecordKind::Case, vec![MARKET.into()], body, Act::default()))
        .unwrap();
    let id = view.record.id().to_owned();
    (replica, id)
}

/// Sync messages Automerge really sends: a first offer (heads and a bloom filter), a message
/// carrying changes, a V2 message carrying a whole document, and a compressed change; and the
/// V2 message Linkage's first offer carries, its document saved uncompressed.
fn real_sync_messages() -> Vec<Vec<u8>> {
    let mut ours = AutoCommit::new();
    ours.put(ROOT, "title", "a case").unwrap();
    ours.put(ROOT, "facts", "x".repeat(600)).unwrap();
    ours.commit();
    for i in 0..5 {
        ours.put(ROOT, "note", format!("note {i}")).unwrap();
        ours.commit();
    }
    let ours = ours.document().clone();
    let theirs = Automerge::new();

    let (mut our_state, mut their_state) = (State::new(), State::new());
    let first = ours.generate_sync_message(&mut our_state).unwrap();
    let mut messages = vec![first.clone().encode()];
    let mut theirs = theirs;
    theirs
        .receive_sync_message(&mut their_state, first)
        .unwrap();
    let answer = theirs.generate_sync_message(&mut their_state).unwrap();
    messages.push(answer.clone().encode());
    ours.clone()
        .receive_sync_message(&mut our_state, answer)
        .unwrap();
    let ours_again = ours.clone();
    if let Some(with_changes) = ours_again.generate_sync_message(&mut our_state) {
        messages.push(with_changes.encode());
    }
    let v2 = Message {
        heads: ours.get_heads(),
        need: Vec::new(),
        have: Vec::new(),
        changes: ours.save().into(),
        flags: None,
        version: automerge::sync::MessageVersion::V2,
    };
    messages.push(v2.clone().encode());
    let plain = Message {
        changes: ours.save_nocompress().into(),
        ..v2
    };
    messages.push(plain.encode());
    messages
}

/// Sync messages built field by field, so the fuzzer reaches what byte mutation rarely does:
/// bloom filters with any parameters, many hashes, and real or mangled change chunks.
fn structured_sync_message(chunks: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let hash = prop::collection::vec(any::<u8>(), 32);
    let bloom = prop_oneof![
        Just(Vec::new()),
        (
            0u64..4,
            0u64..12,
            prop_oneof![0u64..10, Just(u64::from(u32::MAX))],
            0usize..16
        )
            .prop_map(|(entries, bits, probes, len)| {
                let mut bytes = uleb(entries);
                bytes.extend(uleb(bits));
                bytes.extend(uleb(probes));
                bytes.extend(std::iter::repeat_n(0xa5, len));
                bytes
            }),
    ];
    let change = prop_oneof![
        prop::sample::select(chunks.clone()),
        prop::strategy::Union::new(chunks.clone().into_iter().map(mutated)),
        resealed_mutations(chunks),
    ];
    (
        prop::sample::select(vec![0x42u8, 0x43]),
        prop::collection::vec(hash.clone(), 0..3),
        prop::collection::vec(hash.clone(), 0..3),
        prop::collection::vec((prop::collection::vec(hash, 0..2), bloom), 0..2),
        prop::collection::vec(change, 0..3),
    )
        .prop_map(|(version, heads, need, have, changes)| {
            let mut bytes = vec![version];
            for hashes in [&heads, &need] {
                bytes.extend(uleb(hashes.len() as u64));
                hashes.iter().for_each(|h| bytes.extend(h));
            }
            bytes.extend(uleb(have.len() as u64));
            for (last_sync, bloom) in &have {
                bytes.extend(uleb(last_sync.len() as u64));
                last_sync.iter().for_each(|h| bytes.extend(h));
                bytes.extend(uleb(bloom.len() as u64));
                bytes.extend(bloom);
            }
            bytes.extend(uleb(changes.len() as u64));
            for change in &changes {
                bytes.extend(uleb(change.len() as u64));
                bytes.extend(change);
            }
            bytes
        })
}

/// A chunk in Automerge's framing with the checksum Automerge checks: the first four bytes of
/// SHA-256 over the chunk type, the data's LEB128 length and the data.
fn sealed_chunk(kind: u8, data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut header = vec![kind];
    header.extend(uleb(data.len() as u64));
    let hash = sha2::Sha256::new()
        .chain_update(&header)
        .chain_update(data)
        .finalize();
    let mut bytes = vec![0x85, 0x6f, 0x4a, 0x83];
    bytes.extend(&hash[..4]);
    bytes.extend(header);
    bytes.extend(data);
    bytes
}

/// Splits a single chunk into its type and data (the inputs here are Automerge's own output).
fn chunk_parts(chunk: &[u8]) -> (u8, Vec<u8>) {
    let kind = chunk[8];
    let mut i = 9;
    while chunk[i] & 0x80 != 0 {
        i += 1;
    }
    (kind, chunk[i + 1..].to_vec())
}

/// Real chunks whose data is mutated and then sealed with a valid checksum, so the input gets
/// past Automerge's checksum check into its column decoders and document reconstruction.
fn resealed_mutations(chunks: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop::strategy::Union::new(chunks.into_iter().map(|chunk| {
        let (kind, data) = chunk_parts(&chunk);
        mutated(data).prop_map(move |data| sealed_chunk(kind, &data))
    }))
}

/// Change chunks of a real record, to build messages from.
fn real_change_chunks() -> Vec<Vec<u8>> {
    let mut doc = AutoCommit::new();
    doc.put(ROOT, "title", "a case").unwrap();
    doc.commit();
    doc.put(ROOT, "facts", "y".repeat(2000)).unwrap();
    doc.commit();
    let mut chunks: Vec<Vec<u8>> = doc
        .document()
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    chunks.push(doc.save());
    chunks
}

/// A live session over a replica, driven frame by frame: what it answers to a `DocSync` is
/// either the record's next sync message (or an acknowledgement), or a `Rejected` frame.
struct LiveSession {
    rt: tokio::runtime::Runtime,
    replica: Arc<Replica>,
    record: String,
    to_session: mpsc::Sender<Result<pb::SyncFrame, tonic::Status>>,
    from_session: mpsc::Receiver<pb::SyncFrame>,
    task: tokio::task::JoinHandle<Result<(), linkage_node::sync::SyncError>>,
}

#[derive(Debug)]
enum Answer {
    Applied,
    Refused(pb::Rejected),
}

impl LiveSession {
    fn start() -> Self {
        let rt = runtime();
        let (replica, record) = replica_with_a_case(&rt);
        let (to_session, inbound) = mpsc::channel(8);
        let (outbound, from_session) = mpsc::channel(64);
        let ctx = SessionContext {
            replica: replica.clone(),
            peer_key: "fuzzer".into(),
            peer_org: MARKET.into(),
            gate: Arc::new(TrustHub),
            figures: Default::default(),
            log_watch: None,
            offer_summaries: false,
        };
        let task = rt.spawn(session::run(ctx, ReceiverStream::new(inbound), outbound));
        LiveSession {
            rt,
            replica,
            record,
            to_session,
            from_session,
            task,
        }
    }

    /// Sends one frame, then a marker frame the session must refuse (its id is too long). The
    /// session answers frames in order, so the answer to the first is whatever arrives before
    /// the marker's refusal: a `Rejected` for its record, or nothing but `Doc` frames (its
    /// reply, and offers the session makes on its own).
    fn send(&mut self, record_id: String, message: Vec<u8>, encoding: i32) -> Answer {
        let frame = |record_id: String, message: Vec<u8>, encoding: i32| pb::SyncFrame {
            frame: Some(Frame::Doc(pb::DocSync {
                record_id,
                message,
                heads: Vec::new(),
                encoding,
                offered: None,
            })),
        };
        let marker = format!("marker-{}", "m".repeat(300));
        let (to_session, from_session) = (&self.to_session, &mut self.from_session);
        self.rt.block_on(async {
            for frame in [
                frame(record_id.clone(), message, encoding),
                frame(marker.clone(), vec![1], 0),
            ] {
                to_session.send(Ok(frame)).await.expect("session is alive");
            }
            let mut answer = Answer::Applied;
            loop {
                let frame = tokio::time::timeout(Duration::from_secs(20), from_session.recv())
                    .await
                    .expect("the session answers within 20 s")
                    .expect("the session is still running");
                match frame.frame {
                    Some(Frame::Rejected(r)) if r.record_id == marker => return answer,
                    Some(Frame::Rejected(r)) if r.record_id == record_id => {
                        answer = Answer::Refused(r);
                    }
                    _ => {}
                }
            }
        })
    }

    fn alive(&self) -> bool {
        !self.task.is_finished()
    }
}

/// What "nothing stored changed" compares: the change log's head and every summary.
fn stored(replica: &Replica) -> (u64, Vec<(String, Vec<u8>)>) {
    let store = replica.store();
    (store.last_seq(), store.summaries().unwrap())
}

/// How a fuzzed frame's message goes on the wire: plain, deflated as a peer would, as raw bytes
/// claiming to be deflated, or under an encoding nobody defined.
#[derive(Debug, Clone, Copy)]
enum Wire {
    Plain,
    Deflated,
    ClaimsDeflated,
    Unknown(i32),
}

impl Wire {
    fn encode(self, bytes: Vec<u8>) -> (Vec<u8>, i32) {
        let deflate = pb::MessageEncoding::Deflate as i32;
        match self {
            Wire::Plain => (bytes, 0),
            Wire::Deflated => (linkage_node::sync::deflate::deflate(&bytes), deflate),
            Wire::ClaimsDeflated => (bytes, deflate),
            Wire::Unknown(encoding) => (bytes, encoding),
        }
    }
}

fn wires() -> impl Strategy<Value = Wire> {
    prop_oneof![
        4 => Just(Wire::Plain),
        3 => Just(Wire::Deflated),
        2 => Just(Wire::ClaimsDeflated),
        1 => (2..i32::MAX).prop_map(Wire::Unknown),
    ]
}

fn record_ids() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some(String::new())),
        1 => Just(Some("x".repeat(257))),
        1 => Just(Some("x".repeat(64 * 1024))),
        1 => "[a-zA-Z0-9\\-\u{0}-\u{10}]{1,40}".prop_map(Some),
    ]
}

#[test]
fn sync_frames_of_random_and_mutated_bytes_are_refused_by_name_and_store_nothing() {
    // The runner takes an `Fn`; the session changes per case.
    let live = RefCell::new(LiveSession::start());
    let messages = prop_oneof![
        bytes_or_mutation(real_sync_messages()),
        structured_sync_message(real_change_chunks()),
    ];
    let refusals = Cell::new(0u32);
    fuzz(
        "node: sync frames into a live session",
        400,
        (messages, record_ids(), wires()),
        |(bytes, record_id, wire)| {
            if bytes.is_empty() {
                return Ok(false);
            }
            let mut live = live.borrow_mut();
            let record_id = record_id.unwrap_or_else(|| live.record.clone());
            let before = stored(&live.replica);
            let (bytes, encoding) = wire.encode(bytes);
            let refused = match live.send(record_id, bytes, encoding) {
                Answer::Refused(rejected) => {
                    prop_assert!(!rejected.reason.is_empty(), "{rejected:?}");
                    prop_assert!(!rejected.rule.is_empty(), "{rejected:?}");
                    prop_assert_eq!(
                        &stored(&live.replica),
                        &before,
                        "a refused frame changed the store"
                    );
                    refusals.set(refusals.get() + 1);
                    true
                }
                Answer::Applied => false,
            };
            prop_assert!(live.alive(), "the session ended on a bad frame");
            Ok(refused)
        },
    );
    assert!(
        refusals.get() > 0,
        "the mutations never produced a bad message"
    );
    still_syncs(&live.borrow());
}

/// After the fuzzing, a clean session on the same replica still delivers a new record, and the
/// fuzzed session still offers it.
fn still_syncs(live: &LiveSession) {
    let peer = replica(MARKET);
    let (a_out, a_in) = mpsc::channel(64);
    let (b_out, b_in) = mpsc::channel(64);
    let ctx = |replica: &Arc<Replica>, peer: &str| SessionContext {
        replica: replica.clone(),
        peer_key: peer.into(),
        peer_org: peer.into(),
        gate: Arc::new(TrustHub),
        figures: Default::default(),
        log_watch: None,
        offer_summaries: false,
    };
    let wrap = |rx| ReceiverStream::new(rx).map(Ok::<_, tonic::Status>);
    live.rt.spawn(session::run(
        ctx(&live.replica, "clean-peer"),
        wrap(b_in),
        a_out,
    ));
    live.rt
        .spawn(session::run(ctx(&peer, "fuzzed"), wrap(a_in), b_out));

    let office = Office::new(live.replica.clone(), Arc::new(Directory::beidaihe()));
    let body = Body::from_json(RecordKind::Case, r#"{"title": "after the fuzzing"}"#).unwrap();
    let id = live
        .rt
        .block_on(office.create(RecordKind::Case, vec![MARKET.into()], body, Act::default()))
        .unwrap()
        .record
        .id()
        .to_owned();
    live.rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !peer.contains(&id).unwrap() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a clean session did not deliver a new record after the fuzzing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(live.alive());
}

#[test]
fn sync_message_decode_and_guard_never_panic_on_any_bytes() {
    let messages = prop_oneof![
        bytes_or_mutation(real_sync_messages()),
        structured_sync_message(real_change_chunks()),
    ];
    fuzz(
        "node: sync message decode and guard",
        2000,
        messages,
        |bytes| match Message::decode(&bytes) {
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                Ok(true)
            }
            Ok(message) => match guard::check_message(&message) {
                Err(e) => {
                    prop_assert!(!e.to_string().is_empty());
                    Ok(true)
                }
                Ok(_) => Ok(false),
            },
        },
    );
}

#[test]
fn stored_documents_of_random_and_mutated_bytes_load_as_corrupt_not_a_panic() {
    let rt = runtime();
    let (source, id) = replica_with_a_case(&rt);
    let doc_bytes = source.read(&id, Automerge::save).unwrap().unwrap();
    let change_bytes = source
        .read(&id, |d| d.get_changes(&[])[0].raw_bytes().to_vec())
        .unwrap()
        .unwrap();
    fuzz(
        "node: stored documents loaded by the replica",
        500,
        prop_oneof![
            bytes_or_mutation(vec![doc_bytes.clone(), change_bytes.clone()]),
            resealed_mutations(vec![doc_bytes, change_bytes]),
        ],
        |bytes| {
            let replica = replica(HAIBIN);
            replica.store().append("CA-fuzz", &bytes, b"{}").unwrap();
            let before = stored(&replica);
            let refused = match replica.record("CA-fuzz") {
                Ok(_) => false,
                Err(ReplicaError::Corrupt { id, detail }) => {
                    prop_assert_eq!(id, "CA-fuzz");
                    prop_assert!(!detail.is_empty());
                    true
                }
                Err(e) => {
                    prop_assert!(!e.to_string().is_empty());
                    true
                }
            };
            let edit = replica.change("CA-fuzz", false, |doc| {
                doc.transact(|tx| tx.put(ROOT, "poke", 1))
                    .map(|_| ())
                    .map_err(|_| ReplicaError::NotFound("poke".into()))
            });
            if edit.is_err() {
                prop_assert_eq!(stored(&replica), before);
            }
            Ok(refused)
        },
    );
}

/// JSON values of every shape: scalars, long strings, arrays and objects nested a few deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        (0usize..200_000).prop_map(|n| Value::String("字".repeat(n / 3))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("title".to_owned()),
                    Just("sender".to_owned()),
                    Just("materials".to_owned()),
                    Just("year".to_owned()),
                    Just("discovered_at_ms".to_owned()),
                    ".{0,12}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn record_bodies_of_random_json_are_refused_naming_the_kind() {
    fuzz(
        "node: record bodies (JSON)",
        1000,
        (
            prop::sample::select(RecordKind::ALL.to_vec()),
            prop_oneof![
                3 => json_value().prop_map(|v| v.to_string()),
                1 => ".{0,64}",
            ],
        ),
        |(kind, json)| match Body::from_json(kind, &json) {
            Ok(_) => Ok(false),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.contains(kind.as_str()), "{message}");
                Ok(true)
            }
        },
    );
}

#[test]
fn record_body_nested_ten_thousand_deep_is_refused_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let nested_object = format!(
        "{{\"title\": {}1{}}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    for json in [deep, nested_object] {
        let message = Body::from_json(RecordKind::Case, &json)
            .unwrap_err()
            .to_string();
        assert!(message.contains("case"), "{message}");
    }
}

#[test]
fn record_body_with_a_string_past_the_request_limit_is_parsed_then_refused_by_the_office() {
    let rt = runtime();
    let (replica, _) = replica_with_a_case(&rt);
    let before = stored(&replica);
    let huge = "x".repeat(5 * 1024 * 1024);
    let body = Body::from_json(RecordKind::Case, &format!("{{\"facts\": \"{huge}\"}}")).unwrap();
    let office = Office::new(replica.clone(), Arc::new(Directory::beidaihe()));
    let error = rt
        .block_on(office.create(RecordKind::Case, vec![], body, Act::default()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("facts"), "{error}");
    assert_eq!(stored(&replica), before);
}

fn node_config_seed() -> Vec<u8> {
    include_bytes!("../../deploy/linkage-node.toml").to_vec()
}

#[test]
fn configuration_files_of_random_and_mutated_toml_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    fuzz(
        "node: configuration files (TOML)",
        500,
        bytes_or_mutation(vec![node_config_seed()]),
        |bytes| {
            std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(&bytes))
                .unwrap();
            match NodeConfig::from_args(args_with_config(&path)) {
                Ok(config) => {
                    prop_assert!(!config.org.is_empty());
                    Ok(false)
                }
                Err(e) => {
                    let message = e.to_string();
                    prop_assert!(!message.is_empty());
                    Ok(true)
                }
            }
        },
    );
}

fn args_with_config(path: &std::path::Path) -> NodeArgs {
    use clap::Parser;
    NodeArgs::try_parse_from(["linkage-node", "--config", &path.display().to_string()])
        .expect("--config alone parses")
}

fn holidays_seed() -> Vec<u8> {
    include_bytes!("../data/holidays.toml").to_vec()
}

#[test]
fn holiday_files_of_random_and_mutated_toml_never_panic() {
    fuzz(
        "node: holiday files (TOML)",
        500,
        bytes_or_mutation(vec![holidays_seed()]),
        |bytes| match Calendar::from_holiday_file(&String::from_utf8_lossy(&bytes)) {
            Ok(_) => Ok(false),
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                Ok(true)
            }
        },
    );
}

#[test]
fn calendar_years_from_random_dates_are_refused_naming_the_date() {
    let date = prop_oneof![
        "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        "-?[0-9]{1,7}-[0-9]{1,3}-[0-9]{1,3}",
        ".{0,20}",
    ];
    fuzz(
        "node: calendar years from record dates",
        1000,
        (
            any::<i32>(),
            prop::collection::vec(date.clone(), 0..6),
            prop::collection::vec(date, 0..6),
        ),
        |(year, off, make_up)| match YearCalendar::from_dates(year, &off, &make_up) {
            Ok(_) => Ok(false),
            Err(e) => {
                let message = e.to_string();
                // Each error carries the offending input (shortened past 64 characters) or
                // the year it falls outside of.
                let named = off.iter().chain(&make_up).any(|d| {
                    let shown = format!("{:?}", d.chars().take(64).collect::<String>());
                    message.contains(shown.trim_end_matches('"')) || message.contains(d.trim())
                }) || message.contains(&year.to_string());
                prop_assert!(named, "{message}");
                Ok(true)
            }
        },
    );
}

/// Decodes `bytes` as every request and frame type the node and the hub accept; whether all
/// refused them.
fn decode_every_request(bytes: &[u8]) -> bool {
    [
        pb::CreateRecordRequest::decode(bytes).is_err(),
        pb::GetRecordRequest::decode(bytes).is_err(),
        pb::ListRecordsRequest::decode(bytes).is_err(),
        pb::AppendEventRequest::decode(bytes).is_err(),
        pb::HistoryRequest::decode(bytes).is_err(),
        pb::AddPartiesRequest::decode(bytes).is_err(),
        pb::EditBodyRequest::decode(bytes).is_err(),
        pb::ObligationsRequest::decode(bytes).is_err(),
        pb::AccountabilityRequest::decode(bytes).is_err(),
        pb::RejectionsRequest::decode(bytes).is_err(),
        pb::NodeInfoRequest::decode(bytes).is_err(),
        pb::SyncFrame::decode(bytes).is_err(),
        pb::ConvergenceRequest::decode(bytes).is_err(),
        pb::RecordCountsRequest::decode(bytes).is_err(),
        pb::FeedRequest::decode(bytes).is_err(),
    ]
    .into_iter()
    .all(|refused| refused)
}

#[test]
fn grpc_requests_of_random_and_mutated_bytes_decode_or_fail_cleanly() {
    let seeds = vec![
        pb::CreateRecordRequest {
            kind: "case".into(),
            parties: vec![MARKET.into()],
            body_json: r#"{"title":"x"}"#.into(),
            at_ms: Some(1),
            ..Default::default()
        }
        .encode_to_vec(),
        pb::SyncFrame {
            frame: Some(Frame::Doc(pb::DocSync {
                record_id: "CA-1".into(),
                message: real_sync_messages().remove(0),
                heads: vec![vec![0; 32]],
                ..Default::default()
            })),
        }
        .encode_to_vec(),
        pb::AppendEventRequest {
            id: "CA-1".into(),
            action: "updated".into(),
            attachments: vec!["a".into(), "b".into()],
            ..Default::default()
        }
        .encode_to_vec(),
    ];
    fuzz(
        "node and hub: gRPC request and frame decoding",
        2000,
        bytes_or_mutation(seeds),
        |bytes| Ok(decode_every_request(&bytes)),
    );
}

// Inputs that once broke a property, kept by name.

fn uleb(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A V1 sync message with one `have` whose bloom filter is `bloom`, and no changes.
fn message_with_bloom(bloom: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x42, 0, 0, 1, 0];
    bytes.extend(uleb(bloom.len() as u64));
    bytes.extend(bloom);
    bytes.push(0);
    bytes
}

/// A chunk in Automerge's framing (the checksum is not checked by the guard).
fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, kind];
    bytes.extend(uleb(data.len() as u64));
    bytes.extend(data);
    bytes
}

fn message_with_changes(changes: Vec<Vec<u8>>) -> Message {
    Message {
        heads: Vec::new(),
        need: Vec::new(),
        have: Vec::new(),
        changes: changes.into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    }
}

/// Found by `sync_frames_of_random_and_mutated_bytes_...`: Automerge computes bloom probes
/// modulo the filter's bit count, which a peer can make zero, and panicked inside the
/// replica's document lock, which then failed every later session that touched the record.
#[test]
fn bloom_filter_with_zero_bits_per_entry_is_refused_not_a_division_by_zero() {
    let bytes = message_with_bloom(&[1, 0, 7]);
    let message = Message::decode(&bytes).unwrap();
    assert!(matches!(
        guard::check_message(&message),
        Err(GuardError::Bloom {
            field: "bits per entry",
            value: 0,
            ..
        })
    ));

    let mut live = LiveSession::start();
    let record = live.record.clone();
    let before = stored(&live.replica);
    match live.send(record.clone(), bytes, 0) {
        Answer::Refused(r) => assert!(r.reason.contains("bits per entry"), "{r:?}"),
        Answer::Applied => panic!("a zero-bit bloom filter was applied"),
    }
    assert_eq!(stored(&live.replica), before);
    assert!(matches!(
        live.send(record, real_sync_messages().remove(1), 0),
        Answer::Applied
    ));
    still_syncs(&live);
}

/// Automerge reserves `probes` entries per hash it tests: four billion probes is 16 GiB.
#[test]
fn bloom_filter_with_four_billion_probes_is_refused_before_allocating() {
    let mut bloom = vec![1, 10];
    bloom.extend(uleb(u64::from(u32::MAX)));
    bloom.extend([0xff, 0xff]);
    let message = Message::decode(&message_with_bloom(&bloom)).unwrap();
    assert!(matches!(
        guard::check_message(&message),
        Err(GuardError::Bloom {
            field: "probes",
            ..
        })
    ));
}

/// Automerge inflates a compressed change with no cap: 20 KiB of deflate is 20 MiB of zeros.
#[test]
fn compressed_change_inflating_past_the_document_limit_is_refused() {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(&vec![0u8; MAX_DOCUMENT_BYTES + 1])
        .unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    let message = message_with_changes(vec![chunk(2, &bomb)]);
    assert!(matches!(
        guard::check_message(&message),
        Err(GuardError::Inflated { .. })
    ));
}

/// A deflated frame is inflated before anything reads it: 30 KiB of deflate claiming to be a
/// sync message of 30 MiB is refused by the limit, a frame of garbage or under an unknown
/// encoding by name, and none of them store anything or end the session.
#[test]
fn deflated_frames_past_the_limit_or_broken_are_refused_naming_why() {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 30 << 20]).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    let deflate = pb::MessageEncoding::Deflate as i32;

    let mut live = LiveSession::start();
    let record = live.record.clone();
    let before = stored(&live.replica);
    for (bytes, encoding, rule, naming) in [
        (bomb, deflate, "limits", "inflates past"),
        (vec![0xff; 40], deflate, "protocol", "does not inflate"),
        (real_sync_messages().remove(1), 7, "protocol", "encoding 7"),
    ] {
        match live.send(record.clone(), bytes, encoding) {
            Answer::Refused(r) => {
                assert_eq!(r.rule, rule, "{r:?}");
                assert!(r.reason.contains(naming), "{r:?}");
            }
            Answer::Applied => panic!("a frame that should be refused ({naming}) was applied"),
        }
        assert_eq!(stored(&live.replica), before);
    }
    // The same message deflated as a peer sends it is applied.
    let deflated = linkage_node::sync::deflate::deflate(&real_sync_messages().remove(1));
    assert!(matches!(
        live.send(record, deflated, deflate),
        Answer::Applied
    ));
    still_syncs(&live);
}

/// One run-length entry can claim 2^40 operations in a dozen bytes.
#[test]
fn change_claiming_two_to_the_forty_operations_is_refused_by_its_run_length() {
    let mut data = vec![0]; // no dependencies
    data.extend(uleb(16));
    data.extend([7u8; 16]); // actor
    data.extend([1, 1, 0, 0, 0]); // seq, start op, time, message, other actors
    let mut column = Vec::new();
    // A run of 2^40 copies of action 1, as a signed LEB128 count then the value.
    let mut run: i64 = 1 << 40;
    loop {
        let byte = (run & 0x7f) as u8;
        run >>= 7;
        if run == 0 && byte & 0x40 == 0 {
            column.push(byte);
            break;
        }
        column.push(byte | 0x80);
    }
    column.push(1);
    data.extend([1, 0x42]); // one column: id 4, integer
    data.extend(uleb(column.len() as u64));
    data.extend(column);
    let message = message_with_changes(vec![chunk(1, &data)]);
    assert!(matches!(
        guard::check_message(&message),
        Err(GuardError::TooManyRows { .. })
    ));
}

/// Automerge's bundle parser reserves and splits by counts taken from the bytes; nothing this
/// workspace sends is a bundle.
#[test]
fn bundle_chunk_is_refused() {
    let message = message_with_changes(vec![chunk(3, &[0xff; 16])]);
    assert!(matches!(
        guard::check_message(&message),
        Err(GuardError::Bundle { .. })
    ));
}

#[test]
fn real_sync_messages_pass_the_guard() {
    for bytes in real_sync_messages() {
        let message = Message::decode(&bytes).unwrap();
        assert!(guard::check_message(&message).is_ok());
    }
}

/// Found while reading the replica for this suite: the size limit was checked only when a
/// document was compacted, after the change was stored, so a record grew past it unrefused and
/// then stopped syncing (its messages were over the frame limit).
#[test]
fn change_growing_a_record_past_the_document_limit_is_refused_and_stores_nothing() {
    let rt = runtime();
    let (replica, id) = replica_with_a_case(&rt);
    // Text that deflate cannot shrink much, so the saved document really grows.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = |len: usize| -> String {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        [(state % 62) as usize],
                )
            })
            .collect()
    };
    let mut refused = None;
    for field in 0..4 {
        let before = stored(&replica);
        let value = noise(3 * 1024 * 1024);
        let outcome = replica.change(&id, false, |doc| {
            doc.transact(|tx| tx.put(ROOT, format!("blob{field}"), value.as_str()))
                .map(|_| ())
                .map_err(|_| ReplicaError::NotFound("put".into()))
        });
        if let Err(e) = outcome {
            assert!(matches!(e, ReplicaError::TooLarge { .. }), "{e}");
            assert_eq!(stored(&replica), before, "a refused change was stored");
            refused = Some(field);
            break;
        }
    }
    assert!(refused.is_some(), "12 MiB of changes were all accepted");
    let size = replica.read(&id, |d| d.save().len()).unwrap().unwrap();
    assert!(size <= MAX_DOCUMENT_BYTES, "{size} bytes held");
}

/// The division by zero above panicked while the replica held the record's lock; the next
/// session to touch the record then failed on the poisoned lock. A panic inside a change now
/// leaves the record as the store has it.
#[test]
fn a_panic_inside_a_change_leaves_the_record_as_stored() {
    let rt = runtime();
    let (replica, id) = replica_with_a_case(&rt);
    let before = stored(&replica);
    let title = replica.record(&id).unwrap().body.title();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = replica.change(&id, false, |doc| -> Result<(), ReplicaError> {
            doc.transact(|tx| tx.put(ROOT, "half", "changed"))
                .map(|_| ())
                .map_err(|_| ReplicaError::NotFound("put".into()))?;
            panic!("Automerge panicked here");
        });
    }));
    assert!(panicked.is_err());
    assert_eq!(stored(&replica), before);
    let record = replica.record(&id).unwrap();
    assert_eq!(record.body.title(), title);
    assert!(
        replica
            .read(&id, |d| d.get(ROOT, "half").unwrap().is_none())
            .unwrap()
            .unwrap(),
        "the half-applied change lingered in memory"
    );
    replica
        .change(&id, false, |doc| {
            doc.transact(|tx| tx.put(ROOT, "after", 1))
                .map(|_| ())
                .map_err(|_| ReplicaError::NotFound("put".into()))
        })
        .unwrap();
}

/// A well-formed change (valid checksum) from a fresh actor whose sequence number is 3, not 1.
/// Automerge 0.12 panics applying it (`op_set2/change/batch.rs:1121`, an `unwrap` on the actor
/// lookup). Found by `stored_documents_...` once mutated chunks were resealed.
fn change_with_a_sequence_gap() -> Vec<u8> {
    let actor = b"130304100\0fixed-actor-id".to_vec();
    let mut doc = AutoCommit::new().with_actor(automerge::ActorId::from(actor.clone()));
    doc.put(ROOT, "title", "a case").unwrap();
    doc.commit_with(automerge::transaction::CommitOptions::default().with_time(1_000));
    let (kind, mut data) = chunk_parts(doc.document().get_changes(&[])[0].raw_bytes());
    // No dependencies (one byte), the actor's length (one byte) and bytes, then the sequence
    // number.
    let seq_at = 2 + actor.len();
    assert_eq!(data[seq_at], 1);
    data[seq_at] = 3;
    sealed_chunk(kind, &data)
}

#[test]
fn change_whose_sequence_number_skips_ahead_is_refused_not_a_panic() {
    let bytes = message_with_changes(vec![change_with_a_sequence_gap()]).encode();
    let mut live = LiveSession::start();
    let before = stored(&live.replica);
    match live.send("CA-sequence-gap".into(), bytes, 0) {
        Answer::Refused(r) => assert!(r.reason.contains("Automerge"), "{r:?}"),
        Answer::Applied => panic!("a change with a sequence gap was applied"),
    }
    assert_eq!(stored(&live.replica), before);
    assert!(live.alive());
    still_syncs(&live);
}

#[test]
fn stored_change_whose_sequence_number_skips_ahead_loads_as_corrupt() {
    let replica = replica(HAIBIN);
    replica
        .store()
        .append("CA-sequence-gap", &change_with_a_sequence_gap(), b"{}")
        .unwrap();
    match replica.record("CA-sequence-gap") {
        Err(ReplicaError::Corrupt { id, detail }) => {
            assert_eq!(id, "CA-sequence-gap");
            assert!(detail.contains("Automerge"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}
