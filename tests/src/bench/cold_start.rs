//! The cold-start workload: a new office joins a hub that holds K records shared with every
//! organisation, and the clock runs until its node holds all of them.
//!
//! The K records are made by one source office through the library (its `Office` over its own
//! RocksDB folder, before its node process starts), then uploaded to the hub by that node over
//! a real sync session; the joining office is a fresh node process. Then the source office
//! goes offline, changes 1 % of the records and reconnects, and the clock runs until the new
//! office holds every change: the goal is at most 2 % of the full sync's time. That
//! step runs three times over distinct records, and the median counts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use linkage_node::office::{Act, Office};
use linkage_node::org::Directory;
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::RocksStore;
use linkage_proto::v1 as pb;
use tokio::task::block_in_place;

use super::procstat;
use super::report::{Figure, Unit};
use super::text::{KIND, TextSource, typed_body};
use super::{Progress, Sizes};
use crate::proxy::Proxy;
use crate::{HubProcess, NodeProcess};

const WORKLOAD: &str = "cold start";
/// Creates in flight while filling the source office: enough for RocksDB to group-commit.
const FILL_IN_FLIGHT: usize = 16;
/// How often the upload to the hub is checked.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Rounds of the 1 % step, each over records of its own; the figure is their median, since one
/// round of some 50 ms swings with whatever else the machine does in it.
const OFFLINE_ROUNDS: usize = 3;
/// How often waiting reports its progress.
const STATUS_EVERY: Duration = Duration::from_millis(200);

pub async fn run(sizes: &Sizes, root: &Path, progress: &Progress) -> anyhow::Result<Vec<Figure>> {
    let k = sizes.cold_records;
    let directory = Directory::beidaihe();
    let orgs: Vec<String> = directory.orgs().map(|o| o.id.clone()).collect();
    let (source_org, joiner_org) = (orgs[0].clone(), orgs[1].clone());
    let mut figures = Vec::new();

    let source_dir = root.join("source");
    let started = Instant::now();
    fill(&source_dir, &source_org, &orgs, k, directory, progress).await?;
    let fill_s = started.elapsed().as_secs_f64();
    progress.say(format!(
        "{k} records made in the source office in {fill_s:.1} s"
    ));
    figures.push(Figure::new(
        WORKLOAD,
        format!(
            "source office creates {k} records through the library ({FILL_IN_FLIGHT} in flight)"
        ),
        k as f64 / fill_s,
        Unit::PerSecond,
    ));

    let hub = block_in_place(|| HubProcess::start(&root.join("hub"), "127.0.0.1:0"))?;
    let hub_pid = hub.proc.pid().context("hub is running")?;
    let upstream = hub.addr.parse().context("hub address")?;
    let source_link = Proxy::start(upstream).await?;
    let source =
        block_in_place(|| NodeProcess::start(&source_org, &source_dir, Some(&source_link.url())))?;
    let started = Instant::now();
    wait_uploaded(&hub, &source, k, sizes.sync_timeout, progress).await?;
    let upload = started.elapsed();
    progress.say(format!(
        "the hub holds {k} records after {:.1} s",
        upload.as_secs_f64()
    ));
    figures.push(
        Figure::new(
            WORKLOAD,
            format!("hub takes in {k} records from one office"),
            upload.as_secs_f64() * 1000.0,
            Unit::Ms,
        )
        .note(format!("{:.0} records/s", k as f64 / upload.as_secs_f64())),
    );

    let hub_before = procstat::sample(hub_pid)?;
    let join_link = Proxy::start(upstream).await?;
    let started = Instant::now();
    let joiner_dir = root.join("joiner");
    let joiner =
        block_in_place(|| NodeProcess::start(&joiner_org, &joiner_dir, Some(&join_link.url())))?;
    let held = wait_held(&joiner, k, started, sizes.sync_timeout, progress).await?;
    let hub_after = procstat::sample(hub_pid)?;
    let wire = join_link.bytes_forwarded() as f64;

    let name = format!("new office holds all {k} records");
    let full_sync = held;
    match held {
        Some(done) => {
            progress.say(format!(
                "the new office holds every record after {:.1} s",
                done.as_secs_f64()
            ));
            figures.push(
                Figure::new(WORKLOAD, name, done.as_secs_f64() * 1000.0, Unit::Ms)
                    .note(format!("{:.0} records/s", k as f64 / done.as_secs_f64())),
            );
        }
        None => figures.push(Figure::missing(
            WORKLOAD,
            name,
            Unit::Ms,
            format!("timed out after {:.0} s", sizes.sync_timeout.as_secs_f64()),
        )),
    }
    figures.extend([
        Figure::new(
            WORKLOAD,
            "bytes on the wire to the new office",
            wire,
            Unit::Bytes,
        )
        .note(format!(
            "{} per record",
            Unit::Bytes.format(wire / k.max(1) as f64)
        )),
        Figure::new(
            WORKLOAD,
            "hub CPU serving the new office",
            hub_after.cpu_s - hub_before.cpu_s,
            Unit::CpuSeconds,
        ),
        Figure::new(
            WORKLOAD,
            "hub peak RSS",
            hub_after.peak_rss_mib(),
            Unit::Mib,
        ),
        Figure::new(
            WORKLOAD,
            "hub disk bytes",
            procstat::folder_bytes(&hub.data_dir) as f64,
            Unit::Bytes,
        ),
    ]);
    if let Some(full_sync) = full_sync {
        figures.extend(
            one_percent_offline(
                &Cast {
                    source: &source,
                    link: &source_link,
                    joiner: &joiner,
                    pids: RoundPids {
                        hub: hub_pid,
                        source: source.proc.pid().context("source office is running")?,
                        joiner: joiner.proc.pid().context("new office is running")?,
                    },
                },
                k,
                full_sync,
                sizes,
                progress,
            )
            .await?,
        );
    }
    Ok(figures)
}

/// The source office changes 1 % of the K records while offline and reconnects, in
/// [`OFFLINE_ROUNDS`] rounds over distinct records; the figure is the median round's time from
/// the reconnection (the first byte through the healed link) until the new office holds every
/// change, beside the full sync's time.
async fn one_percent_offline(
    cast: &Cast<'_>,
    k: usize,
    full_sync: Duration,
    sizes: &Sizes,
    progress: &Progress,
) -> anyhow::Result<Vec<Figure>> {
    let changes = (k / 100).max(1);
    let name = format!("1 % of {k} records changed offline: time until the new office holds them");
    let mut office = cast.source.records().await?;
    let ids: Vec<String> = office
        .list(pb::ListRecordsRequest {
            limit: (changes * OFFLINE_ROUNDS) as u32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .records
        .into_iter()
        .filter_map(|summary| summary.envelope.map(|e| e.id))
        .collect();

    let mut rounds = Vec::with_capacity(OFFLINE_ROUNDS);
    let mut cpu = RoundCpu::default();
    for (round, ids) in ids.chunks(changes).take(OFFLINE_ROUNDS).enumerate() {
        let Some((took, used)) = offline_round(cast, ids, round, sizes, progress).await? else {
            return Ok(vec![Figure::missing(
                WORKLOAD,
                name,
                Unit::Ms,
                format!(
                    "round {}: some changes still missing after the timeout",
                    round + 1
                ),
            )]);
        };
        rounds.push(took);
        cpu.add(&used);
    }
    let mut sorted = rounds.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let each = rounds
        .iter()
        .map(|took| format!("{:.0}", took.as_secs_f64() * 1000.0))
        .collect::<Vec<_>>()
        .join(", ");
    let per_record = |ns: u64| ns as f64 / 1000.0 / (changes * rounds.len()) as f64;
    Ok(vec![
        Figure::new(WORKLOAD, name, median.as_secs_f64() * 1000.0, Unit::Ms).note(format!(
            "median of {} rounds ({each} ms); {:.1} % of the full sync's time (goal: at most 2 %)",
            rounds.len(),
            100.0 * median.as_secs_f64() / full_sync.as_secs_f64()
        )),
        Figure::new(
            WORKLOAD,
            "1 % step: CPU per changed record, hub",
            per_record(cpu.hub),
            Unit::Micros,
        )
        .note(format!(
            "new office {:.0} µs, source office {:.0} µs; from the reconnection until the new office holds them, all rounds",
            per_record(cpu.joiner),
            per_record(cpu.source)
        )),
    ])
}

/// Who plays the 1 % step: the source office and its link to the hub, the new office, and
/// the three processes whose CPU a round measures.
struct Cast<'a> {
    source: &'a NodeProcess,
    link: &'a Proxy,
    joiner: &'a NodeProcess,
    pids: RoundPids,
}

/// The processes a round of the 1 % step measures.
struct RoundPids {
    hub: u32,
    source: u32,
    joiner: u32,
}

/// CPU the three processes spent in rounds of the 1 % step, in nanoseconds.
#[derive(Debug, Default)]
struct RoundCpu {
    hub: u64,
    source: u64,
    joiner: u64,
}

impl RoundCpu {
    fn sample(pids: &RoundPids) -> anyhow::Result<Self> {
        Ok(Self {
            hub: procstat::cpu_ns(pids.hub)?,
            source: procstat::cpu_ns(pids.source)?,
            joiner: procstat::cpu_ns(pids.joiner)?,
        })
    }

    /// What each process spent since `self` was sampled.
    fn since(&self, pids: &RoundPids) -> anyhow::Result<Self> {
        let now = Self::sample(pids)?;
        Ok(Self {
            hub: now.hub.saturating_sub(self.hub),
            source: now.source.saturating_sub(self.source),
            joiner: now.joiner.saturating_sub(self.joiner),
        })
    }

    fn add(&mut self, other: &Self) {
        self.hub += other.hub;
        self.source += other.source;
        self.joiner += other.joiner;
    }
}

/// One round: the source office's link is cut, it changes `ids` and the link heals; the time
/// from its reconnection until the new office holds every change, and the CPU each process
/// spent from the heal until then; `None` on timeout.
async fn offline_round(
    cast: &Cast<'_>,
    ids: &[String],
    round: usize,
    sizes: &Sizes,
    progress: &Progress,
) -> anyhow::Result<Option<(Duration, RoundCpu)>> {
    let Cast {
        source,
        link,
        joiner,
        pids,
    } = cast;
    let mut office = source.records().await?;
    link.cut();
    crate::eventually(
        "the source office to notice its link is down",
        Duration::from_secs(30),
        || {
            let mut office = office.clone();
            async move {
                let node = office.node_info(pb::NodeInfoRequest {}).await?.into_inner();
                Ok((!node.hub_connected).then_some(()))
            }
        },
    )
    .await?;

    let mut text = TextSource::new(0x1_0000 + round as u64);
    let mut expected = Vec::with_capacity(ids.len());
    for id in ids {
        let record = office
            .edit_body(pb::EditBodyRequest {
                id: id.clone(),
                patch_json: text.update().to_string(),
            })
            .await?
            .into_inner();
        let mut heads = record.heads;
        heads.sort();
        expected.push((id.clone(), heads));
    }
    progress.say(format!(
        "round {}: the source office changed {} records offline; reconnecting",
        round + 1,
        expected.len()
    ));

    // The new office is followed from where its change log stands now, so the clock stops on
    // the change event of the last record to arrive.
    let mut joined = joiner.records().await?;
    let from = joined
        .node_info(pb::NodeInfoRequest {})
        .await?
        .into_inner()
        .last_seq;
    let mut pending: std::collections::HashMap<String, Vec<String>> =
        expected.into_iter().collect();
    let mut follower = tokio::spawn(async move {
        super::follow(joined, from, move |summary| {
            if let Some(id) = summary.envelope.map(|e| e.id) {
                let mut heads = summary.heads;
                heads.sort();
                if pending.get(&id) == Some(&heads) {
                    pending.remove(&id);
                }
            }
            pending.is_empty()
        })
        .await;
        Instant::now()
    });

    let before = link.bytes_forwarded();
    let cpu_before = RoundCpu::sample(pids)?;
    link.heal();
    let healed = Instant::now();
    while link.bytes_forwarded() == before {
        if healed.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the source office did not reconnect within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let reconnected = Instant::now();

    let Ok(Ok(arrived_at)) = tokio::time::timeout(sizes.sync_timeout, &mut follower).await else {
        follower.abort();
        return Ok(None);
    };
    let used = cpu_before.since(pids)?;
    let took = arrived_at.saturating_duration_since(reconnected);
    progress.say(format!(
        "round {}: the new office holds the changes {:.0} ms after the source office reconnected (CPU: hub {:.1} ms, new office {:.1} ms, source office {:.1} ms)",
        round + 1,
        took.as_secs_f64() * 1000.0,
        used.hub as f64 / 1e6,
        used.joiner as f64 / 1e6,
        used.source as f64 / 1e6,
    ));
    Ok(Some((took, used)))
}

/// Creates `k` records shared with every organisation in the source office's store.
async fn fill(
    dir: &Path,
    org: &str,
    parties: &[String],
    k: usize,
    directory: Directory,
    progress: &Progress,
) -> anyhow::Result<()> {
    let store = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || RocksStore::open(&dir)).await??
    };
    let replica = Arc::new(Replica::open(
        org,
        Arc::new(store),
        Arc::new(SystemClock),
        1024,
    )?);
    let office = Office::new(replica, Arc::new(directory));
    let now = chrono::Utc::now().timestamp_millis();
    let mut creates = futures::stream::iter(0..k)
        .map(|i| {
            let office = office.clone();
            let body = typed_body(&TextSource::new(i as u64).body(i as u32, now));
            let parties = parties.to_vec();
            async move { office.create(KIND, parties, body, Act::default()).await }
        })
        .buffer_unordered(FILL_IN_FLIGHT);
    let mut made = 0usize;
    while let Some(created) = creates.next().await {
        created?;
        made += 1;
        if made.is_multiple_of(500) {
            progress.status(format!("filling the source office: {made} of {k}"));
        }
    }
    Ok(())
}

/// Waits until the hub holds `k` records and the source node has nothing left to push.
async fn wait_uploaded(
    hub: &HubProcess,
    source: &NodeProcess,
    k: usize,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<()> {
    let mut district = hub.district().await?;
    let mut node = source.records().await?;
    let started = Instant::now();
    loop {
        let counts = district
            .record_counts(pb::RecordCountsRequest {})
            .await?
            .into_inner();
        let held: u64 = counts.counts.iter().map(|c| c.count).sum();
        let info = node.node_info(pb::NodeInfoRequest {}).await?.into_inner();
        if held >= k as u64 && info.hub_connected && info.pending_to_hub == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the hub holds only {held} of {k} records after {timeout:?}"
        );
        progress.status(format!("upload to the hub: {held} of {k} records"));
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Waits until the joining node holds `k` complete records; `None` on timeout.
async fn wait_held(
    joiner: &NodeProcess,
    k: usize,
    started: Instant,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<Option<Duration>> {
    let node = joiner.records().await?;
    // A record whose changes arrived only in part lists as "incomplete" until the rest come.
    let mut complete = std::collections::HashSet::new();
    let mut reported = Instant::now();
    let held = super::follow(node, 0, |summary| {
        if let Some(id) = summary.envelope.map(|e| e.id) {
            if summary.status == "incomplete" {
                complete.remove(&id);
            } else {
                complete.insert(id);
            }
        }
        if reported.elapsed() > STATUS_EVERY {
            reported = Instant::now();
            progress.status(format!(
                "new office: {} of {k} records, {:.1} s",
                complete.len(),
                started.elapsed().as_secs_f64()
            ));
        }
        complete.len() >= k
    });
    let remaining = timeout.saturating_sub(started.elapsed());
    Ok(tokio::time::timeout(remaining, held)
        .await
        .ok()
        .map(|()| started.elapsed()))
}
