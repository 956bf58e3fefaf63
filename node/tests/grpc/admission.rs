//! `workflow::admit_change`: what the hub checks before it takes a change a node sent. The
//! records start as real ones written through a node's gRPC service; the changes a
//! misbehaving or forged node might send are made to copies of them.

use linkage_node::org::Directory;
use linkage_node::record::{Action, Body, Record, WorkflowEvent};
use linkage_node::workflow::{
    RuleViolation, admit_body_fields_put, admit_change, admit_relayed_change,
};

use crate::support::*;

/// A record `org`'s node created through its gRPC service, as the node stored it.
async fn created_by(org: &str, kind: &str, body: serde_json::Value, at: &str) -> Record {
    let node = TestNode::start(org).await;
    let created = node.create(create(kind, body, at)).await;
    node.office
        .replica()
        .record(&created.envelope.unwrap().id)
        .expect("the node holds what it created")
}

/// Event 1's transfer as Haibin's node stored it.
async fn sent_transfer() -> Record {
    let body = transfer_body(HAIBIN, MARKET);
    created_by(HAIBIN, "transfer", body, "2026-09-28 11:05").await
}

/// A complaint the Market Supervision Bureau received, naming its complainant, handled by
/// Daihe Town, as the bureau's node stored it.
async fn received_complaint() -> Record {
    let body = complaint_body(MARKET, DAIHE);
    created_by(MARKET, "complaint", body, "2026-09-28 15:00").await
}

fn with_event(record: &Record, action: Action, at: &str, org: &str) -> Record {
    let mut after = record.clone();
    after.events.push(WorkflowEvent {
        reason: Some("stated".into()),
        ..WorkflowEvent::new(action, bj(at), org)
    });
    after
}

fn refused(result: Result<(), RuleViolation>, rule: &str) -> String {
    let violation = result.expect_err("the change should be refused");
    assert_eq!(violation.rule, rule, "{violation}");
    violation.message
}

#[tokio::test]
async fn admission_takes_a_new_record_only_from_the_organisation_that_may_create_it() {
    let dir = Directory::beidaihe();
    let transfer = sent_transfer().await;
    admit_change(&dir, HAIBIN, None, &transfer).expect("Haibin sent its own transfer");
    refused(admit_change(&dir, MARKET, None, &transfer), "party");

    let mut forged = transfer.clone();
    if let Body::Transfer(t) = &mut forged.body {
        t.sender = HAIBIN_TEAM.into();
    }
    refused(admit_change(&dir, HAIBIN, None, &forged), "T-4");

    let mut mislabelled = transfer.clone();
    mislabelled.envelope.kind = "case".into();
    refused(admit_change(&dir, HAIBIN, None, &mislabelled), "schema");
    let mut unseen = transfer.clone();
    unseen.envelope.parties.retain(|p| p != MARKET);
    let message = refused(admit_change(&dir, HAIBIN, None, &unseen), "party");
    assert!(message.contains("receiver"), "{message}");
    let mut ownerless = transfer;
    ownerless.envelope.parties.retain(|p| p != HAIBIN);
    refused(admit_change(&dir, HAIBIN, None, &ownerless), "party");
}

#[tokio::test]
async fn t5_admission_lets_the_receivers_acknowledgement_and_acceptance_through() {
    let dir = Directory::beidaihe();
    let before = sent_transfer().await;
    let received = with_event(&before, Action::Received, "2026-10-08 09:30", MARKET);
    let accepted = with_event(&received, Action::Accepted, "2026-10-08 09:31", MARKET);
    admit_change(&dir, MARKET, Some(&before), &accepted).expect("the receiver's own acts");
}

#[tokio::test]
async fn t5_admission_checks_new_events_in_the_order_they_were_appended() {
    let dir = Directory::beidaihe();
    let before = sent_transfer().await;
    // Receipt recorded first, acceptance after it with an earlier stated time: the order of
    // the acts is the order they were appended, so this is a valid receipt then acceptance.
    let received_then_accepted = with_event(
        &with_event(&before, Action::Received, "2026-10-08 09:31", MARKET),
        Action::Accepted,
        "2026-10-08 09:30",
        MARKET,
    );
    admit_change(&dir, MARKET, Some(&before), &received_then_accepted)
        .expect("acts are checked in the order they were recorded");
    // Acceptance appended before any receipt is refused, whatever times it states.
    let accepted_first = with_event(
        &with_event(&before, Action::Accepted, "2026-10-08 09:30", MARKET),
        Action::Received,
        "2026-10-08 09:29",
        MARKET,
    );
    let message = refused(
        admit_change(&dir, MARKET, Some(&before), &accepted_first),
        "T-5",
    );
    assert!(message.contains("送达回证"), "{message}");
    let by_sender = with_event(&before, Action::Accepted, "2026-10-08 09:30", HAIBIN);
    refused(admit_change(&dir, HAIBIN, Some(&before), &by_sender), "T-5");
}

#[tokio::test]
async fn admission_refuses_events_in_another_organisations_name() {
    let dir = Directory::beidaihe();
    let before = sent_transfer().await;
    let forged = with_event(&before, Action::Received, "2026-10-08 09:30", MARKET);
    refused(admit_change(&dir, HAIBIN, Some(&before), &forged), "party");
}

/// While the hub is refilled from the nodes, Haibin's node may hand over the receiver's acts
/// it holds, and a whole record Haibin only received; each act is still checked as its
/// author's, and an act of an organisation not named as an author stays refused.
#[tokio::test]
async fn a_relayed_change_is_checked_as_its_authors_act() {
    let dir = Directory::beidaihe();
    let before = sent_transfer().await;
    let received = with_event(&before, Action::Received, "2026-10-08 09:30", MARKET);
    let market = [MARKET.to_owned()];
    admit_relayed_change(&dir, HAIBIN, &market, Some(&before), &received)
        .expect("Haibin hands over the receiver's receipt");
    admit_relayed_change(&dir, MARKET, &[HAIBIN.to_owned()], None, &received)
        .expect("the receiver hands over the whole record, created by Haibin");
    refused(
        admit_relayed_change(&dir, HAIBIN, &[], Some(&before), &received),
        "party",
    );

    // The author's own rules still hold: the receiver accepting before any receipt is T-5.
    let accepted_first = with_event(&before, Action::Accepted, "2026-10-08 09:30", MARKET);
    refused(
        admit_relayed_change(&dir, HAIBIN, &market, Some(&before), &accepted_first),
        "T-5",
    );
}

#[tokio::test]
async fn admission_refuses_a_change_from_an_organisation_not_a_party() {
    let dir = Directory::beidaihe();
    let before = sent_transfer().await;
    let after = with_event(&before, Action::Updated, "2026-09-28 12:00", DAIHE);
    refused(admit_change(&dir, DAIHE, Some(&before), &after), "party");
}

#[tokio::test]
async fn admission_refuses_a_rewritten_envelope() {
    let dir = Directory::beidaihe();
    let before = sent_transfer().await;
    let mut after = before.clone();
    after.envelope.owner = MARKET.into();
    let message = refused(admit_change(&dir, MARKET, Some(&before), &after), "party");
    assert!(message.contains("envelope"), "{message}");
}

#[tokio::test]
async fn admission_refuses_a_removed_party_and_a_unit_as_party() {
    let dir = Directory::beidaihe();
    let before = sent_transfer().await;
    let mut dropped = before.clone();
    dropped.envelope.parties.retain(|p| p != HAIBIN);
    let message = refused(admit_change(&dir, MARKET, Some(&before), &dropped), "party");
    assert!(message.contains("only ever added"), "{message}");

    let mut unit = before.clone();
    unit.envelope.parties.push(URBAN_SQUAD.into());
    refused(
        admit_change(&dir, MARKET, Some(&before), &unit),
        "directory",
    );
    let mut justice = before.clone();
    justice.envelope.parties.push(JUSTICE.into());
    admit_change(&dir, MARKET, Some(&before), &justice).expect("parties may be added");
}

#[tokio::test]
async fn admission_refuses_a_body_edit_its_owner_could_not_have_created_t3() {
    let dir = Directory::beidaihe();
    let before = sent_transfer().await;
    let mut after = before.clone();
    if let Body::Transfer(t) = &mut after.body {
        t.materials.clear();
    }
    refused(admit_change(&dir, MARKET, Some(&before), &after), "T-3");
}

#[tokio::test]
async fn admission_refuses_rewritten_or_removed_events() {
    let dir = Directory::beidaihe();
    let received = with_event(
        &sent_transfer().await,
        Action::Received,
        "2026-10-08 09:30",
        MARKET,
    );
    let mut rewritten = received.clone();
    rewritten.events[1].note = "never received".into();
    let message = refused(
        admit_change(&dir, MARKET, Some(&received), &rewritten),
        "workflow",
    );
    assert!(message.contains("append-only"), "{message}");
    let mut removed = received.clone();
    removed.events.pop();
    refused(
        admit_change(&dir, MARKET, Some(&received), &removed),
        "workflow",
    );
}

/// Seed 783: one office's two devices, apart, one sharing an item and the other extending
/// its sharing. The office refuses an extension after sharing (`s2_sharing_is_not_extended_once_shared`);
/// the hub, which cannot tell the two apart, admits it but still checks what it states.
#[tokio::test]
async fn admission_takes_an_extension_made_concurrently_with_sharing() {
    let dir = Directory::beidaihe();
    let dongshan = TestNode::start(DONGSHAN).await;
    let created = dongshan
        .create(create(
            "shared_info",
            shared_info_body(3),
            "2026-09-30 14:00",
        ))
        .await;
    let formed = dongshan
        .office
        .replica()
        .record(&created.envelope.unwrap().id)
        .expect("the node holds what it created");
    let shared = with_event(&formed, Action::Shared, "2026-09-30 15:00", DONGSHAN);

    let mut extended = shared.clone();
    extended.events.push(WorkflowEvent {
        reason: Some("materials still being sealed".into()),
        extension_wd: Some(2),
        ..WorkflowEvent::new(Action::Extended, bj("2026-09-30 14:30"), DONGSHAN)
    });
    admit_change(&dir, DONGSHAN, Some(&shared), &extended)
        .expect("an extension made before its device saw the sharing");

    let mut unbounded = shared.clone();
    unbounded.events.push(WorkflowEvent {
        reason: Some("materials still being sealed".into()),
        extension_wd: Some(40),
        ..WorkflowEvent::new(Action::Extended, bj("2026-09-30 14:30"), DONGSHAN)
    });
    let message = refused(
        admit_change(&dir, DONGSHAN, Some(&shared), &unbounded),
        "S-2",
    );
    assert!(message.contains("at most 15"), "{message}");
    let by_other = with_event(&shared, Action::Extended, "2026-09-30 14:30", MARKET);
    refused(
        admit_change(&dir, MARKET, Some(&shared), &by_other),
        "party",
    );
}

/// The hub admits a new record through `validate_create` too: a calendar record that would
/// change an official year is refused there, whichever node sends it.
#[tokio::test]
async fn calendar_admission_refuses_a_record_changing_an_official_year() {
    let dir = Directory::beidaihe();
    let justice = TestNode::start(JUSTICE).await;
    let created = justice
        .create(create("calendar", calendar_body(2027), "2026-12-01 09:00"))
        .await;
    let published = justice
        .office
        .replica()
        .record(&created.envelope.unwrap().id)
        .expect("the node holds what it created");
    admit_change(&dir, JUSTICE, None, &published).expect("a provisional year is publishable");

    let mut official_year = published.clone();
    if let Body::Calendar(c) = &mut official_year.body {
        c.year = 2026;
        c.off_days = vec!["2026-01-01".into()];
    }
    let message = refused(
        admit_change(&dir, JUSTICE, None, &official_year),
        "calendar",
    );
    assert!(message.contains("already official"), "{message}");

    // An edit of the published record into an official year is refused the same way.
    let message = refused(
        admit_change(&dir, JUSTICE, Some(&published), &official_year),
        "calendar",
    );
    assert!(message.contains("2026"), "{message}");
}

#[tokio::test]
async fn schema_admission_refuses_an_impossible_event_time() {
    let dir = Directory::beidaihe();
    let transfer = sent_transfer().await;
    let mut in_1970 = transfer.clone();
    in_1970
        .events
        .push(WorkflowEvent::new(Action::Received, 1, MARKET));
    let message = refused(
        admit_change(&dir, MARKET, Some(&transfer), &in_1970),
        "schema",
    );
    assert!(message.contains("at_ms of the received event"), "{message}");
}

/// Two devices of the department, apart, each announce an extension within the bound; merged
/// they exceed it. The hub admits both (each was valid where it was made) and the obligations
/// count no more than 15 WD; one longer than the bound on its own is refused everywhere.
#[tokio::test]
async fn a3_admission_takes_concurrent_extensions_beyond_the_sum() {
    let dir = Directory::beidaihe();
    let daihe = TestNode::start(DAIHE).await;
    let created = daihe
        .create(create(
            "assistance",
            assistance_body(DAIHE, ECOLOGY),
            "2026-09-29 14:30",
        ))
        .await;
    let requested = daihe
        .office
        .replica()
        .record(&created.envelope.unwrap().id)
        .expect("the node holds what it created");
    let announced = |record: &Record, at: &str, wd: u32| {
        let mut after = record.clone();
        after.events.push(WorkflowEvent {
            reason: Some("长期鉴定 long appraisal".into()),
            extension_wd: Some(wd),
            ..WorkflowEvent::new(Action::ExtensionAnnounced, bj(at), ECOLOGY)
        });
        after
    };
    let first = announced(&requested, "2026-09-30 10:00", 10);
    admit_change(&dir, ECOLOGY, Some(&requested), &first).expect("one device's extension");
    let both = announced(&first, "2026-09-30 10:05", 10);
    admit_change(&dir, ECOLOGY, Some(&first), &both)
        .expect("the other device's, made before it saw the first");

    let unbounded = announced(&requested, "2026-09-30 10:00", 200);
    let message = refused(
        admit_change(&dir, ECOLOGY, Some(&requested), &unbounded),
        "A-3",
    );
    assert!(message.contains("at most 15"), "{message}");
}

/// C-5 at the hub: a node that widens a complaint's parties without its office's check (a
/// forged or old node) is refused, so the complaint never travels to that party's node. An
/// anonymous complaint may be widened.
#[tokio::test]
async fn c5_admission_refuses_a_party_that_does_not_handle_a_named_complainant() {
    let dir = Directory::beidaihe();
    let before = received_complaint().await;

    let mut widened = before.clone();
    widened.envelope.parties.push(HAIBIN.into());
    let message = refused(admit_change(&dir, MARKET, Some(&before), &widened), "C-5");
    assert!(message.contains(HAIBIN), "{message}");
    refused(admit_change(&dir, MARKET, None, &widened), "C-5");

    let mut anonymous = before.clone();
    if let Body::Complaint(complaint) = &mut anonymous.body {
        complaint.complainant = None;
    }
    let mut widened = anonymous.clone();
    widened.envelope.parties.push(HAIBIN.into());
    admit_change(&dir, MARKET, None, &widened).expect("an anonymous complaint may be shared");
}

/// The hub checks changes that only put values into a record's body fields without the record
/// before them (`workflow::admit_body_fields_put`): for every organisation and every such edit,
/// valid or not, its verdict is the one the comparison with the whole record gives.
#[tokio::test]
async fn a_change_to_body_fields_gets_the_verdict_of_the_whole_record() {
    let dir = Directory::beidaihe();
    let transfer = sent_transfer().await;
    let edit = |record: &Record, f: &dyn Fn(&mut linkage_node::record::TransferBody)| {
        let mut after = record.clone();
        if let Body::Transfer(t) = &mut after.body {
            f(t);
        }
        after
    };
    let edits: Vec<(&str, Record)> = vec![
        ("nothing changed", transfer.clone()),
        (
            "a new title",
            edit(&transfer, &|t| t.title = "expired milk".into()),
        ),
        ("urgent", edit(&transfer, &|t| t.urgent = true)),
        (
            "a unit as sender (T-4)",
            edit(&transfer, &|t| t.sender = HAIBIN_TEAM.into()),
        ),
        (
            "an outsider as receiver",
            edit(&transfer, &|t| t.receiver = DAIHE.into()),
        ),
        ("no facts", edit(&transfer, &|t| t.facts.clear())),
        (
            "discovered in the future",
            edit(&transfer, &|t| t.discovered_at_ms = i64::MAX / 2),
        ),
    ];
    let verdict = |result: Result<(), RuleViolation>| result.map_err(|v| v.rule);
    let mut refusals = 0;
    for org in [HAIBIN, MARKET, DAIHE, HAIBIN_TEAM] {
        for (what, after) in &edits {
            let whole = verdict(admit_change(&dir, org, Some(&transfer), after));
            let puts = verdict(admit_body_fields_put(&dir, org, after));
            assert_eq!(puts, whole, "{org}, {what}");
            refusals += usize::from(whole.is_err());
        }
    }
    // Both outcomes are exercised: the parties' valid edits pass, the rest are refused, a
    // body its owner could not have created among them.
    assert!(refusals > 0 && refusals < 4 * edits.len(), "{refusals}");
    assert_eq!(
        verdict(admit_body_fields_put(&dir, HAIBIN, &edits[1].1)),
        Ok(())
    );
    assert_eq!(
        verdict(admit_body_fields_put(&dir, HAIBIN, &edits[3].1)),
        Err("T-4")
    );

    let complaint = received_complaint().await;
    let mut rehandled = complaint.clone();
    if let Body::Complaint(c) = &mut rehandled.body {
        c.handler = HAIBIN.into();
    }
    for org in [MARKET, DAIHE, HAIBIN] {
        for after in [&complaint, &rehandled] {
            assert_eq!(
                verdict(admit_body_fields_put(&dir, org, after)),
                verdict(admit_change(&dir, org, Some(&complaint), after)),
                "{org}"
            );
        }
    }
}

/// An act appended under the id of an act the record already has would not count as new, so
/// it would go unchecked: Haibin recording the bureau's acceptance of its own transfer under
/// the id of its sending. Refused, as is the same act under an id of its own.
#[tokio::test]
async fn admission_refuses_an_event_reusing_another_events_id() {
    let dir = Directory::beidaihe();
    let before = sent_transfer().await;
    let mut reused = WorkflowEvent::new(Action::Accepted, bj("2026-10-08 09:30"), MARKET);
    reused.id = before.events[0].id.clone();
    let mut after = before.clone();
    after.events.push(reused);
    let message = refused(
        admit_change(&dir, HAIBIN, Some(&before), &after),
        "workflow",
    );
    assert!(message.contains("twice"), "{message}");
    let own_id = with_event(&before, Action::Accepted, "2026-10-08 09:30", MARKET);
    refused(admit_change(&dir, HAIBIN, Some(&before), &own_id), "party");
}
