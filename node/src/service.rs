//! The node's gRPC face: the `Records` service over [`Office`], plus standard health checking
//! and server reflection. prost types stop here; [`status_of`] is the one place errors become
//! gRPC statuses.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use linkage_proto::v1 as pb;
use linkage_proto::v1::records_server::{Records, RecordsServer};
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::office::{Act, ListFilter, Office, OfficeError, RecordView};
use crate::org::{Directory, Lookup};
use crate::record::{Action, Body, MAX_RECORD_ID_BYTES, RecordKind};
use crate::replica::{INCOMPLETE, ReplicaError, Summary};
use crate::sync::client::LinkStatus;
use crate::sync::session::{REJECTION_PREFIX, RejectionNote};

/// The largest request the node accepts. Bodies are capped per field by the office; this caps
/// what tonic will even decode.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Turns an office error into a gRPC status whose message says what was wrong. Rule
/// refusals carry the rule ID first ("T-4: ..."), so scripts can match on it.
pub fn status_of(error: OfficeError) -> Status {
    bounded(match error {
        OfficeError::Rule(v) if v.is_bad_input() => Status::invalid_argument(v.to_string()),
        OfficeError::Rule(v) => Status::failed_precondition(v.to_string()),
        OfficeError::Invalid(m) => Status::invalid_argument(m),
        OfficeError::Replica(ReplicaError::NotFound(id)) => {
            Status::not_found(format!("record {} not found", shown_id(&id)))
        }
        OfficeError::Replica(ReplicaError::AlreadyExists(id)) => {
            Status::already_exists(format!("record {} already exists", shown_id(&id)))
        }
        OfficeError::Replica(e @ ReplicaError::TooLarge { .. }) => {
            Status::resource_exhausted(e.to_string())
        }
        OfficeError::Replica(e) => {
            warn!(error = %e, "storage failure answering a request");
            Status::internal(format!("storage failure: {e}"))
        }
        OfficeError::ShuttingDown => Status::unavailable("the node is shutting down"),
    })
}

/// The longest message a refusal carries. Messages echo what the request said (a party, a
/// unit, an action, a field name), and past about 16,000 characters one no longer fitted the
/// response's headers: the client saw an HTTP/2 protocol error instead of what was wrong.
const MAX_MESSAGE_CHARS: usize = 1_000;

/// `status` with its message cut short past [`MAX_MESSAGE_CHARS`]: its start and its end
/// are kept, since the echoed value usually sits in the middle and what was wrong with it at
/// either end, and the cut says how much went.
pub fn bounded(status: Status) -> Status {
    let message = status.message();
    let chars = message.chars().count();
    if chars <= MAX_MESSAGE_CHARS {
        return status;
    }
    let (head, tail) = (MAX_MESSAGE_CHARS * 2 / 3, MAX_MESSAGE_CHARS / 3);
    let start: String = message.chars().take(head).collect();
    let end: String = message.chars().skip(chars - tail).collect();
    Status::new(
        status.code(),
        format!(
            "{start}… ({} characters cut short) …{end}",
            chars - head - tail
        ),
    )
}

/// An `InvalidArgument` refusal, its message [`bounded`].
pub fn invalid(message: impl Into<String>) -> Status {
    bounded(Status::invalid_argument(message))
}

/// A record id as an error shows it: quoted, its control characters escaped and, if long,
/// cut short, so that a malformed id can neither garble nor flood the screen it is shown on.
fn shown_id(id: &str) -> String {
    const SHOWN_CHARS: usize = 64;
    let chars = id.chars().count();
    if chars <= SHOWN_CHARS {
        return format!("{id:?}");
    }
    let head: String = id.chars().take(SHOWN_CHARS).collect();
    format!("{head:?}… ({chars} characters)")
}

/// The record id a request names, refused if empty or longer than any record id: the one
/// names no record and the other none that can exist, and answering "not found" would hide
/// what was wrong with the request.
fn named_record(id: String) -> Result<String, Status> {
    if id.is_empty() {
        return Err(invalid("the request names no record: its id is empty"));
    }
    if id.len() > MAX_RECORD_ID_BYTES {
        return Err(invalid(format!(
            "record id {} is {} bytes, longer than any record id (at most {MAX_RECORD_ID_BYTES} bytes)",
            shown_id(&id),
            id.len()
        )));
    }
    Ok(id)
}

/// What an `Obligations` or `Accountability` request names to mean every organisation.
pub const ALL_ORGS: &str = "all";

/// Checks the organisation an `Obligations` or `Accountability` request asks about: empty (this
/// node's own), [`ALL_ORGS`], or an organisation of `directory`. Anything else would match no
/// obligation and answer an empty table that reads as "owes nothing".
pub fn known_org_or_all(directory: &Directory, org: &str) -> Result<(), OfficeError> {
    if org.is_empty() || org == ALL_ORGS {
        return Ok(());
    }
    let hint = match directory.lookup(org) {
        Lookup::Org(_) => return Ok(()),
        Lookup::Unit(unit) => format!(
            "; it is a unit of {}, whose obligations are its organisation's",
            unit.parent
        ),
        Lookup::Unknown if org.eq_ignore_ascii_case(ALL_ORGS) => {
            format!("; every organisation is {ALL_ORGS:?}, in lower case")
        }
        Lookup::Unknown => String::new(),
    };
    Err(OfficeError::Invalid(format!(
        "organisation {org:?} is not in this node's organisation directory{hint}"
    )))
}

#[derive(Debug, Clone)]
pub struct NodeService {
    office: Office,
    hub: Option<String>,
    link: Arc<LinkStatus>,
    /// Turns true when the server begins to shut down, so open `Watch` streams end.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl NodeService {
    pub fn new(
        office: Office,
        hub: Option<String>,
        link: Arc<LinkStatus>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        NodeService {
            office,
            hub,
            link,
            stopping,
        }
    }

    pub fn into_server(self) -> RecordsServer<Self> {
        RecordsServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

fn parse_kind(kind: &str) -> Result<RecordKind, Status> {
    kind.parse()
        .map_err(|e: crate::record::UnknownKind| invalid(e.to_string()))
}

/// A status filter must name a status, or "incomplete" (a record whose changes have not all
/// arrived): a misspelt one would list nothing and read as "no such records".
fn parse_status(status: &str) -> Result<String, Status> {
    if status == INCOMPLETE || status.parse::<crate::record::Status>().is_ok() {
        return Ok(status.to_owned());
    }
    Err(invalid(format!(
        "未知状态 unknown status {status:?}; use a status code such as open, awaiting_receipt, \
         shared, closed, conflict or {INCOMPLETE}"
    )))
}

fn non_empty(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

pub fn record_to_pb(view: &RecordView) -> pb::Record {
    let record = &view.record;
    let mut conflicts: Vec<pb::Conflict> = view
        .derived
        .contradictions
        .iter()
        .map(|c| pb::Conflict {
            path: "events".into(),
            values: vec![c.first.clone(), c.second.clone(), c.description.clone()],
        })
        .collect();
    conflicts.extend(view.field_conflicts.iter().map(|c| pb::Conflict {
        path: c.path.clone(),
        values: c.values.clone(),
    }));
    pb::Record {
        envelope: Some(envelope_to_pb(&record.envelope)),
        body_json: record.body.to_json_value().to_string(),
        events: record.events.iter().map(event_to_pb).collect(),
        status: view.derived.status.code().to_owned(),
        conflicts,
        heads: view.heads.clone(),
    }
}

pub fn envelope_to_pb(e: &crate::record::Envelope) -> pb::Envelope {
    pb::Envelope {
        id: e.id.clone(),
        kind: e.kind.clone(),
        owner: e.owner.clone(),
        parties: e.parties.clone(),
        created_at_ms: e.created_at_ms,
        schema_version: e.schema_version,
    }
}

fn event_to_pb(e: &crate::record::WorkflowEvent) -> pb::WorkflowEvent {
    pb::WorkflowEvent {
        id: e.id.clone(),
        action: e.action.as_str().to_owned(),
        at_ms: e.at_ms,
        org: e.org.clone(),
        unit: e.unit.clone().unwrap_or_default(),
        person: e.person.clone(),
        note: e.note.clone(),
        reason: e.reason.clone().unwrap_or_default(),
        extension_wd: e.extension_wd.unwrap_or(0),
        attachments: e.attachments.clone(),
    }
}

pub fn summary_to_pb(s: &Summary) -> pb::RecordSummary {
    pb::RecordSummary {
        envelope: Some(pb::Envelope {
            id: s.id.clone(),
            kind: s.kind.clone(),
            owner: s.owner.clone(),
            parties: s.parties.clone(),
            created_at_ms: s.created_at_ms,
            schema_version: crate::record::SCHEMA_VERSION,
        }),
        status: s.status.clone(),
        title: s.title.clone(),
        updated_at_ms: s.updated_at_ms,
        conflicted: s.conflicted,
        heads: {
            let mut heads = s.heads.clone();
            heads.sort_unstable();
            heads
        },
    }
}

#[tonic::async_trait]
impl Records for NodeService {
    async fn create(
        &self,
        request: Request<pb::CreateRecordRequest>,
    ) -> Result<Response<pb::Record>, Status> {
        let req = request.into_inner();
        let kind = parse_kind(&req.kind)?;
        let body = Body::from_json(kind, &req.body_json).map_err(|e| invalid(e.to_string()))?;
        let act = Act {
            at_ms: req.at_ms,
            unit: non_empty(req.unit),
            person: req.person,
            note: req.note,
            ..Act::default()
        };
        let view = self
            .office
            .create(kind, req.parties, body, act)
            .await
            .map_err(status_of)?;
        Ok(Response::new(record_to_pb(&view)))
    }

    async fn get(
        &self,
        request: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::Record>, Status> {
        let view = self
            .office
            .get(named_record(request.into_inner().id)?)
            .await
            .map_err(status_of)?;
        Ok(Response::new(record_to_pb(&view)))
    }

    async fn list(
        &self,
        request: Request<pb::ListRecordsRequest>,
    ) -> Result<Response<pb::ListRecordsResponse>, Status> {
        let req = request.into_inner();
        let filter = ListFilter {
            kind: non_empty(req.kind).map(|k| parse_kind(&k)).transpose()?,
            party: non_empty(req.party),
            status: non_empty(req.status)
                .map(|s| parse_status(&s))
                .transpose()?,
            since_ms: req.since_ms,
            until_ms: req.until_ms,
            limit: (req.limit > 0).then_some(req.limit as usize),
        };
        let rows = self.office.list(filter).await.map_err(status_of)?;
        Ok(Response::new(pb::ListRecordsResponse {
            records: rows.iter().map(summary_to_pb).collect(),
        }))
    }

    async fn append_event(
        &self,
        request: Request<pb::AppendEventRequest>,
    ) -> Result<Response<pb::Record>, Status> {
        let req = request.into_inner();
        let action = Action::parse(&req.action).map_err(|e| invalid(e.to_string()))?;
        let act = Act {
            at_ms: req.at_ms,
            unit: non_empty(req.unit),
            person: req.person,
            note: req.note,
            reason: non_empty(req.reason),
            extension_wd: (req.extension_wd > 0).then_some(req.extension_wd),
            attachments: req.attachments,
        };
        let view = self
            .office
            .append_event(named_record(req.id)?, action, act)
            .await
            .map_err(status_of)?;
        Ok(Response::new(record_to_pb(&view)))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let entries = self
            .office
            .history(named_record(request.into_inner().id)?)
            .await
            .map_err(status_of)?;
        let entries = entries
            .into_iter()
            .map(|e| pb::HistoryEntry {
                change_hash: e.change_hash,
                actor: e.actor,
                org: e.org,
                at_ms: e.at_ms,
                message: e.message,
                seq: e.seq,
            })
            .collect();
        Ok(Response::new(pb::HistoryResponse { entries }))
    }

    async fn add_parties(
        &self,
        request: Request<pb::AddPartiesRequest>,
    ) -> Result<Response<pb::Record>, Status> {
        let req = request.into_inner();
        let view = self
            .office
            .add_parties(named_record(req.id)?, req.parties)
            .await
            .map_err(status_of)?;
        Ok(Response::new(record_to_pb(&view)))
    }

    async fn edit_body(
        &self,
        request: Request<pb::EditBodyRequest>,
    ) -> Result<Response<pb::Record>, Status> {
        let req = request.into_inner();
        let patch: serde_json::Value = serde_json::from_str(&req.patch_json)
            .map_err(|e| invalid(format!("patch is not valid JSON: {e}")))?;
        let view = self
            .office
            .edit_body(named_record(req.id)?, patch)
            .await
            .map_err(status_of)?;
        Ok(Response::new(record_to_pb(&view)))
    }

    async fn obligations(
        &self,
        request: Request<pb::ObligationsRequest>,
    ) -> Result<Response<pb::ObligationsResponse>, Status> {
        let req = request.into_inner();
        known_org_or_all(self.office.directory(), &req.org).map_err(status_of)?;
        crate::obligation::answer(&self.office, req)
            .await
            .map(Response::new)
            .map_err(status_of)
    }

    async fn accountability(
        &self,
        request: Request<pb::AccountabilityRequest>,
    ) -> Result<Response<pb::AccountabilityResponse>, Status> {
        let req = request.into_inner();
        known_org_or_all(self.office.directory(), &req.org).map_err(status_of)?;
        crate::obligation::report(&self.office, req)
            .await
            .map(Response::new)
            .map_err(status_of)
    }

    async fn rejections(
        &self,
        _: Request<pb::RejectionsRequest>,
    ) -> Result<Response<pb::RejectionsResponse>, Status> {
        let store = self.office.replica().store().clone();
        let notes = tokio::task::spawn_blocking(move || store.meta_prefix(REJECTION_PREFIX))
            .await
            .map_err(|_| Status::unavailable("the node is shutting down"))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let rejections = notes
            .iter()
            .filter_map(|(_, bytes)| serde_json::from_slice::<RejectionNote>(bytes).ok())
            .map(|n| pb::Rejection {
                record_id: n.record_id,
                rule: n.rule,
                reason: n.reason,
                at_ms: n.at_ms,
            })
            .collect();
        Ok(Response::new(pb::RejectionsResponse { rejections }))
    }

    async fn node_info(
        &self,
        _: Request<pb::NodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfoResponse>, Status> {
        let replica = self.office.replica().clone();
        // The live session's cursor runs ahead of the persisted one (written lazily).
        let confirmed = self
            .link
            .figures
            .lock()
            .expect("figures lock is never poisoned")
            .cursor;
        let (records, pending_to_hub) = tokio::task::spawn_blocking(move || {
            let records = replica.record_count()? as u64;
            let store = replica.store();
            // Records changed locally (or received) since the hub last confirmed; capped so
            // the answer stays cheap after a long time offline.
            let cursor = store.cursor(crate::sync::client::HUB_PEER)?.max(confirmed);
            let pending = store.changed_since(cursor, 100_000)?.len() as u64;
            Ok::<_, ReplicaError>((records, pending))
        })
        .await
        .map_err(|_| Status::unavailable("the node is shutting down"))?
        .map_err(|e| Status::internal(format!("storage failure: {e}")))?;
        let replica = self.office.replica();
        Ok(Response::new(pb::NodeInfoResponse {
            org: replica.org().to_owned(),
            node_id: replica.store().store_id(),
            hub: self.hub.clone().unwrap_or_default(),
            hub_connected: self.link.connected.load(Ordering::Relaxed),
            // The published head, not the store's: a write still waiting for its disk sync is
            // past it, and a watch started here sees that write once it is on disk.
            last_seq: replica.published(),
            records,
            pending_to_hub,
        }))
    }

    type WatchStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::RecordChange, Status>> + Send>,
    >;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use tokio_stream::StreamExt;
        let after = request.into_inner().after;
        let replica = self.office.replica().clone();
        // A position past the log's end is from another node or an older store: the changes
        // it would skip are never sent, so it is refused rather than followed silently.
        let end = replica.store().last_seq();
        if after > end {
            return Err(Status::out_of_range(format!(
                "position {after} is past the end of this node's change log ({end}); resume from a position this node sent, or from 0"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(crate::watch::run(replica, after, tx, self.stopping.clone()));
        let changes = tokio_stream::wrappers::ReceiverStream::new(rx).map(|change| {
            change
                .map(|c| pb::RecordChange {
                    position: c.position,
                    record: Some(summary_to_pb(&c.summary)),
                })
                .map_err(|end| match end {
                    crate::watch::WatchEnd::Stopping => Status::unavailable(
                        "the node is shutting down; watch again from the last position received",
                    ),
                    crate::watch::WatchEnd::Store(e) => {
                        Status::internal(format!("storage failure: {e}"))
                    }
                })
        });
        Ok(Response::new(Box::pin(changes)))
    }
}

/// Standard gRPC health and reflection services for a server that serves `service_name`.
pub async fn standard_services(
    service_name: &'static str,
) -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(service_name, tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(linkage_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    (reporter, health, reflection)
}
