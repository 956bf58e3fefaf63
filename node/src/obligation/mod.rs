//! Obligations: who owes what, by when, under which rule of `mission.md`, and whether it was
//! met, met late or is overdue at a given instant — the visible form of O-1.
//!
//! [`obligations`] is a pure function of one record, the organisation directory, the
//! working-day calendar, the rule periods, the district's period policies and an instant;
//! `rules.rs` holds one function per record kind. Each node computes its own organisation's
//! obligations offline ([`answer`]); the hub computes the district's
//! ([`district_obligations`]) and per-organisation accountability ([`accountability`]).
//! Period arithmetic is [`crate::calendar`]'s; who may record which act is
//! [`crate::workflow`]'s, and a late act is still recorded there and shows here as met late.
//! The one act refused for coming late is an extension (S-2, A-3): [`check_extension_in_time`]
//! tells the office, with the same arithmetic as the obligations, that it would not count.

mod rules;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use linkage_proto::v1 as pb;
use tracing::{debug, instrument, warn};

use crate::calendar::{Calendar, CalendarError, Due, Period, PeriodPolicies, YearCalendar};
use crate::office::{Office, OfficeError};
use crate::org::Directory;
use crate::record::{Action, Body, Record, RecordKind, WorkflowEvent};
use crate::replica::{Replica, ReplicaError};
use crate::workflow::RuleViolation;

/// Why an obligation or a published calendar year could not be worked out. Each is logged:
/// one bad record must not hide every other organisation's obligations. A due time that
/// cannot be computed is also shown, as an open obligation without a due time that says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObligationError {
    #[error("record {record_id}: the {rule} due time of {owner} cannot be computed: {source}")]
    Due {
        record_id: String,
        rule: &'static str,
        owner: String,
        source: CalendarError,
    },
    #[error("calendar record {record_id} for {year} is not used: {source}")]
    Calendar {
        record_id: String,
        year: i32,
        source: CalendarError,
    },
}

/// Where an obligation stands at an instant. Labels are what office staff read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum ObligationState {
    /// Not yet met, and not yet due.
    Open,
    /// Met at or before its due time.
    Met,
    /// Met, but after its due time (O-1 keeps the lateness visible).
    MetLate,
    /// Not met, and its due time has passed.
    Overdue,
    /// No longer owed because a later act replaced it (A-2 replaces A-1; a dispatch, even a
    /// late one, replaces the J-3 report it made necessary).
    Superseded,
}

impl ObligationState {
    pub fn code(self) -> &'static str {
        self.into()
    }

    pub fn label(self) -> &'static str {
        match self {
            ObligationState::Open => "待履行 open",
            ObligationState::Met => "按时履行 met",
            ObligationState::MetLate => "逾期履行 met late",
            ObligationState::Overdue => "已逾期 overdue",
            ObligationState::Superseded => "已被取代 superseded",
        }
    }

    /// Met or superseded: nothing left to do.
    pub fn is_settled(self) -> bool {
        matches!(self, ObligationState::Met | ObligationState::Superseded)
    }
}

/// One duty an organisation owes on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obligation {
    pub record_id: String,
    pub kind: RecordKind,
    /// The organisation that owes it.
    pub owner: String,
    /// The rule of `mission.md` that imposes it, e.g. "T-1".
    pub rule: &'static str,
    /// What is owed, Chinese with English beside it.
    pub duty: String,
    /// `None` for a stage of the dispute ladder, which the notice gives no period.
    pub due: Option<Due>,
    pub state: ObligationState,
    /// When the act that met it was recorded, if it was by the instant asked about.
    pub met_at_ms: Option<i64>,
    pub title: String,
}

impl Obligation {
    pub fn due_ms(&self) -> Option<i64> {
        self.due.map(|d| d.at.timestamp_millis())
    }

    /// The gRPC form; an absent due or met time is 0, as proto3 scalars have no absence.
    pub fn to_pb(&self) -> pb::Obligation {
        pb::Obligation {
            record_id: self.record_id.clone(),
            kind: self.kind.as_str().to_owned(),
            owner: self.owner.clone(),
            rule: self.rule.to_owned(),
            duty: self.duty.clone(),
            due_ms: self.due_ms().unwrap_or(0),
            state: self.state.code().to_owned(),
            provisional: self.due.is_some_and(|d| d.provisional),
            met_at_ms: self.met_at_ms.unwrap_or(0),
            title: self.title.clone(),
        }
    }
}

/// How long each duty runs. The defaults are the notice's numbers (北司〔2021〕48号, restated in
/// `mission.md`) where it gives one, and a default taken here where it is silent. Unlike the
/// period policies they are not read from configuration: every node uses these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RulePeriods {
    /// T-1: transfer to the competent party, from discovery.
    pub transfer: Period,
    /// T-1: the same, when urgent.
    pub transfer_urgent: Period,
    /// T-2: order an ongoing violation stopped and notify in writing, from discovery.
    pub stop_ongoing: Period,
    /// T-5: acknowledge receipt, from the transfer being sent.
    pub receipt: Period,
    /// T-5: accept or object, from receipt.
    pub acceptance: Period,
    /// C-3: a department notifies the township in writing (and hands over written material),
    /// from registration.
    pub complaint_forward: Period,
    /// C-2, C-4: the township answers the complainant, and reports the result to the
    /// department, from registration.
    pub complaint_answer: Period,
    /// S-2: share information, from when it was formed.
    pub sharing: Period,
    /// S-2: the most sharing may be extended, in working days after the day it was formed.
    pub sharing_extension_limit_wd: u16,
    /// the most the announced extensions of one request may add up to, in working days.
    pub assistance_extension_limit_wd: u16,
    /// J-3: the notified department sends officers, from the notice.
    pub dispatch: Period,
    /// J-3: the notifying township reports to the District People's Government, from the
    /// dispatch falling overdue or an unexplained refusal.
    pub report_to_government: Period,
    /// the department gives a written opinion and evidence, from the request.
    pub opinion: Period,
    /// the department gives written guidance for a third-party appraisal, from the
    /// request.
    pub guidance: Period,
    /// the department sends officers to help on site, from the request.
    pub on_site: Period,
}

impl Default for RulePeriods {
    fn default() -> Self {
        RulePeriods {
            // The notice: "应当在3个工作日内移送…情况紧急的，应当在24小时内".
            transfer: Period::WorkingDays(3),
            transfer_urgent: Period::Hours(24),
            // The notice: "立即劝阻…及时书面告知"; "at once" is the mission's 2-hour default,
            // which the owner's PeriodPolicy::at_once carries.
            stop_ongoing: Period::AtOnce,
            // Default taken here: the notice has no receipt step; T-5 comes from the sister
            // mechanisms of other Hebei counties, which give 3 WD for each step.
            receipt: Period::WorkingDays(3),
            acceptance: Period::WorkingDays(3),
            // Default taken here: the notice says "及时书面告知乡镇" (promptly); the same day
            // keeps a complaint from waiting in a department's in-tray overnight.
            complaint_forward: Period::SameDay,
            // Default taken here: the notice gives no period for answering; 15 WD is the
            // usual bound for answering complaints about market and urban matters.
            complaint_answer: Period::WorkingDays(15),
            // The notice: "自形成当日及时共享…可以适当延长15个工作日".
            sharing: Period::SameDay,
            sharing_extension_limit_wd: 15,
            // Default taken here: A-3 says only "相应延长" (extended accordingly). The notice's
            // one bound on an extension is S-2's 15 WD, and a long appraisal (A-3's own case)
            // runs for weeks, so extensions add up to at most 15 WD
            // (workflow::MAX_ASSISTANCE_EXTENSION_WD).
            assistance_extension_limit_wd: 15,
            // The notice: "应立即派…乡镇应立即向区人民政府报告"; both "at once".
            dispatch: Period::AtOnce,
            report_to_government: Period::AtOnce,
            // The notice: "应在5个工作日内提出书面意见" and "应于3个工作日内提出书面指导意见".
            opinion: Period::WorkingDays(5),
            guidance: Period::WorkingDays(3),
            // Default taken here: the notice says "及时指派" (promptly) for an urgent matter
            // where evidence may be lost, so it is treated as "at once".
            on_site: Period::AtOnce,
        }
    }
}

/// Every obligation `record` gives rise to, as it stands at `at_ms` (Unix milliseconds).
///
/// Only acts recorded at or before `at_ms` count, so a view "as of" an earlier instant shows
/// what was owed and overdue then. A duty whose clock had not started by `at_ms` is not
/// listed. The directory names the Justice Bureau and the District Government, who owe the
/// upper stages of the dispute ladder (D-2, D-3), and tells departments from townships (C-3).
/// Each duty's period ends by the policy of the organisation that owes it (its end of day,
/// its "at once"), taken from `policies`.
pub fn obligations(
    record: &Record,
    directory: &Directory,
    calendar: &Calendar,
    periods: &RulePeriods,
    policies: &PeriodPolicies,
    at_ms: i64,
) -> Vec<Obligation> {
    let context = rules::Context::new(record, directory, calendar, periods, policies, at_ms);
    let mut found = Vec::new();
    let result = match &record.body {
        Body::Transfer(body) => rules::transfer(&context, body, &mut found),
        Body::Complaint(body) => rules::complaint(&context, body, &mut found),
        Body::SharedInfo(body) => rules::shared_info(&context, body, &mut found),
        Body::UrgentNotice(body) => rules::urgent_notice(&context, body, &mut found),
        Body::Assistance(body) => rules::assistance(&context, body, &mut found),
        Body::Dispute(body) => rules::dispute(&context, body, &mut found),
        // Cases, consultations (J-1, J-2), liaison directories (J-4) and calendars carry no
        // period in the notice.
        Body::Case(_) | Body::Consultation(_) | Body::LiaisonDirectory(_) | Body::Calendar(_) => {
            Ok(())
        }
    };
    if let Err(error) = result {
        let ObligationError::Due {
            record_id,
            rule,
            owner,
            source,
        } = &error
        else {
            warn!(record = %record.id(), %error, "obligation skipped");
            return found;
        };
        warn!(record = %record_id, rule, owner = %owner, %error, "obligation due time unknown");
        // Shown rather than dropped (O-1): an office must see that it may owe something here.
        // The rule's function stops at its first failure, so later duties of the record wait
        // until the record's times are corrected.
        found.push(Obligation {
            record_id: record_id.clone(),
            kind: record.kind(),
            owner: owner.clone(),
            rule,
            duty: format!(
                "期限无法计算，请核对记录中的时间 the due time cannot be computed; check the record's times ({source})"
            ),
            due: None,
            state: ObligationState::Open,
            met_at_ms: None,
            title: record.body.title(),
        });
    }
    found
}

/// S-2, A-3: refuses `event`, an extension about to be appended to `record`, when it comes
/// after the period it extends has ended. Such an extension would be stored but not counted
/// (the notice: extended "where it is impossible" on the day, and A-3's "应事先告知", said in
/// advance), so the office would believe in a due time that no obligation shows. Any other
/// event passes.
///
/// The due times are the obligations' own, as at the extension's stated time, with the same
/// calendar, rule periods and period policies, so the check and the obligations cannot
/// disagree. Only the office checks this: the hub admits an extension a device made before it
/// saw the deadline pass elsewhere, and the obligations then leave it uncounted.
pub fn check_extension_in_time(
    record: &Record,
    event: &WorkflowEvent,
    directory: &Directory,
    calendar: &Calendar,
    periods: &RulePeriods,
    policies: &PeriodPolicies,
) -> Result<(), RuleViolation> {
    let (rule, extended): (&'static str, &[&str]) = match event.action {
        Action::Extended => ("S-2", &["S-2"]),
        // An announced extension moves whichever of is still owed.
        Action::ExtensionAnnounced => ("A-3", &["A-1", "A-2"]),
        _ => return Ok(()),
    };
    let latest_due = obligations(record, directory, calendar, periods, policies, event.at_ms)
        .iter()
        .filter(|o| extended.contains(&o.rule) && o.state != ObligationState::Superseded)
        .filter_map(Obligation::due_ms)
        .max();
    // No clock running yet, or none that can be computed: nothing to be late for.
    let Some(latest_due) = latest_due else {
        return Ok(());
    };
    if event.at_ms < latest_due {
        return Ok(());
    }
    let shown = crate::calendar::format_millis;
    Err(RuleViolation {
        rule,
        message: format!(
            "延期须在期限届满前提出，逾期提出的延期不予计算 an extension counts only if recorded before the period it extends ends ({}); this one is stated at {}",
            shown(latest_due),
            shown(event.at_ms)
        ),
    })
}

/// The official calendar plus every year the Justice Bureau has published as a calendar
/// record. Records are applied oldest first, so a re-issued year replaces the earlier one; a
/// record whose dates do not make a valid year is skipped with a warning, and so is one that
/// would change an official (embedded) year: nodes refuse to create such a record now, but one
/// made before they did must not move official deadlines.
pub fn calendar_with_published(records: &[Record]) -> Calendar {
    let mut published: Vec<(&Record, &crate::record::CalendarBody)> = records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Calendar(body) => Some((r, body)),
            _ => None,
        })
        .collect();
    published.sort_by(|(a, _), (b, _)| {
        (a.envelope.created_at_ms, a.id()).cmp(&(b.envelope.created_at_ms, b.id()))
    });

    let mut calendar = Calendar::official();
    for (record, body) in published {
        let year = YearCalendar::from_dates(body.year, &body.off_days, &body.make_up_days)
            .and_then(|year| calendar.publish(year.with_source(body.source.clone())));
        match year {
            Ok(_) => {}
            Err(source) => {
                let error = ObligationError::Calendar {
                    record_id: record.id().to_owned(),
                    year: body.year,
                    source,
                };
                warn!(%error, "published calendar year skipped");
            }
        }
    }
    calendar
}

/// The calendar `replica` holds: the official years plus the calendar records it has
/// received. Loads only calendar records; a document still missing part of its history is
/// skipped until complete, as [`Office::all_records`] does. Blocking.
pub fn calendar_held(replica: &Replica) -> Result<Calendar, ReplicaError> {
    let mut records = Vec::new();
    for summary in replica.summaries()? {
        if summary.kind != RecordKind::Calendar.as_str() {
            continue;
        }
        match replica.record(&summary.id) {
            Ok(record) => records.push(record),
            Err(ReplicaError::Doc(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(calendar_with_published(&records))
}

/// Every obligation of every record, sorted by due time (ladder stages, which have none,
/// last), then by record and rule.
pub fn district_obligations(
    records: &[Record],
    directory: &Directory,
    calendar: &Calendar,
    periods: &RulePeriods,
    policies: &PeriodPolicies,
    at_ms: i64,
) -> Vec<Obligation> {
    let mut all: Vec<Obligation> = records
        .iter()
        .flat_map(|r| obligations(r, directory, calendar, periods, policies, at_ms))
        .collect();
    sort_by_due(&mut all);
    all
}

fn sort_by_due(obligations: &mut [Obligation]) {
    obligations.sort_by(|a, b| {
        let due = |o: &Obligation| o.due_ms().unwrap_or(i64::MAX);
        due(a)
            .cmp(&due(b))
            .then_with(|| a.record_id.cmp(&b.record_id))
            .then_with(|| a.rule.cmp(b.rule))
    });
}

/// One organisation's record over a period (O-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accountability {
    pub org: String,
    pub met_on_time: usize,
    pub met_late: usize,
    pub overdue: usize,
    pub open: usize,
    /// The overdue obligation with the earliest due time: what the organisation has dragged
    /// its feet on longest.
    pub oldest_overdue: Option<Obligation>,
}

/// Per-organisation counts of the obligations whose due time falls in the period
/// `from_ms < due <= to_ms`, sorted by organisation. The period is closed at its end so that
/// a due time of 24:00 falls in the day it ends. Superseded obligations and ladder stages
/// (which have no due time) are not counted.
pub fn accountability(obligations: &[Obligation], from_ms: i64, to_ms: i64) -> Vec<Accountability> {
    let mut by_org: BTreeMap<&str, Accountability> = BTreeMap::new();
    let in_period = obligations.iter().filter(|o| {
        o.due_ms().is_some_and(|due| from_ms < due && due <= to_ms)
            && o.state != ObligationState::Superseded
    });
    for obligation in in_period {
        let entry = by_org
            .entry(obligation.owner.as_str())
            .or_insert_with(|| Accountability {
                org: obligation.owner.clone(),
                met_on_time: 0,
                met_late: 0,
                overdue: 0,
                open: 0,
                oldest_overdue: None,
            });
        match obligation.state {
            ObligationState::Met => entry.met_on_time += 1,
            ObligationState::MetLate => entry.met_late += 1,
            ObligationState::Open => entry.open += 1,
            ObligationState::Overdue => {
                entry.overdue += 1;
                let older = entry
                    .oldest_overdue
                    .as_ref()
                    .is_none_or(|o| obligation.due_ms() < o.due_ms());
                if older {
                    entry.oldest_overdue = Some(obligation.clone());
                }
            }
            ObligationState::Superseded => {}
        }
    }
    by_org.into_values().collect()
}

/// The node's `Obligations` RPC: obligations over every record this node holds, as at
/// `req.at_ms` (now, by the replica's clock, if absent), for `req.org` (this node's
/// organisation if empty, every organisation if "all"). Met and superseded obligations are
/// left out unless `include_met`; met-late ones stay, since O-1 wants lateness seen.
#[instrument(skip(office, req), fields(org = %office.org(), asked = %req.org))]
pub async fn answer(
    office: &Office,
    req: pb::ObligationsRequest,
) -> Result<pb::ObligationsResponse, OfficeError> {
    let at_ms = req.at_ms.unwrap_or_else(|| office.replica().now_ms());
    let org = if req.org.is_empty() {
        office.org()
    } else {
        req.org.as_str()
    };
    let all = everything_known(office, at_ms).await?;

    let obligations: Vec<pb::Obligation> = all
        .iter()
        .filter(|o| org == "all" || o.owner == org)
        .filter(|o| req.include_met || !o.state.is_settled())
        .map(Obligation::to_pb)
        .collect();
    debug!(count = obligations.len(), at_ms, "obligations answered");
    Ok(pb::ObligationsResponse { obligations, at_ms })
}

/// Serves `Accountability`: obligations due in `(from, to]`, judged at `at` (default now).
pub async fn report(
    office: &Office,
    req: pb::AccountabilityRequest,
) -> Result<pb::AccountabilityResponse, OfficeError> {
    if req.to_ms <= req.from_ms {
        return Err(OfficeError::Invalid(format!(
            "the report's period must end after it starts (from {} to {})",
            crate::calendar::format_millis(req.from_ms),
            crate::calendar::format_millis(req.to_ms)
        )));
    }
    let at_ms = req.at_ms.unwrap_or_else(|| office.replica().now_ms());
    let org = if req.org.is_empty() {
        office.org()
    } else {
        req.org.as_str()
    };
    let all = everything_known(office, at_ms).await?;
    let rows = accountability(&all, req.from_ms, req.to_ms)
        .into_iter()
        .filter(|row| org == "all" || row.org == org)
        .map(|row| pb::AccountabilityRow {
            org: row.org,
            met_on_time: row.met_on_time as u64,
            met_late: row.met_late as u64,
            overdue: row.overdue as u64,
            open: row.open as u64,
            oldest_overdue: row.oldest_overdue.as_ref().map(Obligation::to_pb),
        })
        .collect();
    Ok(pb::AccountabilityResponse {
        rows,
        from_ms: req.from_ms,
        to_ms: req.to_ms,
        at_ms,
    })
}

/// Every obligation arising from the records this replica holds, judged at `at_ms` by the
/// period policies the office was configured with (the `[periods]` table, the same on every
/// node and the hub of a district). The rule periods are [`RulePeriods::default`] everywhere.
async fn everything_known(office: &Office, at_ms: i64) -> Result<Vec<Obligation>, OfficeError> {
    crate::calendar::from_unix_millis(at_ms)
        .map_err(|e| OfficeError::Invalid(format!("at_ms: {e}")))?;
    let records = office.all_records().await?;
    let calendar = calendar_with_published(&records);
    Ok(district_obligations(
        &records,
        office.directory(),
        &calendar,
        &RulePeriods::default(),
        office.period_policies(),
        at_ms,
    ))
}
