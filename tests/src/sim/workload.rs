//! What the offices do during a run: create shared information items and urgent notices
//! between random organisations, append the workflow events their roles allow, edit bodies
//! (twice at once on the two devices of one organisation), and add parties.
//!
//! Body edits and added parties go through [`Office`] itself. Creations and events go through
//! the same steps `Office` takes (the same `workflow` checks, the same `doc` writes, one
//! `Replica` change each) with ids drawn from the seed: `Office` mints record and event ids
//! from the system's randomness, and those ids end up in change hashes, which Automerge's
//! sync messages (their Bloom filters) depend on, so a replay would not send the same frames.

use linkage_node::office::{Office, OfficeError};
use linkage_node::record::{
    Action, Body, Envelope, Record, RecordKind, SCHEMA_VERSION, SharedInfoBody, UrgentNoticeBody,
    WorkflowEvent, doc,
};
use linkage_node::replica::ReplicaError;
use linkage_node::workflow;

use super::world::{Ack, Sim};

/// Organisations records are shared with: every node's, and one with no node (the Forestry
/// Bureau), whose records must reach nobody but the parties that have nodes.
const ORGS: [&str; 7] = [
    "130304103",
    "130304100",
    "bdh-yjgl",
    "bdh-scjg",
    "bdh-sfj",
    "bdh-gov",
    "bdh-ly",
];

/// The two devices of one organisation (indices into `world::NODES`).
const TWINS: (usize, usize) = (0, 1);

impl Sim {
    /// One office act on a random running node.
    pub fn write(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].replica.is_some())
            .collect();
        if up.is_empty() {
            return;
        }
        let i = *self.rng.pick(&up);
        self.tick_before_write();
        match self.rng.below(100) {
            0..=11 => self.create_shared(i),
            12..=19 => self.create_notice(i),
            20..=59 => self.append_event(i),
            60..=89 => self.edit_body(i, None),
            _ => self.add_party(i),
        }
    }

    /// Both devices of one organisation edit the same field of the same record before either
    /// hears of the other's edit.
    pub fn twin_edit(&mut self) {
        let (a, b) = TWINS;
        if self.nodes[a].replica.is_none() || self.nodes[b].replica.is_none() {
            return;
        }
        let on_b = self.held(b);
        let both: Vec<String> = self
            .held(a)
            .into_iter()
            .filter(|id| on_b.contains(id))
            .collect();
        if both.is_empty() {
            return;
        }
        let id = self.rng.pick(&both).clone();
        self.tick_before_write();
        self.edit_body(a, Some(id.clone()));
        self.edit_body(b, Some(id));
    }

    /// An office act takes time: unless the run asks for same-millisecond writes, the clock
    /// moves on by a millisecond first (frames stay where they are).
    fn tick_before_write(&mut self) {
        if !self.cfg.same_ms_writes {
            self.advance(1);
        }
    }

    /// Records node `i` holds, complete, with its organisation among the parties.
    fn held(&self, i: usize) -> Vec<String> {
        let Some(replica) = &self.nodes[i].replica else {
            return Vec::new();
        };
        let org = &self.nodes[i].org;
        self.records
            .iter()
            .filter(|id| {
                replica
                    .summary(id)
                    .unwrap()
                    .is_some_and(|s| s.is_party(org) && s.status != "incomplete")
            })
            .cloned()
            .collect()
    }

    fn other_orgs(&mut self, org: &str, at_most: i64) -> Vec<String> {
        let mut picked = Vec::new();
        for _ in 0..self.rng.range(1, at_most) {
            let other = *self.rng.pick(&ORGS);
            if other != org && !picked.iter().any(|p| p == other) {
                picked.push(other.to_owned());
            }
        }
        picked
    }

    fn text(&mut self, what: &str) -> String {
        format!("{what} {:08x}", self.rng.next_u64() as u32)
    }

    fn create_shared(&mut self, i: usize) {
        let org = self.nodes[i].org.clone();
        let mut parties = vec![org.clone()];
        parties.extend(self.other_orgs(&org, 2));
        let now = self.now_ms();
        let body = Body::SharedInfo(SharedInfoBody {
            category: self.rng.range(1, 8) as u32,
            title: self.text("information"),
            content: self.text("content"),
            formed_at_ms: now - self.rng.range(0, 3_600_000),
            related_record: None,
        });
        self.create(i, RecordKind::SharedInfo, "SI", parties, body);
    }

    fn create_notice(&mut self, i: usize) {
        let org = self.nodes[i].org.clone();
        let receiver = self.other_orgs(&org, 1);
        let Some(receiver) = receiver.first().cloned() else {
            return;
        };
        let now = self.now_ms();
        let body = Body::UrgentNotice(UrgentNoticeBody {
            sender: org.clone(),
            receiver: receiver.clone(),
            hazard: self.text("hazard"),
            place: self.text("place"),
            found_at_ms: now - self.rng.range(0, 600_000),
            ..Default::default()
        });
        self.create(i, RecordKind::UrgentNotice, "UN", vec![org, receiver], body);
    }

    fn new_event(&mut self, action: Action, org: &str, at_ms: i64) -> WorkflowEvent {
        WorkflowEvent {
            id: format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64()),
            ..WorkflowEvent::new(action, at_ms, org)
        }
    }

    /// `Office::create`'s steps, with the record id from the seed.
    fn create(
        &mut self,
        i: usize,
        kind: RecordKind,
        prefix: &str,
        parties: Vec<String>,
        body: Body,
    ) {
        let org = self.nodes[i].org.clone();
        let replica = self.nodes[i]
            .replica
            .clone()
            .expect("writes go to running nodes");
        let now = self.now_ms();
        let id = format!("{prefix}-{:016x}", self.rng.next_u64());
        let record = Record {
            envelope: Envelope {
                id: id.clone(),
                kind: kind.as_str().to_owned(),
                owner: org.clone(),
                parties,
                created_at_ms: now,
                schema_version: SCHEMA_VERSION,
            },
            events: vec![self.new_event(workflow::opening_action(kind), &org, now)],
            body,
        };
        if workflow::validate_create(&self.directory, &org, &record).is_err() {
            self.stats.refused_writes += 1;
            return;
        }
        match replica.create(&record) {
            Ok(_) => self.ack(i, &id, format!("create {kind}")),
            Err(e) => self.unexpected(i, &id, "create", &e.to_string()),
        }
    }

    /// `Office::append_event`'s steps, with the event id from the seed.
    fn append_event(&mut self, i: usize) {
        let held = self.held(i);
        if held.is_empty() {
            return;
        }
        let id = self.rng.pick(&held).clone();
        let org = self.nodes[i].org.clone();
        let replica = self.nodes[i]
            .replica
            .clone()
            .expect("writes go to running nodes");
        let Ok(record) = replica.record(&id) else {
            return;
        };
        use Action as A;
        let contested = self.cfg.contested_events;
        let choices: &[Action] = match (record.kind(), contested) {
            (RecordKind::SharedInfo, true) => &[A::Shared, A::Extended, A::Updated, A::Closed],
            (RecordKind::SharedInfo, false) => &[A::Shared, A::Updated],
            (RecordKind::UrgentNotice, true) => &[
                A::Dispatched,
                A::Refused,
                A::StopOrdered,
                A::ReportedToGovernment,
                A::Updated,
                A::Closed,
            ],
            (RecordKind::UrgentNotice, false) => &[
                A::Dispatched,
                A::Refused,
                A::StopOrdered,
                A::ReportedToGovernment,
                A::Updated,
            ],
            _ => &[A::Updated],
        };
        let action = *self.rng.pick(choices);
        let now = self.now_ms();
        let mut event = self.new_event(action, &org, now);
        event.note = self.text("note");
        if matches!(action, A::Extended | A::Refused) {
            event.reason = Some(self.text("reason"));
            event.extension_wd = Some(self.rng.range(1, 15) as u32);
        }

        let directory = self.directory.clone();
        let outcome = replica.change(&id, false, |doc| -> Result<bool, ReplicaError> {
            let record = doc::hydrate_record(doc)?;
            if workflow::validate_event(&directory, &org, &record, &event).is_err() {
                return Ok(false);
            }
            doc::append_event(doc, &event, now)?;
            let mut parties = record.envelope.parties.clone();
            let before = parties.len();
            for party in workflow::parties_brought_in(&directory, record.kind(), action) {
                if !parties.contains(&party) {
                    parties.push(party);
                }
            }
            if parties.len() > before {
                doc::set_parties(doc, &parties, now)?;
            }
            Ok(true)
        });
        match outcome {
            Ok(changed) if changed.result => self.ack(i, &id, format!("event {action}")),
            Ok(_) => self.stats.refused_writes += 1,
            Err(e) => self.unexpected(i, &id, "event", &e.to_string()),
        }
    }

    /// Edits the record's free text through `Office::edit_body`.
    fn edit_body(&mut self, i: usize, id: Option<String>) {
        let id = match id {
            Some(id) => id,
            None => {
                let held = self.held(i);
                if held.is_empty() {
                    return;
                }
                self.rng.pick(&held).clone()
            }
        };
        let replica = self.nodes[i]
            .replica
            .clone()
            .expect("writes go to running nodes");
        let field = if id.starts_with("UN-") {
            "measures"
        } else {
            "content"
        };
        let patch = serde_json::json!({ field: self.text(&self.nodes[i].name.clone()) });
        let office = Office::new(replica, self.directory.clone());
        let result = self.helper.block_on(office.edit_body(id.clone(), patch));
        self.office_outcome(i, &id, "edit body", result.map(drop));
    }

    fn add_party(&mut self, i: usize) {
        let held = self.held(i);
        if held.is_empty() {
            return;
        }
        let id = self.rng.pick(&held).clone();
        let replica = self.nodes[i]
            .replica
            .clone()
            .expect("writes go to running nodes");
        let parties = replica
            .summary(&id)
            .unwrap()
            .map(|s| s.parties.clone())
            .unwrap_or_default();
        let candidates: Vec<&str> = ORGS
            .iter()
            .copied()
            .filter(|o| !parties.iter().any(|p| p == o))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let party = self.rng.pick(&candidates).to_string();
        let office = Office::new(replica, self.directory.clone());
        let result = self
            .helper
            .block_on(office.add_parties(id.clone(), vec![party.clone()]));
        self.office_outcome(i, &id, &format!("add party {party}"), result.map(drop));
    }

    fn office_outcome(&mut self, i: usize, id: &str, what: &str, result: Result<(), OfficeError>) {
        match result {
            Ok(()) => self.ack(i, id, what.to_owned()),
            Err(OfficeError::Rule(_) | OfficeError::Invalid(_)) => self.stats.refused_writes += 1,
            Err(e) => self.unexpected(i, id, what, &e.to_string()),
        }
    }

    fn unexpected(&mut self, i: usize, id: &str, what: &str, error: &str) {
        self.violations.push(format!(
            "{} could not {what} {id}: {error}",
            self.nodes[i].name
        ));
    }

    /// Logs an acknowledged write: its record, the heads it left, and the parties it gave.
    fn ack(&mut self, i: usize, id: &str, what: String) {
        let replica = self.nodes[i]
            .replica
            .clone()
            .expect("writes go to running nodes");
        let heads = replica.read(id, |d| d.get_heads()).unwrap().unwrap();
        let parties = replica.summary(id).unwrap().unwrap().parties.clone();
        self.entitled
            .entry(id.to_owned())
            .or_default()
            .extend(parties);
        if !self.records.iter().any(|r| r == id) {
            self.records.push(id.to_owned());
        }
        self.trace(("ack", i, id, &what, &heads));
        self.stats.writes += 1;
        self.acks.push(Ack {
            node: i,
            record: id.to_owned(),
            heads,
            what,
        });
    }
}
