//! The limits workload: what the disk and Automerge allow, against what the node makes of it.
//!
//! - RocksDB's raw rate: synced `WriteBatch`es of one 1 KiB value, from 1 and from N threads,
//!   in a fresh database in the run's folder (the same disk as the nodes').
//! - The node's durable write rate: `Office::create` and `Office::edit_body` through the
//!   replica over a `RocksStore` in the same folder, from 1 and N concurrent callers; each is
//!   one synced batch, so the gap to the raw rate is the node's own work.
//! - Automerge's own cost: applying a record's changes to an empty document, per change.
//! - The machine's memory: what touching a page costs once it was left alone for a second,
//!   against touching it while warm. On these virtual machines the first is tens of times the
//!   second and swings with the hour; whatever runs in bursts after a pause (the 1 % step, the
//!   scale workload's trickle) pays it for every page it touches.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use automerge::{Automerge, Change};
use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::record::Body;
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::{MemoryStore, RocksStore, Store};

use super::report::{Figure, Unit};
use super::text::{KIND, TextSource, typed_body};
use super::{Progress, Sizes};

const WORKLOAD: &str = "limits";
const VALUE_BYTES: usize = 1024;
/// Bodies (and two-field updates) each caller makes ahead and cycles through.
const BODIES_PER_CALLER: usize = 256;
/// Records whose changes the apply measurement replays, and how many times.
const APPLY_RECORDS: usize = 200;
const APPLY_ROUNDS: usize = 5;
/// Memory the cold-page measurement touches, and how long it leaves it alone.
const TOUCHED_BYTES: usize = 32 << 20;
const PAGE_BYTES: usize = 4096;
const LEFT_ALONE: Duration = Duration::from_secs(1);

pub async fn run(sizes: &Sizes, root: &Path, progress: &Progress) -> anyhow::Result<Vec<Figure>> {
    std::fs::create_dir_all(root)?;
    let threads = sizes.offices.max(2);
    let window = sizes.limits_window;
    let mut figures = Vec::new();

    let mut raw_rate = 0.0;
    for n in [1, threads] {
        let dir = root.join(format!("rocksdb-raw-{n}"));
        raw_rate = tokio::task::spawn_blocking(move || raw_batch_rate(&dir, n, window)).await??;
        progress.say(format!(
            "RocksDB synced batches, {n} threads: {raw_rate:.0}/s"
        ));
        figures.push(Figure::new(
            WORKLOAD,
            format!("RocksDB raw synced batches (1 KiB), {n} thread(s)"),
            raw_rate,
            Unit::PerSecond,
        ));
    }

    let mut create_rate = 0.0;
    for n in [1, threads] {
        let (create, edit) = office_rates(&root.join(format!("office-{n}")), n, window).await?;
        create_rate = create;
        progress.say(format!(
            "node writes, {n} callers: create {create:.0}/s, two-field update {edit:.0}/s"
        ));
        figures.push(Figure::new(
            WORKLOAD,
            format!("node durable creates (Office::create), {n} caller(s)"),
            create,
            Unit::PerSecond,
        ));
        figures.push(Figure::new(
            WORKLOAD,
            format!("node durable two-field updates (Office::edit_body), {n} caller(s)"),
            edit,
            Unit::PerSecond,
        ));
    }
    // Both loops end on `threads` writers.
    figures.push(Figure::new(
        WORKLOAD,
        format!("node creates / raw batches, {threads} writers"),
        create_rate / raw_rate.max(1.0),
        Unit::Ratio,
    ));

    let updates = sizes.updates;
    let (per_change, changes) = tokio::task::spawn_blocking(move || apply_cost(updates)).await??;
    progress.say(format!(
        "Automerge applies a change in {per_change:.1} µs ({changes} changes)"
    ));
    figures.push(
        Figure::new(
            WORKLOAD,
            "Automerge apply cost per change",
            per_change,
            Unit::Micros,
        )
        .note(format!("{APPLY_RECORDS} records of 1 + {updates} changes")),
    );

    let (warm, cold) = tokio::task::spawn_blocking(page_touch_cost).await?;
    progress.say(format!(
        "touching a page: {warm:.2} µs warm, {cold:.2} µs after {} s left alone",
        LEFT_ALONE.as_secs()
    ));
    figures.push(
        Figure::new(
            WORKLOAD,
            format!(
                "touching memory left alone for {} s, per 4 KiB page",
                LEFT_ALONE.as_secs()
            ),
            cold,
            Unit::Micros,
        )
        .note(format!(
            "{warm:.2} µs while warm; {} MiB",
            TOUCHED_BYTES >> 20
        )),
    );
    Ok(figures)
}

/// Microseconds per page to read every page of a buffer while warm, and again after it was
/// left alone for [`LEFT_ALONE`].
fn page_touch_cost() -> (f64, f64) {
    let pages = TOUCHED_BYTES / PAGE_BYTES;
    let buffer = vec![1u8; TOUCHED_BYTES];
    let touch = || {
        let started = Instant::now();
        let sum: u64 = buffer
            .chunks(PAGE_BYTES)
            .map(|page| u64::from(std::hint::black_box(page[0])))
            .sum();
        std::hint::black_box(sum);
        started.elapsed().as_secs_f64() * 1e6 / pages as f64
    };
    touch();
    let warm = touch();
    std::thread::sleep(LEFT_ALONE);
    let cold = touch();
    (warm, cold)
}

/// Synced single-value batches per second from `threads` writers during `window`.
fn raw_batch_rate(dir: &Path, threads: usize, window: Duration) -> anyhow::Result<f64> {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    let db = Arc::new(rocksdb::DB::open(&options, dir)?);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let (db, stop, written) = (db.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || -> Result<(), rocksdb::Error> {
                let value = vec![0x5a; VALUE_BYTES];
                let mut sync = rocksdb::WriteOptions::default();
                sync.set_sync(true);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut batch = rocksdb::WriteBatch::default();
                    batch.put(format!("{t:04}-{i:012}"), &value);
                    db.write_opt(batch, &sync)?;
                    written.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for writer in writers {
        writer.join().expect("writer thread does not panic")?;
    }
    Ok(written.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

/// Creates, then two-field updates, per second through an office over a `RocksStore`, from
/// `callers` concurrent tasks during `window` each.
async fn office_rates(dir: &Path, callers: usize, window: Duration) -> anyhow::Result<(f64, f64)> {
    let store = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || RocksStore::open(&dir)).await??
    };
    let directory = Directory::beidaihe();
    let org = directory
        .orgs()
        .next()
        .expect("directory has orgs")
        .id
        .clone();
    let parties: Vec<String> = directory.orgs().map(|o| o.id.clone()).collect();
    let replica = Arc::new(Replica::open(
        &org,
        Arc::new(store),
        Arc::new(SystemClock),
        4096,
    )?);
    let office = Office::new(replica, Arc::new(directory));
    let now = chrono::Utc::now().timestamp_millis();

    // The bodies are made before the clock starts, as the raw rate's values are: the figure is
    // the node's, not the benchmark's text generation (5 % of the window's CPU when made inside).
    let bodies: Vec<Arc<Vec<Body>>> = (0..callers)
        .map(|c| {
            let mut text = TextSource::new(c as u64 + 100);
            Arc::new(
                (0..BODIES_PER_CALLER)
                    .map(|i| typed_body(&text.body(i as u32, now)))
                    .collect(),
            )
        })
        .collect();
    let started = Instant::now();
    let creators: Vec<_> = (0..callers)
        .map(|c| {
            let (office, parties) = (office.clone(), parties.clone());
            let bodies = bodies[c].clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while started.elapsed() < window {
                    let body = bodies[ids.len() % bodies.len()].clone();
                    let view = office
                        .create(KIND, parties.clone(), body, Act::default())
                        .await?;
                    ids.push(view.record.id().to_owned());
                }
                anyhow::Ok(ids)
            })
        })
        .collect();
    let mut owned = Vec::new();
    for creator in creators {
        owned.push(creator.await??);
    }
    let created: usize = owned.iter().map(Vec::len).sum();
    let create_rate = created as f64 / started.elapsed().as_secs_f64();

    let updates: Vec<Arc<Vec<serde_json::Value>>> = (0..owned.len())
        .map(|c| {
            let mut text = TextSource::new(c as u64 + 200);
            Arc::new((0..BODIES_PER_CALLER).map(|_| text.update()).collect())
        })
        .collect();
    let started = Instant::now();
    let editors: Vec<_> = owned
        .into_iter()
        .enumerate()
        .map(|(c, ids)| {
            let office = office.clone();
            let updates = updates[c].clone();
            tokio::spawn(async move {
                let mut edits = 0usize;
                while started.elapsed() < window && !ids.is_empty() {
                    let id = ids[edits % ids.len()].clone();
                    let update = updates[edits % updates.len()].clone();
                    office.edit_body(id, update).await?;
                    edits += 1;
                }
                anyhow::Ok(edits)
            })
        })
        .collect();
    let mut edited = 0usize;
    for editor in editors {
        edited += editor.await??;
    }
    let edit_rate = edited as f64 / started.elapsed().as_secs_f64();
    Ok((create_rate, edit_rate))
}

/// Microseconds Automerge takes to apply one change of a benchmark record to a document that
/// lacks it, and how many changes were timed.
fn apply_cost(updates: usize) -> anyhow::Result<(f64, usize)> {
    let directory = Directory::beidaihe();
    let org = directory
        .orgs()
        .next()
        .expect("directory has orgs")
        .id
        .clone();
    let parties: Vec<String> = directory.orgs().map(|o| o.id.clone()).collect();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let replica = Arc::new(Replica::open(&org, store, Arc::new(SystemClock), 4096)?);
    let office = Office::new(replica.clone(), Arc::new(directory));
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let now = chrono::Utc::now().timestamp_millis();

    let mut histories: Vec<Vec<Change>> = Vec::new();
    for r in 0..APPLY_RECORDS {
        let mut text = TextSource::new(r as u64 + 300);
        let id = runtime.block_on(async {
            let body = typed_body(&text.body(r as u32, now));
            let view = office
                .create(KIND, parties.clone(), body, Act::default())
                .await?;
            let id = view.record.id().to_owned();
            for _ in 0..updates {
                office.edit_body(id.clone(), text.update()).await?;
            }
            anyhow::Ok(id)
        })?;
        let changes = replica
            .read(&id, |doc| doc.get_changes(&[]))?
            .expect("the record was just made");
        histories.push(changes);
    }

    let mut elapsed = Duration::ZERO;
    let mut applied = 0usize;
    for _ in 0..APPLY_ROUNDS {
        for history in &histories {
            let changes = history.clone();
            let count = changes.len();
            let mut doc = Automerge::new();
            let started = Instant::now();
            doc.apply_changes(changes)?;
            elapsed += started.elapsed();
            applied += count;
        }
    }
    Ok((
        elapsed.as_secs_f64() * 1e6 / applied.max(1) as f64,
        applied / APPLY_ROUNDS,
    ))
}
