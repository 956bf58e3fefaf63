//! The district and reconnect workloads, on one hub process and N node processes, each node's
//! hub link through its own counting [`Proxy`]:
//!
//! - district: with every link cut, each office creates D records shared with every office and
//!   applies U two-field updates through its node's gRPC `Records` service; then every link is
//!   healed and every node restarted (so none waits out its reconnect backoff); the clock
//!   runs from the first connection (the first byte any node sends through its healed link,
//!   as the issue defines it and as the peers' runners start theirs at dialling) until every
//!   office holds every record at the heads its owner last saw. The time from the restart is
//!   reported beside it.
//! - reconnect: office 0 goes offline, makes the offline updates, comes back; the clock runs
//!   from its first byte on the wire until every other office holds the new heads.
//!
//! Wire bytes are what the proxies forwarded in both directions, i.e. everything through the
//! hub's sync connections; raw change bytes are the Automerge changes themselves, read from a
//! node's store afterwards.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use linkage_node::org::Directory;
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::RocksStore;
use linkage_proto::v1 as pb;
use linkage_proto::v1::records_client::RecordsClient;
use tokio::sync::mpsc;
use tokio::task::block_in_place;
use tonic::transport::Channel;

use super::procstat::{self, ProcSample};
use super::report::{Figure, Metric, Unit};
use super::text::{KIND, TextSource};
use super::{Progress, Sizes};
use crate::proxy::{ByteCount, Proxy};
use crate::{HubProcess, NodeProcess};

const DISTRICT: &str = "district";
const RECONNECT: &str = "reconnect";
/// How often the wait for sync reports its progress.
const STATUS_EVERY: Duration = Duration::from_millis(200);
/// List responses grow with the records a node holds; tonic's 4 MiB default is too small for
/// the larger runs.
const MAX_LIST_BYTES: usize = 64 << 20;

/// One office: its node, the proxy its hub link runs through, a client of its `Records`.
#[derive(Debug)]
struct Office {
    org: String,
    node: NodeProcess,
    link: Proxy,
    records: RecordsClient<Channel>,
}

/// Record id → its final heads, sorted.
type Expected = HashMap<String, Vec<String>>;

#[derive(Debug)]
struct District {
    hub: HubProcess,
    offices: Vec<Office>,
    parties: Vec<String>,
}

async fn records_client(node: &NodeProcess) -> anyhow::Result<RecordsClient<Channel>> {
    Ok(node
        .records()
        .await?
        .max_decoding_message_size(MAX_LIST_BYTES))
}

fn sorted(mut heads: Vec<String>) -> Vec<String> {
    heads.sort();
    heads
}

impl District {
    /// A hub and N nodes whose links start cut.
    async fn start(sizes: &Sizes, root: &Path) -> anyhow::Result<Self> {
        let hub = block_in_place(|| HubProcess::start(&root.join("hub"), "127.0.0.1:0"))?;
        let upstream = hub.addr.parse().context("hub address")?;
        let directory = Directory::beidaihe();
        let orgs: Vec<String> = directory.orgs().map(|o| o.id.clone()).collect();

        let mut offices = Vec::new();
        for i in 0..sizes.offices {
            // More offices than organisations become further nodes of the same ones.
            let org = orgs[i % orgs.len()].clone();
            let link = Proxy::start(upstream).await?;
            link.cut();
            let dir = root.join(format!("node-{i}"));
            let node = block_in_place(|| NodeProcess::start(&org, &dir, Some(&link.url())))?;
            let records = records_client(&node).await?;
            offices.push(Office {
                org,
                node,
                link,
                records,
            });
        }
        let mut seen = HashSet::new();
        let parties: Vec<String> = offices
            .iter()
            .map(|o| o.org.clone())
            .filter(|org| seen.insert(org.clone()))
            .collect();
        Ok(District {
            hub,
            offices,
            parties,
        })
    }

    fn wire_bytes(&self) -> u64 {
        self.offices.iter().map(|o| o.link.bytes_forwarded()).sum()
    }

    fn hub_sample(&self) -> anyhow::Result<ProcSample> {
        procstat::sample(self.hub.proc.pid().context("hub is running")?)
    }

    /// Restarts every node at once on its data (after a heal, so none waits for its backoff).
    async fn restart_nodes(&mut self) -> anyhow::Result<()> {
        for office in &mut self.offices {
            office.node.proc.kill9();
        }
        let starts: Vec<_> = self.offices.iter().map(|o| start_again(&o.node)).collect();
        for (office, start) in self.offices.iter_mut().zip(starts) {
            office.node = start.await??;
            office.records = records_client(&office.node).await?;
        }
        Ok(())
    }
}

/// Starts a stopped node again on its data, on a blocking thread (starting waits for the
/// node's address file).
fn start_again(node: &NodeProcess) -> tokio::task::JoinHandle<anyhow::Result<NodeProcess>> {
    let (org, data_dir, hub) = (node.org.clone(), node.data_dir.clone(), node.hub.clone());
    tokio::task::spawn_blocking(move || NodeProcess::start(&org, &data_dir, hub.as_deref()))
}

pub async fn run(sizes: &Sizes, root: &Path, progress: &Progress) -> anyhow::Result<Vec<Figure>> {
    let mut district = District::start(sizes, root).await?;
    progress.say(format!(
        "hub and {} nodes up, links cut; each office creates {} records and {} updates of each",
        sizes.offices, sizes.records, sizes.updates
    ));
    let mut figures = Vec::new();

    let started = Instant::now();
    let expected = create_offline(&district, sizes, progress).await?;
    let create_ms = ms(started.elapsed());
    progress.say(format!(
        "{} records made offline in {:.2} s",
        expected.len(),
        create_ms / 1000.0
    ));
    figures.push(
        Figure::new(
            DISTRICT,
            "create + update offline (all offices)",
            create_ms,
            Unit::Ms,
        )
        .vs(Metric::Create),
    );

    figures.extend(sync(&mut district, sizes, &expected, progress).await?);
    figures.extend(raw_change_bytes(&mut district, &figures).await?);
    match reconnect(&district, sizes, &expected, progress).await {
        Ok(more) => figures.extend(more),
        Err(e) => figures.push(Figure::missing(
            RECONNECT,
            "time until every other office sees them",
            Unit::Ms,
            format!("failed: {e:#}"),
        )),
    }

    let hub = district.hub_sample()?;
    figures.push(
        Figure::new(
            DISTRICT,
            "hub peak RSS (whole run)",
            hub.peak_rss_mib(),
            Unit::Mib,
        )
        .vs(Metric::HubPeakRss),
    );
    figures.push(
        Figure::new(
            DISTRICT,
            "hub disk bytes (end of run)",
            procstat::folder_bytes(&district.hub.data_dir) as f64,
            Unit::Bytes,
        )
        .vs(Metric::HubDisk),
    );
    Ok(figures)
}

fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

/// Every office creates its records and updates them, all offices at once, saying how many
/// writes are done as it goes; returns every record's final heads.
async fn create_offline(
    district: &District,
    sizes: &Sizes,
    progress: &Progress,
) -> anyhow::Result<Expected> {
    let now = chrono::Utc::now().timestamp_millis();
    let written = Arc::new(AtomicUsize::new(0));
    let total = sizes.offices * sizes.records * (1 + sizes.updates);
    let tasks: Vec<_> = district
        .offices
        .iter()
        .enumerate()
        .map(|(i, office)| {
            let mut client = office.records.clone();
            let parties = district.parties.clone();
            let (records, updates) = (sizes.records, sizes.updates);
            let written = written.clone();
            tokio::spawn(async move {
                let mut text = TextSource::new(i as u64 + 1);
                let mut made = Vec::with_capacity(records);
                for r in 0..records {
                    let record = client
                        .create(pb::CreateRecordRequest {
                            kind: KIND.as_str().into(),
                            parties: parties.clone(),
                            body_json: text.body(r as u32, now).to_string(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    let id = record.envelope.context("record has an envelope")?.id;
                    made.push((id, record.heads));
                    written.fetch_add(1, Ordering::Relaxed);
                }
                for _ in 0..updates {
                    for (id, heads) in &mut made {
                        let record = client
                            .edit_body(pb::EditBodyRequest {
                                id: id.clone(),
                                patch_json: text.update().to_string(),
                            })
                            .await?
                            .into_inner();
                        *heads = record.heads;
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(made)
            })
        })
        .collect();
    let all = futures::future::try_join_all(tasks);
    tokio::pin!(all);
    let mut status = tokio::time::interval(STATUS_EVERY);
    let made = loop {
        tokio::select! {
            made = &mut all => break made?,
            _ = status.tick() => progress.status(format!(
                "offline writes: {} of {total}",
                written.load(Ordering::Relaxed)
            )),
        }
    };
    let mut expected = Expected::new();
    for office in made {
        for (id, heads) in office? {
            expected.insert(id, sorted(heads));
        }
    }
    Ok(expected)
}

/// How long after `started` the links first carried a byte past `before` in all: the first
/// node's connection to the hub.
async fn first_byte(
    links: Vec<ByteCount>,
    before: u64,
    started: Instant,
) -> anyhow::Result<Duration> {
    loop {
        if links.iter().map(ByteCount::get).sum::<u64>() > before {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("no node connected to the hub within 60 s of the restart");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Heals every link, restarts every node, and waits until every office holds every record at
/// its final heads.
async fn sync(
    district: &mut District,
    sizes: &Sizes,
    expected: &Expected,
    progress: &Progress,
) -> anyhow::Result<Vec<Figure>> {
    let hub_before = district.hub_sample()?;
    let wire_before = district.wire_bytes();
    let links: Vec<ByteCount> = district
        .offices
        .iter()
        .map(|o| o.link.byte_count())
        .collect();
    for office in &district.offices {
        office.link.heal();
    }
    let started = Instant::now();
    let first_connection = tokio::spawn(first_byte(links, wire_before, started));
    district.restart_nodes().await?;
    let restarted_ms = ms(started.elapsed());

    let copies = (sizes.offices * sizes.offices.saturating_sub(1) * sizes.records) as f64;
    let watched: Vec<usize> = (0..district.offices.len()).collect();
    let outcome = wait_until_held(
        district,
        &watched,
        expected,
        started,
        sizes.sync_timeout,
        "sync",
        progress,
    )
    .await?;
    let wire = (district.wire_bytes() - wire_before) as f64;
    let hub_after = district.hub_sample()?;
    let hub_cpu = hub_after.cpu_s - hub_before.cpu_s;
    let first_connection = first_connection.await??;

    let name = "time until every office holds every record";
    let Some(done) = outcome.done else {
        return Ok(vec![
            Figure::missing(
                DISTRICT,
                name,
                Unit::Ms,
                format!(
                    "timed out after {:.0} s: {} of {} record copies at final heads",
                    sizes.sync_timeout.as_secs_f64(),
                    outcome.held,
                    outcome.total
                ),
            )
            .vs(Metric::Sync),
        ]);
    };
    let from_connection = done.saturating_sub(first_connection);
    progress.say(format!(
        "every office holds every record {:.2} s after the first connection ({:.2} s after \
         the restart; {} through the hub)",
        from_connection.as_secs_f64(),
        done.as_secs_f64(),
        Unit::Bytes.format(wire)
    ));
    Ok(vec![
        Figure::new(DISTRICT, name, ms(from_connection), Unit::Ms)
            .vs(Metric::Sync)
            .note(format!(
                "from the first connection, {:.0} ms after the restart began; {:.0} ms from \
                 the restart; all up within {restarted_ms:.0} ms",
                ms(first_connection),
                ms(done)
            )),
        Figure::new(DISTRICT, "bytes on the wire during sync", wire, Unit::Bytes)
            .vs(Metric::SyncWire),
        Figure::new(DISTRICT, "hub CPU during sync", hub_cpu, Unit::CpuSeconds)
            .vs(Metric::SyncHubCpu),
        Figure::new(
            DISTRICT,
            "hub CPU per record copy delivered",
            hub_cpu * 1000.0 / copies.max(1.0),
            Unit::CpuMs,
        )
        .vs(Metric::HubCpuPerCopy),
        Figure::new(
            DISTRICT,
            "wire bytes per record copy delivered",
            wire / copies.max(1.0),
            Unit::Bytes,
        )
        .vs(Metric::WirePerCopy),
    ])
}

/// The Automerge changes of every record, read from the last office's store (it holds every
/// record): the bytes sync could not avoid sending. The node is stopped for the read and
/// started again on its data.
async fn raw_change_bytes(
    district: &mut District,
    figures: &[Figure],
) -> anyhow::Result<Vec<Figure>> {
    let office = district.offices.last_mut().context("at least one office")?;
    office.node.proc.kill9();
    let (data_dir, org) = (office.node.data_dir.clone(), office.org.clone());
    let (raw, saved, changes) = tokio::task::spawn_blocking(move || {
        let store = Arc::new(RocksStore::open(&data_dir)?);
        let replica = Replica::open(&org, store, Arc::new(SystemClock), 64)?;
        let (mut raw, mut saved, mut changes) = (0usize, 0usize, 0usize);
        for summary in replica.summaries()? {
            replica.read(&summary.id, |doc| {
                for change in doc.get_changes(&[]) {
                    raw += change.raw_bytes().len();
                    changes += 1;
                }
                saved += doc.save().len();
            })?;
        }
        anyhow::Ok((raw as f64, saved as f64, changes))
    })
    .await??;
    office.node = start_again(&office.node).await??;
    office.records = records_client(&office.node).await?;

    let wire = figures
        .iter()
        .find(|f| f.metric == Some(Metric::SyncWire))
        .and_then(|f| f.value);
    let mut out = vec![
        Figure::new(
            DISTRICT,
            "raw change bytes (every record)",
            raw,
            Unit::Bytes,
        )
        .note(format!(
            "{changes} changes; saved documents {}",
            Unit::Bytes.format(saved)
        )),
    ];
    if let Some(wire) = wire {
        out.push(Figure::new(
            DISTRICT,
            "wire bytes / raw change bytes",
            wire / raw.max(1.0),
            Unit::Ratio,
        ));
        // Each record must cross the wire N times at least: up to the hub once, down to each
        // of the other N - 1 offices.
        let crossings = district.offices.len() as f64;
        out.push(Figure::new(
            DISTRICT,
            format!("wire bytes / (raw change bytes × {crossings:.0} crossings)"),
            wire / (raw * crossings).max(1.0),
            Unit::Ratio,
        ));
        // The goal's yardstick: a record's compressed size, Automerge's saved document.
        out.push(Figure::new(
            DISTRICT,
            format!("wire bytes / (saved document bytes × {crossings:.0} crossings)"),
            wire / (saved * crossings).max(1.0),
            Unit::Ratio,
        ));
    }
    Ok(out)
}

/// Office 0 goes offline, makes the offline updates, reconnects.
async fn reconnect(
    district: &District,
    sizes: &Sizes,
    expected: &Expected,
    progress: &Progress,
) -> anyhow::Result<Vec<Figure>> {
    if district.offices.len() < 2 {
        bail!("the reconnect workload needs at least two offices");
    }
    wait_connected(district, Duration::from_secs(30)).await?;
    let office = &district.offices[0];
    office.link.cut();
    let mut info = office.records.clone();
    crate::eventually(
        "office 0 to notice its link is down",
        Duration::from_secs(30),
        || {
            let mut info = info.clone();
            async move {
                let node = info.node_info(pb::NodeInfoRequest {}).await?.into_inner();
                Ok((!node.hub_connected).then_some(()))
            }
        },
    )
    .await?;

    // Its own records first, then others' (any party may edit a record).
    let own: HashSet<String> = own_records(&mut info, &office.org).await?;
    let mut targets: Vec<String> = own.iter().cloned().collect();
    targets.sort();
    let mut others: Vec<String> = expected
        .keys()
        .filter(|id| !own.contains(*id))
        .cloned()
        .collect();
    others.sort();
    targets.extend(others);
    targets.truncate(sizes.reconnect_records.max(1));

    let mut text = TextSource::new(0xC0FFEE);
    let mut changed = Expected::new();
    let edits_started = Instant::now();
    for k in 0..sizes.reconnect_updates {
        let id = &targets[k % targets.len()];
        let record = info
            .edit_body(pb::EditBodyRequest {
                id: id.clone(),
                patch_json: text.update().to_string(),
            })
            .await?
            .into_inner();
        changed.insert(id.clone(), sorted(record.heads));
    }
    progress.say(format!(
        "office 0 made {} updates to {} records offline in {:.2} s; reconnecting",
        sizes.reconnect_updates,
        changed.len(),
        edits_started.elapsed().as_secs_f64()
    ));

    let hub_before = district.hub_sample()?;
    let wire_before = district.wire_bytes();
    let link_before = office.link.bytes_forwarded();
    office.link.heal();
    let healed = Instant::now();
    // The node comes back by its own backoff; the clock starts at its first byte.
    let first_byte = loop {
        if district.offices[0].link.bytes_forwarded() > link_before {
            break healed.elapsed();
        }
        if healed.elapsed() > Duration::from_secs(60) {
            bail!("office 0 did not reconnect within 60 s of its link healing");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let watched: Vec<usize> = (1..district.offices.len()).collect();
    let outcome = wait_until_held(
        district,
        &watched,
        &changed,
        healed,
        sizes.sync_timeout,
        "reconnect",
        progress,
    )
    .await?;
    let wire = (district.wire_bytes() - wire_before) as f64;
    let hub_cpu = district.hub_sample()?.cpu_s - hub_before.cpu_s;

    let name = "time until every other office sees them";
    let Some(done) = outcome.done else {
        return Ok(vec![
            Figure::missing(
                RECONNECT,
                name,
                Unit::Ms,
                format!(
                    "timed out: {} of {} record copies updated",
                    outcome.held, outcome.total
                ),
            )
            .vs(Metric::Reconnect),
        ]);
    };
    let from_reconnect = done.saturating_sub(first_byte);
    progress.say(format!(
        "every other office sees them {:.2} s after office 0 reconnected",
        from_reconnect.as_secs_f64()
    ));
    Ok(vec![
        Figure::new(
            RECONNECT,
            format!(
                "{} offline updates to {} records: time until every other office sees them",
                sizes.reconnect_updates,
                changed.len()
            ),
            ms(from_reconnect),
            Unit::Ms,
        )
        .vs(Metric::Reconnect)
        .note("from reconnection"),
        Figure::new(
            RECONNECT,
            "wait for the node's own reconnect (backoff)",
            ms(first_byte),
            Unit::Ms,
        ),
        Figure::new(RECONNECT, "bytes on the wire", wire, Unit::Bytes).vs(Metric::ReconnectWire),
        Figure::new(RECONNECT, "hub CPU", hub_cpu, Unit::CpuSeconds),
    ])
}

async fn own_records(
    client: &mut RecordsClient<Channel>,
    org: &str,
) -> anyhow::Result<HashSet<String>> {
    let list = client
        .list(pb::ListRecordsRequest::default())
        .await?
        .into_inner();
    Ok(list
        .records
        .into_iter()
        .filter_map(|s| s.envelope)
        .filter(|e| e.owner == org)
        .map(|e| e.id)
        .collect())
}

async fn wait_connected(district: &District, timeout: Duration) -> anyhow::Result<()> {
    for office in &district.offices {
        let client = office.records.clone();
        crate::eventually("every node to be connected", timeout, || {
            let mut client = client.clone();
            async move {
                let node = client.node_info(pb::NodeInfoRequest {}).await?.into_inner();
                Ok(node.hub_connected.then_some(()))
            }
        })
        .await?;
    }
    Ok(())
}

/// How a wait for sync ended.
#[derive(Debug)]
struct Held {
    /// When the last office got the last record, counted from the wait's start.
    done: Option<Duration>,
    held: usize,
    total: usize,
}

/// Follows the `watched` offices' `Watch` streams until each holds every `expected` record
/// at its final heads, or `timeout` passes since `started`. The clock stops when the last
/// office reports the last record, as the peers' runners stop on change events.
async fn wait_until_held(
    district: &District,
    watched: &[usize],
    expected: &Expected,
    started: Instant,
    timeout: Duration,
    what: &str,
    progress: &Progress,
) -> anyhow::Result<Held> {
    let total = watched.len() * expected.len();
    let expected = Arc::new(expected.clone());
    let (tx, mut confirmations) = mpsc::unbounded_channel();
    let followers: Vec<_> = watched
        .iter()
        .enumerate()
        .map(|(slot, &i)| {
            let client = district.offices[i].records.clone();
            tokio::spawn(follow_office(client, expected.clone(), slot, tx.clone()))
        })
        .collect();
    drop(tx);

    let mut confirmed: Vec<HashSet<String>> = vec![HashSet::new(); watched.len()];
    let mut held = 0;
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let mut reported = Instant::now();
    while held < total {
        match tokio::time::timeout_at(deadline, confirmations.recv()).await {
            Ok(Some((slot, id))) => {
                if confirmed[slot].insert(id) {
                    held += 1;
                }
            }
            // Every follower ended, or time is up.
            Ok(None) | Err(_) => break,
        }
        if reported.elapsed() >= STATUS_EVERY {
            reported = Instant::now();
            progress.status(format!(
                "{what}: {held} of {total} record copies at final heads ({:.0}%), {:.1} s",
                100.0 * held as f64 / total.max(1) as f64,
                started.elapsed().as_secs_f64()
            ));
        }
    }
    for follower in followers {
        follower.abort();
    }
    Ok(Held {
        done: (held == total).then(|| started.elapsed()),
        held,
        total,
    })
}

/// Follows one office's records and reports `(slot, record)` for each seen at its `expected`
/// heads.
async fn follow_office(
    client: RecordsClient<Channel>,
    expected: Arc<Expected>,
    slot: usize,
    confirmations: mpsc::UnboundedSender<(usize, String)>,
) {
    super::follow(client, 0, |summary| {
        let Some(id) = summary.envelope.map(|e| e.id) else {
            return false;
        };
        expected.get(&id) == Some(&sorted(summary.heads)) && confirmations.send((slot, id)).is_err()
    })
    .await
}
