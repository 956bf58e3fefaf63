//! The kill loop: a hub and two offices on real processes, a writer per office creating shared
//! records and appending events over gRPC, and at seeded random moments a SIGKILL of one node or
//! the hub, restarted on the same data and address while the writers go on. Link faults from
//! the [`Proxy`](crate::proxy::Proxy) land between the kills. At the end every link is healed
//! and the check waits for the offices to converge, then holds the acknowledgement log against
//! what each node and the hub hold.
//!
//! The seed fixes the schedule (which process dies, which fault, how long each waits, drawn by
//! [`CyclePlan::draw`]), not the interleaving of real processes, so a seed reproduces a run's
//! shape, not its every byte. Every run of at least one cycle checks a restarted node alone at
//! least once: the last cycle kills and checks an office if no earlier one did.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use linkage_proto::v1 as pb;
use linkage_proto::v1::feeds_client::FeedsClient;
use linkage_proto::v1::records_client::RecordsClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::cluster::{Cluster, Office};
use super::ledger::{Ack, Ledger};
use crate::scenario::{GOVERNMENT, HAIBIN, MARKET};

/// How long the offices get to converge once every fault is healed. A half-open link is only
/// noticed by HTTP/2 keepalive (15 s interval, 10 s timeout on both ends), so this is well past
/// that.
const SETTLE: Duration = Duration::from_secs(120);
/// In the negative control, converged offices that still miss acknowledged writes are final
/// after this long without any change.
const QUIESCENT: Duration = Duration::from_secs(4);
/// Acknowledged writes each writer must add before a cycle's kill, so every kill lands under
/// load.
const WRITES_PER_CYCLE: usize = 3;

#[derive(Debug, Clone)]
pub struct KillLoopConfig {
    pub cycles: u32,
    pub seed: u64,
    /// Run against a node whose store has no write-ahead log; the check must report loss.
    pub negative_control: bool,
    /// Inject link faults between kills.
    pub link_faults: bool,
    /// Keep the processes' data and logs here instead of a temporary folder.
    pub keep_dir: Option<PathBuf>,
}

impl KillLoopConfig {
    /// A run of `cycles` kill cycles (at least 1; [`run`] refuses 0) with link faults.
    pub fn new(cycles: u32, seed: u64) -> Self {
        KillLoopConfig {
            cycles,
            seed,
            negative_control: false,
            link_faults: true,
            keep_dir: None,
        }
    }
}

/// Which process a cycle killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Victim {
    Office(usize),
    Hub,
}

/// A link fault, as injected on one office's proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkFault {
    Delay,
    Stall,
    Reset,
    HalfOpen,
    Cut,
}

impl LinkFault {
    const ALL: [LinkFault; 5] = [
        LinkFault::Delay,
        LinkFault::Stall,
        LinkFault::Reset,
        LinkFault::HalfOpen,
        LinkFault::Cut,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LinkFault::Delay => "delay",
            LinkFault::Stall => "stall",
            LinkFault::Reset => "reset",
            LinkFault::HalfOpen => "half-open",
            LinkFault::Cut => "cut",
        }
    }
}

/// One cycle's schedule, drawn from the run's seeded RNG before the cycle acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CyclePlan {
    /// The link fault injected on an office's proxy (by index), if any.
    pub fault: Option<(usize, LinkFault)>,
    /// For a [`LinkFault::Delay`], the delay per chunk.
    pub delay: Duration,
    /// How long after the counted writes the kill lands.
    pub pause: Duration,
    pub victim: Victim,
    pub downtime: Duration,
    /// Whether the restarted node is read alone, link cut, before it can sync.
    pub check_alone: bool,
}

impl CyclePlan {
    /// Draws cycle `cycle` of `config`'s run; `checks_so_far` counts the restart-alone checks
    /// of the earlier cycles. The draws and their order are those of every earlier version of
    /// the loop, so a seed keeps its schedule; only a last cycle that would end the run with no
    /// restart-alone check is turned into one (an office killed and read alone), so a report
    /// never holds for a check that did not run.
    pub fn draw(
        config: &KillLoopConfig,
        rng: &mut StdRng,
        cycle: u32,
        checks_so_far: u32,
    ) -> CyclePlan {
        let fault = (config.link_faults && rng.random_bool(0.7)).then(|| {
            let office = rng.random_range(0..2);
            let fault = LinkFault::ALL[rng.random_range(0..LinkFault::ALL.len())];
            (office, fault)
        });
        let delay = match fault {
            Some((_, LinkFault::Delay)) => Duration::from_millis(rng.random_range(20..200)),
            _ => Duration::ZERO,
        };
        // Past the writes counted before the kill, so it lands anywhere in a write or a sync.
        let pause = Duration::from_millis(rng.random_range(0..300));
        let mut victim = if config.negative_control {
            Victim::Office(0)
        } else {
            match rng.random_range(0..10) {
                0..4 => Victim::Office(0),
                4..7 => Victim::Office(1),
                _ => Victim::Hub,
            }
        };
        let downtime = Duration::from_millis(rng.random_range(0..250));
        // A restarted node must hold every write it acknowledged by itself, before the hub can
        // give any of it back: checked with its link cut, on every kill of the negative
        // control's node and on half the others (the rest restart straight onto the link).
        let mut check_alone = match victim {
            Victim::Office(_) => config.negative_control || rng.random_bool(0.5),
            Victim::Hub => false,
        };
        if cycle == config.cycles && checks_so_far == 0 && !check_alone {
            if victim == Victim::Hub {
                victim = Victim::Office(0);
            }
            check_alone = true;
        }
        CyclePlan {
            fault,
            delay,
            pause,
            victim,
            downtime,
            check_alone,
        }
    }
}

/// What one run exercised and what held.
#[derive(Debug, Clone, Default)]
pub struct KillLoopOutcome {
    pub seed: u64,
    pub cycles: u32,
    pub negative_control: bool,
    /// Kills survived, by process name.
    pub kills: BTreeMap<String, u32>,
    pub link_faults: BTreeMap<&'static str, u32>,
    pub writes_attempted: u64,
    pub creations_acknowledged: usize,
    pub events_acknowledged: usize,
    pub writes_failed: BTreeMap<String, u64>,
    /// Writes that got no OK but were stored anyway (allowed: the node died between commit and
    /// answer).
    pub unacknowledged_but_stored: usize,
    pub records_on_nodes: [usize; 2],
    pub records_on_hub: usize,
    /// Restarted nodes checked alone (link cut) against their own acknowledged writes.
    pub restart_checks: u32,
    /// Acknowledged writes missing, one line each ("<where>: <what>").
    pub missing: Vec<String>,
    /// Of those, the ones still missing once the offices converged: lost for good, not just
    /// by the restarted node before the hub gave them back.
    pub missing_at_end: usize,
    /// Writes applied more than once, records or events duplicated.
    pub duplicated: Vec<String>,
    /// Whether both offices ended with the same records at the same heads.
    pub converged: bool,
    pub converged_after: Option<Duration>,
    pub elapsed: Duration,
    pub data_dir: Option<PathBuf>,
}

impl KillLoopOutcome {
    /// Acknowledged writes are all present, once, everywhere they belong.
    pub fn held(&self) -> bool {
        self.converged && self.missing.is_empty() && self.duplicated.is_empty()
    }

    /// The checks this run was meant to make but did not, for a verdict that says so instead
    /// of holding for them.
    pub fn not_exercised(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.restart_checks == 0 {
            missing.push("restart-alone check");
        }
        if self.kills_total() == 0 {
            missing.push("kill -9");
        }
        if self.creations_acknowledged + self.events_acknowledged == 0 {
            missing.push("acknowledged writes");
        }
        missing
    }

    pub fn kills_total(&self) -> u32 {
        self.kills.values().sum()
    }
}

/// Runs the kill loop and returns its figures. An `Err` means the harness itself failed (a
/// process would not start, a node stopped taking writes), not that a write was lost: that is
/// in the outcome.
pub async fn run(
    config: &KillLoopConfig,
    say: &mut dyn FnMut(String),
) -> anyhow::Result<KillLoopOutcome> {
    if config.cycles == 0 {
        bail!(
            "the kill loop needs at least 1 cycle: with 0 nothing is killed or written, and \
             nothing would be checked"
        );
    }
    let started = Instant::now();
    let temp = match &config.keep_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("linkage-kill-loop-")
                .tempdir()?,
        ),
    };
    let root = match (&config.keep_dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temp)) => temp.path().to_owned(),
        (None, None) => unreachable!("a temporary folder is made when none is given"),
    };
    std::fs::create_dir_all(&root)?;
    say(format!(
        "kill loop: seed {} cycles {}{} in {}",
        config.seed,
        config.cycles,
        if config.negative_control {
            " NEGATIVE CONTROL (first office's store has no write-ahead log)"
        } else {
            ""
        },
        root.display()
    ));

    let mut outcome = KillLoopOutcome {
        seed: config.seed,
        cycles: config.cycles,
        negative_control: config.negative_control,
        ..KillLoopOutcome::default()
    };
    let result = drive(config, &root, &mut outcome, say).await;
    outcome.elapsed = started.elapsed();

    // An unexpected verdict (loss in the real run, none in the negative control) or a harness
    // failure keeps the data and logs for whoever reads the report.
    let unexpected = result.is_err() || outcome.held() == config.negative_control;
    if config.keep_dir.is_some() {
        outcome.data_dir = Some(root);
    } else if unexpected && let Some(temp) = temp {
        let kept = temp.keep();
        say(format!("data and logs kept in {}", kept.display()));
        outcome.data_dir = Some(kept);
    }
    result.map(|()| outcome)
}

async fn drive(
    config: &KillLoopConfig,
    root: &std::path::Path,
    outcome: &mut KillLoopOutcome,
    say: &mut dyn FnMut(String),
) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(root, [HAIBIN, MARKET], config.negative_control).await?;
    let ledger = Ledger::with_file(&root.join("acks.jsonl"))?;
    let mut rng = StdRng::seed_from_u64(config.seed);

    let (stop, stopped) = watch::channel(false);
    let mut writers = Vec::new();
    for (i, office) in cluster.offices.iter().enumerate() {
        writers.push(tokio::spawn(write_load(
            office.client()?,
            office.org.clone(),
            cluster.offices[1 - i].org.clone(),
            ledger.clone(),
            stopped.clone(),
            rng.random(),
        )));
    }
    let cycles = async {
        for cycle in 1..=config.cycles {
            run_cycle(config, &mut cluster, &ledger, &mut rng, outcome, cycle, say).await?;
        }
        anyhow::Ok(())
    }
    .await;
    let _ = stop.send(true);
    for writer in writers {
        writer.await?;
    }
    cycles.map_err(|e| e.context(cluster.logs(20)))?;

    for office in &cluster.offices {
        heal(office);
    }
    say(format!(
        "{} cycles done, {} writes acknowledged; every link healed, waiting for the offices to converge",
        config.cycles,
        ledger.ack_count()
    ));
    let healed = Instant::now();
    check(&cluster, &ledger, outcome).await?;
    outcome.converged_after = outcome.converged.then(|| healed.elapsed());

    let acks = ledger.acks();
    outcome.writes_attempted = ledger.attempted();
    outcome.creations_acknowledged = acks
        .iter()
        .filter(|a| matches!(a, Ack::Created { .. }))
        .count();
    outcome.events_acknowledged = acks.len() - outcome.creations_acknowledged;
    outcome.writes_failed = ledger.failures();
    Ok(())
}

/// One cycle: a link fault maybe, writes until each writer has added a few, a kill at a random
/// moment, a restart on the same data and address, the fault lifted.
async fn run_cycle(
    config: &KillLoopConfig,
    cluster: &mut Cluster,
    ledger: &Ledger,
    rng: &mut StdRng,
    outcome: &mut KillLoopOutcome,
    cycle: u32,
    say: &mut dyn FnMut(String),
) -> anyhow::Result<()> {
    let plan = CyclePlan::draw(config, rng, cycle, outcome.restart_checks);
    let CyclePlan {
        fault,
        victim,
        downtime,
        check_alone,
        ..
    } = plan;
    if let Some((office, fault)) = fault {
        inject(&cluster.offices[office], fault, plan.delay);
        *outcome.link_faults.entry(fault.name()).or_default() += 1;
    }

    let baseline: Vec<usize> = cluster
        .offices
        .iter()
        .map(|o| ledger.acks_by(&o.org))
        .collect();
    crate::eventually(
        "writes under load before the kill",
        Duration::from_secs(30),
        || {
            let ready = cluster
                .offices
                .iter()
                .zip(&baseline)
                .all(|(o, base)| ledger.acks_by(&o.org) >= base + WRITES_PER_CYCLE);
            async move { Ok(ready.then_some(())) }
        },
    )
    .await?;
    tokio::time::sleep(plan.pause).await;

    let daemon = match victim {
        Victim::Office(i) => &mut cluster.offices[i].daemon,
        Victim::Hub => &mut cluster.hub,
    };
    daemon.kill9();
    let name = daemon.name.clone();
    *outcome.kills.entry(name.clone()).or_default() += 1;
    if let (Victim::Office(i), true) = (victim, check_alone) {
        cluster.offices[i].link.cut();
    }
    let acknowledged = match victim {
        Victim::Office(i) => ledger.acks_of(&cluster.offices[i].org),
        Victim::Hub => Vec::new(),
    };
    tokio::time::sleep(downtime).await;
    match victim {
        Victim::Office(i) => cluster.offices[i].daemon.start().await?,
        Victim::Hub => cluster.hub.start().await?,
    }
    let mut checked = String::new();
    if let (Victim::Office(i), true) = (victim, check_alone) {
        let office = &cluster.offices[i];
        let holding = crate::eventually(
            "the restarted node to answer",
            Duration::from_secs(30),
            || async { holding_of_node(office).await.map(Some) },
        )
        .await?;
        let place = format!("{} right after restart, before any sync", office.org);
        let verdict = verify(&acknowledged, &[(place, &holding)]);
        outcome.restart_checks += 1;
        checked = format!(
            "; alone after restart it holds {} of its {} acknowledged writes",
            acknowledged.len() - verdict.missing.len(),
            acknowledged.len()
        );
        outcome.missing.extend(verdict.missing);
        outcome.duplicated.extend(verdict.duplicated);
        office.link.heal();
    }
    say(format!(
        "cycle {cycle}: killed {name} ({} ms down){}{checked}; {} writes acknowledged",
        downtime.as_millis(),
        fault
            .map(|(o, f)| format!(", {} on {}'s link", f.name(), cluster.offices[o].org))
            .unwrap_or_default(),
        ledger.ack_count()
    ));

    if let Some((office, _)) = fault {
        heal(&cluster.offices[office]);
    }
    Ok(())
}

fn inject(office: &Office, fault: LinkFault, delay: Duration) {
    match fault {
        LinkFault::Delay => office.link.set_delay(delay),
        LinkFault::Stall => office.link.stall(),
        LinkFault::Reset => office.link.reset(),
        LinkFault::HalfOpen => office.link.half_open(),
        LinkFault::Cut => office.link.cut(),
    }
}

/// Lifts every lasting fault of an office's link. Half-open connections stay dead: only the
/// endpoints' keepalives can clear them, which is the point of that fault.
fn heal(office: &Office) {
    office.link.heal();
    office.link.resume();
    office.link.set_delay(Duration::ZERO);
}

fn case_request(tag: &str, other: &str) -> pb::CreateRecordRequest {
    pb::CreateRecordRequest {
        kind: "case".into(),
        parties: vec![other.to_owned()],
        body_json: json!({
            "title": tag,
            "matter": "kill loop",
            "facts": "written while processes are killed",
        })
        .to_string(),
        ..Default::default()
    }
}

/// One office's writer: creates records shared with `other` and appends events to its own and
/// to `other`'s records, as fast as a small office might, until `stop`. Every OK goes into the
/// ledger; an error is counted and the writer goes on (the node may be down).
async fn write_load(
    mut client: RecordsClient<Channel>,
    org: String,
    other: String,
    ledger: Ledger,
    mut stop: watch::Receiver<bool>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut theirs: Vec<String> = Vec::new();
    let mut attempt = 0u64;
    while !*stop.borrow() {
        attempt += 1;
        let tag = format!("{org}/w{attempt}");
        let mine = ledger.created_by(&org);
        ledger.attempt();
        let result = if mine.is_empty() || rng.random_bool(0.35) {
            client
                .create(case_request(&tag, &other))
                .await
                .map(|r| Ack::Created {
                    writer: org.clone(),
                    id: r.into_inner().envelope.map(|e| e.id).unwrap_or_default(),
                    tag: tag.clone(),
                })
        } else {
            let pool = if !theirs.is_empty() && rng.random_bool(0.4) {
                &theirs
            } else {
                &mine
            };
            let id = pool[rng.random_range(0..pool.len())].clone();
            client
                .append_event(pb::AppendEventRequest {
                    id: id.clone(),
                    action: "updated".into(),
                    note: tag.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| Ack::Appended {
                    writer: org.clone(),
                    id,
                    tag: tag.clone(),
                })
        };
        let pause = match result {
            Ok(ack) => {
                ledger.acknowledged(ack);
                rng.random_range(5..25)
            }
            Err(status) => {
                ledger.failed(tag, status.code());
                // Most likely the node is down; do not spin while it restarts.
                rng.random_range(50..150)
            }
        };
        if attempt.is_multiple_of(16)
            && let Ok(listed) = client
                .list(pb::ListRecordsRequest {
                    kind: "case".into(),
                    ..Default::default()
                })
                .await
        {
            theirs = listed
                .into_inner()
                .records
                .into_iter()
                .filter_map(|r| r.envelope)
                .filter(|e| e.owner == other)
                .map(|e| e.id)
                .collect();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// What one place holds of the loop's records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holding {
    /// Record id → (title, heads, events as (event id, note)).
    pub records: BTreeMap<String, HeldRecord>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeldRecord {
    pub title: String,
    pub heads: Vec<String>,
    pub events: Vec<(String, String)>,
}

impl HeldRecord {
    fn from_pb(record: pb::Record) -> (String, HeldRecord) {
        let id = record.envelope.map(|e| e.id).unwrap_or_default();
        let title = serde_json::from_str::<serde_json::Value>(&record.body_json)
            .ok()
            .and_then(|v| v["title"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut heads = record.heads;
        heads.sort();
        let events = record.events.into_iter().map(|e| (e.id, e.note)).collect();
        (
            id,
            HeldRecord {
                title,
                heads,
                events,
            },
        )
    }
}

impl Holding {
    fn heads(&self) -> BTreeMap<&str, &[String]> {
        self.records
            .iter()
            .map(|(id, r)| (id.as_str(), r.heads.as_slice()))
            .collect()
    }
}

async fn holding_of_node(office: &Office) -> anyhow::Result<Holding> {
    let mut client = office.client()?;
    let listed = client
        .list(pb::ListRecordsRequest {
            kind: "case".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut holding = Holding::default();
    for summary in listed.records {
        let id = summary.envelope.context("summary without envelope")?.id;
        let record = client
            .get(pb::GetRecordRequest { id: id.clone() })
            .await
            .with_context(|| format!("reading {id} on {}", office.org))?
            .into_inner();
        let (id, held) = HeldRecord::from_pb(record);
        holding.records.insert(id, held);
    }
    Ok(holding)
}

/// Every record the hub holds, read from the District Government's feed (it may read all).
async fn holding_of_hub(cluster: &Cluster) -> anyhow::Result<Holding> {
    let mut feeds = FeedsClient::new(crate::channel(&cluster.hub.url()).await?);
    let mut stream = feeds
        .subscribe(pb::FeedRequest {
            org: GOVERNMENT.into(),
            kinds: vec!["case".into()],
            catch_up_only: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut holding = Holding::default();
    while let Some(event) = stream.message().await? {
        let (id, held) = HeldRecord::from_pb(event.record.context("feed event without record")?);
        holding.records.insert(id, held);
    }
    Ok(holding)
}

/// Waits for both offices to hold the same records at the same heads, then holds the ledger
/// against each office and the hub. Gives up after [`SETTLE`] (not converged), or after
/// [`QUIESCENT`] without change once converged but missing acknowledged writes (lost for good).
async fn check(
    cluster: &Cluster,
    ledger: &Ledger,
    outcome: &mut KillLoopOutcome,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    let mut unchanged_since: Option<(Holding, Instant)> = None;
    let mut last_error = None;
    let holdings = loop {
        let read = async {
            anyhow::Ok([
                holding_of_node(&cluster.offices[0]).await?,
                holding_of_node(&cluster.offices[1]).await?,
            ])
        }
        .await;
        match read {
            Ok(holdings) => {
                let converged = holdings[0].heads() == holdings[1].heads();
                if converged {
                    let verdict = verify(&ledger.acks(), &cluster_places(cluster, &holdings));
                    let quiet = unchanged_since
                        .as_ref()
                        .is_some_and(|(h, since)| *h == holdings[0] && since.elapsed() > QUIESCENT);
                    if verdict.missing.is_empty() || quiet {
                        outcome.converged = true;
                        break Some(holdings);
                    }
                }
                if Instant::now() > deadline {
                    break Some(holdings);
                }
                if unchanged_since
                    .as_ref()
                    .is_none_or(|(h, _)| *h != holdings[0])
                {
                    unchanged_since = Some((holdings[0].clone(), Instant::now()));
                }
            }
            Err(e) => {
                if Instant::now() > deadline {
                    last_error = Some(e);
                    break None;
                }
                last_error = Some(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let Some(holdings) = holdings else {
        bail!(
            "the offices could not be read after {SETTLE:?}: {:#}\n{}",
            last_error.expect("set before giving up"),
            cluster.logs(20)
        );
    };

    let hub = holding_of_hub(cluster).await?;
    let mut places = cluster_places(cluster, &holdings);
    places.push(("hub".to_owned(), &hub));
    let verdict = verify(&ledger.acks(), &places);
    outcome.missing_at_end = verdict.missing.len();
    outcome.missing.extend(verdict.missing);
    outcome.duplicated.extend(verdict.duplicated);
    // A write lost at one restart and again at the next is one loss.
    outcome.missing.sort();
    outcome.missing.dedup();
    outcome.records_on_nodes = [holdings[0].records.len(), holdings[1].records.len()];
    outcome.records_on_hub = hub.records.len();
    outcome.unacknowledged_but_stored = stored_anyway(&ledger.unacknowledged(), &holdings);
    Ok(())
}

fn cluster_places<'a>(cluster: &Cluster, holdings: &'a [Holding; 2]) -> Vec<(String, &'a Holding)> {
    cluster
        .offices
        .iter()
        .zip(holdings)
        .map(|(o, h)| (o.org.clone(), h))
        .collect()
}

/// What the ledger finds wrong with the places' holdings.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub missing: Vec<String>,
    pub duplicated: Vec<String>,
}

/// Holds every acknowledged write against every place entitled to it. In the loop every record
/// is shared by both offices, so every place is entitled to every record.
pub fn verify(acks: &[Ack], places: &[(String, &Holding)]) -> Verdict {
    let mut verdict = Verdict::default();
    for (place, holding) in places {
        let mut titles: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, record) in &holding.records {
            titles.entry(record.title.as_str()).or_default().push(id);
            let mut seen = BTreeSet::new();
            for (event_id, _) in &record.events {
                if !seen.insert(event_id) {
                    verdict
                        .duplicated
                        .push(format!("{place}: event {event_id} twice in {id}"));
                }
            }
        }
        for ack in acks {
            match ack {
                Ack::Created { writer, id, tag } => {
                    if !holding.records.contains_key(id) {
                        verdict
                            .missing
                            .push(format!("{place}: record {id} ({tag}) created by {writer}"));
                    }
                    if let Some(ids) = titles.get(tag.as_str())
                        && ids.len() > 1
                    {
                        verdict
                            .duplicated
                            .push(format!("{place}: creation {tag} stored as {ids:?}"));
                    }
                }
                Ack::Appended { writer, id, tag } => {
                    let times = holding.records.get(id).map_or(0, |r| {
                        r.events.iter().filter(|(_, note)| note == tag).count()
                    });
                    match times {
                        0 => verdict
                            .missing
                            .push(format!("{place}: event {tag} on {id} appended by {writer}")),
                        1 => {}
                        n => verdict
                            .duplicated
                            .push(format!("{place}: event {tag} on {id} {n} times")),
                    }
                }
            }
        }
    }
    verdict
}

/// Writes that got no OK but that their writer's node stored anyway.
fn stored_anyway(unacknowledged: &[String], holdings: &[Holding; 2]) -> usize {
    let tags: BTreeSet<&str> = unacknowledged.iter().map(String::as_str).collect();
    let mut found = BTreeSet::new();
    for holding in holdings {
        for record in holding.records.values() {
            if tags.contains(record.title.as_str()) {
                found.insert(record.title.as_str());
            }
            for (_, note) in &record.events {
                if tags.contains(note.as_str()) {
                    found.insert(note.as_str());
                }
            }
        }
    }
    found.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(records: &[(&str, &str, &[&str])]) -> Holding {
        Holding {
            records: records
                .iter()
                .map(|(id, title, notes)| {
                    (
                        (*id).to_owned(),
                        HeldRecord {
                            title: (*title).to_owned(),
                            heads: vec!["h".into()],
                            events: notes
                                .iter()
                                .enumerate()
                                .map(|(i, n)| (format!("{id}-e{i}"), (*n).to_owned()))
                                .collect(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn created(id: &str, tag: &str) -> Ack {
        Ack::Created {
            writer: "a".into(),
            id: id.into(),
            tag: tag.into(),
        }
    }

    fn appended(id: &str, tag: &str) -> Ack {
        Ack::Appended {
            writer: "a".into(),
            id: id.into(),
            tag: tag.into(),
        }
    }

    fn plans(config: &KillLoopConfig) -> Vec<CyclePlan> {
        let mut rng = StdRng::seed_from_u64(config.seed);
        // The two writer seeds `drive` draws before the first cycle.
        let _: (u64, u64) = (rng.random(), rng.random());
        let mut checks = 0;
        (1..=config.cycles)
            .map(|cycle| {
                let plan = CyclePlan::draw(config, &mut rng, cycle, checks);
                checks += u32::from(plan.check_alone);
                plan
            })
            .collect()
    }

    /// `report --cycles 3 --seed 7` once killed only the hub and nodes that went straight back
    /// onto the link, and still said HELD: no schedule of at least one cycle may skip the
    /// restart-alone check.
    #[test]
    fn every_schedule_checks_a_restarted_node_alone_at_least_once() {
        for seed in 0..2_000 {
            for cycles in 1..=4 {
                for link_faults in [true, false] {
                    let config = KillLoopConfig {
                        link_faults,
                        ..KillLoopConfig::new(cycles, seed)
                    };
                    let plans = plans(&config);
                    assert!(
                        plans.iter().any(|p| p.check_alone),
                        "seed {seed}, {cycles} cycles: {plans:?}"
                    );
                    for plan in &plans {
                        assert!(!plan.check_alone || plan.victim != Victim::Hub, "{plan:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_seed_draws_the_same_schedule_every_time_and_only_a_checkless_last_cycle_changes() {
        let config = KillLoopConfig::new(3, 7);
        assert_eq!(plans(&config), plans(&config));

        for seed in 0..500 {
            let config = KillLoopConfig::new(6, seed);
            let long = plans(&config);
            let short = plans(&KillLoopConfig::new(3, seed));
            // The first cycles of a longer run are those of a shorter run with the same seed,
            // except where the shorter run's last cycle had to make its check.
            assert_eq!(long[..2], short[..2], "seed {seed}");
            if short[..2].iter().any(|p| p.check_alone) || long[2].check_alone {
                assert_eq!(long[2], short[2], "seed {seed}");
            }
        }
    }

    #[tokio::test]
    async fn zero_cycles_are_refused_before_anything_starts() {
        let error = run(&KillLoopConfig::new(0, 7), &mut |_| {})
            .await
            .expect_err("0 cycles must be refused");
        assert!(error.to_string().contains("at least 1 cycle"), "{error}");
    }

    #[test]
    fn verify_passes_a_holding_with_every_acknowledged_write_once() {
        let acks = [created("r1", "a/w1"), appended("r1", "a/w2")];
        let held = holding(&[("r1", "a/w1", &["", "a/w2"]), ("r2", "a/w3", &[""])]);
        let verdict = verify(&acks, &[("x".into(), &held)]);
        assert_eq!(
            verdict,
            Verdict::default(),
            "an unacknowledged extra record is allowed"
        );
    }

    #[test]
    fn verify_reports_a_lost_record_and_a_lost_event() {
        let acks = [created("r1", "a/w1"), appended("r2", "a/w2")];
        let held = holding(&[("r2", "a/w0", &[""])]);
        let verdict = verify(&acks, &[("x".into(), &held)]);
        assert_eq!(verdict.missing.len(), 2, "{verdict:?}");
        assert!(verdict.missing[0].contains("record r1"));
        assert!(verdict.missing[1].contains("event a/w2"));
    }

    #[test]
    fn verify_reports_a_write_applied_twice() {
        let acks = [created("r1", "a/w1"), appended("r1", "a/w2")];
        let held = holding(&[("r1", "a/w1", &["", "a/w2", "a/w2"]), ("r9", "a/w1", &[])]);
        let verdict = verify(&acks, &[("x".into(), &held)]);
        assert!(verdict.missing.is_empty());
        assert_eq!(verdict.duplicated.len(), 2, "{verdict:?}");
    }
}
