//! Records of the cooperation mechanism: the kinds, the envelope every record carries, its
//! typed body and its append-only list of workflow events.
//!
//! One record is one Automerge document ([`doc`] maps it); what a record's status is follows
//! from its events alone ([`status`]); who may append which event is [`crate::workflow`]'s
//! business.

pub mod body;
pub mod doc;
pub mod one_pass;
pub mod status;

use std::fmt;
use std::str::FromStr;

use autosurgeon::{Hydrate, Reconcile};
use serde::{Deserialize, Serialize};

pub use body::*;
pub use status::{Contradiction, Derived, Status};

/// The document layout version written into every envelope. Bumped when a change to the
/// layout needs readers to migrate.
pub const SCHEMA_VERSION: u32 = 1;

/// The kinds of record the mechanism needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Case,
    Transfer,
    Complaint,
    SharedInfo,
    UrgentNotice,
    Consultation,
    Assistance,
    Dispute,
    LiaisonDirectory,
    Calendar,
}

/// The longest record id, in bytes, that a node looks up or a sync session takes in. Far past
/// any id a node makes (a kind prefix and 16 hex digits, [`RecordKind::new_record_id`]); a
/// longer one names no record, and saying so beats answering "not found" for it.
pub const MAX_RECORD_ID_BYTES: usize = 256;

impl RecordKind {
    pub const ALL: [RecordKind; 10] = [
        RecordKind::Case,
        RecordKind::Transfer,
        RecordKind::Complaint,
        RecordKind::SharedInfo,
        RecordKind::UrgentNotice,
        RecordKind::Consultation,
        RecordKind::Assistance,
        RecordKind::Dispute,
        RecordKind::LiaisonDirectory,
        RecordKind::Calendar,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Case => "case",
            RecordKind::Transfer => "transfer",
            RecordKind::Complaint => "complaint",
            RecordKind::SharedInfo => "shared_info",
            RecordKind::UrgentNotice => "urgent_notice",
            RecordKind::Consultation => "consultation",
            RecordKind::Assistance => "assistance",
            RecordKind::Dispute => "dispute",
            RecordKind::LiaisonDirectory => "liaison_directory",
            RecordKind::Calendar => "calendar",
        }
    }

    /// The name office staff read, Chinese with English beside it.
    pub fn label(self) -> &'static str {
        match self {
            RecordKind::Case => "案件 case",
            RecordKind::Transfer => "案件移送 transfer",
            RecordKind::Complaint => "投诉举报 complaint",
            RecordKind::SharedInfo => "共享信息 shared information",
            RecordKind::UrgentNotice => "紧急通知 urgent notice",
            RecordKind::Consultation => "联合执法协商 consultation",
            RecordKind::Assistance => "执法协助 assistance request",
            RecordKind::Dispute => "争议协商 dispute",
            RecordKind::LiaisonDirectory => "联络人名录 liaison directory",
            RecordKind::Calendar => "工作日历 working-day calendar",
        }
    }

    /// Short prefix of record ids, so an id tells its kind at a glance.
    fn id_prefix(self) -> &'static str {
        match self {
            RecordKind::Case => "CA",
            RecordKind::Transfer => "TR",
            RecordKind::Complaint => "CO",
            RecordKind::SharedInfo => "SI",
            RecordKind::UrgentNotice => "UN",
            RecordKind::Consultation => "CN",
            RecordKind::Assistance => "AS",
            RecordKind::Dispute => "DI",
            RecordKind::LiaisonDirectory => "LD",
            RecordKind::Calendar => "CL",
        }
    }

    /// A new random record id such as `TR-5f0c2a9e41d7b3c8`.
    pub fn new_record_id(self) -> String {
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{}-{}", self.id_prefix(), &random[..16])
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown record kind {0:?}; known kinds: case, transfer, complaint, shared_info, urgent_notice, consultation, assistance, dispute, liaison_directory, calendar"
)]
pub struct UnknownKind(pub String);

impl FromStr for RecordKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// What every record carries regardless of kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
pub struct Envelope {
    pub id: String,
    /// The kind as its wire string; [`Envelope::kind`] parses it.
    pub kind: String,
    /// The organisation that created the record.
    pub owner: String,
    /// The organisations entitled to the record; the hub routes it to their nodes. Parties
    /// are only ever added.
    #[autosurgeon(hydrate = "doc::hydrate_string_list")]
    pub parties: Vec<String>,
    pub created_at_ms: i64,
    pub schema_version: u32,
}

impl Envelope {
    pub fn kind(&self) -> Result<RecordKind, UnknownKind> {
        self.kind.parse()
    }

    pub fn is_party(&self, org: &str) -> bool {
        self.parties.iter().any(|p| p == org)
    }
}

/// The typed body of a record, one variant per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Case(CaseBody),
    Transfer(TransferBody),
    Complaint(ComplaintBody),
    SharedInfo(SharedInfoBody),
    UrgentNotice(UrgentNoticeBody),
    Consultation(ConsultationBody),
    Assistance(AssistanceBody),
    Dispute(DisputeBody),
    LiaisonDirectory(LiaisonDirectoryBody),
    Calendar(CalendarBody),
}

/// Expands `$body` into a match over every variant, binding the inner struct to `$inner`
/// and its kind to `$kind`: each kind's body is a distinct type, so code that is the same for
/// all of them is written once here.
macro_rules! each_body {
    ($body:expr, $inner:ident => $e:expr) => {
        match $body {
            $crate::record::Body::Case($inner) => $e,
            $crate::record::Body::Transfer($inner) => $e,
            $crate::record::Body::Complaint($inner) => $e,
            $crate::record::Body::SharedInfo($inner) => $e,
            $crate::record::Body::UrgentNotice($inner) => $e,
            $crate::record::Body::Consultation($inner) => $e,
            $crate::record::Body::Assistance($inner) => $e,
            $crate::record::Body::Dispute($inner) => $e,
            $crate::record::Body::LiaisonDirectory($inner) => $e,
            $crate::record::Body::Calendar($inner) => $e,
        }
    };
}
pub(crate) use each_body;

/// Expands to a match from a [`RecordKind`] to an expression generic over the body type
/// `$ty` and its [`Body`] constructor `$ctor`.
macro_rules! for_kind {
    ($kind:expr, $ty:ident, $ctor:ident => $e:expr) => {
        match $kind {
            $crate::record::RecordKind::Case => {
                type $ty = $crate::record::body::CaseBody;
                let $ctor = $crate::record::Body::Case;
                $e
            }
            $crate::record::RecordKind::Transfer => {
                type $ty = $crate::record::body::TransferBody;
                let $ctor = $crate::record::Body::Transfer;
                $e
            }
            $crate::record::RecordKind::Complaint => {
                type $ty = $crate::record::body::ComplaintBody;
                let $ctor = $crate::record::Body::Complaint;
                $e
            }
            $crate::record::RecordKind::SharedInfo => {
                type $ty = $crate::record::body::SharedInfoBody;
                let $ctor = $crate::record::Body::SharedInfo;
                $e
            }
            $crate::record::RecordKind::UrgentNotice => {
                type $ty = $crate::record::body::UrgentNoticeBody;
                let $ctor = $crate::record::Body::UrgentNotice;
                $e
            }
            $crate::record::RecordKind::Consultation => {
                type $ty = $crate::record::body::ConsultationBody;
                let $ctor = $crate::record::Body::Consultation;
                $e
            }
            $crate::record::RecordKind::Assistance => {
                type $ty = $crate::record::body::AssistanceBody;
                let $ctor = $crate::record::Body::Assistance;
                $e
            }
            $crate::record::RecordKind::Dispute => {
                type $ty = $crate::record::body::DisputeBody;
                let $ctor = $crate::record::Body::Dispute;
                $e
            }
            $crate::record::RecordKind::LiaisonDirectory => {
                type $ty = $crate::record::body::LiaisonDirectoryBody;
                let $ctor = $crate::record::Body::LiaisonDirectory;
                $e
            }
            $crate::record::RecordKind::Calendar => {
                type $ty = $crate::record::body::CalendarBody;
                let $ctor = $crate::record::Body::Calendar;
                $e
            }
        }
    };
}
pub(crate) use for_kind;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body of a {kind} is not valid JSON for that kind: {detail}")]
    Json { kind: RecordKind, detail: String },
    #[error("body patch must be a JSON object of field names and values, got {0}")]
    NotAnObject(String),
}

impl Body {
    pub fn kind(&self) -> RecordKind {
        match self {
            Body::Case(_) => RecordKind::Case,
            Body::Transfer(_) => RecordKind::Transfer,
            Body::Complaint(_) => RecordKind::Complaint,
            Body::SharedInfo(_) => RecordKind::SharedInfo,
            Body::UrgentNotice(_) => RecordKind::UrgentNotice,
            Body::Consultation(_) => RecordKind::Consultation,
            Body::Assistance(_) => RecordKind::Assistance,
            Body::Dispute(_) => RecordKind::Dispute,
            Body::LiaisonDirectory(_) => RecordKind::LiaisonDirectory,
            Body::Calendar(_) => RecordKind::Calendar,
        }
    }

    /// Parses the JSON form of a `kind` body; unknown fields are refused by name.
    pub fn from_json(kind: RecordKind, json: &str) -> Result<Body, BodyError> {
        let err = |e: serde_json::Error| BodyError::Json {
            kind,
            detail: e.to_string(),
        };
        // serde reads a struct from a JSON array too, field by field in order, which made
        // `[1, 2]` read as "expected a string".
        if !json.trim_start().starts_with('{') {
            return Err(BodyError::Json {
                kind,
                detail: "a body is a JSON object of field names and values".into(),
            });
        }
        for_kind!(kind, T, ctor => serde_json::from_str::<T>(json).map(ctor).map_err(err))
    }

    pub fn to_json_value(&self) -> serde_json::Value {
        each_body!(self, b => serde_json::to_value(b).expect("bodies are plain data"))
    }

    /// The body with `patch`'s fields replaced, checked against the kind's schema.
    pub fn patched(&self, patch: &serde_json::Value) -> Result<Body, BodyError> {
        let serde_json::Value::Object(fields) = patch else {
            return Err(BodyError::NotAnObject(patch.to_string()));
        };
        let kind = self.kind();
        let with = |patch: &mut dyn Iterator<Item = (&String, &serde_json::Value)>| {
            let mut value = self.to_json_value();
            if let serde_json::Value::Object(current) = &mut value {
                for (k, v) in patch {
                    current.insert(k.clone(), v.clone());
                }
            }
            for_kind!(kind, T, ctor => serde_json::from_value::<T>(value).map(ctor))
        };
        with(&mut fields.iter()).map_err(|whole| {
            // The field at fault, named: a position in the merged body says nothing to whoever
            // wrote the patch.
            let detail = fields
                .iter()
                .find_map(|field| {
                    with(&mut std::iter::once(field))
                        .err()
                        .map(|e| format!("{}: {e}", field.0))
                })
                .unwrap_or_else(|| whole.to_string());
            BodyError::Json { kind, detail }
        })
    }

    /// Every instant the body states, by field name (`discovered_at_ms`, ...). An unset
    /// optional field is left out; 0 is listed, since for most fields it means "not
    /// recorded" and the caller decides what it allows.
    pub fn instants(&self) -> Vec<(&'static str, i64)> {
        match self {
            Body::Case(b) => vec![("found_at_ms", b.found_at_ms)],
            Body::Transfer(b) => {
                let mut found = vec![("discovered_at_ms", b.discovered_at_ms)];
                found.extend(
                    b.non_jurisdiction_at_ms
                        .map(|ms| ("non_jurisdiction_at_ms", ms)),
                );
                found
            }
            Body::Complaint(b) => vec![("received_at_ms", b.received_at_ms)],
            Body::SharedInfo(b) => vec![("formed_at_ms", b.formed_at_ms)],
            Body::UrgentNotice(b) => vec![("found_at_ms", b.found_at_ms)],
            Body::Consultation(b) => vec![("scheduled_at_ms", b.scheduled_at_ms)],
            Body::Assistance(b) => vec![("requested_at_ms", b.requested_at_ms)],
            Body::Dispute(_) | Body::LiaisonDirectory(_) | Body::Calendar(_) => Vec::new(),
        }
    }

    /// The body's references to other records by id, with their field names, as given.
    pub fn references(&self) -> Vec<(&'static str, &str)> {
        let (field, id) = match self {
            Body::SharedInfo(b) => ("related_record", &b.related_record),
            Body::Assistance(b) => ("related_record", &b.related_record),
            Body::Dispute(b) => ("origin_record", &b.origin_record),
            _ => return Vec::new(),
        };
        id.as_deref().map(|id| (field, id)).into_iter().collect()
    }

    /// A one-line title for tables.
    pub fn title(&self) -> String {
        match self {
            Body::Case(b) => b.title.clone(),
            Body::Transfer(b) => b.title.clone(),
            Body::Complaint(b) => b.subject.clone(),
            Body::SharedInfo(b) => b.title.clone(),
            Body::UrgentNotice(b) => b.hazard.clone(),
            Body::Consultation(b) => b.topic.clone(),
            Body::Assistance(b) => b.matter.clone(),
            Body::Dispute(b) => b.grounds.clone(),
            Body::LiaisonDirectory(b) => format!("{} liaisons", b.liaisons.len()),
            Body::Calendar(b) => format!("{} calendar", b.year),
        }
    }
}

/// The steps of every workflow. Which kind allows which action, and who may take it, is
/// [`crate::workflow`]'s table.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Reconcile,
    Hydrate,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Action {
    // Opening actions, appended when a record is created.
    Opened,
    Sent,
    Registered,
    Formed,
    Notified,
    Convened,
    Requested,
    Published,
    // Transfers (T-5).
    Received,
    Accepted,
    Objected,
    // Cases.
    Decided,
    Executed,
    // Complaints (C-2 to C-4).
    Forwarded,
    MaterialHandedOver,
    Answered,
    CaseOpened,
    Transferred,
    ResultTold,
    ResultReported,
    // Shared information (S-2).
    Shared,
    Extended,
    // Urgent notices (J-3, T-2).
    StopOrdered,
    Dispatched,
    Refused,
    ReportedToGovernment,
    // Consultations (J-1).
    Minuted,
    // Assistance (A-1 to A-5).
    OpinionGiven,
    ThirdPartyNeeded,
    GuidanceGiven,
    ExtensionAnnounced,
    OnSiteAction,
    OfficersSent,
    // Disputes (D-1 to D-3).
    NegotiationAgreed,
    NegotiationFailed,
    CoordinationApplied,
    CoordinationAgreed,
    CoordinationFailed,
    ProposalSubmitted,
    GovernmentDecided,
    // Any kind.
    Updated,
    Closed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workflow action {0:?}")]
pub struct UnknownAction(pub String);

impl Action {
    /// Parses a wire name, with an error that names the bad input.
    pub fn parse(name: &str) -> Result<Action, UnknownAction> {
        name.parse().map_err(|_| UnknownAction(name.to_owned()))
    }
}

/// One step of a record's workflow. Events are only appended; each has a unique id so that
/// events appended concurrently on two offline devices merge into one list with both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
pub struct WorkflowEvent {
    #[key]
    pub id: String,
    pub action: Action,
    /// When the act happened, as the office states it (Unix milliseconds).
    pub at_ms: i64,
    /// The organisation that acted; always the organisation of the node that wrote it.
    pub org: String,
    /// The internal unit that did the work, if any.
    pub unit: Option<String>,
    pub person: String,
    pub note: String,
    /// Why: required for objections, extensions and refusals.
    pub reason: Option<String>,
    /// Working days of an extension (S-2, A-3).
    pub extension_wd: Option<u32>,
    pub attachments: Vec<String>,
}

impl WorkflowEvent {
    pub fn new(action: Action, at_ms: i64, org: &str) -> Self {
        WorkflowEvent {
            id: uuid::Uuid::new_v4().simple().to_string(),
            action,
            at_ms,
            org: org.to_owned(),
            unit: None,
            person: String::new(),
            note: String::new(),
            reason: None,
            extension_wd: None,
            attachments: Vec::new(),
        }
    }
}

/// A whole record as Rust sees it: what [`doc`] hydrates from and reconciles into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub envelope: Envelope,
    pub body: Body,
    pub events: Vec<WorkflowEvent>,
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        self.body.kind()
    }

    pub fn id(&self) -> &str {
        &self.envelope.id
    }

    /// Status and contradictions, derived from the events alone.
    pub fn derived(&self) -> Derived {
        status::derive(self.kind(), &self.events)
    }

    /// The first event with `action`, in time order.
    pub fn first(&self, action: Action) -> Option<&WorkflowEvent> {
        self.events
            .iter()
            .filter(|e| e.action == action)
            .min_by_key(|e| e.at_ms)
    }

    pub fn has(&self, action: Action) -> bool {
        self.events.iter().any(|e| e.action == action)
    }
}

/// Drops repeated organisations from a party list, keeping each one's first place. (Two
/// offices adding the same party offline leave it in the merged list twice.)
pub fn dedup_parties(parties: &mut Vec<String>) {
    let keep: Vec<bool> = {
        let mut seen = std::collections::HashSet::with_capacity(parties.len());
        parties.iter().map(|p| seen.insert(p.as_str())).collect()
    };
    let mut keep = keep.into_iter();
    parties.retain(|_| keep.next().unwrap_or(false));
}

/// An urgent notice `id` from `owner` to the Emergency Management Bureau (`bdh-yjgl`), gas
/// cylinders in a basement: the record the module tests of documents and replicas build on.
#[cfg(test)]
pub(crate) fn sample_notice(id: &str, owner: &str) -> Record {
    Record {
        envelope: Envelope {
            id: id.into(),
            kind: "urgent_notice".into(),
            owner: owner.into(),
            parties: vec![owner.into(), "bdh-yjgl".into()],
            created_at_ms: 1_000,
            schema_version: SCHEMA_VERSION,
        },
        body: Body::UrgentNotice(UrgentNoticeBody {
            sender: owner.into(),
            receiver: "bdh-yjgl".into(),
            hazard: "gas cylinders in a basement".into(),
            ..Default::default()
        }),
        events: vec![WorkflowEvent::new(Action::Notified, 1_000, owner)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parties_are_dropped_keeping_first_places() {
        let mut parties: Vec<String> = ["b", "a", "b", "c", "a", "b"].map(String::from).to_vec();
        dedup_parties(&mut parties);
        assert_eq!(parties, ["b", "a", "c"]);
    }

    #[test]
    fn every_kind_round_trips_through_its_wire_name() {
        for kind in RecordKind::ALL {
            assert_eq!(kind.as_str().parse::<RecordKind>(), Ok(kind));
            assert!(kind.new_record_id().len() > 10);
        }
        let err = "parcel".parse::<RecordKind>().unwrap_err();
        assert!(err.to_string().contains("parcel"));
    }

    #[test]
    fn actions_round_trip_through_snake_case_names() {
        assert_eq!(
            Action::ReportedToGovernment.as_str(),
            "reported_to_government"
        );
        assert_eq!(Action::parse("objected"), Ok(Action::Objected));
        assert!(
            Action::parse("teleported")
                .unwrap_err()
                .to_string()
                .contains("teleported")
        );
    }

    #[test]
    fn body_json_with_an_unknown_field_is_refused_by_name() {
        let err =
            Body::from_json(RecordKind::Transfer, r#"{"sender":"x","colour":"red"}"#).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn a_body_that_is_not_a_json_object_is_refused_as_such() {
        for json in ["[1, 2]", "\"text\"", "7", "null"] {
            let err = Body::from_json(RecordKind::Transfer, json).unwrap_err();
            assert!(err.to_string().contains("JSON object"), "{json}: {err}");
        }
    }

    #[test]
    fn body_patch_replaces_named_fields_only() {
        let body = Body::from_json(RecordKind::UrgentNotice, r#"{"hazard":"gas"}"#).unwrap();
        let patched = body
            .patched(&serde_json::json!({"assessment": "valves shut"}))
            .unwrap();
        let Body::UrgentNotice(b) = patched else {
            panic!("kind changed")
        };
        assert_eq!(
            (b.hazard.as_str(), b.assessment.as_str()),
            ("gas", "valves shut")
        );
    }

    #[test]
    fn instants_name_every_at_ms_field_of_every_kind() {
        for kind in RecordKind::ALL {
            // Every optional field set, so an `Option<i64>` instant shows up too.
            let body = Body::from_json(kind, "{}").unwrap();
            let mut json = body.to_json_value();
            if let serde_json::Value::Object(fields) = &mut json {
                for (name, value) in fields.iter_mut() {
                    if name.ends_with("_at_ms") {
                        *value = serde_json::json!(7);
                    }
                }
            }
            let body = Body::from_json(kind, &json.to_string()).unwrap();
            let mut fields: Vec<&str> = json
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .filter(|name| name.ends_with("_at_ms"))
                .collect();
            fields.sort_unstable();
            let mut named: Vec<&str> = body.instants().iter().map(|(name, _)| *name).collect();
            named.sort_unstable();
            assert_eq!(named, fields, "{kind}");
            assert!(body.instants().iter().all(|(_, ms)| *ms == 7), "{kind}");
        }
    }

    #[test]
    fn references_name_every_record_field_of_every_kind() {
        for kind in RecordKind::ALL {
            let mut json = Body::from_json(kind, "{}").unwrap().to_json_value();
            let mut fields: Vec<String> = Vec::new();
            if let serde_json::Value::Object(body) = &mut json {
                for (name, value) in body.iter_mut() {
                    if name.ends_with("_record") {
                        *value = serde_json::json!(format!("{name}-id"));
                        fields.push(name.clone());
                    }
                }
            }
            let body = Body::from_json(kind, &json.to_string()).unwrap();
            let named: Vec<String> = body
                .references()
                .iter()
                .map(|(name, id)| {
                    assert_eq!(*id, format!("{name}-id"), "{kind}");
                    name.to_string()
                })
                .collect();
            assert_eq!(named, fields, "{kind}");
        }
    }
}
