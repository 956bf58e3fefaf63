//! The Beidaihe National Day 2026 week (`shared/scenarios/beidaihe-national-day-2026.md`)
//! played end to end on real processes: a hub and a node per office, each with its own RocksDB
//! folder, links through fault proxies. The test checks the outcomes the scenario names, not
//! just that the week plays: who holds which record, C-5 masking, the resumed feed, the offline
//! edits, identical heads everywhere, and the district's obligations at Mon 12 Oct 18:00.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, ensure};
use linkage_proto::v1 as pb;
use linkage_proto::v1::feeds_client::FeedsClient;
use linkage_tests::channel;
use linkage_tests::scenario::{
    self, DAIHE, DONGSHAN, District, ECOLOGY, EMERGENCY, EMERGENCY_LAPTOP, GOVERNMENT, HAIBIN,
    JUSTICE, MARKET, NIUTOUYA, Outcome, bj,
};
use serde_json::Value;

const COMPLAINANT_NAME: &str = "王女士 Ms Wang";
const COMPLAINANT_PHONE: &str = "13800000000";
const PC_ASSESSMENT: &str = "12瓶，阀门完好 12 cylinders, valves intact";
const LAPTOP_ASSESSMENT: &str = "1瓶泄漏 one cylinder leaking";
const LAPTOP_MEASURES: &str = "疏散并封闭地下室 basement evacuated and sealed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn national_day_week_produces_the_scenarios_outcomes() -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("linkage-scenario-")
        .tempdir()?;
    let mut say = |line: String| eprintln!("{line}");
    let district = District::start(temp.path(), &mut say).await?;
    let result = async {
        let outcome = scenario::play(&district, &mut say).await?;
        check(&district, &outcome).await
    }
    .await;
    if result.is_err() {
        // Keep the processes' logs for whoever reads the failure.
        let kept = temp.keep();
        eprintln!("logs and data kept in {}", kept.display());
    }
    result
}

async fn check(d: &District, out: &Outcome) -> anyhow::Result<()> {
    check_t4_refusal(out)?;
    let report = check_converged(d).await?;
    let hub = hub_view(d).await?;
    ensure!(
        hub.len() as u64 == report.records,
        "the hub's feed shows {} records, its convergence report {}",
        hub.len(),
        report.records
    );
    check_routing(d, out, &hub).await?;
    check_identical_heads(d, &hub).await?;
    check_complainant_masking(d, out, &hub).await?;
    check_resumed_feed(d, out).await?;
    check_offline_edits(d, out, &hub).await?;
    check_dispute(out)?;
    check_obligations(out)
}

/// Event 1: the enforcement team may not send a transfer in its own name (T-4), and the error
/// says who may.
fn check_t4_refusal(out: &Outcome) -> anyhow::Result<()> {
    ensure!(
        out.t4_refusal.contains("T-4"),
        "the refusal names no rule T-4: {}",
        out.t4_refusal
    );
    ensure!(
        out.t4_refusal.contains(&format!("({HAIBIN})")),
        "the refusal does not say that Haibin Town government may send it: {}",
        out.t4_refusal
    );
    Ok(())
}

/// What the hub shows at the end of the week: every node connected, converged, nothing
/// pending either way, no heads mismatch.
async fn check_converged(d: &District) -> anyhow::Result<pb::ConvergenceReport> {
    let report = d.wait_converged().await?;
    ensure!(
        report.nodes.len() == d.offices.len(),
        "the hub knows {} nodes, the district runs {}",
        report.nodes.len(),
        d.offices.len()
    );
    for n in &report.nodes {
        ensure!(
            n.connected
                && n.converged
                && n.pending_to_node == 0
                && n.pending_from_node == 0
                && n.heads_mismatch == 0,
            "the district is reported converged but node {} of {} is not: {n:?}",
            n.node_id,
            n.org
        );
    }
    Ok(report)
}

/// Every record the hub holds, as its feed shows it to the District People's Government, which
/// may read all of them (O-1).
async fn hub_view(d: &District) -> anyhow::Result<BTreeMap<String, pb::Record>> {
    let events = pull(d, GOVERNMENT, &[], 0).await?;
    let mut records = BTreeMap::new();
    for event in events {
        let record = event.record.context("a feed event without its record")?;
        let id = id_of(&record);
        ensure!(
            records.insert(id.clone(), record).is_none(),
            "the hub's feed delivered {id} twice in one catch-up"
        );
    }
    Ok(records)
}

async fn pull(
    d: &District,
    org: &str,
    kinds: &[&str],
    token: u64,
) -> anyhow::Result<Vec<pb::FeedEvent>> {
    let mut feeds = FeedsClient::new(channel(&d.hub.url()).await?);
    let request = pb::FeedRequest {
        org: org.into(),
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        categories: vec![],
        resume_token: token,
        catch_up_only: true,
        log_id: String::new(),
    };
    let mut stream = feeds.subscribe(request).await?.into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await? {
        events.push(event);
    }
    Ok(events)
}

fn id_of(record: &pb::Record) -> String {
    record
        .envelope
        .as_ref()
        .map(|e| e.id.clone())
        .unwrap_or_default()
}

fn parties_of(record: &pb::Record) -> BTreeSet<String> {
    record
        .envelope
        .as_ref()
        .map(|e| e.parties.iter().cloned().collect())
        .unwrap_or_default()
}

fn actions(record: &pb::Record) -> Vec<&str> {
    record.events.iter().map(|e| e.action.as_str()).collect()
}

async fn get(d: &District, office: &str, id: &str) -> anyhow::Result<Option<pb::Record>> {
    let mut client = d.office(office).records().await?;
    match client.get(pb::GetRecordRequest { id: id.to_owned() }).await {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(anyhow::anyhow!("Get {id} on {office}: {s}")),
    }
}

/// Each node holds exactly the records its organisation is a party to (channels), including
/// the ones it became a party to later (backfill); the named records sit where the scenario
/// puts them.
async fn check_routing(
    d: &District,
    out: &Outcome,
    hub: &BTreeMap<String, pb::Record>,
) -> anyhow::Result<()> {
    for (name, office) in &d.offices {
        let held: Vec<String> = d.held(name).await?;
        let held_set: BTreeSet<String> = held.iter().cloned().collect();
        ensure!(
            held.len() == held_set.len(),
            "{name} lists a record twice: {held:?}"
        );
        let entitled: BTreeSet<String> = hub
            .iter()
            .filter(|(_, r)| parties_of(r).contains(&office.node.org))
            .map(|(id, _)| id.clone())
            .collect();
        ensure!(
            held_set == entitled,
            "{name} ({}) holds {held_set:?} but is a party to {entitled:?}",
            office.node.org
        );
    }

    let holders =
        |id: &str| -> BTreeSet<String> { hub.get(id).map(parties_of).unwrap_or_default() };
    let set =
        |orgs: &[&str]| -> BTreeSet<String> { orgs.iter().map(|o| (*o).to_owned()).collect() };
    for (what, id) in [
        ("Haibin's transfer", &out.haibin_transfer),
        ("the complaint", &out.complaint),
        ("the urgent notice", &out.urgent_notice),
        ("the assistance request", &out.assistance),
        ("Dongshan's decision", &out.decision),
        ("Dongshan's transfer", &out.dongshan_transfer),
        ("the dispute", &out.dispute),
    ] {
        ensure!(hub.contains_key(id.as_str()), "the hub lacks {what} {id}");
    }
    ensure!(
        holders(&out.haibin_transfer) == set(&[HAIBIN, MARKET]),
        "Haibin's transfer has parties {:?}",
        holders(&out.haibin_transfer)
    );
    ensure!(
        holders(&out.complaint) == set(&[MARKET, DAIHE]),
        "the complaint has parties {:?}; C-5 keeps it to Market Supervision and Daihe Town",
        holders(&out.complaint)
    );
    ensure!(
        holders(&out.decision) == set(&[DONGSHAN, MARKET]),
        "Dongshan's decision has parties {:?}",
        holders(&out.decision)
    );
    ensure!(
        get(d, HAIBIN, &out.complaint).await?.is_none(),
        "Haibin Town's node holds the complaint"
    );

    // The notice reached the District Government because Niutouya reported to it.
    let notice = get(d, GOVERNMENT, &out.urgent_notice)
        .await?
        .context("the District Government's node lacks the urgent notice it was reported")?;
    ensure!(
        actions(&notice).contains(&"reported_to_government"),
        "the government's copy of the notice lacks the report: {:?}",
        actions(&notice)
    );
    ensure!(
        holders(&out.urgent_notice) == set(&[NIUTOUYA, EMERGENCY, GOVERNMENT]),
        "the urgent notice has parties {:?}",
        holders(&out.urgent_notice)
    );

    // The dispute reached the Justice Bureau once coordination was applied for (backfill).
    let dispute = get(d, JUSTICE, &out.dispute)
        .await?
        .context("the Justice Bureau's node lacks the dispute it was asked to coordinate")?;
    let steps = actions(&dispute);
    let applied = steps.iter().position(|a| *a == "coordination_applied");
    let failed = steps.iter().position(|a| *a == "negotiation_failed");
    ensure!(
        applied.is_some() && failed.is_some(),
        "the Justice Bureau's copy of the dispute lacks its ladder: {steps:?}"
    );
    ensure!(
        holders(&out.dispute).contains(JUSTICE),
        "the Justice Bureau is not a party to the dispute"
    );
    for office in [EMERGENCY, EMERGENCY_LAPTOP] {
        ensure!(
            get(d, office, &out.urgent_notice).await?.is_some(),
            "{office} lacks the urgent notice"
        );
    }
    Ok(())
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Every node entitled to a record holds the hub's exact version of it: the same heads and the
/// same events, none doubled.
async fn check_identical_heads(
    d: &District,
    hub: &BTreeMap<String, pb::Record>,
) -> anyhow::Result<()> {
    for (id, on_hub) in hub {
        let hub_events = sorted(on_hub.events.iter().map(|e| e.id.clone()).collect());
        let unique: BTreeSet<&String> = hub_events.iter().collect();
        ensure!(
            unique.len() == hub_events.len(),
            "the hub's {id} holds a duplicated event: {:?}",
            actions(on_hub)
        );
        for (name, office) in &d.offices {
            if !parties_of(on_hub).contains(&office.node.org) {
                continue;
            }
            let here = get(d, name, id)
                .await?
                .with_context(|| format!("{name} lacks {id}"))?;
            ensure!(
                sorted(here.heads.clone()) == sorted(on_hub.heads.clone()),
                "{name}'s {id} has heads {:?}, the hub's {:?}",
                here.heads,
                on_hub.heads
            );
            let events = sorted(here.events.iter().map(|e| e.id.clone()).collect());
            ensure!(
                events == hub_events,
                "{name}'s {id} has events {:?}, the hub's {:?}",
                actions(&here),
                actions(on_hub)
            );
        }
    }
    Ok(())
}

fn complainant(record: &pb::Record) -> anyhow::Result<Value> {
    let body: Value = serde_json::from_str(&record.body_json)
        .with_context(|| format!("body of {} is not JSON", id_of(record)))?;
    Ok(body.get("complainant").cloned().unwrap_or(Value::Null))
}

/// C-5: the complainant's name and phone reach Daihe Town and the Bureau only; no other node
/// holds them, and the District Government's oversight feed shows the complaint masked.
async fn check_complainant_masking(
    d: &District,
    out: &Outcome,
    hub: &BTreeMap<String, pb::Record>,
) -> anyhow::Result<()> {
    for office in [MARKET, DAIHE] {
        let record = get(d, office, &out.complaint)
            .await?
            .with_context(|| format!("{office} lacks the complaint"))?;
        let who = complainant(&record)?;
        ensure!(
            who["name"] == COMPLAINANT_NAME && who["phone"] == COMPLAINANT_PHONE,
            "{office}, which handles the complaint, does not see the complainant: {who}"
        );
    }

    // Nothing any other node holds mentions the complainant.
    for (name, office) in &d.offices {
        if [MARKET, DAIHE].contains(&office.node.org.as_str()) {
            continue;
        }
        for id in d.held(name).await? {
            let record = get(d, name, &id).await?.context("listed but not found")?;
            let text = format!("{record:?}");
            ensure!(
                !text.contains(COMPLAINANT_PHONE) && !text.contains("Ms Wang"),
                "{name}'s {id} reveals the complainant"
            );
        }
    }

    // The oversight reader sees the complaint, without its complainant.
    let on_hub = hub
        .get(&out.complaint)
        .context("the government's feed lacks the complaint")?;
    ensure!(
        complainant(on_hub)?.is_null(),
        "the District Government's feed shows the complainant: {}",
        on_hub.body_json
    );
    let text = format!("{on_hub:?}");
    ensure!(
        !text.contains(COMPLAINANT_PHONE) && !text.contains("Ms Wang"),
        "the District Government's feed reveals the complainant somewhere: {text}"
    );
    let complaints = pull(d, GOVERNMENT, &["complaint"], 0).await?;
    ensure!(
        complaints.len() == 1,
        "the government's complaint feed holds {} records",
        complaints.len()
    );

    // No other organisation's feed reveals the complainant either.
    for org in d.offices.values().map(|o| o.node.org.clone()) {
        if org == MARKET || org == DAIHE {
            continue;
        }
        for event in pull(d, &org, &[], 0).await? {
            let text = format!("{event:?}");
            ensure!(
                !text.contains(COMPLAINANT_PHONE) && !text.contains("Ms Wang"),
                "the feed for {org} reveals the complainant"
            );
        }
    }
    Ok(())
}

/// Event 5: the Bureau's case system, resuming from the token it saved before the holiday,
/// receives Dongshan's decision exactly once, and nothing more from where that left it.
async fn check_resumed_feed(d: &District, out: &Outcome) -> anyhow::Result<()> {
    let ids: Vec<String> = out
        .feed_deliveries
        .iter()
        .map(|e| e.record.as_ref().map(id_of).unwrap_or_default())
        .collect();
    ensure!(
        ids.iter().filter(|id| **id == out.decision).count() == 1,
        "the resumed feed delivered the decision {} times: {ids:?}",
        ids.iter().filter(|id| **id == out.decision).count()
    );
    ensure!(
        ids.len() == 1,
        "the category-3 feed delivered more than the decision: {ids:?}"
    );
    let decision = out.feed_deliveries[0]
        .record
        .as_ref()
        .context("feed event without record")?;
    ensure!(
        actions(decision).contains(&"extended") && actions(decision).contains(&"shared"),
        "the delivered decision lacks its extension or sharing: {:?}",
        actions(decision)
    );
    let last = out.feed_deliveries.last().map_or(0, |e| e.token);
    ensure!(
        last > out.feed_token_before_holiday,
        "tokens did not move past the saved one"
    );
    ensure!(
        !out.feed_log_before_holiday.is_empty()
            && out
                .feed_deliveries
                .iter()
                .all(|e| e.log_id == out.feed_log_before_holiday),
        "feed events do not all name the hub log their tokens belong to"
    );
    let again = scenario::pull_feed(d, last, &out.feed_log_before_holiday).await?;
    ensure!(
        again.is_empty(),
        "resuming after the last delivery delivered again: {:?}",
        again
            .iter()
            .map(|e| e.record.as_ref().map(id_of))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// Event 8: both devices' offline edits are kept: the laptop's measures, and the assessment
/// both wrote shown as a conflict with both values, the same on every holder.
async fn check_offline_edits(
    d: &District,
    out: &Outcome,
    hub: &BTreeMap<String, pb::Record>,
) -> anyhow::Result<()> {
    let mut copies = vec![(
        "Niutouya, as played",
        out.notice_after_offline_edits.clone(),
    )];
    copies.push((
        "the hub",
        hub.get(&out.urgent_notice)
            .context("hub lacks the notice")?
            .clone(),
    ));
    for office in [EMERGENCY, EMERGENCY_LAPTOP, NIUTOUYA, GOVERNMENT] {
        copies.push((
            office,
            get(d, office, &out.urgent_notice)
                .await?
                .with_context(|| format!("{office} lacks the notice"))?,
        ));
    }
    for (who, record) in copies {
        let body: Value = serde_json::from_str(&record.body_json)?;
        ensure!(
            body["measures"] == LAPTOP_MEASURES,
            "{who}'s notice lost the laptop's measures: {body}"
        );
        let assessment = record
            .conflicts
            .iter()
            .find(|c| c.path == "body.assessment")
            .with_context(|| {
                format!(
                    "{who}'s notice shows no conflict at body.assessment: {:?}",
                    record.conflicts
                )
            })?;
        ensure!(
            sorted(assessment.values.clone())
                == sorted(vec![PC_ASSESSMENT.into(), LAPTOP_ASSESSMENT.into()]),
            "{who}'s conflict at body.assessment lists {:?}",
            assessment.values
        );
        ensure!(
            [PC_ASSESSMENT, LAPTOP_ASSESSMENT].contains(&body["assessment"].as_str().unwrap_or("")),
            "{who}'s assessment is neither device's value: {body}"
        );
    }
    Ok(())
}

/// Event 7: the dispute's ladder stands at D-2 with the D-1 minutes attached.
fn check_dispute(out: &Outcome) -> anyhow::Result<()> {
    let dispute = &out.dispute_final;
    ensure!(
        dispute.status == "coordinating",
        "the dispute ends the week at {}, not coordinating (D-2)",
        dispute.status
    );
    let failed = dispute
        .events
        .iter()
        .find(|e| e.action == "negotiation_failed")
        .context("the dispute lacks the failed negotiation")?;
    ensure!(
        !failed.attachments.is_empty(),
        "the D-1 minutes are not attached"
    );
    Ok(())
}

fn find<'a>(
    obligations: &'a [pb::Obligation],
    record: &str,
    rule: &str,
    owner: &str,
) -> anyhow::Result<Vec<&'a pb::Obligation>> {
    let found: Vec<&pb::Obligation> = obligations
        .iter()
        .filter(|o| o.record_id == record && o.rule == rule && o.owner == owner)
        .collect();
    ensure!(
        !found.is_empty(),
        "no {rule} obligation of {owner} on {record} among {obligations:#?}"
    );
    Ok(found)
}

/// What the hub shows at Mon 12 Oct 18:00.
fn check_obligations(out: &Outcome) -> anyhow::Result<()> {
    let all = &out.obligations_12_oct.obligations;
    ensure!(
        out.obligations_12_oct.at_ms == bj("2026-10-12 18:00"),
        "obligations were computed at {}",
        out.obligations_12_oct.at_ms
    );

    let overdue: Vec<&pb::Obligation> = all.iter().filter(|o| o.state == "overdue").collect();
    ensure!(
        overdue.len() == 1,
        "expected exactly one overdue obligation, got {overdue:#?}"
    );
    let dispatch = overdue[0];
    ensure!(
        dispatch.owner == EMERGENCY
            && dispatch.rule == "J-3"
            && dispatch.record_id == out.urgent_notice
            && dispatch.due_ms == bj("2026-09-29 11:00"),
        "the overdue obligation is not the Bureau's J-3 dispatch due 29 Sep 11:00: {dispatch:?}"
    );

    let report = find(all, &out.urgent_notice, "J-3", NIUTOUYA)?;
    ensure!(
        report.iter().all(|o| o.state == "met"),
        "Niutouya's report to the government is not met: {report:?}"
    );

    let t1 = find(all, &out.haibin_transfer, "T-1", HAIBIN)?;
    ensure!(
        t1.len() == 1 && t1[0].due_ms == bj("2026-10-08 24:00") && t1[0].state == "met",
        "Haibin's T-1 is not met by 8 Oct 24:00: {t1:?}"
    );

    let a2 = find(all, &out.assistance, "A-2", ECOLOGY)?;
    ensure!(
        a2.len() == 1 && a2[0].due_ms == bj("2026-10-09 24:00") && a2[0].state == "met",
        "the Branch's A-2 guidance is not met by 9 Oct 24:00: {a2:?}"
    );
    let a1 = find(all, &out.assistance, "A-1", ECOLOGY)?;
    ensure!(
        a1.iter().all(|o| o.state == "superseded"),
        "the Branch's A-1 opinion is not superseded by the guidance: {a1:?}"
    );

    let s2 = find(all, &out.decision, "S-2", DONGSHAN)?;
    ensure!(
        s2.len() == 1 && s2[0].due_ms == bj("2026-10-27 24:00") && s2[0].state == "met",
        "Dongshan's extended S-2 is not due 27 Oct 24:00 and met: {s2:?}"
    );

    // Open and due soon: Daihe Town's answer to the complainant.
    let answer: Vec<&pb::Obligation> = all
        .iter()
        .filter(|o| o.record_id == out.complaint && o.owner == DAIHE)
        .collect();
    ensure!(
        !answer.is_empty() && answer.iter().all(|o| o.state == "open"),
        "Daihe Town's duties on the complaint are not open: {answer:?}"
    );
    Ok(())
}
