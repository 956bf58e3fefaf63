//! A hub that lost its store, refilled from the nodes on real processes: Haibin Town sends a
//! transfer and the Market Supervision Bureau receives it, so the record holds both offices'
//! changes. A new hub on an empty store refuses each node's copy (each holds the other
//! office's change, and an office may send only its own); started with
//! `--refill-from-nodes`, it takes the record back whole.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::time::Duration;

use anyhow::{Context, ensure};
use linkage_proto::v1 as pb;
use linkage_proto::v1::feeds_client::FeedsClient;
use linkage_tests::scenario::{HAIBIN, MARKET, bj};
use linkage_tests::{HubProcess, NodeProcess, bin, channel, eventually};
use serde_json::json;

/// The record's events as the hub's feed for the Market Supervision Bureau holds it, if it does.
async fn hub_actions(hub: &HubProcess, id: &str) -> anyhow::Result<Option<Vec<String>>> {
    let request = pb::FeedRequest {
        org: MARKET.into(),
        catch_up_only: true,
        ..Default::default()
    };
    let mut stream = FeedsClient::new(channel(&hub.url()).await?)
        .subscribe(request)
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        let record = event.record.context("feed event without record")?;
        if record.envelope.as_ref().is_some_and(|e| e.id == id) {
            return Ok(Some(record.events.into_iter().map(|e| e.action).collect()));
        }
    }
    Ok(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_refilled_from_the_nodes_takes_back_records_two_offices_wrote() -> anyhow::Result<()>
{
    let temp = tempfile::Builder::new()
        .prefix("linkage-refill-")
        .tempdir()?;
    let mut hub = HubProcess::start(&temp.path().join("hub"), "127.0.0.1:0")?;
    let haibin = NodeProcess::start(HAIBIN, &temp.path().join("haibin"), Some(&hub.url()))?;
    let market = NodeProcess::start(MARKET, &temp.path().join("market"), Some(&hub.url()))?;

    let transfer = haibin
        .records()
        .await?
        .create(pb::CreateRecordRequest {
            kind: "transfer".into(),
            parties: vec![MARKET.into()],
            body_json: json!({
                "sender": HAIBIN,
                "receiver": MARKET,
                "title": "stall selling food past its use-by date",
                "matter": "food safety",
                "place": "market street stall",
                "facts": "The stall offered packaged food past its use-by date.",
                "discovered_at_ms": bj("2026-09-28 10:20"),
                "materials": [
                    {"kind": "transfer_letter", "name": "transfer letter.pdf"},
                    {"kind": "case_source", "name": "on-site inspection record.pdf"},
                    {"kind": "evidence", "name": "photo-1.jpg"},
                ],
            })
            .to_string(),
            at_ms: Some(bj("2026-09-28 11:05")),
            ..Default::default()
        })
        .await?
        .into_inner();
    let id = transfer.envelope.context("record without envelope")?.id;
    let mut market_records = market.records().await?;
    eventually(
        "the transfer to reach the Market Supervision Bureau",
        Duration::from_secs(60),
        || {
            let (mut records, id) = (market_records.clone(), id.clone());
            async move {
                Ok(records
                    .get(pb::GetRecordRequest { id })
                    .await
                    .ok()
                    .map(|_| ()))
            }
        },
    )
    .await?;
    market_records
        .append_event(pb::AppendEventRequest {
            id: id.clone(),
            action: "received".into(),
            at_ms: Some(bj("2026-09-28 14:00")),
            person: "registrar".into(),
            ..Default::default()
        })
        .await?;
    let both = vec!["sent".to_owned(), "received".to_owned()];
    eventually(
        "the hub to hold both offices' acts",
        Duration::from_secs(60),
        || async { Ok((hub_actions(&hub, &id).await?.as_ref() == Some(&both)).then_some(())) },
    )
    .await?;
    // And Haibin holds the receipt too, so each node's copy holds the other office's change.
    let at_haibin = haibin.records().await?;
    eventually(
        "Haibin to hold the receipt",
        Duration::from_secs(60),
        || {
            let (mut records, id) = (at_haibin.clone(), id.clone());
            async move {
                let record = records.get(pb::GetRecordRequest { id }).await?.into_inner();
                let actions: Vec<String> = record.events.into_iter().map(|e| e.action).collect();
                Ok((actions.len() == 2).then_some(()))
            }
        },
    )
    .await?;

    // The hub's store is lost. A new, empty hub on the same address: each node's copy holds
    // the other office's change, so it is refused from both.
    hub.proc.kill9();
    let addr = hub.addr.clone();
    hub = HubProcess::start(&temp.path().join("hub-empty"), &addr)?;
    let refused = eventually(
        "both nodes to be refused",
        Duration::from_secs(60),
        || async {
            let mut refusals = Vec::new();
            for node in [&haibin, &market] {
                let listed = node
                    .records()
                    .await?
                    .rejections(pb::RejectionsRequest {})
                    .await?
                    .into_inner()
                    .rejections;
                refusals.extend(listed.into_iter().filter(|r| r.record_id == id));
            }
            Ok((refusals.len() == 2).then_some(refusals))
        },
    )
    .await?;
    ensure!(
        refused.iter().all(|r| r.rule == "actor"),
        "refused under another rule: {refused:?}"
    );
    ensure!(
        hub_actions(&hub, &id).await?.as_ref() != Some(&both),
        "the empty hub holds the record whole without refilling"
    );
    // The operator's view says so, although nothing is pending, and still does once the
    // hub has restarted (each node reports its own notes).
    for round in ["", " after the hub restarted"] {
        if !round.is_empty() {
            hub.restart()?;
        }
        let hub_url = hub.url();
        eventually(
            &format!("each node's refusal in the convergence report{round}"),
            Duration::from_secs(60),
            || {
                let hub_url = hub_url.clone();
                async move {
                    let report = linkage_proto::v1::district_client::DistrictClient::new(
                        channel(&hub_url).await?,
                    )
                    .convergence(pb::ConvergenceRequest {})
                    .await?
                    .into_inner();
                    let refused: Vec<u64> =
                        report.nodes.iter().map(|n| n.refused_from_node).collect();
                    Ok((refused == [1, 1]).then_some(()))
                }
            },
        )
        .await?;
        let status = std::process::Command::new(bin("linkage")?)
            .args(["--hub", &hub.url(), "status"])
            .output()?;
        let shown = String::from_utf8_lossy(&status.stdout);
        ensure!(
            shown.contains("拒收 refused: 2 node(s) hold changes the hub refused")
                && shown.matches("有拒收 refused changes").count() == 2
                && !shown.contains("已收敛 converged"),
            "linkage status does not show the refusals{round}:\n{shown}"
        );
    }

    // Started again on an empty store, refilling from the nodes, it takes the record whole.
    hub.proc.kill9();
    hub = HubProcess::start_with(
        &temp.path().join("hub-refilled"),
        &addr,
        &["--refill-from-nodes"],
    )?;
    eventually(
        "the refilled hub to hold both offices' acts",
        Duration::from_secs(60),
        || async { Ok((hub_actions(&hub, &id).await?.as_ref() == Some(&both)).then_some(())) },
    )
    .await?;

    // The nodes' notes go once the hub holds what it refused: nothing reads as blocked.
    eventually(
        "the nodes' rejection notes to clear",
        Duration::from_secs(60),
        || async {
            let mut left = 0;
            for node in [&haibin, &market] {
                left += node
                    .records()
                    .await?
                    .rejections(pb::RejectionsRequest {})
                    .await?
                    .into_inner()
                    .rejections
                    .len();
            }
            Ok((left == 0).then_some(()))
        },
    )
    .await?;
    Ok(())
}
