//! The typed body of each record kind, mapped to the document's `body` map with autosurgeon
//! and to JSON with serde (the CLI's and the gRPC contract's form).
//!
//! Fields are plain scalars on purpose: two offices writing the same field concurrently get an
//! Automerge conflict that [`super::doc::conflicts`] surfaces, instead of a silent merge.

use autosurgeon::{Hydrate, Reconcile};
use serde::{Deserialize, Serialize};

/// What a transfer carries (T-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(rename_all = "snake_case")]
pub enum MaterialKind {
    /// 移送函, the transfer letter.
    TransferLetter,
    /// 案源材料: on-site inspection record, complaint material.
    CaseSource,
    /// 初步证据, preliminary evidence.
    Evidence,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields)]
pub struct Material {
    pub kind: MaterialKind,
    pub name: String,
}

/// A case (案件) handled by its owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct CaseBody {
    pub title: String,
    pub matter: String,
    pub place: String,
    /// Who committed the violation (a shop, a person).
    pub offender: String,
    pub found_at_ms: i64,
    pub facts: String,
    pub decision: Option<String>,
}

/// A case transfer (案件移送, T-1 to T-5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct TransferBody {
    /// In whose name the transfer is sent: an organisation, never an internal unit (T-4).
    pub sender: String,
    pub receiver: String,
    pub title: String,
    pub matter: String,
    pub place: String,
    /// The written statement of the basic facts (T-3).
    pub facts: String,
    /// Urgent transfers are due within 24 hours instead of 3 WD (T-1).
    pub urgent: bool,
    /// The violation is still going on: the finder orders it stopped and notifies at once
    /// (T-2).
    pub ongoing: bool,
    /// When the violation was found; the T-1 clock starts here.
    pub discovered_at_ms: i64,
    /// When the finder determined it lacked jurisdiction (recorded, per the mission's
    /// defaults).
    pub non_jurisdiction_at_ms: Option<i64>,
    pub materials: Vec<Material>,
}

/// The complainant, confidential under C-5: only the units handling the complaint see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct Complainant {
    pub name: String,
    pub phone: String,
}

/// A complaint or report (投诉举报, C-1 to C-5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct ComplaintBody {
    /// The first unit to receive it (C-1).
    pub received_by: String,
    /// The township with jurisdiction, which handles it (C-2, C-3).
    pub handler: String,
    /// phone, letter, visit, online.
    pub channel: String,
    pub subject: String,
    pub place: String,
    pub received_at_ms: i64,
    /// Written material was received and must be handed to the township (C-3).
    pub written_material: bool,
    pub complainant: Option<Complainant>,
}

/// A shared information item (信息共享, S-1 category 1..=8).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct SharedInfoBody {
    pub category: u32,
    pub title: String,
    pub content: String,
    /// When the information was recorded as final by its source: the S-2 clock.
    pub formed_at_ms: i64,
    pub related_record: Option<String>,
}

/// An urgent notice of a major hazard (J-3) or of an ongoing violation (T-2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct UrgentNoticeBody {
    pub sender: String,
    pub receiver: String,
    pub hazard: String,
    pub place: String,
    pub found_at_ms: i64,
    /// The officers' on-site assessment; edited by the receiver's devices.
    pub assessment: String,
    pub measures: String,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate,
)]
#[serde(rename_all = "snake_case")]
pub enum MeetingKind {
    /// Regular consultation meeting (J-1).
    #[default]
    Regular,
    /// Ad hoc meeting on a hot or difficult problem (J-1).
    AdHoc,
    /// Special meeting a township convenes on a major case (J-2).
    Special,
}

/// A consultation meeting and its minutes (联合执法协商, J-1, J-2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct ConsultationBody {
    pub convener: String,
    pub topic: String,
    pub meeting_kind: MeetingKind,
    pub scheduled_at_ms: i64,
    pub minutes: Option<String>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate,
)]
#[serde(rename_all = "snake_case")]
pub enum AssistanceKind {
    /// Technical support to establish a violation.
    #[default]
    TechnicalSupport,
    /// Urgent on-site help when evidence may be lost.
    OnSite,
    /// Consulting and copying archives.
    Archives,
}

/// A request for enforcement assistance (执法协助, A-1 to A-5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct AssistanceBody {
    pub requester: String,
    pub provider: String,
    pub assistance_kind: AssistanceKind,
    pub matter: String,
    pub requested_at_ms: i64,
    pub related_record: Option<String>,
}

/// A dispute between two parties (争议协商, D-1 to D-3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct DisputeBody {
    pub applicant: String,
    pub respondent: String,
    /// legal_basis, duties, joint_enforcement, assistance, transfer.
    pub subject: String,
    pub grounds: String,
    pub origin_record: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct Liaison {
    pub name: String,
    pub role: String,
    pub phone: String,
}

/// The liaison persons an organisation names for joint enforcement (J-4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct LiaisonDirectoryBody {
    pub org: String,
    pub liaisons: Vec<Liaison>,
}

/// A published year of the working-day calendar, issued by the Justice Bureau.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Reconcile, Hydrate)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarBody {
    pub year: i32,
    /// Statutory holiday days, "YYYY-MM-DD".
    pub off_days: Vec<String>,
    /// Weekend days declared working days, "YYYY-MM-DD".
    pub make_up_days: Vec<String>,
    /// The State Council notice the dates come from.
    pub source: String,
}
