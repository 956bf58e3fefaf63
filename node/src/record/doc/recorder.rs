//! Records the ops autosurgeon writes into a fresh document: a new record's first change,
//! encoded without building its document, and the body fields an edit writes.
//!
//! Making a record's document through an Automerge transaction (autosurgeon reconciling into
//! an empty document, Automerge splicing every op into its op columns, committing, saving)
//! was half of an office's CPU per create, and the disk sync waits on that CPU. A new
//! document's first change is only a list of ops without predecessors. [`OpRecorder`] is an
//! autosurgeon `Reconciler` that writes down the ops the record's own `Reconcile` impls ask
//! for, and Automerge's encoder (`ExpandedChange` into `Change`) makes the change of them
//! ([`encode`]): a tenth of the cost. The document is built from the change when the record
//! is next used. An edit writes only the fields it names, each as autosurgeon encodes it:
//! [`Recorded`] holds a body's ops and writes one property's into a transaction, where a
//! scratch document reconciled for the purpose cost a fifth of an edit.
//!
//! Only what a fresh document can be given is recorded: maps, lists built by appending, and
//! scalars. Anything else (text, counters, changing what is there) is refused as
//! [`Unsupported`]; a create is then made through a transaction instead.

use std::borrow::Cow;
use std::num::NonZeroU64;

use automerge::legacy::{ElementId, Key, ObjectId, Op, OpId, OpType, SortedVec};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, AutomergeError, Change, ExpandedChange, ObjType, ScalarValue};
use autosurgeon::Reconcile;
use autosurgeon::reconcile::{
    CounterReconciler, LoadKey, MapReconciler, Reconciler, SeqReconciler, StaleHeads,
    TextReconciler,
};

use super::DocError;

/// What the recorder cannot write into a fresh document, or a stale-heads error autosurgeon's
/// traits require the error type to hold (a fresh document has no heads to be stale against).
#[derive(Debug, thiserror::Error)]
pub enum Unsupported {
    #[error("the recorder cannot write {0} into a fresh document")]
    Shape(&'static str),
    #[error(transparent)]
    StaleHeads(#[from] StaleHeads),
}

/// The first change (seq 1, no dependencies) of a document whose root is `root`, made by
/// `actor` at `at_ms` with `message`.
pub fn encode<R: Reconcile>(
    root: &R,
    actor: &ActorId,
    at_ms: i64,
    message: String,
) -> Result<Change, Unsupported> {
    let ops = record_by(root, actor)?;
    let expanded = ExpandedChange {
        operations: ops.recorded,
        actor_id: actor.clone(),
        hash: None,
        seq: 1,
        start_op: NonZeroU64::MIN,
        time: at_ms,
        message: Some(message),
        deps: Vec::new(),
        extra_bytes: Vec::new(),
        author: None,
    };
    Ok(Change::from(expanded))
}

/// `root`'s first change as [`encode`] records it or, where the recorder cannot, the change
/// of the document `transact` makes (a transaction on a new document).
pub fn encode_or_transact<R: Reconcile>(
    root: &R,
    actor: &ActorId,
    at_ms: i64,
    message: String,
    transact: impl FnOnce() -> Result<Automerge, DocError>,
) -> Result<Change, DocError> {
    match encode(root, actor, at_ms, message.clone()) {
        Ok(change) => Ok(change),
        Err(unsupported) => {
            tracing::debug!(%message, %unsupported, "first change made through a transaction");
            transact()?
                .get_last_local_change()
                .ok_or_else(|| DocError::Reconcile("a new document without a change".to_owned()))
        }
    }
}

/// A map's ops as autosurgeon writes them into a fresh document, to be written property by
/// property into a transaction ([`Recorded::put_into`]).
pub struct Recorded {
    ops: Ops,
    /// For each op that makes an object, the ops recorded inside that object, in order, found
    /// in one pass over the ops (the root's properties are looked up by name): looking for
    /// each object's contents among all the ops made a list of a thousand maps (a liaison
    /// directory) four million comparisons.
    inside: Vec<Vec<usize>>,
}

/// Records `root`, which reconciles to a map.
pub fn record<R: Reconcile>(root: &R) -> Result<Recorded, Unsupported> {
    // Only the ops' places relative to each other matter: the transaction gives them its own.
    let ops = record_by(root, &ActorId::from(&[0_u8][..]))?;
    let mut inside = vec![Vec::new(); ops.recorded.len()];
    for (index, op) in ops.recorded.iter().enumerate() {
        if let ObjectId::Id(OpId(counter, _)) = &op.obj {
            // An op's id is its position plus one (`Ops::id_of`).
            inside[*counter as usize - 1].push(index);
        }
    }
    Ok(Recorded { ops, inside })
}

/// Records `root`'s ops as `actor` makes them.
fn record_by<R: Reconcile>(root: &R, actor: &ActorId) -> Result<Ops, Unsupported> {
    let mut ops = Ops {
        actor: actor.clone(),
        recorded: Vec::new(),
    };
    root.reconcile(OpRecorder {
        ops: &mut ops,
        at: At::Root,
    })?;
    Ok(ops)
}

impl Recorded {
    /// Writes the recorded map's property `prop` (a scalar, or an object and all it holds)
    /// at `prop` of the map `target`; `false` if the map has no such property.
    pub fn put_into(
        &self,
        prop: &str,
        tx: &mut impl Transactable,
        target: &automerge::ObjId,
    ) -> Result<bool, AutomergeError> {
        let found = self.ops.recorded.iter().position(|op| {
            op.obj == ObjectId::Root && matches!(&op.key, Key::Map(key) if key == prop)
        });
        let Some(index) = found else {
            return Ok(false);
        };
        self.write(index, tx, Place::Prop(target, prop))?;
        Ok(true)
    }

    /// Writes the op at `index` at `place`, and, if it makes an object, the ops inside it.
    fn write(
        &self,
        index: usize,
        tx: &mut impl Transactable,
        place: Place<'_>,
    ) -> Result<(), AutomergeError> {
        let kind = match &self.ops.recorded[index].action {
            OpType::Put(value) => {
                return match place {
                    Place::Prop(obj, key) => tx.put(obj, key, value.clone()),
                    Place::Insert(obj, at) => tx.insert(obj, at, value.clone()),
                };
            }
            OpType::Make(kind) => *kind,
            // The recorder writes only puts and makes.
            _ => unreachable!("a recorded op is a put or a make"),
        };
        let object = match place {
            Place::Prop(obj, key) => tx.put_object(obj, key, kind)?,
            Place::Insert(obj, at) => tx.insert_object(obj, at, kind)?,
        };

        // What the object holds, in the order recorded: properties by name, list elements one
        // after another.
        let mut elements = 0;
        for &inner in &self.inside[index] {
            match &self.ops.recorded[inner].key {
                Key::Map(key) => self.write(inner, tx, Place::Prop(&object, key))?,
                Key::Seq(_) => {
                    self.write(inner, tx, Place::Insert(&object, elements))?;
                    elements += 1;
                }
            }
        }
        Ok(())
    }
}

/// Where [`Recorded::write`] writes a value.
enum Place<'a> {
    Prop(&'a automerge::ObjId, &'a str),
    Insert(&'a automerge::ObjId, usize),
}

/// The ops recorded so far. A change numbers its ops from its start op (1 here) in order, so
/// an op's id is its position.
struct Ops {
    actor: ActorId,
    recorded: Vec<Op>,
}

impl Ops {
    fn push(&mut self, obj: ObjectId, key: Key, insert: bool, action: OpType) -> OpId {
        self.recorded.push(Op {
            action,
            obj,
            key,
            pred: SortedVec::new(),
            insert,
        });
        self.id_of(self.recorded.len() - 1)
    }

    /// The id of the op at `index`.
    fn id_of(&self, index: usize) -> OpId {
        OpId(index as u64 + 1, self.actor.clone())
    }
}

/// Where the value being reconciled goes.
enum At {
    /// The document's root, which is a map already.
    Root,
    /// A property of a map.
    Prop(ObjectId, String),
    /// A new element of a list, after `after`.
    Append { list: ObjectId, after: ElementId },
    /// Nowhere: the value is set.
    Set,
}

/// Records the one op that sets the value at its place (`At`). A value set twice, which a
/// fresh document cannot show, is refused.
struct OpRecorder<'a> {
    ops: &'a mut Ops,
    at: At,
}

impl OpRecorder<'_> {
    fn set(&mut self, action: OpType) -> Result<ObjectId, Unsupported> {
        let (obj, key, insert) = match std::mem::replace(&mut self.at, At::Set) {
            At::Root => return Err(Unsupported::Shape("a document root that is not a map")),
            At::Set => return Err(Unsupported::Shape("a value set twice")),
            At::Prop(obj, prop) => (obj, Key::Map(prop.into()), false),
            At::Append { list, after } => (list, Key::Seq(after), true),
        };
        Ok(ObjectId::Id(self.ops.push(obj, key, insert, action)))
    }

    fn scalar(&mut self, value: ScalarValue) -> Result<(), Unsupported> {
        self.set(OpType::Put(value)).map(drop)
    }
}

impl Reconciler for OpRecorder<'_> {
    type Error = Unsupported;
    type Map<'b>
        = MapRecorder<'b>
    where
        Self: 'b;
    type Seq<'b>
        = ListRecorder<'b>
    where
        Self: 'b;
    type Text<'b>
        = Refused
    where
        Self: 'b;
    type Counter<'b>
        = Refused
    where
        Self: 'b;

    fn none(&mut self) -> Result<(), Unsupported> {
        self.scalar(ScalarValue::Null)
    }

    fn bytes<B: AsRef<[u8]>>(&mut self, value: B) -> Result<(), Unsupported> {
        self.scalar(ScalarValue::Bytes(value.as_ref().to_vec()))
    }

    fn timestamp(&mut self, value: i64) -> Result<(), Unsupported> {
        self.scalar(ScalarValue::Timestamp(value))
    }

    fn boolean(&mut self, value: bool) -> Result<(), Unsupported> {
        self.scalar(ScalarValue::Boolean(value))
    }

    fn str<S: AsRef<str>>(&mut self, value: S) -> Result<(), Unsupported> {
        self.scalar(ScalarValue::Str(value.as_ref().into()))
    }

    fn u64(&mut self, value: u64) -> Result<(), Unsupported> {
        self.scalar(ScalarValue::Uint(value))
    }

    fn i64(&mut self, value: i64) -> Result<(), Unsupported> {
        self.scalar(ScalarValue::Int(value))
    }

    fn f64(&mut self, value: f64) -> Result<(), Unsupported> {
        self.scalar(ScalarValue::F64(value))
    }

    fn map(&mut self) -> Result<MapRecorder<'_>, Unsupported> {
        let obj = if matches!(self.at, At::Root) {
            self.at = At::Set;
            ObjectId::Root
        } else {
            self.set(OpType::Make(ObjType::Map))?
        };
        Ok(MapRecorder {
            ops: &mut *self.ops,
            obj,
            put: Vec::new(),
        })
    }

    fn seq(&mut self) -> Result<ListRecorder<'_>, Unsupported> {
        let list = self.set(OpType::Make(ObjType::List))?;
        Ok(ListRecorder {
            ops: &mut *self.ops,
            list,
            last: ElementId::Head,
            len: 0,
        })
    }

    fn text(&mut self) -> Result<Refused, Unsupported> {
        Err(Unsupported::Shape("text objects"))
    }

    fn counter(&mut self) -> Result<Refused, Unsupported> {
        Err(Unsupported::Shape("counters"))
    }

    fn heads(&self) -> &[automerge::ChangeHash] {
        &[]
    }
}

/// A map made in this change: empty until its properties are put. A property put twice is
/// refused: without the first op as its predecessor, the second would stand beside it as a
/// concurrent value.
struct MapRecorder<'a> {
    ops: &'a mut Ops,
    obj: ObjectId,
    put: Vec<String>,
}

impl MapReconciler for MapRecorder<'_> {
    type Error = Unsupported;
    type EntriesIter<'b>
        = std::iter::Empty<(Cow<'b, str>, automerge::ValueRef<'b>)>
    where
        Self: 'b;

    fn entries(&self) -> Self::EntriesIter<'_> {
        std::iter::empty()
    }

    fn entry<P: AsRef<str>>(&self, _prop: P) -> Option<automerge::Value<'_>> {
        None
    }

    fn put<R: Reconcile, P: AsRef<str>>(&mut self, prop: P, value: R) -> Result<(), Unsupported> {
        let prop = prop.as_ref();
        if self.put.iter().any(|put| put == prop) {
            return Err(Unsupported::Shape("a property put twice"));
        }
        self.put.push(prop.to_owned());
        value.reconcile(OpRecorder {
            ops: &mut *self.ops,
            at: At::Prop(self.obj.clone(), prop.to_owned()),
        })
    }

    fn delete<P: AsRef<str>>(&mut self, _prop: P) -> Result<(), Unsupported> {
        Err(Unsupported::Shape("deleting a property"))
    }

    fn hydrate_entry_key<'b, R: Reconcile, P: AsRef<str>>(
        &self,
        _prop: P,
    ) -> Result<LoadKey<R::Key<'b>>, Unsupported> {
        Ok(LoadKey::KeyNotFound)
    }
}

/// A list made in this change, to which elements are appended.
struct ListRecorder<'a> {
    ops: &'a mut Ops,
    list: ObjectId,
    /// The element the next one goes after.
    last: ElementId,
    len: usize,
}

impl SeqReconciler for ListRecorder<'_> {
    type Error = Unsupported;
    type ItemIter<'b>
        = std::iter::Empty<automerge::ValueRef<'b>>
    where
        Self: 'b;

    fn items(&self) -> Self::ItemIter<'_> {
        std::iter::empty()
    }

    fn get(&self, _index: usize) -> Result<Option<automerge::Value<'_>>, Unsupported> {
        Ok(None)
    }

    fn hydrate_item_key<'b, R: Reconcile>(
        &self,
        _index: usize,
    ) -> Result<LoadKey<R::Key<'b>>, Unsupported> {
        Ok(LoadKey::KeyNotFound)
    }

    fn insert<R: Reconcile>(&mut self, index: usize, value: R) -> Result<(), Unsupported> {
        if index != self.len {
            return Err(Unsupported::Shape("inserting inside a list"));
        }
        let before = self.ops.recorded.len();
        value.reconcile(OpRecorder {
            ops: &mut *self.ops,
            at: At::Append {
                list: self.list.clone(),
                after: self.last.clone(),
            },
        })?;
        if self.ops.recorded.len() == before {
            return Err(Unsupported::Shape("a list element without a value"));
        }
        // The element is the op that set the value: the first one recorded for it.
        self.last = ElementId::Id(self.ops.id_of(before));
        self.len += 1;
        Ok(())
    }

    fn set<R: Reconcile>(&mut self, _index: usize, _value: R) -> Result<(), Unsupported> {
        Err(Unsupported::Shape("setting a list element"))
    }

    fn delete(&mut self, _index: usize) -> Result<(), Unsupported> {
        Err(Unsupported::Shape("deleting a list element"))
    }

    fn len(&self) -> Result<usize, Unsupported> {
        Ok(self.len)
    }
}

/// What [`OpRecorder`] hands out for text and counters: never, as both are refused first.
struct Refused;

impl TextReconciler for Refused {
    type Error = Unsupported;

    fn splice<S: AsRef<str>>(&mut self, _: usize, _: isize, _: S) -> Result<(), Unsupported> {
        Err(Unsupported::Shape("text objects"))
    }

    fn heads(&self) -> &[automerge::ChangeHash] {
        &[]
    }

    fn update<S: AsRef<str>>(&mut self, _: S) -> Result<(), Unsupported> {
        Err(Unsupported::Shape("text objects"))
    }
}

impl CounterReconciler for Refused {
    type Error = Unsupported;

    fn increment(&mut self, _: i64) -> Result<(), Unsupported> {
        Err(Unsupported::Shape("counters"))
    }

    fn set(&mut self, _: i64) -> Result<(), Unsupported> {
        Err(Unsupported::Shape("counters"))
    }
}

#[cfg(test)]
mod tests {
    use automerge::ReadDoc;
    use serde_json::json;

    use super::super::{Layout, create_message, new_document, record_of_change};
    use super::*;
    use crate::record::{
        Action, Body, Envelope, Record, RecordKind, SCHEMA_VERSION, WorkflowEvent,
    };

    /// A body of every kind with every field set, lists of two and nested maps included.
    fn full_bodies() -> Vec<Body> {
        let bodies = [
            (
                RecordKind::Case,
                json!({"title": "占道经营", "matter": "m", "place": "p",
                "offender": "o", "found_at_ms": -3, "facts": "f", "decision": "罚款"}),
            ),
            (
                RecordKind::Transfer,
                json!({"sender": "s", "receiver": "r", "title": "t",
                "matter": "m", "place": "p", "facts": "f", "urgent": true, "ongoing": false,
                "discovered_at_ms": 1_700_000_000_000_i64, "non_jurisdiction_at_ms": 5,
                "materials": [{"kind": "evidence", "name": "照片"},
                              {"kind": "transfer_letter", "name": "函"}]}),
            ),
            (
                RecordKind::Complaint,
                json!({"received_by": "a", "handler": "h", "channel": "12345",
                "subject": "s", "place": "p", "received_at_ms": 7, "written_material": true,
                "complainant": {"name": "王", "phone": "123"}}),
            ),
            (
                RecordKind::SharedInfo,
                json!({"category": 3, "title": "t", "content": "c",
                "formed_at_ms": 9, "related_record": "case-1"}),
            ),
            (
                RecordKind::UrgentNotice,
                json!({"sender": "s", "receiver": "r", "hazard": "h",
                "place": "p", "found_at_ms": 1, "assessment": "a", "measures": "m"}),
            ),
            (
                RecordKind::Consultation,
                json!({"convener": "c", "topic": "t",
                "meeting_kind": "ad_hoc", "scheduled_at_ms": 2, "minutes": "纪要"}),
            ),
            (
                RecordKind::Assistance,
                json!({"requester": "r", "provider": "p",
                "assistance_kind": "on_site", "matter": "m", "requested_at_ms": 3,
                "related_record": "x"}),
            ),
            (
                RecordKind::Dispute,
                json!({"applicant": "a", "respondent": "r", "subject": "s",
                "grounds": "g", "origin_record": "o"}),
            ),
            (
                RecordKind::LiaisonDirectory,
                json!({"org": "o", "liaisons": [
                {"name": "n1", "role": "r1", "phone": "p1"},
                {"name": "n2", "role": "r2", "phone": "p2"}]}),
            ),
            (
                RecordKind::Calendar,
                json!({"year": 2027, "off_days": ["2027-01-01", "2027-01-02"],
                "make_up_days": ["2027-02-07"], "source": "国务院办公厅"}),
            ),
        ];
        bodies
            .into_iter()
            .map(|(kind, json)| Body::from_json(kind, &json.to_string()).expect("a valid body"))
            .collect()
    }

    /// Every body kind twice: with every field set, and as it is by default (options unset,
    /// lists empty).
    fn records() -> Vec<Record> {
        let defaults = full_bodies()
            .into_iter()
            .map(|body| Body::from_json(body.kind(), "{}").expect("a default body"));
        full_bodies()
            .into_iter()
            .chain(defaults)
            .map(|body| {
                let kind = body.kind();
                let mut acted = WorkflowEvent::new(Action::Opened, 11, "130304100");
                acted.unit = Some("执法队".into());
                acted.reason = Some("r".into());
                acted.extension_wd = Some(5);
                acted.attachments = vec!["a.pdf".into(), "b.pdf".into()];
                Record {
                    envelope: Envelope {
                        id: kind.new_record_id(),
                        kind: kind.as_str().to_owned(),
                        owner: "130304100".into(),
                        parties: vec!["130304100".into(), "bdh-scjg".into()],
                        created_at_ms: 10,
                        schema_version: SCHEMA_VERSION,
                    },
                    events: vec![acted, WorkflowEvent::new(Action::Received, 12, "bdh-scjg")],
                    body,
                }
            })
            .collect()
    }

    /// The recorded change makes the document a transaction makes, op for op in effect: the
    /// same values of the same types at the same places (Automerge's own reading of both),
    /// and the record reads back whole.
    #[test]
    fn every_kind_is_recorded_as_the_transaction_writes_it() {
        let actor = ActorId::random();
        for record in records() {
            let change = encode(&Layout(&record), &actor, 42, create_message(&record))
                .unwrap_or_else(|e| panic!("{}: {e}", record.kind()));
            let recorded = {
                let mut doc = Automerge::new();
                doc.apply_changes([change.clone()])
                    .expect("the change applies");
                doc
            };
            let transacted = new_document(&record, actor.clone(), 42).unwrap();

            assert_eq!(
                recorded.hydrate(None),
                transacted.hydrate(None),
                "{}",
                record.kind()
            );
            assert_eq!(record_of_change(&change).unwrap(), record);
            let made = transacted.get_last_local_change().unwrap();
            assert_eq!(
                (
                    change.seq(),
                    change.start_op(),
                    change.timestamp(),
                    change.message()
                ),
                (
                    made.seq(),
                    made.start_op(),
                    made.timestamp(),
                    made.message()
                ),
            );
            assert_eq!(change.len(), made.len(), "{}: as many ops", record.kind());
            assert!(change.deps().is_empty());
        }
    }

    /// A document made from a recorded change goes on as any other: a transaction edits it,
    /// and a second replica merging both reads the edit.
    #[test]
    fn a_recorded_document_takes_later_changes() {
        let record = records().remove(0);
        let actor = ActorId::random();
        let change = encode(&Layout(&record), &actor, 1, create_message(&record)).unwrap();
        let mut doc = Automerge::new().with_actor(actor);
        doc.apply_changes([change.clone()]).unwrap();

        let mut edited = record.clone();
        let Body::Case(case) = &mut edited.body else {
            panic!("the first record is a case")
        };
        case.decision = Some("不予处罚".into());
        doc.transact::<_, _, autosurgeon::ReconcileError>(|tx| {
            autosurgeon::reconcile(tx, Layout(&edited))
        })
        .unwrap();

        let mut other = Automerge::new();
        other.apply_changes(doc.get_changes(&[])).unwrap();
        assert_eq!(super::super::hydrate_record(&other).unwrap(), edited);
        assert_eq!(other.get_changes(&[]).len(), 2);
        assert!(other.get_change_by_hash(&change.hash()).is_some());
    }

    /// What a fresh document cannot be given by appending is refused, naming it, so that the
    /// caller makes the change through a transaction.
    #[test]
    fn text_counters_and_edits_of_what_is_there_are_refused() {
        let actor = ActorId::random();
        let refused = |what: &str| {
            let error = encode(&Refusing(what.to_owned()), &actor, 1, String::new()).unwrap_err();
            error.to_string()
        };
        assert!(refused("text").contains("text objects"));
        assert!(refused("counter").contains("counters"));
        assert!(refused("insert").contains("inserting inside a list"));
        assert!(refused("delete").contains("deleting a property"));
        assert!(refused("twice").contains("a value set twice"));
        assert!(refused("put twice").contains("a property put twice"));
        assert!(refused("root").contains("a document root that is not a map"));
    }

    /// An edit naming every field of a body writes each as a new document holds it: the
    /// record edited from its default body to a full one is, value for value and type for
    /// type, the record created full.
    #[test]
    fn an_edit_writes_each_field_as_a_new_document_holds_it() {
        let actor = ActorId::random();
        let defaults = records().split_off(full_bodies().len());
        for (default, full) in defaults.into_iter().zip(full_bodies()) {
            let mut doc = new_document(&default, actor.clone(), 1).unwrap();
            let json = full.to_json_value();
            let fields: Vec<&str> = json
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            super::super::edit_body(&mut doc, &full, &fields, 2).unwrap();

            let created = Record {
                body: full.clone(),
                ..default.clone()
            };
            let fresh = new_document(&created, actor.clone(), 1).unwrap();
            assert_eq!(doc.hydrate(None), fresh.hydrate(None), "{}", full.kind());
            assert_eq!(super::super::hydrate_record(&doc).unwrap(), created);
        }
    }

    /// A root the recorder refuses is made through the transaction it is given, and a root it
    /// takes never calls that transaction.
    #[test]
    fn what_the_recorder_refuses_is_made_through_a_transaction() {
        use automerge::transaction::Transactable;
        let actor = ActorId::random();
        let transacted = || {
            let mut doc = Automerge::new().with_actor(actor.clone());
            doc.transact::<_, _, automerge::AutomergeError>(|tx| {
                tx.put_object(automerge::ROOT, "t", ObjType::Text).map(drop)
            })
            .unwrap();
            Ok(doc)
        };
        let expected = transacted().unwrap().get_last_local_change().unwrap();
        let change = encode_or_transact(
            &Refusing("text".to_owned()),
            &actor,
            1,
            String::new(),
            transacted,
        )
        .unwrap();
        assert_eq!(change.decode().operations, expected.decode().operations);

        let record = records().remove(0);
        let recorded = encode_or_transact(&Layout(&record), &actor, 1, String::new(), || {
            panic!("a record is recorded, not transacted")
        })
        .unwrap();
        assert_eq!(record_of_change(&recorded).unwrap(), record);
    }

    /// A root that asks the recorder for one thing a fresh document cannot be given.
    struct Refusing(String);

    impl Reconcile for Refusing {
        type Key<'k> = autosurgeon::reconcile::NoKey;

        fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
            if self.0 == "root" {
                return reconciler.str("not a map");
            }
            let mut root = reconciler.map()?;
            match self.0.as_str() {
                "text" => root.put("t", autosurgeon::Text::with_value("x")),
                "counter" => root.put("c", autosurgeon::Counter::with_value(1)),
                "insert" => root.put("l", InsertAtZeroTwice),
                "delete" => root.delete("gone"),
                "twice" => root.put("v", SetTwice),
                "put twice" => root.put("p", 1_u64).and_then(|()| root.put("p", 2_u64)),
                _ => unreachable!(),
            }
        }
    }

    struct InsertAtZeroTwice;

    impl Reconcile for InsertAtZeroTwice {
        type Key<'k> = autosurgeon::reconcile::NoKey;

        fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
            let mut list = reconciler.seq()?;
            list.insert(0, "a")?;
            list.insert(0, "b")
        }
    }

    struct SetTwice;

    impl Reconcile for SetTwice {
        type Key<'k> = autosurgeon::reconcile::NoKey;

        fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
            reconciler.str("a")?;
            reconciler.str("b")
        }
    }
}
