//! A record's status, derived from its workflow events by a pure function.
//!
//! Two offices acting offline merge into one event list; every replica derives the same status
//! from it. Events that contradict each other (a transfer both accepted and objected) are
//! reported as [`Contradiction`]s and the status says so, so nobody acts on half a truth.

use serde::Serialize;

use super::{Action, RecordKind, WorkflowEvent};

/// Where a record stands. Labels are what office staff read: Chinese with English beside it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, strum::IntoStaticStr, strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Status {
    Open,
    AwaitingReceipt,
    Received,
    Accepted,
    Objected,
    Registered,
    Forwarded,
    Answered,
    CaseOpened,
    Transferred,
    ResultReported,
    Held,
    Extended,
    Shared,
    AwaitingDispatch,
    Dispatched,
    Refused,
    ReportedToGovernment,
    Convened,
    Minuted,
    Requested,
    AwaitingGuidance,
    OpinionGiven,
    Negotiating,
    Agreed,
    Coordinating,
    AwaitingDecision,
    Decided,
    Published,
    Closed,
    /// Contradictory events were merged; someone must resolve them.
    Conflict,
}

impl Status {
    pub fn code(self) -> &'static str {
        self.into()
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Open => "办理中 open",
            Status::AwaitingReceipt => "待签收 awaiting receipt",
            Status::Received => "已签收 received",
            Status::Accepted => "已受理 accepted",
            Status::Objected => "有异议 objected",
            Status::Registered => "已登记 registered",
            Status::Forwarded => "已告知乡镇 forwarded to township",
            Status::Answered => "已答复 answered",
            Status::CaseOpened => "已立案 case opened",
            Status::Transferred => "已移送 transferred",
            Status::ResultReported => "已反馈结果 result reported",
            Status::Held => "待共享 held",
            Status::Extended => "延期共享 extended",
            Status::Shared => "已共享 shared",
            Status::AwaitingDispatch => "待出警 awaiting dispatch",
            Status::Dispatched => "已出警 dispatched",
            Status::Refused => "拒绝出警 refused",
            Status::ReportedToGovernment => "已报区政府 reported to government",
            Status::Convened => "已召集 convened",
            Status::Minuted => "已纪要 minuted",
            Status::Requested => "待协助 requested",
            Status::AwaitingGuidance => "待第三方指导 awaiting guidance",
            Status::OpinionGiven => "已出具意见 opinion given",
            Status::Negotiating => "协商中 negotiating (D-1)",
            Status::Agreed => "已达成一致 agreed",
            Status::Coordinating => "司法局协调中 coordinating (D-2)",
            Status::AwaitingDecision => "待区政府决定 awaiting decision (D-3)",
            Status::Decided => "已决定 decided",
            Status::Published => "已发布 published",
            Status::Closed => "已办结 closed",
            Status::Conflict => "存在冲突 conflict",
        }
    }
}

/// Two events that cannot both hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contradiction {
    pub first: String,
    pub second: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Derived {
    pub status: Status,
    pub contradictions: Vec<Contradiction>,
}

/// Pairs of actions that cannot both be true of one record, with what the pair means.
const CONTRADICTORY: &[(Action, Action, &str)] = &[
    (
        Action::Accepted,
        Action::Objected,
        "受理与异议并存 accepted and objected",
    ),
    (
        Action::Dispatched,
        Action::Refused,
        "出警与拒绝并存 dispatched and refused",
    ),
    (
        Action::NegotiationAgreed,
        Action::NegotiationFailed,
        "协商一致与未达成并存 agreed and failed",
    ),
    (
        Action::CoordinationAgreed,
        Action::CoordinationFailed,
        "协调一致与未达成并存 coordination agreed and failed",
    ),
    (
        Action::Answered,
        Action::CaseOpened,
        "已答复无违法与已立案并存 answered (no violation) and case opened",
    ),
];

/// Derives status from events, whatever order they were merged in: events are sorted by
/// their stated time, ties broken by id, so every replica folds the same sequence.
pub fn derive(kind: RecordKind, events: &[WorkflowEvent]) -> Derived {
    let mut ordered: Vec<&WorkflowEvent> = events.iter().collect();
    ordered.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.id.cmp(&b.id)));

    let contradictions = contradictions(&ordered);
    if !contradictions.is_empty() {
        return Derived {
            status: Status::Conflict,
            contradictions,
        };
    }

    let mut status = opening_status(kind);
    for event in &ordered {
        if let Some(next) = step(kind, status, event.action) {
            status = next;
        }
    }
    Derived {
        status,
        contradictions,
    }
}

fn contradictions(events: &[&WorkflowEvent]) -> Vec<Contradiction> {
    let mut found = Vec::new();
    for (a, b, description) in CONTRADICTORY {
        let first = events.iter().find(|e| e.action == *a);
        let second = events.iter().find(|e| e.action == *b);
        if let (Some(first), Some(second)) = (first, second) {
            found.push(Contradiction {
                first: format!("{} by {} ({})", first.action, first.org, first.id),
                second: format!("{} by {} ({})", second.action, second.org, second.id),
                description: (*description).to_owned(),
            });
        }
    }
    found
}

fn opening_status(kind: RecordKind) -> Status {
    match kind {
        RecordKind::Transfer => Status::AwaitingReceipt,
        RecordKind::Complaint => Status::Registered,
        RecordKind::SharedInfo => Status::Held,
        RecordKind::UrgentNotice => Status::AwaitingDispatch,
        RecordKind::Consultation => Status::Convened,
        RecordKind::Assistance => Status::Requested,
        RecordKind::Dispute => Status::Negotiating,
        RecordKind::LiaisonDirectory | RecordKind::Calendar => Status::Published,
        RecordKind::Case => Status::Open,
    }
}

/// The status after `action`, or `None` when the action does not move this kind's status
/// (notes, updates, attachments).
fn step(kind: RecordKind, current: Status, action: Action) -> Option<Status> {
    if action == Action::Closed {
        return Some(Status::Closed);
    }
    if current == Status::Closed {
        return None;
    }
    use Action as A;
    use RecordKind as K;
    let next = match (kind, action) {
        (K::Transfer, A::Received) if current == Status::AwaitingReceipt => Status::Received,
        (K::Transfer, A::Accepted) => Status::Accepted,
        (K::Transfer, A::Objected) => Status::Objected,

        (K::Case, A::Decided) => Status::Decided,

        (K::Complaint, A::Forwarded) => Status::Forwarded,
        (K::Complaint, A::Accepted) => Status::Accepted,
        (K::Complaint, A::Answered) => Status::Answered,
        (K::Complaint, A::CaseOpened) => Status::CaseOpened,
        (K::Complaint, A::Transferred) => Status::Transferred,
        (K::Complaint, A::ResultReported) => Status::ResultReported,

        (K::SharedInfo, A::Extended) if current == Status::Held => Status::Extended,
        (K::SharedInfo, A::Shared) => Status::Shared,

        (K::UrgentNotice, A::Dispatched) => Status::Dispatched,
        (K::UrgentNotice, A::Refused) => Status::Refused,
        (K::UrgentNotice, A::ReportedToGovernment) if current != Status::Dispatched => {
            Status::ReportedToGovernment
        }

        (K::Consultation, A::Minuted) => Status::Minuted,

        (K::Assistance, A::ThirdPartyNeeded) => Status::AwaitingGuidance,
        (K::Assistance, A::OpinionGiven | A::GuidanceGiven | A::OfficersSent) => {
            Status::OpinionGiven
        }

        (K::Dispute, A::NegotiationAgreed | A::CoordinationAgreed) => Status::Agreed,
        (K::Dispute, A::CoordinationApplied) => Status::Coordinating,
        (K::Dispute, A::CoordinationFailed | A::ProposalSubmitted) => Status::AwaitingDecision,
        (K::Dispute, A::GovernmentDecided) => Status::Decided,
        _ => return None,
    };
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: Action, at_ms: i64, org: &str) -> WorkflowEvent {
        WorkflowEvent::new(action, at_ms, org)
    }

    #[test]
    fn transfer_moves_from_sent_to_received_to_accepted_t5() {
        let events = vec![
            event(Action::Sent, 1, "130304100"),
            event(Action::Received, 2, "bdh-scjg"),
            event(Action::Accepted, 3, "bdh-scjg"),
        ];
        assert_eq!(
            derive(RecordKind::Transfer, &events).status,
            Status::Accepted
        );
    }

    #[test]
    fn status_does_not_depend_on_merge_order() {
        let a = event(Action::Received, 2, "bdh-scjg");
        let b = event(Action::Accepted, 3, "bdh-scjg");
        let c = event(Action::Sent, 1, "130304100");
        let forward = derive(RecordKind::Transfer, &[c.clone(), a.clone(), b.clone()]);
        let backward = derive(RecordKind::Transfer, &[b, a, c]);
        assert_eq!(forward, backward);
    }

    #[test]
    fn accepted_and_objected_concurrently_is_a_conflict_never_dropped_t5() {
        let events = vec![
            event(Action::Sent, 1, "130304100"),
            event(Action::Accepted, 5, "bdh-scjg"),
            event(Action::Objected, 5, "bdh-scjg"),
        ];
        let derived = derive(RecordKind::Transfer, &events);
        assert_eq!(derived.status, Status::Conflict);
        assert_eq!(derived.contradictions.len(), 1);
        assert!(derived.contradictions[0].first.contains("accepted"));
        assert!(derived.contradictions[0].second.contains("objected"));
    }

    #[test]
    fn dispute_climbs_the_ladder_d1_d2() {
        let events = vec![
            event(Action::Opened, 1, "bdh-cgzf"),
            event(Action::NegotiationFailed, 2, "130304002"),
            event(Action::CoordinationApplied, 3, "130304002"),
        ];
        assert_eq!(
            derive(RecordKind::Dispute, &events).status,
            Status::Coordinating
        );
    }

    #[test]
    fn every_status_has_a_bilingual_label() {
        for status in [
            Status::Open,
            Status::Conflict,
            Status::Coordinating,
            Status::Held,
        ] {
            let label = status.label();
            assert!(!label.is_ascii(), "{label} lacks Chinese");
            assert!(
                label.chars().any(|c| c.is_ascii_alphabetic()),
                "{label} lacks English"
            );
        }
    }
}
