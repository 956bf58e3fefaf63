//! [`RocksStore`]: the durable [`Store`] on one RocksDB instance. It owns the column families,
//! their key layouts and the sequence-number watermark; what the bytes mean is left to callers.
//!
//! Key layouts (all integers big-endian, so byte order is numeric order):
//!
//! | column family | key                                   | value                          |
//! |---------------|---------------------------------------|--------------------------------|
//! | `snapshots`   | doc                                   | through seq (8) ‖ snapshot     |
//! | `chunks`      | doc ‖ 0x00 ‖ seq (8)                  | change chunk                   |
//! | `changelog`   | seq (8)                               | doc                            |
//! | `docseq`      | doc                                   | latest seq (8)                 |
//! | `summaries`   | doc                                   | summary                        |
//! | `peers`       | len(peer) (4) ‖ peer ‖ 0x00           | cursor seq (8)                 |
//! | `peers`       | len(peer) (4) ‖ peer ‖ 0x01 ‖ doc     | encoded sync state             |
//! | `peers`       | len(peer) (4) ‖ peer ‖ 0x02           | peer's log end seq (8)         |
//! | `meta`        | 'i' ‖ key (internal) or 'u' ‖ key     | value                          |
//!
//! Document ids are arbitrary strings, so a chunk key's doc part may itself contain 0x00;
//! readers therefore accept a chunk key only if its length is exactly `doc + 9`, which no
//! other document's key can match. Peer keys are length-prefixed for the same reason and so
//! that forgetting a peer is one range delete.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, Cache, ColumnFamily, ColumnFamilyDescriptor,
    CompactOptions, DB, DBCompressionType, Direction, Env, FlushOptions, IteratorMode, Options,
    ReadOptions, SliceTransform, WriteBatch, WriteOptions,
};

use super::{ChangeEntry, Failure, PeerLog, Seq, Store, StoreError, StoredDoc};

const CF_SNAPSHOTS: &str = "snapshots";
const CF_CHUNKS: &str = "chunks";
const CF_CHANGELOG: &str = "changelog";
const CF_DOCSEQ: &str = "docseq";
const CF_SUMMARIES: &str = "summaries";
const CF_PEERS: &str = "peers";
const CF_META: &str = "meta";
const COLUMN_FAMILIES: [&str; 7] = [
    CF_SNAPSHOTS,
    CF_CHUNKS,
    CF_CHANGELOG,
    CF_DOCSEQ,
    CF_SUMMARIES,
    CF_PEERS,
    CF_META,
];

/// Namespaces inside `meta`: the store's own keys cannot be read or overwritten through
/// [`Store::put_meta`], and [`Store::meta_prefix`] never lists them.
const META_INTERNAL: u8 = b'i';
const META_USER: u8 = b'u';
const META_STORE_ID: &str = "store_id";
const META_FORMAT: &str = "format";
/// Bumped whenever a key layout above changes; a folder written in another format is refused
/// rather than misread.
const FORMAT_VERSION: &[u8] = b"1";

const PEER_CURSOR: u8 = 0x00;
const PEER_STATE: u8 = 0x01;
const PEER_LOG_END: u8 = 0x02;

/// Sized for a small office PC: the working set is a few thousand documents, and RocksDB's
/// defaults (64 MiB per memtable, per column family) would reserve far more memory than the
/// data needs.
const WRITE_BUFFER_BYTES: usize = 8 << 20;
const TOTAL_WRITE_BUFFER_BYTES: usize = 48 << 20;
const BLOCK_CACHE_BYTES: usize = 32 << 20;
/// The share of a memtable's memory given to its bloom filter.
const MEMTABLE_BLOOM_RATIO: f64 = 0.05;
/// Rarely written column families (`meta`, `peers`) would otherwise pin old WAL files until
/// their memtable fills; capping the WAL forces them to flush.
const MAX_WAL_BYTES: u64 = 64 << 20;
/// A column family holding more table files than this, all together smaller than
/// [`MERGE_AT_OPEN_BYTES`], is merged into one at open (see `RocksStore::merge_small_files`).
const SMALL_FILES_PER_FAMILY: usize = 8;
const MERGE_AT_OPEN_BYTES: u64 = 16 << 20;

/// The durable store. Cheap to share behind an `Arc`; every method may block on disk I/O.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    store_id: String,
    seqs: SeqTracker,
    wal: Wal,
    failure: Failure,
}

/// Whether writes go through RocksDB's write-ahead log. Only [`Wal::Disabled`]'s one caller,
/// the fault harness's negative control, ever turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wal {
    Enabled,
    /// Writes land in the memtable only: a kill -9 loses everything not yet flushed.
    Disabled,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("store_id", &self.store_id)
            .field("last_seq", &self.seqs.visible())
            .field("wal", &self.wal)
            .finish_non_exhaustive()
    }
}

impl RocksStore {
    /// Opens the store in `path`, creating the folder, the column families and the store id
    /// on first use, and recovers the next sequence number from the change log.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Wal::Enabled)
    }

    /// UNSAFE: opens the store with RocksDB's write-ahead log disabled, so an acknowledged
    /// write lives only in memory until a memtable flush, and a kill -9 loses it.
    ///
    /// This exists only for the negative control of the fault harness (`linkage-faults
    /// --negative-control`, `tests/FAULTS.md`): the durability check run against this store
    /// must report loss, which proves the check can fail. A node opens it only when started
    /// with `LINKAGE_UNSAFE_NO_WAL=1`, and says so at error level. Never use it for data that
    /// matters.
    pub fn open_unsafe_without_wal(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Wal::Disabled)
    }

    fn open_with(path: &Path, wal: Wal) -> Result<Self, StoreError> {
        let open_error = |detail: String| StoreError::Open {
            path: path.display().to_string(),
            detail,
        };
        // `create_dir_all` on a file says only "File exists".
        if path.exists() && !path.is_dir() {
            return Err(open_error(
                "it is a file, not a folder: give a folder of its own (it is made if missing)"
                    .into(),
            ));
        }
        std::fs::create_dir_all(path).map_err(|e| open_error(e.to_string()))?;
        // Without `CURRENT` RocksDB takes the folder for a new store: it writes a `CURRENT`
        // and a manifest, refuses the open over the old log it then finds, and the next open
        // succeeds on an empty store and deletes that log with every write it held.
        if !path.join("CURRENT").exists() && holds_store_data(path) {
            return Err(open_error(format!(
                "{DAMAGED}: its CURRENT file is missing, though the folder holds a store's log or table files; nothing was changed in it"
            )));
        }

        let (db_options, cf_options, chunk_options) =
            options().map_err(|e| open_error(e.to_string()))?;
        let descriptors = COLUMN_FAMILIES.iter().map(|name| {
            let options = if *name == CF_CHUNKS {
                chunk_options.clone()
            } else {
                cf_options.clone()
            };
            ColumnFamilyDescriptor::new(*name, options)
        });
        let db = DB::open_cf_descriptors(&db_options, path, descriptors).map_err(|e| {
            // RocksDB's own words ("While lock file: …/LOCK: Resource temporarily unavailable")
            // do not say that another node or hub holds the folder.
            let detail = e.to_string();
            if detail.contains("/LOCK") {
                open_error(format!(
                    "the folder is in use (another node or hub has it open): {detail}"
                ))
            } else if detail.starts_with("Corruption") {
                open_error(format!("{DAMAGED} ({detail})"))
            } else {
                open_error(detail)
            }
        })?;

        let mut store = RocksStore {
            db,
            path: path.to_path_buf(),
            store_id: String::new(),
            seqs: SeqTracker::new(0),
            wal,
            failure: Failure::new(),
        };
        store.store_id = store.init_meta().map_err(|e| open_error(e.to_string()))?;
        let last = store
            .last_logged_seq()
            .map_err(|e| open_error(e.to_string()))?;
        store.seqs = SeqTracker::new(last);
        store
            .merge_small_files()
            .map_err(|e| open_error(e.to_string()))?;
        // A store reopened after a crash replayed its write-ahead log as the operating system
        // still held it; synced now, so what the replica publishes at open is on disk.
        store.sync().map_err(|e| open_error(e.to_string()))?;
        store
            .flush_replayed_logs()
            .map_err(|e| open_error(e.to_string()))?;
        tracing::info!(path = %path.display(), store_id = %store.store_id, last_seq = last, "store opened");
        Ok(store)
    }

    /// The open kept what it replayed from write-ahead logs in memory (`options`), and with it
    /// the logs: each restart left one more, deleted only once every column family's memtable
    /// is written out, which a quiet office might not do for weeks (a break-test counted 203
    /// files after 200 restarts). With more than one log present, every column family is
    /// flushed now, in RocksDB's background threads: the open does not wait for it, and the
    /// old logs go once it is done.
    ///
    /// Each such flush leaves a small table file per family written since the last one
    /// ([`RocksStore::merge_small_files`] keeps their number bounded).
    fn flush_replayed_logs(&self) -> Result<(), StoreError> {
        let logs = std::fs::read_dir(&self.path)
            .map_err(|e| StoreError::Engine(format!("list write-ahead logs: {e}")))?
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
            .count();
        if logs <= 1 {
            return Ok(());
        }
        let families = COLUMN_FAMILIES
            .iter()
            .map(|name| self.cf(name))
            .collect::<Result<Vec<_>, _>>()?;
        let mut background = FlushOptions::default();
        background.set_wait(false);
        self.db
            .flush_cfs_opt(&families, &background)
            .map_err(engine("flush replayed write-ahead logs"))
    }

    /// Merges, before the store serves, each column family that holds more than
    /// [`SMALL_FILES_PER_FAMILY`] table files in under [`MERGE_AT_OPEN_BYTES`].
    ///
    /// A restart after a kill flushes what it replayed into one small file per family
    /// (`flush_replayed_logs`). RocksDB moves a file that overlaps nothing below it to the
    /// bottom level whole and never merges it there: the change log's keys only increase, and
    /// a quiet office's few new records rarely overlap, so the files piled up, one per family
    /// per restart (a break-test counted 137 in the change log's family after 150 restarts,
    /// and every one stays open). Merging a family this small reads and writes a few
    /// megabytes at most; a larger one's new files overlap its old ones, and RocksDB's own
    /// compactions merge them.
    fn merge_small_files(&self) -> Result<(), StoreError> {
        let mut families: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
        for file in self.db.live_files().map_err(engine("list table files"))? {
            let (files, bytes) = families.entry(file.column_family_name).or_default();
            *files += 1;
            *bytes += file.size as u64;
        }
        for family in COLUMN_FAMILIES {
            let Some(&(files, bytes)) = families.get(family) else {
                continue;
            };
            if files <= SMALL_FILES_PER_FAMILY || bytes >= MERGE_AT_OPEN_BYTES {
                continue;
            }
            let started = std::time::Instant::now();
            // The crate's call reports no error: a merge that fails leaves the files as they
            // were, and the next open tries again.
            // Forced: by default a manual compaction leaves the bottom level's files as they
            // are (only a compaction filter would change them), which is where these sit.
            let mut merge = CompactOptions::default();
            merge.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
            self.db
                .compact_range_cf_opt(self.cf(family)?, None::<&[u8]>, None::<&[u8]>, &merge);
            tracing::info!(
                family,
                files,
                bytes,
                ms = started.elapsed().as_millis() as u64,
                "merged small table files"
            );
        }
        Ok(())
    }

    /// Checks the on-disk format and returns the store id, writing both on first open.
    fn init_meta(&self) -> Result<String, StoreError> {
        let meta = self.cf(CF_META)?;
        let format_key = meta_key(META_INTERNAL, META_FORMAT);
        let id_key = meta_key(META_INTERNAL, META_STORE_ID);

        match self
            .db
            .get_cf(meta, &format_key)
            .map_err(engine("read format"))?
        {
            Some(format) if format != FORMAT_VERSION => {
                return Err(StoreError::Corrupt {
                    what: "store format".into(),
                    detail: format!(
                        "folder holds format {:?}, this build reads {:?}",
                        String::from_utf8_lossy(&format),
                        String::from_utf8_lossy(FORMAT_VERSION)
                    ),
                });
            }
            _ => {}
        }
        if let Some(id) = self
            .db
            .get_cf(meta, &id_key)
            .map_err(engine("read store id"))?
        {
            return String::from_utf8(id).map_err(|e| corrupt("store id", e));
        }

        let id = uuid::Uuid::new_v4().to_string();
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, &format_key, FORMAT_VERSION);
        batch.put_cf(meta, &id_key, id.as_bytes());
        self.write(batch, "create store id")?;
        Ok(id)
    }

    /// The highest sequence number in the change log. The log keeps each document's latest
    /// entry and nothing is ever removed without a higher entry replacing it, so its last key
    /// is the last sequence number ever written.
    fn last_logged_seq(&self) -> Result<Seq, StoreError> {
        let changelog = self.cf(CF_CHANGELOG)?;
        match self.db.iterator_cf(changelog, IteratorMode::End).next() {
            None => Ok(0),
            Some(item) => {
                let (key, _) = item.map_err(engine("read change log"))?;
                decode_seq(&key, "change log key")
            }
        }
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Engine(format!("column family {name} is missing")))
    }

    /// Writes `batch` and returns once it is in the synced WAL.
    fn write(&self, batch: WriteBatch, what: &str) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        match self.wal {
            Wal::Enabled => options.set_sync(true),
            Wal::Disabled => options.disable_wal(true),
        }
        self.db.write_opt(batch, &options).map_err(|e| {
            self.failure
                .record(StoreError::Engine(format!("{what}: {e}")))
        })
    }

    /// Writes `batch` to the WAL without waiting for the disk: for sync bookkeeping, where
    /// losing the latest writes in a power cut only makes the next session resend a little.
    fn write_unsynced(&self, batch: WriteBatch, what: &str) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.disable_wal(self.wal == Wal::Disabled);
        self.db.write_opt(batch, &options).map_err(|e| {
            self.failure
                .record(StoreError::Engine(format!("{what}: {e}")))
        })
    }

    /// Takes the next seq and writes the append under it; the seq becomes visible once the
    /// write returns.
    fn append_with(
        &self,
        doc: &str,
        chunk: &[u8],
        summary: &[u8],
        synced: bool,
    ) -> Result<Seq, StoreError> {
        let ticket = self.seqs.begin();
        let seq = ticket.seq;
        self.write_append(doc, seq, chunk, summary, synced)?;
        drop(ticket);
        Ok(seq)
    }

    fn write_append(
        &self,
        doc: &str,
        seq: Seq,
        chunk: &[u8],
        summary: &[u8],
        synced: bool,
    ) -> Result<(), StoreError> {
        let changelog = self.cf(CF_CHANGELOG)?;
        let docseq = self.cf(CF_DOCSEQ)?;
        // No race with another append of `doc`: callers serialise appends per document.
        let previous = self
            .db
            .get_cf(docseq, doc)
            .map_err(engine("read document seq"))?
            .map(|bytes| decode_seq(&bytes, "document seq"))
            .transpose()?;

        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_CHUNKS)?, chunk_key(doc, seq), chunk);
        batch.put_cf(self.cf(CF_SUMMARIES)?, doc, summary);
        if let Some(previous) = previous {
            batch.delete_cf(changelog, previous.to_be_bytes());
        }
        batch.put_cf(changelog, seq.to_be_bytes(), doc);
        batch.put_cf(docseq, doc, seq.to_be_bytes());
        if synced {
            self.write(batch, "append chunk")
        } else {
            self.write_unsynced(batch, "append chunk")
        }
    }

    /// Writes `snapshot` over the chunks it replaces in one batch; synced or not.
    fn compact_with(
        &self,
        doc: &str,
        snapshot: &[u8],
        through: Seq,
        synced: bool,
    ) -> Result<(), StoreError> {
        let snapshots = self.cf(CF_SNAPSHOTS)?;
        // A snapshot covering a later seq already replaced chunks this one lacks; writing the
        // older one over it would lose those changes.
        if let Some((stored, _)) = self.read_snapshot(doc, &ReadOptions::default())?
            && stored > through
        {
            tracing::debug!(
                doc,
                stored,
                through,
                "compaction skipped: newer snapshot stored"
            );
            return Ok(());
        }
        let mut replaced = Vec::new();
        let end = through.checked_add(1);
        self.scan_chunks(doc, ReadOptions::default(), 0, end, |seq, _| {
            replaced.push(seq);
        })?;

        let mut batch = WriteBatch::default();
        batch.put_cf(snapshots, doc, encode_snapshot(through, snapshot));
        let chunks = self.cf(CF_CHUNKS)?;
        for seq in replaced {
            batch.delete_cf(chunks, chunk_key(doc, seq));
        }
        if synced {
            self.write(batch, "compact document")
        } else {
            self.write_unsynced(batch, "compact document")
        }
    }

    /// Visits the chunks of `doc` with sequence numbers in `from..to`, in order, reading
    /// through `read` (which may carry a snapshot). Values are lent, not copied, so a caller
    /// that needs only the seqs (compaction) does not copy every chunk.
    fn scan_chunks(
        &self,
        doc: &str,
        mut read: ReadOptions,
        from: Seq,
        to: Option<Seq>,
        mut visit: impl FnMut(Seq, &[u8]),
    ) -> Result<(), StoreError> {
        let start = chunk_key(doc, from);
        read.set_iterate_lower_bound(start.clone());
        read.set_iterate_upper_bound(match to {
            Some(to) => chunk_key(doc, to),
            None => chunk_prefix_end(doc),
        });

        let mut cursor = self.db.raw_iterator_cf_opt(self.cf(CF_CHUNKS)?, read);
        cursor.seek(&start);
        while let (Some(key), Some(value)) = (cursor.key(), cursor.value()) {
            // A longer key belongs to a document whose id starts with `doc` and 0x00.
            if key.len() == doc.len() + 9 {
                visit(decode_seq(&key[doc.len() + 1..], "chunk key")?, value);
            }
            cursor.next();
        }
        cursor.status().map_err(engine("read chunks"))
    }

    fn read_snapshot(
        &self,
        doc: &str,
        read: &ReadOptions,
    ) -> Result<Option<(Seq, Vec<u8>)>, StoreError> {
        self.db
            .get_cf_opt(self.cf(CF_SNAPSHOTS)?, doc, read)
            .map_err(engine("read snapshot"))?
            .map(|value| decode_snapshot(&value))
            .transpose()
    }
}

impl Store for RocksStore {
    fn store_id(&self) -> String {
        self.store_id.clone()
    }

    fn failure(&self) -> &Failure {
        &self.failure
    }

    fn append(&self, doc: &str, chunk: &[u8], summary: &[u8]) -> Result<Seq, StoreError> {
        // The seq is taken under a short lock and the synced write runs outside it, so
        // concurrent appends reach RocksDB together and share one WAL sync.
        self.append_with(doc, chunk, summary, true)
    }

    fn append_unsynced(&self, doc: &str, chunk: &[u8], summary: &[u8]) -> Result<Seq, StoreError> {
        self.append_with(doc, chunk, summary, false)
    }

    fn sync(&self) -> Result<(), StoreError> {
        if self.wal == Wal::Disabled {
            return Ok(());
        }
        self.db.flush_wal(true).map_err(|e| {
            self.failure
                .record(StoreError::Engine(format!("sync the write-ahead log: {e}")))
        })
    }

    fn load(&self, doc: &str) -> Result<Option<StoredDoc>, StoreError> {
        // One RocksDB snapshot for both reads, so a compaction landing in between cannot make
        // us return the old snapshot without the chunks it replaced.
        let snapshot = self.db.snapshot();
        let mut read = ReadOptions::default();
        read.set_snapshot(&snapshot);
        let base = self.read_snapshot(doc, &read)?;

        let mut read = ReadOptions::default();
        read.set_snapshot(&snapshot);
        let mut chunks = Vec::new();
        self.scan_chunks(doc, read, 0, None, |_, chunk| chunks.push(chunk.to_vec()))?;

        if base.is_none() && chunks.is_empty() {
            return Ok(None);
        }
        Ok(Some(StoredDoc {
            snapshot: base.map(|(_, bytes)| bytes),
            chunks,
        }))
    }

    fn compact(&self, doc: &str, snapshot: &[u8], through: Seq) -> Result<(), StoreError> {
        self.compact_with(doc, snapshot, through, true)
    }

    fn compact_unsynced(&self, doc: &str, snapshot: &[u8], through: Seq) -> Result<(), StoreError> {
        self.compact_with(doc, snapshot, through, false)
    }

    fn last_assigned_seq(&self) -> Seq {
        self.seqs.assigned()
    }

    fn changed_since(&self, after: Seq, limit: usize) -> Result<Vec<ChangeEntry>, StoreError> {
        // The watermark is read before the iterator is created: every entry at or below it is
        // already written, and an entry moved past it by a later append reappears above it,
        // where a reader's cursor cannot yet be.
        let visible = self.seqs.visible();
        if after >= visible || limit == 0 {
            return Ok(Vec::new());
        }
        let start = (after + 1).to_be_bytes();
        let mut read = ReadOptions::default();
        if let Some(end) = visible.checked_add(1) {
            read.set_iterate_upper_bound(end.to_be_bytes());
        }
        let mode = IteratorMode::From(&start, Direction::Forward);

        let mut entries = Vec::new();
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_CHANGELOG)?, read, mode)
            .take(limit)
        {
            let (key, value) = item.map_err(engine("read change log"))?;
            let seq = decode_seq(&key, "change log key")?;
            let doc = String::from_utf8(value.into_vec())
                .map_err(|e| corrupt(&format!("change log entry {seq}"), e))?;
            entries.push(ChangeEntry { seq, doc });
        }
        Ok(entries)
    }

    fn last_seq(&self) -> Seq {
        self.seqs.visible()
    }

    fn summary(&self, doc: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.cf(CF_SUMMARIES)?, doc)
            .map_err(engine("read summary"))
    }

    fn summaries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut all = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_SUMMARIES)?, IteratorMode::Start)
        {
            let (key, value) = item.map_err(engine("read summaries"))?;
            let doc = String::from_utf8(key.into_vec()).map_err(|e| corrupt("summary key", e))?;
            all.push((doc, value.into_vec()));
        }
        Ok(all)
    }

    fn peer_state(&self, peer: &str, doc: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.cf(CF_PEERS)?, peer_state_key(peer, doc))
            .map_err(engine("read peer sync state"))
    }

    fn put_peer_state(&self, peer: &str, doc: &str, state: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_PEERS)?, peer_state_key(peer, doc), state);
        self.write_unsynced(batch, "write peer sync state")
    }

    fn put_peer_states(&self, peer: &str, states: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        if states.is_empty() {
            return Ok(());
        }
        let cf = self.cf(CF_PEERS)?;
        let mut batch = WriteBatch::default();
        for (doc, state) in states {
            batch.put_cf(cf, peer_state_key(peer, doc), state);
        }
        self.write_unsynced(batch, "write peer sync states")
    }

    fn cursor(&self, peer: &str) -> Result<Seq, StoreError> {
        let mut key = peer_prefix(peer);
        key.push(PEER_CURSOR);
        match self
            .db
            .get_cf(self.cf(CF_PEERS)?, key)
            .map_err(engine("read peer cursor"))?
        {
            Some(bytes) => decode_seq(&bytes, "peer cursor"),
            None => Ok(0),
        }
    }

    fn put_cursor(&self, peer: &str, seq: Seq) -> Result<(), StoreError> {
        let mut key = peer_prefix(peer);
        key.push(PEER_CURSOR);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_PEERS)?, key, seq.to_be_bytes());
        self.write_unsynced(batch, "write peer cursor")
    }

    fn peer_log(&self, peer: &str) -> Result<PeerLog, StoreError> {
        let mut key = peer_prefix(peer);
        key.push(PEER_LOG_END);
        match self
            .db
            .get_cf(self.cf(CF_PEERS)?, key)
            .map_err(engine("read peer log end"))?
        {
            Some(bytes) => decode_peer_log(&bytes),
            None => Ok(PeerLog::default()),
        }
    }

    fn put_peer_log(&self, peer: &str, log: &PeerLog) -> Result<(), StoreError> {
        let mut key = peer_prefix(peer);
        key.push(PEER_LOG_END);
        let mut value = log.end.to_be_bytes().to_vec();
        value.extend_from_slice(log.name.as_bytes());
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_PEERS)?, key, value);
        self.write_unsynced(batch, "write peer log end")
    }

    fn forget_peer(&self, peer: &str) -> Result<(), StoreError> {
        // Every key of the peer lies in [prefix ‖ 0x00, prefix ‖ 0x03): the cursor, all its
        // sync states and its log end, and no other peer's keys thanks to the length prefix.
        let mut from = peer_prefix(peer);
        let mut to = from.clone();
        from.push(PEER_CURSOR);
        to.push(PEER_LOG_END + 1);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_PEERS)?, from, to);
        self.write(batch, "forget peer")
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.cf(CF_META)?, meta_key(META_USER, key))
            .map_err(engine("read metadata"))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, meta_key(META_USER, key), value);
        self.write(batch, "write metadata")
    }

    fn put_metas_unsynced(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let meta = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        for (key, value) in entries {
            batch.put_cf(meta, meta_key(META_USER, key), value);
        }
        self.write_unsynced(batch, "write metadata")
    }

    fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_META)?, meta_key(META_USER, key));
        self.write(batch, "delete metadata")
    }

    fn meta_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = meta_key(META_USER, prefix);
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_META)?, mode) {
            let (key, value) = item.map_err(engine("read metadata"))?;
            if !key.starts_with(&start) {
                break;
            }
            let key =
                String::from_utf8(key[1..].to_vec()).map_err(|e| corrupt("metadata key", e))?;
            entries.push((key, value.into_vec()));
        }
        Ok(entries)
    }

    fn disk_bytes(&self) -> u64 {
        folder_bytes(&self.path)
    }
}

/// Hands out sequence numbers and tracks which are still being written, so readers see a
/// seq only once every smaller one has finished (the trait's visibility rule).
#[derive(Debug)]
struct SeqTracker {
    state: Mutex<SeqState>,
}

#[derive(Debug)]
struct SeqState {
    /// The last seq handed out.
    assigned: Seq,
    /// Seqs handed out whose write has not finished.
    in_flight: BTreeSet<Seq>,
    /// Every seq at or below this has finished writing (successfully or not).
    visible: Seq,
}

/// A seq being written; finishing it (on drop, so an error or panic cannot stall the
/// watermark) lets the watermark move past it.
struct SeqTicket<'a> {
    tracker: &'a SeqTracker,
    seq: Seq,
}

impl SeqTracker {
    fn new(last: Seq) -> Self {
        SeqTracker {
            state: Mutex::new(SeqState {
                assigned: last,
                in_flight: BTreeSet::new(),
                visible: last,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SeqState> {
        // Every critical section leaves the state consistent before anything can panic, so a
        // poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(&self) -> SeqTicket<'_> {
        let mut state = self.lock();
        state.assigned += 1;
        let seq = state.assigned;
        state.in_flight.insert(seq);
        SeqTicket { tracker: self, seq }
    }

    fn finish(&self, seq: Seq) {
        let mut state = self.lock();
        state.in_flight.remove(&seq);
        state.visible = match state.in_flight.first() {
            Some(oldest) => oldest - 1,
            None => state.assigned,
        };
    }

    fn visible(&self) -> Seq {
        self.lock().visible
    }

    fn assigned(&self) -> Seq {
        self.lock().assigned
    }
}

impl Drop for SeqTicket<'_> {
    fn drop(&mut self) {
        self.tracker.finish(self.seq);
    }
}

/// The database's options, every column family's but `chunks`, and those of `chunks`.
fn options() -> Result<(Options, Options, Options), rocksdb::Error> {
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    // Most reads are point lookups by document id (snapshot, docseq, summary, peer state).
    table.set_bloom_filter(10.0, false);

    let mut cf = Options::default();
    cf.set_write_buffer_size(WRITE_BUFFER_BYTES);
    cf.set_max_write_buffer_number(2);
    cf.set_compression_type(DBCompressionType::Lz4);
    cf.set_level_compaction_dynamic_level_bytes(true);
    cf.set_block_based_table_factory(&table);
    // A bloom filter over the memtable's keys too: a lookup of a key the memtable does not
    // hold (a record written before the last flush) probes one cache line instead of walking
    // the skip list, whose nodes lie on pages of their own, each slow to touch on these
    // virtual machines once it has been left alone for a second.
    cf.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
    cf.set_memtable_whole_key_filtering(true);

    // A document's chunks are read by a seek to its first key, never by a point lookup, and
    // a seek without a filter visits every table file: blooms over the document part of the
    // key (`doc ‖ 0x00`) let a load skip the files that hold none of its chunks. Files
    // written before this (or under another extractor's name) are read unfiltered.
    let mut chunk_table = BlockBasedOptions::default();
    chunk_table.set_block_cache(&cache);
    chunk_table.set_bloom_filter(10.0, false);
    chunk_table.set_whole_key_filtering(false);
    let mut chunks = cf.clone();
    chunks.set_prefix_extractor(SliceTransform::create(
        "linkage.chunk_doc",
        chunk_doc_part,
        Some(is_chunk_key),
    ));
    chunks.set_block_based_table_factory(&chunk_table);

    let mut db = cf.clone();
    db.create_if_missing(true);
    db.create_missing_column_families(true);
    db.set_db_write_buffer_size(TOTAL_WRITE_BUFFER_BYTES);
    db.set_max_total_wal_size(MAX_WAL_BYTES);
    db.set_max_background_jobs(2);
    // Writers waiting for a group commit's leader block instead of spinning first: with more
    // writers than cores (an office's callers, a hub's sessions), the spinning took CPU from
    // the leader.
    db.set_enable_write_thread_adaptive_yield(false);
    db.set_keep_log_file_num(4);
    db.set_max_log_file_size(4 << 20);
    // After a crash RocksDB replays the write-ahead log into memtables; by default it then
    // writes them out as small table files (compressed and synced) before the open returns.
    // Kept in memory instead, and flushed in the background once the store is open
    // (`flush_replayed_logs`), a node killed mid-work serves again sooner: 20–50 ms less
    // before it listens on a busy two-core office machine. The crate has no setter for this
    // option; its options-string parser does.
    let mut db = db.get_options_from_string("avoid_flush_during_recovery=true")?;
    // Compactions run at the lowest CPU priority: on an office PC or a small hub, a compaction
    // after a burst of writes (a new office's first sync lays down thousands of records)
    // took a quarter of the node's CPU while it answered the next sync. They still run
    // whenever a core is free, and RocksDB slows writes if they fall behind. Flushes keep
    // their priority. The environment is the process's default one, shared by its stores.
    let mut env = Env::new()?;
    env.lower_thread_pool_cpu_priority();
    db.set_env(&env);
    // A write-ahead log damaged before its end is refused at open. RocksDB's default replays
    // it up to the damage and opens without a word, every acknowledged write after it gone (a
    // break-test's node came back with 72 of its 78 records). A record cut short at the very
    // end, which is what a crash or a power cut leaves of a write not yet acknowledged, is
    // still dropped quietly.
    db.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
    Ok((db, cf, chunks))
}

/// What a refused open of a damaged store says, whatever the damage.
const DAMAGED: &str = "the store is damaged (a disk fault, or its files changed while it was stopped), and opening it anyway would lose what the damaged part holds: restore the folder from a copy, or start on an empty folder (a node then gets back from the hub what it holds; a hub refills from the nodes, started with --refill-from-nodes)";

/// Whether `folder` holds a store's write-ahead log or table files (`*.log`, `*.sst`; RocksDB's
/// own text log is `LOG`).
fn holds_store_data(folder: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        path.is_file()
            && path
                .extension()
                .is_some_and(|extension| extension == "log" || extension == "sst")
    })
}

/// The document part of a chunk key (`doc ‖ 0x00`): RocksDB's prefix for the `chunks` blooms.
fn chunk_doc_part(key: &[u8]) -> &[u8] {
    &key[..key.len().saturating_sub(8)]
}

/// Whether `key` can be a chunk key (`doc ‖ 0x00 ‖ seq`), so that it has a document part.
fn is_chunk_key(key: &[u8]) -> bool {
    key.len() >= 9
}

fn engine(what: &'static str) -> impl Fn(rocksdb::Error) -> StoreError {
    move |e| StoreError::Engine(format!("{what}: {e}"))
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
        detail: detail.to_string(),
    }
}

/// Reads an 8-byte big-endian sequence number, refusing any other length.
fn decode_seq(bytes: &[u8], what: &str) -> Result<Seq, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| {
        corrupt(
            what,
            format!("expected an 8-byte seq, found {} bytes", bytes.len()),
        )
    })?;
    Ok(Seq::from_be_bytes(array))
}

/// A peer's log end then its name (stores written before logs were named hold the end alone).
fn decode_peer_log(bytes: &[u8]) -> Result<PeerLog, StoreError> {
    let Some((end, name)) = bytes.split_first_chunk::<8>() else {
        return Err(corrupt(
            "peer log end",
            format!("expected an 8-byte seq, found {} bytes", bytes.len()),
        ));
    };
    let name = std::str::from_utf8(name).map_err(|e| corrupt("peer log name", e))?;
    Ok(PeerLog {
        end: Seq::from_be_bytes(*end),
        name: name.to_owned(),
    })
}

fn encode_snapshot(through: Seq, snapshot: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + snapshot.len());
    value.extend_from_slice(&through.to_be_bytes());
    value.extend_from_slice(snapshot);
    value
}

fn decode_snapshot(value: &[u8]) -> Result<(Seq, Vec<u8>), StoreError> {
    let Some((through, snapshot)) = value.split_at_checked(8) else {
        return Err(corrupt(
            "snapshot",
            format!("value of {} bytes lacks its seq", value.len()),
        ));
    };
    Ok((decode_seq(through, "snapshot seq")?, snapshot.to_vec()))
}

fn chunk_key(doc: &str, seq: Seq) -> Vec<u8> {
    let mut key = Vec::with_capacity(doc.len() + 9);
    key.extend_from_slice(doc.as_bytes());
    key.push(0x00);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The first key after every chunk key of `doc` (and of documents extending `doc` ‖ 0x00).
fn chunk_prefix_end(doc: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(doc.len() + 1);
    key.extend_from_slice(doc.as_bytes());
    key.push(0x01);
    key
}

fn peer_prefix(peer: &str) -> Vec<u8> {
    // Peer ids are node or hub ids, far below 4 GiB; saturating keeps the layout total anyway.
    let len = u32::try_from(peer.len()).unwrap_or(u32::MAX);
    let mut key = Vec::with_capacity(4 + peer.len() + 1);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(peer.as_bytes());
    key
}

fn peer_state_key(peer: &str, doc: &str) -> Vec<u8> {
    let mut key = peer_prefix(peer);
    key.push(PEER_STATE);
    key.extend_from_slice(doc.as_bytes());
    key
}

fn meta_key(namespace: u8, key: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + key.len());
    bytes.push(namespace);
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

/// Sums file sizes under `path`: SST files, WAL, manifest and RocksDB's own logs, i.e. what
/// the operator sees with `du`. Unreadable entries count as zero rather than failing a
/// statistic.
fn folder_bytes(path: &Path) -> u64 {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot measure store folder");
            return 0;
        }
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => folder_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_seq_rejects_truncated_bytes() {
        let truncated = &7u64.to_be_bytes()[..5];
        assert!(matches!(
            decode_seq(truncated, "change log key"),
            Err(StoreError::Corrupt { what, .. }) if what == "change log key"
        ));
        assert!(matches!(
            decode_seq(&[], "document seq"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_seq(&[0; 9], "document seq"),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(decode_seq(&7u64.to_be_bytes(), "x").unwrap(), 7);
    }

    /// A log end written before logs were named (8 bytes) reads as unnamed; a truncated one
    /// or a name that is not UTF-8 is corrupt.
    #[test]
    fn decode_peer_log_reads_old_values_and_rejects_bad_ones() {
        let old = decode_peer_log(&9u64.to_be_bytes()).unwrap();
        assert_eq!((old.end, old.name.as_str()), (9, ""));
        let mut named = 9u64.to_be_bytes().to_vec();
        named.extend_from_slice(b"log-2");
        assert_eq!(decode_peer_log(&named).unwrap().name, "log-2");
        assert!(matches!(
            decode_peer_log(&[0; 5]),
            Err(StoreError::Corrupt { what, .. }) if what == "peer log end"
        ));
        named.push(0xff);
        assert!(matches!(
            decode_peer_log(&named),
            Err(StoreError::Corrupt { what, .. }) if what == "peer log name"
        ));
    }

    #[test]
    fn decode_snapshot_rejects_value_shorter_than_its_seq() {
        assert!(matches!(
            decode_snapshot(&[0, 0, 1]),
            Err(StoreError::Corrupt { .. })
        ));
        let value = encode_snapshot(42, b"base");
        assert_eq!(decode_snapshot(&value).unwrap(), (42, b"base".to_vec()));
        assert_eq!(
            decode_snapshot(&encode_snapshot(3, b"")).unwrap(),
            (3, Vec::new())
        );
    }

    #[test]
    fn watermark_waits_for_the_oldest_seq_in_flight() {
        let tracker = SeqTracker::new(10);
        let a = tracker.begin();
        let b = tracker.begin();
        let c = tracker.begin();
        assert_eq!((a.seq, b.seq, c.seq), (11, 12, 13));

        drop(c);
        assert_eq!(tracker.visible(), 10, "13 done but 11 and 12 still writing");
        drop(a);
        assert_eq!(tracker.visible(), 11);
        let d = tracker.begin();
        drop(b);
        assert_eq!(
            tracker.visible(),
            13,
            "14 in flight holds the watermark at 13"
        );
        drop(d);
        assert_eq!(tracker.visible(), 14);
    }

    /// A load seeks with the `chunks` blooms, which cover only the document part of a key:
    /// every chunk of a document still comes back, in order, from the memtable and from
    /// several table files, although the chunks of a document whose id extends it with NULs
    /// sort between them (`a` ‖ 0x00 ‖ seq 256 < `a\0…\x01` ‖ 0x00 ‖ … < `a` ‖ 0x00 ‖ seq 257).
    #[test]
    fn a_documents_chunks_load_whole_from_every_file_beside_a_nul_extended_document() {
        let dir = tempfile::TempDir::new().unwrap();
        let extended = "a\0\0\0\0\0\0\0\x01";
        let chunk = |doc: &str, n: usize| format!("{doc}:{n}").into_bytes();
        let mut written = (Vec::new(), Vec::new());
        {
            let store = RocksStore::open(dir.path()).unwrap();
            let flush = || store.db.flush_cf(store.cf(CF_CHUNKS).unwrap()).unwrap();
            for n in 0..200 {
                store.append("a", &chunk("a", n), b"{}").unwrap();
                written.0.push(chunk("a", n));
            }
            for n in 0..5 {
                store.append(extended, &chunk("x", n), b"{}").unwrap();
                written.1.push(chunk("x", n));
            }
            flush();
            for n in 200..300 {
                store.append("a", &chunk("a", n), b"{}").unwrap();
                written.0.push(chunk("a", n));
            }
            flush();
            for n in 300..303 {
                store.append("a", &chunk("a", n), b"{}").unwrap();
                written.0.push(chunk("a", n));
            }
            assert_eq!(store.load("a").unwrap().unwrap().chunks, written.0);
            assert_eq!(store.load(extended).unwrap().unwrap().chunks, written.1);
            assert!(store.load("a\0").unwrap().is_none());
        }

        let reopened = RocksStore::open(dir.path()).unwrap();
        assert_eq!(reopened.load("a").unwrap().unwrap().chunks, written.0);
        assert_eq!(reopened.load(extended).unwrap().unwrap().chunks, written.1);
    }

    /// Table files written before the `chunks` family had blooms over the document part
    /// (no prefix extractor) are read in full: a store from an older build loses nothing.
    #[test]
    fn chunks_in_files_written_without_the_blooms_still_load() {
        let dir = tempfile::TempDir::new().unwrap();
        drop(RocksStore::open(dir.path()).unwrap());
        {
            // As an older build opened the folder: every family with the same options.
            let (mut db_options, cf_options, _) = options().unwrap();
            db_options.create_if_missing(false);
            let descriptors = COLUMN_FAMILIES
                .iter()
                .map(|name| ColumnFamilyDescriptor::new(*name, cf_options.clone()));
            let db = DB::open_cf_descriptors(&db_options, dir.path(), descriptors).unwrap();
            let chunks = db.cf_handle(CF_CHUNKS).unwrap();
            // Positions past the log's end (these writes bypass it), so the appends below,
            // numbered from 1, add chunks instead of overwriting these.
            for seq in [101, 103] {
                db.put_cf(chunks, chunk_key("a", seq), format!("a{seq}"))
                    .unwrap();
            }
            db.put_cf(chunks, chunk_key("b", 102), "b102").unwrap();
            db.flush_cf(chunks).unwrap();
            db.put_cf(chunks, chunk_key("a", 104), "a104").unwrap();
        }

        // Reopened with the blooms; a new chunk lands in a file that has them.
        let store = RocksStore::open(dir.path()).unwrap();
        store.append("a", b"a-new", b"{}").unwrap();
        store.db.flush_cf(store.cf(CF_CHUNKS).unwrap()).unwrap();
        let chunks = |doc: &str| {
            store
                .load(doc)
                .unwrap()
                .unwrap()
                .chunks
                .into_iter()
                .map(|chunk| String::from_utf8(chunk).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(chunks("a"), ["a-new", "a101", "a103", "a104"]);
        assert_eq!(chunks("b"), ["b102"]);
    }

    #[test]
    fn chunk_keys_of_a_nul_extended_doc_are_skipped_by_length() {
        let key = chunk_key("a\0b", 1);
        assert!(key.starts_with(&chunk_key("a", 0)[..2]));
        assert_ne!(key.len(), "a".len() + 9);
    }
}
