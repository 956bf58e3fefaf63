//! Maps a [`Record`] to its Automerge document and back, binds actor ids to organisations,
//! and reads what a document says about itself: conflicts and who changed what.
//!
//! Document layout: `{ envelope: {...}, body: {...}, events: [...] }`, written and read with
//! autosurgeon. Only the fields that differ are written, so two offices editing different
//! fields offline merge cleanly and the same field edited twice shows as a conflict.

use std::collections::{BTreeMap, HashMap};

use automerge::transaction::CommitOptions;
use automerge::{ActorId, Automerge, Change, ChangeHash, ObjType, ReadDoc, Value};
use serde::Serialize;

pub mod frontier;
mod recorder;

use super::one_pass::OnePass;
use super::{Body, Envelope, Record, RecordKind, WorkflowEvent, for_kind};

/// Marks the end of the organisation id inside an actor id. Organisation ids are printable
/// text, so they never contain it.
const ACTOR_SEPARATOR: u8 = 0;

#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("document {what} cannot be read as a record: {detail}")]
    Hydrate { what: String, detail: String },
    #[error("record could not be written into its document: {0}")]
    Reconcile(String),
    #[error("document bytes are not a valid Automerge document: {0}")]
    Load(String),
}

/// A fresh actor id for a replica of `org`: the organisation id, a separator, and 16 random
/// bytes that tell the organisation's devices apart. The hub reads the organisation back with
/// [`org_of_actor`] and refuses changes whose actor is not the sending node's organisation.
pub fn actor_for(org: &str) -> ActorId {
    let mut bytes = org.as_bytes().to_vec();
    bytes.push(ACTOR_SEPARATOR);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    ActorId::from(bytes)
}

/// The organisation an actor id is bound to, if it follows [`actor_for`]'s layout.
pub fn org_of_actor(actor: &ActorId) -> Option<String> {
    let bytes = actor.to_bytes();
    let end = bytes.iter().position(|b| *b == ACTOR_SEPARATOR)?;
    let org = std::str::from_utf8(&bytes[..end]).ok()?;
    (!org.is_empty()).then(|| org.to_owned())
}

fn commit(message: String, at_ms: i64) -> CommitOptions {
    CommitOptions::default()
        .with_message(message)
        .with_time(at_ms)
}

fn reconcile_err(e: impl std::fmt::Display) -> DocError {
    DocError::Reconcile(e.to_string())
}

/// A new document holding `record`, its first change made by `actor` at wall time `now_ms`.
pub fn new_document(record: &Record, actor: ActorId, now_ms: i64) -> Result<Automerge, DocError> {
    let mut doc = Automerge::new().with_actor(actor);
    let message = create_message(record);
    doc.transact_with(
        |_| commit(message, now_ms),
        |tx| autosurgeon::reconcile(tx, Layout(record)).map_err(reconcile_err),
    )
    .map_err(|f| f.error)?;
    Ok(doc)
}

/// A new record's first change, by `actor` at `now_ms`: recorded straight from the record
/// where its layout allows (the `recorder` module), else made through a transaction on a new
/// document. The document loaded from it reads back as `record`.
pub fn first_change(record: &Record, actor: ActorId, now_ms: i64) -> Result<Change, DocError> {
    recorder::encode_or_transact(
        &Layout(record),
        &actor,
        now_ms,
        create_message(record),
        || new_document(record, actor.clone(), now_ms),
    )
}

/// The record a first change makes: what a document loaded from it reads as.
pub fn record_of_change(change: &Change) -> Result<Record, DocError> {
    let mut doc = Automerge::new();
    doc.apply_changes([change.clone()])
        .map_err(|e| DocError::Load(e.to_string()))?;
    hydrate_record(&doc)
}

fn create_message(record: &Record) -> String {
    format!("create {} {}", record.kind(), record.id())
}

/// A record as its document's root (see the module's layout), reconciled in one piece.
///
/// Reconciled into an empty document, autosurgeon builds the whole value first and Automerge
/// inserts it in one batch. Field by field, each list element was its own insert into
/// Automerge's op columns after a diff against the empty list: a record with twenty parties
/// took 280 µs to write that way, most of an office's CPU per create.
struct Layout<'a>(&'a Record);

impl autosurgeon::Reconcile for Layout<'_> {
    type Key<'k> = autosurgeon::reconcile::NoKey;

    fn reconcile<R: autosurgeon::Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        use autosurgeon::reconcile::MapReconciler;
        let Layout(record) = self;
        let mut root = reconciler.map()?;
        root.put("envelope", &record.envelope)?;
        super::each_body!(&record.body, b => root.put("body", b))?;
        root.put("events", &record.events)?;
        Ok(())
    }
}

/// Reads the whole record out of a document.
pub fn hydrate_record(doc: &Automerge) -> Result<Record, DocError> {
    let doc = &OnePass::new(doc);
    let envelope = hydrate_envelope_from(doc)?;
    let kind = envelope.kind().map_err(|e| DocError::Hydrate {
        what: envelope.id.clone(),
        detail: e.to_string(),
    })?;
    let body = hydrate_body(doc, kind).map_err(|detail| DocError::Hydrate {
        what: format!("{} body", envelope.id),
        detail,
    })?;
    let events: Vec<WorkflowEvent> = autosurgeon::hydrate_prop(doc, automerge::ROOT, "events")
        .map_err(|e| DocError::Hydrate {
            what: format!("{} events", envelope.id),
            detail: e.to_string(),
        })?;
    let mut envelope = envelope;
    super::dedup_parties(&mut envelope.parties);
    Ok(Record {
        envelope,
        body,
        events,
    })
}

/// Changes that do nothing to a record but put scalar values into fields of its body, as
/// [`body_field_puts`] read them before they were applied.
#[derive(Debug)]
pub struct BodyFieldPuts {
    changes: Vec<ChangeHash>,
}

/// Whether all `changes` would do to the record in `doc` is put scalar values into fields of
/// its body: every op of every change puts a scalar at a key of the map the document's `body`
/// holds. `None` if any op does anything else (inserts, deletes, makes an object, counts,
/// marks, or writes outside the body), or the document holds no body map.
///
/// The hub's gate compares a record before and after a node's changes. After such changes
/// its envelope and events read as they did before (no op touched them), and only its body
/// may differ, so the record before them need not be read: that read was a tenth of the hub's
/// CPU taking in a reconnecting office's edits. (Which fields changed value is not worked
/// out either: two lookups per field cost as much as the read.)
pub fn body_field_puts(doc: &Automerge, changes: &[Change]) -> Option<BodyFieldPuts> {
    use automerge::legacy::{Key, ObjectId, OpId, OpType};

    let (Value::Object(ObjType::Map), body) = doc.get(automerge::ROOT, "body").ok()?? else {
        return None;
    };
    let automerge::ObjId::Id(counter, actor, _) = &body else {
        return None;
    };
    for change in changes {
        for op in change.decode().operations {
            let in_body = matches!(&op.obj, ObjectId::Id(OpId(c, a)) if c == counter && a == actor);
            let puts_field = matches!((&op.action, &op.key), (OpType::Put(_), Key::Map(_)));
            if !(in_body && puts_field && !op.insert) {
                return None;
            }
        }
    }
    Some(BodyFieldPuts {
        changes: changes.iter().map(Change::hash).collect(),
    })
}

impl BodyFieldPuts {
    /// Whether every change in `added` (what the document took in) is one of these: a change
    /// held back earlier for a missing dependency and applied with them is not.
    pub fn cover(&self, added: &[automerge::ChangeMetadata<'_>]) -> bool {
        added
            .iter()
            .all(|change| self.changes.contains(&change.hash))
    }
}

pub fn hydrate_envelope(doc: &Automerge) -> Result<Envelope, DocError> {
    hydrate_envelope_from(&OnePass::new(doc))
}

fn hydrate_envelope_from(doc: &OnePass<'_>) -> Result<Envelope, DocError> {
    autosurgeon::hydrate_prop(doc, automerge::ROOT, "envelope").map_err(|e| DocError::Hydrate {
        what: "envelope".into(),
        detail: e.to_string(),
    })
}

fn hydrate_body(doc: &OnePass<'_>, kind: RecordKind) -> Result<Body, String> {
    for_kind!(kind, T, ctor => autosurgeon::hydrate_prop::<_, T, _, _>(doc, automerge::ROOT, "body")
        .map(ctor)
        .map_err(|e| e.to_string()))
}

/// Hydrates a list of strings in one pass. autosurgeon reads a list element by element, each
/// a seek from the list's start in Automerge 0.12; for a record's parties that was half of
/// its hydration, which every received message and every summary pays.
pub(crate) fn hydrate_string_list<D: autosurgeon::ReadDoc>(
    doc: &D,
    obj: &automerge::ObjId,
    prop: autosurgeon::Prop<'_>,
) -> Result<Vec<String>, autosurgeon::HydrateError> {
    use autosurgeon::{HydrateError, Prop};
    let prop = match prop {
        Prop::Key(key) => automerge::Prop::Map(key.into_owned()),
        Prop::Index(index) => automerge::Prop::Seq(index as usize),
    };
    let list = match doc.get(obj, prop)? {
        Some((Value::Object(ObjType::List), list)) => list,
        Some((other, _)) => {
            return Err(HydrateError::unexpected("a list", format!("{other:?}")));
        }
        None => return Err(HydrateError::unexpected("a list", "nothing".into())),
    };
    doc.list_range(&list, ..)
        .map(|item| match item.value {
            automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => Ok(s.into_owned()),
            other => Err(HydrateError::unexpected("a string", format!("{other:?}"))),
        })
        .collect()
}

/// Two offices adding the same party concurrently insert it twice; it is one party.
/// Appends `event` to the document's event list as one change by the document's actor.
pub fn append_event(
    doc: &mut Automerge,
    event: &WorkflowEvent,
    now_ms: i64,
) -> Result<(), DocError> {
    let held: Vec<WorkflowEvent> =
        autosurgeon::hydrate_prop(&OnePass::new(doc), automerge::ROOT, "events").map_err(|e| {
            DocError::Hydrate {
                what: "events".into(),
                detail: e.to_string(),
            }
        })?;
    append_to_events(doc, &held, event, now_ms)
}

/// [`append_event`] to a document whose events, as it reads, are `held` (the caller hydrated
/// the record already).
pub fn append_to_events(
    doc: &mut Automerge,
    held: &[WorkflowEvent],
    event: &WorkflowEvent,
    now_ms: i64,
) -> Result<(), DocError> {
    let mut events = held.to_vec();
    events.push(event.clone());
    let message = format!("event {}", event.action);
    doc.transact_with(
        |_| commit(message, now_ms),
        |tx| {
            autosurgeon::reconcile_prop(tx, automerge::ROOT, "events", &events)
                .map_err(reconcile_err)
        },
    )
    .map_err(|f| f.error)?;
    Ok(())
}

/// Writes the named `fields` of `body` (those an edit set) into the document, and no other.
///
/// Reconciling the whole body would put every field again, and Automerge's put of an
/// unchanged value, harmless on a plain field, settles a field that holds concurrent values
/// with Automerge's winner: editing one field would silently settle a conflict on another.
/// Each field keeps autosurgeon's encoding, as the recorder writes it down for a fresh
/// document (`recorder::record`). A field holding an object (a list) is replaced whole.
pub fn edit_body(
    doc: &mut Automerge,
    body: &Body,
    fields: &[&str],
    now_ms: i64,
) -> Result<(), DocError> {
    let recorded = super::each_body!(body, b => recorder::record(b)).map_err(reconcile_err)?;
    doc.transact_with(
        |_| commit("edit body".to_owned(), now_ms),
        |tx| -> Result<(), DocError> {
            let target = match tx.get(automerge::ROOT, "body").map_err(reconcile_err)? {
                Some((Value::Object(ObjType::Map), id)) => id,
                _ => return Err(DocError::Reconcile("the document has no body".into())),
            };
            for field in fields {
                if !recorded
                    .put_into(field, tx, &target)
                    .map_err(reconcile_err)?
                {
                    return Err(DocError::Reconcile(format!(
                        "{field} is not a field of this body"
                    )));
                }
            }
            Ok(())
        },
    )
    .map_err(|f| f.error)?;
    Ok(())
}

/// Replaces the party list with `parties` (a superset of the current one).
pub fn set_parties(doc: &mut Automerge, parties: &[String], now_ms: i64) -> Result<(), DocError> {
    let message = format!("parties {}", parties.join(","));
    doc.transact_with(
        |_| commit(message, now_ms),
        |tx| -> Result<(), DocError> {
            let envelope = tx
                .get(automerge::ROOT, "envelope")
                .map_err(reconcile_err)?
                .map(|(_, id)| id)
                .ok_or_else(|| DocError::Reconcile("document has no envelope".into()))?;
            autosurgeon::reconcile_prop(tx, envelope, "parties", parties).map_err(reconcile_err)
        },
    )
    .map_err(|f| f.error)?;
    Ok(())
}

/// A field that holds more than one value because offices wrote it concurrently. Automerge
/// keeps every value; the record shows them all until someone writes the field again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldConflict {
    pub path: String,
    pub values: Vec<String>,
}

/// Every conflicted field of the document, by path (`body.assessment`, `events.3.note`).
pub fn conflicts(doc: &Automerge) -> Vec<FieldConflict> {
    let mut found = Vec::new();
    walk(
        doc,
        automerge::ROOT,
        String::new(),
        ObjType::Map,
        &mut found,
    );
    found
}

fn walk(
    doc: &Automerge,
    obj: automerge::ObjId,
    path: String,
    kind: ObjType,
    found: &mut Vec<FieldConflict>,
) {
    let props: Vec<automerge::Prop> = match kind {
        ObjType::Map | ObjType::Table => doc.keys(&obj).map(automerge::Prop::Map).collect(),
        ObjType::List => (0..doc.length(&obj)).map(automerge::Prop::Seq).collect(),
        ObjType::Text => return,
    };
    for prop in props {
        let child_path = if path.is_empty() {
            prop.to_string()
        } else {
            format!("{path}.{prop}")
        };
        let Ok(values) = doc.get_all(&obj, prop) else {
            continue;
        };
        if values.len() > 1 {
            found.push(FieldConflict {
                path: child_path.clone(),
                values: values.iter().map(|(v, id)| render(doc, v, id)).collect(),
            });
        }
        if let Some((Value::Object(child_kind), child)) = values.into_iter().next() {
            walk(doc, child, child_path, child_kind, found);
        }
    }
}

/// How much of a conflicting list or map a conflict shows: enough to tell the values apart,
/// cut short so that a long list cannot flood the screen it is shown on.
const SHOWN_OBJECT_CHARS: usize = 300;
/// How deep a conflicting list or map is shown; records nest two or three levels.
const SHOWN_OBJECT_DEPTH: usize = 8;

/// One of a conflicted field's values as a person reads it: a string as it is, any other
/// scalar as Automerge writes it, and a list or map (`materials`, say) as JSON, since
/// `<list> | <list>` told nobody what the offices had written.
fn render(doc: &Automerge, value: &Value<'_>, id: &automerge::ObjId) -> String {
    match value {
        Value::Scalar(s) => match s.as_ref() {
            automerge::ScalarValue::Str(s) => s.to_string(),
            other => other.to_string(),
        },
        Value::Object(_) => {
            let json = object_json(doc, id, 0).to_string();
            match json.char_indices().nth(SHOWN_OBJECT_CHARS) {
                Some((cut, _)) => format!("{}…", &json[..cut]),
                None => json,
            }
        }
    }
}

/// A list, map or text object as JSON, each field or item as its winning value reads.
fn object_json(doc: &Automerge, obj: &automerge::ObjId, depth: usize) -> serde_json::Value {
    use serde_json::Value as Json;
    if depth >= SHOWN_OBJECT_DEPTH {
        return Json::String("…".into());
    }
    let value_json = |value: Value<'_>, id: &automerge::ObjId| match value {
        Value::Object(_) => object_json(doc, id, depth + 1),
        Value::Scalar(s) => scalar_json(&s),
    };
    match doc.object_type(obj) {
        Ok(ObjType::Map | ObjType::Table) => Json::Object(
            doc.map_range(obj, ..)
                .map(|item| {
                    let id = item.id();
                    (
                        item.key.into_owned(),
                        value_json(item.value.into_value(), &id),
                    )
                })
                .collect(),
        ),
        Ok(ObjType::List) => Json::Array(
            doc.list_range(obj, ..)
                .map(|item| {
                    let id = item.id();
                    value_json(item.value.into_value(), &id)
                })
                .collect(),
        ),
        Ok(ObjType::Text) => Json::String(doc.text(obj).unwrap_or_default()),
        Err(_) => Json::Null,
    }
}

fn scalar_json(scalar: &automerge::ScalarValue) -> serde_json::Value {
    use automerge::ScalarValue as S;
    use serde_json::Value as Json;
    match scalar {
        S::Str(s) => Json::String(s.to_string()),
        S::Int(n) | S::Timestamp(n) => Json::from(*n),
        S::Uint(n) => Json::from(*n),
        S::F64(f) => Json::from(*f),
        S::Counter(c) => Json::from(i64::from(c)),
        S::Boolean(b) => Json::Bool(*b),
        S::Null => Json::Null,
        other => Json::String(other.to_string()),
    }
}

/// One change of a document, attributed to its organisation: the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub change_hash: String,
    pub actor: String,
    pub org: String,
    pub at_ms: i64,
    pub message: String,
    pub seq: u64,
}

/// Every change of `doc`, oldest first, in the same order on every copy: each change after
/// the changes it depends on, ties broken by time, then actor, then sequence number.
/// Automerge lists changes in the order a copy applied them, so where offices edited
/// concurrently two copies, or one copy before and after a restart, listed them differently
/// (a break-test saw history lines swap across a restart).
pub fn history(doc: &Automerge) -> Vec<HistoryEntry> {
    let changes = doc.get_changes(&[]);
    let position: HashMap<ChangeHash, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, change)| (change.hash(), i))
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
    let mut unmet: Vec<usize> = vec![0; changes.len()];
    for (i, change) in changes.iter().enumerate() {
        for dep in change.deps() {
            if let Some(&j) = position.get(dep) {
                dependents[j].push(i);
                unmet[i] += 1;
            }
        }
    }

    // Kahn's topological order, taking the earliest ready change each time.
    let entry = |i: usize| {
        let change = &changes[i];
        HistoryEntry {
            change_hash: change.hash().to_string(),
            actor: change.actor_id().to_hex_string(),
            org: org_of_actor(change.actor_id()).unwrap_or_else(|| "unattributed".into()),
            at_ms: change.timestamp(),
            message: change.message().map(str::to_owned).unwrap_or_default(),
            seq: change.seq(),
        }
    };
    let order = |e: &HistoryEntry| (e.at_ms, e.actor.clone(), e.seq, e.change_hash.clone());
    let mut ready: BTreeMap<_, (usize, HistoryEntry)> = BTreeMap::new();
    for i in (0..changes.len()).filter(|&i| unmet[i] == 0) {
        let e = entry(i);
        ready.insert(order(&e), (i, e));
    }
    let mut history = Vec::with_capacity(changes.len());
    while let Some((_, (i, e))) = ready.pop_first() {
        history.push(e);
        for &next in &dependents[i] {
            unmet[next] -= 1;
            if unmet[next] == 0 {
                let e = entry(next);
                ready.insert(order(&e), (next, e));
            }
        }
    }
    history
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Action, Liaison, LiaisonDirectoryBody, SCHEMA_VERSION};

    fn notice(owner: &str) -> Record {
        crate::record::sample_notice(&RecordKind::UrgentNotice.new_record_id(), owner)
    }

    /// The record as autosurgeon reads it straight from the document, field by field.
    fn hydrated_directly(doc: &Automerge) -> Record {
        let envelope: Envelope =
            autosurgeon::hydrate_prop(doc, automerge::ROOT, "envelope").unwrap();
        let kind = envelope.kind().unwrap();
        let body = for_kind!(kind, T, ctor => autosurgeon::hydrate_prop::<_, T, _, _>(doc, automerge::ROOT, "body")
            .map(ctor)
            .unwrap());
        let events = autosurgeon::hydrate_prop(doc, automerge::ROOT, "events").unwrap();
        let mut envelope = envelope;
        crate::record::dedup_parties(&mut envelope.parties);
        Record {
            envelope,
            body,
            events,
        }
    }

    /// `OnePass` (one read per object) must pick the same winner of concurrent writes as
    /// autosurgeon's own field-by-field reads, on both ends of a merge.
    #[test]
    fn one_pass_hydration_matches_autosurgeons_own_on_conflicted_documents() {
        let record = notice("130304100");
        let base = new_document(&record, actor_for("130304100"), 1_000).unwrap();
        assert_eq!(hydrate_record(&base).unwrap(), hydrated_directly(&base));

        let edit = |org: &str, hazard: &str, party: &str, at: i64| {
            let mut copy = base.fork().with_actor(actor_for(org));
            let mut body = record.body.clone();
            if let Body::UrgentNotice(notice) = &mut body {
                notice.hazard = hazard.into();
                notice.measures = format!("measures by {org}");
            }
            edit_body(&mut copy, &body, &["hazard", "measures"], at).unwrap();
            append_event(&mut copy, &WorkflowEvent::new(Action::Updated, at, org), at).unwrap();
            let mut parties = record.envelope.parties.clone();
            parties.push(party.into());
            set_parties(&mut copy, &parties, at).unwrap();
            copy
        };
        let mut township = edit("130304100", "gas cylinders, now removed", "bdh-scjg", 2_000);
        let mut bureau = edit(
            "bdh-yjgl",
            "gas cylinders, two more found",
            "bdh-zrzy",
            2_001,
        );
        township.merge(&mut bureau.clone()).unwrap();
        bureau.merge(&mut township.clone()).unwrap();

        for doc in [&township, &bureau] {
            assert!(
                !conflicts(doc).is_empty(),
                "the hazard was edited twice at once"
            );
            let read = hydrate_record(doc).unwrap();
            assert_eq!(read, hydrated_directly(doc));
            assert_eq!(read.events.len(), 3, "{:?}", read.events);
            assert_eq!(hydrate_envelope(doc).unwrap(), read.envelope);
        }
        assert_eq!(
            hydrate_record(&township).unwrap(),
            hydrate_record(&bureau).unwrap()
        );
    }

    /// A field holding a list of maps is written whole and reads back as the body was given;
    /// fields the edit does not name are left as they were.
    #[test]
    fn an_edited_list_field_reads_back_and_other_fields_stay() {
        let record = Record {
            envelope: Envelope {
                id: RecordKind::LiaisonDirectory.new_record_id(),
                kind: "liaison_directory".into(),
                owner: "bdh-scjg".into(),
                parties: vec!["bdh-scjg".into()],
                created_at_ms: 1_000,
                schema_version: SCHEMA_VERSION,
            },
            body: Body::LiaisonDirectory(LiaisonDirectoryBody {
                org: "bdh-scjg".into(),
                liaisons: vec![Liaison {
                    name: "王 Wang".into(),
                    role: "liaison".into(),
                    phone: "0335-1".into(),
                }],
            }),
            events: vec![WorkflowEvent::new(Action::Published, 1_000, "bdh-scjg")],
        };
        let mut doc = new_document(&record, actor_for("bdh-scjg"), 5).unwrap();
        let liaisons = vec![
            Liaison {
                name: "李 Li".into(),
                role: "deputy".into(),
                phone: "0335-2".into(),
            },
            Liaison {
                name: "赵 Zhao".into(),
                role: "liaison".into(),
                phone: "0335-3".into(),
            },
        ];
        // The body as an edit of `liaisons` makes it, with `org` changed too but not named.
        let edited = Body::LiaisonDirectory(LiaisonDirectoryBody {
            org: "not written".into(),
            liaisons: liaisons.clone(),
        });
        edit_body(&mut doc, &edited, &["liaisons"], 6).unwrap();

        let Body::LiaisonDirectory(body) = hydrate_record(&doc).unwrap().body else {
            unreachable!()
        };
        assert_eq!(body.liaisons, liaisons);
        assert_eq!(
            body.org, "bdh-scjg",
            "a field the edit did not name is untouched"
        );
        assert!(
            edit_body(&mut doc, &edited, &["no_such_field"], 7).is_err(),
            "a field the body does not have is refused"
        );
    }

    #[test]
    fn actor_ids_carry_their_organisation() {
        let actor = actor_for("130304103");
        assert_eq!(org_of_actor(&actor).as_deref(), Some("130304103"));
        assert_ne!(
            actor,
            actor_for("130304103"),
            "each replica gets its own actor"
        );
        assert_eq!(org_of_actor(&ActorId::random()), None);
    }

    #[test]
    fn record_round_trips_through_its_document() {
        let record = notice("130304103");
        let doc = new_document(&record, actor_for("130304103"), 5).unwrap();
        let loaded = Automerge::load(&doc.save()).unwrap();
        assert_eq!(hydrate_record(&loaded).unwrap(), record);
        let history = history(&loaded);
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].org, "130304103");
    }

    #[test]
    fn concurrent_edits_of_different_fields_merge_and_of_one_field_conflict() {
        let record = notice("130304103");
        let base = new_document(&record, actor_for("130304103"), 5).unwrap();
        let mut pc = base.fork().with_actor(actor_for("bdh-yjgl"));
        let mut laptop = base.fork().with_actor(actor_for("bdh-yjgl"));

        let Body::UrgentNotice(mut on_pc) = record.body.clone() else {
            unreachable!()
        };
        on_pc.assessment = "cylinders leaking".into();
        on_pc.measures = "area closed".into();
        edit_body(
            &mut pc,
            &Body::UrgentNotice(on_pc),
            &["assessment", "measures"],
            6,
        )
        .unwrap();
        let Body::UrgentNotice(mut on_laptop) = record.body.clone() else {
            unreachable!()
        };
        on_laptop.assessment = "cylinders intact".into();
        edit_body(
            &mut laptop,
            &Body::UrgentNotice(on_laptop),
            &["assessment"],
            7,
        )
        .unwrap();

        pc.merge(&mut laptop).unwrap();
        let merged = hydrate_record(&pc).unwrap();
        let Body::UrgentNotice(body) = merged.body else {
            unreachable!()
        };
        assert_eq!(
            body.measures, "area closed",
            "the field only one device wrote is kept"
        );
        let conflicts = conflicts(&pc);
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0].path, "body.assessment");
        let mut values = conflicts[0].values.clone();
        values.sort();
        assert_eq!(values, ["cylinders intact", "cylinders leaking"]);
    }

    /// Two devices that each replace a list field (a transfer's materials, say) conflict on
    /// it, and the conflict shows each list's items, not `<list> | <list>`; a long one is cut
    /// short.
    #[test]
    fn a_conflict_over_a_list_shows_each_lists_items() {
        use automerge::transaction::Transactable;
        let base = new_document(&notice("130304103"), actor_for("130304103"), 5).unwrap();
        let write_materials = |doc: &mut Automerge, materials: &[(&str, &str)]| {
            doc.transact::<_, _, automerge::AutomergeError>(|tx| {
                let (_, body) = tx.get(automerge::ROOT, "body")?.unwrap();
                let list = tx.put_object(&body, "materials", ObjType::List)?;
                for (index, (kind, name)) in materials.iter().enumerate() {
                    let item = tx.insert_object(&list, index, ObjType::Map)?;
                    tx.put(&item, "kind", *kind)?;
                    tx.put(&item, "name", *name)?;
                }
                Ok(())
            })
            .unwrap();
        };
        let mut pc = base.fork().with_actor(actor_for("bdh-yjgl"));
        write_materials(&mut pc, &[("evidence", "photo 1")]);
        let mut laptop = base.fork().with_actor(actor_for("bdh-yjgl"));
        let many: Vec<(&str, &str)> = (0..40)
            .map(|_| ("evidence", "photo of the stall"))
            .collect();
        write_materials(&mut laptop, &many);
        pc.merge(&mut laptop).unwrap();

        let conflicts = conflicts(&pc);
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0].path, "body.materials");
        let mut values = conflicts[0].values.clone();
        values.sort_by_key(String::len);
        assert_eq!(values[0], r#"[{"kind":"evidence","name":"photo 1"}]"#);
        assert!(
            values[1].starts_with(r#"[{"kind":"evidence","name":"photo of the stall"},"#)
                && values[1].ends_with('…')
                && values[1].chars().count() == SHOWN_OBJECT_CHARS + 1,
            "{}",
            values[1]
        );
    }

    /// Two copies that took two offices' concurrent changes in opposite orders, and a copy
    /// reloaded from bytes, list one history: dependencies first, then the earlier change.
    #[test]
    fn history_lists_concurrent_changes_in_one_order_on_every_copy() {
        let record = notice("130304103");
        let base = new_document(&record, actor_for("130304103"), 5).unwrap();
        let mut town = base.fork().with_actor(actor_for("130304103"));
        let mut bureau = base.fork().with_actor(actor_for("bdh-yjgl"));
        append_event(
            &mut town,
            &WorkflowEvent::new(Action::Updated, 9, "130304103"),
            9,
        )
        .unwrap();
        append_event(
            &mut bureau,
            &WorkflowEvent::new(Action::Dispatched, 7, "bdh-yjgl"),
            7,
        )
        .unwrap();
        let mut town_copy = town.fork();
        town_copy.merge(&mut bureau.fork()).unwrap();
        let mut bureau_copy = bureau.fork().with_actor(actor_for("bdh-yjgl"));
        bureau_copy.merge(&mut town.fork()).unwrap();
        append_event(
            &mut bureau_copy,
            &WorkflowEvent::new(Action::Updated, 3, "bdh-yjgl"),
            3,
        )
        .unwrap();
        town_copy.merge(&mut bureau_copy.fork()).unwrap();

        let listed = history(&town_copy);
        assert_eq!(listed, history(&bureau_copy));
        assert_eq!(
            listed,
            history(&Automerge::load(&bureau_copy.save()).unwrap())
        );
        let orgs_and_times: Vec<_> = listed.iter().map(|e| (e.org.as_str(), e.at_ms)).collect();
        assert_eq!(
            orgs_and_times,
            [
                ("130304103", 5),
                ("bdh-yjgl", 7),
                ("130304103", 9),
                // Stamped earlier than the changes it follows, it is listed after them.
                ("bdh-yjgl", 3),
            ]
        );
    }

    #[test]
    fn concurrent_event_appends_keep_both_events() {
        let record = notice("130304103");
        let base = new_document(&record, actor_for("130304103"), 5).unwrap();
        let mut a = base.fork().with_actor(actor_for("bdh-yjgl"));
        let mut b = base.fork().with_actor(actor_for("bdh-yjgl"));
        append_event(
            &mut a,
            &WorkflowEvent::new(Action::Dispatched, 10, "bdh-yjgl"),
            10,
        )
        .unwrap();
        append_event(
            &mut b,
            &WorkflowEvent::new(Action::Updated, 11, "bdh-yjgl"),
            11,
        )
        .unwrap();
        a.merge(&mut b).unwrap();
        assert_eq!(hydrate_record(&a).unwrap().events.len(), 3);
    }

    /// A change made to a copy of a document, for a test to compare.
    type Edit<'a> = Box<dyn FnOnce(&mut Automerge) + 'a>;

    /// The changes `change` adds to `base`, parsed as the hub reads a node's message.
    fn added_by(base: &Automerge, change: impl FnOnce(&mut Automerge)) -> (Automerge, Vec<Change>) {
        let mut changed = base.fork().with_actor(actor_for("130304103"));
        change(&mut changed);
        let bytes = changed.save_after(&base.get_heads());
        let changes = crate::sync::guard::plain_changes([bytes.as_slice()]).unwrap();
        (changed, changes)
    }

    /// Only changes that put values into the body's fields are taken as such: an appended
    /// event, a widened party list, a write to the envelope, a deleted field or a list written
    /// into the body each leave the record before them to be read whole.
    #[test]
    fn only_puts_into_body_fields_leave_the_record_before_them_unread() {
        let record = notice("130304103");
        let base = new_document(&record, actor_for("130304103"), 5).unwrap();
        let Body::UrgentNotice(mut edited) = record.body.clone() else {
            unreachable!()
        };
        edited.assessment = "cylinders leaking".into();
        edited.measures = "area closed".into();
        let edited = Body::UrgentNotice(edited);

        let (after, changes) = added_by(&base, |doc| {
            edit_body(doc, &edited, &["assessment", "measures"], 6).unwrap()
        });
        let puts = body_field_puts(&base, &changes).expect("two body fields put");
        let added = after.get_changes_meta(&base.get_heads());
        assert!(puts.cover(&added));
        // Two edits in a row are still only puts.
        let (_, two) = added_by(&base, |doc| {
            edit_body(doc, &edited, &["assessment"], 6).unwrap();
            edit_body(doc, &edited, &["measures"], 7).unwrap();
        });
        assert!(body_field_puts(&base, &two).is_some());

        let others: Vec<(&str, Edit)> = vec![
            (
                "an appended event",
                Box::new(|doc| {
                    append_event(doc, &WorkflowEvent::new(Action::Updated, 6, "130304103"), 6)
                        .unwrap()
                }),
            ),
            (
                "a widened party list",
                Box::new(|doc| {
                    let mut parties = record.envelope.parties.clone();
                    parties.push("bdh-scjg".into());
                    set_parties(doc, &parties, 6).unwrap()
                }),
            ),
            (
                "a write to the envelope",
                Box::new(|doc| {
                    use automerge::transaction::Transactable;
                    let mut tx = doc.transaction();
                    let (_, envelope) = tx.get(automerge::ROOT, "envelope").unwrap().unwrap();
                    tx.put(&envelope, "owner", "bdh-scjg").unwrap();
                    tx.commit();
                }),
            ),
            (
                "a deleted body field",
                Box::new(|doc| {
                    use automerge::transaction::Transactable;
                    let mut tx = doc.transaction();
                    let (_, body) = tx.get(automerge::ROOT, "body").unwrap().unwrap();
                    tx.delete(&body, "measures").unwrap();
                    tx.commit();
                }),
            ),
            (
                "a list written into the body",
                Box::new(|doc| {
                    use automerge::transaction::Transactable;
                    let mut tx = doc.transaction();
                    let (_, body) = tx.get(automerge::ROOT, "body").unwrap().unwrap();
                    let list = tx.put_object(&body, "measures", ObjType::List).unwrap();
                    tx.insert(&list, 0, "area closed").unwrap();
                    tx.commit();
                }),
            ),
            (
                "a value put at the root",
                Box::new(|doc| {
                    use automerge::transaction::Transactable;
                    let mut tx = doc.transaction();
                    tx.put(automerge::ROOT, "body", "gone").unwrap();
                    tx.commit();
                }),
            ),
        ];
        for (what, change) in others {
            let (_, changes) = added_by(&base, change);
            assert!(
                body_field_puts(&base, &changes).is_none(),
                "{what} taken for body field puts"
            );
        }
    }

    /// A change held back for a missing dependency and applied along with body field puts is
    /// not one of them: the gate then reads the record before them all.
    #[test]
    fn changes_applied_beside_the_puts_are_not_covered_by_them() {
        let record = notice("130304103");
        let base = new_document(&record, actor_for("130304103"), 5).unwrap();
        let (evented, event) = added_by(&base, |doc| {
            append_event(doc, &WorkflowEvent::new(Action::Updated, 6, "130304103"), 6).unwrap()
        });
        let Body::UrgentNotice(mut edited) = record.body.clone() else {
            unreachable!()
        };
        edited.measures = "area closed".into();
        let (_, puts) = added_by(&evented, |doc| {
            edit_body(doc, &Body::UrgentNotice(edited), &["measures"], 7).unwrap()
        });
        let found = body_field_puts(&base, &puts).expect("a body field put");

        let mut hub = base.fork();
        hub.apply_changes(puts.iter().cloned()).unwrap();
        assert_eq!(
            hub.get_heads(),
            base.get_heads(),
            "the put waits for the event"
        );
        hub.apply_changes(event).unwrap();
        let added = hub.get_changes_meta(&base.get_heads());
        assert_eq!(added.len(), 2);
        assert!(!found.cover(&added));
    }
}
