//! The acknowledgement log: every write a node answered OK, which is exactly what the node
//! promised to keep. Writes that failed are counted too; one that failed but was stored anyway
//! (the node died after its commit and before its answer) is allowed, and only counted.
//!
//! Each write carries a tag unique to its attempt (`<org>/w<n>`), in the record's title for a
//! creation and in the event's note for an append, so the check can tell a write applied twice
//! from two writes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Ack {
    /// `writer` created record `id`, titled with `tag`.
    Created {
        writer: String,
        id: String,
        tag: String,
    },
    /// `writer` appended an event noted `tag` to record `id`.
    Appended {
        writer: String,
        id: String,
        tag: String,
    },
}

impl Ack {
    pub fn writer(&self) -> &str {
        match self {
            Ack::Created { writer, .. } | Ack::Appended { writer, .. } => writer,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Ack::Created { id, .. } | Ack::Appended { id, .. } => id,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    acks: Vec<Ack>,
    attempted: u64,
    /// Failed writes by gRPC code name.
    failed: BTreeMap<String, u64>,
    /// Tags of writes that got no OK, so the check can count those stored anyway.
    unacknowledged: Vec<String>,
    file: Option<std::fs::File>,
}

/// Shared by the writers and the check; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    inner: Arc<Mutex<Inner>>,
}

impl Ledger {
    /// A ledger that also appends each acknowledgement as a JSON line to `path`, kept with the
    /// run's data for whoever investigates a failure.
    pub fn with_file(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path)?;
        let ledger = Ledger::default();
        ledger.lock().file = Some(file);
        Ok(ledger)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("ledger lock is never poisoned")
    }

    pub fn attempt(&self) {
        self.lock().attempted += 1;
    }

    pub fn acknowledged(&self, ack: Ack) {
        let mut inner = self.lock();
        if let Some(file) = &mut inner.file {
            let line = serde_json::to_string(&ack).expect("plain data");
            // The log file is a diagnostic copy; the in-memory log is what the check reads.
            let _ = writeln!(file, "{line}");
        }
        inner.acks.push(ack);
    }

    pub fn failed(&self, tag: String, code: tonic::Code) {
        let mut inner = self.lock();
        *inner.failed.entry(format!("{code:?}")).or_default() += 1;
        inner.unacknowledged.push(tag);
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.lock().acks.clone()
    }

    pub fn ack_count(&self) -> usize {
        self.lock().acks.len()
    }

    /// Every write `writer` has had acknowledged so far.
    pub fn acks_of(&self, writer: &str) -> Vec<Ack> {
        self.lock()
            .acks
            .iter()
            .filter(|a| a.writer() == writer)
            .cloned()
            .collect()
    }

    /// Acknowledged writes by `writer` so far.
    pub fn acks_by(&self, writer: &str) -> usize {
        self.lock()
            .acks
            .iter()
            .filter(|a| a.writer() == writer)
            .count()
    }

    pub fn attempted(&self) -> u64 {
        self.lock().attempted
    }

    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.lock().failed.clone()
    }

    pub fn unacknowledged(&self) -> Vec<String> {
        self.lock().unacknowledged.clone()
    }

    /// Record ids a writer may append to: those it created, and any the check should know.
    pub fn created_by(&self, writer: &str) -> Vec<String> {
        self.lock()
            .acks
            .iter()
            .filter_map(|a| match a {
                Ack::Created { writer: w, id, .. } if w == writer => Some(id.clone()),
                _ => None,
            })
            .collect()
    }
}
