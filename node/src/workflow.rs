//! Who may do what: the mechanism's workflow rules, checked at the node before a write and at
//! the hub before it accepts a change. Each refusal names its rule ID from `mission.md`.
//!
//! Deadlines are not checked here (a late act is still recorded and shows as met late); they
//! are [`crate::obligation`]'s business, which also refuses, at the office, an extension that
//! comes too late to count. Stated instants are checked here, for plausibility only.

use serde::Serialize;

use crate::calendar::{Calendar, YearCalendar, plausible_instant};
use crate::org::{Directory, Lookup, OrgKind};
use crate::record::{
    Action, Body, MAX_RECORD_ID_BYTES, MaterialKind, MeetingKind, Record, RecordKind, Status,
    WorkflowEvent,
};

/// The most an information item's sharing may be extended (S-2).
pub const MAX_SHARING_EXTENSION_WD: u32 = 15;

/// The most the extensions announced on one assistance request may add up to. The
/// notice sets no bound ("相应延长", extended accordingly); this default takes its one bound
/// on an extension, S-2's 15 WD, which leaves a long appraisal weeks while an unbounded
/// extension would let a department defer its answer for ever. The obligations count no more
/// (`RulePeriods::assistance_extension_limit_wd`).
pub const MAX_ASSISTANCE_EXTENSION_WD: u32 = 15;

/// The years a calendar record may publish: those of [`crate::calendar::PLAUSIBLE_MS`].
const CALENDAR_YEARS: std::ops::RangeInclusive<i32> = 2000..=2099;

/// A refused write, with the rule that refuses it. `message` is for people: it says what was
/// wrong and, where it helps, who may do it instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{rule}: {message}")]
pub struct RuleViolation {
    pub rule: &'static str,
    pub message: String,
}

impl RuleViolation {
    /// Whether the request itself was wrong (a record of the wrong shape, an organisation the
    /// directory does not know) rather than a step the cooperation rules do not allow now:
    /// told to callers as invalid input, not as refused by the rules.
    pub fn is_bad_input(&self) -> bool {
        matches!(self.rule, RULE_SCHEMA | RULE_DIRECTORY | RULE_LIMITS)
    }
}

fn refuse(rule: &'static str, message: impl Into<String>) -> Result<(), RuleViolation> {
    Err(RuleViolation {
        rule,
        message: message.into(),
    })
}

/// Rule ID used when a record does not have the shape of its kind: a mislabelled kind, an
/// impossible instant.
pub const RULE_SCHEMA: &str = "schema";

/// Refuses a stated instant outside [`crate::calendar::PLAUSIBLE_MS`], naming `field` and
/// showing the value as a Beijing instant.
fn require_plausible(field: &str, millis: i64) -> Result<(), RuleViolation> {
    match plausible_instant(millis) {
        Ok(_) => Ok(()),
        Err(e) => refuse(RULE_SCHEMA, format!("{field}: {e}")),
    }
}

/// Rule ID used when a record or a change is past a size limit.
pub const RULE_LIMITS: &str = "limits";

/// The longest text a single field may hold. Bodies are statements and notes, not files:
/// materials travel by name; 64 KiB is pages of text.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// The most items one list field of a record may hold.
pub const MAX_FIELD_ITEMS: usize = 1024;

/// The most attachments one act may name, and the longest name.
pub const MAX_ATTACHMENTS: usize = 256;
pub const MAX_ATTACHMENT_NAME_BYTES: usize = 1024;

/// Refuses an act whose texts or attachment names are past their limits: checked wherever an
/// act is (an office's own, before it loads the record, and a peer's at the hub's gate).
pub fn require_event_within_limits(event: &WorkflowEvent) -> Result<(), RuleViolation> {
    let texts = [
        ("person", Some(&event.person)),
        ("note", Some(&event.note)),
        ("reason", event.reason.as_ref()),
    ];
    for (name, text) in texts {
        if let Some(text) = text
            && text.len() > MAX_FIELD_BYTES
        {
            return refuse(
                RULE_LIMITS,
                format!(
                    "the {} act's {name} is {} bytes, over the limit of {MAX_FIELD_BYTES}",
                    event.action,
                    text.len()
                ),
            );
        }
    }
    if event.attachments.len() > MAX_ATTACHMENTS
        || event
            .attachments
            .iter()
            .any(|name| name.len() > MAX_ATTACHMENT_NAME_BYTES)
    {
        return refuse(
            RULE_LIMITS,
            format!(
                "the {} act names {} attachments; at most {MAX_ATTACHMENTS} attachment names of at most {MAX_ATTACHMENT_NAME_BYTES} bytes each",
                event.action,
                event.attachments.len()
            ),
        );
    }
    Ok(())
}

/// What in `value` (a body or a patch, as JSON) is past a field's limits, named by its path:
/// a text past [`MAX_FIELD_BYTES`] or a list past [`MAX_FIELD_ITEMS`].
pub fn oversized_field(value: &serde_json::Value) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &str) -> Option<String> {
        let at = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        match value {
            serde_json::Value::String(s) if s.len() > MAX_FIELD_BYTES => Some(format!(
                "field {path} is {} bytes, over the limit of {MAX_FIELD_BYTES}",
                s.len()
            )),
            serde_json::Value::Array(items) if items.len() > MAX_FIELD_ITEMS => Some(format!(
                "field {path} has {} items, over the limit of {MAX_FIELD_ITEMS}",
                items.len()
            )),
            serde_json::Value::Array(items) => (0..)
                .zip(items)
                .find_map(|(i, v): (usize, _)| walk(v, &format!("{path}[{i}]"))),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| walk(v, &at(k))),
            _ => None,
        }
    }
    walk(value, "")
}

/// Rule ID used when an id is not in the organisation directory.
pub const RULE_DIRECTORY: &str = "directory";
/// Rule ID used when an organisation acts on a record it is not a party to, or in another's
/// name.
pub const RULE_PARTY: &str = "party";

fn require_org(dir: &Directory, id: &str, role: &str) -> Result<(), RuleViolation> {
    match dir.lookup(id) {
        Lookup::Org(_) => Ok(()),
        Lookup::Unit(unit) => refuse(
            RULE_DIRECTORY,
            format!(
                "{role} {id:?} is an internal unit of {}; name the organisation itself",
                dir.describe(&unit.parent)
            ),
        ),
        Lookup::Unknown => refuse(
            RULE_DIRECTORY,
            format!("{role} {id:?} is not an organisation in the directory"),
        ),
    }
}

fn require_party(record: &Record, org: &str, role: &str) -> Result<(), RuleViolation> {
    if record.envelope.is_party(org) {
        Ok(())
    } else {
        refuse(
            RULE_PARTY,
            format!("{role} {org:?} must be among the record's parties"),
        )
    }
}

/// C-5: a complaint that names its complainant has no parties but the unit that received it
/// and the township handling it. A record travels whole to every party's node, so another
/// party would hold who complained; the district's oversight reads complaints through the
/// hub's feed, which leaves the complainant out.
pub fn require_complainant_confined(dir: &Directory, record: &Record) -> Result<(), RuleViolation> {
    let Body::Complaint(complaint) = &record.body else {
        return Ok(());
    };
    if complaint.complainant.is_none() {
        return Ok(());
    }
    let handling = [complaint.received_by.as_str(), complaint.handler.as_str()];
    match record
        .envelope
        .parties
        .iter()
        .find(|party| !handling.contains(&party.as_str()))
    {
        Some(other) => refuse(
            "C-5",
            format!(
                "the complainant's identity reaches only the units handling the complaint; {} does not handle {}",
                dir.describe(other),
                record.id()
            ),
        ),
        None => Ok(()),
    }
}

/// An act done by an internal unit names a unit of the organisation acting.
fn require_unit_of(dir: &Directory, unit: &str, org: &str) -> Result<(), RuleViolation> {
    match dir.lookup(unit) {
        Lookup::Unit(u) if u.parent == org => Ok(()),
        _ => refuse(
            RULE_DIRECTORY,
            format!("{unit:?} is not an internal unit of {org}"),
        ),
    }
}

/// Checks a record about to be created by `acting_org`.
pub fn validate_create(
    dir: &Directory,
    acting_org: &str,
    record: &Record,
) -> Result<(), RuleViolation> {
    let envelope = &record.envelope;
    if envelope.owner != acting_org {
        return refuse(
            RULE_PARTY,
            format!(
                "a node of {acting_org} cannot create a record owned by {:?}",
                envelope.owner
            ),
        );
    }
    if envelope.kind != record.kind().as_str() {
        return refuse(
            RULE_SCHEMA,
            format!(
                "envelope kind {:?} does not match a {} body",
                envelope.kind,
                record.kind()
            ),
        );
    }
    require_party(record, acting_org, "the owner")?;
    // The office's own API refuses such a field before it writes; a peer's change is held to
    // the same limits here, where the hub's gate checks what a record may hold.
    if let Some(oversized) = oversized_field(&record.body.to_json_value()) {
        return refuse(RULE_LIMITS, oversized);
    }
    // A reference no record id could match would dangle for good: say so now.
    for (field, id) in record.body.references() {
        if id.len() > MAX_RECORD_ID_BYTES {
            return refuse(
                RULE_SCHEMA,
                format!(
                    "{field} is {} bytes, longer than any record id (at most {MAX_RECORD_ID_BYTES} bytes)",
                    id.len()
                ),
            );
        }
    }
    // 0 stands for "not recorded" in a body; whether a field may be left so is its rule's
    // business below (T-1, S-2). The events are checked too, so that an edited body is
    // checked as a record its owner could have created, events and all.
    for (field, millis) in record.body.instants() {
        if millis != 0 {
            require_plausible(field, millis)?;
        }
    }
    for event in &record.events {
        require_event_within_limits(event)?;
        require_plausible(&format!("at_ms of the {} event", event.action), event.at_ms)?;
        if let Some(unit) = &event.unit {
            require_unit_of(dir, unit, &event.org)?;
        }
    }

    match &record.body {
        Body::Transfer(t) => {
            // T-4: the sender is the government or department, never its internal unit.
            if let Lookup::Unit(unit) = dir.lookup(&t.sender) {
                return refuse(
                    "T-4",
                    format!(
                        "a transfer is sent in the name of the department or township government, never of an internal unit: {} may not send it; {} may",
                        dir.describe(&t.sender),
                        dir.describe(&unit.parent)
                    ),
                );
            }
            require_org(dir, &t.sender, "sender")?;
            if t.sender != acting_org {
                return refuse(
                    "T-4",
                    format!(
                        "the transfer must be sent in the name of the organisation that owns the record, {acting_org}, not {:?}",
                        t.sender
                    ),
                );
            }
            require_org(dir, &t.receiver, "receiver")?;
            if t.receiver == t.sender {
                return refuse(
                    "T-1",
                    "a transfer goes to another, competent party, not to its sender",
                );
            }
            let townships = [t.sender.as_str(), t.receiver.as_str()]
                .iter()
                .filter(|id| dir.kind_of(id) == Some(OrgKind::Township))
                .count();
            if townships != 1 {
                return refuse(
                    "T-1",
                    "a transfer goes between a township and a district department",
                );
            }
            require_party(record, &t.receiver, "the receiver")?;
            if t.facts.trim().is_empty() {
                return refuse(
                    "T-3",
                    "a transfer carries a written statement of the basic facts (facts)",
                );
            }
            if !t
                .materials
                .iter()
                .any(|m| m.kind == MaterialKind::TransferLetter)
            {
                return refuse(
                    "T-3",
                    "a transfer carries its transfer letter (移送函) among its materials",
                );
            }
            if t.discovered_at_ms <= 0 {
                return refuse(
                    "T-1",
                    "the transfer clock starts at discovery: discovered_at_ms is required",
                );
            }
            if t.discovered_at_ms > record.envelope.created_at_ms {
                return refuse(
                    "T-1",
                    "a transfer is sent after the matter is discovered: discovered_at_ms is later than the transfer itself",
                );
            }
        }
        Body::Complaint(c) => {
            if c.received_by != acting_org {
                return refuse(
                    "C-1",
                    format!(
                        "the complaint is registered by the unit that received it, this node's {acting_org}, not {:?}",
                        c.received_by
                    ),
                );
            }
            require_org(dir, &c.handler, "handler")?;
            if dir.kind_of(&c.handler) != Some(OrgKind::Township) {
                return refuse(
                    "C-3",
                    format!(
                        "complaints about devolved matters are handled by a township; {} is not one",
                        dir.describe(&c.handler)
                    ),
                );
            }
            require_party(record, &c.handler, "the handling township")?;
            require_complainant_confined(dir, record)?;
        }
        Body::SharedInfo(s) => {
            if !(1..=8).contains(&s.category) {
                return refuse(
                    "S-1",
                    format!("information category must be 1 to 8, got {}", s.category),
                );
            }
            if s.formed_at_ms <= 0 {
                return refuse(
                    "S-2",
                    "the sharing clock starts when the information is formed: formed_at_ms is required",
                );
            }
        }
        Body::UrgentNotice(n) => {
            if n.sender != acting_org {
                return refuse(
                    "J-3",
                    format!(
                        "the notice is sent by the organisation that owns the record, {acting_org}, not {:?}",
                        n.sender
                    ),
                );
            }
            require_org(dir, &n.receiver, "receiver")?;
            if n.receiver == n.sender {
                return refuse(
                    "J-3",
                    "an urgent notice goes to the department whose jurisdiction is concerned, not to its sender",
                );
            }
            require_party(record, &n.receiver, "the receiver")?;
        }
        Body::Consultation(c) => {
            if c.convener != acting_org {
                return refuse(
                    "J-1",
                    format!(
                        "the meeting is convened by the organisation that owns the record, {acting_org}, not {:?}",
                        c.convener
                    ),
                );
            }
            if c.meeting_kind == MeetingKind::Special
                && dir.kind_of(acting_org) != Some(OrgKind::Township)
            {
                return refuse(
                    "J-2",
                    "a special meeting on a major case is convened by a township",
                );
            }
        }
        Body::Assistance(a) => {
            if a.requester != acting_org {
                return refuse(
                    "A-1",
                    format!(
                        "assistance is requested by the organisation that owns the record, {acting_org}, not {:?}",
                        a.requester
                    ),
                );
            }
            if dir.kind_of(acting_org) != Some(OrgKind::Township) {
                return refuse("A-1", "enforcement assistance is requested by a township");
            }
            require_org(dir, &a.provider, "provider")?;
            if dir.kind_of(&a.provider) != Some(OrgKind::Department) {
                return refuse(
                    "A-1",
                    format!(
                        "assistance is asked of a district department; {} is not one",
                        dir.describe(&a.provider)
                    ),
                );
            }
            require_party(record, &a.provider, "the department asked")?;
        }
        Body::Dispute(d) => {
            if d.applicant != acting_org {
                return refuse(
                    "D-1",
                    format!(
                        "a dispute is opened by the organisation that owns the record, {acting_org}, not {:?}",
                        d.applicant
                    ),
                );
            }
            require_org(dir, &d.respondent, "respondent")?;
            if d.respondent == d.applicant {
                return refuse(
                    "D-1",
                    "a dispute is between two parties: the respondent is the applicant itself",
                );
            }
            require_party(record, &d.respondent, "the other party")?;
        }
        Body::LiaisonDirectory(l) => {
            if l.org != acting_org {
                return refuse(
                    "J-4",
                    format!(
                        "an organisation names its own liaison persons; this node is {acting_org}, not {:?}",
                        l.org
                    ),
                );
            }
        }
        Body::Calendar(c) => {
            if dir.kind_of(acting_org) != Some(OrgKind::JusticeBureau) {
                return refuse(
                    "calendar",
                    "the working-day calendar is published by the District Justice Bureau",
                );
            }
            if !CALENDAR_YEARS.contains(&c.year) {
                return refuse(
                    "calendar",
                    format!(
                        "calendar year {} is out of range ({}–{})",
                        c.year,
                        CALENDAR_YEARS.start(),
                        CALENDAR_YEARS.end()
                    ),
                );
            }
            let year = match YearCalendar::from_dates(c.year, &c.off_days, &c.make_up_days) {
                Ok(year) => year,
                Err(e) => return refuse("calendar", e.to_string()),
            };
            // The embedded years come from the State Council's notices: a record may repeat one
            // but not change it, or a single record would move every deadline of the year.
            if let Err(e) = Calendar::official().check_publishable(&year) {
                return refuse("calendar", e.to_string());
            }
            if c.off_days.is_empty() {
                return refuse(
                    "calendar",
                    format!(
                        "{0}年日历须列出法定节假日 the {0} calendar lists its statutory holidays (off_days is empty)",
                        c.year
                    ),
                );
            }
            if c.source.trim().is_empty() {
                return refuse(
                    "calendar",
                    "须注明日期所依据的国务院通知 name the State Council notice the dates come from (source)",
                );
            }
        }
        Body::Case(_) => {}
    }
    // After the body's own checks, which name the field (sender, respondent, ...) that put an
    // unknown organisation among the parties.
    for party in &envelope.parties {
        require_org(dir, party, "party")?;
    }
    Ok(())
}

/// The role an organisation plays on one record, for the action table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Owner,
    /// The other side: the receiver of a transfer or notice, the handler of a complaint, the
    /// department asked for assistance, the respondent of a dispute.
    Counterpart,
    JusticeBureau,
    DistrictGovernment,
    OtherParty,
}

fn role_of(dir: &Directory, record: &Record, org: &str) -> Role {
    let counterpart = match &record.body {
        Body::Transfer(t) => Some(t.receiver.as_str()),
        Body::Complaint(c) => Some(c.handler.as_str()),
        Body::UrgentNotice(n) => Some(n.receiver.as_str()),
        Body::Assistance(a) => Some(a.provider.as_str()),
        Body::Dispute(d) => Some(d.respondent.as_str()),
        _ => None,
    };
    if counterpart == Some(org) && org != record.envelope.owner {
        Role::Counterpart
    } else if org == record.envelope.owner {
        Role::Owner
    } else {
        match dir.kind_of(org) {
            Some(OrgKind::JusticeBureau) => Role::JusticeBureau,
            Some(OrgKind::DistrictGovernment) => Role::DistrictGovernment,
            _ => Role::OtherParty,
        }
    }
}

/// Checks `event`, about to be appended by `acting_org` to `record`.
pub fn validate_event(
    dir: &Directory,
    acting_org: &str,
    record: &Record,
    event: &WorkflowEvent,
) -> Result<(), RuleViolation> {
    check_event(dir, acting_org, record, event, Vantage::Office)
}

/// Where an act is checked, which decides whether checks that depend on the order of acts
/// apply.
///
/// At the office the act is checked against the record as its author sees it, so "the record
/// is closed" and "the item is already shared" are facts and the act is refused. At the hub an
/// act may have been made on a device that had not yet seen a closing or a sharing by another
/// device; it was valid where it was made, and refusing it would drop an office's work and keep
/// the record from converging (simulation seeds 133 and 783). Such acts are admitted; a
/// contradiction surfaces as a conflict, and the obligations count only acts made in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vantage {
    Office,
    Hub,
}

fn check_event(
    dir: &Directory,
    acting_org: &str,
    record: &Record,
    event: &WorkflowEvent,
    vantage: Vantage,
) -> Result<(), RuleViolation> {
    if event.org != acting_org {
        return refuse(
            RULE_PARTY,
            format!(
                "a node of {acting_org} cannot record an act of {:?}",
                event.org
            ),
        );
    }
    require_party(record, acting_org, "the acting organisation")?;
    require_event_within_limits(event)?;
    require_plausible(&format!("at_ms of the {} event", event.action), event.at_ms)?;
    if let Some(unit) = &event.unit {
        require_unit_of(dir, unit, acting_org)?;
    }
    if vantage == Vantage::Office && record.has(Action::Closed) && event.action != Action::Updated {
        return refuse("workflow", format!("record {} is closed", record.id()));
    }
    // An act stated before the record was opened would start its clocks before it existed
    // (an acknowledgement of a transfer before it was sent makes T-5 due years early). At the
    // hub a device's clock may have run behind another's, so only the office refuses it.
    let opened_at = record.envelope.created_at_ms;
    if vantage == Vantage::Office && event.action != Action::Updated && event.at_ms < opened_at {
        let when = crate::calendar::format_millis;
        return refuse(
            "workflow",
            format!(
                "the {} act is stated at {}, before record {} was opened at {}",
                event.action,
                when(event.at_ms),
                record.id(),
                when(opened_at)
            ),
        );
    }

    let role = role_of(dir, record, acting_org);
    let kind = record.kind();
    let reason_given = event
        .reason
        .as_deref()
        .is_some_and(|r| !r.trim().is_empty());
    let minuted = !event.attachments.is_empty() || !event.note.trim().is_empty();
    let status = record.derived().status;

    use Action as A;
    use RecordKind as K;
    match (kind, event.action) {
        (_, A::Updated) => Ok(()),
        (_, A::Closed) if role == Role::Owner || role == Role::Counterpart => Ok(()),

        (K::Transfer, A::Received | A::Accepted | A::Objected) if role != Role::Counterpart => {
            let receiver = match &record.body {
                Body::Transfer(t) => dir.describe(&t.receiver),
                _ => String::new(),
            };
            refuse(
                "T-5",
                format!(
                    "only the receiver {receiver} acknowledges, accepts or objects to a transfer"
                ),
            )
        }
        // Once is the rule; both at once is a conflict only two devices acting unseen by each
        // other can make, which the hub admits and the status shows (see `Vantage`).
        (K::Transfer, A::Received) if vantage == Vantage::Office && record.has(A::Received) => {
            refuse("T-5", "receipt of this transfer is already acknowledged")
        }
        (K::Transfer, A::Accepted | A::Objected)
            if vantage == Vantage::Office
                && (record.has(A::Accepted) || record.has(A::Objected)) =>
        {
            let decided = if record.has(A::Accepted) {
                "accepted"
            } else {
                "objected to"
            };
            refuse(
                "T-5",
                format!(
                    "this transfer is already {decided}; a disagreement goes up the dispute ladder (D-1)"
                ),
            )
        }
        (K::Transfer, A::Received) => Ok(()),
        (K::Transfer, A::Accepted | A::Objected) if !record.has(A::Received) => refuse(
            "T-5",
            "the receiver acknowledges receipt (送达回证) before accepting or objecting",
        ),
        (K::Transfer, A::Objected) if !reason_given => {
            refuse("T-5", "an objection states its reasons (reason)")
        }
        (K::Transfer, A::Accepted | A::Objected) => Ok(()),

        (K::Case, A::Decided | A::Executed) if role == Role::Owner => Ok(()),

        (K::Complaint, A::Forwarded | A::MaterialHandedOver) if role == Role::Owner => {
            if dir.kind_of(acting_org) == Some(OrgKind::Department) {
                Ok(())
            } else {
                refuse(
                    "C-3",
                    "a department forwards a complaint to the township with jurisdiction",
                )
            }
        }
        (
            K::Complaint,
            A::Accepted
            | A::Answered
            | A::CaseOpened
            | A::Transferred
            | A::ResultTold
            | A::ResultReported,
        ) => {
            let handler = match &record.body {
                Body::Complaint(c) => c.handler.clone(),
                _ => String::new(),
            };
            if acting_org == handler {
                Ok(())
            } else {
                refuse(
                    "C-2",
                    format!(
                        "the handling township {} accepts, answers and reports on the complaint",
                        dir.describe(&handler)
                    ),
                )
            }
        }

        (K::SharedInfo, A::Shared) if role == Role::Owner => Ok(()),
        (K::SharedInfo, A::Extended) if role == Role::Owner => {
            if vantage == Vantage::Office && status != Status::Held {
                return refuse(
                    "S-2",
                    "sharing can only be extended before the item is shared, and only once",
                );
            }
            if !reason_given {
                return refuse(
                    "S-2",
                    "an extension of information sharing states its reason",
                );
            }
            match event.extension_wd {
                Some(n) if (1..=MAX_SHARING_EXTENSION_WD).contains(&n) => Ok(()),
                Some(n) => refuse(
                    "S-2",
                    format!(
                        "sharing may be extended by at most {MAX_SHARING_EXTENSION_WD} working days, not {n}"
                    ),
                ),
                None => refuse(
                    "S-2",
                    "an extension names its length in working days (extension_wd)",
                ),
            }
        }

        (K::UrgentNotice, A::Dispatched | A::Refused) => {
            if role == Role::Counterpart {
                Ok(())
            } else {
                refuse(
                    "J-3",
                    "only the notified department dispatches officers or refuses",
                )
            }
        }
        (K::UrgentNotice, A::StopOrdered | A::ReportedToGovernment) if role == Role::Owner => {
            Ok(())
        }

        (K::Consultation, A::Minuted) if role == Role::Owner => {
            if minuted {
                Ok(())
            } else {
                refuse("J-1", "minutes are attached or written in the note")
            }
        }

        (
            K::Assistance,
            A::OpinionGiven
            | A::ThirdPartyNeeded
            | A::GuidanceGiven
            | A::ExtensionAnnounced
            | A::OfficersSent,
        ) => {
            if role != Role::Counterpart {
                return refuse(
                    "A-1",
                    "only the department asked gives opinions, guidance, extensions or officers",
                );
            }
            if event.action == A::ExtensionAnnounced && !reason_given {
                return refuse(
                    "A-3",
                    "an extension is announced with its reason (special case or long appraisal)",
                );
            }
            if event.action == A::ExtensionAnnounced {
                check_assistance_extension(record, event, vantage)?;
            }
            Ok(())
        }
        (K::Assistance, A::OnSiteAction) if role == Role::Owner => Ok(()),

        (K::Dispute, A::NegotiationAgreed | A::NegotiationFailed) => {
            if !matches!(role, Role::Owner | Role::Counterpart) {
                return refuse("D-1", "negotiation is between the disputing parties");
            }
            if minuted {
                Ok(())
            } else {
                refuse(
                    "D-1",
                    "the negotiation's outcome is minuted (attach the minutes or write them in the note)",
                )
            }
        }
        (K::Dispute, A::CoordinationApplied) => {
            if !matches!(role, Role::Owner | Role::Counterpart) {
                return refuse("D-2", "either disputing party applies for coordination");
            }
            if record.has(A::NegotiationFailed) {
                Ok(())
            } else {
                refuse(
                    "D-2",
                    "coordination is applied for only after negotiation ends without agreement (D-1)",
                )
            }
        }
        (K::Dispute, A::CoordinationAgreed | A::CoordinationFailed) => {
            if role != Role::JusticeBureau {
                return refuse(
                    "D-2",
                    "the District Justice Bureau records the outcome of coordination",
                );
            }
            if record.has(A::CoordinationApplied) {
                Ok(())
            } else {
                refuse("D-2", "no party has applied for coordination")
            }
        }
        (K::Dispute, A::ProposalSubmitted) => {
            if role != Role::JusticeBureau {
                return refuse(
                    "D-3",
                    "the District Justice Bureau submits the handling proposal",
                );
            }
            if record.has(A::CoordinationFailed) {
                Ok(())
            } else {
                refuse(
                    "D-3",
                    "a proposal goes to the government only after coordination fails",
                )
            }
        }
        (K::Dispute, A::GovernmentDecided) => {
            if role != Role::DistrictGovernment {
                return refuse("D-3", "the District People's Government decides");
            }
            if record.has(A::ProposalSubmitted) {
                Ok(())
            } else {
                refuse("D-3", "the government decides on a submitted proposal")
            }
        }

        (_, action) => refuse(
            "workflow",
            format!(
                "{} may not record {action} on a {} (as {})",
                dir.describe(acting_org),
                kind.label(),
                role_name(role)
            ),
        ),
    }
}

/// an extension names its length, and the extensions of one request add up to at most
/// [`MAX_ASSISTANCE_EXTENSION_WD`]. The sum depends on which announcements a device had seen,
/// so only the office checks it; the obligations count no more than the bound either way.
fn check_assistance_extension(
    record: &Record,
    event: &WorkflowEvent,
    vantage: Vantage,
) -> Result<(), RuleViolation> {
    let days = match event.extension_wd {
        None | Some(0) => {
            return refuse(
                "A-3",
                "an extension names its length in working days (extension_wd)",
            );
        }
        Some(days) => days,
    };
    if days > MAX_ASSISTANCE_EXTENSION_WD {
        return refuse(
            "A-3",
            format!(
                "extensions add up to at most {MAX_ASSISTANCE_EXTENSION_WD} working days, not {days}"
            ),
        );
    }
    if vantage == Vantage::Hub {
        return Ok(());
    }
    let announced: u32 = record
        .events
        .iter()
        .filter(|e| e.action == Action::ExtensionAnnounced)
        .filter_map(|e| e.extension_wd)
        .fold(0, u32::saturating_add);
    if announced.saturating_add(days) > MAX_ASSISTANCE_EXTENSION_WD {
        return refuse(
            "A-3",
            format!(
                "extensions add up to at most {MAX_ASSISTANCE_EXTENSION_WD} working days; {announced} already announced, so at most {} more, not {days}",
                MAX_ASSISTANCE_EXTENSION_WD.saturating_sub(announced)
            ),
        );
    }
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "its owner",
        Role::Counterpart => "its counterpart",
        Role::JusticeBureau => "the Justice Bureau",
        Role::DistrictGovernment => "the District Government",
        Role::OtherParty => "another party",
    }
}

/// The action a record of `kind` opens with, appended when it is created.
pub fn opening_action(kind: RecordKind) -> Action {
    match kind {
        RecordKind::Case | RecordKind::Dispute => Action::Opened,
        RecordKind::Transfer => Action::Sent,
        RecordKind::Complaint => Action::Registered,
        RecordKind::SharedInfo => Action::Formed,
        RecordKind::UrgentNotice => Action::Notified,
        RecordKind::Consultation => Action::Convened,
        RecordKind::Assistance => Action::Requested,
        RecordKind::LiaisonDirectory | RecordKind::Calendar => Action::Published,
    }
}

/// Organisations an event brings into a record: climbing the dispute ladder or reporting to
/// the government needs them to see it. The hub then backfills the record to them.
pub fn parties_brought_in(dir: &Directory, kind: RecordKind, action: Action) -> Vec<String> {
    let justice = dir.justice_bureau().map(|o| o.id.clone());
    let government = dir.district_government().map(|o| o.id.clone());
    match (kind, action) {
        (RecordKind::Dispute, Action::CoordinationApplied) => justice.into_iter().collect(),
        (RecordKind::Dispute, Action::ProposalSubmitted) => government.into_iter().collect(),
        (RecordKind::UrgentNotice, Action::ReportedToGovernment) => {
            government.into_iter().collect()
        }
        _ => Vec::new(),
    }
}

/// Checks a change that `org` made to a record, as the hub sees it: `before` is the hub's copy
/// (`None` if the record is new to it) and `after` the record with the change applied.
///
/// The envelope's owner never changes and parties are only added; existing events are never
/// rewritten; each new event must be one `org` may append (checked in the order appended, each against
/// the record as it stood before it); a new record must be one `org` may create; an edited
/// body must still be one its owner could have created.
pub fn admit_change(
    dir: &Directory,
    org: &str,
    before: Option<&Record>,
    after: &Record,
) -> Result<(), RuleViolation> {
    admit_relayed_change(dir, org, &[], before, after)
}

/// [`admit_change`] for changes `org`'s node sends that were made by other organisations,
/// `authors`, and that it holds as a party: while a hub whose store was lost is refilled from
/// the nodes, the only copy of another office's acts may be on a node that shares the record.
/// Each new event is checked as an act of the organisation it names, which must be `org` or
/// one of `authors`; a new record as created by its owner, likewise.
pub fn admit_relayed_change(
    dir: &Directory,
    org: &str,
    authors: &[String],
    before: Option<&Record>,
    after: &Record,
) -> Result<(), RuleViolation> {
    let acting = |named: &str| -> String {
        if authors.iter().any(|a| a == named) {
            named.to_owned()
        } else {
            org.to_owned()
        }
    };
    let Some(before) = before else {
        // The opening event is the one inserted with the record, first in list order; a
        // stated time may tie or run backwards (found by simulation seed 1).
        let first = after.events.first();
        let opening = Record {
            events: first.into_iter().cloned().collect(),
            ..after.clone()
        };
        validate_create(dir, &acting(&after.envelope.owner), &opening)?;
        return admit_events(dir, &acting, &opening, after);
    };

    require_party(before, org, "the changing organisation")?;
    if after.envelope.owner != before.envelope.owner
        || after.envelope.id != before.envelope.id
        || after.envelope.kind != before.envelope.kind
    {
        return refuse(
            RULE_PARTY,
            format!("{org} may not rewrite the envelope of {}", before.id()),
        );
    }
    if let Some(dropped) = before
        .envelope
        .parties
        .iter()
        .find(|p| !after.envelope.is_party(p))
    {
        return refuse(
            RULE_PARTY,
            format!("parties are only ever added; {org} removed {dropped}"),
        );
    }
    let edited = (after.body != before.body).then(|| Record {
        events: before.events.clone(),
        ..after.clone()
    });
    admit_parties_and_body(dir, after, edited.as_ref())?;
    admit_events(dir, &acting, before, after)
}

/// [`admit_relayed_change`] for changes that did nothing but put values into fields of the
/// body of a record `org` holds: its envelope and events read as they did before them, so
/// `after` stands for the record before them too but for its body, which is checked as
/// edited. A put of the value a field already held has the body checked again, which the
/// comparison with the whole record before skips; the body passed when it last changed,
/// under the same rules, so the verdict is the same
/// (`a_change_to_body_fields_gets_the_verdict_of_the_whole_record`).
pub fn admit_body_fields_put(
    dir: &Directory,
    org: &str,
    after: &Record,
) -> Result<(), RuleViolation> {
    require_party(after, org, "the changing organisation")?;
    admit_parties_and_body(dir, after, Some(after))
}

/// The checks every change to a record held before passes, whatever else it does: every party
/// is an organisation of the district, a complaint stays with its complainant, and `edited`,
/// if the body changed, is a record its owner could have created (the changed body, with the
/// events the record had before).
fn admit_parties_and_body(
    dir: &Directory,
    after: &Record,
    edited: Option<&Record>,
) -> Result<(), RuleViolation> {
    for party in &after.envelope.parties {
        require_org(dir, party, "party")?;
    }
    require_complainant_confined(dir, after)?;
    if let Some(edited) = edited {
        validate_create(dir, &after.envelope.owner, edited)?;
    }
    Ok(())
}

/// Checks the events `after` adds to `before`, each as an act of `acting(event's org)`.
fn admit_events(
    dir: &Directory,
    acting: &dyn Fn(&str) -> String,
    before: &Record,
    after: &Record,
) -> Result<(), RuleViolation> {
    // Events are told apart by id: one appended under an id the record already has would not
    // count as new, and so would go unchecked (a break-test had one office record another's
    // acceptance this way).
    let mut ids = std::collections::HashSet::new();
    if let Some(again) = after.events.iter().find(|e| !ids.insert(e.id.as_str())) {
        return refuse(
            "workflow",
            format!(
                "event id {} is used twice ({}); every act is recorded under an id of its own",
                again.id, again.action
            ),
        );
    }
    for old in &before.events {
        match after.events.iter().find(|e| e.id == old.id) {
            Some(same) if same == old => {}
            _ => {
                return refuse(
                    "workflow",
                    format!(
                        "workflow events are append-only; event {} ({}) was changed or removed",
                        old.id, old.action
                    ),
                );
            }
        }
    }
    // New events are checked in the order they were appended (list order), not by stated
    // time: two acts in one millisecond must not swap (simulation seed 1).
    let new = after
        .events
        .iter()
        .filter(|e| !before.events.iter().any(|o| o.id == e.id));
    let mut state = Record {
        events: before.events.clone(),
        ..after.clone()
    };
    for event in new {
        check_event(dir, &acting(&event.org), &state, event, Vantage::Hub)?;
        state.events.push(event.clone());
    }
    Ok(())
}
