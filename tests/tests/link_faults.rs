//! Sync under link faults, on real processes: a hub and two office nodes (Haibin Town and the
//! Market Supervision Bureau) whose links run through fault proxies. Both write bursts of
//! records shared with each other and edit each other's records while the link is cut, or the
//! hub is killed and restarted, in the middle of syncing. Afterwards every acknowledged record
//! must be everywhere exactly once, with identical heads and no event lost or doubled, and
//! `linkage status` must have called the district converged only when it was.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use linkage_proto::v1 as pb;
use linkage_proto::v1::feeds_client::FeedsClient;
use linkage_proto::v1::records_client::RecordsClient;
use linkage_tests::proxy::Proxy;
use linkage_tests::scenario::{GOVERNMENT, HAIBIN, MARKET, Office};
use linkage_tests::{HubProcess, NodeProcess, bin, channel, eventually};
use serde_json::{Value, json};
use tonic::transport::Channel;

/// Records each node writes in a burst.
const BURST: usize = 40;
/// How long sync gets to settle after the fault is repaired.
const SETTLE: Duration = Duration::from_secs(60);

/// A hub and two nodes, each node's hub link through its own proxy.
struct Pair {
    _temp: tempfile::TempDir,
    hub: HubProcess,
    a: Office,
    b: Office,
}

impl Pair {
    async fn start() -> anyhow::Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("linkage-faults-")
            .tempdir()?;
        let hub = HubProcess::start(&temp.path().join("hub"), "127.0.0.1:0")?;
        let upstream = hub.addr.parse().context("hub address")?;
        let office = |org: &str, link: Proxy| -> anyhow::Result<Office> {
            let node = NodeProcess::start(org, &temp.path().join(org), Some(&link.url()))?;
            Ok(Office { node, link })
        };
        let a = office(HAIBIN, Proxy::start(upstream).await?)?;
        let b = office(MARKET, Proxy::start(upstream).await?)?;
        let pair = Pair {
            _temp: temp,
            hub,
            a,
            b,
        };
        pair.wait_connected().await?;
        Ok(pair)
    }

    async fn wait_connected(&self) -> anyhow::Result<()> {
        eventually("both nodes to connect", SETTLE, || async {
            let report = self.report().await?;
            Ok((report.nodes.iter().filter(|n| n.connected).count() == 2).then_some(()))
        })
        .await
    }

    async fn report(&self) -> anyhow::Result<pb::ConvergenceReport> {
        Ok(self
            .hub
            .district()
            .await?
            .convergence(pb::ConvergenceRequest {})
            .await?
            .into_inner())
    }

    fn offices(&self) -> [&Office; 2] {
        [&self.a, &self.b]
    }

    /// Logs of every process, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for proc in [&self.hub.proc, &self.a.node.proc, &self.b.node.proc] {
            text += &format!("--- {}\n{}\n", proc.name, proc.log_tail(15));
        }
        text
    }
}

/// What the nodes acknowledged: each record with its owner and the number of events it must
/// end with (its opening event plus every appended event a node acknowledged).
#[derive(Debug, Default)]
struct Ledger {
    records: BTreeMap<String, (String, usize)>,
}

type SharedLedger = Arc<Mutex<Ledger>>;

fn case(i: usize, org: &str, other: &str) -> pb::CreateRecordRequest {
    pb::CreateRecordRequest {
        kind: "case".into(),
        parties: vec![other.to_owned()],
        body_json: json!({
            "title": format!("burst case {i} of {org}"),
            "matter": "sync under faults",
            "facts": "written while the link may be cut",
        })
        .to_string(),
        ..Default::default()
    }
}

fn updated(id: &str, note: String) -> pb::AppendEventRequest {
    pb::AppendEventRequest {
        id: id.to_owned(),
        action: "updated".into(),
        note,
        ..Default::default()
    }
}

/// Writes `count` records on one node, shared with `other`, and between them appends events to
/// its own records and to the other node's records it already holds. Every write the node
/// acknowledges goes into the ledger; `done` counts created records.
async fn burst(
    mut client: RecordsClient<Channel>,
    org: String,
    other: String,
    count: usize,
    ledger: SharedLedger,
    done: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    for i in 0..count {
        let record = client.create(case(i, &org, &other)).await?.into_inner();
        let id = record.envelope.context("no envelope")?.id;
        ledger
            .lock()
            .unwrap()
            .records
            .insert(id.clone(), (org.clone(), 1));
        done.fetch_add(1, Ordering::SeqCst);

        let target = {
            let ledger = ledger.lock().unwrap();
            let owner = if i % 2 == 0 { &org } else { &other };
            let candidates: Vec<&String> = ledger
                .records
                .iter()
                .filter(|(_, (o, _))| o == owner)
                .map(|(id, _)| id)
                .collect();
            (!candidates.is_empty()).then(|| candidates[i % candidates.len()].clone())
        };
        let Some(target) = target else { continue };
        // Only a record this node lists (its store holds it) is edited: one still arriving
        // answers INTERNAL instead of NOT_FOUND (`hub/tests/record_mid_sync.rs`).
        if !holds(&mut client, &target).await? {
            continue;
        }
        client
            .append_event(updated(&target, format!("{org} note {i}")))
            .await
            .with_context(|| format!("{org} could not append to {target}"))?;
        ledger.lock().unwrap().records.get_mut(&target).unwrap().1 += 1;
    }
    Ok(())
}

async fn holds(client: &mut RecordsClient<Channel>, id: &str) -> anyhow::Result<bool> {
    let listed = client
        .list(pb::ListRecordsRequest::default())
        .await?
        .into_inner();
    Ok(listed
        .records
        .iter()
        .any(|s| s.envelope.as_ref().is_some_and(|e| e.id == id)))
}

/// Starts both nodes' bursts; returns their tasks and the number of records created so far.
fn start_bursts(
    pair: &Pair,
    clients: [RecordsClient<Channel>; 2],
    ledger: &SharedLedger,
) -> (
    Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    Arc<AtomicUsize>,
) {
    let done = Arc::new(AtomicUsize::new(0));
    let [ca, cb] = clients;
    let tasks = vec![
        tokio::spawn(burst(
            ca,
            pair.a.node.org.clone(),
            pair.b.node.org.clone(),
            BURST,
            ledger.clone(),
            done.clone(),
        )),
        tokio::spawn(burst(
            cb,
            pair.b.node.org.clone(),
            pair.a.node.org.clone(),
            BURST,
            ledger.clone(),
            done.clone(),
        )),
    ];
    (tasks, done)
}

/// Waits until the bursts have created `at_least` records, failing at once if one of them
/// stopped with an error.
async fn wait_done(
    done: &AtomicUsize,
    at_least: usize,
    tasks: &mut Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    while done.load(Ordering::SeqCst) < at_least {
        if let Some(i) = tasks.iter().position(|t| t.is_finished()) {
            tasks.remove(i).await??;
            continue;
        }
        ensure!(
            Instant::now() < deadline,
            "the bursts created {} records in {SETTLE:?}",
            done.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn join(tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>) -> anyhow::Result<()> {
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// `linkage --hub URL --json status`, the real CLI.
async fn cli_status(hub: &HubProcess) -> anyhow::Result<Value> {
    let out = tokio::process::Command::new(bin("linkage")?)
        .args(["--hub", &hub.url(), "--json", "status"])
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "linkage status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("linkage status --json printed no JSON")
}

fn node_in<'a>(status: &'a Value, org: &str) -> anyhow::Result<&'a Value> {
    status["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["org"] == org))
        .with_context(|| format!("linkage status shows no node of {org}: {status}"))
}

/// While `cut`'s link is down with local writes pending, the CLI must say not converged and
/// show that node offline and behind.
async fn assert_status_not_converged(pair: &Pair, cut: &Office) -> anyhow::Result<()> {
    let status = cli_status(&pair.hub).await?;
    ensure!(
        status["converged"] == false,
        "linkage status says converged while {}'s link is cut with writes pending: {status}",
        cut.node.org
    );
    let node = node_in(&status, &cut.node.org)?;
    ensure!(
        node["connected"] == false && node["converged"] == false,
        "linkage status does not show {} offline and behind: {node}",
        cut.node.org
    );
    let info = cut
        .records()
        .await?
        .node_info(pb::NodeInfoRequest {})
        .await?
        .into_inner();
    ensure!(
        !info.hub_connected && info.pending_to_hub > 0,
        "the cut node does not see itself offline with writes pending: {info:?}"
    );
    Ok(())
}

/// Waits until `linkage status` says converged, and checks right away that it is true.
async fn converge_and_check(pair: &Pair, ledger: &SharedLedger) -> anyhow::Result<()> {
    let status = eventually("linkage status to say converged", SETTLE, || async {
        let status = cli_status(&pair.hub).await?;
        Ok((status["converged"] == true).then_some(status))
    })
    .await
    .with_context(|| pair.logs())?;
    for org in [&pair.a.node.org, &pair.b.node.org] {
        let node = node_in(&status, org)?;
        ensure!(
            node["connected"] == true && node["converged"] == true,
            "converged, yet {org} is not: {node}"
        );
    }
    let expected = ledger.lock().unwrap().records.clone();
    ensure!(
        status["records"] == expected.len(),
        "linkage status said converged with {} records on the hub; the nodes acknowledged {}",
        status["records"],
        expected.len()
    );
    check_everywhere(pair, &expected).await
}

/// Every record the hub holds, from the District Government's feed (it may read all).
async fn hub_records(hub: &HubProcess) -> anyhow::Result<Vec<pb::Record>> {
    let mut feeds = FeedsClient::new(channel(&hub.url()).await?);
    let mut stream = feeds
        .subscribe(pb::FeedRequest {
            org: GOVERNMENT.into(),
            catch_up_only: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut records = Vec::new();
    while let Some(event) = stream.message().await? {
        records.push(event.record.context("feed event without record")?);
    }
    Ok(records)
}

fn id_of(record: &pb::Record) -> String {
    record
        .envelope
        .as_ref()
        .map(|e| e.id.clone())
        .unwrap_or_default()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn event_ids(record: &pb::Record) -> Vec<String> {
    sorted(record.events.iter().map(|e| e.id.clone()).collect())
}

/// The hub and both nodes hold exactly the acknowledged records, each once, with every
/// acknowledged event once, and the nodes' heads equal the hub's.
async fn check_everywhere(
    pair: &Pair,
    expected: &BTreeMap<String, (String, usize)>,
) -> anyhow::Result<()> {
    let on_hub = hub_records(&pair.hub).await?;
    let hub_ids: Vec<String> = on_hub.iter().map(id_of).collect();
    let unique: BTreeSet<&String> = hub_ids.iter().collect();
    ensure!(
        unique.len() == hub_ids.len(),
        "the hub holds a record twice"
    );
    let want: BTreeSet<&String> = expected.keys().collect();
    ensure!(
        unique == want,
        "the hub holds {} records, the nodes acknowledged {}; missing {:?}, extra {:?}",
        unique.len(),
        want.len(),
        want.difference(&unique).collect::<Vec<_>>(),
        unique.difference(&want).collect::<Vec<_>>()
    );

    for record in &on_hub {
        let id = id_of(record);
        let (_, events) = &expected[&id];
        let ids = event_ids(record);
        let distinct: BTreeSet<&String> = ids.iter().collect();
        ensure!(
            ids.len() == *events && distinct.len() == ids.len(),
            "the hub's {id} has {} events ({} distinct); {events} were acknowledged",
            ids.len(),
            distinct.len()
        );
    }

    for office in pair.offices() {
        let mut client = office.records().await?;
        let listed = client
            .list(pb::ListRecordsRequest::default())
            .await?
            .into_inner();
        let ids: Vec<String> = listed
            .records
            .iter()
            .filter_map(|s| s.envelope.as_ref().map(|e| e.id.clone()))
            .collect();
        let distinct: BTreeSet<&String> = ids.iter().collect();
        ensure!(
            distinct.len() == ids.len() && distinct == want,
            "{} lists {} records ({} distinct), the hub {}",
            office.node.org,
            ids.len(),
            distinct.len(),
            want.len()
        );
        for record in &on_hub {
            let id = id_of(record);
            let here = client
                .get(pb::GetRecordRequest { id: id.clone() })
                .await?
                .into_inner();
            ensure!(
                sorted(here.heads.clone()) == sorted(record.heads.clone()),
                "{}'s {id} has heads {:?}, the hub's {:?}",
                office.node.org,
                here.heads,
                record.heads
            );
            ensure!(
                event_ids(&here) == event_ids(record),
                "{}'s {id} has {} events, the hub's {}",
                office.node.org,
                here.events.len(),
                record.events.len()
            );
        }
    }
    Ok(())
}

/// A few more records on one node, so it surely has writes the hub has not seen.
async fn write_more(office: &Office, other: &str, ledger: &SharedLedger) -> anyhow::Result<()> {
    let mut client = office.records().await?;
    for i in 0..5 {
        let record = client
            .create(case(1000 + i, &office.node.org, other))
            .await?
            .into_inner();
        let id = record.envelope.context("no envelope")?.id;
        ledger
            .lock()
            .unwrap()
            .records
            .insert(id, (office.node.org.clone(), 1));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_cut_mid_burst_then_healed_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let pair = Pair::start().await?;
    let ledger = SharedLedger::default();
    let clients = [pair.a.records().await?, pair.b.records().await?];
    let (mut tasks, done) = start_bursts(&pair, clients, &ledger);

    // Cut Haibin's link while both bursts are being written and synced.
    wait_done(&done, BURST / 2, &mut tasks).await?;
    pair.a.link.cut();
    join(tasks).await?;
    write_more(&pair.a, &pair.b.node.org, &ledger).await?;
    assert_status_not_converged(&pair, &pair.a).await?;

    pair.a.link.heal();
    converge_and_check(&pair, &ledger).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_killed_and_restarted_mid_burst_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let mut pair = Pair::start().await?;
    let ledger = SharedLedger::default();
    let clients = [pair.a.records().await?, pair.b.records().await?];
    let (mut tasks, done) = start_bursts(&pair, clients, &ledger);

    // SIGKILL the hub while both bursts are being written and synced; it comes back on the
    // same address with the same data.
    wait_done(&done, BURST / 2, &mut tasks).await?;
    pair.hub.restart()?;
    join(tasks).await?;
    converge_and_check(&pair, &ledger).await
}

/// After a cut node comes back, the hub must not call the district converged before it has
/// heard what the node wrote offline. Every convergence report is checked against what the
/// nodes acknowledged, polling as fast as the hub answers so that a short false window shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_never_converged_while_a_returning_node_has_unsent_writes() -> anyhow::Result<()>
{
    let pair = Pair::start().await?;
    let ledger = SharedLedger::default();
    write_more(&pair.b, &pair.a.node.org, &ledger).await?;
    converge_and_check(&pair, &ledger).await?;

    pair.a.link.cut();
    write_more(&pair.a, &pair.b.node.org, &ledger).await?;
    assert_status_not_converged(&pair, &pair.a).await?;
    let expected = ledger.lock().unwrap().records.len() as u64;

    pair.a.link.heal();
    let mut district = pair.hub.district().await?;
    let deadline = Instant::now() + SETTLE;
    let mut polls = 0u32;
    loop {
        let report = district
            .convergence(pb::ConvergenceRequest {})
            .await?
            .into_inner();
        polls += 1;
        if report.converged {
            ensure!(
                report.records == expected,
                "after {polls} polls the hub reported the district converged while holding {} of the {expected} acknowledged records: {report:?}",
                report.records
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the district did not converge within {SETTLE:?}:\n{}",
            pair.logs()
        );
        // Poll without pause while the node reconnects; yield so the runtime stays fair.
        tokio::task::yield_now().await;
    }
    converge_and_check(&pair, &ledger).await
}
