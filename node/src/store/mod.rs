//! The storage engine behind every replica, node and hub alike: a small trait over durable
//! document chunks, a change log by sequence number, per-peer sync state and metadata.
//!
//! Only this module names column families or calls RocksDB ([`rocks`]); everything else sees
//! [`Store`]. [`memory`] implements the same contract in memory for fast tests and the
//! deterministic simulation.
//!
//! Every method blocks (RocksDB does I/O): async callers run them on the blocking pool.

pub mod memory;
pub mod rocks;
#[cfg(test)]
mod tests;

pub use memory::MemoryStore;
pub use rocks::RocksStore;

/// A position in a store's change log. Sequence numbers start at 1; 0 means "nothing yet".
pub type Seq = u64;

/// One record's stored bytes: the latest snapshot (if any) followed by the incremental change
/// chunks appended after it, in append order. Loading is `Automerge::load` of the snapshot and
/// `load_incremental` of each chunk; a chunk may repeat changes the snapshot already holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoredDoc {
    pub snapshot: Option<Vec<u8>>,
    pub chunks: Vec<Vec<u8>>,
}

impl StoredDoc {
    /// Total bytes held for the document.
    pub fn len(&self) -> usize {
        self.snapshot.as_ref().map_or(0, Vec::len) + self.chunks.iter().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.chunks.is_empty()
    }

    /// The snapshot and the chunks after it as one byte sequence, in order: the Automerge
    /// format reads a document chunk followed by change chunks as one document.
    pub fn concat(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len());
        bytes.extend(self.snapshot.iter().chain(&self.chunks).flatten());
        bytes
    }
}

/// How far a peer's change log reached when the peer last reported it, and the log's name then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerLog {
    pub end: Seq,
    /// The name the peer gives its log where others keep positions in it (a hub's feed log
    /// id, renewed when its store went back); empty where it gives none.
    pub name: String,
}

/// One entry of the change log: record `doc` changed at `seq`. The log keeps only the latest
/// entry per document (a changes feed, not a history), so catching up costs in proportion to
/// the documents that changed, not to the number of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEntry {
    pub seq: Seq,
    pub doc: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine failed: {0}")]
    Engine(String),
    #[error("stored data for {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("data folder {path} could not be opened: {detail}")]
    Open { path: String, detail: String },
}

/// The first write or disk sync of a store that failed, told to whoever waits on it. RocksDB
/// refuses every later write once one failed, until the store is reopened: a server stops on
/// it (`Replica::store_failed`) so that its supervisor starts it again, rather than run on,
/// taking nothing in, as if it were well.
#[derive(Debug)]
pub struct Failure(tokio::sync::watch::Sender<Option<String>>);

impl Failure {
    pub fn new() -> Self {
        Self(tokio::sync::watch::Sender::new(None))
    }

    /// Records `error` as the store's failure, unless an earlier one is recorded, and returns
    /// it for the caller to report.
    pub fn record(&self, error: StoreError) -> StoreError {
        let message = error.to_string();
        self.0.send_if_modified(|failed| {
            failed.is_none() && {
                *failed = Some(message);
                true
            }
        });
        error
    }

    /// Why the store failed, once it has.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.0.subscribe()
    }
}

impl Default for Failure {
    fn default() -> Self {
        Self::new()
    }
}

/// The storage contract. Implementations are `Send + Sync` and internally synchronised.
///
/// Durability: `append`, `compact`, `forget_peer` and `put_meta` return only after their write
/// batch is durable (synced WAL for RocksDB). Concurrent `append` calls are group-committed by
/// the engine. `put_peer_state` and `put_cursor` are sync bookkeeping: they may be lost in a
/// power cut (never reordered before an earlier synced write), which only makes the next
/// session offer a little more again; so they do not wait for the disk.
///
/// Visibility: `changed_since` never returns an entry while an earlier sequence number is
/// still being written, so a reader that advances a cursor past what it saw loses nothing.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// A random id fixed when the data folder is created; a peer that sees it change knows
    /// this store was recreated and forgets what it believed this store holds.
    fn store_id(&self) -> String;

    /// The store's first failed write or disk sync, once there is one (see [`Failure`]).
    fn failure(&self) -> &Failure;

    /// Durably appends a change chunk for `doc`, replaces the document's summary (a small
    /// index entry used for listing without loading documents) and moves the document to the
    /// head of the change log, all in one atomic batch. Returns the new sequence number.
    ///
    /// Callers serialise appends to the same document (the replica holds a lock per
    /// document), so `append` need not.
    fn append(&self, doc: &str, chunk: &[u8], summary: &[u8]) -> Result<Seq, StoreError>;

    /// [`Store::append`], written but not yet synced to disk: durable once [`Store::sync`]
    /// returns. For a caller that applies many changes in a row and tells nobody of any of
    /// them before `sync` (a sync session applying a batch of received messages), so one
    /// disk sync serves the batch instead of one per change.
    fn append_unsynced(&self, doc: &str, chunk: &[u8], summary: &[u8]) -> Result<Seq, StoreError> {
        self.append(doc, chunk, summary)
    }

    /// Makes every write before it durable.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Everything stored for `doc`, or `None` if the store has never seen it.
    fn load(&self, doc: &str) -> Result<Option<StoredDoc>, StoreError>;

    /// Atomically writes `snapshot` as the document's new base and deletes the chunks it
    /// replaces (every chunk currently stored for `doc` that was appended at or before
    /// `through`). The snapshot is written in the same batch before the deletes, so a crash
    /// leaves either the old chunks or the new snapshot, never neither.
    fn compact(&self, doc: &str, snapshot: &[u8], through: Seq) -> Result<(), StoreError>;

    /// [`Store::compact`], written but not yet synced: for a compaction that follows an
    /// unsynced append of the same document, which the caller's later [`Store::sync`] makes
    /// durable with it (the write-ahead log keeps their order).
    fn compact_unsynced(&self, doc: &str, snapshot: &[u8], through: Seq) -> Result<(), StoreError> {
        self.compact(doc, snapshot, through)
    }

    /// Up to `limit` change-log entries with `seq > after`, in sequence order.
    fn changed_since(&self, after: Seq, limit: usize) -> Result<Vec<ChangeEntry>, StoreError>;

    /// The highest sequence number visible to `changed_since` (0 when empty).
    fn last_seq(&self) -> Seq;

    /// The highest sequence number handed out so far: every append that has returned is at
    /// or below it, even while an earlier one is still being written (and so not visible).
    fn last_assigned_seq(&self) -> Seq {
        self.last_seq()
    }

    /// The latest summary of `doc`, if stored.
    fn summary(&self, doc: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every document id with its summary, in id order.
    fn summaries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Sync state (Automerge's encoded `sync::State`, i.e. shared heads) kept for `peer` and
    /// `doc`.
    fn peer_state(&self, peer: &str, doc: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn put_peer_state(&self, peer: &str, doc: &str, state: &[u8]) -> Result<(), StoreError>;

    /// [`Store::put_peer_state`] for several records of one peer, in one write where the
    /// engine can: a sync session confirms records in batches, and one write per record was
    /// 6 % of the hub's CPU in sync.
    fn put_peer_states(&self, peer: &str, states: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        for (doc, state) in states {
            self.put_peer_state(peer, doc, state)?;
        }
        Ok(())
    }

    /// The cursor into this store's change log up to which `peer` has confirmed it holds
    /// every change (0 when unknown).
    fn cursor(&self, peer: &str) -> Result<Seq, StoreError>;
    fn put_cursor(&self, peer: &str, seq: Seq) -> Result<(), StoreError>;

    /// `peer`'s own change log as the peer last reported it (its end 0 when unknown). A
    /// store's log only grows, so a report below it means the peer's store went back in time.
    fn peer_log(&self, peer: &str) -> Result<PeerLog, StoreError>;
    fn put_peer_log(&self, peer: &str, log: &PeerLog) -> Result<(), StoreError>;

    /// Forgets every sync state, the cursor and the log end kept for `peer` (the peer's store
    /// was recreated, or restored from an older copy).
    fn forget_peer(&self, peer: &str) -> Result<(), StoreError>;

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Writes `entries` together without waiting for the disk: for hints refreshed often (the
    /// hub's last contact with each node), which a crash of the machine may set back a little.
    fn put_metas_unsynced(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError>;
    fn delete_meta(&self, key: &str) -> Result<(), StoreError>;
    /// Every metadata entry whose key starts with `prefix`, in key order.
    fn meta_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Bytes the engine holds on disk (0 for memory), for benchmarks and the operator view.
    fn disk_bytes(&self) -> u64;
}
