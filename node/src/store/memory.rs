//! [`MemoryStore`]: the [`Store`] contract held in memory, for fast tests and the
//! deterministic simulation. It mirrors [`super::RocksStore`]'s observable behaviour (one
//! change-log entry per document, compaction, peer and metadata layout) but keeps nothing
//! across a restart.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{ChangeEntry, Failure, PeerLog, Seq, Store, StoreError, StoredDoc};

/// An in-memory store. Every method runs under one lock, so appends are atomic and visible
/// in sequence order without the watermark the RocksDB engine needs.
#[derive(Debug)]
pub struct MemoryStore {
    store_id: String,
    inner: Mutex<Inner>,
    /// Apart from `inner`, so a slow sync never holds up writes, as a disk's would not.
    syncs: Mutex<Syncs>,
    failure: Failure,
}

/// What [`Store::sync`] has done (the synced writes, `append`, `compact`, `put_meta` and
/// `forget_peer`, end in one too),
/// and how tests make it behave like a slow or failing disk; in memory it has nothing to
/// write.
#[derive(Debug, Default)]
struct Syncs {
    completed: u64,
    /// The change-log position the last completed sync covered.
    through: Seq,
    delay: std::time::Duration,
    fail: bool,
}

#[derive(Debug, Default)]
struct Inner {
    last_seq: Seq,
    /// Document → (seq the snapshot covers, snapshot).
    snapshots: BTreeMap<String, (Seq, Vec<u8>)>,
    /// Document → seq → chunk.
    chunks: BTreeMap<String, BTreeMap<Seq, Vec<u8>>>,
    changelog: BTreeMap<Seq, String>,
    docseq: BTreeMap<String, Seq>,
    summaries: BTreeMap<String, Vec<u8>>,
    /// Peer → document → sync state.
    peer_states: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    cursors: BTreeMap<String, Seq>,
    peer_logs: BTreeMap<String, PeerLog>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store with a random id, as a freshly created data folder would have.
    pub fn new() -> Self {
        Self::with_store_id(uuid::Uuid::new_v4().to_string())
    }

    /// An empty store with a chosen id, so a deterministic simulation can replay runs.
    pub fn with_store_id(store_id: impl Into<String>) -> Self {
        MemoryStore {
            store_id: store_id.into(),
            inner: Mutex::new(Inner::default()),
            syncs: Mutex::new(Syncs::default()),
            failure: Failure::new(),
        }
    }

    /// Syncs completed so far, and the change-log position the last one covered.
    pub fn syncs(&self) -> (u64, Seq) {
        let syncs = self.lock_syncs();
        (syncs.completed, syncs.through)
    }

    /// Makes each later sync take `delay`, as a disk's flush does.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.lock_syncs().delay = delay;
    }

    /// Makes later syncs fail (after their delay) until set back.
    pub fn set_syncs_fail(&self, fail: bool) {
        self.lock_syncs().fail = fail;
    }

    fn lock_syncs(&self) -> MutexGuard<'_, Syncs> {
        self.syncs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No method can panic halfway through a mutation, so a poisoned lock still guards
        // consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Store for MemoryStore {
    fn store_id(&self) -> String {
        self.store_id.clone()
    }

    fn failure(&self) -> &Failure {
        &self.failure
    }

    fn sync(&self) -> Result<(), StoreError> {
        // Covers what was written before it began, as a write-ahead log's sync does.
        let through = self.lock().last_seq;
        let (delay, fail) = {
            let syncs = self.lock_syncs();
            (syncs.delay, syncs.fail)
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if fail {
            return Err(self.failure.record(StoreError::Engine(
                "sync: the disk failed (a test's)".into(),
            )));
        }
        let mut syncs = self.lock_syncs();
        syncs.completed += 1;
        syncs.through = syncs.through.max(through);
        Ok(())
    }

    fn append(&self, doc: &str, chunk: &[u8], summary: &[u8]) -> Result<Seq, StoreError> {
        // Durable on return, as the contract says: the write, then a sync of it.
        let seq = self.append_unsynced(doc, chunk, summary)?;
        self.sync()?;
        Ok(seq)
    }

    fn append_unsynced(&self, doc: &str, chunk: &[u8], summary: &[u8]) -> Result<Seq, StoreError> {
        let mut inner = self.lock();
        inner.last_seq += 1;
        let seq = inner.last_seq;

        inner
            .chunks
            .entry(doc.to_owned())
            .or_default()
            .insert(seq, chunk.to_vec());
        inner.summaries.insert(doc.to_owned(), summary.to_vec());
        if let Some(previous) = inner.docseq.insert(doc.to_owned(), seq) {
            inner.changelog.remove(&previous);
        }
        inner.changelog.insert(seq, doc.to_owned());
        Ok(seq)
    }

    fn load(&self, doc: &str) -> Result<Option<StoredDoc>, StoreError> {
        let inner = self.lock();
        let snapshot = inner.snapshots.get(doc).map(|(_, bytes)| bytes.clone());
        let chunks: Vec<Vec<u8>> = inner
            .chunks
            .get(doc)
            .map(|chunks| chunks.values().cloned().collect())
            .unwrap_or_default();
        if snapshot.is_none() && chunks.is_empty() {
            return Ok(None);
        }
        Ok(Some(StoredDoc { snapshot, chunks }))
    }

    fn compact(&self, doc: &str, snapshot: &[u8], through: Seq) -> Result<(), StoreError> {
        self.compact_unsynced(doc, snapshot, through)?;
        self.sync()
    }

    fn compact_unsynced(&self, doc: &str, snapshot: &[u8], through: Seq) -> Result<(), StoreError> {
        let mut inner = self.lock();
        // Same rule as the RocksDB engine: never replace a snapshot covering a later seq.
        if inner
            .snapshots
            .get(doc)
            .is_some_and(|(stored, _)| *stored > through)
        {
            return Ok(());
        }
        inner
            .snapshots
            .insert(doc.to_owned(), (through, snapshot.to_vec()));
        if let Some(chunks) = inner.chunks.get_mut(doc) {
            chunks.retain(|seq, _| *seq > through);
            if chunks.is_empty() {
                inner.chunks.remove(doc);
            }
        }
        Ok(())
    }

    fn changed_since(&self, after: Seq, limit: usize) -> Result<Vec<ChangeEntry>, StoreError> {
        let inner = self.lock();
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        Ok(inner
            .changelog
            .range(start..)
            .take(limit)
            .map(|(seq, doc)| ChangeEntry {
                seq: *seq,
                doc: doc.clone(),
            })
            .collect())
    }

    fn last_seq(&self) -> Seq {
        self.lock().last_seq
    }

    fn summary(&self, doc: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().summaries.get(doc).cloned())
    }

    fn summaries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .lock()
            .summaries
            .iter()
            .map(|(doc, summary)| (doc.clone(), summary.clone()))
            .collect())
    }

    fn peer_state(&self, peer: &str, doc: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .peer_states
            .get(peer)
            .and_then(|states| states.get(doc))
            .cloned())
    }

    fn put_peer_state(&self, peer: &str, doc: &str, state: &[u8]) -> Result<(), StoreError> {
        self.lock()
            .peer_states
            .entry(peer.to_owned())
            .or_default()
            .insert(doc.to_owned(), state.to_vec());
        Ok(())
    }

    fn cursor(&self, peer: &str) -> Result<Seq, StoreError> {
        Ok(self.lock().cursors.get(peer).copied().unwrap_or(0))
    }

    fn put_cursor(&self, peer: &str, seq: Seq) -> Result<(), StoreError> {
        self.lock().cursors.insert(peer.to_owned(), seq);
        Ok(())
    }

    fn peer_log(&self, peer: &str) -> Result<PeerLog, StoreError> {
        Ok(self.lock().peer_logs.get(peer).cloned().unwrap_or_default())
    }

    fn put_peer_log(&self, peer: &str, log: &PeerLog) -> Result<(), StoreError> {
        self.lock().peer_logs.insert(peer.to_owned(), log.clone());
        Ok(())
    }

    fn forget_peer(&self, peer: &str) -> Result<(), StoreError> {
        {
            let mut inner = self.lock();
            inner.peer_states.remove(peer);
            inner.cursors.remove(peer);
            inner.peer_logs.remove(peer);
        }
        self.sync()
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().meta.get(key).cloned())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock().meta.insert(key.to_owned(), value.to_vec());
        self.sync()
    }

    fn put_metas_unsynced(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for (key, value) in entries {
            inner.meta.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        self.lock().meta.remove(key);
        Ok(())
    }

    fn meta_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .lock()
            .meta
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}
