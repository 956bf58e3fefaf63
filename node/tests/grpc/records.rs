//! Records of every kind through the `Records` service: created, read back, listed with each
//! filter, advanced by events, and their history attributed to the organisations that acted.

use std::collections::HashMap;

use linkage_proto::v1 as pb;
use serde_json::{Value, json};

use crate::support::*;

/// Every field the test sent is in the stored body with the same value.
fn assert_body_holds(record: &pb::Record, sent: &Value) {
    let stored: Value = serde_json::from_str(&record.body_json).expect("body_json is JSON");
    for (field, value) in sent.as_object().expect("bodies are objects") {
        assert_eq!(
            &stored[field], value,
            "field {field} of {}",
            record.body_json
        );
    }
}

fn kinds(rows: &[pb::RecordSummary]) -> Vec<String> {
    rows.iter()
        .map(|r| r.envelope.as_ref().unwrap().kind.clone())
        .collect()
}

fn ids(rows: &[pb::RecordSummary]) -> Vec<String> {
    rows.iter()
        .map(|r| r.envelope.as_ref().unwrap().id.clone())
        .collect()
}

#[tokio::test]
async fn every_kind_is_created_read_back_and_listed_by_kind() {
    let opening = HashMap::from([
        ("case", ("opened", "open")),
        ("transfer", ("sent", "awaiting_receipt")),
        ("complaint", ("registered", "registered")),
        ("shared_info", ("formed", "held")),
        ("urgent_notice", ("notified", "awaiting_dispatch")),
        ("consultation", ("convened", "convened")),
        ("assistance", ("requested", "requested")),
        ("dispute", ("opened", "negotiating")),
        ("liaison_directory", ("published", "published")),
        ("calendar", ("published", "published")),
    ]);
    let mut nodes: HashMap<&str, TestNode> = HashMap::new();
    for (kind, org, body) in one_of_each_kind() {
        if !nodes.contains_key(org) {
            nodes.insert(org, TestNode::start(org).await);
        }
        let node = &nodes[org];
        let created = node
            .create(create(kind, body.clone(), "2026-09-28 10:20"))
            .await;

        let envelope = created.envelope.clone().unwrap();
        assert_eq!(
            (envelope.kind.as_str(), envelope.owner.as_str()),
            (kind, org)
        );
        assert!(envelope.parties.contains(&org.to_owned()));
        assert_eq!(envelope.created_at_ms, bj("2026-09-28 10:20"));
        assert_body_holds(&created, &body);
        let (action, status) = opening[kind];
        assert_eq!(created.events.len(), 1, "{kind} opens with one event");
        assert_eq!(
            (
                created.events[0].action.as_str(),
                created.events[0].org.as_str()
            ),
            (action, org)
        );
        assert_eq!(created.status, status, "{kind}");

        assert_eq!(node.get(&envelope.id).await, created, "{kind} reads back");
        let listed = node
            .list(pb::ListRecordsRequest {
                kind: kind.into(),
                ..Default::default()
            })
            .await;
        assert_eq!(ids(&listed), vec![envelope.id.clone()], "{kind}");
        assert_eq!(listed[0].status, status);
        assert!(!listed[0].conflicted);
    }
}

#[tokio::test]
async fn list_filters_by_kind_party_status_and_creation_time() {
    let haibin = TestNode::start(HAIBIN).await;
    let early_case = haibin
        .create(create("case", case_body(), "2026-09-28 09:00"))
        .await;
    let transfer = haibin
        .create(create(
            "transfer",
            transfer_body(HAIBIN, MARKET),
            "2026-09-28 11:05",
        ))
        .await;
    let late_case = haibin
        .create(create("case", case_body(), "2026-09-30 16:00"))
        .await;
    let info = haibin
        .create(create(
            "shared_info",
            shared_info_body(3),
            "2026-10-09 08:00",
        ))
        .await;
    let id = |r: &pb::Record| r.envelope.as_ref().unwrap().id.clone();
    let list = |request: pb::ListRecordsRequest| haibin.list(request);

    let all = list(Default::default()).await;
    assert_eq!(
        ids(&all),
        vec![id(&early_case), id(&transfer), id(&late_case), id(&info)],
        "oldest first"
    );
    let cases = list(pb::ListRecordsRequest {
        kind: "case".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&cases), vec![id(&early_case), id(&late_case)]);
    let with_market = list(pb::ListRecordsRequest {
        party: MARKET.into(),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&with_market), vec![id(&transfer)]);
    let awaiting = list(pb::ListRecordsRequest {
        status: "awaiting_receipt".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&awaiting), vec![id(&transfer)]);
    let since = list(pb::ListRecordsRequest {
        since_ms: Some(bj("2026-09-29 00:00")),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&since), vec![id(&late_case), id(&info)]);
    let until = list(pb::ListRecordsRequest {
        until_ms: Some(bj("2026-09-28 11:05")),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&until), vec![id(&early_case)], "until is exclusive");
    let window = list(pb::ListRecordsRequest {
        kind: "case".into(),
        since_ms: Some(bj("2026-09-28 10:00")),
        until_ms: Some(bj("2026-10-01 00:00")),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&window), vec![id(&late_case)]);
    let first = list(pb::ListRecordsRequest {
        limit: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&first), vec![id(&early_case)]);
    let none = list(pb::ListRecordsRequest {
        party: DAIHE.into(),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty(), "{:?}", kinds(&none));
}

/// A misspelt status would list nothing and read as "no such records"; it is refused by name.
#[tokio::test]
async fn list_refuses_a_status_that_does_not_exist() {
    let haibin = TestNode::start(HAIBIN).await;
    let refused = haibin
        .client()
        .list(pb::ListRecordsRequest {
            status: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("an unknown status is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("\"nope\""),
        "{}",
        refused.message()
    );
    for known in ["closed", "incomplete"] {
        haibin
            .client()
            .list(pb::ListRecordsRequest {
                status: known.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("status {known} is a filter: {e}"));
    }
}

/// Event 1 then event 6: Haibin sends, market supervision receives and accepts (T-5).
#[tokio::test]
async fn events_are_appended_and_history_attributes_each_change_to_its_organisation() {
    let haibin = TestNode::start(HAIBIN).await;
    let market = TestNode::start(MARKET).await;
    let sent = haibin
        .create(pb::CreateRecordRequest {
            unit: HAIBIN_TEAM.into(),
            ..create(
                "transfer",
                transfer_body(HAIBIN, MARKET),
                "2026-09-28 11:05",
            )
        })
        .await;
    let id = sent.envelope.unwrap().id;
    assert_eq!(sent.events[0].unit, HAIBIN_TEAM, "the team did the work");

    deliver(&haibin, &market, &id);
    let received = market
        .append(pb::AppendEventRequest {
            note: "送达回证 receipt".into(),
            ..event(&id, "received", "2026-10-08 09:30")
        })
        .await;
    assert_eq!(received.status, "received");
    let accepted = market
        .append(event(&id, "accepted", "2026-10-08 09:31"))
        .await;
    assert_eq!(accepted.status, "accepted");
    let acts: Vec<(&str, &str)> = accepted
        .events
        .iter()
        .map(|e| (e.action.as_str(), e.org.as_str()))
        .collect();
    assert_eq!(
        acts,
        vec![("sent", HAIBIN), ("received", MARKET), ("accepted", MARKET)]
    );
    assert_eq!(accepted.events[1].note, "送达回证 receipt");

    deliver(&market, &haibin, &id);
    let at_haibin = haibin.get(&id).await;
    assert_eq!(at_haibin.status, "accepted");
    assert_eq!(at_haibin.events, accepted.events);

    let history = haibin.history(&id).await;
    let changes: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h.org.as_str(), h.message.as_str()))
        .collect();
    assert_eq!(
        changes,
        vec![
            (HAIBIN, format!("create transfer {id}").as_str()),
            (MARKET, "event received"),
            (MARKET, "event accepted"),
        ]
    );
    assert_ne!(history[0].actor, history[1].actor);
    assert_eq!(history[1].actor, history[2].actor, "one device, one actor");
}

/// Event 7: the Urban Management Bureau objects to Dongshan's transfer.
#[tokio::test]
async fn an_objection_to_a_transfer_opens_a_dispute_between_its_parties_t5_d1() {
    let dongshan = TestNode::start(DONGSHAN).await;
    let urban = TestNode::start(URBAN).await;
    let id = dongshan
        .create(create(
            "transfer",
            transfer_body(DONGSHAN, URBAN),
            "2026-10-09 10:00",
        ))
        .await
        .envelope
        .unwrap()
        .id;
    deliver(&dongshan, &urban, &id);
    urban
        .append(event(&id, "received", "2026-10-10 09:00"))
        .await;
    let objected = urban
        .append(pb::AppendEventRequest {
            reason: "该事项已下放乡镇 the matter was devolved".into(),
            ..event(&id, "objected", "2026-10-10 10:00")
        })
        .await;
    assert_eq!(objected.status, "objected");

    let disputes = urban
        .list(pb::ListRecordsRequest {
            kind: "dispute".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(disputes.len(), 1, "one objection, one dispute");
    let dispute = urban.get(&disputes[0].envelope.as_ref().unwrap().id).await;
    let envelope = dispute.envelope.as_ref().unwrap();
    assert_eq!(envelope.owner, URBAN);
    assert!(envelope.parties.contains(&DONGSHAN.to_owned()));
    let body: Value = serde_json::from_str(&dispute.body_json).unwrap();
    assert_eq!(body["applicant"], URBAN);
    assert_eq!(body["respondent"], DONGSHAN);
    assert_eq!(body["subject"], "transfer");
    assert_eq!(body["origin_record"], json!(id));
    assert_eq!(body["grounds"], "该事项已下放乡镇 the matter was devolved");
    assert_eq!(dispute.status, "negotiating");
    assert_eq!(dispute.events[0].at_ms, bj("2026-10-10 10:00"));
}

/// Event 7 continued, up the whole ladder: D-1 negotiation fails (minuted), D-2 coordination
/// brings in the Justice Bureau, D-3 its proposal brings in the government, which decides.
#[tokio::test]
async fn coordination_applied_brings_the_justice_bureau_into_the_parties_d2() {
    let dongshan = TestNode::start(DONGSHAN).await;
    let urban = TestNode::start(URBAN).await;
    let justice = TestNode::start(JUSTICE).await;
    let government = TestNode::start(GOVERNMENT).await;
    let id = urban
        .create(create(
            "dispute",
            dispute_body(URBAN, DONGSHAN),
            "2026-10-10 10:00",
        ))
        .await
        .envelope
        .unwrap()
        .id;
    deliver(&urban, &dongshan, &id);
    let failed = dongshan
        .append(pb::AppendEventRequest {
            attachments: vec!["协商纪要 negotiation minutes 2026-10-12.pdf".into()],
            ..event(&id, "negotiation_failed", "2026-10-12 16:00")
        })
        .await;
    assert_eq!(failed.status, "negotiating");
    assert!(
        !failed
            .envelope
            .as_ref()
            .unwrap()
            .parties
            .contains(&JUSTICE.to_owned())
    );

    let applied = dongshan
        .append(event(&id, "coordination_applied", "2026-10-13 09:00"))
        .await;
    assert_eq!(applied.status, "coordinating");
    let parties = &applied.envelope.as_ref().unwrap().parties;
    assert!(parties.contains(&JUSTICE.to_owned()), "{parties:?}");
    assert!(!parties.contains(&GOVERNMENT.to_owned()), "{parties:?}");
    let listed = justice_party_rows(&dongshan).await;
    assert_eq!(listed, vec![id.clone()]);

    deliver(&dongshan, &justice, &id);
    justice
        .append(pb::AppendEventRequest {
            note: "协调未果 coordination failed".into(),
            ..event(&id, "coordination_failed", "2026-10-20 10:00")
        })
        .await;
    let proposed = justice
        .append(event(&id, "proposal_submitted", "2026-10-21 10:00"))
        .await;
    assert_eq!(proposed.status, "awaiting_decision");
    assert!(
        proposed
            .envelope
            .as_ref()
            .unwrap()
            .parties
            .contains(&GOVERNMENT.to_owned())
    );

    deliver(&justice, &government, &id);
    let decided = government
        .append(event(&id, "government_decided", "2026-10-28 10:00"))
        .await;
    assert_eq!(decided.status, "decided");
}

async fn justice_party_rows(node: &TestNode) -> Vec<String> {
    ids(&node
        .list(pb::ListRecordsRequest {
            party: JUSTICE.into(),
            ..Default::default()
        })
        .await)
}

/// Scenario event 8: two devices of the Emergency Management Bureau, offline, one dispatching
/// and one refusing. Both events are kept and the record says it is in conflict.
#[tokio::test]
async fn contradictory_events_from_two_devices_surface_as_status_conflict() {
    let niutouya = TestNode::start(NIUTOUYA).await;
    let device_a = TestNode::start(EMERGENCY).await;
    let device_b = TestNode::start(EMERGENCY).await;
    let id = niutouya
        .create(create(
            "urgent_notice",
            urgent_notice_body(NIUTOUYA, EMERGENCY),
            "2026-09-29 09:00",
        ))
        .await
        .envelope
        .unwrap()
        .id;
    deliver(&niutouya, &device_a, &id);
    deliver(&niutouya, &device_b, &id);
    assert_eq!(
        device_a
            .append(event(&id, "dispatched", "2026-09-29 14:05"))
            .await
            .status,
        "dispatched"
    );
    assert_eq!(
        device_b
            .append(pb::AppendEventRequest {
                reason: "无人值守 nobody on duty".into(),
                ..event(&id, "refused", "2026-09-29 14:06")
            })
            .await
            .status,
        "refused"
    );

    deliver(&device_a, &device_b, &id);
    let merged = device_b.get(&id).await;
    assert_eq!(merged.status, "conflict");
    let mut actions: Vec<&str> = merged.events.iter().map(|e| e.action.as_str()).collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        vec!["dispatched", "notified", "refused"],
        "both kept"
    );
    assert_eq!(merged.conflicts.len(), 1, "{:?}", merged.conflicts);
    let conflict = &merged.conflicts[0];
    assert_eq!(conflict.path, "events");
    assert!(conflict.values[0].starts_with("dispatched by bdh-yjgl"));
    assert!(conflict.values[1].starts_with("refused by bdh-yjgl"));

    let conflicted = device_b
        .list(pb::ListRecordsRequest {
            status: "conflict".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(&conflicted), vec![id.clone()]);
    assert!(conflicted[0].conflicted);
}

/// Two devices of market supervision answer one transfer differently: accepted on one,
/// objected on the other.
#[tokio::test]
async fn a_transfer_both_accepted_and_objected_is_in_conflict_t5() {
    let haibin = TestNode::start(HAIBIN).await;
    let device_a = TestNode::start(MARKET).await;
    let device_b = TestNode::start(MARKET).await;
    let id = haibin
        .create(create(
            "transfer",
            transfer_body(HAIBIN, MARKET),
            "2026-09-28 11:05",
        ))
        .await
        .envelope
        .unwrap()
        .id;
    deliver(&haibin, &device_a, &id);
    device_a
        .append(event(&id, "received", "2026-10-08 09:30"))
        .await;
    deliver(&device_a, &device_b, &id);
    device_a
        .append(event(&id, "accepted", "2026-10-08 09:40"))
        .await;
    device_b
        .append(pb::AppendEventRequest {
            reason: "not food safety".into(),
            ..event(&id, "objected", "2026-10-08 09:41")
        })
        .await;

    deliver(&device_b, &haibin, &id);
    deliver(&device_a, &haibin, &id);
    let merged = haibin.get(&id).await;
    assert_eq!(merged.status, "conflict");
    assert!(
        merged.conflicts[0].values[2].contains("accepted and objected"),
        "{:?}",
        merged.conflicts
    );
}

/// Scenario event 8, fields: both officers' assessments are kept, side by side.
#[tokio::test]
async fn concurrent_edits_of_one_field_are_both_kept_as_a_conflict() {
    let niutouya = TestNode::start(NIUTOUYA).await;
    let device_a = TestNode::start(EMERGENCY).await;
    let device_b = TestNode::start(EMERGENCY).await;
    let id = niutouya
        .create(create(
            "urgent_notice",
            urgent_notice_body(NIUTOUYA, EMERGENCY),
            "2026-09-29 09:00",
        ))
        .await
        .envelope
        .unwrap()
        .id;
    deliver(&niutouya, &device_a, &id);
    deliver(&niutouya, &device_b, &id);
    for (device, text) in [(&device_a, "valves shut"), (&device_b, "cylinders removed")] {
        device
            .client()
            .edit_body(pb::EditBodyRequest {
                id: id.clone(),
                patch_json: json!({ "assessment": text }).to_string(),
            })
            .await
            .expect("a party edits the body");
    }
    device_b
        .client()
        .edit_body(pb::EditBodyRequest {
            id: id.clone(),
            patch_json: json!({ "measures": "area sealed" }).to_string(),
        })
        .await
        .expect("a party edits the body");

    deliver(&device_a, &device_b, &id);
    let merged = device_b.get(&id).await;
    let conflict = merged
        .conflicts
        .iter()
        .find(|c| c.path == "body.assessment")
        .unwrap_or_else(|| panic!("no conflict on the assessment: {:?}", merged.conflicts));
    let mut values = conflict.values.clone();
    values.sort();
    assert_eq!(values, vec!["cylinders removed", "valves shut"]);
    let body: Value = serde_json::from_str(&merged.body_json).unwrap();
    assert_eq!(body["measures"], "area sealed", "no field is lost");
    let listed = device_b.list(Default::default()).await;
    assert!(listed[0].conflicted);

    // The summary's flag follows later edits: an edit of another field leaves the conflict
    // standing (only the fields a patch names are written), writing the field resolves it,
    // and edits after that keep the record clean (the replica skips the field walk for such
    // edits; see `replica::field_conflicted`).
    let edit = |patch: Value| {
        let mut client = device_b.client();
        let id = id.clone();
        async move {
            client
                .edit_body(pb::EditBodyRequest {
                    id,
                    patch_json: patch.to_string(),
                })
                .await
                .expect("a party edits the body");
        }
    };
    edit(json!({ "measures": "area sealed, valves shut" })).await;
    assert!(device_b.list(Default::default()).await[0].conflicted);
    let still = device_b.get(&id).await;
    assert!(
        still.conflicts.iter().any(|c| c.path == "body.assessment"),
        "editing the measures settled the assessment: {:?}",
        still.conflicts
    );
    edit(json!({ "assessment": "valves shut, cylinders removed" })).await;
    assert!(!device_b.list(Default::default()).await[0].conflicted);
    edit(json!({ "measures": "area reopened" })).await;
    assert!(!device_b.list(Default::default()).await[0].conflicted);

    // A concurrent edit arriving later is still seen, though the record was clean.
    device_a
        .client()
        .edit_body(pb::EditBodyRequest {
            id: id.clone(),
            patch_json: json!({ "measures": "area patrolled" }).to_string(),
        })
        .await
        .expect("a party edits the body");
    deliver(&device_a, &device_b, &id);
    assert!(device_b.list(Default::default()).await[0].conflicted);
}

/// A reply goes out in several small writes (headers, message, trailers). Without
/// TCP_NODELAY on the accepted socket, Nagle's algorithm holds the later ones until the
/// client's delayed ACK, about 40 ms on Linux: every call took that long.
#[tokio::test]
async fn a_call_is_answered_without_waiting_for_a_delayed_ack() {
    let haibin = TestNode::start(HAIBIN).await;
    let id = haibin
        .create(create("case", case_body(), "2026-09-28 09:00"))
        .await
        .envelope
        .unwrap()
        .id;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        haibin.get(&id).await;
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < std::time::Duration::from_millis(400),
        "20 reads of a cached record took {elapsed:?}"
    );
}

/// The next change on a watch stream, failing the test if none comes within five seconds.
async fn next_change(
    stream: &mut tonic::Streaming<pb::RecordChange>,
) -> (u64, String, Vec<String>) {
    let change = tokio::time::timeout(std::time::Duration::from_secs(5), stream.message())
        .await
        .expect("a change arrives within five seconds")
        .expect("the stream does not fail")
        .expect("the stream stays open");
    let summary = change.record.expect("a change carries its record");
    (change.position, summary.envelope.unwrap().id, summary.heads)
}

#[tokio::test]
async fn watch_sends_what_changed_then_follows_and_resumes_after_a_position() {
    let node = TestNode::start(HAIBIN).await;
    let first = node
        .create(create(
            "shared_info",
            shared_info_body(1),
            "2026-09-28 10:00",
        ))
        .await;
    let second = node
        .create(create(
            "shared_info",
            shared_info_body(2),
            "2026-09-28 10:05",
        ))
        .await;
    let first_id = first.envelope.unwrap().id;
    let second_id = second.envelope.unwrap().id;

    // Catching up: every record, in change order.
    let mut stream = node
        .client()
        .watch(pb::WatchRequest { after: 0 })
        .await
        .unwrap()
        .into_inner();
    let (p1, id1, _) = next_change(&mut stream).await;
    let (p2, id2, _) = next_change(&mut stream).await;
    assert_eq!(
        (id1.as_str(), id2.as_str()),
        (first_id.as_str(), second_id.as_str())
    );
    assert!(p1 < p2);

    // Following: an edit made after the watch began arrives with the record's new heads.
    let edited = node
        .client()
        .edit_body(pb::EditBodyRequest {
            id: first_id.clone(),
            patch_json: json!({"title": "updated"}).to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let (p3, id3, heads) = next_change(&mut stream).await;
    assert_eq!(id3, first_id);
    assert!(p3 > p2);
    let mut expected = edited.heads;
    expected.sort();
    assert_eq!(heads, expected);

    // Resuming after the second record's position: only the edited record is sent again.
    let mut resumed = node
        .client()
        .watch(pb::WatchRequest { after: p2 })
        .await
        .unwrap()
        .into_inner();
    let (p, id, _) = next_change(&mut resumed).await;
    assert_eq!((p, id), (p3, first_id));
    let nothing_more =
        tokio::time::timeout(std::time::Duration::from_millis(200), resumed.message()).await;
    assert!(nothing_more.is_err(), "nothing changed after {p3}");
}

#[tokio::test]
async fn watch_refuses_a_position_past_the_end_of_the_change_log_naming_the_end() {
    let node = TestNode::start(HAIBIN).await;
    node.create(create(
        "shared_info",
        shared_info_body(1),
        "2026-09-28 10:00",
    ))
    .await;
    let end = node.last_seq().await;
    let refused = node
        .client()
        .watch(pb::WatchRequest { after: end + 2 })
        .await
        .expect_err("a position from elsewhere is refused");
    assert_eq!(refused.code(), tonic::Code::OutOfRange);
    assert!(
        refused.message().contains(&format!("({end})")),
        "{}",
        refused.message()
    );
    // The end itself is a valid place to resume from.
    node.client()
        .watch(pb::WatchRequest { after: end })
        .await
        .expect("resuming at the end is accepted");
}

/// `NodeInfo` counts every record the node holds, its own and those it received, as they
/// arrive.
#[tokio::test]
async fn node_info_counts_the_records_held() {
    let haibin = TestNode::start(HAIBIN).await;
    let market = TestNode::start(MARKET).await;
    let records = |node: &TestNode| {
        let mut client = node.client();
        async move {
            client
                .node_info(pb::NodeInfoRequest {})
                .await
                .expect("node info answers")
                .into_inner()
                .records
        }
    };
    assert_eq!(records(&market).await, 0);

    let mut sent = Vec::new();
    for at in ["2026-09-28 11:05", "2026-09-28 11:06"] {
        let record = haibin
            .create(create("transfer", transfer_body(HAIBIN, MARKET), at))
            .await;
        sent.push(record.envelope.unwrap().id);
    }
    market
        .create(create("case", case_body(), "2026-09-28 11:07"))
        .await;
    assert_eq!(records(&market).await, 1);

    deliver(&haibin, &market, &sent[0]);
    assert_eq!(records(&market).await, 2, "a received record is counted");
    deliver(&haibin, &market, &sent[0]);
    assert_eq!(records(&market).await, 2, "a record received twice is one");
    deliver(&haibin, &market, &sent[1]);
    assert_eq!(records(&haibin).await, 2);
    assert_eq!(records(&market).await, 3);
}
