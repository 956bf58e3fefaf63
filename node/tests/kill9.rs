//! Durability on real processes: the `linkage-node` binary is SIGKILLed while writers hammer
//! it, restarted on the same folder, and must hold every record it acknowledged, body and
//! events exactly as acknowledged. An acknowledgement is a promise that the write is on disk.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::NodeBinary;
use linkage_proto::v1 as pb;
use linkage_proto::v1::records_client::RecordsClient;
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

const HAIBIN: &str = "130304100";
const CYCLES: usize = 6;
/// Acknowledged writes of each writer per cycle before the kill is sent; the writers keep going
/// meanwhile. Over the cycles the hot record takes more than the 32 chunks after which the
/// replica compacts it, so compaction too races a kill.
const WRITES_BEFORE_KILL: u64 = 12;
/// How long a cycle may take to reach [`WRITES_BEFORE_KILL`].
const CYCLE_DEADLINE: Duration = Duration::from_secs(30);

/// What the node acknowledged of one record, and the event it was last asked to append and
/// has not answered (which may or may not have reached the disk before the kill).
#[derive(Debug, Clone)]
struct Acknowledged {
    record: pb::Record,
    in_flight: Option<String>,
}

type Ledger = Arc<Mutex<BTreeMap<String, Acknowledged>>>;

/// Acknowledged writes in this cycle: (creates, appends).
type Acks = watch::Sender<(u64, u64)>;

async fn client(node: &NodeBinary) -> RecordsClient<Channel> {
    let channel = Endpoint::from_shared(node.url())
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("the restarted node accepts connections");
    RecordsClient::new(channel)
}

fn case(cycle: usize, n: u64) -> pb::CreateRecordRequest {
    pb::CreateRecordRequest {
        kind: "case".into(),
        body_json: json!({
            "title": format!("cycle {cycle} case {n}"),
            "facts": "x".repeat(200 + n as usize % 300),
            "found_at_ms": 1_790_000_000_000_i64 + n as i64,
        })
        .to_string(),
        person: format!("writer of cycle {cycle}"),
        ..Default::default()
    }
}

/// Creates cases until the node stops answering, recording each acknowledgement.
async fn create_cases(
    mut client: RecordsClient<Channel>,
    cycle: usize,
    ledger: Ledger,
    acks: Acks,
) {
    for n in 0.. {
        let Ok(answer) = client.create(case(cycle, n)).await else {
            return;
        };
        let record = answer.into_inner();
        let id = record.envelope.as_ref().unwrap().id.clone();
        let acked = Acknowledged {
            record,
            in_flight: None,
        };
        ledger.lock().unwrap().insert(id, acked);
        acks.send_modify(|(creates, _)| *creates += 1);
    }
}

/// Appends notes to `id` until the node stops answering. Enough of them, over the cycles, that
/// the replica compacts the document's chunks into a snapshot while being killed.
async fn append_notes(
    mut client: RecordsClient<Channel>,
    id: String,
    cycle: usize,
    ledger: Ledger,
    acks: Acks,
) {
    for n in 0.. {
        let note = format!("cycle {cycle} note {n}");
        ledger.lock().unwrap().get_mut(&id).unwrap().in_flight = Some(note.clone());
        let request = pb::AppendEventRequest {
            id: id.clone(),
            action: "updated".into(),
            note,
            ..Default::default()
        };
        let Ok(answer) = client.append_event(request).await else {
            return;
        };
        let mut ledger = ledger.lock().unwrap();
        let acked = ledger.get_mut(&id).unwrap();
        acked.record = answer.into_inner();
        acked.in_flight = None;
        drop(ledger);
        acks.send_modify(|(_, appends)| *appends += 1);
    }
}

/// Every acknowledged record is on the restarted node as acknowledged; an event whose append
/// was cut off by the kill may be there too, whole, as the only extra.
async fn check_intact(client: &mut RecordsClient<Channel>, ledger: &Ledger, cycle: usize) {
    let expected = ledger.lock().unwrap().clone();
    for (id, acked) in &expected {
        let stored = client
            .get(pb::GetRecordRequest { id: id.clone() })
            .await
            .unwrap_or_else(|s| panic!("cycle {cycle}: acknowledged {id} is gone: {s:?}"))
            .into_inner();
        assert_eq!(
            stored.body_json, acked.record.body_json,
            "cycle {cycle}: body of {id}"
        );
        assert_eq!(
            stored.envelope, acked.record.envelope,
            "cycle {cycle}: envelope of {id}"
        );
        let events = &acked.record.events;
        let extra = stored.events.len().checked_sub(events.len());
        assert_eq!(
            &stored.events[..events.len().min(stored.events.len())],
            &events[..],
            "cycle {cycle}: events of {id} lost or changed"
        );
        match (extra, &acked.in_flight) {
            (Some(0), _) => {}
            (Some(1), Some(note)) => assert_eq!(&stored.events.last().unwrap().note, note),
            _ => panic!(
                "cycle {cycle}: {id} holds {} events, {} acknowledged, in flight {:?}",
                stored.events.len(),
                events.len(),
                acked.in_flight
            ),
        }
    }
    let listed = client
        .list(pb::ListRecordsRequest::default())
        .await
        .expect("the restarted node lists")
        .into_inner()
        .records;
    for id in expected.keys() {
        assert!(
            listed
                .iter()
                .any(|r| r.envelope.as_ref().is_some_and(|e| &e.id == id)),
            "cycle {cycle}: acknowledged {id} is missing from the list"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_record_survives_sigkill_during_writes() {
    let folder = TempDir::new().unwrap();
    let ledger: Ledger = Arc::default();
    let mut node = NodeBinary::start(HAIBIN, folder.path());

    let hot = client(&node)
        .await
        .create(case(0, 0))
        .await
        .expect("the node creates a case")
        .into_inner();
    let hot_id = hot.envelope.as_ref().unwrap().id.clone();
    ledger.lock().unwrap().insert(
        hot_id.clone(),
        Acknowledged {
            record: hot,
            in_flight: None,
        },
    );

    for cycle in 1..=CYCLES {
        let (acks, mut counted) = watch::channel((0u64, 0u64));
        let creator = tokio::spawn(create_cases(
            client(&node).await,
            cycle,
            ledger.clone(),
            acks.clone(),
        ));
        let appender = tokio::spawn(append_notes(
            client(&node).await,
            hot_id.clone(),
            cycle,
            ledger.clone(),
            acks,
        ));
        tokio::time::timeout(
            CYCLE_DEADLINE,
            counted.wait_for(|(c, a)| *c >= WRITES_BEFORE_KILL && *a >= WRITES_BEFORE_KILL),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "cycle {cycle}: too few writes acknowledged:\n{}",
                node.log_tail()
            )
        })
        .expect("the writers report");

        // The kill lands while both writers have requests in flight.
        node.kill9();
        creator.await.expect("the creator ends when the node dies");
        appender
            .await
            .expect("the appender ends when the node dies");

        node = NodeBinary::start(HAIBIN, folder.path());
        let mut reader = client(&node).await;
        check_intact(&mut reader, &ledger, cycle).await;

        // An event cut off by the kill is on disk or not; from here on it is whatever the
        // node holds, and the next cycle checks against that.
        let stored = reader
            .get(pb::GetRecordRequest { id: hot_id.clone() })
            .await
            .expect("the hot record is there")
            .into_inner();
        let mut ledger = ledger.lock().unwrap();
        let acked = ledger.get_mut(&hot_id).unwrap();
        acked.record = stored;
        acked.in_flight = None;
    }

    let ledger = ledger.lock().unwrap();
    assert!(ledger.len() as u64 > CYCLES as u64 * WRITES_BEFORE_KILL);
    assert!(ledger[&hot_id].record.events.len() as u64 > CYCLES as u64 * WRITES_BEFORE_KILL);
}
