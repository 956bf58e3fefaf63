//! A newly published calendar year is a record the Justice Bureau issues and the hub
//! distributes to every node: deadlines that were provisional stop being so, with no rebuild or
//! redeploy (issue: rules, calendar).

use std::time::Duration;

use linkage_proto::v1 as pb;
use linkage_tests::{HubProcess, NodeProcess, eventually};
use serde_json::json;

fn ms(text: &str) -> i64 {
    linkage_node::calendar::parse_instant(text)
        .unwrap()
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_2027_calendar_reaches_every_node_and_ends_provisional_deadlines()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = HubProcess::start(&dir.path().join("hub"), "127.0.0.1:0")?;
    let justice = NodeProcess::start("bdh-sfj", &dir.path().join("sfj"), Some(&hub.url()))?;
    let haibin = NodeProcess::start("130304100", &dir.path().join("haibin"), Some(&hub.url()))?;
    let market = NodeProcess::start("bdh-scjg", &dir.path().join("scjg"), Some(&hub.url()))?;

    // A transfer discovered on 30 Dec 2026: its 3 WD run into 2027, unpublished today.
    let body = json!({
        "sender": "130304100", "receiver": "bdh-scjg", "title": "expired food", "facts": "facts",
        "discovered_at_ms": ms("2026-12-30 10:00"),
        "materials": [{"kind": "transfer_letter", "name": "letter"}],
    });
    let mut haibin_records = haibin.records().await?;
    haibin_records
        .create(pb::CreateRecordRequest {
            kind: "transfer".into(),
            parties: vec!["bdh-scjg".into()],
            body_json: body.to_string(),
            at_ms: Some(ms("2026-12-30 11:00")),
            ..Default::default()
        })
        .await?;
    let t1 = |response: pb::ObligationsResponse| {
        response.obligations.into_iter().find(|o| o.rule == "T-1")
    };
    let ask = pb::ObligationsRequest {
        at_ms: Some(ms("2026-12-30 12:00")),
        org: String::new(),
        include_met: true,
    };
    let before =
        t1(haibin_records.obligations(ask.clone()).await?.into_inner()).expect("a T-1 obligation");
    assert!(
        before.provisional,
        "2027 is unpublished, so the T-1 deadline must be provisional: {before:?}"
    );

    // An invalid year is refused at the Justice Bureau's node, naming the bad date.
    let mut justice_records = justice.records().await?;
    let bad = justice_records
        .create(pb::CreateRecordRequest {
            kind: "calendar".into(),
            body_json:
                json!({"year": 2027, "off_days": ["2027-01-01"], "make_up_days": ["2027-01-04"]})
                    .to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad.message().contains("2027-01-04"), "{}", bad.message());

    // A department cannot publish the calendar.
    let by_market = market
        .records()
        .await?
        .create(pb::CreateRecordRequest {
            kind: "calendar".into(),
            body_json: json!({"year": 2027, "off_days": ["2027-01-01"]}).to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        by_market.message().starts_with("calendar:"),
        "{}",
        by_market.message()
    );

    // 2026 is official (embedded): a record may not change it, or the deadlines over its
    // National Day would move.
    let official = justice_records
        .create(pb::CreateRecordRequest {
            kind: "calendar".into(),
            body_json: json!({"year": 2026, "off_days": ["2026-01-01"], "make_up_days": [], "source": "test arrangement"}).to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        official.message().contains("already official"),
        "{}",
        official.message()
    );

    // A made-up 2027 arrangement (no real notice exists yet): 1 Jan off.
    justice_records
        .create(pb::CreateRecordRequest {
            kind: "calendar".into(),
            body_json: json!({"year": 2027, "off_days": ["2027-01-01"], "make_up_days": [], "source": "test arrangement"}).to_string(),
            ..Default::default()
        })
        .await?;

    let after = eventually(
        "Haibin's node to receive the 2027 calendar",
        Duration::from_secs(30),
        || {
            let mut client = haibin_records.clone();
            let ask = ask.clone();
            async move {
                let obligation = t1(client.obligations(ask).await?.into_inner());
                Ok(obligation.filter(|o| !o.provisional))
            }
        },
    )
    .await?;
    // 31 Dec, (1 Jan off), 4 Jan, 5 Jan: due at the end of 5 Jan 2027.
    assert_eq!(after.due_ms, ms("2027-01-06 00:00"));
    Ok(())
}
