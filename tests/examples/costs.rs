//! Per-record CPU costs of the node's write and apply paths, in memory (no disk): a
//! profiling aid for issue 6. `cargo run --release -p linkage-tests --example costs`.

use std::sync::Arc;
use std::time::Instant;

use automerge::sync::{Message, State, SyncDoc};
use automerge::{Automerge, ReadDoc};
use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::record::doc;
use linkage_node::record::doc::frontier::Frontier;
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::{MemoryStore, RocksStore, Store};
use linkage_node::sync::deflate;
use linkage_node::sync::session::told_nothing;
use linkage_tests::bench::text::{KIND, TextSource, typed_body};

const RECORDS: usize = 2000;

/// Runs `f` for `0..n` and prints the mean time per call; the results are returned so that
/// dropping them is not timed, and later steps can use them.
fn time<R>(label: &str, n: usize, mut f: impl FnMut(usize) -> R) -> Vec<R> {
    let started = Instant::now();
    let out: Vec<R> = (0..n).map(&mut f).collect();
    let per = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{label:<40} {per:8.1} µs");
    out
}

fn main() -> anyhow::Result<()> {
    let directory = Directory::beidaihe();
    let org = directory.orgs().next().unwrap().id.clone();
    let parties: Vec<String> = directory.orgs().map(|o| o.id.clone()).collect();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let replica = Arc::new(Replica::open(&org, store, Arc::new(SystemClock), 8192)?);
    let office = Office::new(replica.clone(), Arc::new(directory));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut text = TextSource::new(1);
    let bodies: Vec<_> = (0..RECORDS)
        .map(|i| typed_body(&text.body(i as u32, now)))
        .collect();

    let ids = time("Office::create (memory store)", RECORDS, |i| {
        rt.block_on(office.create(KIND, parties.clone(), bodies[i].clone(), Act::default()))
            .unwrap()
            .record
            .id()
            .to_owned()
    });
    time("Office::edit_body, two fields", RECORDS, |i| {
        rt.block_on(office.edit_body(ids[i].clone(), text.update()))
            .unwrap()
    });
    let records: Vec<_> = ids.iter().map(|id| replica.record(id).unwrap()).collect();
    let fresh: Vec<_> = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.envelope.id = KIND.new_record_id();
            r
        })
        .collect();
    time("Replica::create (memory store)", RECORDS, |i| {
        replica.create(&fresh[i]).unwrap()
    });
    let dir = Directory::beidaihe();
    time("validate_create", RECORDS, |i| {
        linkage_node::workflow::validate_create(&dir, &org, &records[i])
    });
    time("Directory::beidaihe()", 100, |_| Directory::beidaihe());
    time("body to_json_value", RECORDS, |i| {
        records[i].body.to_json_value()
    });
    time("record.derived()", RECORDS, |i| records[i].derived());
    time("doc::new_document", RECORDS, |i| {
        doc::new_document(&records[i], automerge::ActorId::random(), now).unwrap()
    });
    let docs: Vec<Automerge> = ids
        .iter()
        .map(|id| replica.read(id, |d| d.clone()).unwrap().unwrap())
        .collect();
    time("save_nocompress", RECORDS, |i| docs[i].save_nocompress());
    time("save", RECORDS, |i| docs[i].save());
    let messages = time("first offer message", RECORDS, |i| {
        let mut state = told_nothing();
        docs[i].generate_sync_message(&mut state).unwrap().encode()
    });
    println!("first offer bytes: {}", messages[0].len());
    // Linkage's first offer: the document saved plain, the message deflated once.
    let deflated = time("first offer, plain doc deflated once", RECORDS, |i| {
        let mut state = told_nothing();
        state.peer_read_only = true;
        let mut message = docs[i].generate_sync_message(&mut state).unwrap();
        message.changes = docs[i].save_nocompress().into();
        deflate::deflate(&message.encode())
    });
    println!("deflated first offer bytes: {}", deflated[0].len());
    time("inflate + decode + receive into empty doc", RECORDS, |i| {
        let mut doc = Automerge::new();
        let mut state = State::new();
        let plain = deflate::inflate(&deflated[i]).unwrap();
        doc.receive_sync_message(&mut state, Message::decode(&plain).unwrap())
            .unwrap();
        (doc, state)
    });
    let plain: usize = docs.iter().map(|d| d.save_nocompress().len()).sum();
    let packed: usize = docs.iter().map(|d| d.save().len()).sum();
    println!(
        "saved bytes per record: {} compressed, {} not",
        packed / RECORDS,
        plain / RECORDS
    );
    let received = time("decode + receive into empty doc", RECORDS, |i| {
        let mut doc = Automerge::new();
        let mut state = State::new();
        doc.receive_sync_message(&mut state, Message::decode(&messages[i]).unwrap())
            .unwrap();
        (doc, state)
    });
    time("save_after(&[]) of received", RECORDS, |i| {
        received[i].0.save_after(&[])
    });
    time("hydrate_record", RECORDS, |i| {
        doc::hydrate_record(&received[i].0).unwrap()
    });
    time("Automerge hydrate whole doc", RECORDS, |i| {
        received[i].0.hydrate(None)
    });
    time("doc::conflicts (field walk)", RECORDS, |i| {
        doc::conflicts(&received[i].0)
    });
    time("get_changes_meta(&[])", RECORDS, |i| {
        received[i].0.get_changes_meta(&[]).len()
    });
    time("hydrate_envelope", RECORDS, |i| {
        doc::hydrate_envelope(&received[i].0).unwrap()
    });
    time("hydrate events", RECORDS, |i| {
        autosurgeon::hydrate_prop::<_, Vec<linkage_node::record::WorkflowEvent>, _, _>(
            &received[i].0,
            automerge::ROOT,
            "events",
        )
        .unwrap()
    });
    time("map_range over body (no hydration)", RECORDS, |i| {
        let doc = &received[i].0;
        let (_, body) = doc.get(automerge::ROOT, "body").unwrap().unwrap();
        doc.map_range(&body, ..).count()
    });
    time("get body.title", RECORDS, |i| {
        let doc = &received[i].0;
        let (_, body) = doc.get(automerge::ROOT, "body").unwrap().unwrap();
        doc.get(&body, "title").unwrap().is_some()
    });
    time("answer generate_sync_message", RECORDS, |i| {
        let mut state = received[i].1.clone();
        received[i].0.generate_sync_message(&mut state)
    });
    time("get_heads", RECORDS, |i| received[i].0.get_heads());
    time("fork (the hub gate's trial copy)", RECORDS, |i| {
        received[i].0.fork()
    });
    // A resumed change as the hub takes it: the edits made since the peer's last confirmed
    // heads, received into the hub's copy.
    let edited: Vec<Automerge> = received
        .iter()
        .map(|(doc, _)| {
            use automerge::transaction::Transactable;
            let mut edited = doc.fork();
            let mut tx = edited.transaction();
            let (_, body) = tx.get(automerge::ROOT, "body").unwrap().unwrap();
            tx.put(&body, "title", "x".repeat(64)).unwrap();
            tx.put(&body, "content", "y".repeat(64)).unwrap();
            tx.commit();
            edited
        })
        .collect();
    let resumed: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| {
            let mut state = State::new();
            state.shared_heads = received[i].0.get_heads();
            state.their_heads = Some(state.shared_heads.clone());
            edited[i]
                .generate_sync_message(&mut state)
                .unwrap()
                .encode()
        })
        .collect();
    // The hub's frontier of each record, and what taking the edit from it costs instead of
    // loading the record, applying the change and hydrating the result.
    let records: Vec<_> = received
        .iter()
        .map(|(doc, _)| doc::hydrate_record(doc).unwrap())
        .collect();
    let frontiers = time(
        "Frontier::of (as a document leaves memory, hub)",
        RECORDS,
        |i| Frontier::of(&received[i].0, &records[i]).unwrap(),
    );
    let edits: Vec<Vec<automerge::Change>> = (0..RECORDS)
        .map(|i| edited[i].get_changes(&received[i].0.get_heads()))
        .collect();
    time("Frontier::take of a two-field edit", RECORDS, |i| {
        frontiers[i].take(&edits[i]).expect("a put of body strings")
    });
    time("fork + receive a resumed change", RECORDS, |i| {
        let mut trial = received[i].0.fork();
        let mut state = received[i].1.clone();
        trial
            .receive_sync_message(&mut state, Message::decode(&resumed[i]).unwrap())
            .unwrap();
        trial
    });

    // A record not in memory, as a resumed change finds most of them on a replica holding
    // 10,000 (the 1 % figure): read from RocksDB and loaded by Automerge before anything else.
    let dir = tempfile::tempdir()?;
    let rocks: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path())?);
    let cold = Arc::new(Replica::open(
        &org,
        rocks.clone(),
        Arc::new(SystemClock),
        64,
    )?);
    let cold_office = Office::new(cold.clone(), Arc::new(Directory::beidaihe()));
    let cold_ids: Vec<String> = fresh
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.envelope.id = KIND.new_record_id();
            cold.create(&r).unwrap();
            r.envelope.id
        })
        .collect();
    let stored = time("RocksStore::load (not in memory)", RECORDS, |i| {
        rocks.load(&cold_ids[i]).unwrap().unwrap()
    });
    time("Automerge::load of the stored bytes", RECORDS, |i| {
        Automerge::load(stored[i].chunks.first().unwrap()).unwrap()
    });
    // The same records after five two-field edits each: six stored chunks, loaded the way
    // the replica loads them (the first, then each further chunk incrementally) and as one
    // concatenation (Automerge reads a sequence of chunks in one load).
    for id in &cold_ids {
        for _ in 0..5 {
            rt.block_on(cold_office.edit_body(id.clone(), text.update()))?;
        }
    }
    let stored = time("RocksStore::load, six chunks", RECORDS, |i| {
        rocks.load(&cold_ids[i]).unwrap().unwrap()
    });
    time("Automerge::load + 5 load_incremental", RECORDS, |i| {
        let mut doc = Automerge::load(&stored[i].chunks[0]).unwrap();
        for chunk in &stored[i].chunks[1..] {
            doc.load_incremental(chunk).unwrap();
        }
        doc
    });
    let loaded = time("Automerge::load of the six concatenated", RECORDS, |i| {
        Automerge::load(&stored[i].chunks.concat()).unwrap()
    });
    let compacted = time("save_nocompress (a compaction's snapshot)", RECORDS, |i| {
        loaded[i].save_nocompress()
    });
    time("Automerge::load of that snapshot", RECORDS, |i| {
        Automerge::load(&compacted[i]).unwrap()
    });
    time("Replica::summary (not in memory)", RECORDS, |i| {
        cold.summary(&cold_ids[RECORDS - 1 - i]).unwrap()
    });
    time("Replica::read, record not in memory", RECORDS, |i| {
        cold.read(&cold_ids[i], Automerge::get_heads).unwrap()
    });
    Ok(())
}
