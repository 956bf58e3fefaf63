//! The scale workload: one hub process, hundreds to thousands of simulated offices in this
//! process, and a steady trickle of new records shared with every organisation.
//!
//! Each simulated office is a light client: a [`Replica`] over a [`MemoryStore`] running the
//! node's own reconnecting sync link ([`client::run_forever`]) over real gRPC to the hub, so
//! the hub does exactly what it does for a node process. A watcher per client notes when each
//! record first appears in its change log; delivery latency is that instant minus the instant
//! the sending client started creating the record.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::{MemoryStore, Store};
use linkage_node::sync::client::{self, LinkStatus};
use tokio::task::JoinHandle;

use super::procstat::{self, quantile};
use super::report::{Figure, Unit};
use super::text::{KIND, TextSource, typed_body};
use super::{Progress, Sizes};
use crate::HubProcess;

const WORKLOAD: &str = "scale";
/// Clients started per step while connecting, so the hub is not handed every hello at once.
const CONNECT_STEP: usize = 50;
/// How long all clients get to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(180);

/// First sightings of records: (client, record id, when).
type Sightings = Arc<Mutex<Vec<(usize, String, Instant)>>>;

struct LightClient {
    replica: Arc<Replica>,
    link: Arc<LinkStatus>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for LightClient {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub async fn run(sizes: &Sizes, root: &Path, progress: &Progress) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &clients in &sizes.scale_clients {
        progress.say(format!("{clients} simulated offices"));
        let folder = root.join(format!("clients-{clients}"));
        figures.extend(tier(clients, sizes, &folder, progress).await?);
    }
    Ok(figures)
}

async fn tier(
    clients: usize,
    sizes: &Sizes,
    root: &Path,
    progress: &Progress,
) -> anyhow::Result<Vec<Figure>> {
    let hub = tokio::task::block_in_place(|| HubProcess::start(&root.join("hub"), "127.0.0.1:0"))?;
    let hub_pid = hub.proc.pid().context("hub is running")?;
    let directory = Arc::new(Directory::beidaihe());
    let orgs: Vec<String> = directory.orgs().map(|o| o.id.clone()).collect();
    let idle = procstat::sample(hub_pid)?;

    let sightings: Sightings = Arc::default();
    let seen = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut fleet: Vec<LightClient> = Vec::with_capacity(clients);
    for i in 0..clients {
        let org = &orgs[i % orgs.len()];
        fleet.push(light_client(i, org, hub.url(), &sightings, &seen)?);
        if fleet.len().is_multiple_of(CONNECT_STEP) || fleet.len() == clients {
            wait_connected(&fleet, started, progress).await?;
        }
    }
    let connect = started.elapsed();
    let connected = procstat::sample(hub_pid)?;
    progress.say(format!(
        "{clients} clients connected in {:.1} s; hub RSS {:.0} MiB",
        connect.as_secs_f64(),
        connected.rss_kib as f64 / 1024.0
    ));

    // The trickle: one new record every 1/rate seconds from a client chosen in turn.
    let interval = Duration::from_secs_f64(1.0 / sizes.scale_rate_per_s);
    let mut sent: HashMap<String, (usize, Instant)> = HashMap::new();
    let now = chrono::Utc::now().timestamp_millis();
    let trickle_started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    for c in 0..sizes.scale_changes {
        ticker.tick().await;
        let sender = (c * 7919) % clients;
        let office = Office::new(fleet[sender].replica.clone(), directory.clone());
        let body = typed_body(&TextSource::new(c as u64 + 1).body(c as u32, now));
        let at = Instant::now();
        let view = office
            .create(KIND, orgs.clone(), body, Act::default())
            .await?;
        sent.insert(view.record.id().to_owned(), (sender, at));
        progress.status(format!(
            "trickle: {} of {} records sent",
            c + 1,
            sizes.scale_changes
        ));
    }

    // Every client holds every record, its sender's included.
    let expected = (sizes.scale_changes * clients) as u64;
    let deadline = Instant::now() + sizes.sync_timeout;
    while seen.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        progress.status(format!(
            "delivery: {} of {expected} record copies, {:.1} s",
            seen.load(Ordering::Relaxed),
            trickle_started.elapsed().as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trickle = trickle_started.elapsed();
    let after = procstat::sample(hub_pid)?;
    drop(fleet);

    let mut latencies: Vec<f64> = sightings
        .lock()
        .expect("sightings lock is never poisoned")
        .iter()
        .filter_map(|(client, id, at)| {
            let (sender, sent_at) = sent.get(id)?;
            (client != sender).then(|| at.duration_since(*sent_at).as_secs_f64() * 1000.0)
        })
        .collect();
    let deliveries = (sizes.scale_changes * (clients - 1)) as f64;
    let delivered = latencies.len() as f64;
    let hub_cpu = after.cpu_s - connected.cpu_s;
    let label = |what: &str| format!("{clients} offices: {what}");
    let mut figures = vec![
        Figure::new(
            WORKLOAD,
            label("connect all"),
            connect.as_secs_f64() * 1000.0,
            Unit::Ms,
        ),
        Figure::new(
            WORKLOAD,
            label("hub RSS per connected office"),
            connected.rss_kib.saturating_sub(idle.rss_kib) as f64 * 1024.0 / clients as f64,
            Unit::Bytes,
        ),
        Figure::new(
            WORKLOAD,
            label("hub peak RSS"),
            after.peak_rss_mib(),
            Unit::Mib,
        ),
        Figure::new(
            WORKLOAD,
            label("hub CPU per change"),
            hub_cpu * 1000.0 / sizes.scale_changes as f64,
            Unit::CpuMs,
        )
        .note(format!(
            "{:.3} ms per copy delivered",
            hub_cpu * 1000.0 / delivered.max(1.0)
        )),
    ];
    let p50 = quantile(&mut latencies, 0.5);
    let p99 = quantile(&mut latencies, 0.99);
    let missing = if delivered < deliveries {
        Some(format!(
            "{delivered:.0} of {deliveries:.0} copies delivered within {:.0} s",
            trickle.as_secs_f64()
        ))
    } else {
        None
    };
    for (name, value) in [("p50 delivery latency", p50), ("p99 delivery latency", p99)] {
        let figure = match value {
            Some(v) => Figure::new(WORKLOAD, label(name), v, Unit::Ms),
            None => Figure::missing(WORKLOAD, label(name), Unit::Ms, "nothing delivered".into()),
        };
        figures.push(match &missing {
            Some(m) => figure.note(m.clone()),
            None => figure,
        });
    }
    progress.say(format!(
        "{clients} offices: p50 {:.0} ms, p99 {:.0} ms, hub CPU {:.1} ms per change",
        p50.unwrap_or(f64::NAN),
        p99.unwrap_or(f64::NAN),
        hub_cpu * 1000.0 / sizes.scale_changes as f64
    ));
    Ok(figures)
}

/// Starts one simulated office: its replica, its sync link and its watcher.
fn light_client(
    index: usize,
    org: &str,
    hub: String,
    sightings: &Sightings,
    seen: &Arc<AtomicU64>,
) -> anyhow::Result<LightClient> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let replica = Arc::new(Replica::open(org, store, Arc::new(SystemClock), 64)?);
    let link = Arc::new(LinkStatus::default());
    let sync = tokio::spawn(client::run_forever(replica.clone(), hub, link.clone()));
    let watcher = tokio::spawn(watch(
        index,
        replica.clone(),
        sightings.clone(),
        seen.clone(),
    ));
    Ok(LightClient {
        replica,
        link,
        tasks: [sync, watcher],
    })
}

/// Notes the first time each record appears in the client's change log.
async fn watch(index: usize, replica: Arc<Replica>, sightings: Sightings, seen: Arc<AtomicU64>) {
    let mut changes = replica.subscribe();
    let mut after = 0;
    let mut known = HashSet::new();
    loop {
        // A memory store answers at once, so reading it here does not block the worker.
        let entries = replica
            .store()
            .changed_since(after, 4096)
            .unwrap_or_default();
        let now = Instant::now();
        for entry in entries {
            after = entry.seq;
            if known.insert(entry.doc.clone()) {
                sightings
                    .lock()
                    .expect("sightings lock is never poisoned")
                    .push((index, entry.doc, now));
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn wait_connected(
    fleet: &[LightClient],
    started: Instant,
    progress: &Progress,
) -> anyhow::Result<()> {
    loop {
        let up = fleet
            .iter()
            .filter(|c| c.link.connected.load(Ordering::Relaxed))
            .count();
        if up == fleet.len() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < CONNECT_TIMEOUT,
            "only {up} of {} clients connected after {CONNECT_TIMEOUT:?}",
            fleet.len()
        );
        progress.status(format!("connecting: {up} of {} clients", fleet.len()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
