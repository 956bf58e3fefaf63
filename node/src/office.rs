//! The office's operations on its records: create, append a workflow event, edit a body, add
//! parties. Each checks the mechanism's rules ([`crate::workflow`]) for this node's
//! organisation, then changes the replica and returns once the change is on disk.
//!
//! A write runs on the caller's task (a record's rules, its Automerge change and an unsynced
//! store write: a hundred microseconds or so, no disk wait) and then waits, without a thread,
//! for the disk sync that concurrent writers share ([`Replica::durable`]). Handed to a
//! blocking thread each, with each thread held through RocksDB's group commit, ten writers
//! reached 0.37–0.42 of the disk's raw synced-batch rate on two cores, bounded by the
//! hand-offs; this way 0.57–0.58. Reads that may scan the store still go to the blocking pool.
//!
//! The gRPC layer ([`crate::service`]) translates to and from this; tests drive it directly.

use std::sync::Arc;

use tracing::{info, instrument};

use crate::calendar::PeriodPolicies;
use crate::obligation::{self, RulePeriods};
use crate::org::Directory;
use crate::record::doc::{self, FieldConflict, HistoryEntry};
use crate::record::{
    Action, Body, Derived, DisputeBody, Envelope, Record, RecordKind, SCHEMA_VERSION, WorkflowEvent,
};
use crate::replica::{Changed, Known, Replica, ReplicaError, Summary};
use crate::store::Seq;
use crate::workflow::{self, RuleViolation};

pub use crate::workflow::MAX_FIELD_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum OfficeError {
    #[error("refused by rule {0}")]
    Rule(#[from] RuleViolation),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// A record as the office sees it: the record, its derived status and any conflicts.
#[derive(Debug, Clone)]
pub struct RecordView {
    pub record: Record,
    pub derived: Derived,
    pub field_conflicts: Vec<FieldConflict>,
    pub heads: Vec<String>,
}

/// What an office states about an act: when, who, and why.
#[derive(Debug, Clone, Default)]
pub struct Act {
    pub at_ms: Option<i64>,
    pub unit: Option<String>,
    pub person: String,
    pub note: String,
    pub reason: Option<String>,
    pub extension_wd: Option<u32>,
    pub attachments: Vec<String>,
}

/// Filters of [`Office::list`]; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub kind: Option<RecordKind>,
    pub party: Option<String>,
    pub status: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Office {
    replica: Arc<Replica>,
    directory: Arc<Directory>,
    /// How periods become due times, per organisation; read by [`crate::obligation`].
    period_policies: Arc<PeriodPolicies>,
}

impl Office {
    /// An office with the default period policies (at once 2 hours, end of day 24:00).
    pub fn new(replica: Arc<Replica>, directory: Arc<Directory>) -> Self {
        Office {
            replica,
            directory,
            period_policies: Arc::default(),
        }
    }

    /// The same office, computing due times by `policies` (the `[periods]` table).
    pub fn with_period_policies(mut self, policies: PeriodPolicies) -> Self {
        self.period_policies = Arc::new(policies);
        self
    }

    pub fn org(&self) -> &str {
        self.replica.org()
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    pub fn period_policies(&self) -> &PeriodPolicies {
        &self.period_policies
    }

    /// The answer to a write made on the caller's task (`written`: its view and change-log
    /// position), once the write is on disk. A write that changed nothing (`None`) waits for
    /// every write made before it: the state it answers with may hold an identical change
    /// still waiting for its sync, or one whose sync failed.
    async fn once_durable(
        &self,
        written: Result<(RecordView, Option<Seq>), OfficeError>,
    ) -> Result<RecordView, OfficeError> {
        let (view, seq) = written?;
        let seq = seq.unwrap_or_else(|| self.replica.store().last_assigned_seq());
        self.replica.durable(seq).await?;
        Ok(view)
    }

    /// Runs blocking replica work on tokio's blocking pool.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Office) -> Result<R, OfficeError> + Send + 'static,
    ) -> Result<R, OfficeError> {
        let office = self.clone();
        tokio::task::spawn_blocking(move || f(&office))
            .await
            .map_err(|_| OfficeError::ShuttingDown)?
    }

    #[instrument(skip(self, body, parties, act), fields(org = %self.org()))]
    pub async fn create(
        &self,
        kind: RecordKind,
        parties: Vec<String>,
        body: Body,
        act: Act,
    ) -> Result<RecordView, OfficeError> {
        let written = self.create_now(kind, parties, body, act);
        self.once_durable(written.map(|(view, seq)| (view, Some(seq))))
            .await
    }

    fn create_now(
        &self,
        kind: RecordKind,
        mut parties: Vec<String>,
        body: Body,
        act: Act,
    ) -> Result<(RecordView, Seq), OfficeError> {
        if body.kind() != kind {
            return Err(OfficeError::Invalid(format!(
                "a {} body was given for a {kind}",
                body.kind()
            )));
        }
        // The body's and the opening act's sizes are checked with the rest of the record
        // (`validate_create`), before anything is stored.
        let org = self.org().to_owned();
        if !parties.contains(&org) {
            parties.insert(0, org.clone());
        }
        parties.extend(implied_parties(&body));
        // A published calendar year concerns every office: the hub distributes it to all.
        if kind == RecordKind::Calendar {
            parties.extend(self.directory.orgs().map(|o| o.id.clone()));
        }
        crate::record::dedup_parties(&mut parties);

        let now = self.replica.now_ms();
        let at = act.at_ms.unwrap_or(now);
        let record = Record {
            envelope: Envelope {
                id: kind.new_record_id(),
                kind: kind.as_str().to_owned(),
                owner: org.clone(),
                parties,
                created_at_ms: at,
                schema_version: SCHEMA_VERSION,
            },
            events: vec![event_from(workflow::opening_action(kind), &org, &act, at)],
            body,
        };
        workflow::validate_create(&self.directory, &org, &record)?;

        let (seq, heads) = self.replica.create_deferred(&record)?;
        info!(record = %record.id(), kind = %kind, "record created");
        // The view of the record in hand: a new record has one change and no conflicts.
        let view = RecordView {
            derived: record.derived(),
            field_conflicts: Vec::new(),
            heads: heads.iter().map(ToString::to_string).collect(),
            record,
        };
        Ok((view, seq))
    }

    #[instrument(skip(self, act), fields(org = %self.org()))]
    pub async fn append_event(
        &self,
        id: String,
        action: Action,
        act: Act,
    ) -> Result<RecordView, OfficeError> {
        self.once_durable(self.append_event_now(&id, action, act))
            .await
    }

    fn append_event_now(
        &self,
        id: &str,
        action: Action,
        act: Act,
    ) -> Result<(RecordView, Option<Seq>), OfficeError> {
        let org = self.org().to_owned();
        let at = act.at_ms.unwrap_or_else(|| self.replica.now_ms());
        let event = event_from(action, &org, &act, at);
        // Before the record is read: an oversized act is refused without loading it.
        workflow::require_event_within_limits(&event)?;
        let directory = self.directory.clone();
        let now = self.replica.now_ms();
        // S-2, A-3: an extension must come before the period it extends ends, which takes the
        // calendar with its published years; read only for extensions, before the lock.
        let calendar = match action {
            Action::Extended | Action::ExtensionAnnounced => {
                Some(obligation::calendar_held(&self.replica)?)
            }
            _ => None,
        };

        let changed = self.replica.change_unsynced(id, false, |doc| {
            let record = doc::hydrate_record(doc).map_err(ReplicaError::from)?;
            workflow::validate_event(&directory, &org, &record, &event)?;
            if let Some(calendar) = &calendar {
                let (periods, policies) = (RulePeriods::default(), self.period_policies());
                obligation::check_extension_in_time(
                    &record, &event, &directory, calendar, &periods, policies,
                )?;
            }
            doc::append_to_events(doc, &record.events, &event, now).map_err(ReplicaError::from)?;
            // The record the change leaves: the event at the end of the list, and the
            // parties it brings in (debug builds check it against the document).
            let mut after = record.clone();
            after.events.push(event.clone());

            let mut parties = record.envelope.parties.clone();
            let before = parties.len();
            for party in workflow::parties_brought_in(&directory, record.kind(), action) {
                if !parties.contains(&party) {
                    parties.push(party);
                }
            }
            if parties.len() > before {
                doc::set_parties(doc, &parties, now).map_err(ReplicaError::from)?;
                after.envelope.parties = parties;
            }
            let known = Known {
                record: Some(after),
                whole: None,
            };
            Ok::<_, OfficeError>((record, known))
        })?;
        info!(record = %id, action = %action, "event appended");

        // T-5, D-1: an objection to a transfer is a dispute between its two parties.
        let record = &changed.result;
        let mut seq = changed.seq;
        if record.kind() == RecordKind::Transfer && action == Action::Objected {
            seq = seq.max(self.open_dispute_for_objection(record, &event)?);
        }
        Ok((self.view_after(id, changed)?, seq))
    }

    /// Creates the dispute an objection opens; its change-log position, to wait on.
    fn open_dispute_for_objection(
        &self,
        transfer: &Record,
        objection: &WorkflowEvent,
    ) -> Result<Option<Seq>, OfficeError> {
        let Body::Transfer(t) = &transfer.body else {
            return Ok(None);
        };
        let body = Body::Dispute(DisputeBody {
            applicant: self.org().to_owned(),
            respondent: t.sender.clone(),
            subject: "transfer".into(),
            grounds: objection.reason.clone().unwrap_or_default(),
            origin_record: Some(transfer.id().to_owned()),
        });
        let act = Act {
            at_ms: Some(objection.at_ms),
            person: objection.person.clone(),
            note: objection.note.clone(),
            ..Act::default()
        };
        let (view, seq) =
            self.create_now(RecordKind::Dispute, vec![t.sender.clone()], body, act)?;
        info!(record = %view.record.id(), transfer = %transfer.id(), "objection opened a dispute");
        Ok(Some(seq))
    }

    /// Replaces the named body fields. Any party may edit (offices share case files); the
    /// change is attributed to this node's organisation in the history.
    #[instrument(skip(self, patch), fields(org = %self.org()))]
    pub async fn edit_body(
        &self,
        id: String,
        patch: serde_json::Value,
    ) -> Result<RecordView, OfficeError> {
        self.once_durable(self.edit_body_now(id, patch)).await
    }

    fn edit_body_now(
        &self,
        id: String,
        patch: serde_json::Value,
    ) -> Result<(RecordView, Option<Seq>), OfficeError> {
        check_field_sizes(&patch)?;
        // An empty patch would succeed and change nothing, which reads as an edit that was
        // lost (found by a break-test).
        if patch.as_object().is_some_and(serde_json::Map::is_empty) {
            return Err(OfficeError::Invalid(
                "the patch names no field to change; give at least one body field, e.g. {\"title\": \"...\"}".into(),
            ));
        }
        self.change_as_party(&id, |doc, record, now| {
            let body = record
                .body
                .patched(&patch)
                .map_err(|e| OfficeError::Invalid(e.to_string()))?;
            // The edited record must still be one its owner could have created: the
            // sender of a transfer stays an organisation (T-4), and so on.
            let edited = Record {
                body: body.clone(),
                ..record.clone()
            };
            workflow::validate_create(self.directory(), &record.envelope.owner, &edited)?;
            // Only the fields the patch names are written: a conflict on another field
            // stays until someone writes that field.
            let fields: Vec<&str> = patch
                .as_object()
                .map(|fields| fields.keys().map(String::as_str).collect())
                .unwrap_or_default();
            doc::edit_body(doc, &body, &fields, now).map_err(ReplicaError::from)?;
            // The record the edit leaves: each named field now holds only the value written
            // (the put supersedes every value it held), and nothing else changed.
            Ok(Some(edited))
        })
    }

    /// Adds organisations to a record's parties; the hub backfills the record to them.
    #[instrument(skip(self), fields(org = %self.org()))]
    pub async fn add_parties(
        &self,
        id: String,
        new_parties: Vec<String>,
    ) -> Result<RecordView, OfficeError> {
        self.once_durable(self.add_parties_now(id, new_parties))
            .await
    }

    fn add_parties_now(
        &self,
        id: String,
        new_parties: Vec<String>,
    ) -> Result<(RecordView, Option<Seq>), OfficeError> {
        for party in &new_parties {
            if self.directory.org(party).is_none() {
                return Err(RuleViolation {
                    rule: workflow::RULE_DIRECTORY,
                    message: format!("party {party:?} is not an organisation in the directory"),
                }
                .into());
            }
        }
        self.change_as_party(&id, |doc, record, now| {
            let mut parties = record.envelope.parties.clone();
            for party in &new_parties {
                if !parties.contains(party) {
                    parties.push(party.clone());
                }
            }
            let mut widened = record;
            widened.envelope.parties = parties.clone();
            workflow::require_complainant_confined(&self.directory, &widened)?;
            doc::set_parties(doc, &parties, now).map_err(ReplicaError::from)?;
            Ok(Some(widened))
        })
    }

    /// Changes record `id` with `f` as this office, which must be one of the record's parties:
    /// `f` gets the document, the record it holds and the time to stamp the change with, and
    /// may say what the record reads after it (so that the replica need not hydrate it again
    /// for its summary; debug builds check it does). Returns the changed record's view and
    /// the change-log position to wait on.
    fn change_as_party(
        &self,
        id: &str,
        f: impl FnOnce(&mut automerge::Automerge, Record, i64) -> Result<Option<Record>, OfficeError>,
    ) -> Result<(RecordView, Option<Seq>), OfficeError> {
        let org = self.org();
        let now = self.replica.now_ms();
        let changed = self.replica.change_unsynced(id, false, |doc| {
            let record = doc::hydrate_record(doc).map_err(ReplicaError::from)?;
            if !record.envelope.is_party(org) {
                return Err(not_a_party(org, id));
            }
            let after = f(doc, record, now)?;
            Ok((
                (),
                Known {
                    record: after,
                    whole: None,
                },
            ))
        })?;
        let seq = changed.seq;
        Ok((self.view_after(id, changed)?, seq))
    }

    pub async fn get(&self, id: String) -> Result<RecordView, OfficeError> {
        self.blocking(move |office| office.view_blocking(&id)).await
    }

    /// The view of the record a change just left, made from the record the change hydrated
    /// for its summary; read anew only if there is none (nothing changed) or some field holds
    /// concurrent values, which the view lists.
    fn view_after<R>(&self, id: &str, changed: Changed<R>) -> Result<RecordView, OfficeError> {
        match changed.record {
            Some(record) if !changed.field_conflicted => Ok(RecordView {
                derived: record.derived(),
                field_conflicts: Vec::new(),
                heads: changed.heads.iter().map(ToString::to_string).collect(),
                record,
            }),
            _ => self.view_blocking(id),
        }
    }

    fn view_blocking(&self, id: &str) -> Result<RecordView, OfficeError> {
        let view = self
            .replica
            .read(id, |doc| -> Result<RecordView, OfficeError> {
                let record = doc::hydrate_record(doc).map_err(ReplicaError::from)?;
                Ok(RecordView {
                    derived: record.derived(),
                    field_conflicts: doc::conflicts(doc),
                    heads: doc.get_heads().iter().map(ToString::to_string).collect(),
                    record,
                })
            })?
            .ok_or_else(|| ReplicaError::NotFound(id.to_owned()))??;
        Ok(view)
    }

    pub async fn history(&self, id: String) -> Result<Vec<HistoryEntry>, OfficeError> {
        self.blocking(move |office| {
            Ok(office
                .replica
                .read(&id, doc::history)?
                .ok_or_else(|| ReplicaError::NotFound(id.clone()))?)
        })
        .await
    }

    pub async fn list(&self, filter: ListFilter) -> Result<Vec<Summary>, OfficeError> {
        self.blocking(move |office| {
            let mut rows: Vec<Summary> = office
                .replica
                .summaries()?
                .into_iter()
                .filter(|s| filter.kind.is_none_or(|k| s.kind == k.as_str()))
                .filter(|s| filter.party.as_deref().is_none_or(|p| s.is_party(p)))
                .filter(|s| filter.status.as_deref().is_none_or(|st| s.status == st))
                .filter(|s| filter.since_ms.is_none_or(|t| s.created_at_ms >= t))
                .filter(|s| filter.until_ms.is_none_or(|t| s.created_at_ms < t))
                .collect();
            rows.sort_by(|a, b| {
                a.created_at_ms
                    .cmp(&b.created_at_ms)
                    .then_with(|| a.id.cmp(&b.id))
            });
            if let Some(limit) = filter.limit {
                rows.truncate(limit);
            }
            Ok(rows)
        })
        .await
    }

    /// Every record this replica holds, hydrated (for obligations and feeds).
    pub async fn all_records(&self) -> Result<Vec<Record>, OfficeError> {
        self.blocking(|office| {
            let mut records = Vec::new();
            for summary in office.replica.summaries()? {
                match office.replica.record(&summary.id) {
                    Ok(record) => records.push(record),
                    // A document still missing part of its history is skipped until complete.
                    Err(ReplicaError::Doc(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(records)
        })
        .await
    }
}

fn not_a_party(org: &str, id: &str) -> OfficeError {
    RuleViolation {
        rule: workflow::RULE_PARTY,
        message: format!("{org} is not a party to record {id}"),
    }
    .into()
}

fn event_from(action: Action, org: &str, act: &Act, at_ms: i64) -> WorkflowEvent {
    WorkflowEvent {
        unit: act.unit.clone(),
        person: act.person.clone(),
        note: act.note.clone(),
        reason: act.reason.clone(),
        extension_wd: act.extension_wd,
        attachments: act.attachments.clone(),
        ..WorkflowEvent::new(action, at_ms, org)
    }
}

/// Organisations a body names as its counterpart, which are parties by definition.
fn implied_parties(body: &Body) -> Vec<String> {
    let named = match body {
        Body::Transfer(t) => vec![&t.receiver],
        Body::Complaint(c) => vec![&c.handler],
        Body::UrgentNotice(n) => vec![&n.receiver],
        Body::Assistance(a) => vec![&a.provider],
        Body::Dispute(d) => vec![&d.respondent],
        _ => vec![],
    };
    named
        .into_iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect()
}

fn check_field_sizes(value: &serde_json::Value) -> Result<(), OfficeError> {
    match crate::workflow::oversized_field(value) {
        Some(oversized) => Err(OfficeError::Invalid(oversized)),
        None => Ok(()),
    }
}
