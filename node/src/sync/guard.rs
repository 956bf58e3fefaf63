//! What a peer's sync message may carry, checked before Automerge acts on it. Automerge 0.12
//! trusts the counts and parameters inside the bytes it parses, so a few hundred bytes from a
//! peer can make it divide by zero, reserve gigabytes, inflate a deflate bomb or replay an
//! operation 2^40 times. [`check_message`] walks the message's chunks with its own bounded
//! parser and refuses, naming what was wrong, anything past the limits below; only a message
//! that passes reaches `receive_sync_message`.
//!
//! The walk reads the chunk framing and column layout of the Automerge binary format
//! (<https://alexjg.github.io/automerge-storage-docs/>) and counts rows from run lengths
//! without expanding them, so it costs in proportion to the bytes received, never to what they
//! claim. It does not validate what Automerge validates itself (checksums, actor indices, the
//! meaning of each column); it only makes sure that work stays bounded.

use std::io::Read;

use automerge::sync::Message;
use automerge::{Change, ChangeHash};
use sha2::{Digest, Sha256};

/// Inflated bytes one message may carry: the largest document a replica holds.
pub const MAX_INFLATED_BYTES: usize = crate::replica::MAX_DOCUMENT_BYTES;
/// Rows (operations, or changes in a document's change columns) any one column of a message
/// may hold. A record is a few hundred operations and a busy one a few thousand; this leaves
/// room for years of events while keeping a message's in-memory cost to tens of megabytes.
pub const MAX_ROWS: u64 = 1 << 20;
/// Change hashes in `heads`, `need`, `have.last_sync`, and dependencies of one change.
pub const MAX_HASHES: usize = 4096;
/// Automerge sends one `have`; a few leave room for other implementations.
pub const MAX_HAVES: usize = 16;
/// Bloom filter parameters. Automerge uses 10 bits per entry and 7 probes; the probe count is
/// a loop bound and a `Vec::with_capacity` inside Automerge, and zero bits per entry makes it
/// divide by zero.
pub const MAX_BLOOM_BITS_PER_ENTRY: u64 = 64;
pub const MAX_BLOOM_PROBES: u64 = 64;
/// Actor ids are an organisation id and 16 random bytes; Automerge's own are 16 bytes.
pub const MAX_ACTOR_BYTES: u64 = 256;
pub const MAX_ACTORS: u64 = 1024;
/// Columns of one chunk; Automerge writes about twenty.
pub const MAX_COLUMNS: u64 = 64;
/// Chunks in one message.
pub const MAX_CHUNKS: usize = 100_000;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED_CHANGE: u8 = 2;
const CHUNK_BUNDLE: u8 = 3;
const COLUMN_DEFLATE: u32 = 0b1000;
const HASH_BYTES: usize = 32;

/// Why a sync message was refused. Each variant names the part of the message at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("sync message lists {count} {what}, over the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: u64,
        limit: u64,
    },
    #[error("bloom filter {index} has {field} {value}, outside 1..={limit}")]
    Bloom {
        index: usize,
        field: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("chunk {chunk} is malformed: {detail}")]
    Malformed { chunk: usize, detail: String },
    #[error("chunk {chunk} is a bundle; bundles are not accepted over sync")]
    Bundle { chunk: usize },
    #[error("chunk {chunk} inflates past {limit} bytes")]
    Inflated { chunk: usize, limit: usize },
    #[error(
        "chunk {chunk} column {column:#x} holds more than {limit} rows (operations or changes)"
    )]
    TooManyRows {
        chunk: usize,
        column: u32,
        limit: u64,
    },
}

/// Refuses a message whose parts would make Automerge's work unbounded.
pub fn check_message(message: &Message) -> Result<Checked, GuardError> {
    count("heads", message.heads.len(), MAX_HASHES)?;
    count("needed hashes", message.need.len(), MAX_HASHES)?;
    count("haves", message.have.len(), MAX_HAVES)?;
    for (index, have) in message.have.iter().enumerate() {
        count("last-sync hashes", have.last_sync.len(), MAX_HASHES)?;
        check_bloom(index, &have.bloom.to_bytes())?;
    }
    let mut budget = Budget::default();
    for blob in message.changes.iter() {
        check_chunks(blob, &mut budget)?;
    }
    Ok(Checked {
        deflated: budget.deflated,
    })
}

/// What the guard learnt of a message it let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Some chunk or column came deflated, so the bytes as sent are smaller than the plain
    /// encoding peers measure a record by (the replica's size limit).
    pub deflated: bool,
}

fn count(what: &'static str, count: usize, limit: usize) -> Result<(), GuardError> {
    if count > limit {
        return Err(GuardError::TooMany {
            what,
            count: count as u64,
            limit: limit as u64,
        });
    }
    Ok(())
}

/// A bloom filter's bytes as Automerge writes them: nothing when empty, else entries, bits per
/// entry, probes (each LEB128) and the bits.
fn check_bloom(index: usize, bytes: &[u8]) -> Result<(), GuardError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let malformed = |detail: String| GuardError::Malformed {
        chunk: index,
        detail: format!("bloom filter: {detail}"),
    };
    let mut input = Input::new(bytes);
    let entries = input.uleb().map_err(malformed)?;
    let bits_per_entry = input.uleb().map_err(malformed)?;
    let probes = input.uleb().map_err(malformed)?;
    if entries == 0 {
        return Ok(());
    }
    for (field, value, limit) in [
        ("bits per entry", bits_per_entry, MAX_BLOOM_BITS_PER_ENTRY),
        ("probes", probes, MAX_BLOOM_PROBES),
    ] {
        if !(1..=limit).contains(&value) {
            return Err(GuardError::Bloom {
                index,
                field,
                value,
                limit,
            });
        }
    }
    Ok(())
}

/// What one message has spent so far.
#[derive(Debug, Default)]
struct Budget {
    chunks: usize,
    inflated: usize,
    deflated: bool,
}

/// Walks a blob of concatenated chunks: a V1 message carries one change per blob, a V2 message
/// one blob of changes or a whole document.
fn check_chunks(blob: &[u8], budget: &mut Budget) -> Result<(), GuardError> {
    let mut input = Input::new(blob);
    while !input.is_empty() {
        budget.chunks += 1;
        let chunk = budget.chunks;
        count("chunks", chunk, MAX_CHUNKS)?;
        let malformed = |detail: String| GuardError::Malformed { chunk, detail };

        let magic = input.take(4).map_err(malformed)?;
        if magic != MAGIC {
            return Err(malformed(
                "it does not start with Automerge's magic bytes".into(),
            ));
        }
        input.take(4).map_err(malformed)?;
        let kind = input.take(1).map_err(malformed)?[0];
        let len = input.uleb().map_err(malformed)?;
        let data = input.take_len(len).map_err(malformed)?;
        match kind {
            CHUNK_DOCUMENT => check_document(chunk, data, budget)?,
            CHUNK_CHANGE => check_change(chunk, data)?,
            CHUNK_COMPRESSED_CHANGE => {
                let inflated = inflate(chunk, data, budget)?;
                check_change(chunk, &inflated)?;
            }
            CHUNK_BUNDLE => return Err(GuardError::Bundle { chunk }),
            other => return Err(malformed(format!("unknown chunk type {other}"))),
        }
    }
    Ok(())
}

/// A change chunk: dependencies, actor, seq, start op, time, message, other actors, then the
/// op columns (never deflated inside a change).
fn check_change(chunk: usize, data: &[u8]) -> Result<(), GuardError> {
    let malformed = |detail: String| GuardError::Malformed { chunk, detail };
    let mut input = Input::new(data);
    let deps = input.uleb().map_err(malformed)?;
    limit("dependencies", deps, MAX_HASHES as u64)?;
    input
        .take_len(deps * HASH_BYTES as u64)
        .map_err(malformed)?;
    actor(&mut input).map_err(malformed)?;
    input.uleb().map_err(malformed)?;
    input.uleb().map_err(malformed)?;
    input.sleb().map_err(malformed)?;
    let message = input.uleb().map_err(malformed)?;
    input.take_len(message).map_err(malformed)?;
    let actors = input.uleb().map_err(malformed)?;
    limit("actors", actors, MAX_ACTORS)?;
    for _ in 0..actors {
        actor(&mut input).map_err(malformed)?;
    }
    let columns = column_layout(&mut input).map_err(malformed)?;
    for (spec, len) in columns {
        let bytes = input.take_len(len).map_err(malformed)?;
        if spec & COLUMN_DEFLATE != 0 {
            return Err(malformed(format!(
                "column {spec:#x} of a change is deflated"
            )));
        }
        check_rows(chunk, spec, bytes)?;
    }
    Ok(())
}

/// A document chunk: actors, heads, the layouts of the change and op columns, then their data,
/// any column possibly deflated.
fn check_document(chunk: usize, data: &[u8], budget: &mut Budget) -> Result<(), GuardError> {
    let malformed = |detail: String| GuardError::Malformed { chunk, detail };
    let mut input = Input::new(data);
    let actors = input.uleb().map_err(malformed)?;
    limit("actors", actors, MAX_ACTORS)?;
    for _ in 0..actors {
        actor(&mut input).map_err(malformed)?;
    }
    let heads = input.uleb().map_err(malformed)?;
    limit("heads", heads, MAX_HASHES as u64)?;
    input
        .take_len(heads * HASH_BYTES as u64)
        .map_err(malformed)?;
    let change_columns = column_layout(&mut input).map_err(malformed)?;
    let op_columns = column_layout(&mut input).map_err(malformed)?;
    for (spec, len) in change_columns.into_iter().chain(op_columns) {
        let bytes = input.take_len(len).map_err(malformed)?;
        if spec & COLUMN_DEFLATE != 0 {
            let inflated = inflate(chunk, bytes, budget)?;
            check_rows(chunk, spec, &inflated)?;
        } else {
            check_rows(chunk, spec, bytes)?;
        }
    }
    Ok(())
}

/// The heads a blob declares if it is exactly one document chunk whose checksum holds: what
/// an office stores a hub's first offer under without loading it (`sync::session`). `None` for
/// anything else (changes, several chunks, a wrong checksum), which is then applied through
/// Automerge as usual. Automerge's own load checks the same checksum, and that the operations
/// make these heads; the second check is left to the document's first load, the bytes having
/// passed the hub's load and gate (see ARCHITECTURE.md, "Sync").
pub fn whole_document_heads(blob: &[u8]) -> Option<Vec<ChangeHash>> {
    let mut input = Input::new(blob);
    let chunk = next_sound_chunk(&mut input)?;
    if chunk.kind != CHUNK_DOCUMENT || !input.is_empty() {
        return None;
    }

    let mut header = Input::new(chunk.data);
    let actors = header.uleb().ok()?;
    for _ in 0..actors {
        actor(&mut header).ok()?;
    }
    let heads = header.uleb().ok()?;
    hashes(&mut header, heads)
}

/// One change as its chunk declares it: its hash (the SHA-256 of the chunk, which is what
/// Automerge calls the change) and the changes it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeLink {
    pub hash: ChangeHash,
    pub deps: Vec<ChangeHash>,
}

/// The changes `blobs` carry, in order, if every chunk in them is a plain change chunk whose
/// checksum holds: what an office appends a hub's changes to a record by without loading it
/// (`sync::session`), once it has checked that they follow from what it holds. `None` for
/// anything else (a document, a compressed change, a wrong checksum), which is then applied
/// through Automerge as usual.
pub fn change_links<'a>(blobs: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<ChangeLink>> {
    let mut links = Vec::new();
    for blob in blobs {
        let mut input = Input::new(blob);
        while !input.is_empty() {
            let chunk = next_sound_chunk(&mut input)?;
            if chunk.kind != CHUNK_CHANGE {
                return None;
            }
            let mut header = Input::new(chunk.data);
            let deps = header.uleb().ok()?;
            links.push(ChangeLink {
                hash: ChangeHash::try_from(chunk.digest.as_slice()).ok()?,
                deps: hashes(&mut header, deps)?,
            });
        }
    }
    Some(links)
}

/// The changes `blobs` carry, parsed, if every chunk in them is a plain change chunk whose
/// checksum holds; `None` for anything else. What the hub reads a node's changes by before it
/// applies them, to see whether the record before them need be read at all
/// ([`crate::record::doc::body_field_puts`]).
pub fn plain_changes<'a>(blobs: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<Change>> {
    let mut changes = Vec::new();
    for blob in blobs {
        let mut input = Input::new(blob);
        while !input.is_empty() {
            let start = input.bytes;
            let chunk = next_sound_chunk(&mut input)?;
            if chunk.kind != CHUNK_CHANGE {
                return None;
            }
            let whole = &start[..start.len() - input.bytes.len()];
            changes.push(Change::from_bytes(whole.to_vec()).ok()?);
        }
    }
    Some(changes)
}

/// A chunk whose checksum holds: its type, its contents, and the SHA-256 of its type, length
/// and contents (a change's hash; its first four bytes are the checksum).
struct Chunk<'a> {
    kind: u8,
    data: &'a [u8],
    digest: sha2::digest::Output<Sha256>,
}

/// The next chunk of `input`, `None` if it is cut short or its checksum does not hold.
fn next_sound_chunk<'a>(input: &mut Input<'a>) -> Option<Chunk<'a>> {
    if input.take(4).ok()? != MAGIC {
        return None;
    }
    let checksum = input.take(4).ok()?;
    let hashed = input.bytes;
    let kind = input.take(1).ok()?[0];
    let len = input.uleb().ok()?;
    let data = input.take_len(len).ok()?;
    let digest = Sha256::digest(&hashed[..hashed.len() - input.bytes.len()]);
    (digest[..4] == *checksum).then_some(Chunk { kind, data, digest })
}

/// `count` change hashes read from `input`.
fn hashes(input: &mut Input<'_>, count: u64) -> Option<Vec<ChangeHash>> {
    let bytes = input.take_len(count.checked_mul(HASH_BYTES as u64)?).ok()?;
    bytes
        .chunks_exact(HASH_BYTES)
        .map(|hash| ChangeHash::try_from(hash).ok())
        .collect()
}

fn limit(what: &'static str, value: u64, limit: u64) -> Result<(), GuardError> {
    if value > limit {
        return Err(GuardError::TooMany {
            what,
            count: value,
            limit,
        });
    }
    Ok(())
}

fn actor(input: &mut Input<'_>) -> Result<(), String> {
    let len = input.uleb()?;
    if len > MAX_ACTOR_BYTES {
        return Err(format!(
            "an actor id of {len} bytes is over {MAX_ACTOR_BYTES}"
        ));
    }
    input.take_len(len)?;
    Ok(())
}

/// A column layout: a count, then (specification, byte length) per column.
fn column_layout(input: &mut Input<'_>) -> Result<Vec<(u32, u64)>, String> {
    let columns = input.uleb()?;
    if columns > MAX_COLUMNS {
        return Err(format!("{columns} columns, over {MAX_COLUMNS}"));
    }
    let mut layout = Vec::new();
    for _ in 0..columns {
        let spec = u32::try_from(input.uleb()?)
            .map_err(|_| "a column specification does not fit 32 bits".to_owned())?;
        layout.push((spec, input.uleb()?));
    }
    Ok(layout)
}

/// Inflates a deflated chunk or column, refusing once the message's inflated total passes
/// [`MAX_INFLATED_BYTES`].
fn inflate(chunk: usize, bytes: &[u8], budget: &mut Budget) -> Result<Vec<u8>, GuardError> {
    let room = MAX_INFLATED_BYTES.saturating_sub(budget.inflated);
    let mut inflated = Vec::new();
    flate2::bufread::DeflateDecoder::new(bytes)
        .take(room as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| GuardError::Malformed {
            chunk,
            detail: format!("deflated data does not inflate: {e}"),
        })?;
    if inflated.len() > room {
        return Err(GuardError::Inflated {
            chunk,
            limit: MAX_INFLATED_BYTES,
        });
    }
    budget.inflated += inflated.len();
    budget.deflated = true;
    Ok(inflated)
}

/// Counts a column's rows from its run lengths, without expanding any run. Value columns are
/// raw bytes whose rows the metadata column counts; they are bounded by their length.
fn check_rows(chunk: usize, spec: u32, bytes: &[u8]) -> Result<(), GuardError> {
    let malformed = |detail: String| GuardError::Malformed {
        chunk,
        detail: format!("column {spec:#x}: {detail}"),
    };
    let mut input = Input::new(bytes);
    let mut rows: u64 = 0;
    let mut add = |n: u64| -> Result<(), GuardError> {
        rows = rows.saturating_add(n);
        if rows > MAX_ROWS {
            return Err(GuardError::TooManyRows {
                chunk,
                column: spec,
                limit: MAX_ROWS,
            });
        }
        Ok(())
    };
    match spec & 0b111 {
        COLUMN_VALUE => {}
        COLUMN_BOOLEAN => {
            while !input.is_empty() {
                add(input.uleb().map_err(malformed)?)?;
            }
        }
        kind => {
            while !input.is_empty() {
                let run = input.sleb().map_err(malformed)?;
                if run > 0 {
                    add(run.unsigned_abs())?;
                    skip_value(&mut input, kind).map_err(malformed)?;
                } else if run < 0 {
                    add(run.unsigned_abs())?;
                    for _ in 0..run.unsigned_abs() {
                        skip_value(&mut input, kind).map_err(malformed)?;
                    }
                } else {
                    add(input.uleb().map_err(malformed)?)?;
                }
            }
        }
    }
    Ok(())
}

const COLUMN_DELTA: u32 = 3;
const COLUMN_BOOLEAN: u32 = 4;
const COLUMN_STRING: u32 = 5;
const COLUMN_VALUE: u32 = 7;

/// Skips one value of a run-length-encoded column of type `kind`.
fn skip_value(input: &mut Input<'_>, kind: u32) -> Result<(), String> {
    match kind {
        COLUMN_DELTA => input.sleb().map(drop),
        COLUMN_STRING => {
            let len = input.uleb()?;
            input.take_len(len).map(drop)
        }
        _ => input.uleb().map(drop),
    }
}

/// A cursor over bytes from a peer: every read is bounds-checked and reports what ran out.
struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let Some((head, rest)) = self.bytes.split_at_checked(n) else {
            return Err(format!("{n} bytes expected, {} left", self.bytes.len()));
        };
        self.bytes = rest;
        Ok(head)
    }

    fn take_len(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| format!("a length of {n} bytes"))?;
        self.take(n)
    }

    /// An unsigned LEB128 of at most 64 bits.
    fn uleb(&mut self) -> Result<u64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("a LEB128 number overflows 64 bits".into());
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a LEB128 number overflows 64 bits".into())
    }

    /// A signed LEB128 of at most 64 bits.
    fn sleb(&mut self) -> Result<i64, String> {
        let mut value: i64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= i64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                if shift < 57 && byte & 0x40 != 0 {
                    value |= -1i64 << (shift + 7);
                }
                return Ok(value);
            }
        }
        Err("a LEB128 number overflows 64 bits".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uleb(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn leb128_reads_what_automerge_writes() {
        let mut bytes = uleb(300);
        bytes.extend(uleb(u64::MAX));
        bytes.extend([0x7f, 0x80, 0x7f]); // -1, then -128
        let mut input = Input::new(&bytes);
        assert_eq!(input.uleb().unwrap(), 300);
        assert_eq!(input.uleb().unwrap(), u64::MAX);
        assert_eq!(input.sleb().unwrap(), -1);
        assert_eq!(input.sleb().unwrap(), -128);
        assert!(input.is_empty());
        assert!(Input::new(&[0xff; 11]).uleb().is_err(), "overlong");
        assert!(Input::new(&[0x80]).uleb().is_err(), "truncated");
    }

    #[test]
    fn a_run_of_two_to_the_forty_operations_is_refused_by_its_count() {
        let mut column = vec![];
        // sLEB 2^40: a run of that many copies of the next value.
        let mut n: i64 = 1 << 40;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 && byte & 0x40 == 0 {
                column.push(byte);
                break;
            }
            column.push(byte | 0x80);
        }
        column.push(1);
        assert!(matches!(
            check_rows(1, 0x42, &column),
            Err(GuardError::TooManyRows { .. })
        ));
        // A null run says its length in a uLEB after a zero.
        let mut nulls = vec![0];
        nulls.extend(uleb(u64::MAX));
        assert!(matches!(
            check_rows(1, 0x42, &nulls),
            Err(GuardError::TooManyRows { .. })
        ));
        assert!(matches!(
            check_rows(1, 0x44, &uleb(MAX_ROWS + 1)),
            Err(GuardError::TooManyRows { .. })
        ));
        assert_eq!(
            check_rows(1, 0x42, &[0x7d, 1, 2, 3]),
            Ok(()),
            "literal run of 3"
        );
    }

    #[test]
    fn bloom_with_zero_bits_or_a_billion_probes_is_refused() {
        assert_eq!(check_bloom(0, &[]), Ok(()));
        assert!(matches!(
            check_bloom(0, &[1, 0, 7]),
            Err(GuardError::Bloom {
                field: "bits per entry",
                ..
            })
        ));
        let mut huge = vec![1, 10];
        huge.extend(uleb(u64::from(u32::MAX)));
        huge.push(0xff);
        assert!(matches!(
            check_bloom(0, &huge),
            Err(GuardError::Bloom {
                field: "probes",
                ..
            })
        ));
        assert_eq!(check_bloom(0, &[1, 10, 7, 0, 0]), Ok(()));
    }

    /// A document of two concurrent changes, so it has two heads.
    fn document_of_two_heads() -> automerge::Automerge {
        use automerge::transaction::Transactable;
        let mut doc = automerge::Automerge::new();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(automerge::ROOT, "title", "first")
        })
        .unwrap();
        let mut other = doc.fork();
        for (copy, value) in [(&mut doc, "by one office"), (&mut other, "by another")] {
            copy.transact::<_, _, automerge::AutomergeError>(|tx| {
                tx.put(automerge::ROOT, "title", value)
            })
            .unwrap();
        }
        doc.merge(&mut other).unwrap();
        doc
    }

    #[test]
    fn a_saved_document_declares_its_heads() {
        let doc = document_of_two_heads();
        let mut heads = doc.get_heads();
        heads.sort();
        assert_eq!(heads.len(), 2);
        for saved in [doc.save_nocompress(), doc.save()] {
            let mut declared = whole_document_heads(&saved).expect("one document chunk");
            declared.sort();
            assert_eq!(declared, heads);
        }
    }

    #[test]
    fn only_one_document_chunk_with_its_checksum_declares_heads() {
        let doc = document_of_two_heads();
        let saved = doc.save_nocompress();

        let mut damaged = saved.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(
            whole_document_heads(&damaged),
            None,
            "checksum no longer holds"
        );
        let mut wrong_sum = saved.clone();
        wrong_sum[4] ^= 1;
        assert_eq!(
            whole_document_heads(&wrong_sum),
            None,
            "checksum itself changed"
        );

        let mut two = saved.clone();
        two.extend(doc.get_changes(&[]).last().unwrap().raw_bytes());
        assert_eq!(
            whole_document_heads(&two),
            None,
            "a change after the document"
        );
        let change = doc.get_changes(&[])[0].raw_bytes().to_vec();
        assert_eq!(whole_document_heads(&change), None, "a change chunk");
        assert_eq!(
            whole_document_heads(&saved[..saved.len() - 1]),
            None,
            "cut short"
        );
        assert_eq!(whole_document_heads(&[]), None);
    }

    /// Every change's hash and dependencies, as Automerge computes them, whether the changes
    /// come one per blob (a V1 message) or several in one.
    #[test]
    fn change_chunks_declare_their_hashes_and_dependencies() {
        let doc = document_of_two_heads();
        let changes = doc.get_changes(&[]);
        let expected: Vec<ChangeLink> = changes
            .iter()
            .map(|change| ChangeLink {
                hash: change.hash(),
                deps: change.deps().to_vec(),
            })
            .collect();
        assert_eq!(expected.len(), 3, "a first change and two on it");

        let one_per_blob: Vec<&[u8]> = changes.iter().map(|c| c.raw_bytes()).collect();
        assert_eq!(
            change_links(one_per_blob.iter().copied()),
            Some(expected.clone())
        );
        let together: Vec<u8> = one_per_blob.concat();
        assert_eq!(change_links([together.as_slice()]), Some(expected));
    }

    #[test]
    fn only_plain_change_chunks_with_their_checksums_declare_links() {
        let doc = document_of_two_heads();
        let change = doc.get_changes(&[])[1].raw_bytes().to_vec();

        let mut damaged = change.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(
            change_links([damaged.as_slice()]),
            None,
            "checksum no longer holds"
        );
        assert_eq!(
            change_links([doc.save_nocompress().as_slice()]),
            None,
            "a document"
        );
        let mut then_document = change.clone();
        then_document.extend(doc.save_nocompress());
        assert_eq!(
            change_links([then_document.as_slice()]),
            None,
            "a document after a change"
        );
        assert_eq!(
            change_links([&change[..change.len() - 1]]),
            None,
            "cut short"
        );

        // A change past Automerge's threshold is sent compressed (chunk type 2): its hash is
        // of the inflated bytes, which this does not inflate to find.
        use automerge::transaction::Transactable;
        let mut long = automerge::Automerge::new();
        long.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(automerge::ROOT, "text", "x".repeat(4096))
        })
        .unwrap();
        let mut compressed = long.get_changes(&[]).remove(0);
        let bytes = compressed.bytes().to_vec();
        assert_eq!(bytes[8], CHUNK_COMPRESSED_CHANGE, "Automerge compressed it");
        assert_eq!(change_links([bytes.as_slice()]), None);
        assert_eq!(change_links(std::iter::empty()), Some(Vec::new()));
    }
}
