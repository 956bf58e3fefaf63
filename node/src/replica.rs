//! A replica: the Automerge documents of one node or hub, loaded on demand from the store,
//! changed under a lock per document, and made durable before anyone is told.
//!
//! A change saves the change chunk, the record summary and the change-log entry in one batch,
//! and the new change-log position is published to sync sessions and feeds only once a disk
//! sync covers it. [`Replica::change`] syncs the batch itself. An office's writes
//! ([`Replica::create_deferred`], and [`Replica::change_unsynced`], saying the record they
//! leave) and a sync session's batch of received messages ([`Replica::change_unsynced`]) are
//! written unsynced and wait on
//! [`Replica::durable`], where concurrent writers share one sync task; the deterministic
//! simulation syncs its batches in place ([`Replica::make_durable`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use automerge::{ActorId, Automerge, ChangeHash};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::record::doc::frontier::Frontier;
use crate::record::doc::{self, DocError};
use crate::record::{Record, RecordKind};
use crate::store::{ChangeEntry, Seq, Store, StoreError};

/// Compact a document once this many chunks pile up after its snapshot: loading replays every
/// chunk, and 32 keeps a busy record's load under a few milliseconds.
const COMPACT_AFTER_CHUNKS: usize = 32;

/// The summary status of a document that does not (yet) hydrate as a record: a sync may
/// deliver the body before the envelope's change.
pub const INCOMPLETE: &str = "incomplete";

/// How many sync sessions' store trips (blocking work on a replica: scanning, offering,
/// applying) may run at once; an office's own writes do not wait for a permit. A hub serves
/// thousands of sessions; letting each wake a blocking thread at once bought no speed on a few
/// cores and held every trip's transient memory (Automerge's save and deflate buffers)
/// together: with whole first offers, the scale workload's hub peaked at 938 MiB with 2,000
/// offices. 32 is enough that synced writes still meet in RocksDB's group commit.
pub const MAX_CONCURRENT_TRIPS: usize = 32;

/// Refuse to hold a document larger than this (bytes saved plain, as a peer's guard measures
/// a first offer). A record is a few kilobytes; a
/// document past this size is an attack or a bug, and must not exhaust a node's memory.
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;

/// The fewest documents a replica keeps in memory: a session's batch and an office's
/// concurrent writes each hold a few at once, and evicting those would reload them.
pub const MIN_CACHED_DOCS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Doc(#[from] DocError),
    #[error("record {0} not found")]
    NotFound(String),
    #[error("record {0} already exists")]
    AlreadyExists(String),
    #[error("record {id} would grow to {bytes} bytes, over the limit of {limit}")]
    TooLarge {
        id: String,
        bytes: usize,
        limit: usize,
    },
    #[error("stored bytes of record {id} do not load: {detail}")]
    Corrupt { id: String, detail: String },
}

/// Wall-clock source, so tests and the simulation control time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// What the store keeps per record besides its document, so listing and routing never load
/// documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub id: String,
    pub kind: String,
    pub owner: String,
    pub parties: Vec<String>,
    pub status: String,
    pub title: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub conflicted: bool,
    /// S-1 category of shared information, 0 for other kinds.
    pub category: u32,
    pub heads: Vec<String>,
}

impl Summary {
    pub fn is_party(&self, org: &str) -> bool {
        self.parties.iter().any(|p| p == org)
    }

    pub fn record_kind(&self) -> Option<RecordKind> {
        self.kind.parse().ok()
    }
}

impl Summary {
    /// The summary of `record` at `heads`; `field_conflicted` says whether some field of its
    /// document holds concurrent values (see [`field_conflicted`]).
    pub fn of_record(
        record: &Record,
        heads: &[ChangeHash],
        now_ms: i64,
        field_conflicted: bool,
    ) -> Self {
        let derived = record.derived();
        let category = match &record.body {
            crate::record::Body::SharedInfo(s) => s.category,
            _ => 0,
        };
        Summary {
            id: record.envelope.id.clone(),
            kind: record.envelope.kind.clone(),
            owner: record.envelope.owner.clone(),
            parties: record.envelope.parties.clone(),
            status: derived.status.code().to_owned(),
            title: record.body.title(),
            created_at_ms: record.envelope.created_at_ms,
            updated_at_ms: now_ms,
            conflicted: !derived.contradictions.is_empty() || field_conflicted,
            category,
            heads: heads.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The record's summary, and the record itself if the document hydrates as one (so the
/// caller need not hydrate it again); `field_conflicted` as in [`Summary::of_record`].
fn summarize(doc: &Automerge, now_ms: i64, field_conflicted: bool) -> (Summary, Option<Record>) {
    let heads = doc.get_heads();
    match doc::hydrate_record(doc) {
        Ok(record) => (
            Summary::of_record(&record, &heads, now_ms, field_conflicted),
            Some(record),
        ),
        // A document that does not (yet) hydrate is still stored and synced: a sync may
        // deliver the body before the envelope's change. Its summary says so.
        Err(_) => {
            let heads = heads.iter().map(ToString::to_string).collect();
            let envelope = doc::hydrate_envelope(doc).ok();
            let summary = Summary {
                id: envelope.as_ref().map(|e| e.id.clone()).unwrap_or_default(),
                kind: envelope
                    .as_ref()
                    .map(|e| e.kind.clone())
                    .unwrap_or_default(),
                owner: envelope
                    .as_ref()
                    .map(|e| e.owner.clone())
                    .unwrap_or_default(),
                parties: envelope.map(|e| e.parties).unwrap_or_default(),
                status: INCOMPLETE.into(),
                title: String::new(),
                created_at_ms: 0,
                updated_at_ms: now_ms,
                conflicted: false,
                category: 0,
                heads,
            };
            (summary, None)
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    doc: Option<Automerge>,
    chunks_since_snapshot: usize,
    /// Bytes the store holds for the document (snapshot and chunks), so a change that would
    /// take it past [`MAX_DOCUMENT_BYTES`] is refused before it is stored. Everything stored
    /// is encoded plain (a document received deflated inside is re-encoded, see
    /// `sync::session`), so it measures as a peer's guard does; chunks of changes outweigh the
    /// document they make, which is measured itself near the limit.
    stored_bytes: usize,
    /// Whether some field of the document holds concurrent values, if known since it was
    /// loaded.
    field_conflicted: Option<bool>,
    /// A value derived from the document at these heads (see [`Replica::read_memo`]).
    memo: Option<(Vec<ChangeHash>, Arc<dyn Any + Send + Sync>)>,
    /// The record the document read as at these heads, when a change here left it so and no
    /// field holds concurrent values: what the record's frontier is made of once the document
    /// leaves memory ([`Replica::keep_frontiers`]).
    read_as: Option<(Vec<ChangeHash>, Record)>,
}

/// Whether a change is synced to disk and published before [`Replica::change`] returns, or
/// left to the caller's wait on [`Replica::durable`] (or [`Replica::make_durable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    Synced,
    Deferred,
}

/// Locks a document's slot. A panic inside a change (Automerge has panicked on a peer's
/// bytes; see `sync::guard`) poisons the lock with the document possibly half-changed, and
/// would fail every later session that touches the record. The next user instead drops the
/// in-memory copy, so the document is reloaded from the store, and clears the poison.
fn lock_slot(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|poisoned| {
        let mut guard = poisoned.into_inner();
        *guard = Slot::default();
        slot.clear_poison();
        tracing::warn!("a change panicked earlier; the document is reloaded from the store");
        guard
    })
}

/// The documents in memory, least recently used first out. Unbounded for `lru`: the replica
/// bounds it itself ([`evict`]), since a slot somebody is using stays.
type Cache = LruCache<String, Arc<Mutex<Slot>>>;

/// The result of a change: the record's new change-log position, if anything changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed<R> {
    pub result: R,
    pub seq: Option<Seq>,
    pub heads: Vec<ChangeHash>,
    /// The record as the change left it, if anything changed and the document hydrates:
    /// hydrated once for the summary, and lent to the caller so it need not hydrate again.
    pub record: Option<Record>,
    /// Whether some field of the document holds concurrent values (known only if anything
    /// changed; `false` otherwise).
    pub field_conflicted: bool,
}

/// What a change's closure already knows of the document it left, so the replica need not
/// work it out again ([`Replica::change_unsynced`]). Each was a measured share of applying a
/// record received by sync: hydrating it for the summary, and encoding its changes to store.
#[derive(Debug, Default)]
pub struct Known {
    /// The record the changed document hydrates to.
    pub record: Option<Record>,
    /// Bytes that, loaded into an empty document, make the changed document; honoured only
    /// when the document was empty before the change (a record received whole, whose
    /// document bytes are stored as they came instead of re-encoded).
    pub whole: Option<Vec<u8>>,
}

/// The decoded summaries of every record, kept beside the stored JSON: sync asks for a
/// record's summary on every offer and every received message (the hub's gate reads its
/// parties), and decoding the JSON each time was a measured hot spot. A few hundred bytes per
/// record; the store stays the truth and fills this on first use. Shared, not copied: a
/// summary's strings were copied on every ask, 3 % of the hub's CPU in sync.
#[derive(Debug, Default)]
struct Summaries {
    /// Hashed, not ordered: a lookup in a B-tree of 10,000 ids compared the asked id with a
    /// score of keys, each on a heap page of its own and slow to touch once left alone (a
    /// tenth of a node's CPU creating records). Listing sorts instead.
    by_id: HashMap<String, Arc<Summary>>,
    /// Whether `by_id` holds every stored summary: listing needs no store scan, and an id it
    /// lacks is not stored.
    complete: bool,
}

/// The frontiers a replica keeps, least recently used first out, bounded here: `lru`
/// allocates a bounded cache's whole capacity at once, which a large setting took at start-up
/// or could not (a break-test).
#[derive(Debug)]
struct Frontiers {
    by_id: LruCache<String, KeptFrontier>,
    capacity: usize,
}

/// A record's frontier, and the heads its last change was taken on, sorted, if that change
/// was taken without loading the record ([`Replica::take_body_edit`]).
#[derive(Debug, Clone)]
struct KeptFrontier {
    frontier: Arc<Frontier>,
    taken_on: Option<Vec<ChangeHash>>,
}

#[derive(Debug)]
pub struct Replica {
    org: String,
    actor: ActorId,
    store: Arc<dyn Store>,
    cache: Mutex<Cache>,
    summaries: RwLock<Summaries>,
    capacity: usize,
    clock: Arc<dyn Clock>,
    /// Permits for store trips; see [`MAX_CONCURRENT_TRIPS`].
    trips: tokio::sync::Semaphore,
    /// The frontiers of records changed lately, if this replica keeps them (the hub's does;
    /// see [`Replica::keep_frontiers`]).
    frontiers: Option<Mutex<Frontiers>>,
    /// What has been published and synced, shared with the sync task.
    told: Arc<Told>,
}

/// What a replica has told: its published change-log head, how far the disk is synced, and
/// the writers waiting for a sync. Apart from the replica so that the sync task holds the
/// store only while it syncs: a task still holding it as it answered the last writer kept
/// the store open (and its folder locked) after its user had let go.
#[derive(Debug)]
struct Told {
    /// The published head: sessions, feeds and watches read the change log up to it.
    changes: watch::Sender<Seq>,
    /// How far the change log is known to be on disk, and the syncs that failed.
    synced: watch::Sender<Synced>,
    /// Disk syncs asked for by writers waiting on [`Replica::durable`].
    queue: Mutex<SyncQueue>,
}

impl Told {
    /// Tells sessions and feeds of the changes through `through`, which a completed disk sync
    /// covered. The position is read before the sync: a deferred write finished while it ran
    /// may not be on disk yet, and is told after the next one.
    fn publish_through(&self, through: Seq) {
        self.changes.send_if_modified(|seq| raise(seq, through));
    }

    fn lock_queue(&self) -> MutexGuard<'_, SyncQueue> {
        // Each critical section leaves the queue whole; a poisoned lock guards valid data.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The sync task: syncs until no writer waits for more, publishing after each sync. It
    /// ends at once if the store is gone (its replica dropped, and every writer with it).
    fn run_syncs(&self, store: &std::sync::Weak<dyn Store>) {
        loop {
            let Some(store) = store.upgrade() else {
                self.lock_queue().running = false;
                return;
            };
            // Every write that has finished is at or below the visible position, and a sync
            // covers every write finished before it starts.
            let through = store.last_seq();
            let outcome = store.sync();
            drop(store);

            // Under the queue's lock, so that a writer who starts waiting now either sees
            // this outcome or finds no task running and starts one.
            let mut queue = self.lock_queue();
            match outcome {
                Ok(()) => {
                    // Told before the writers are answered, as `durable` promises.
                    self.publish_through(through);
                    self.synced
                        .send_if_modified(|synced| raise(&mut synced.through, through));
                    if queue.wanted <= self.synced.borrow().through {
                        queue.running = false;
                        return;
                    }
                }
                Err(e) => {
                    // RocksDB refuses every later write once a sync of its log failed, until
                    // the store is reopened: the operator must hear of it.
                    tracing::error!(
                        error = %e,
                        "the disk sync failed: waiting writes are refused, and the store takes no more until the server restarts"
                    );
                    self.synced.send_modify(|synced| {
                        synced.failures += 1;
                        synced.error = Some(e.to_string());
                    });
                    queue.running = false;
                    return;
                }
            }
        }
    }
}

/// The writers' side of the shared disk sync (see [`Replica::durable`]).
#[derive(Debug, Default)]
struct SyncQueue {
    /// The highest change-log position a waiting writer needs on disk.
    wanted: Seq,
    /// Whether a sync task is on the blocking pool; it runs until nothing is wanted.
    running: bool,
}

/// What the sync task has made durable so far.
#[derive(Debug, Clone, Default)]
struct Synced {
    /// Every change-log position up to this one is on disk.
    through: Seq,
    /// Syncs that failed, and the last one's error: a writer that saw a failure after it
    /// began waiting is told, since its write may not be on disk.
    failures: u64,
    error: Option<String>,
}

impl Replica {
    /// Opens the replica of `org` over `store` with a new actor id of `org`.
    ///
    /// A new one each time the store is opened: an actor numbers its changes to a document
    /// 1, 2, 3..., and a store restored from an older copy would number its next change as one
    /// it lost, which peers that hold the lost one refuse for good (a duplicate sequence
    /// number). Every actor id names `org`, so attribution is by organisation as before.
    pub fn open(
        org: &str,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        capacity: usize,
    ) -> Result<Self, ReplicaError> {
        Self::open_as(org, doc::actor_for(org), store, clock, capacity)
    }

    /// [`Replica::open`] with the actor id chosen by the caller (the deterministic simulation
    /// draws its own); it must be one of `org`'s and never used with this store before.
    pub fn open_as(
        org: &str,
        actor: ActorId,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        capacity: usize,
    ) -> Result<Self, ReplicaError> {
        assert_eq!(
            doc::org_of_actor(&actor).as_deref(),
            Some(org),
            "a replica's actor id names its organisation"
        );
        // Kept as the folder's latest actor: a node refuses to start on another
        // organisation's folder by reading it (`server::check_folder_org`).
        store.put_meta("actor", actor.to_bytes())?;
        // What the store holds at open was read back from disk: published, and durable.
        let opened_at = store.last_seq();
        Ok(Replica {
            org: org.to_owned(),
            actor,
            store,
            cache: Mutex::new(Cache::unbounded()),
            summaries: RwLock::new(Summaries::default()),
            capacity: capacity.max(MIN_CACHED_DOCS),
            clock,
            trips: tokio::sync::Semaphore::new(MAX_CONCURRENT_TRIPS),
            frontiers: None,
            told: Arc::new(Told {
                changes: watch::channel(opened_at).0,
                synced: watch::channel(Synced {
                    through: opened_at,
                    ..Synced::default()
                })
                .0,
                queue: Mutex::new(SyncQueue::default()),
            }),
        })
    }

    /// Keeps the frontiers of up to `capacity` records not in memory (none if 0), so that a
    /// peer's change putting strings into a record's body fields can be taken without
    /// loading the record ([`Replica::take_body_edit`]). A frontier is made as the document
    /// of a record changed here leaves memory, and kept as such changes are taken. A frontier
    /// is a few kilobytes, a loaded document some fifty; the hub keeps them, since it takes
    /// every office's edits.
    ///
    /// FIXME: frontiers live in memory only. After a restart each record's first edit goes
    /// through Automerge (which keeps the frontier again); storing them beside the summaries
    /// would spare that, at a write per change.
    pub fn keep_frontiers(mut self, capacity: usize) -> Self {
        self.frontiers = (capacity > 0).then(|| {
            Mutex::new(Frontiers {
                by_id: LruCache::unbounded(),
                capacity,
            })
        });
        self
    }

    /// The frontier of record `id` at the heads its summary lists, if kept.
    pub fn frontier(&self, id: &str, heads: &[String]) -> Option<Arc<Frontier>> {
        let kept = self.kept_frontier(id, heads)?;
        Some(kept.frontier)
    }

    /// The heads record `id`'s last change was taken on without loading the record
    /// ([`Replica::take_body_edit`]), sorted, if the record is still at `heads` (its summary's).
    pub fn taken_on(&self, id: &str, heads: &[String]) -> Option<Vec<ChangeHash>> {
        self.kept_frontier(id, heads)?.taken_on
    }

    fn kept_frontier(&self, id: &str, heads: &[String]) -> Option<KeptFrontier> {
        let kept = self.lock_frontiers()?.by_id.get(id).cloned()?;
        let listed = sorted_heads(heads)?;
        (kept.frontier.heads() == listed.as_slice()).then_some(kept)
    }

    fn lock_frontiers(&self) -> Option<MutexGuard<'_, Frontiers>> {
        // Each critical section leaves the cache whole; a poisoned lock guards valid data.
        self.frontiers.as_ref().map(|cache| {
            cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }

    /// Keeps `frontier` as record `id`'s, or forgets the record's if `None`.
    fn set_frontier(&self, id: &str, frontier: Option<KeptFrontier>) {
        let Some(mut frontiers) = self.lock_frontiers() else {
            return;
        };
        match frontier {
            Some(frontier) => {
                frontiers.by_id.put(id.to_owned(), frontier);
                while frontiers.by_id.len() > frontiers.capacity {
                    frontiers.by_id.pop_lru();
                }
            }
            None => {
                frontiers.by_id.pop(id);
            }
        }
    }

    pub fn org(&self) -> &str {
        &self.org
    }

    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Waits for a permit to make a store trip; see [`MAX_CONCURRENT_TRIPS`].
    pub async fn trip_permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.trips
            .acquire()
            .await
            .expect("the trip semaphore is never closed")
    }

    /// Watches the change log's published head; sync sessions and feeds wait on it.
    pub fn subscribe(&self) -> watch::Receiver<Seq> {
        self.told.changes.subscribe()
    }

    /// The change log's published head: every change up to it is on disk. The store may
    /// show more (writes awaiting their sync), which nobody is told of yet.
    pub fn published(&self) -> Seq {
        *self.told.changes.borrow()
    }

    /// The published change-log entries after `after`, at most `limit`: what sync sessions,
    /// feeds and watches read, so that nothing leaves this side before it is on disk.
    pub fn published_since(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<ChangeEntry>, ReplicaError> {
        let published = self.published();
        if after >= published {
            return Ok(Vec::new());
        }
        let mut entries = self.store.changed_since(after, limit)?;
        entries.retain(|entry| entry.seq <= published);
        Ok(entries)
    }

    fn slot(&self, id: &str) -> Arc<Mutex<Slot>> {
        let mut cache = self.cache.lock().expect("cache lock is never poisoned");
        if let Some(slot) = cache.get(id) {
            return slot.clone();
        }
        let evicted = evict(&mut cache, self.capacity - 1);
        let slot = Arc::new(Mutex::new(Slot::default()));
        cache.put(id.to_owned(), slot.clone());
        drop(cache);
        self.keep_frontiers_of(&evicted);
        // Freeing a document touches all of its memory, which may have gone cold: every other
        // caller waits for the cache lock, so it is done after the lock is let go.
        drop(evicted);
        slot
    }

    /// Keeps the frontiers of records whose documents just left memory, if this replica keeps
    /// frontiers and knows what each read as: a record in memory takes its changes through
    /// Automerge and needs none, so the frontier is made only as it leaves (a change's cost
    /// otherwise, paid by every change the district workload's hub takes in).
    fn keep_frontiers_of(&self, evicted: &[(String, Arc<Mutex<Slot>>)]) {
        if self.frontiers.is_none() {
            return;
        }
        for (id, slot) in evicted {
            let slot = lock_slot(slot);
            if let (Some(doc), Some((heads, record))) = (&slot.doc, &slot.read_as)
                && doc.get_heads() == *heads
                && let Some(frontier) = Frontier::of(doc, record)
            {
                let frontier = Arc::new(frontier);
                let taken_on = None;
                self.set_frontier(id, Some(KeptFrontier { frontier, taken_on }));
            }
        }
    }

    /// Whether record `id`'s document is in memory now, without making it more recently used
    /// (for tests and diagnostics: whether a change was taken without loading the record).
    pub fn is_loaded(&self, id: &str) -> bool {
        let slot = self
            .cache
            .lock()
            .expect("cache lock is never poisoned")
            .peek(id)
            .cloned();
        slot.is_some_and(|slot| lock_slot(&slot).doc.is_some())
    }

    /// Whether record `id` has a slot in the cache, without making it more recently used.
    #[cfg(test)]
    fn is_cached(&self, id: &str) -> bool {
        let cache = self.cache.lock().expect("cache lock is never poisoned");
        cache.contains(id)
    }

    #[cfg(test)]
    fn cached_count(&self) -> usize {
        self.cache
            .lock()
            .expect("cache lock is never poisoned")
            .len()
    }

    fn load_into(&self, id: &str, slot: &mut Slot) -> Result<bool, ReplicaError> {
        if slot.doc.is_some() {
            return Ok(true);
        }
        let Some(stored) = self.store.load(id)? else {
            return Ok(false);
        };
        let corrupt = |detail: String| ReplicaError::Corrupt {
            id: id.to_owned(),
            detail,
        };
        let load = || -> Result<Automerge, automerge::AutomergeError> {
            match (&stored.snapshot, stored.chunks.as_slice()) {
                (Some(only), []) | (None, [only]) => Automerge::load(only),
                (None, []) => Ok(Automerge::new()),
                // One load of everything: Automerge merged each chunk loaded on its own through
                // a temporary document (a record of six chunks: 231 µs, against 129 µs in one).
                // It takes chunks out of causal order, and skips a change whose dependency is
                // missing, as loading them one by one did (tests below).
                _ => Automerge::load(&stored.concat()),
            }
        };
        // Automerge 0.12 panics on some well-formed but inconsistent bytes (a change whose
        // sequence number skips ahead, `op_set2/change/batch.rs:1121`); stored bytes that do
        // that are corrupt, and say so instead of failing whoever asked.
        let doc = match std::panic::catch_unwind(load) {
            Ok(loaded) => loaded.map_err(|e| corrupt(e.to_string()))?,
            Err(_) => {
                return Err(corrupt(
                    "Automerge panicked loading the stored bytes".into(),
                ));
            }
        };
        slot.doc = Some(doc.with_actor(self.actor.clone()));
        slot.chunks_since_snapshot = stored.chunks.len();
        slot.stored_bytes = stored.len();
        // The stored summary was written with the stored bytes: a record it calls clean holds
        // no field conflicts, and its next chain of changes need not be walked for them (the
        // walk was a tenth of the hub's CPU taking in changes to records not in memory). A
        // record that does not hydrate yet is summarised without looking, so it says nothing.
        slot.field_conflicted = self
            .summary(id)?
            .filter(|summary| summary.status != INCOMPLETE && !summary.conflicted)
            .map(|_| false);
        Ok(true)
    }

    /// Reads a document, loading it if needed. `None` if the replica does not hold it.
    pub fn read<R>(
        &self,
        id: &str,
        f: impl FnOnce(&Automerge) -> R,
    ) -> Result<Option<R>, ReplicaError> {
        let slot = self.slot(id);
        let mut slot = lock_slot(&slot);
        if !self.load_into(id, &mut slot)? {
            return Ok(None);
        }
        Ok(slot.doc.as_ref().map(f))
    }

    /// A value derived from document `id`, computed by `derive` at most once per state of the
    /// document and shared by every caller until the document changes. The hub offers a new
    /// record to every office from the same first message; making it once instead of once per
    /// session (a whole save and deflate each) was most of the hub's CPU per copy at scale.
    /// One memo per document: asking for another type replaces it.
    pub fn read_memo<T: Any + Send + Sync>(
        &self,
        id: &str,
        derive: impl FnOnce(&Automerge) -> T,
    ) -> Result<Option<Arc<T>>, ReplicaError> {
        let slot = self.slot(id);
        let mut slot = lock_slot(&slot);
        if !self.load_into(id, &mut slot)? {
            return Ok(None);
        }
        let doc = slot.doc.as_ref().expect("loaded above");
        let heads = doc.get_heads();
        if let Some((at, memo)) = &slot.memo
            && *at == heads
            && let Ok(memo) = memo.clone().downcast::<T>()
        {
            return Ok(Some(memo));
        }
        let memo = Arc::new(derive(doc));
        slot.memo = Some((heads, memo.clone()));
        Ok(Some(memo))
    }

    pub fn contains(&self, id: &str) -> Result<bool, ReplicaError> {
        Ok(self.summary(id)?.is_some())
    }

    /// Creates a record's document; returns its change-log position and heads. Durable when
    /// this returns.
    pub fn create(&self, record: &Record) -> Result<(Seq, Vec<ChangeHash>), ReplicaError> {
        let created = self.create_with(record, Durability::Synced)?;
        self.publish();
        Ok(created)
    }

    /// [`Replica::create`], written but not synced: durable, and told to sessions and feeds,
    /// once [`Replica::durable`] returns for the position returned here.
    pub fn create_deferred(&self, record: &Record) -> Result<(Seq, Vec<ChangeHash>), ReplicaError> {
        self.create_with(record, Durability::Deferred)
    }

    fn create_with(
        &self,
        record: &Record,
        durability: Durability,
    ) -> Result<(Seq, Vec<ChangeHash>), ReplicaError> {
        let id = record.id().to_owned();
        let slot = self.slot(&id);
        let slot = lock_slot(&slot);
        if slot.doc.is_some() || self.summary(&id)?.is_some() {
            return Err(ReplicaError::AlreadyExists(id));
        }
        let now = self.now_ms();
        // The record's first change, without its document: building the document was half
        // of a create's CPU, and a record is often not read again before it is synced.
        let change = doc::first_change(record, self.actor.clone(), now)?;
        // Stored uncompressed: a record is a kilobyte or two, RocksDB compresses its files
        // anyway, and a deflate per create (its state allocated and zeroed each time) was a
        // tenth of a node's CPU under a burst of writes. Compaction later saves compressed.
        let bytes = change.raw_bytes();
        self.check_size(&id, bytes.len())?;
        // Summarised from the record in hand: the change was just made from it, and one
        // office's change holds no concurrent values.
        debug_assert_eq!(doc::record_of_change(&change).ok().as_ref(), Some(record));
        let heads = vec![change.hash()];
        let summary = Summary::of_record(record, &heads, now, false);
        let summary_bytes = encode_summary(&summary);
        let seq = match durability {
            Durability::Synced => self.store.append(&id, bytes, &summary_bytes),
            Durability::Deferred => self.store.append_unsynced(&id, bytes, &summary_bytes),
        }?;
        self.remember(&id, summary);
        // The slot stays empty: `load_into` builds the document from the stored change when
        // the record is next used.
        Ok((seq, heads))
    }

    /// Stores record `id`, new to this replica, as the `whole` document its trusted peer (the
    /// hub) sent with the `summary` the peer keeps of it, without loading it: the document is
    /// loaded from the store when it is next used. Written but not synced, as
    /// [`Replica::change_unsynced`]. `None` if the replica holds the record by now (the caller
    /// then applies the document as any other message).
    ///
    /// Loading a received document (Automerge's load, then hydrating it for its summary) was
    /// a third of an office's CPU taking in the district's records after a day offline; the
    /// hub did both already, on the same bytes.
    pub fn adopt(
        &self,
        id: &str,
        whole: &[u8],
        summary: Summary,
    ) -> Result<Option<Seq>, ReplicaError> {
        let slot = self.slot(id);
        let slot = lock_slot(&slot);
        if slot.doc.is_some() || self.summary(id)?.is_some() {
            return Ok(None);
        }
        self.check_size(id, whole.len())?;
        let seq = self
            .store
            .append_unsynced(id, whole, &encode_summary(&summary))?;
        self.remember(id, summary);
        // The slot stays empty: `load_into` reads the document, its size and its chunk count
        // from the store when the record is next used.
        Ok(Some(seq))
    }

    /// Appends `changes` (change chunks, plain) that the trusted peer sent for record `id`,
    /// which this replica holds at `heads` and has not loaded, under the `summary` the peer
    /// keeps of the record with them, without loading it. The caller has checked that every
    /// change follows from `heads` or an earlier one of them, and that they make the heads
    /// `summary` lists. Written but not synced, as [`Replica::change_unsynced`].
    ///
    /// `None` if the record is loaded (applying the changes to it costs little), no longer at
    /// `heads`, or would need compacting or measuring against the size limit; the caller then
    /// applies the changes as any other message, which does both.
    ///
    /// An office loaded each record the hub changed to apply the change and summarise it:
    /// most of its CPU taking in a reconnecting office's updates, for records it had taken in
    /// unloaded ([`Replica::adopt`]) and might not read before their next change.
    pub fn adopt_changes(
        &self,
        id: &str,
        heads: &[String],
        changes: &[u8],
        summary: Summary,
    ) -> Result<Option<Seq>, ReplicaError> {
        self.append_unloaded(id, heads, changes, summary, None)
    }

    /// Appends `changes` (change chunks, plain, as a peer sent them) to record `id`, held at
    /// `heads` and not loaded, where `taken` is the record's frontier after them
    /// ([`Frontier::take`] of the frontier at `heads`, which decided they are changes
    /// Automerge would apply exactly so), under `summary`, made from `taken`'s record. Written
    /// but not synced, as [`Replica::change_unsynced`]. `None` in the cases
    /// [`Replica::adopt_changes`] gives it, for the same reasons.
    pub fn take_body_edit(
        &self,
        id: &str,
        heads: &[String],
        changes: &[u8],
        summary: Summary,
        taken: Frontier,
    ) -> Result<Option<Seq>, ReplicaError> {
        self.append_unloaded(id, heads, changes, summary, Some(taken))
    }

    fn append_unloaded(
        &self,
        id: &str,
        heads: &[String],
        changes: &[u8],
        summary: Summary,
        taken: Option<Frontier>,
    ) -> Result<Option<Seq>, ReplicaError> {
        let slot = self.slot(id);
        let mut slot = lock_slot(&slot);
        if slot.doc.is_some() || self.summary(id)?.is_none_or(|held| held.heads != heads) {
            return Ok(None);
        }
        // The store says how many chunks the record has and how many bytes: both are known
        // only once a record is loaded, and a read of its few keys is cheap beside a load.
        let Some(stored) = self.store.load(id)? else {
            return Ok(None);
        };
        if stored.chunks.len() >= COMPACT_AFTER_CHUNKS
            || stored.len() + changes.len() > MAX_DOCUMENT_BYTES
        {
            return Ok(None);
        }
        if let Some(taken) = &taken {
            debug_assert_taken_as_automerge_applies(&stored, changes, taken);
        }

        let seq = self
            .store
            .append_unsynced(id, changes, &encode_summary(&summary))?;
        self.remember(id, summary);
        // A change appended unloaded leaves the record's frontier unknown, unless it is the
        // one taken.
        let taken = taken.map(|frontier| KeptFrontier {
            frontier: Arc::new(frontier),
            taken_on: sorted_heads(heads),
        });
        self.set_frontier(id, taken);
        slot.memo = None;
        Ok(Some(seq))
    }

    /// The last chunk stored for record `id` if the record is not loaded and has chunks after
    /// its snapshot: the change a peer's session offers on from the store when that one change
    /// is all the peer lacks (`sync::session`), without loading the record for it. The caller
    /// checks what the chunk holds (a change stored meanwhile is another chunk, whose hash is
    /// not the head the caller read). The record is not made a slot in the cache, which would
    /// push out a loaded one.
    pub fn tail_chunk(&self, id: &str) -> Result<Option<Vec<u8>>, ReplicaError> {
        if self.is_loaded(id) {
            return Ok(None);
        }
        Ok(self
            .store
            .load(id)?
            .and_then(|mut stored| stored.chunks.pop()))
    }

    /// Applies `f` to the document `id` (an empty document if `create_missing` and the replica
    /// does not hold it) and makes whatever it changed durable. If `f` fails, or the store
    /// does, the document is dropped from memory and reloaded from the store next time, so a
    /// half-applied change never lingers.
    pub fn change<R, E: From<ReplicaError>>(
        &self,
        id: &str,
        create_missing: bool,
        f: impl FnOnce(&mut Automerge) -> Result<R, E>,
    ) -> Result<Changed<R>, E> {
        self.change_knowing_nothing(id, create_missing, Durability::Synced, f)
    }

    /// [`Replica::change`], written but neither synced nor published: the change is durable,
    /// and sessions and feeds hear of it, only once [`Replica::durable`] (or
    /// [`Replica::make_durable`]) covers it. The caller must tell nobody of it before then.
    /// A sync session applies a batch of received messages this way, one disk sync for the
    /// batch, and an office its own changes, concurrent ones sharing one disk sync without a
    /// thread each waiting on it. `f` also says what it [`Known`]s of the document it left.
    pub fn change_unsynced<R, E: From<ReplicaError>>(
        &self,
        id: &str,
        create_missing: bool,
        f: impl FnOnce(&mut Automerge) -> Result<(R, Known), E>,
    ) -> Result<Changed<R>, E> {
        self.change_with(id, create_missing, Durability::Deferred, f)
    }

    /// A change whose `f` knows nothing of the document it leaves beyond the document itself.
    fn change_knowing_nothing<R, E: From<ReplicaError>>(
        &self,
        id: &str,
        create_missing: bool,
        durability: Durability,
        f: impl FnOnce(&mut Automerge) -> Result<R, E>,
    ) -> Result<Changed<R>, E> {
        self.change_with(id, create_missing, durability, |doc| {
            f(doc).map(|result| (result, Known::default()))
        })
    }

    /// Syncs every change made so far to disk, then tells sessions and feeds.
    pub fn make_durable(&self) -> Result<(), ReplicaError> {
        let through = self.store.last_seq();
        self.store.sync()?;
        self.told.publish_through(through);
        self.told
            .synced
            .send_if_modified(|synced| raise(&mut synced.through, through));
        Ok(())
    }

    /// Resolves with the error once a write or disk sync of the store has failed, whoever
    /// made it (a record's change, a hub's hello, sync bookkeeping). RocksDB then refuses
    /// every later write until the store is reopened, so a server stops on it (and its
    /// supervisor starts it again) rather than run on, taking nothing in, as if it were well.
    pub async fn store_failed(&self) -> String {
        let mut failure = self.store.failure().subscribe();
        let failed = failure
            .wait_for(Option::is_some)
            .await
            .map(|failed| failed.clone().unwrap_or_default());
        match failed {
            Ok(error) => error,
            // The sender lives in the store, which this replica holds, and the caller holds
            // the replica.
            Err(_) => std::future::pending().await,
        }
    }

    /// Whether the change log is known to be on disk through `seq`.
    pub fn is_durable(&self, seq: Seq) -> bool {
        self.told.synced.borrow().through >= seq
    }

    /// Asks the sync task to make the change log durable through `seq`, starting it if it is
    /// not running, without waiting; [`Replica::durable`] waits.
    pub fn request_durable(self: &Arc<Self>, seq: Seq) {
        if self.is_durable(seq) {
            return;
        }
        let start = {
            let mut queue = self.told.lock_queue();
            queue.wanted = queue.wanted.max(seq);
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            let (told, store) = (self.told.clone(), Arc::downgrade(&self.store));
            tokio::task::spawn_blocking(move || told.run_syncs(&store));
        }
    }

    /// Waits until the change log is on disk through `seq` (a deferred write's position),
    /// then returns; sessions and feeds have been told of it by then.
    ///
    /// Writers share the disk syncs: the first to wait starts a sync task on the blocking
    /// pool, which syncs whatever has been written by then and goes on while anyone waits
    /// for more. Each synced write used to hold a blocking thread through RocksDB's group
    /// commit, and the hand-offs and wake-ups, not the disk, bounded an office's writes.
    /// Should a sync fail, every writer waiting then gets the error: its write is stored but
    /// may not survive a power cut.
    pub async fn durable(self: &Arc<Self>, seq: Seq) -> Result<(), ReplicaError> {
        let mut synced = self.told.synced.subscribe();
        let failures_before = {
            let synced = synced.borrow_and_update();
            if synced.through >= seq {
                return Ok(());
            }
            synced.failures
        };
        self.request_durable(seq);
        // The sender lives in this replica, which the caller holds: waiting cannot end
        // without an outcome.
        let outcome = synced
            .wait_for(|synced| synced.through >= seq || synced.failures != failures_before)
            .await
            .map(|synced| synced.clone())
            .unwrap_or_default();
        if outcome.through >= seq {
            return Ok(());
        }
        Err(StoreError::Engine(format!(
            "the write is stored but the disk sync failed: {}",
            outcome.error.unwrap_or_default()
        ))
        .into())
    }

    fn change_with<R, E: From<ReplicaError>>(
        &self,
        id: &str,
        create_missing: bool,
        durability: Durability,
        f: impl FnOnce(&mut Automerge) -> Result<(R, Known), E>,
    ) -> Result<Changed<R>, E> {
        let slot = self.slot(id);
        let mut slot = lock_slot(&slot);
        if !self.load_into(id, &mut slot)? {
            if !create_missing {
                return Err(ReplicaError::NotFound(id.to_owned()).into());
            }
            slot.doc = Some(Automerge::new().with_actor(self.actor.clone()));
            slot.chunks_since_snapshot = 0;
            slot.stored_bytes = 0;
            slot.field_conflicted = Some(false);
        }

        let outcome = self.change_loaded(id, &mut slot, durability, f);
        // A failed change may have half-applied; an empty document (a sync exchange that has
        // not brought the record's changes yet) is not the record. Either way the store is
        // the truth, so the next reader loads from it and finds the record or nothing.
        if outcome.is_err() || slot.doc.as_ref().is_some_and(|d| d.get_heads().is_empty()) {
            slot.doc = None;
        }
        outcome
    }

    fn change_loaded<R, E: From<ReplicaError>>(
        &self,
        id: &str,
        slot: &mut Slot,
        durability: Durability,
        f: impl FnOnce(&mut Automerge) -> Result<(R, Known), E>,
    ) -> Result<Changed<R>, E> {
        let doc = slot.doc.as_mut().expect("loaded above");
        let before = doc.get_heads();
        let (result, known) = f(doc)?;
        let heads = doc.get_heads();
        if heads == before {
            return Ok(Changed {
                result,
                seq: None,
                heads,
                record: None,
                field_conflicted: false,
            });
        }

        // Changes are encoded again from the document rather than stored as a peer sent them:
        // Automerge applies a change whose op ids collide with the document's own and reads
        // it back, but cannot encode it again (it panics), and a hub that stored one could
        // serve the record to no one. Encoding here refuses it instead (`sync::session`
        // catches the panic), as a break-test found.
        let chunk = match known.whole {
            Some(whole) if before.is_empty() => {
                debug_assert_eq!(reloaded_heads(&whole), heads);
                whole
            }
            _ => doc.save_after(&before),
        };
        // Checked before the chunk is stored: once appended, a change is durable and a
        // refusal would only misreport it. Chunks are larger than the compacted document, so
        // near the limit the document itself is measured, and compacted at once. Measured
        // saved plain, as a peer's guard measures the first offer it inflates (`FirstOffer`):
        // a limit on the compressed save let in records no peer would take.
        let mut measured = None;
        if slot.stored_bytes + chunk.len() > MAX_DOCUMENT_BYTES {
            let snapshot = doc.save_nocompress();
            self.check_size(id, snapshot.len())?;
            measured = Some(snapshot);
        }
        let now = self.now_ms();
        let field_conflicted = field_conflicted(doc, &before, slot.field_conflicted);
        let (summary, record) = match known.record {
            Some(record) => {
                debug_assert_eq!(doc::hydrate_record(doc).ok().as_ref(), Some(&record));
                let summary = Summary::of_record(&record, &heads, now, field_conflicted);
                (summary, Some(record))
            }
            None => summarize(doc, now, field_conflicted),
        };
        let summary_bytes = encode_summary(&summary);
        let seq = match durability {
            Durability::Synced => self.store.append(id, &chunk, &summary_bytes),
            Durability::Deferred => self.store.append_unsynced(id, &chunk, &summary_bytes),
        }
        .map_err(ReplicaError::from)?;
        self.remember(id, summary);
        if self.frontiers.is_some() {
            // Made when the document leaves memory (`keep_frontiers_of`); any kept before is
            // of older heads.
            self.set_frontier(id, None);
            slot.read_as = record
                .clone()
                .filter(|_| !field_conflicted)
                .map(|record| (heads.clone(), record));
        }
        slot.field_conflicted = Some(field_conflicted);
        slot.chunks_since_snapshot += 1;
        slot.stored_bytes += chunk.len();
        if measured.is_some() || slot.chunks_since_snapshot > COMPACT_AFTER_CHUNKS {
            // Plain, as a create stores its document: RocksDB compresses its files, plain bytes
            // load without inflating, and `stored_bytes` then measures what the limit does.
            let snapshot = measured.unwrap_or_else(|| doc.save_nocompress());
            // Deferred like the append it follows: an office's write runs on an async
            // worker, where a disk sync would stall every task sharing it.
            match durability {
                Durability::Synced => self.store.compact(id, &snapshot, seq),
                Durability::Deferred => self.store.compact_unsynced(id, &snapshot, seq),
            }
            .map_err(ReplicaError::from)?;
            slot.chunks_since_snapshot = 0;
            slot.stored_bytes = snapshot.len();
        }
        if durability == Durability::Synced {
            self.publish();
        }
        Ok(Changed {
            result,
            seq: Some(seq),
            heads,
            record,
            field_conflicted,
        })
    }

    fn check_size(&self, id: &str, bytes: usize) -> Result<(), ReplicaError> {
        if bytes > MAX_DOCUMENT_BYTES {
            return Err(ReplicaError::TooLarge {
                id: id.to_owned(),
                bytes,
                limit: MAX_DOCUMENT_BYTES,
            });
        }
        Ok(())
    }

    /// Tells sessions and feeds of every change the store shows, after a synced write.
    fn publish(&self) {
        self.told.publish_through(self.store.last_seq());
    }

    /// The record `id`, hydrated.
    pub fn record(&self, id: &str) -> Result<Record, ReplicaError> {
        self.read(id, doc::hydrate_record)?
            .ok_or_else(|| ReplicaError::NotFound(id.to_owned()))?
            .map_err(ReplicaError::from)
    }

    /// The record's summary as last stored, `None` if the replica does not hold it.
    pub fn summary(&self, id: &str) -> Result<Option<Arc<Summary>>, ReplicaError> {
        {
            let known = self.read_summaries();
            if let Some(summary) = known.by_id.get(id) {
                return Ok(Some(summary.clone()));
            }
            // Every write remembers the summary it stores, so once all are known a miss
            // needs no store lookup (a create asks, for an id it expects to be new).
            if known.complete {
                return Ok(None);
            }
        }
        let Some(summary) = self.store.summary(id)?.and_then(|b| decode_summary(&b)) else {
            return Ok(None);
        };
        let summary = self
            .write_summaries()
            .by_id
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(summary))
            .clone();
        Ok(Some(summary))
    }

    /// Every record's summary, by record id as the store orders them.
    pub fn summaries(&self) -> Result<Vec<Summary>, ReplicaError> {
        let mut listed: Vec<(String, Summary)> = self
            .every_summary()?
            .by_id
            .iter()
            .map(|(id, summary)| (id.clone(), Summary::clone(summary)))
            .collect();
        listed.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        Ok(listed.into_iter().map(|(_, summary)| summary).collect())
    }

    /// How many records the replica holds: counted in memory, where `NodeInfo` used to scan
    /// every stored summary on each call (tens of milliseconds at 10,000 records).
    pub fn record_count(&self) -> Result<usize, ReplicaError> {
        Ok(self.every_summary()?.by_id.len())
    }

    /// The summaries, every stored one among them: the first call reads them all from the
    /// store.
    fn every_summary(&self) -> Result<std::sync::RwLockReadGuard<'_, Summaries>, ReplicaError> {
        {
            let known = self.read_summaries();
            if known.complete {
                return Ok(known);
            }
        }
        let stored = self.store.summaries()?;
        {
            let mut known = self.write_summaries();
            for (id, bytes) in stored {
                // A summary written since the scan began is newer than the scanned one.
                if let Some(summary) = decode_summary(&bytes) {
                    known.by_id.entry(id).or_insert_with(|| Arc::new(summary));
                }
            }
            known.complete = true;
        }
        Ok(self.read_summaries())
    }

    /// Keeps a summary just made durable.
    fn remember(&self, id: &str, summary: Summary) {
        self.write_summaries()
            .by_id
            .insert(id.to_owned(), Arc::new(summary));
    }

    fn read_summaries(&self) -> std::sync::RwLockReadGuard<'_, Summaries> {
        self.summaries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_summaries(&self) -> std::sync::RwLockWriteGuard<'_, Summaries> {
        self.summaries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether some field of `doc` holds concurrent values, now that changes were added after
/// `before`; `was` is what was known of the document at `before`.
///
/// Walking every field was a measured hot spot (once per write, on every node and the hub).
/// A document without conflicts that gains a chain of changes each made on top of all the
/// previous heads (every local edit, and most received ones) cannot have gained a conflict:
/// each of Automerge's puts supersedes the single value it saw. An empty document has no
/// conflicts, so a record arriving whole from one office's chain of edits is not walked
/// either (the walk was 74 µs of a received record's ~200, `examples/costs.rs`). Anything else
/// is walked.
fn field_conflicted(doc: &Automerge, before: &[ChangeHash], was: Option<bool>) -> bool {
    if was == Some(false) || before.is_empty() {
        let mut heads: Vec<ChangeHash> = before.to_vec();
        let linear = doc.get_changes_meta(before).iter().all(|change| {
            let mut deps = change.deps.clone();
            deps.sort_unstable();
            let extends = deps == heads;
            heads = vec![change.hash];
            extends
        });
        if linear {
            return false;
        }
    }
    !doc::conflicts(doc).is_empty()
}

/// Raises `position` to `to` if that is further; whether it moved.
fn raise(position: &mut Seq, to: Seq) -> bool {
    let moved = to > *position;
    if moved {
        *position = to;
    }
    moved
}

/// The heads of the document `bytes` load into, as the replica loads a stored chunk (for
/// debug assertions).
fn reloaded_heads(bytes: &[u8]) -> Vec<ChangeHash> {
    let mut doc = Automerge::new();
    doc.load_incremental(bytes)
        .expect("bytes a change was loaded from load again");
    doc.get_heads()
}

/// In debug builds, that `changes` appended to `stored` load as Automerge's apply would leave
/// the record, `taken` being what [`Frontier::take`] said of them; and that the document they
/// make saves and loads again (a change encoded otherwise than Automerge encodes it would
/// not: see [`Frontier::take`]).
fn debug_assert_taken_as_automerge_applies(
    stored: &crate::store::StoredDoc,
    changes: &[u8],
    taken: &Frontier,
) {
    if cfg!(debug_assertions) {
        let mut bytes = stored.concat();
        bytes.extend_from_slice(changes);
        let doc = Automerge::load(&bytes).expect("a taken change loads");
        let record = doc::hydrate_record(&doc).expect("a taken change hydrates");
        assert_eq!(Frontier::of(&doc, &record).as_ref(), Some(taken));
        let again = Automerge::load(&doc.save_nocompress()).expect("a taken change saves");
        assert_eq!(again.get_heads(), doc.get_heads());
    }
}

/// Takes the least recently used slots that nobody is using right now out of the cache until
/// it holds at most `keep`, and returns them for the caller to drop. A slot in use goes back as
/// the most recently used; if every slot is in use, the cache stays over its size.
///
/// It touches only the slots it looks at. It used to scan every slot for the least recently
/// used tenth: 0.5–1 ms for 2,048 while the hub was busy, but 11–31 ms on memory gone cold
/// after a few idle seconds, under the cache lock, in the middle of a reconnecting office's
/// batch (the 1 % figure of issue 6).
fn evict(cache: &mut Cache, keep: usize) -> Vec<(String, Arc<Mutex<Slot>>)> {
    let mut evicted = Vec::new();
    let mut looked = 0;
    while cache.len() > keep && looked < cache.len() {
        looked += 1;
        let Some((id, slot)) = cache.pop_lru() else {
            break;
        };
        if Arc::strong_count(&slot) == 1 {
            evicted.push((id, slot));
        } else {
            cache.put(id, slot);
        }
    }
    evicted
}

/// `heads` as a summary lists them, parsed and sorted; `None` if one does not parse.
fn sorted_heads(heads: &[String]) -> Option<Vec<ChangeHash>> {
    let mut parsed: Vec<ChangeHash> = heads
        .iter()
        .map(|h| h.parse().ok())
        .collect::<Option<_>>()?;
    parsed.sort_unstable();
    Some(parsed)
}

fn encode_summary(summary: &Summary) -> Vec<u8> {
    serde_json::to_vec(summary).expect("summaries are plain data")
}

fn decode_summary(bytes: &[u8]) -> Option<Summary> {
    serde_json::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ROOT, ReadDoc};

    use super::*;
    use crate::store::MemoryStore;

    const ORG: &str = "130304100";

    fn replica_on(store: &Arc<dyn Store>) -> Replica {
        Replica::open(ORG, store.clone(), Arc::new(SystemClock), 16).unwrap()
    }

    fn put(doc: &mut Automerge, key: &str, value: i64) -> Result<(), ReplicaError> {
        doc.transact(|tx| tx.put(ROOT, key, value))
            .map(|_| ())
            .map_err(|e| ReplicaError::NotFound(format!("{e:?}")))
    }

    /// A change's outcome, knowing nothing more of the document it left.
    fn known_nothing<R>(outcome: Result<R, ReplicaError>) -> Result<(R, Known), ReplicaError> {
        outcome.map(|result| (result, Known::default()))
    }

    fn value(replica: &Replica, id: &str, key: &str) -> Option<i64> {
        replica
            .read(id, |doc| {
                doc.get(ROOT, key).unwrap().and_then(|(v, _)| v.as_i64())
            })
            .unwrap()
            .flatten()
    }

    /// A record changed here gets its frontier as its document leaves memory, at the heads
    /// its summary lists; the replica keeps as many as it is told, the latest, and a setting
    /// of any size takes no memory up front (`lru` allocated a bounded cache's whole capacity:
    /// a large setting aborted the hub, found by a break-test).
    #[test]
    fn frontiers_are_made_as_changed_records_leave_memory_and_kept_within_their_number() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let _unbounded = replica_on(&store).keep_frontiers(usize::MAX);

        let replica = replica_on(&store).keep_frontiers(4);
        let ids: Vec<String> = (0..30)
            .map(|_| {
                let id = crate::record::RecordKind::UrgentNotice.new_record_id();
                let record = crate::record::sample_notice(&id, ORG);
                replica.create(&record).unwrap();
                replica
                    .change(&id, false, |doc| {
                        let mut body = record.body.clone();
                        if let crate::record::Body::UrgentNotice(notice) = &mut body {
                            notice.measures = "area closed".into();
                        }
                        doc::edit_body(doc, &body, &["measures"], 2_000).map_err(ReplicaError::from)
                    })
                    .unwrap();
                id
            })
            .collect();

        let heads = |id: &str| replica.summary(id).unwrap().unwrap().heads.clone();
        assert!(
            replica.frontier(&ids[29], &heads(&ids[29])).is_none(),
            "still in memory"
        );
        let kept: Vec<(&String, Arc<Frontier>)> = ids
            .iter()
            .filter_map(|id| Some((id, replica.frontier(id, &heads(id))?)))
            .collect();
        assert_eq!(
            kept.len(),
            4,
            "the four records to leave memory last, of fourteen"
        );
        for (id, frontier) in kept {
            assert!(!replica.is_loaded(id));
            // Read after: loading a record makes another leave memory, and its frontier
            // pushes out the oldest.
            assert_eq!(frontier.record(), &replica.record(id).unwrap());
        }
    }

    /// A document stored as a snapshot-less run of chunks (a record and five edits) loads in
    /// one piece with every change, in a replica that never held it in memory.
    #[test]
    fn a_document_of_many_chunks_loads_with_every_change() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let writer = replica_on(&store);
        writer.change("doc", true, |doc| put(doc, "n", 0)).unwrap();
        for n in 1..=5 {
            writer.change("doc", false, |doc| put(doc, "n", n)).unwrap();
        }
        writer.change("doc", false, |doc| put(doc, "m", 7)).unwrap();
        let stored = store.load("doc").unwrap().unwrap();
        assert!(stored.snapshot.is_none());
        assert_eq!(stored.chunks.len(), 7);

        let reader = replica_on(&store);
        let heads = writer.read("doc", Automerge::get_heads).unwrap();
        assert_eq!(reader.read("doc", Automerge::get_heads).unwrap(), heads);
        assert_eq!(value(&reader, "doc", "n"), Some(5));
        assert_eq!(value(&reader, "doc", "m"), Some(7));
    }

    /// An urgent notice of [`ORG`]'s whose record id is `id`.
    fn notice(id: &str) -> Record {
        crate::record::sample_notice(id, ORG)
    }

    /// Summaries list in record id order whatever order the records were written in. A
    /// replica that has not listed them yet finds a stored record in the store; once it has,
    /// its list stays whole: a record created after is found, and an id never written is not.
    #[test]
    fn summaries_list_in_id_order_and_stay_whole_once_listed() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let writer = replica_on(&store);
        for id in ["UN-c", "UN-a", "UN-b"] {
            writer.create(&notice(id)).unwrap();
        }
        let ids = |replica: &Replica| -> Vec<String> {
            let summaries = replica.summaries().unwrap();
            summaries.into_iter().map(|summary| summary.id).collect()
        };

        let replica = replica_on(&store);
        assert!(matches!(
            replica.create(&notice("UN-b")),
            Err(ReplicaError::AlreadyExists(id)) if id == "UN-b"
        ));
        assert_eq!(ids(&replica), ["UN-a", "UN-b", "UN-c"]);

        replica.create(&notice("UN-0")).unwrap();
        assert_eq!(ids(&replica), ["UN-0", "UN-a", "UN-b", "UN-c"]);
        assert_eq!(replica.summary("UN-0").unwrap().unwrap().id, "UN-0");
        assert!(replica.summary("UN-z").unwrap().is_none());
        assert!(matches!(
            replica.create(&notice("UN-a")),
            Err(ReplicaError::AlreadyExists(id)) if id == "UN-a"
        ));
        assert_eq!(replica.record_count().unwrap(), 4);
    }

    /// A replica holding notice `UN-1`, with the notice saved plain and its summary: what a
    /// hub offers an office whole.
    fn origin_of_one_notice() -> (Replica, Vec<u8>, Summary) {
        let origin = replica_on(&(Arc::new(MemoryStore::new()) as Arc<dyn Store>));
        origin.create(&notice("UN-1")).unwrap();
        let whole = origin
            .read("UN-1", Automerge::save_nocompress)
            .unwrap()
            .unwrap();
        let summary = Summary::clone(&origin.summary("UN-1").unwrap().unwrap());
        (origin, whole, summary)
    }

    /// A record adopted whole is stored with the summary given, not loaded; it loads from the
    /// store when first read, and a second adoption of it is declined.
    #[test]
    fn an_adopted_record_is_stored_unloaded_and_loads_when_read() {
        let (origin, whole, summary) = origin_of_one_notice();

        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let replica = replica_on(&store);
        let seq = replica.adopt("UN-1", &whole, summary.clone()).unwrap();
        assert!(seq.is_some(), "a record new to the replica is adopted");
        assert!(lock_slot(&replica.slot("UN-1")).doc.is_none(), "not loaded");
        assert_eq!(*replica.summary("UN-1").unwrap().unwrap(), summary);
        assert_eq!(store.load("UN-1").unwrap().unwrap().concat(), whole);

        assert_eq!(
            replica.record("UN-1").unwrap(),
            origin.record("UN-1").unwrap()
        );
        assert!(
            lock_slot(&replica.slot("UN-1")).doc.is_some(),
            "loaded once read"
        );
        assert_eq!(replica.adopt("UN-1", &whole, summary).unwrap(), None);
    }

    /// Changes adopted to a record not loaded are appended with the summary given, and load
    /// with the document when it is next read. They are declined for a record in memory, one
    /// no longer at the heads they follow from, and one with as many chunks as a change
    /// compacts at.
    #[test]
    fn changes_adopted_to_a_record_not_loaded_load_with_it_when_read() {
        let (origin, whole, first) = origin_of_one_notice();
        let edit = |n: i64| {
            let before = origin.read("UN-1", Automerge::get_heads).unwrap().unwrap();
            origin
                .change("UN-1", false, |doc| put(doc, "n", n))
                .unwrap();
            let changes = origin
                .read("UN-1", |doc| {
                    let changes = doc.get_changes(&before);
                    changes
                        .iter()
                        .flat_map(|c| c.raw_bytes().to_vec())
                        .collect::<Vec<u8>>()
                })
                .unwrap()
                .unwrap();
            let summary = Summary::clone(&origin.summary("UN-1").unwrap().unwrap());
            (changes, summary)
        };

        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let replica = replica_on(&store);
        replica.adopt("UN-1", &whole, first.clone()).unwrap();
        let append = |from: &Summary, changes: &[u8], to: &Summary| {
            replica
                .adopt_changes("UN-1", &from.heads, changes, to.clone())
                .unwrap()
        };

        let (changes, second) = edit(1);
        assert_eq!(
            append(&second, &changes, &second),
            None,
            "not at the heads the changes follow from"
        );
        assert!(append(&first, &changes, &second).is_some(), "appended");
        assert!(lock_slot(&replica.slot("UN-1")).doc.is_none(), "not loaded");
        assert_eq!(*replica.summary("UN-1").unwrap().unwrap(), second);
        assert_eq!(store.load("UN-1").unwrap().unwrap().chunks.len(), 2);

        // Chunks pile up only to where a change would compact them.
        let mut held = second;
        for n in 2..COMPACT_AFTER_CHUNKS as i64 {
            let (changes, next) = edit(n);
            assert!(
                append(&held, &changes, &next).is_some(),
                "chunk {n} appended"
            );
            held = next;
        }
        let (changes, next) = edit(99);
        assert_eq!(
            append(&held, &changes, &next),
            None,
            "left to a change that compacts"
        );

        assert_eq!(
            value(&replica, "UN-1", "n"),
            Some(COMPACT_AFTER_CHUNKS as i64 - 1),
            "every appended change loads"
        );
        assert_eq!(replica.record("UN-1").unwrap().id(), "UN-1");
        assert_eq!(append(&held, &changes, &next), None, "in memory");
    }

    /// A replica whose cache (16, the least it keeps) is full: `doc-0` to `doc-15`, each with
    /// `n` set to its number, written in that order.
    fn replica_full_of_sixteen() -> Replica {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let replica = replica_on(&store);
        for n in 0..16 {
            replica
                .change(&format!("doc-{n}"), true, |doc| put(doc, "n", n))
                .unwrap();
        }
        replica
    }

    /// A full cache makes room for a new document by dropping the least recently used one, and
    /// a dropped document reads back whole from the store.
    #[test]
    fn the_least_recently_used_document_leaves_the_cache_first() {
        let replica = replica_full_of_sixteen();
        assert_eq!(value(&replica, "doc-0", "n"), Some(0));

        replica
            .change("doc-16", true, |doc| put(doc, "n", 16))
            .unwrap();
        assert!(
            !replica.is_cached("doc-1"),
            "doc-1 was the least recently used"
        );
        assert!(
            replica.is_cached("doc-0"),
            "doc-0 was read after the others"
        );
        assert!(replica.is_cached("doc-16"));
        assert_eq!(replica.cached_count(), 16);
        assert_eq!(value(&replica, "doc-1", "n"), Some(1));
        assert!(
            !replica.is_cached("doc-2"),
            "reading doc-1 back made room too"
        );
    }

    /// A document somebody is using stays in the cache however long ago it was used, and a
    /// cache whose every document is in use grows past its size rather than refuse.
    #[test]
    fn a_document_in_use_stays_in_the_cache() {
        let replica = replica_full_of_sixteen();
        let in_use = replica.slot("doc-0");
        for n in 1..16 {
            assert_eq!(value(&replica, &format!("doc-{n}"), "n"), Some(n));
        }

        replica
            .change("doc-16", true, |doc| put(doc, "n", 16))
            .unwrap();
        assert!(replica.is_cached("doc-0"), "doc-0 is in use");
        assert!(
            !replica.is_cached("doc-1"),
            "doc-1 was the least recently used idle one"
        );
        drop(in_use);

        let all_in_use: Vec<_> = (0..16)
            .map(|n| replica.slot(&format!("doc-{}", n + 2)))
            .collect();
        replica
            .change("doc-18", true, |doc| put(doc, "n", 18))
            .unwrap();
        assert_eq!(replica.cached_count(), 17);
        assert_eq!(value(&replica, "doc-18", "n"), Some(18));
        drop(all_in_use);
        replica
            .change("doc-19", true, |doc| put(doc, "n", 19))
            .unwrap();
        assert_eq!(
            replica.cached_count(),
            16,
            "idle again, the cache shrinks back"
        );
    }

    /// Ten writers waiting together share the disk's syncs, and none is answered before a
    /// sync covering its write has completed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_writes_share_syncs_and_return_once_synced() {
        let memory = Arc::new(MemoryStore::new());
        memory.set_sync_delay(std::time::Duration::from_millis(50));
        let store: Arc<dyn Store> = memory.clone();
        let replica = Arc::new(replica_on(&store));

        let writers: Vec<_> = (0..10)
            .map(|i| {
                let (replica, memory) = (replica.clone(), memory.clone());
                tokio::spawn(async move {
                    let changed = replica.change_unsynced(&format!("doc-{i}"), true, |doc| {
                        known_nothing(put(doc, "n", i))
                    })?;
                    let seq = changed.seq.expect("a new document is a change");
                    replica.durable(seq).await?;
                    let (_, through) = memory.syncs();
                    assert!(
                        through >= seq,
                        "answered at {seq} with the disk synced to {through}"
                    );
                    Ok::<_, ReplicaError>(())
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }

        let (completed, through) = memory.syncs();
        assert_eq!(through, 10);
        assert!(completed < 5, "ten writers took {completed} syncs");
    }

    /// Sessions and feeds hear of a deferred write only once it is on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferred_write_is_published_only_once_synced() {
        let memory = Arc::new(MemoryStore::new());
        memory.set_sync_delay(std::time::Duration::from_millis(300));
        let store: Arc<dyn Store> = memory.clone();
        let replica = Arc::new(replica_on(&store));
        let published = replica.subscribe();
        let (syncs_before, _) = memory.syncs();

        let seq = replica
            .change_unsynced("doc", true, |doc| known_nothing(put(doc, "n", 1)))
            .unwrap()
            .seq
            .unwrap();
        let waiting = tokio::spawn({
            let replica = replica.clone();
            async move { replica.durable(seq).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            *published.borrow(),
            0,
            "published while the sync was running"
        );
        assert!(!waiting.is_finished());

        waiting.await.unwrap().unwrap();
        assert_eq!(*published.borrow(), seq);
        assert_eq!(memory.syncs(), (syncs_before + 1, seq));
    }

    /// A failed sync is reported to the writer waiting on it, naming the disk's error; the
    /// write stays stored, and a later wait makes it durable once the disk works again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_is_reported_and_loses_nothing() {
        let memory = Arc::new(MemoryStore::new());
        let store: Arc<dyn Store> = memory.clone();
        let replica = Arc::new(replica_on(&store));
        memory.set_syncs_fail(true);

        let seq = replica
            .change_unsynced("doc", true, |doc| known_nothing(put(doc, "n", 1)))
            .unwrap()
            .seq
            .unwrap();
        let error = replica.durable(seq).await.unwrap_err().to_string();
        assert!(
            error.contains("disk sync failed") && error.contains("the disk failed"),
            "{error}"
        );
        assert_eq!(value(&replica, "doc", "n"), Some(1));

        memory.set_syncs_fail(false);
        assert_eq!(value(&replica_on(&store), "doc", "n"), Some(1));
        let (syncs_before, _) = memory.syncs();
        replica.durable(seq).await.unwrap();
        assert_eq!(memory.syncs(), (syncs_before + 1, seq));
        assert_eq!(*replica.subscribe().borrow(), seq);
    }

    /// Chunks stored out of causal order (a change before the one it depends on) load in one
    /// piece, and a change whose dependency is missing is left out, as loading chunk by chunk
    /// did.
    #[test]
    fn chunks_out_of_order_or_missing_a_dependency_load_as_before() {
        let mut doc = Automerge::new();
        put(&mut doc, "n", 1).unwrap();
        let first = doc.save();
        let after_first = doc.get_heads();
        put(&mut doc, "n", 2).unwrap();
        let second = doc.save_after(&after_first);
        let after_second = doc.get_heads();
        put(&mut doc, "n", 3).unwrap();
        let third = doc.save_after(&after_second);

        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        for chunk in [&first, &third, &second] {
            store.append("doc", chunk, b"{}").unwrap();
        }
        let reader = replica_on(&store);
        assert_eq!(
            reader.read("doc", Automerge::get_heads).unwrap(),
            Some(doc.get_heads())
        );
        assert_eq!(value(&reader, "doc", "n"), Some(3));

        // A change whose dependency is missing altogether: the document holds the rest.
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        for chunk in [&first, &third] {
            store.append("doc", chunk, b"{}").unwrap();
        }
        let reader = replica_on(&store);
        assert_eq!(
            reader.read("doc", Automerge::get_heads).unwrap(),
            Some(after_first)
        );
        assert_eq!(value(&reader, "doc", "n"), Some(1));
    }
}
