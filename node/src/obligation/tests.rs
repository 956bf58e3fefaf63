//! Tests of the obligation rules, named after the rule IDs of `mission.md` they check, and
//! the National Day 2026 scenario's deadlines.

use std::sync::{Arc, LazyLock};

use super::*;
use crate::calendar::{PeriodPolicy, format_instant, parse_instant};
use crate::record::{
    Action, AssistanceBody, AssistanceKind, CalendarBody, ComplaintBody, DisputeBody, Envelope,
    Material, MaterialKind, SCHEMA_VERSION, SharedInfoBody, TransferBody, UrgentNoticeBody,
    WorkflowEvent,
};
use ObligationState::{Met, MetLate, Open, Overdue, Superseded};

const HAIBIN: &str = "130304100";
const DAIHE: &str = "130304101";
const NIUTOUYA: &str = "130304103";
const DONGSHAN: &str = "130304002";
const MARKET: &str = "bdh-scjg";
const URBAN: &str = "bdh-cgzf";
const ECOLOGY: &str = "bdh-sthj";
const EMERGENCY: &str = "bdh-yjgl";
const JUSTICE: &str = "bdh-sfj";
const GOVERNMENT: &str = "bdh-gov";

static DIRECTORY: LazyLock<Directory> = LazyLock::new(Directory::beidaihe);

fn ms(text: &str) -> i64 {
    parse_instant(text).unwrap().timestamp_millis()
}

fn event(action: Action, at: &str, org: &str) -> WorkflowEvent {
    WorkflowEvent::new(action, ms(at), org)
}

fn with_reason(mut event: WorkflowEvent, reason: &str) -> WorkflowEvent {
    event.reason = Some(reason.to_owned());
    event
}

fn extension(action: Action, at: &str, org: &str, days: u32) -> WorkflowEvent {
    let mut event = with_reason(event(action, at, org), "collation takes time");
    event.extension_wd = Some(days);
    event
}

fn record(owner: &str, other: &str, body: Body, events: Vec<WorkflowEvent>) -> Record {
    let kind = body.kind();
    Record {
        envelope: Envelope {
            id: kind.new_record_id(),
            kind: kind.as_str().to_owned(),
            owner: owner.to_owned(),
            parties: vec![owner.to_owned(), other.to_owned()],
            created_at_ms: events.iter().map(|e| e.at_ms).min().unwrap_or(0),
            schema_version: SCHEMA_VERSION,
        },
        body,
        events,
    }
}

fn obligations_at(record: &Record, at: &str) -> Vec<Obligation> {
    let calendar = Calendar::official();
    let periods = RulePeriods::default();
    let policies = PeriodPolicies::default();
    obligations(record, &DIRECTORY, &calendar, &periods, &policies, ms(at))
}

/// The one obligation under `rule` whose duty mentions `duty`.
fn find(obligations: &[Obligation], rule: &str, duty: &str) -> Obligation {
    let found: Vec<&Obligation> = obligations
        .iter()
        .filter(|o| o.rule == rule && o.duty.contains(duty))
        .collect();
    assert_eq!(found.len(), 1, "{rule} {duty:?} in {obligations:#?}");
    found[0].clone()
}

fn due_text(obligation: &Obligation) -> String {
    format_instant(obligation.due.expect("has a due time").at)
}

fn transfer(discovered: &str, urgent: bool, ongoing: bool, events: Vec<WorkflowEvent>) -> Record {
    let body = TransferBody {
        sender: HAIBIN.to_owned(),
        receiver: MARKET.to_owned(),
        title: "过期食品 food past its use-by date".to_owned(),
        facts: "stall on Haibin Road".to_owned(),
        urgent,
        ongoing,
        discovered_at_ms: ms(discovered),
        materials: vec![Material {
            kind: MaterialKind::TransferLetter,
            name: "letter.pdf".to_owned(),
        }],
        ..TransferBody::default()
    };
    record(HAIBIN, MARKET, Body::Transfer(body), events)
}

fn complaint(received_by: &str, written_material: bool, events: Vec<WorkflowEvent>) -> Record {
    let body = ComplaintBody {
        received_by: received_by.to_owned(),
        handler: DAIHE.to_owned(),
        channel: "phone".to_owned(),
        subject: "占道经营 shop occupying the pavement".to_owned(),
        written_material,
        ..ComplaintBody::default()
    };
    record(received_by, DAIHE, Body::Complaint(body), events)
}

fn shared_info(formed: &str, events: Vec<WorkflowEvent>) -> Record {
    let body = SharedInfoBody {
        category: 3,
        title: "行政处罚决定 penalty decision".to_owned(),
        formed_at_ms: ms(formed),
        ..SharedInfoBody::default()
    };
    record(DONGSHAN, MARKET, Body::SharedInfo(body), events)
}

fn urgent_notice(events: Vec<WorkflowEvent>) -> Record {
    let body = UrgentNoticeBody {
        sender: NIUTOUYA.to_owned(),
        receiver: EMERGENCY.to_owned(),
        hazard: "液化气瓶存放于地下室 gas cylinders in a basement".to_owned(),
        ..UrgentNoticeBody::default()
    };
    record(NIUTOUYA, EMERGENCY, Body::UrgentNotice(body), events)
}

fn assistance(kind: AssistanceKind, events: Vec<WorkflowEvent>) -> Record {
    let body = AssistanceBody {
        requester: DAIHE.to_owned(),
        provider: ECOLOGY.to_owned(),
        assistance_kind: kind,
        matter: "噪声检测 noise measurement".to_owned(),
        ..AssistanceBody::default()
    };
    record(DAIHE, ECOLOGY, Body::Assistance(body), events)
}

fn dispute(events: Vec<WorkflowEvent>) -> Record {
    let body = DisputeBody {
        applicant: DONGSHAN.to_owned(),
        respondent: URBAN.to_owned(),
        subject: "transfer".to_owned(),
        grounds: "违法建设是否已下放 whether unauthorised construction was devolved".to_owned(),
        ..DisputeBody::default()
    };
    record(DONGSHAN, URBAN, Body::Dispute(body), events)
}

// T-1 -------------------------------------------------------------------------------------

#[test]
fn t1_transfer_due_in_3_working_days_met_on_time() {
    let sent = event(Action::Sent, "2026-09-28 11:05", HAIBIN);
    let found = obligations_at(
        &transfer("2026-09-28 10:20", false, false, vec![sent]),
        "2026-09-28 12:00",
    );
    let t1 = find(&found, "T-1", "transfer the case");
    assert_eq!(due_text(&t1), "2026-10-08 24:00 +08:00");
    assert_eq!((t1.owner.as_str(), t1.state), (HAIBIN, Met));
    assert_eq!(t1.met_at_ms, Some(ms("2026-09-28 11:05")));
}

#[test]
fn t1_urgent_transfer_due_in_24_hours() {
    let sent = event(Action::Sent, "2026-09-30 09:00", HAIBIN);
    let found = obligations_at(
        &transfer("2026-09-28 10:20", true, false, vec![sent]),
        "2026-10-12 09:00",
    );
    let t1 = find(&found, "T-1", "urgent");
    // Hours run through nights and holidays alike.
    assert_eq!(due_text(&t1), "2026-09-29 10:20 +08:00");
    assert_eq!(t1.state, MetLate);
}

#[test]
fn t1_transfer_sent_after_due_is_met_late() {
    let sent = event(Action::Sent, "2026-10-09 08:00", HAIBIN);
    let found = obligations_at(
        &transfer("2026-09-28 10:20", false, false, vec![sent]),
        "2026-10-12 09:00",
    );
    assert_eq!(find(&found, "T-1", "transfer").state, MetLate);
}

#[test]
fn t1_transfer_overdue_as_of_an_instant_before_it_was_sent() {
    // An act recorded after the instant asked about does not count at that instant.
    let sent = event(Action::Sent, "2026-10-09 08:00", HAIBIN);
    let record = transfer("2026-09-28 10:20", false, false, vec![sent]);
    let t1 = find(
        &obligations_at(&record, "2026-10-09 07:00"),
        "T-1",
        "transfer",
    );
    assert_eq!((t1.state, t1.met_at_ms), (Overdue, None));
    let t1 = find(
        &obligations_at(&record, "2026-10-08 23:00"),
        "T-1",
        "transfer",
    );
    assert_eq!(t1.state, Open);
    assert!(
        obligations_at(&record, "2026-09-28 10:00").is_empty(),
        "not yet discovered"
    );
}

#[test]
fn t1_due_past_the_published_calendar_is_provisional() {
    // 2027's calendar is not embedded: counting into it assumes Monday to Friday.
    let record = transfer("2026-12-30 10:00", false, false, vec![]);
    let t1 = find(
        &obligations_at(&record, "2026-12-30 12:00"),
        "T-1",
        "transfer",
    );
    assert!(t1.due.unwrap().provisional, "{t1:?}");
    assert!(t1.to_pb().provisional);
}

// T-2 -------------------------------------------------------------------------------------

#[test]
fn t2_ongoing_violation_is_notified_at_once_met() {
    let sent = event(Action::Sent, "2026-09-28 11:05", HAIBIN);
    let found = obligations_at(
        &transfer("2026-09-28 10:20", false, true, vec![sent]),
        "2026-09-28 12:00",
    );
    let t2 = find(&found, "T-2", "stopped");
    assert_eq!(due_text(&t2), "2026-09-28 12:20 +08:00");
    assert_eq!((t2.owner.as_str(), t2.state), (HAIBIN, Met));
}

#[test]
fn t2_ongoing_violation_not_notified_within_2_hours_is_overdue() {
    let record = transfer("2026-09-28 10:20", false, true, vec![]);
    assert_eq!(
        find(
            &obligations_at(&record, "2026-09-28 12:21"),
            "T-2",
            "stopped"
        )
        .state,
        Overdue
    );
    let stop = event(Action::StopOrdered, "2026-09-28 13:00", HAIBIN);
    let record = transfer("2026-09-28 10:20", false, true, vec![stop]);
    assert_eq!(
        find(
            &obligations_at(&record, "2026-09-28 14:00"),
            "T-2",
            "stopped"
        )
        .state,
        MetLate
    );
}

#[test]
fn t2_not_owed_when_the_violation_is_over() {
    let record = transfer("2026-09-28 10:20", false, false, vec![]);
    assert!(
        obligations_at(&record, "2026-09-28 14:00")
            .iter()
            .all(|o| o.rule != "T-2")
    );
}

// T-5 -------------------------------------------------------------------------------------

#[test]
fn t5_receipt_due_3_working_days_after_sending_met() {
    let events = vec![
        event(Action::Sent, "2026-09-28 11:05", HAIBIN),
        event(Action::Received, "2026-10-08 09:30", MARKET),
        event(Action::Accepted, "2026-10-08 09:40", MARKET),
    ];
    let found = obligations_at(
        &transfer("2026-09-28 10:20", false, false, events),
        "2026-10-12 18:00",
    );
    let receipt = find(&found, "T-5", "acknowledge receipt");
    assert_eq!(due_text(&receipt), "2026-10-08 24:00 +08:00");
    assert_eq!((receipt.owner.as_str(), receipt.state), (MARKET, Met));
    let decision = find(&found, "T-5", "accept the case");
    // Three working days after 8 Oct: 9 Oct, Saturday 10 Oct (a make-up day), 12 Oct.
    assert_eq!(due_text(&decision), "2026-10-12 24:00 +08:00");
    assert_eq!(decision.state, Met);
}

#[test]
fn t5_receipt_overdue() {
    let sent = event(Action::Sent, "2026-09-28 11:05", HAIBIN);
    let record = transfer("2026-09-28 10:20", false, false, vec![sent]);
    let found = obligations_at(&record, "2026-10-09 00:01");
    assert_eq!(find(&found, "T-5", "acknowledge receipt").state, Overdue);
    assert!(
        found.iter().all(|o| !o.duty.contains("accept the case")),
        "not owed before receipt"
    );
}

#[test]
fn t5_objection_after_3_working_days_is_met_late() {
    let events = vec![
        event(Action::Sent, "2026-10-09 10:00", DONGSHAN),
        event(Action::Received, "2026-10-09 15:00", URBAN),
        with_reason(
            event(Action::Objected, "2026-10-15 09:00", URBAN),
            "devolved to townships",
        ),
    ];
    let found = obligations_at(
        &transfer("2026-10-09 09:00", false, false, events),
        "2026-10-16 09:00",
    );
    let decision = find(&found, "T-5", "object with reasons");
    // Saturday 10 Oct is a make-up working day: 10, 12 and 13 Oct.
    assert_eq!(due_text(&decision), "2026-10-13 24:00 +08:00");
    assert_eq!(decision.state, MetLate);
}

// C-2, C-3, C-4 ---------------------------------------------------------------------------

#[test]
fn c3_department_forwards_the_complaint_the_same_day_met() {
    let events = vec![
        event(Action::Registered, "2026-09-28 15:00", MARKET),
        event(Action::Forwarded, "2026-09-28 15:20", MARKET),
    ];
    let found = obligations_at(&complaint(MARKET, false, events), "2026-09-29 09:00");
    let forward = find(&found, "C-3", "notify the township");
    assert_eq!(due_text(&forward), "2026-09-28 24:00 +08:00");
    assert_eq!((forward.owner.as_str(), forward.state), (MARKET, Met));
    assert!(
        found.iter().all(|o| !o.duty.contains("written material")),
        "no material received"
    );
}

#[test]
fn c3_forwarding_the_next_day_is_met_late_and_material_overdue() {
    let events = vec![
        event(Action::Registered, "2026-09-28 15:00", MARKET),
        event(Action::Forwarded, "2026-09-29 09:00", MARKET),
    ];
    let found = obligations_at(&complaint(MARKET, true, events), "2026-09-29 10:00");
    assert_eq!(find(&found, "C-3", "notify the township").state, MetLate);
    assert_eq!(find(&found, "C-3", "written material").state, Overdue);
}

#[test]
fn c2_township_answers_its_own_complaint_within_15_working_days_overdue() {
    let events = vec![event(Action::Registered, "2026-09-28 15:00", DAIHE)];
    let found = obligations_at(&complaint(DAIHE, false, events), "2026-10-29 09:00");
    assert!(
        found.iter().all(|o| o.rule != "C-3" && o.rule != "C-4"),
        "{found:#?}"
    );
    let answer = find(&found, "C-2", "answer the complainant");
    // 15 WD after 28 Sep: 29, 30 Sep, then 8 Oct to 23 Oct with Saturday 10 Oct worked.
    assert_eq!(due_text(&answer), "2026-10-23 24:00 +08:00");
    assert_eq!((answer.owner.as_str(), answer.state), (DAIHE, Overdue));
}

#[test]
fn c4_township_tells_the_result_and_reports_it_to_the_department() {
    let events = vec![
        event(Action::Registered, "2026-09-28 15:00", MARKET),
        event(Action::Forwarded, "2026-09-28 15:10", MARKET),
        event(Action::ResultTold, "2026-10-20 10:00", DAIHE),
        event(Action::ResultReported, "2026-10-29 10:00", DAIHE),
    ];
    let record = complaint(MARKET, false, events);
    let found = obligations_at(&record, "2026-10-30 10:00");
    let told = find(&found, "C-4", "tell the complainant");
    assert_eq!((told.owner.as_str(), told.state), (DAIHE, Met));
    let reported = find(&found, "C-4", "report the result");
    assert_eq!(due_text(&reported), "2026-10-23 24:00 +08:00");
    assert_eq!(reported.state, MetLate);
    let before = find(
        &obligations_at(&record, "2026-10-12 18:00"),
        "C-4",
        "tell the complainant",
    );
    assert_eq!(before.state, Open);
}

// S-2 -------------------------------------------------------------------------------------

#[test]
fn s2_shared_the_day_it_is_formed_met() {
    let events = vec![
        event(Action::Formed, "2026-09-30 14:00", DONGSHAN),
        event(Action::Shared, "2026-09-30 23:59", DONGSHAN),
    ];
    let s2 = find(
        &obligations_at(&shared_info("2026-09-30 14:00", events), "2026-10-08 09:00"),
        "S-2",
        "the day it is formed",
    );
    assert_eq!(due_text(&s2), "2026-09-30 24:00 +08:00");
    assert_eq!((s2.owner.as_str(), s2.state), (DONGSHAN, Met));
}

#[test]
fn s2_shared_the_next_day_without_extension_is_met_late() {
    let events = vec![
        event(Action::Formed, "2026-09-30 14:00", DONGSHAN),
        event(Action::Shared, "2026-10-08 09:00", DONGSHAN),
    ];
    let record = shared_info("2026-09-30 14:00", events);
    assert_eq!(
        find(&obligations_at(&record, "2026-10-08 10:00"), "S-2", "share").state,
        MetLate
    );
    assert_eq!(
        find(&obligations_at(&record, "2026-10-01 10:00"), "S-2", "share").state,
        Overdue
    );
}

#[test]
fn s2_extension_recorded_the_same_day_moves_the_due_time() {
    let events = vec![
        event(Action::Formed, "2026-09-30 14:00", DONGSHAN),
        extension(Action::Extended, "2026-09-30 14:10", DONGSHAN, 2),
        event(Action::Shared, "2026-10-09 11:00", DONGSHAN),
    ];
    let s2 = find(
        &obligations_at(&shared_info("2026-09-30 14:00", events), "2026-10-12 10:00"),
        "S-2",
        "extension",
    );
    assert_eq!(due_text(&s2), "2026-10-09 24:00 +08:00");
    assert_eq!(s2.state, Met);
}

#[test]
fn s2_extension_recorded_after_the_day_does_not_count() {
    let events = vec![
        event(Action::Formed, "2026-09-30 14:00", DONGSHAN),
        extension(Action::Extended, "2026-10-08 09:00", DONGSHAN, 15),
    ];
    let s2 = find(
        &obligations_at(&shared_info("2026-09-30 14:00", events), "2026-10-08 10:00"),
        "S-2",
        "share",
    );
    assert_eq!(due_text(&s2), "2026-09-30 24:00 +08:00");
    assert_eq!(s2.state, Overdue);
}

#[test]
fn s2_extension_bound_15_wd() {
    // An extension asked beyond the notice's 15 WD counts only up to them.
    let events = vec![
        event(Action::Formed, "2026-09-30 14:00", DONGSHAN),
        extension(Action::Extended, "2026-09-30 14:10", DONGSHAN, 40),
    ];
    let record = shared_info("2026-09-30 14:00", events);
    let s2 = find(
        &obligations_at(&record, "2026-10-28 00:01"),
        "S-2",
        "15 WD extension",
    );
    assert_eq!(due_text(&s2), "2026-10-27 24:00 +08:00");
    assert_eq!(s2.state, Overdue);
}

// J-3 -------------------------------------------------------------------------------------

#[test]
fn j3_dispatch_due_at_once_met() {
    let events = vec![
        event(Action::Notified, "2026-09-29 09:00", NIUTOUYA),
        event(Action::Dispatched, "2026-09-29 10:15", EMERGENCY),
    ];
    let found = obligations_at(&urgent_notice(events), "2026-09-29 12:00");
    assert_eq!(found.len(), 1, "no report owed: {found:#?}");
    let dispatch = find(&found, "J-3", "send officers");
    assert_eq!(due_text(&dispatch), "2026-09-29 11:00 +08:00");
    assert_eq!((dispatch.owner.as_str(), dispatch.state), (EMERGENCY, Met));
}

#[test]
fn j3_dispatch_overdue_makes_township_owe_report() {
    let record = urgent_notice(vec![event(Action::Notified, "2026-09-29 09:00", NIUTOUYA)]);
    let before = obligations_at(&record, "2026-09-29 11:00");
    assert_eq!(find(&before, "J-3", "send officers").state, Open);
    assert!(
        before.iter().all(|o| !o.duty.contains("report")),
        "not owed until overdue"
    );

    let found = obligations_at(&record, "2026-09-29 15:01");
    assert_eq!(find(&found, "J-3", "send officers").state, Overdue);
    let report = find(&found, "J-3", "report to the District");
    assert_eq!(due_text(&report), "2026-09-29 13:00 +08:00");
    assert_eq!((report.owner.as_str(), report.state), (NIUTOUYA, Overdue));
}

#[test]
fn j3_refusal_without_reason_makes_township_owe_report_at_once() {
    let events = vec![
        event(Action::Notified, "2026-09-29 09:00", NIUTOUYA),
        event(Action::Refused, "2026-09-29 09:30", EMERGENCY),
        event(Action::ReportedToGovernment, "2026-09-29 12:00", NIUTOUYA),
    ];
    let found = obligations_at(&urgent_notice(events), "2026-09-29 12:30");
    let report = find(&found, "J-3", "report to the District");
    assert_eq!(due_text(&report), "2026-09-29 11:30 +08:00");
    assert_eq!(report.state, MetLate);
}

#[test]
fn j3_refusal_with_reason_supersedes_dispatch() {
    let events = vec![
        event(Action::Notified, "2026-09-29 09:00", NIUTOUYA),
        with_reason(
            event(Action::Refused, "2026-09-29 09:30", EMERGENCY),
            "gas is the fire brigade's",
        ),
    ];
    let found = obligations_at(&urgent_notice(events), "2026-09-29 15:00");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(find(&found, "J-3", "send officers").state, Superseded);
}

#[test]
fn j3_late_dispatch_supersedes_a_report_not_yet_made() {
    let events = vec![
        event(Action::Notified, "2026-09-29 09:00", NIUTOUYA),
        event(Action::Dispatched, "2026-09-29 14:00", EMERGENCY),
    ];
    let found = obligations_at(&urgent_notice(events), "2026-09-29 15:00");
    assert_eq!(find(&found, "J-3", "send officers").state, MetLate);
    assert_eq!(
        find(&found, "J-3", "report to the District").state,
        Superseded
    );
}

// A-1 to A-4 ------------------------------------------------------------------------------

#[test]
fn a1_opinion_due_in_5_working_days_met() {
    let events = vec![
        event(Action::Requested, "2026-09-29 14:30", DAIHE),
        event(Action::OpinionGiven, "2026-10-12 17:00", ECOLOGY),
    ];
    let a1 = find(
        &obligations_at(
            &assistance(AssistanceKind::TechnicalSupport, events),
            "2026-10-13 09:00",
        ),
        "A-1",
        "opinion",
    );
    assert_eq!(due_text(&a1), "2026-10-12 24:00 +08:00");
    assert_eq!((a1.owner.as_str(), a1.state), (ECOLOGY, Met));
}

#[test]
fn a1_opinion_overdue() {
    let events = vec![event(Action::Requested, "2026-09-29 14:30", DAIHE)];
    let found = obligations_at(
        &assistance(AssistanceKind::TechnicalSupport, events),
        "2026-10-13 09:00",
    );
    assert_eq!(find(&found, "A-1", "opinion").state, Overdue);
    assert!(
        found.iter().all(|o| o.rule != "A-2"),
        "no third party named"
    );
}

#[test]
fn a2_third_party_supersedes_opinion_and_guidance_is_due_3_working_days_after_request() {
    let events = vec![
        event(Action::Requested, "2026-09-29 14:30", DAIHE),
        event(Action::ThirdPartyNeeded, "2026-10-09 10:00", ECOLOGY),
    ];
    let found = obligations_at(
        &assistance(AssistanceKind::TechnicalSupport, events),
        "2026-10-09 12:00",
    );
    assert_eq!(find(&found, "A-1", "opinion").state, Superseded);
    let a2 = find(&found, "A-2", "guidance");
    assert_eq!(due_text(&a2), "2026-10-09 24:00 +08:00");
    assert_eq!(a2.state, Open);
}

#[test]
fn a2_guidance_after_3_working_days_is_met_late() {
    let events = vec![
        event(Action::Requested, "2026-09-29 14:30", DAIHE),
        event(Action::ThirdPartyNeeded, "2026-10-09 10:00", ECOLOGY),
        event(Action::GuidanceGiven, "2026-10-10 09:00", ECOLOGY),
    ];
    let found = obligations_at(
        &assistance(AssistanceKind::TechnicalSupport, events),
        "2026-10-12 12:00",
    );
    assert_eq!(find(&found, "A-2", "guidance").state, MetLate);
}

#[test]
fn a3_extension_announced_in_time_extends_the_opinion() {
    let events = vec![
        event(Action::Requested, "2026-09-29 14:30", DAIHE),
        extension(Action::ExtensionAnnounced, "2026-10-12 16:00", ECOLOGY, 3),
        event(Action::OpinionGiven, "2026-10-15 10:00", ECOLOGY),
    ];
    let a1 = find(
        &obligations_at(
            &assistance(AssistanceKind::TechnicalSupport, events),
            "2026-10-16 09:00",
        ),
        "A-1",
        "opinion",
    );
    assert_eq!(due_text(&a1), "2026-10-15 24:00 +08:00");
    assert!(a1.duty.contains("A-3"), "{}", a1.duty);
    assert_eq!(a1.state, Met);
}

#[test]
fn a3_extension_announced_too_late_does_not_count() {
    let events = vec![
        event(Action::Requested, "2026-09-29 14:30", DAIHE),
        extension(Action::ExtensionAnnounced, "2026-10-13 09:00", ECOLOGY, 3),
        event(Action::OpinionGiven, "2026-10-15 10:00", ECOLOGY),
    ];
    let a1 = find(
        &obligations_at(
            &assistance(AssistanceKind::TechnicalSupport, events),
            "2026-10-16 09:00",
        ),
        "A-1",
        "opinion",
    );
    assert_eq!(due_text(&a1), "2026-10-12 24:00 +08:00");
    assert_eq!(a1.state, MetLate);
}

#[test]
fn a3_extensions_count_up_to_15_wd_in_all() {
    // Two announcements merged from two devices, 200 and 20 WD: offices refuse such lengths,
    // but whatever arrives counts up to the 15 WD bound only.
    let events = vec![
        event(Action::Requested, "2026-09-29 14:30", DAIHE),
        extension(Action::ExtensionAnnounced, "2026-10-09 10:00", ECOLOGY, 200),
        extension(Action::ExtensionAnnounced, "2026-10-09 11:00", ECOLOGY, 20),
    ];
    let a1 = find(
        &obligations_at(
            &assistance(AssistanceKind::TechnicalSupport, events),
            "2026-10-13 09:00",
        ),
        "A-1",
        "opinion",
    );
    // 5 WD to 12 Oct, then 15 WD: 13 Oct to 2 Nov.
    assert_eq!(due_text(&a1), "2026-11-02 24:00 +08:00");
    assert!(a1.duty.contains("extended by 15 WD"), "{}", a1.duty);
}

fn extension_in_time(record: &Record, extension: &WorkflowEvent) -> Result<(), RuleViolation> {
    check_extension_in_time(
        record,
        extension,
        &DIRECTORY,
        &Calendar::official(),
        &RulePeriods::default(),
        &PeriodPolicies::default(),
    )
}

#[test]
fn s2_an_extension_after_the_day_it_was_formed_is_refused_at_the_office() {
    let record = shared_info(
        "2026-09-30 14:00",
        vec![event(Action::Formed, "2026-09-30 14:00", DONGSHAN)],
    );
    let on_the_day = extension(Action::Extended, "2026-09-30 23:59", DONGSHAN, 5);
    assert_eq!(extension_in_time(&record, &on_the_day), Ok(()));

    for late in ["2026-10-01 00:00", "2026-10-08 09:00"] {
        let refused = extension_in_time(&record, &extension(Action::Extended, late, DONGSHAN, 5))
            .unwrap_err();
        assert_eq!(refused.rule, "S-2");
        assert!(
            refused.message.contains("2026-09-30 24:00 +08:00"),
            "{refused}"
        );
    }

    // An office whose day ends at 17:30 shares by 17:30: that is when an extension must come.
    let closing_early = policies(&[(DONGSHAN, ending_at(17, 30))]);
    let after_hours = extension(Action::Extended, "2026-09-30 18:00", DONGSHAN, 5);
    let refused = check_extension_in_time(
        &record,
        &after_hours,
        &DIRECTORY,
        &Calendar::official(),
        &RulePeriods::default(),
        &closing_early,
    )
    .unwrap_err();
    assert!(refused.message.contains("17:30"), "{refused}");
}

#[test]
fn a3_an_extension_after_the_due_time_is_refused_at_the_office() {
    let requested = vec![event(Action::Requested, "2026-09-29 14:30", DAIHE)];
    let record = assistance(AssistanceKind::TechnicalSupport, requested.clone());
    // A-1 is due 12 Oct 24:00.
    let in_advance = extension(Action::ExtensionAnnounced, "2026-10-12 16:00", ECOLOGY, 3);
    assert_eq!(extension_in_time(&record, &in_advance), Ok(()));
    let late = extension(Action::ExtensionAnnounced, "2026-10-13 09:00", ECOLOGY, 3);
    let refused = extension_in_time(&record, &late).unwrap_err();
    assert_eq!(refused.rule, "A-3");
    assert!(
        refused.message.contains("2026-10-12 24:00 +08:00"),
        "{refused}"
    );

    // An earlier extension in time moves the due time, so a second one may follow it.
    let mut extended = requested.clone();
    extended.push(in_advance);
    let record = assistance(AssistanceKind::TechnicalSupport, extended);
    assert_eq!(extension_in_time(&record, &late), Ok(()));

    // With a third party named, A-2's guidance (due 9 Oct) is what an extension moves.
    let mut third_party = requested;
    third_party.push(event(Action::ThirdPartyNeeded, "2026-10-09 10:00", ECOLOGY));
    let record = assistance(AssistanceKind::TechnicalSupport, third_party);
    let after_a2 = extension(Action::ExtensionAnnounced, "2026-10-10 09:00", ECOLOGY, 3);
    assert_eq!(
        extension_in_time(&record, &after_a2).unwrap_err().rule,
        "A-3"
    );
}

#[test]
fn other_events_are_never_late_for_the_extension_check() {
    let record = shared_info(
        "2026-09-30 14:00",
        vec![event(Action::Formed, "2026-09-30 14:00", DONGSHAN)],
    );
    let shared_late = event(Action::Shared, "2026-10-09 09:00", DONGSHAN);
    assert_eq!(extension_in_time(&record, &shared_late), Ok(()));
}

#[test]
fn a4_on_site_officers_due_at_once_overdue() {
    let record = assistance(
        AssistanceKind::OnSite,
        vec![event(Action::Requested, "2026-09-29 14:30", DAIHE)],
    );
    let found = obligations_at(&record, "2026-09-29 17:00");
    assert_eq!(found.len(), 1, "no A-1 for on-site help: {found:#?}");
    let a4 = find(&found, "A-4", "on site");
    assert_eq!(due_text(&a4), "2026-09-29 16:30 +08:00");
    assert_eq!((a4.owner.as_str(), a4.state), (ECOLOGY, Overdue));
}

#[test]
fn a5_archives_carry_no_period() {
    let record = assistance(
        AssistanceKind::Archives,
        vec![event(Action::Requested, "2026-09-29 14:30", DAIHE)],
    );
    assert!(obligations_at(&record, "2026-12-01 09:00").is_empty());
}

// D-1 to D-3 ------------------------------------------------------------------------------

fn ladder(events: Vec<WorkflowEvent>, at: &str) -> Obligation {
    let found = obligations_at(&dispute(events), at);
    assert_eq!(found.len(), 1, "{found:#?}");
    let stage = found[0].clone();
    assert_eq!(stage.due, None, "the notice sets no period for a stage");
    stage
}

fn minuted(action: Action, at: &str, org: &str) -> WorkflowEvent {
    let mut event = event(action, at, org);
    event.note = "minutes".to_owned();
    event
}

#[test]
fn d1_ladder_starts_with_negotiation_owed_by_the_respondent() {
    let stage = ladder(
        vec![event(Action::Opened, "2026-10-10 11:00", DONGSHAN)],
        "2026-12-01 09:00",
    );
    assert_eq!(
        (stage.rule, stage.owner.as_str(), stage.state),
        ("D-1", URBAN, Open)
    );
}

#[test]
fn d1_ladder_ends_met_on_agreement() {
    let events = vec![
        event(Action::Opened, "2026-10-10 11:00", DONGSHAN),
        minuted(Action::NegotiationAgreed, "2026-10-12 16:00", URBAN),
    ];
    let stage = ladder(events, "2026-10-13 09:00");
    assert_eq!((stage.rule, stage.state), ("D-1", Met));
    assert_eq!(stage.met_at_ms, Some(ms("2026-10-12 16:00")));
}

#[test]
fn d2_ladder_after_failed_negotiation_awaits_an_application() {
    let events = vec![
        event(Action::Opened, "2026-10-10 11:00", DONGSHAN),
        minuted(Action::NegotiationFailed, "2026-10-12 16:00", URBAN),
    ];
    let stage = ladder(events, "2026-10-12 18:00");
    assert_eq!(
        (stage.rule, stage.owner.as_str(), stage.state),
        ("D-2", DONGSHAN, Open)
    );
}

#[test]
fn d2_ladder_stage_awaits_justice_bureau() {
    let events = vec![
        event(Action::Opened, "2026-10-10 11:00", DONGSHAN),
        minuted(Action::NegotiationFailed, "2026-10-12 16:00", URBAN),
        event(Action::CoordinationApplied, "2026-10-13 09:00", DONGSHAN),
    ];
    let stage = ladder(events.clone(), "2026-10-13 10:00");
    assert_eq!(
        (stage.rule, stage.owner.as_str(), stage.state),
        ("D-2", JUSTICE, Open)
    );
    // As of the evening before, the application had not been made.
    assert_eq!(ladder(events, "2026-10-12 18:00").owner, DONGSHAN);
}

#[test]
fn d3_ladder_after_failed_coordination_awaits_the_proposal() {
    let events = vec![
        event(Action::Opened, "2026-10-10 11:00", DONGSHAN),
        minuted(Action::NegotiationFailed, "2026-10-12 16:00", URBAN),
        event(Action::CoordinationApplied, "2026-10-13 09:00", DONGSHAN),
        event(Action::CoordinationFailed, "2026-10-20 09:00", JUSTICE),
    ];
    let stage = ladder(events, "2026-10-21 09:00");
    assert_eq!((stage.rule, stage.owner.as_str()), ("D-3", JUSTICE));
    assert!(stage.duty.contains("proposal"), "{}", stage.duty);
}

#[test]
fn d3_ladder_after_the_proposal_awaits_the_government_then_ends_met() {
    let mut events = vec![
        event(Action::Opened, "2026-10-10 11:00", DONGSHAN),
        minuted(Action::NegotiationFailed, "2026-10-12 16:00", URBAN),
        event(Action::CoordinationApplied, "2026-10-13 09:00", DONGSHAN),
        event(Action::CoordinationFailed, "2026-10-20 09:00", JUSTICE),
        event(Action::ProposalSubmitted, "2026-10-22 09:00", JUSTICE),
    ];
    let stage = ladder(events.clone(), "2026-10-23 09:00");
    assert_eq!(
        (stage.rule, stage.owner.as_str(), stage.state),
        ("D-3", GOVERNMENT, Open)
    );

    events.push(event(
        Action::GovernmentDecided,
        "2026-11-02 09:00",
        GOVERNMENT,
    ));
    let stage = ladder(events, "2026-11-03 09:00");
    assert_eq!(
        (stage.rule, stage.owner.as_str(), stage.state),
        ("D-3", GOVERNMENT, Met)
    );
}

// Period policies: "at once" and end of day per organisation (mission, open questions) ------

fn ending_at(hour: u32, minute: u32) -> PeriodPolicy {
    PeriodPolicy {
        end_of_day: chrono::NaiveTime::from_hms_opt(hour, minute, 0).unwrap(),
        ..PeriodPolicy::default()
    }
}

fn at_once(minutes: i64) -> PeriodPolicy {
    PeriodPolicy {
        at_once: chrono::TimeDelta::minutes(minutes),
        ..PeriodPolicy::default()
    }
}

/// The district's defaults (2h, 24:00) with `own` for the organisations named.
fn policies(own: &[(&str, PeriodPolicy)]) -> PeriodPolicies {
    PeriodPolicies {
        district: PeriodPolicy::default(),
        organisations: own
            .iter()
            .map(|(org, policy)| ((*org).to_owned(), *policy))
            .collect(),
    }
}

fn obligations_by(record: &Record, at: &str, policies: &PeriodPolicies) -> Vec<Obligation> {
    let calendar = Calendar::official();
    obligations(
        record,
        &DIRECTORY,
        &calendar,
        &RulePeriods::default(),
        policies,
        ms(at),
    )
}

#[test]
fn wd_duties_end_at_the_owners_end_of_day_17_30_while_others_keep_24_00() {
    // Haibin's day ends at 17:30; the Market Supervision Bureau keeps the district's 24:00.
    let haibin_closes_early = policies(&[(HAIBIN, ending_at(17, 30))]);
    let events = vec![
        event(Action::Sent, "2026-10-08 18:00", HAIBIN),
        event(Action::Received, "2026-10-12 18:00", MARKET),
    ];
    let record = transfer("2026-09-28 10:20", false, false, events);
    let found = obligations_by(&record, "2026-10-14 09:00", &haibin_closes_early);

    let t1 = find(&found, "T-1", "transfer the case");
    assert_eq!(due_text(&t1), "2026-10-08 17:30 +08:00");
    assert_eq!((t1.owner.as_str(), t1.state), (HAIBIN, MetLate));
    // 3 WD after 8 Oct: 9, Saturday 10 (a make-up day) and 12 Oct.
    let receipt = find(&found, "T-5", "acknowledge receipt");
    assert_eq!(due_text(&receipt), "2026-10-12 24:00 +08:00");
    assert_eq!((receipt.owner.as_str(), receipt.state), (MARKET, Met));

    // The same record by the defaults: sending at 18:00 on the last day is on time.
    let by_default = obligations_by(&record, "2026-10-14 09:00", &PeriodPolicies::default());
    let t1 = find(&by_default, "T-1", "transfer the case");
    assert_eq!(
        (due_text(&t1), t1.state),
        ("2026-10-08 24:00 +08:00".to_owned(), Met)
    );
}

#[test]
fn s2_same_day_sharing_ends_at_the_owners_end_of_day_17_30() {
    let dongshan_closes_early = policies(&[(DONGSHAN, ending_at(17, 30))]);
    let someone_else_closes_early = policies(&[(HAIBIN, ending_at(17, 30))]);
    let events = vec![
        event(Action::Formed, "2026-09-30 14:00", DONGSHAN),
        event(Action::Shared, "2026-09-30 18:00", DONGSHAN),
    ];
    let record = shared_info("2026-09-30 14:00", events);

    let s2 = find(
        &obligations_by(&record, "2026-10-08 09:00", &dongshan_closes_early),
        "S-2",
        "the day it is formed",
    );
    assert_eq!(due_text(&s2), "2026-09-30 17:30 +08:00");
    assert_eq!((s2.owner.as_str(), s2.state), (DONGSHAN, MetLate));
    let s2 = find(
        &obligations_by(&record, "2026-10-08 09:00", &someone_else_closes_early),
        "S-2",
        "the day it is formed",
    );
    assert_eq!(
        (due_text(&s2), s2.state),
        ("2026-09-30 24:00 +08:00".to_owned(), Met)
    );

    // Formed after the office has closed: the day is not over until midnight.
    let late = shared_info(
        "2026-09-30 19:00",
        vec![event(Action::Formed, "2026-09-30 19:00", DONGSHAN)],
    );
    let s2 = find(
        &obligations_by(&late, "2026-09-30 20:00", &dongshan_closes_early),
        "S-2",
        "share",
    );
    assert_eq!(due_text(&s2), "2026-09-30 24:00 +08:00");
}

#[test]
fn s2_extension_is_counted_to_the_owners_end_of_day() {
    let events = vec![
        event(Action::Formed, "2026-09-30 14:00", DONGSHAN),
        extension(Action::Extended, "2026-09-30 14:10", DONGSHAN, 2),
        event(Action::Shared, "2026-10-09 17:45", DONGSHAN),
    ];
    let s2 = find(
        &obligations_by(
            &shared_info("2026-09-30 14:00", events),
            "2026-10-12 10:00",
            &policies(&[(DONGSHAN, ending_at(17, 30))]),
        ),
        "S-2",
        "extension",
    );
    assert_eq!(due_text(&s2), "2026-10-09 17:30 +08:00");
    assert_eq!(s2.state, MetLate);
}

#[test]
fn c3_same_day_is_the_departments_end_of_day_and_c2_the_townships() {
    let market_closes_early = policies(&[(MARKET, ending_at(17, 30))]);
    let events = vec![
        event(Action::Registered, "2026-09-28 15:00", MARKET),
        event(Action::Forwarded, "2026-09-28 17:40", MARKET),
    ];
    let found = obligations_by(
        &complaint(MARKET, false, events),
        "2026-09-29 09:00",
        &market_closes_early,
    );
    let forward = find(&found, "C-3", "notify the township");
    assert_eq!(due_text(&forward), "2026-09-28 17:30 +08:00");
    assert_eq!((forward.owner.as_str(), forward.state), (MARKET, MetLate));
    let told = find(&found, "C-4", "tell the complainant");
    assert_eq!(
        (due_text(&told), told.owner.as_str()),
        ("2026-10-23 24:00 +08:00".to_owned(), DAIHE)
    );
}

#[test]
fn a3_extension_ends_at_the_providers_end_of_day() {
    let events = vec![
        event(Action::Requested, "2026-09-29 14:30", DAIHE),
        extension(Action::ExtensionAnnounced, "2026-10-12 16:00", ECOLOGY, 3),
    ];
    let a1 = find(
        &obligations_by(
            &assistance(AssistanceKind::TechnicalSupport, events),
            "2026-10-13 09:00",
            &policies(&[(ECOLOGY, ending_at(17, 30))]),
        ),
        "A-1",
        "opinion",
    );
    // 5 WD to 12 Oct 17:30, then 3 more counted from that day: 13, 14 and 15 Oct.
    assert_eq!(due_text(&a1), "2026-10-15 17:30 +08:00");
}

#[test]
fn a_configured_at_once_of_1h_moves_the_t2_due() {
    let record = transfer("2026-09-28 10:20", false, true, vec![]);
    let district_1h = PeriodPolicies {
        district: at_once(60),
        organisations: Default::default(),
    };
    let t2 = find(
        &obligations_by(&record, "2026-09-28 11:30", &district_1h),
        "T-2",
        "stopped",
    );
    assert_eq!(due_text(&t2), "2026-09-28 11:20 +08:00");
    assert_eq!(t2.state, Overdue);
    let t2 = find(
        &obligations_at(&record, "2026-09-28 11:30"),
        "T-2",
        "stopped",
    );
    assert_eq!(
        (due_text(&t2), t2.state),
        ("2026-09-28 12:20 +08:00".to_owned(), Open)
    );
}

#[test]
fn j3_dispatch_runs_by_the_departments_at_once_and_the_report_by_the_townships() {
    // Emergency Management's "at once" is 1 hour; Niutouya keeps the district's 2 hours.
    let record = urgent_notice(vec![event(Action::Notified, "2026-09-29 09:00", NIUTOUYA)]);
    let found = obligations_by(
        &record,
        "2026-09-29 10:01",
        &policies(&[(EMERGENCY, at_once(60))]),
    );
    let dispatch = find(&found, "J-3", "send officers");
    assert_eq!(due_text(&dispatch), "2026-09-29 10:00 +08:00");
    assert_eq!(
        (dispatch.owner.as_str(), dispatch.state),
        (EMERGENCY, Overdue)
    );
    let report = find(&found, "J-3", "report to the District");
    assert_eq!(due_text(&report), "2026-09-29 12:00 +08:00");
    assert_eq!((report.owner.as_str(), report.state), (NIUTOUYA, Open));
}

#[tokio::test]
async fn answer_uses_the_offices_configured_policies() {
    let office = niutouya_office("2026-09-29 10:30")
        .await
        .with_period_policies(policies(&[(EMERGENCY, at_once(60))]));
    let ask = pb::ObligationsRequest {
        org: EMERGENCY.to_owned(),
        ..Default::default()
    };
    let response = answer(&office, ask).await.unwrap();
    let dispatch: Vec<(&str, i64, &str)> = response
        .obligations
        .iter()
        .filter(|o| o.rule == "J-3")
        .map(|o| (o.owner.as_str(), o.due_ms, o.state.as_str()))
        .collect();
    assert_eq!(dispatch, [(EMERGENCY, ms("2026-09-29 10:00"), "overdue")]);
}

// Types, calendar, district views ---------------------------------------------------------

#[test]
fn obligation_states_have_bilingual_labels_and_snake_case_codes() {
    for (state, code) in [
        (Open, "open"),
        (Met, "met"),
        (MetLate, "met_late"),
        (Overdue, "overdue"),
        (Superseded, "superseded"),
    ] {
        assert_eq!(state.code(), code);
        assert_eq!(code.parse::<ObligationState>(), Ok(state));
        let label = state.label();
        assert!(!label.is_ascii(), "{label} lacks Chinese");
        assert!(
            label.chars().any(|c| c.is_ascii_alphabetic()),
            "{label} lacks English"
        );
    }
}

#[test]
fn rule_periods_default_to_the_notice() {
    let periods = RulePeriods::default();
    assert_eq!(periods.transfer, Period::WorkingDays(3));
    assert_eq!(periods.transfer_urgent, Period::Hours(24));
    assert_eq!(periods.opinion, Period::WorkingDays(5));
    assert_eq!(periods.guidance, Period::WorkingDays(3));
    assert_eq!(
        (periods.sharing, periods.sharing_extension_limit_wd),
        (Period::SameDay, 15)
    );
    assert_eq!(
        u32::from(periods.assistance_extension_limit_wd),
        crate::workflow::MAX_ASSISTANCE_EXTENSION_WD
    );
    assert_eq!(periods.dispatch, Period::AtOnce);
}

fn calendar_record(year: i32, off_days: &[&str], make_up_days: &[&str], created: &str) -> Record {
    let body = CalendarBody {
        year,
        off_days: off_days.iter().map(|d| (*d).to_owned()).collect(),
        make_up_days: make_up_days.iter().map(|d| (*d).to_owned()).collect(),
        source: "国办发明电〔2026〕 test notice".to_owned(),
    };
    let published = event(Action::Published, created, JUSTICE);
    record(JUSTICE, JUSTICE, Body::Calendar(body), vec![published])
}

#[test]
fn calendar_with_published_adds_valid_years_and_skips_invalid_ones() {
    let valid = calendar_record(2027, &["2027-01-01"], &[], "2026-12-01 09:00");
    // A make-up day on a Wednesday cannot be a valid notice.
    let invalid = calendar_record(2028, &[], &["2028-01-05"], "2026-12-01 10:00");
    let calendar = calendar_with_published(&[valid.clone(), invalid]);
    assert!(calendar.is_published(2027));
    assert!(!calendar.is_published(2028));
    assert!(calendar.is_published(2026), "the official years stay");

    // With 2027 published, a T-1 count into it is no longer provisional.
    let record = transfer("2026-12-30 10:00", false, false, vec![]);
    let found = obligations(
        &record,
        &DIRECTORY,
        &calendar,
        &RulePeriods::default(),
        &PeriodPolicies::default(),
        ms("2026-12-30 12:00"),
    );
    let t1 = find(&found, "T-1", "transfer");
    assert!(!t1.due.unwrap().provisional);
    // 31 Dec, then 1 Jan off: 4 and 5 Jan.
    assert_eq!(due_text(&t1), "2027-01-05 24:00 +08:00");
}

#[test]
fn calendar_with_published_never_lets_a_record_replace_an_official_year() {
    // The reviewer's record, made before nodes refused it: 2026 with no days off. National
    // Day must stay a holiday, and a T-1 due over it must not land on 1 October.
    let empty_2026 = calendar_record(2026, &[], &[], "2026-09-01 09:00");
    let only_new_year = calendar_record(2026, &["2026-01-01"], &[], "2026-09-02 09:00");
    let calendar = calendar_with_published(&[empty_2026, only_new_year]);
    let national_day = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    assert!(!calendar.is_working_day(national_day).is_working());

    let record = transfer("2026-09-28 10:20", false, false, vec![]);
    let found = obligations(
        &record,
        &DIRECTORY,
        &calendar,
        &RulePeriods::default(),
        &PeriodPolicies::default(),
        ms("2026-09-28 12:00"),
    );
    assert_eq!(
        due_text(&find(&found, "T-1", "transfer")),
        "2026-10-08 24:00 +08:00"
    );
}

#[test]
fn calendar_with_published_lets_a_reissued_year_replace_the_earlier() {
    let first = calendar_record(2027, &["2027-01-04"], &[], "2026-12-01 09:00");
    let corrected = calendar_record(2027, &["2027-01-01"], &[], "2026-12-02 09:00");
    let calendar = calendar_with_published(&[corrected, first]);
    let day = chrono::NaiveDate::from_ymd_opt(2027, 1, 4).unwrap();
    assert!(calendar.is_working_day(day).is_working());
}

#[test]
fn an_instant_beyond_the_calendar_is_shown_without_a_due_time_not_a_panic() {
    // A record stored before stated instants were checked may carry any number: one past
    // chrono's range (year 262143) must not panic, and the duty must not vanish silently.
    let mut record = transfer("2026-09-28 10:20", false, false, vec![]);
    if let Body::Transfer(body) = &mut record.body {
        body.discovered_at_ms = 9_000_000_000_000_000;
    }
    let found = obligations(
        &record,
        &DIRECTORY,
        &Calendar::official(),
        &RulePeriods::default(),
        &PeriodPolicies::default(),
        i64::MAX,
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    let t1 = &found[0];
    assert_eq!(
        (t1.rule, t1.owner.as_str(), t1.state, t1.due),
        ("T-1", HAIBIN, Open, None)
    );
    assert!(t1.duty.contains("cannot be computed"), "{}", t1.duty);
    assert_eq!(t1.record_id, record.id());
}

#[test]
fn district_obligations_are_sorted_by_due_with_ladder_stages_last() {
    let records = vec![
        dispute(vec![event(Action::Opened, "2026-10-10 11:00", DONGSHAN)]),
        assistance(
            AssistanceKind::TechnicalSupport,
            vec![event(Action::Requested, "2026-09-29 14:30", DAIHE)],
        ),
        urgent_notice(vec![event(Action::Notified, "2026-09-29 09:00", NIUTOUYA)]),
    ];
    let all = district_obligations(
        &records,
        &DIRECTORY,
        &Calendar::official(),
        &RulePeriods::default(),
        &PeriodPolicies::default(),
        ms("2026-10-12 18:00"),
    );
    let rules: Vec<&str> = all.iter().map(|o| o.rule).collect();
    assert_eq!(rules, ["J-3", "J-3", "A-1", "D-1"], "{all:#?}");
    assert_eq!(all[0].owner, EMERGENCY);
}

#[test]
fn accountability_counts_per_organisation_with_the_oldest_overdue() {
    let records = vec![
        urgent_notice(vec![event(Action::Notified, "2026-09-29 09:00", NIUTOUYA)]),
        urgent_notice(vec![event(Action::Notified, "2026-09-30 09:00", NIUTOUYA)]),
        urgent_notice(vec![
            event(Action::Notified, "2026-09-28 09:00", NIUTOUYA),
            event(Action::Dispatched, "2026-09-28 12:00", EMERGENCY),
        ]),
        urgent_notice(vec![
            event(Action::Notified, "2026-09-28 14:00", NIUTOUYA),
            event(Action::Dispatched, "2026-09-28 15:00", EMERGENCY),
        ]),
        dispute(vec![event(Action::Opened, "2026-09-29 11:00", DONGSHAN)]),
    ];
    let all = district_obligations(
        &records,
        &DIRECTORY,
        &Calendar::official(),
        &RulePeriods::default(),
        &PeriodPolicies::default(),
        ms("2026-09-30 10:00"),
    );
    let report = accountability(&all, ms("2026-09-28 00:00"), ms("2026-10-01 00:00"));

    let emergency = report.iter().find(|a| a.org == EMERGENCY).unwrap();
    assert_eq!(
        (
            emergency.met_on_time,
            emergency.met_late,
            emergency.overdue,
            emergency.open
        ),
        (1, 1, 1, 1)
    );
    let oldest = emergency.oldest_overdue.as_ref().unwrap();
    assert_eq!(due_text(oldest), "2026-09-29 11:00 +08:00");
    // Niutouya's report for the first notice: overdue since 13:00 on 29 Sep.
    let niutouya = report.iter().find(|a| a.org == NIUTOUYA).unwrap();
    assert_eq!((niutouya.overdue, niutouya.open), (1, 0));
    // The ladder stage has no due time and the late dispatch superseded its report.
    assert!(report.iter().all(|a| a.org != URBAN), "{report:#?}");
    assert_eq!(niutouya.met_on_time + niutouya.met_late, 0);
    let orgs: Vec<&str> = report.iter().map(|a| a.org.as_str()).collect();
    assert_eq!(orgs, [NIUTOUYA, EMERGENCY]);
}

#[test]
fn accountability_period_includes_a_due_time_of_24_00_in_its_last_day() {
    let record = urgent_notice(vec![event(Action::Notified, "2026-09-29 22:00", NIUTOUYA)]);
    let all = obligations_at(&record, "2026-09-29 22:30");
    assert_eq!(due_text(&all[0]), "2026-09-29 24:00 +08:00");
    let day = accountability(&all, ms("2026-09-29 00:00"), ms("2026-09-29 24:00"));
    assert_eq!(day.len(), 1);
    assert!(accountability(&all, ms("2026-09-29 24:00"), ms("2026-09-30 24:00")).is_empty());
}

// The scenario ----------------------------------------------------------------------------

/// Events 1 to 6 of `scenarios/beidaihe-national-day-2026.md`, as the district holds them on
/// Monday 12 October at 18:00.
fn scenario_records() -> Vec<Record> {
    // 1. Haibin transfers expired food to market supervision; 6. the bureau acknowledges.
    let haibin_transfer = transfer(
        "2026-09-28 10:20",
        false,
        false,
        vec![
            event(Action::Sent, "2026-09-28 11:05", HAIBIN),
            event(Action::Received, "2026-10-08 09:30", MARKET),
            event(Action::Accepted, "2026-10-08 09:30", MARKET),
        ],
    );
    // 2. Market supervision registers a complaint about Daihe and notifies it.
    let complaint = complaint(
        MARKET,
        false,
        vec![
            event(Action::Registered, "2026-09-28 15:00", MARKET),
            event(Action::Forwarded, "2026-09-28 15:00", MARKET),
        ],
    );
    // 3. Niutouya's urgent notice; the bureau is offline, Niutouya reports at 11:20.
    let notice = urgent_notice(vec![
        event(Action::Notified, "2026-09-29 09:00", NIUTOUYA),
        event(Action::ReportedToGovernment, "2026-09-29 11:20", NIUTOUYA),
    ]);
    // 4. Daihe asks for a noise measurement; a third party must measure.
    let noise = assistance(
        AssistanceKind::TechnicalSupport,
        vec![
            event(Action::Requested, "2026-09-29 14:30", DAIHE),
            event(Action::ThirdPartyNeeded, "2026-10-09 10:00", ECOLOGY),
            event(Action::GuidanceGiven, "2026-10-09 16:00", ECOLOGY),
        ],
    );
    // 5. Dongshan's penalty decision, extended by 15 WD ten minutes after it was formed.
    let decision = shared_info(
        "2026-09-30 14:00",
        vec![
            event(Action::Formed, "2026-09-30 14:00", DONGSHAN),
            extension(Action::Extended, "2026-09-30 14:10", DONGSHAN, 15),
        ],
    );
    vec![haibin_transfer, complaint, notice, noise, decision]
}

#[test]
fn scenario_deadlines_come_out_exactly() {
    let records = scenario_records();
    let at = ms("2026-10-12 18:00");
    let all = district_obligations(
        &records,
        &DIRECTORY,
        &Calendar::official(),
        &RulePeriods::default(),
        &PeriodPolicies::default(),
        at,
    );

    let t1 = find(&all, "T-1", "transfer the case");
    assert_eq!(
        (due_text(&t1).as_str(), t1.state),
        ("2026-10-08 24:00 +08:00", Met)
    );

    let a1 = find(&all, "A-1", "opinion");
    assert_eq!(
        (due_text(&a1).as_str(), a1.state),
        ("2026-10-12 24:00 +08:00", Superseded)
    );
    let a2 = find(&all, "A-2", "guidance");
    assert_eq!(
        (due_text(&a2).as_str(), a2.state),
        ("2026-10-09 24:00 +08:00", Met)
    );
    assert_eq!(a2.met_at_ms, Some(ms("2026-10-09 16:00")));

    let s2 = find(&all, "S-2", "share");
    assert_eq!(
        (due_text(&s2).as_str(), s2.state),
        ("2026-10-27 24:00 +08:00", Open)
    );

    let dispatch = find(&all, "J-3", "send officers");
    assert_eq!(
        (due_text(&dispatch).as_str(), dispatch.state),
        ("2026-09-29 11:00 +08:00", Overdue)
    );
    let report = find(&all, "J-3", "report to the District");
    assert_eq!((report.owner.as_str(), report.state), (NIUTOUYA, Met));
    assert_eq!(report.met_at_ms, Some(ms("2026-09-29 11:20")));

    // What the hub shows at that moment: one overdue obligation, the bureau's dispatch, and
    // Daihe's answer to the complainant still open.
    let overdue: Vec<&Obligation> = all.iter().filter(|o| o.state == Overdue).collect();
    assert_eq!(overdue.len(), 1, "{overdue:#?}");
    assert_eq!(overdue[0].owner, EMERGENCY);
    let answer = find(&all, "C-4", "tell the complainant");
    assert_eq!((answer.owner.as_str(), answer.state), (DAIHE, Open));
}

// The RPC ---------------------------------------------------------------------------------

#[derive(Debug)]
struct FixedClock(i64);

impl crate::replica::Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

async fn niutouya_office(now: &str) -> Office {
    let store: Arc<dyn crate::store::Store> = Arc::new(crate::store::MemoryStore::new());
    let clock = Arc::new(FixedClock(ms(now)));
    let replica = crate::replica::Replica::open(NIUTOUYA, store, clock, 64).unwrap();
    let office = Office::new(Arc::new(replica), Arc::new(DIRECTORY.clone()));
    let act = |at: &str| crate::office::Act {
        at_ms: Some(ms(at)),
        ..Default::default()
    };

    let notice = UrgentNoticeBody {
        sender: NIUTOUYA.to_owned(),
        receiver: EMERGENCY.to_owned(),
        hazard: "gas cylinders".to_owned(),
        ..UrgentNoticeBody::default()
    };
    office
        .create(
            RecordKind::UrgentNotice,
            vec![],
            Body::UrgentNotice(notice),
            act("2026-09-29 09:00"),
        )
        .await
        .unwrap();
    let request = AssistanceBody {
        requester: NIUTOUYA.to_owned(),
        provider: ECOLOGY.to_owned(),
        matter: "noise".to_owned(),
        ..AssistanceBody::default()
    };
    office
        .create(
            RecordKind::Assistance,
            vec![],
            Body::Assistance(request),
            act("2026-09-29 14:30"),
        )
        .await
        .unwrap();
    office
}

#[tokio::test]
async fn answer_lists_an_organisations_unsettled_obligations_sorted_by_due() {
    let office = niutouya_office("2026-09-30 12:00").await;

    let own = answer(&office, pb::ObligationsRequest::default())
        .await
        .unwrap();
    assert_eq!(
        own.at_ms,
        ms("2026-09-30 12:00"),
        "the replica's clock when at_ms is absent"
    );
    let rules: Vec<(&str, &str, &str)> = own
        .obligations
        .iter()
        .map(|o| (o.rule.as_str(), o.owner.as_str(), o.state.as_str()))
        .collect();
    assert_eq!(rules, [("J-3", NIUTOUYA, "overdue")]);

    let everyone = pb::ObligationsRequest {
        org: "all".to_owned(),
        ..Default::default()
    };
    let all = answer(&office, everyone).await.unwrap();
    let owners: Vec<&str> = all.obligations.iter().map(|o| o.owner.as_str()).collect();
    assert_eq!(owners, [EMERGENCY, NIUTOUYA, ECOLOGY]);
    assert_eq!(all.obligations[2].due_ms, ms("2026-10-12 24:00"));
    assert_eq!(all.obligations[2].met_at_ms, 0);
    assert_eq!(all.obligations[2].kind, "assistance");
}

#[tokio::test]
async fn answer_as_of_an_earlier_instant_and_with_met_included() {
    let office = niutouya_office("2026-09-30 12:00").await;
    let earlier = pb::ObligationsRequest {
        at_ms: Some(ms("2026-09-29 10:00")),
        org: EMERGENCY.to_owned(),
        include_met: true,
    };
    let response = answer(&office, earlier).await.unwrap();
    assert_eq!(response.obligations.len(), 1);
    assert_eq!(response.obligations[0].state, "open");

    let bad = pb::ObligationsRequest {
        at_ms: Some(i64::MAX),
        ..Default::default()
    };
    assert!(matches!(
        answer(&office, bad).await,
        Err(OfficeError::Invalid(_))
    ));
}
