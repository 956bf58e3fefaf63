//! A rogue node against the hub's `Sync` service: a hand-driven tonic client that says hello as
//! Haibin Town, then sends `DocSync` frames carrying random, mutated and hand-built sync
//! messages, oversized record ids, frames before hello and frames past the size limit. The hub
//! must refuse each bad frame by name with a `Rejected` frame (or end only that stream), store
//! nothing for it, and go on syncing the honest nodes' records all the while.
//!
//! The hub runs in-process over real gRPC on loopback port 0 with in-memory stores.
//! `LINKAGE_FUZZ_CASES=N` replaces the property's case count for a longer run.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use automerge::sync::{State, SyncDoc};
use linkage_hub::convergence::Registry;
use linkage_hub::service::HubService;
use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::record::{Body, RecordKind};
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::{MemoryStore, Store};
use linkage_node::sync::client::{LinkStatus, run_forever};
use linkage_node::sync::{MAX_FRAME_BYTES, PROTOCOL_VERSION};
use linkage_proto::v1::sync_client::SyncClient;
use linkage_proto::v1::sync_frame::Frame;
use linkage_proto::v1::{DocSync, Hello, Rejected, SyncFrame};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Streaming;

const HAIBIN: &str = "130304100";
const MARKET: &str = "bdh-scjg";
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

fn cases(default: u32) -> Config {
    let cases = std::env::var("LINKAGE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        max_shrink_iters: 128,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs a property for `default` cases (or `LINKAGE_FUZZ_CASES`); `test` returns whether the
/// hub refused the input. The tally line is what the fault report quotes.
fn fuzz<S: Strategy>(
    target: &str,
    default: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> u64 {
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
    refused.get()
}

fn replica(org: &str) -> Arc<Replica> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Arc::new(Replica::open(org, store, Arc::new(SystemClock), 256).unwrap())
}

fn office(replica: &Arc<Replica>) -> Office {
    Office::new(replica.clone(), Arc::new(Directory::beidaihe()))
}

async fn create_case(office: &Office, title: &str) -> String {
    let body = Body::from_json(RecordKind::Case, &format!(r#"{{"title": "{title}"}}"#)).unwrap();
    office
        .create(RecordKind::Case, vec![MARKET.into()], body, Act::default())
        .await
        .unwrap()
        .record
        .id()
        .to_owned()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A hub with two honest nodes (Haibin Town and the Market Supervision Bureau) already sharing
/// one case.
struct District {
    rt: Runtime,
    url: String,
    hub: Arc<Replica>,
    haibin: Arc<Replica>,
    market: Arc<Replica>,
    case: String,
}

impl District {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let hub = replica("district-hub");
        let (haibin, market) = (replica(HAIBIN), replica(MARKET));
        let url = rt.block_on(async {
            let registry = Arc::new(Registry::load(hub.clone()).unwrap());
            let service = HubService::new(office(&hub), registry);
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(service.sync_server())
                    .serve_with_incoming(TcpListenerStream::new(listener))
                    .await
                    .unwrap();
            });
            url
        });
        for node in [&haibin, &market] {
            rt.spawn(run_forever(
                node.clone(),
                url.clone(),
                Arc::new(LinkStatus::default()),
            ));
        }
        let case = rt.block_on(async {
            let case = create_case(&office(&haibin), "shared before the rogue came").await;
            eventually("the market bureau to hold the case", || {
                market.contains(&case).unwrap()
            })
            .await;
            case
        });
        District {
            rt,
            url,
            hub,
            haibin,
            market,
            case,
        }
    }

    /// The honest nodes still sync: a new record of Haibin's reaches the market bureau.
    fn still_syncs(&self) {
        self.rt.block_on(async {
            let id = create_case(&office(&self.haibin), "after the rogue").await;
            eventually("a new record to reach the market bureau", || {
                self.market.contains(&id).unwrap()
            })
            .await;
        });
    }
}

/// A client that speaks the sync protocol by hand.
struct Rogue {
    to_hub: mpsc::Sender<SyncFrame>,
    from_hub: Streaming<SyncFrame>,
}

fn hello(org: &str, node_id: &str) -> SyncFrame {
    SyncFrame {
        frame: Some(Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            org: org.into(),
            node_id: node_id.into(),
            store_id: format!("{node_id}-store"),
        })),
    }
}

fn doc_frame(record_id: String, message: Vec<u8>) -> SyncFrame {
    SyncFrame {
        frame: Some(Frame::Doc(DocSync {
            record_id,
            message,
            heads: Vec::new(),
            ..Default::default()
        })),
    }
}

/// Opens a session whose first frame is `first`; the hub's answer is its hello or an error.
async fn open(url: &str, first: SyncFrame) -> Result<Rogue, tonic::Status> {
    let mut client = SyncClient::new(
        tonic::transport::Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let (to_hub, rx) = mpsc::channel(16);
    to_hub.send(first).await.unwrap();
    let mut from_hub = client.session(ReceiverStream::new(rx)).await?.into_inner();
    match from_hub.next().await {
        Some(Ok(SyncFrame {
            frame: Some(Frame::Hello(_)),
        })) => Ok(Rogue { to_hub, from_hub }),
        Some(Ok(other)) => panic!("the hub did not answer hello with hello: {other:?}"),
        Some(Err(status)) => Err(status),
        None => Err(tonic::Status::cancelled("closed")),
    }
}

#[derive(Debug)]
enum Answer {
    Applied,
    Refused(Rejected),
    /// The hub ended the stream (a frame past the size limit).
    Ended(tonic::Status),
}

impl Rogue {
    /// Sends a frame and then a marker the hub must refuse (its id is too long); the answer to
    /// the frame is whatever came before the marker's refusal.
    async fn send(&mut self, record_id: String, message: Vec<u8>) -> Answer {
        let marker = format!("marker-{}", "m".repeat(300));
        for frame in [
            doc_frame(record_id.clone(), message),
            doc_frame(marker.clone(), vec![1]),
        ] {
            if self.to_hub.send(frame).await.is_err() {
                return Answer::Ended(tonic::Status::cancelled("stream closed"));
            }
        }
        let mut answer = Answer::Applied;
        loop {
            let frame = tokio::time::timeout(ANSWER_TIMEOUT, self.from_hub.next())
                .await
                .expect("the hub answers within 20 s");
            match frame {
                Some(Ok(SyncFrame {
                    frame: Some(Frame::Rejected(r)),
                })) if r.record_id == marker => return answer,
                Some(Ok(SyncFrame {
                    frame: Some(Frame::Rejected(r)),
                })) if r.record_id == record_id => answer = Answer::Refused(r),
                Some(Ok(_)) => {}
                Some(Err(status)) => return Answer::Ended(status),
                None => return Answer::Ended(tonic::Status::cancelled("stream ended")),
            }
        }
    }
}

fn stored(replica: &Replica) -> (u64, Vec<(String, Vec<u8>)>) {
    (
        replica.store().last_seq(),
        replica.store().summaries().unwrap(),
    )
}

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

/// Byte mutations: flips, inserts, deletes, 0xff (huge LEB128 lengths), truncation.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0u8..5, any::<prop::sample::Index>(), any::<u8>()), 1..6).prop_map(
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
                    _ => {}
                }
            }
            bytes
        },
    )
}

/// What a real Haibin node would send about a record of its own: a first offer, then the
/// message carrying the record's changes.
fn real_messages(district: &District) -> Vec<Vec<u8>> {
    let source = replica(HAIBIN);
    let id = district.rt.block_on(create_case(
        &office(&source),
        "a record the hub has not seen",
    ));
    let doc = source.read(&id, |d| d.clone()).unwrap().unwrap();
    let mut peer = automerge::Automerge::new();
    let (mut ours, mut theirs) = (State::new(), State::new());
    let first = doc.generate_sync_message(&mut ours).unwrap();
    peer.receive_sync_message(&mut theirs, first.clone())
        .unwrap();
    let answer = peer.generate_sync_message(&mut theirs).unwrap();
    let mut doc = doc;
    doc.receive_sync_message(&mut ours, answer).unwrap();
    let with_changes = doc.generate_sync_message(&mut ours).unwrap();
    vec![first.encode(), with_changes.encode()]
}

/// Sync messages built field by field: bloom filters with any parameters, many hashes.
fn built_message() -> impl Strategy<Value = Vec<u8>> {
    let hash = prop::collection::vec(any::<u8>(), 32);
    (
        prop::collection::vec(hash.clone(), 0..3),
        0u64..3,
        0u64..12,
        prop_oneof![0u64..10, Just(u64::from(u32::MAX))],
        0usize..8,
    )
        .prop_map(|(heads, entries, bits, probes, len)| {
            let mut bloom = uleb(entries);
            bloom.extend(uleb(bits));
            bloom.extend(uleb(probes));
            bloom.extend(std::iter::repeat_n(0x5a, len));
            let mut bytes = vec![0x42];
            bytes.extend(uleb(heads.len() as u64));
            heads.iter().for_each(|h| bytes.extend(h));
            bytes.push(0); // need
            bytes.push(1); // one have
            bytes.push(0); // with no last-sync hashes
            bytes.extend(uleb(bloom.len() as u64));
            bytes.extend(bloom);
            bytes.push(0); // no changes
            bytes
        })
}

#[test]
fn rogue_sync_frames_are_refused_by_name_store_nothing_and_spare_the_honest_nodes() {
    let district = District::start();
    let seeds = real_messages(&district);
    let messages = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 1..256),
        3 => prop::strategy::Union::new(seeds.into_iter().map(mutated)),
        2 => built_message(),
    ];
    let record_ids = prop_oneof![
        4 => Just(None),
        1 => Just(Some(String::new())),
        1 => Just(Some("r".repeat(257))),
        1 => Just(Some("r".repeat(64 * 1024))),
        1 => "[A-Z]{2}-[0-9a-f\u{0}]{1,20}".prop_map(Some),
    ];
    let rogue = RefCell::new(
        district
            .rt
            .block_on(open(&district.url, hello(HAIBIN, "rogue")))
            .unwrap(),
    );
    let refused = fuzz(
        "hub: rogue sync frames over gRPC",
        200,
        (messages, record_ids),
        |(message, record_id)| {
            let record_id = record_id.unwrap_or_else(|| district.case.clone());
            let before = stored(&district.hub);
            let answer = district
                .rt
                .block_on(rogue.borrow_mut().send(record_id, message));
            match answer {
                Answer::Refused(rejected) => {
                    prop_assert!(!rejected.reason.is_empty(), "{rejected:?}");
                    prop_assert_eq!(&stored(&district.hub), &before, "{:?}", rejected);
                    Ok(true)
                }
                Answer::Applied => Ok(false),
                Answer::Ended(status) => {
                    prop_assert!(false, "the hub ended the rogue's session: {status}");
                    Ok(true)
                }
            }
        },
    );
    assert!(refused > 0);
    district.still_syncs();
}

#[test]
fn doc_frame_before_hello_is_refused_and_the_hub_serves_on() {
    let district = District::start();
    let status = district
        .rt
        .block_on(open(
            &district.url,
            doc_frame(district.case.clone(), vec![0x42, 0, 0, 0, 0]),
        ))
        .err()
        .expect("a session opened without hello");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("hello"), "{status:?}");
    district.still_syncs();
}

#[test]
fn hellos_of_random_fields_are_refused_naming_the_field_or_accepted() {
    let district = District::start();
    let hellos = (
        prop_oneof![Just(PROTOCOL_VERSION), any::<u32>()],
        prop_oneof![Just(HAIBIN.to_owned()), Just(String::new()), ".{0,40}"],
        prop_oneof![
            Just("n".to_owned()),
            Just(String::new()),
            Just("n".repeat(129)),
            ".{1,20}"
        ],
        prop_oneof![Just("s".to_owned()), Just("s".repeat(129))],
    );
    fuzz(
        "hub: hellos of random fields",
        64,
        hellos,
        |(version, org, node_id, store_id)| {
            let frame = SyncFrame {
                frame: Some(Frame::Hello(Hello {
                    protocol_version: version,
                    org,
                    node_id,
                    store_id,
                })),
            };
            match district.rt.block_on(open(&district.url, frame)) {
                Ok(_) => Ok(false),
                Err(status) => {
                    prop_assert!(!status.message().is_empty(), "{status:?}");
                    Ok(true)
                }
            }
        },
    );
    district.still_syncs();
}

#[test]
fn frame_past_the_size_limit_ends_only_that_session() {
    let district = District::start();
    let before = stored(&district.hub);
    let answer = district.rt.block_on(async {
        let mut rogue = open(&district.url, hello(HAIBIN, "big")).await.unwrap();
        rogue
            .send(district.case.clone(), vec![0x42; MAX_FRAME_BYTES + 1])
            .await
    });
    assert!(matches!(answer, Answer::Ended(_)), "{answer:?}");
    assert_eq!(stored(&district.hub), before);
    district.still_syncs();
}

#[test]
fn sync_message_with_a_zero_bit_bloom_filter_is_refused_and_the_record_still_syncs() {
    let district = District::start();
    // Version, no heads, no needs, one have with no last-sync hashes and a three-byte bloom
    // filter (one entry, zero bits per entry, seven probes), no changes.
    let bloom_message = vec![0x42, 0, 0, 1, 0, 3, 1, 0, 7, 0];
    let answer = district.rt.block_on(async {
        let mut rogue = open(&district.url, hello(HAIBIN, "bloom")).await.unwrap();
        rogue.send(district.case.clone(), bloom_message).await
    });
    match answer {
        Answer::Refused(r) => assert!(r.reason.contains("bits per entry"), "{r:?}"),
        other => panic!("{other:?}"),
    }
    // The record the rogue aimed at still syncs between the honest nodes.
    district.rt.block_on(async {
        let haibin = office(&district.haibin);
        haibin
            .append_event(
                district.case.clone(),
                linkage_node::record::Action::Updated,
                Act {
                    note: "after the rogue's bloom filter".into(),
                    ..Act::default()
                },
            )
            .await
            .unwrap();
        let heads = district
            .haibin
            .read(&district.case, automerge::Automerge::get_heads)
            .unwrap()
            .unwrap();
        eventually("the market bureau to receive the new event", || {
            district
                .market
                .read(&district.case, automerge::Automerge::get_heads)
                .unwrap()
                == Some(heads.clone())
        })
        .await;
    });
}
