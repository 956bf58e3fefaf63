//! The obligation rules, one function per record kind: which duties a record's body and
//! events give rise to, whom they bind, when they fall due and which act meets them.
//!
//! Every function reads only the events recorded by the instant asked about, and pushes what
//! it finds; [`super::obligations`] dispatches to them and owns the types.

use crate::calendar::{Calendar, Due, Period, PeriodPolicies};
use crate::org::{Directory, OrgKind};
use crate::record::{
    Action, AssistanceBody, AssistanceKind, ComplaintBody, DisputeBody, Record, SharedInfoBody,
    TransferBody, UrgentNoticeBody, WorkflowEvent,
};

use super::{Obligation, ObligationError, ObligationState, RulePeriods};

/// One record, the rules' settings and the instant, with the record's events as they stood
/// then.
pub(super) struct Context<'a> {
    record: &'a Record,
    directory: &'a Directory,
    calendar: &'a Calendar,
    periods: &'a RulePeriods,
    policies: &'a PeriodPolicies,
    at_ms: i64,
    /// Events recorded at or before `at_ms`, ordered by time and then id as
    /// `record::status` orders them, so every replica picks the same first act.
    visible: Vec<&'a WorkflowEvent>,
}

impl<'a> Context<'a> {
    pub(super) fn new(
        record: &'a Record,
        directory: &'a Directory,
        calendar: &'a Calendar,
        periods: &'a RulePeriods,
        policies: &'a PeriodPolicies,
        at_ms: i64,
    ) -> Self {
        let mut visible: Vec<&WorkflowEvent> =
            record.events.iter().filter(|e| e.at_ms <= at_ms).collect();
        visible.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.id.cmp(&b.id)));
        Context {
            record,
            directory,
            calendar,
            periods,
            policies,
            at_ms,
            visible,
        }
    }

    /// The earliest visible event with any of `actions`.
    fn first(&self, actions: &[Action]) -> Option<&'a WorkflowEvent> {
        self.visible
            .iter()
            .copied()
            .find(|e| actions.contains(&e.action))
    }

    fn all(&self, action: Action) -> impl Iterator<Item = &'a WorkflowEvent> + '_ {
        self.visible
            .iter()
            .copied()
            .filter(move |e| e.action == action)
    }

    /// Whether a clock started at `from_ms` had started by the instant asked about.
    fn started(&self, from_ms: i64) -> bool {
        from_ms <= self.at_ms
    }

    /// When `owner`'s duty under `rule` falls due: the period runs by the end of day and
    /// "at once" of the organisation that owes it, not of the one that started the clock.
    fn due(
        &self,
        rule: &'static str,
        owner: &str,
        from_ms: i64,
        period: Period,
    ) -> Result<Due, ObligationError> {
        let from =
            crate::calendar::from_unix_millis(from_ms).map_err(|e| self.error(rule, owner, e))?;
        self.calendar
            .due(from, period, self.policies.for_org(owner))
            .map_err(|e| self.error(rule, owner, e))
    }

    /// `owner`'s due time extended by `days`, ending at `owner`'s end of day.
    fn extend(
        &self,
        rule: &'static str,
        owner: &str,
        due: &Due,
        days: u16,
    ) -> Result<Due, ObligationError> {
        self.calendar
            .extend(due, days, self.policies.for_org(owner))
            .map_err(|e| self.error(rule, owner, e))
    }

    fn error(
        &self,
        rule: &'static str,
        owner: &str,
        source: crate::calendar::CalendarError,
    ) -> ObligationError {
        ObligationError::Due {
            record_id: self.record.id().to_owned(),
            rule,
            owner: owner.to_owned(),
            source,
        }
    }

    /// `name`, or the record's owner when the body leaves it blank.
    fn or_owner<'b>(&'b self, name: &'b str) -> &'b str {
        if name.is_empty() {
            &self.record.envelope.owner
        } else {
            name
        }
    }

    /// An obligation of `owner`, its state worked out from its due time and the act that
    /// met it, if any.
    fn owe(
        &self,
        owner: &str,
        rule: &'static str,
        duty: impl Into<String>,
        due: Option<Due>,
        met: Option<&WorkflowEvent>,
    ) -> Obligation {
        let met_at_ms = met.map(|e| e.at_ms);
        Obligation {
            record_id: self.record.id().to_owned(),
            kind: self.record.kind(),
            owner: owner.to_owned(),
            rule,
            duty: duty.into(),
            due,
            state: state_at(due.as_ref(), met_at_ms, self.at_ms),
            met_at_ms,
            title: self.record.body.title(),
        }
    }
}

/// Met if the act came by the due time, met late if after it; overdue if not met and the due
/// time has passed; open otherwise. The due time itself still counts as in time: a period
/// ending at 24:00 includes the whole of its last day.
fn state_at(due: Option<&Due>, met_at_ms: Option<i64>, at_ms: i64) -> ObligationState {
    let due_ms = due.map(|d| d.at.timestamp_millis());
    match (met_at_ms, due_ms) {
        (Some(met), Some(due)) if met > due => ObligationState::MetLate,
        (Some(_), _) => ObligationState::Met,
        (None, Some(due)) if at_ms > due => ObligationState::Overdue,
        (None, _) => ObligationState::Open,
    }
}

fn superseded(obligation: Obligation) -> Obligation {
    Obligation {
        state: ObligationState::Superseded,
        met_at_ms: None,
        ..obligation
    }
}

/// The first of `candidates` that is set: bodies use 0 for "not recorded".
fn clock_start(candidates: [Option<i64>; 2]) -> Option<i64> {
    candidates.into_iter().flatten().find(|ms| *ms > 0)
}

fn has_reason(event: &WorkflowEvent) -> bool {
    event
        .reason
        .as_deref()
        .is_some_and(|r| !r.trim().is_empty())
}

fn due_ms(due: &Due) -> i64 {
    due.at.timestamp_millis()
}

/// Working days of an extension as the calendar counts them; an absurd length saturates
/// instead of wrapping.
fn working_days(count: u32) -> u16 {
    u16::try_from(count).unwrap_or(u16::MAX)
}

/// T-1, T-2 for the finder; T-5 for the receiver.
pub(super) fn transfer(
    cx: &Context<'_>,
    body: &TransferBody,
    out: &mut Vec<Obligation>,
) -> Result<(), ObligationError> {
    let sender = cx.or_owner(&body.sender);
    let sent = cx.first(&[Action::Sent]);

    // The T-1 clock starts at discovery (mission, open questions), not at the moment
    // non-jurisdiction was determined.
    let discovered = clock_start([Some(body.discovered_at_ms), sent.map(|e| e.at_ms)]);
    if let Some(discovered) = discovered.filter(|ms| cx.started(*ms)) {
        let (period, duty) = if body.urgent {
            (
                cx.periods.transfer_urgent,
                "紧急移送案件 transfer the urgent case to the competent party",
            )
        } else {
            (
                cx.periods.transfer,
                "移送案件 transfer the case to the competent party",
            )
        };
        let due = cx.due("T-1", sender, discovered, period)?;
        out.push(cx.owe(sender, "T-1", duty, Some(due), sent));

        if body.ongoing {
            // T-2: a transfer in writing is itself the written notice, so sending it meets
            // the duty as well as an order to stop does.
            let due = cx.due("T-2", sender, discovered, cx.periods.stop_ongoing)?;
            let met = cx.first(&[Action::Sent, Action::StopOrdered]);
            let duty = "责令停止违法行为并书面告知 order the ongoing violation stopped and notify in writing";
            out.push(cx.owe(sender, "T-2", duty, Some(due), met));
        }
    }

    let Some(sent) = sent else { return Ok(()) };
    let received = cx.first(&[Action::Received]);
    let due = cx.due("T-5", &body.receiver, sent.at_ms, cx.periods.receipt)?;
    let duty = "签收移送案件（送达回证） acknowledge receipt of the transfer";
    out.push(cx.owe(&body.receiver, "T-5", duty, Some(due), received));

    if let Some(received) = received {
        let decided = cx.first(&[Action::Accepted, Action::Objected]);
        let due = cx.due("T-5", &body.receiver, received.at_ms, cx.periods.acceptance)?;
        let duty = "受理案件或说明理由提出异议 accept the case or object with reasons";
        out.push(cx.owe(&body.receiver, "T-5", duty, Some(due), decided));
    }
    Ok(())
}

/// C-3 for a department that received a complaint about a township's matter; C-2 or C-4 for
/// the township handling it.
pub(super) fn complaint(
    cx: &Context<'_>,
    body: &ComplaintBody,
    out: &mut Vec<Obligation>,
) -> Result<(), ObligationError> {
    let registered = cx.first(&[Action::Registered]).map(|e| e.at_ms);
    let Some(registered) = clock_start([registered, Some(body.received_at_ms)]) else {
        return Ok(());
    };
    if !cx.started(registered) {
        return Ok(());
    }
    let received_by = cx.or_owner(&body.received_by);
    let from_department = cx.directory.kind_of(received_by) == Some(OrgKind::Department);

    if from_department {
        let due = cx.due("C-3", received_by, registered, cx.periods.complaint_forward)?;
        let forwarded = cx.first(&[Action::Forwarded]);
        let duty = "书面告知乡镇投诉事宜 notify the township of the complaint in writing";
        out.push(cx.owe(received_by, "C-3", duty, Some(due), forwarded));
        if body.written_material {
            let handed = cx.first(&[Action::MaterialHandedOver]);
            let duty = "将书面材料移交乡镇 hand the complainant's written material to the township";
            out.push(cx.owe(received_by, "C-3", duty, Some(due), handed));
        }
    }

    // C-2 when the township received the complaint itself; C-4 when a department passed it
    // on, which also makes the township report the result back.
    let due = cx.due(
        "C-2",
        &body.handler,
        registered,
        cx.periods.complaint_answer,
    )?;
    let told = cx.first(&[Action::Answered, Action::ResultTold]);
    let (rule, duty) = if from_department {
        (
            "C-4",
            "告知投诉人调查处理结果 tell the complainant the result",
        )
    } else {
        ("C-2", "答复投诉人 answer the complainant")
    };
    out.push(cx.owe(&body.handler, rule, duty, Some(due), told));
    if from_department {
        let reported = cx.first(&[Action::ResultReported]);
        let duty = "向区直执法部门反馈处理结果 report the result to the department";
        out.push(cx.owe(&body.handler, "C-4", duty, Some(due), reported));
    }
    Ok(())
}

/// S-2: shared the day it is formed, or within an extension recorded before that day ends.
pub(super) fn shared_info(
    cx: &Context<'_>,
    body: &SharedInfoBody,
    out: &mut Vec<Obligation>,
) -> Result<(), ObligationError> {
    let formed_event = cx.first(&[Action::Formed]).map(|e| e.at_ms);
    let Some(formed) = clock_start([Some(body.formed_at_ms), formed_event]) else {
        return Ok(());
    };
    if !cx.started(formed) {
        return Ok(());
    }

    let owner = cx.record.envelope.owner.as_str();
    let same_day = cx.due("S-2", owner, formed, cx.periods.sharing)?;
    // An extension counts only if recorded while sharing was still on time: one recorded
    // after the day has ended cannot excuse the lateness it comes after.
    let extension = cx
        .all(Action::Extended)
        .filter(|e| e.at_ms < due_ms(&same_day))
        .find_map(|e| e.extension_wd.filter(|days| *days > 0));
    let (due, duty) = match extension {
        None => (
            same_day,
            "当日共享信息 share the information the day it is formed".to_owned(),
        ),
        Some(asked) => {
            // The notice allows at most 15 WD; a longer extension counts up to that bound.
            let days = working_days(asked).min(cx.periods.sharing_extension_limit_wd);
            let due = cx.due("S-2", owner, formed, Period::WorkingDays(days))?;
            let duty = format!(
                "延期共享信息（延长{days}个工作日） share the information within the {days} WD extension"
            );
            (due, duty)
        }
    };
    let shared = cx.first(&[Action::Shared]);
    out.push(cx.owe(owner, "S-2", duty, Some(due), shared));
    Ok(())
}

/// J-3: the notified department sends officers at once; when it does not, or refuses
/// without a reason, the notifying township reports to the District People's Government at
/// once.
pub(super) fn urgent_notice(
    cx: &Context<'_>,
    body: &UrgentNoticeBody,
    out: &mut Vec<Obligation>,
) -> Result<(), ObligationError> {
    let Some(notified) = cx.first(&[Action::Notified]) else {
        return Ok(());
    };
    let due = cx.due("J-3", &body.receiver, notified.at_ms, cx.periods.dispatch)?;
    let dispatched = cx.first(&[Action::Dispatched]);
    let refusal = cx.first(&[Action::Refused]);
    // The notice escalates only a refusal "不能说明理由" (without a reason); one with
    // reasons answers the notice, and a dispute over it goes up the D ladder instead.
    let explained = refusal.filter(|e| has_reason(e));
    let unexplained = refusal.filter(|e| !has_reason(e));

    let duty = "立即派员处理 send officers at once";
    let mut dispatch = cx.owe(&body.receiver, "J-3", duty, Some(due), dispatched);
    if let (None, Some(refusal)) = (dispatched, explained) {
        if refusal.at_ms <= due_ms(&due) {
            dispatch = superseded(dispatch);
        } else {
            dispatch.state = ObligationState::MetLate;
            dispatch.met_at_ms = Some(refusal.at_ms);
        }
    }
    out.push(dispatch);

    let answered_by = |limit: i64| {
        dispatched.is_some_and(|e| e.at_ms <= limit) || explained.is_some_and(|e| e.at_ms <= limit)
    };
    let overdue_since =
        (cx.at_ms > due_ms(&due) && !answered_by(due_ms(&due))).then_some(due_ms(&due));
    let Some(since) = [overdue_since, unexplained.map(|e| e.at_ms)]
        .into_iter()
        .flatten()
        .min()
    else {
        return Ok(());
    };
    let notifier = cx.or_owner(&body.sender);
    let report_due = cx.due("J-3", notifier, since, cx.periods.report_to_government)?;
    let reported = cx.first(&[Action::ReportedToGovernment]);
    let duty = "向区人民政府报告 report to the District People's Government";
    let mut report = cx.owe(notifier, "J-3", duty, Some(report_due), reported);
    // Once the department has answered, even late, a report not yet made no longer serves
    // its purpose; the department's own lateness stays visible on its J-3 obligation.
    if reported.is_none() && (dispatched.is_some() || explained.is_some()) {
        report = superseded(report);
    }
    out.push(report);
    Ok(())
}

/// for the department asked for assistance. A-5 (archives) sets no period.
pub(super) fn assistance(
    cx: &Context<'_>,
    body: &AssistanceBody,
    out: &mut Vec<Obligation>,
) -> Result<(), ObligationError> {
    let requested_event = cx.first(&[Action::Requested]).map(|e| e.at_ms);
    let Some(requested) = clock_start([requested_event, Some(body.requested_at_ms)]) else {
        return Ok(());
    };
    if !cx.started(requested) {
        return Ok(());
    }
    let provider = body.provider.as_str();

    match body.assistance_kind {
        AssistanceKind::TechnicalSupport => {
            let base = cx.due("A-1", provider, requested, cx.periods.opinion)?;
            let (due, extended_by) = announced_extensions(cx, "A-1", provider, base)?;
            let opinion = cx.first(&[Action::OpinionGiven]);
            let third_party = cx.first(&[Action::ThirdPartyNeeded]);
            let duty = with_extension(
                "出具书面意见和证据材料 give a written opinion and evidence",
                extended_by,
            );
            let mut a1 = cx.owe(provider, "A-1", duty, Some(due), opinion);
            if opinion.is_none() && third_party.is_some() {
                a1 = superseded(a1);
            }
            out.push(a1);

            if third_party.is_some() {
                let base = cx.due("A-2", provider, requested, cx.periods.guidance)?;
                let (due, extended_by) = announced_extensions(cx, "A-2", provider, base)?;
                let guidance = cx.first(&[Action::GuidanceGiven]);
                let duty =
                    "出具书面指导意见和材料 give written guidance for a third-party appraisal";
                let duty = with_extension(duty, extended_by);
                out.push(cx.owe(provider, "A-2", duty, Some(due), guidance));
            }
        }
        AssistanceKind::OnSite => {
            let due = cx.due("A-4", provider, requested, cx.periods.on_site)?;
            let sent = cx.first(&[Action::OfficersSent]);
            let duty = "指派执法人员协助现场处置 send officers to help on site";
            out.push(cx.owe(provider, "A-4", duty, Some(due), sent));
        }
        AssistanceKind::Archives => {}
    }
    Ok(())
}

/// each announced extension moves the due time on by its working days, counted from the
/// due time it extends, but only if announced before that due time ("应事先告知"), and only
/// until the extensions add up to the limit (`assistance_extension_limit_wd`): offices refuse
/// more, but concurrent announcements merged at the hub may exceed it. Returns the extended
/// due time, at `owner`'s end of day, and the working days added.
fn announced_extensions(
    cx: &Context<'_>,
    rule: &'static str,
    owner: &str,
    mut due: Due,
) -> Result<(Due, u32), ObligationError> {
    let limit = cx.periods.assistance_extension_limit_wd;
    let mut added = 0u16;
    for announcement in cx.all(Action::ExtensionAnnounced) {
        let Some(days) = announcement.extension_wd.filter(|d| *d > 0) else {
            continue;
        };
        let days = working_days(days).min(limit - added);
        if days > 0 && announcement.at_ms < due_ms(&due) {
            due = cx.extend(rule, owner, &due, days)?;
            added += days;
        }
    }
    Ok((due, added.into()))
}

fn with_extension(duty: &str, extended_by: u32) -> String {
    if extended_by == 0 {
        duty.to_owned()
    } else {
        format!("{duty}（已按A-3延长{extended_by}个工作日 extended by {extended_by} WD under A-3）")
    }
}

/// D-1 to D-3: one obligation for the ladder's current stage, owed by whoever must act next.
/// The notice sets no period for any stage, so it has no due time and is open until the
/// ladder ends in an agreement or a decision.
pub(super) fn dispute(
    cx: &Context<'_>,
    body: &DisputeBody,
    out: &mut Vec<Obligation>,
) -> Result<(), ObligationError> {
    let opened = cx.first(&[Action::Opened]).map(|e| e.at_ms);
    let Some(opened) = clock_start([opened, Some(cx.record.envelope.created_at_ms)]) else {
        return Ok(());
    };
    if !cx.started(opened) {
        return Ok(());
    }
    // Directory::parse refuses a directory without these two, so the ids are never blank
    // for a directory the node loaded.
    let justice = cx
        .directory
        .justice_bureau()
        .map(|o| o.id.as_str())
        .unwrap_or_default();
    let government = cx
        .directory
        .district_government()
        .map(|o| o.id.as_str())
        .unwrap_or_default();
    let reached = |action| cx.first(&[action]).is_some();

    let (rule, owner, duty) = if reached(Action::ProposalSubmitted) {
        (
            "D-3",
            government,
            "区人民政府作出决定 decide the dispute on the Justice Bureau's proposal",
        )
    } else if reached(Action::CoordinationFailed) {
        (
            "D-3",
            justice,
            "提出争议处理建议报区人民政府 submit a handling proposal to the District Government",
        )
    } else if reached(Action::CoordinationApplied) {
        (
            "D-2",
            justice,
            "协调争议 coordinate the dispute between the parties",
        )
    } else if reached(Action::NegotiationFailed) {
        // Either party may apply (D-2); the applicant is the one who wants it settled.
        (
            "D-2",
            body.applicant.as_str(),
            "申请区司法局协调 apply to the Justice Bureau for coordination",
        )
    } else {
        (
            "D-1",
            body.respondent.as_str(),
            "与对方自行协商 negotiate with the other party",
        )
    };

    let ended = cx.first(&[
        Action::NegotiationAgreed,
        Action::CoordinationAgreed,
        Action::GovernmentDecided,
    ]);
    let mut stage = cx.owe(owner, rule, duty, None, ended);
    if ended.is_none() && reached(Action::Closed) {
        // Withdrawn or settled outside the ladder: nobody owes the next step any more.
        stage = superseded(stage);
    }
    out.push(stage);
    Ok(())
}
