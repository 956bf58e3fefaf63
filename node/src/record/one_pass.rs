//! A read-only view of a record's document for autosurgeon that reads each map or list once.
//!
//! autosurgeon hydrates a struct field by field, each field a `get` on the document, and a list
//! element by element. In Automerge 0.12 every `get` is a seek through the object's operation
//! columns: hydrating a record cost 42 µs, most of it in its envelope and events, against 4 µs
//! for one pass over its body's fifteen fields. [`OnePass`] answers autosurgeon's lookups from
//! one `map_range` or `list_range` pass per object, made the first time the object is asked
//! about, so hydration reads each object once and keeps autosurgeon's types and errors.
//!
//! Both passes and `get` report the value Automerge picks for a key (the winner of concurrent
//! writes), so the record read through the view is the one read directly
//! (`one_pass_hydration_matches_autosurgeons_own_on_conflicted_documents`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::RangeBounds;

use automerge::{AutomergeError, ChangeHash, ObjId, ObjType, Prop, ReadDoc as Am, Value};

/// What one pass over an object found.
enum Entries {
    Map(HashMap<String, (Value<'static>, ObjId)>),
    List(Vec<(Value<'static>, ObjId)>),
}

/// A document read through one pass per object; see the module documentation. Meant for one
/// hydration: it holds what it read until dropped.
pub struct OnePass<'a> {
    doc: &'a automerge::Automerge,
    objects: RefCell<HashMap<ObjId, Entries>>,
}

impl<'a> OnePass<'a> {
    pub fn new(doc: &'a automerge::Automerge) -> Self {
        OnePass {
            doc,
            objects: RefCell::new(HashMap::new()),
        }
    }

    fn read(&self, obj: &ObjId) -> Option<Entries> {
        match self.doc.object_type(obj).ok()? {
            ObjType::Map | ObjType::Table => Some(Entries::Map(
                self.doc
                    .map_range(obj, ..)
                    .map(|item| {
                        let id = item.id();
                        (item.key.into_owned(), (item.value.into_value(), id))
                    })
                    .collect(),
            )),
            ObjType::List => Some(Entries::List(
                self.doc
                    .list_range(obj, ..)
                    .map(|item| {
                        let id = item.id();
                        (item.value.into_value(), id)
                    })
                    .collect(),
            )),
            ObjType::Text => None,
        }
    }
}

impl autosurgeon::ReadDoc for OnePass<'_> {
    type Parents<'b>
        = automerge::Parents<'b>
    where
        Self: 'b;

    fn get_heads(&self) -> Vec<ChangeHash> {
        automerge::Automerge::get_heads(self.doc)
    }

    fn get<P: Into<Prop>>(
        &self,
        obj: &ObjId,
        prop: P,
    ) -> Result<Option<(Value<'_>, ObjId)>, AutomergeError> {
        let prop = prop.into();
        let mut objects = self.objects.borrow_mut();
        if !objects.contains_key(obj) {
            match self.read(obj) {
                Some(entries) => {
                    objects.insert(obj.clone(), entries);
                }
                // Text, or no such object: Automerge answers (or fails) as it would.
                None => return Am::get(self.doc, obj, prop),
            }
        }
        match (&objects[obj], &prop) {
            (Entries::Map(map), Prop::Map(key)) => Ok(map.get(key.as_str()).cloned()),
            (Entries::List(list), Prop::Seq(index)) => Ok(list.get(*index).cloned()),
            // A key asked of a list or an index of a map: Automerge's own answer.
            _ => Am::get(self.doc, obj, prop),
        }
    }

    fn object_type<O: AsRef<ObjId>>(&self, obj: O) -> Option<ObjType> {
        Am::object_type(self.doc, obj).ok()
    }

    fn map_range<'b, O, R>(&'b self, obj: O, range: R) -> automerge::iter::MapRange<'b>
    where
        R: RangeBounds<String> + 'b,
        O: AsRef<ObjId>,
        R: RangeBounds<String>,
    {
        Am::map_range(self.doc, obj, range)
    }

    fn list_range<O: AsRef<ObjId>, R: RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
    ) -> automerge::iter::ListRange<'_> {
        Am::list_range(self.doc, obj, range)
    }

    fn length<O: AsRef<ObjId>>(&self, obj: O) -> usize {
        let obj = obj.as_ref();
        match self.objects.borrow().get(obj) {
            Some(Entries::List(list)) => list.len(),
            Some(Entries::Map(map)) => map.len(),
            None => Am::length(self.doc, obj),
        }
    }

    fn text<O: AsRef<ObjId>>(&self, obj: O) -> Result<String, AutomergeError> {
        Am::text(self.doc, obj)
    }

    fn parents<O: AsRef<ObjId>>(&self, obj: O) -> Result<Self::Parents<'_>, AutomergeError> {
        Am::parents(self.doc, obj)
    }

    fn is_empty(&self) -> bool {
        autosurgeon::ReadDoc::is_empty(self.doc)
    }
}
