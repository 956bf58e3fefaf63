//! One sync session with one peer, the same on both ends: push every record that changed in
//! the local change log since the cursor the peer confirmed, run Automerge's sync protocol per
//! record, apply what the peer sends after the local [`Gate`] admits it.
//!
//! Invariant: the cursor kept for a peer only moves past a change-log entry once the peer's
//! reported heads include every head the record had when it was offered, so a message that
//! was generated but never delivered is offered again on the next session.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use automerge::sync::{BloomFilter, Capability, ChunkList, Have, Message, State, SyncDoc};
use automerge::{Automerge, Change, ChangeMetadata, ReadDoc};
use futures::{FutureExt, Stream, StreamExt};
use linkage_proto::v1::{
    DocSync, MessageEncoding, OfferedRecord, Progress, Rejected, SyncFrame, sync_frame::Frame,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, instrument, warn};

use super::{MAX_FRAME_BYTES, SyncError, deflate, guard};
use crate::record::doc::{self, DocError};
use crate::record::{MAX_RECORD_ID_BYTES, Record};
use crate::replica::{Known, Replica, ReplicaError, Summary};
use crate::store::{PeerLog, Seq};
use crate::workflow::RuleViolation;

/// Received messages carrying changes from which a batch is taken in on two threads.
const TWO_THREAD_CHANGES: usize = 16;

/// How many records may be offered and unconfirmed at once. Enough to keep a slow link busy,
/// few enough that a reconnect re-offers little.
const WINDOW: usize = 256;
/// How many frames that have already arrived are handled in one trip to the store.
const FRAMES_PER_TRIP: usize = 64;
/// How many change-log entries one scan reads.
const SCAN_BATCH: usize = 512;
/// How many a scan reads while the peer has no offer in hand: a small first batch reaches
/// it, and keeps it busy, while the rest are prepared.
const FIRST_SCAN_BATCH: usize = 16;
/// At most this many records' worth of reads and unsynced writes make a short trip to the
/// store, run on the session's own task ([`trip`]).
const SHORT_TRIP_RECORDS: usize = 4;
/// At most this many answers without changes (acknowledgements, heads) make a short trip.
const SHORT_TRIP_ANSWERS: usize = 16;
/// How often each side tells the other how much it still has to push.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long an offer may wait for the peer's answer before it is made again.
const OFFER_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a session with offers in flight writes its peer's cursor.
const CURSOR_SAVE_EVERY: Duration = Duration::from_secs(1);

/// What the local side lets through to and from this peer.
pub trait Gate: Send + Sync + std::fmt::Debug + 'static {
    /// May this record be offered to (or its changes be sent to) the peer?
    fn may_offer(&self, summary: &Summary) -> bool;

    /// Admits the changes a peer sent for record `id`: `before` is what is known of the local
    /// copy as it read before them, `after` the document with the changes applied, `added`
    /// the new changes. Returns the record `after` holds if the gate read it, so the replica
    /// need not read it again. On a refusal the changed document is dropped, and the replica
    /// reloads the record from the store on its next use.
    fn admit(
        &self,
        id: &str,
        before: Before<'_>,
        after: &Automerge,
        added: &[ChangeMetadata<'_>],
    ) -> Result<Option<Record>, RuleViolation>;

    /// Whether [`Gate::admit`] admits every change without looking: then a peer's changes are
    /// applied without reading the record before them and listing the added changes.
    fn admits_everything(&self) -> bool {
        false
    }

    /// The verdict on `changes` to record `id` that only put strings into its body's fields
    /// and leave it reading as `after` (a [`Frontier::take`]: the record is not loaded); the
    /// verdict [`Gate::admit`] would give with the document. `None` if this gate judges only
    /// with the document: the changes then go through Automerge.
    ///
    /// [`Frontier::take`]: crate::record::doc::frontier::Frontier::take
    fn admit_taken(
        &self,
        _id: &str,
        _changes: &[Change],
        _after: &Record,
    ) -> Option<Result<(), RuleViolation>> {
        None
    }
}

/// What a [`Gate`] is told of a record as it read before a peer's changes.
#[derive(Debug, Clone, Copy)]
pub enum Before<'a> {
    /// The record is new to this replica.
    Nothing,
    /// The local copy as it read, or why it does not read as a record.
    Read(Result<&'a Record, &'a DocError>),
    /// The changes did nothing but put scalar values into fields of the body of a record that
    /// read well before them ([`doc::body_field_puts`]): it read as it reads after them but
    /// for those fields.
    BodyFieldsPut,
}

/// The node's gate: the hub is entitled to everything, and the node takes what the hub sends
/// (the hub validated it on the way in).
#[derive(Debug, Default)]
pub struct TrustHub;

impl Gate for TrustHub {
    fn may_offer(&self, _: &Summary) -> bool {
        true
    }

    fn admit(
        &self,
        _: &str,
        _: Before<'_>,
        _: &Automerge,
        _: &[ChangeMetadata<'_>],
    ) -> Result<Option<Record>, RuleViolation> {
        Ok(None)
    }

    fn admits_everything(&self) -> bool {
        true
    }
}

/// A refusal the peer reported for one of our records, kept for the office to see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionNote {
    pub record_id: String,
    pub rule: String,
    pub reason: String,
    pub at_ms: i64,
}

pub const REJECTION_PREFIX: &str = "rejection/";

/// Figures a session publishes while it runs, for `NodeInfo` and the hub's convergence view.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionFigures {
    /// Records offered to the peer and not yet confirmed, plus change-log entries not yet
    /// scanned.
    pub pending_to_peer: u64,
    /// Time the oldest unconfirmed offer was made.
    pub oldest_pending_ms: i64,
    /// What the peer last said it still has to push to us.
    pub peer_pending: u64,
    /// Whether the peer has said it at all in this session. Until it has, what it recorded
    /// while disconnected is unknown, and nobody may call it converged.
    pub peer_reported: bool,
    pub peer_oldest_pending_ms: i64,
    pub last_contact_ms: i64,
    /// Everything in the change log up to here is confirmed by the peer. Ahead of the
    /// persisted cursor by up to [`CURSOR_SAVE_EVERY`] of confirmations.
    pub cursor: Seq,
    pub records_received: u64,
    pub records_rejected: u64,
    /// Records the peer said hold changes this side refused and still lacks (its rejection
    /// notes; they outlive restarts of either side).
    pub peer_refused: u64,
}

pub type FiguresHandle = Arc<std::sync::Mutex<SessionFigures>>;

/// Everything a session needs about its two ends.
#[derive(Debug, Clone)]
pub struct SessionContext {
    pub replica: Arc<Replica>,
    /// The key under which this side keeps the peer's cursor and sync states.
    pub peer_key: String,
    /// The peer's organisation, for logs.
    pub peer_org: String,
    pub gate: Arc<dyn Gate>,
    pub figures: FiguresHandle,
    /// Told when the peer has seen this side's change log reach further than it now does (see
    /// [`LogWatch`]); `None` where nobody outside the session holds positions in the log. A
    /// side with a watch (the hub) also reports its log's new end as soon as it has taken in
    /// the peer's changes, so that an office whose changes a restored copy lacks recognises
    /// the copy, instead of only if a periodic report came before the loss.
    pub log_watch: Option<Arc<dyn LogWatch>>,
    /// Whether a record's offers carry this side's summary of it, so that a peer trusting
    /// this side with every change (an office, its hub) stores a whole document as it came
    /// ([`Replica::adopt`]), or appends changes to a record it has not loaded
    /// ([`Replica::adopt_changes`]), instead of loading the record. The hub sets it; an
    /// office's offers go through the hub's gate, which reads every record anyway.
    pub offer_summaries: bool,
}

/// Who else holds positions in this side's change log: told when a peer has seen the log reach
/// `seen`, past its end `end` now, i.e. the store went back to an older copy and the positions
/// past `end` will name other records. The hub's department feeds are such holders.
pub trait LogWatch: Send + Sync + std::fmt::Debug + 'static {
    /// Called on a blocking thread; may write to the store.
    fn went_back(&self, seen: Seq, end: Seq);

    /// The log's name as peers are told it, renewed when the log went back.
    fn log_name(&self) -> String;

    /// Whether `name` is a log this side replaced: a position a peer saw in it is old news,
    /// not news of the current log. A name this side never gave (a copy restored from before
    /// it renewed the log) is news.
    fn replaced(&self, name: &str) -> bool;
}

#[derive(Debug)]
struct Offer {
    seq: Seq,
    /// When the offer was last sent: a stale one is sent again after [`OFFER_TIMEOUT`].
    offered_at_ms: i64,
    /// When the record was first offered without the peer confirming it since: the operator's
    /// "oldest pending" (a retry moved it forward, so a frozen office looked fresher).
    pending_since_ms: i64,
}

struct Session {
    ctx: SessionContext,
    outbound: mpsc::Sender<SyncFrame>,
    /// Sync states of the records with an exchange open. Once the peer holds all of a record
    /// its state is persisted and dropped from here; the next offer of the record resumes it
    /// from the store ([`resumed`]). Keeping every state a session touched held 10,000 in a
    /// hub session serving a new office.
    states: HashMap<String, State>,
    /// Records offered and awaiting confirmation, by id.
    offers: HashMap<String, Offer>,
    /// The same offers by change-log position, to find the cursor.
    offers_by_seq: BTreeMap<Seq, String>,
    /// How far the change log has been scanned.
    scanned: Seq,
    cursor: Seq,
    /// The cursor as last written to the store, and when.
    saved_cursor: Seq,
    cursor_saved_ms: i64,
    /// Whether the last progress report said nothing was pending (`None` before the first).
    reported_level: Option<bool>,
    /// The peer's change log: the highest end it reported (with the log's name then), and as
    /// last written.
    peer_log: PeerLog,
    saved_peer_log: PeerLog,
    /// Whether this session has forgotten what it kept of the peer (its log went back).
    forgot_peer: bool,
    /// Records with a rejection note: changes of ours the peer refused and still lacks.
    refused: HashSet<String>,
    /// Frames held until the change log is on disk through `hold_through` (0: none held).
    /// Answering a peer's changes tells it this side holds them, so an answer waits for the
    /// disk; and every frame after it waits too, so the peer hears everything in order.
    /// Meanwhile the session goes on taking in the next batch: holding the session for each
    /// batch's sync kept a relay from handing records on until the whole batch was synced.
    held: Vec<SyncFrame>,
    hold_through: Seq,
}

/// Runs a session until the peer closes it or the link fails. The hello exchange is done by
/// the caller, which knows which end it is.
#[instrument(skip_all, fields(org = %ctx.replica.org(), peer = %ctx.peer_key, peer_org = %ctx.peer_org))]
pub async fn run(
    ctx: SessionContext,
    mut inbound: impl Stream<Item = Result<SyncFrame, tonic::Status>> + Unpin,
    outbound: mpsc::Sender<SyncFrame>,
) -> Result<(), SyncError> {
    let replica = ctx.replica.clone();
    let peer = ctx.peer_key.clone();
    let (cursor, peer_log, refused) = blocking(&replica, move |r| {
        let refused = r
            .store()
            .meta_prefix(REJECTION_PREFIX)?
            .into_iter()
            .map(|(key, _)| key[REJECTION_PREFIX.len()..].to_owned())
            .collect();
        Ok((
            r.store().cursor(&peer)?,
            r.store().peer_log(&peer)?,
            refused,
        ))
    })
    .await?;
    info!(cursor, peer_log_end = peer_log.end, "sync session started");
    let mut session = Session {
        ctx,
        outbound,
        states: HashMap::new(),
        offers: HashMap::new(),
        offers_by_seq: BTreeMap::new(),
        scanned: cursor,
        cursor,
        saved_cursor: cursor,
        cursor_saved_ms: 0,
        reported_level: None,
        saved_peer_log: peer_log.clone(),
        peer_log,
        forgot_peer: false,
        refused,
        held: Vec::new(),
        hold_through: 0,
    };
    let mut changes = replica.subscribe();
    let mut progress = tokio::time::interval(PROGRESS_EVERY);

    // The loop ends only with an error (the link or the peer went away); what the peer
    // confirmed since the cursor was last written is written on the way out, if the store
    // still answers.
    let outcome: Result<(), SyncError> = async {
        // The first report goes out before any offer: it says how far this side saw the peer's
        // change log, which the peer checks before it takes anything in (`on_own_log_seen`).
        session.send_progress().await?;
        loop {
            session.scan().await?;
            session.report_if_level_changed().await?;
            tokio::select! {
                frame = inbound.next() => match frame {
                    Some(Ok(frame)) => {
                        // Frames that have already arrived go to the store together: one trip
                        // per frame was most of a busy session's cost.
                        let mut frames = vec![frame];
                        let mut ended = None;
                        while frames.len() < FRAMES_PER_TRIP {
                            match inbound.next().now_or_never() {
                                Some(Some(Ok(frame))) => frames.push(frame),
                                Some(Some(Err(status))) => {
                                    ended = Some(SyncError::from(status));
                                    break;
                                }
                                Some(None) => {
                                    ended = Some(SyncError::Closed);
                                    break;
                                }
                                None => break,
                            }
                        }
                        session.on_frames(frames).await?;
                        if let Some(error) = ended {
                            return Err(error);
                        }
                    }
                    Some(Err(status)) => return Err(status.into()),
                    None => return Err(SyncError::Closed),
                },
                changed = changes.changed() => if changed.is_err() {
                    return Err(SyncError::Closed);
                },
                synced = durable(&replica, session.hold_through), if session.hold_through > 0 => {
                    synced?;
                    session.release_held().await?;
                }
                _ = progress.tick() => {
                    if session.cursor > session.saved_cursor
                        || session.peer_log != session.saved_peer_log
                    {
                        session.save_cursor().await?;
                    }
                    session.retry_stale_offers().await?;
                    session.send_progress().await?;
                }
            }
        }
    }
    .await;
    if (session.cursor > session.saved_cursor || session.peer_log != session.saved_peer_log)
        && let Err(e) = session.save_cursor().await
    {
        debug!(error = %e, "could not write the peer's cursor as the session ended");
    }
    outcome
}

tokio::task_local! {
    /// Present only inside [`run_inline`]: store calls run on the session's own task.
    static INLINE_STORE_CALLS: ();
}

/// Whether this session runs inside [`run_inline`] (the deterministic simulation).
fn simulated() -> bool {
    INLINE_STORE_CALLS.try_with(|_| ()).is_ok()
}

/// [`run`], with every store call made inline on the session's task instead of on tokio's
/// blocking pool. This is the deterministic simulation's seam (`linkage-tests`, `sim`): blocking
/// threads finish in an order no seed controls, so a simulation on a current-thread runtime
/// with paused time runs them inline, while [`run`], the production path, is unchanged. A
/// task-local rather than a [`SessionContext`] field keeps the seam out of every place that
/// builds a context.
pub async fn run_inline(
    ctx: SessionContext,
    inbound: impl Stream<Item = Result<SyncFrame, tonic::Status>> + Unpin,
    outbound: mpsc::Sender<SyncFrame>,
) -> Result<(), SyncError> {
    INLINE_STORE_CALLS
        .scope((), run(ctx, inbound, outbound))
        .await
}

/// A trip to the store, `short` or not. A short one (a few records' reads and unsynced
/// writes: an acknowledgement, the offer of a record or two, the cursor) runs on the session's
/// own task. Handed to a blocking thread, each cost two thread wake-ups: at 2,000 offices,
/// where every change wakes every session for such trips, the hand-offs were half the hub's
/// CPU, and running them here took its CPU per change from 430–526 to 302–332 ms and the p99
/// delivery from 3.8–4.6 to 0.57–2.2 s on a busy machine. A trip that may take long (changes to apply,
/// check and make durable with a disk sync; many records) goes to the blocking pool, so
/// it never holds up the other sessions sharing this thread.
async fn trip<R: Send + 'static>(
    replica: &Arc<Replica>,
    short: bool,
    f: impl FnOnce(&Replica) -> Result<R, SyncError> + Send + 'static,
) -> Result<R, SyncError> {
    if !short {
        return blocking(replica, f).await;
    }
    if simulated() {
        // As in `blocking`: the simulation interleaves other tasks between store calls.
        tokio::task::yield_now().await;
    }
    f(replica)
}

/// Waits for the disk to hold the change log through `seq`.
async fn durable(replica: &Arc<Replica>, seq: Seq) -> Result<(), SyncError> {
    Ok(replica.durable(seq).await?)
}

async fn blocking<R: Send + 'static>(
    replica: &Arc<Replica>,
    f: impl FnOnce(&Replica) -> Result<R, SyncError> + Send + 'static,
) -> Result<R, SyncError> {
    if simulated() {
        // `spawn_blocking` always suspends the session; yielding keeps that suspension point,
        // so the simulation still interleaves other tasks (and crashes) between store calls.
        tokio::task::yield_now().await;
        return f(replica);
    }
    let _permit = replica.trip_permit().await;
    let replica = replica.clone();
    tokio::task::spawn_blocking(move || f(&replica))
        .await
        .map_err(|e| SyncError::Protocol(format!("sync worker failed: {e}")))?
}

impl Session {
    /// Sends `frame` to the peer, after the frames held for a disk sync (see
    /// [`Session::held`]): it is held too while they are.
    async fn send(&mut self, frame: Frame) -> Result<(), SyncError> {
        let frame = SyncFrame { frame: Some(frame) };
        if self.hold_through > 0 {
            if !self.ctx.replica.is_durable(self.hold_through) {
                self.held.push(frame);
                return Ok(());
            }
            self.release_held().await?;
        }
        self.outbound
            .send(frame)
            .await
            .map_err(|_| SyncError::Closed)
    }

    /// Sends the frames held for a disk sync, which has now covered them.
    async fn release_held(&mut self) -> Result<(), SyncError> {
        self.hold_through = 0;
        for frame in std::mem::take(&mut self.held) {
            self.outbound
                .send(frame)
                .await
                .map_err(|_| SyncError::Closed)?;
        }
        Ok(())
    }

    /// Offers records that changed since the last scan, while the window has room. Reading
    /// the change log and preparing the offers is one trip to the store: a hub wakes every
    /// session on every change, and at 2,000 offices the trips' hand-offs to blocking threads
    /// were most of its CPU.
    async fn scan(&mut self) -> Result<(), SyncError> {
        // Nothing logged past what was scanned: the store would answer nothing (the same
        // watermark test opens `changed_since`), so no trip. A session scans after every batch
        // of frames, and at 2,000 offices these empty trips were a third of the hub's
        // hand-offs to blocking threads.
        while self.offers.len() < WINDOW && self.ctx.replica.published() > self.scanned {
            // Never more than the window has room for, so the window stays a bound.
            let batch = if self.offers.is_empty() {
                FIRST_SCAN_BATCH
            } else {
                SCAN_BATCH
            };
            let room = (WINDOW - self.offers.len()).min(batch);
            let after = self.scanned;
            // The log holds at most one entry per position past the scan.
            let logged = self.ctx.replica.published().saturating_sub(after);
            let short = logged.min(room as u64) <= SHORT_TRIP_RECORDS as u64;
            let prepared = self
                .prepare_offers(short, move |r| {
                    let entries = r.published_since(after, room)?;
                    Ok(entries.into_iter().map(|e| (e.doc, e.seq)).collect())
                })
                .await?;
            let read = prepared.len();
            let Some(last) = prepared.last().map(|(_, seq, _)| *seq) else {
                break;
            };
            for (id, seq, outcome) in prepared {
                self.send_offer(id, seq, outcome).await?;
            }
            self.scanned = last;
            self.advance_cursor().await?;
            if read < room {
                break;
            }
        }
        Ok(())
    }

    /// Offers `batch` (record, change-log position), in one trip to the store: one hop per
    /// record was most of a session's cost (benchmark hot spot 5).
    async fn offer_batch(&mut self, batch: Vec<(String, Seq)>) -> Result<(), SyncError> {
        let short = batch.len() <= SHORT_TRIP_RECORDS;
        let prepared = self.prepare_offers(short, move |_| Ok(batch)).await?;
        for (id, seq, outcome) in prepared {
            self.send_offer(id, seq, outcome).await?;
        }
        Ok(())
    }

    /// In one trip to the store (`short` if few records will be picked), picks records with
    /// `pick` (record, change-log position) and prepares an offer of each, in the order
    /// picked. The session's sync states travel to the trip and back (a move, not a copy: the
    /// session waits for the trip anyway).
    #[allow(clippy::type_complexity)]
    async fn prepare_offers(
        &mut self,
        short: bool,
        pick: impl FnOnce(&Replica) -> Result<Vec<(String, Seq)>, SyncError> + Send + 'static,
    ) -> Result<Vec<(String, Seq, Option<(Option<Outgoing>, bool)>)>, SyncError> {
        let mut states = std::mem::take(&mut self.states);
        let gate = self.ctx.gate.clone();
        let peer = self.ctx.peer_key.clone();
        let offer_summaries = self.ctx.offer_summaries;
        let (states, prepared) = trip(&self.ctx.replica, short, move |r| {
            let batch = pick(r)?;
            let mut prepared = Vec::with_capacity(batch.len());
            let mut held = Vec::new();
            for (id, seq) in batch {
                let (state, stored) = match states.remove(&id) {
                    Some(state) => (Some(state), false),
                    None => (persisted_state(r, &peer, &id)?.map(resumed), true),
                };
                let (outcome, state) =
                    prepare_offer(r, gate.as_ref(), &id, state, offer_summaries)?;
                match outcome {
                    // The peer already holds all of it: remember that for the next session and
                    // for the hub's heads comparison, here rather than in another trip (unless
                    // the stored state is what said so).
                    Some((None, true)) if !stored => {
                        held.push((id.clone(), state.encode()));
                    }
                    Some((None, true)) | None => {}
                    // An exchange is open: its state stays in memory until it settles.
                    Some(_) => {
                        states.insert(id.clone(), state);
                    }
                }
                prepared.push((id, seq, outcome));
            }
            r.store().put_peer_states(&peer, &held)?;
            Ok((states, prepared))
        })
        .await?;
        self.states = states;
        Ok(prepared)
    }

    async fn offer(&mut self, id: String, seq: Seq) -> Result<(), SyncError> {
        self.offer_batch(vec![(id, seq)]).await
    }

    /// Sends what [`prepare_offer`] made of a record and tracks it as offered.
    async fn send_offer(
        &mut self,
        id: String,
        seq: Seq,
        outcome: Option<(Option<Outgoing>, bool)>,
    ) -> Result<(), SyncError> {
        let message = match outcome {
            // Not offered, or the peer already holds all of it (state persisted already).
            None | Some((None, true)) => return Ok(()),
            // Waiting for the peer's answer to an earlier message; stay pending until it comes.
            Some((None, false)) => None,
            Some((Some(message), _)) => Some(message),
        };
        if let Some(message) = &message
            && message.bytes.len() > MAX_FRAME_BYTES
        {
            let bytes = message.bytes.len();
            warn!(record = %id, bytes, "record too large to sync; skipped");
            return Ok(());
        }
        let now = self.ctx.replica.now_ms();
        let pending_since_ms = self.offers.get(&id).map_or(now, |o| o.pending_since_ms);
        if let Some(old) = self.offers.insert(
            id.clone(),
            Offer {
                seq,
                offered_at_ms: now,
                pending_since_ms,
            },
        ) {
            self.offers_by_seq.remove(&old.seq);
        }
        self.offers_by_seq.insert(seq, id.clone());
        debug!(record = %id, seq, "offered");
        match message {
            Some(message) => {
                self.send(Frame::Doc(DocSync {
                    record_id: id,
                    message: message.bytes,
                    heads: Vec::new(),
                    encoding: message.encoding.into(),
                    offered: message.offered,
                }))
                .await
            }
            None => Ok(()),
        }
    }

    /// Offers that got no answer for [`OFFER_TIMEOUT`] start over with a fresh sync state: a
    /// lost reply must not hold the cursor back for the rest of the session.
    async fn retry_stale_offers(&mut self) -> Result<(), SyncError> {
        let now = self.ctx.replica.now_ms();
        let mut stale: Vec<(String, Seq)> = self
            .offers
            .iter()
            .filter(|(_, o)| now - o.offered_at_ms > OFFER_TIMEOUT.as_millis() as i64)
            .map(|(id, o)| (id.clone(), o.seq))
            .collect();
        // In change-log order, not the map's random order, so a simulation seed replays the
        // same frames.
        stale.sort_unstable_by_key(|(_, seq)| *seq);
        for (id, seq) in stale {
            debug!(record = %id, "offer timed out; starting its sync over");
            self.states.insert(id.clone(), State::new());
            self.offer(id, seq).await?;
        }
        Ok(())
    }

    /// A frame other than a sync message.
    async fn on_frame(&mut self, frame: SyncFrame) -> Result<(), SyncError> {
        match frame.frame {
            Some(Frame::Doc(doc)) => self.on_ack_frame(doc).await,
            Some(Frame::Rejected(rejected)) => self.on_rejected(rejected).await,
            Some(Frame::Progress(progress)) => {
                {
                    let mut figures = self
                        .ctx
                        .figures
                        .lock()
                        .expect("figures lock is never poisoned");
                    figures.peer_pending = progress.pending_records;
                    figures.peer_refused = progress.refused_records;
                    figures.peer_oldest_pending_ms = progress.oldest_pending_ms;
                    figures.peer_reported = true;
                }
                self.on_own_log_seen(progress.your_last_seq_seen, &progress.your_log_id)
                    .await?;
                self.on_peer_log(progress.last_seq, progress.log_id).await
            }
            Some(Frame::Hello(_)) => Err(SyncError::Protocol("hello sent twice".into())),
            None => Err(SyncError::Protocol("empty frame".into())),
        }
    }

    fn touch(&self) {
        let now = self.ctx.replica.now_ms();
        self.ctx
            .figures
            .lock()
            .expect("figures lock is never poisoned")
            .last_contact_ms = now;
    }

    /// Handles frames in arrival order, applying consecutive sync messages for distinct
    /// records in one trip to the store.
    async fn on_frames(&mut self, frames: Vec<SyncFrame>) -> Result<(), SyncError> {
        self.touch();
        let mut batch: Vec<Incoming> = Vec::new();
        for frame in frames {
            let doc = match frame.frame {
                Some(Frame::Doc(doc)) if !doc.message.is_empty() => doc,
                other => {
                    self.apply_incoming(std::mem::take(&mut batch)).await?;
                    self.on_frame(SyncFrame { frame: other }).await?;
                    continue;
                }
            };
            match check_doc(doc) {
                Ok(incoming) => {
                    // A second message for the same record needs the state the first leaves.
                    if batch.iter().any(|b| b.id == incoming.id) {
                        self.apply_incoming(std::mem::take(&mut batch)).await?;
                    }
                    batch.push(incoming);
                }
                Err(refusal) => {
                    self.apply_incoming(std::mem::take(&mut batch)).await?;
                    self.refuse_frame(refusal).await?;
                }
            }
        }
        self.apply_incoming(batch).await
    }

    /// A record frame without a sync message: the peer's heads for it (an ack).
    async fn on_ack_frame(&mut self, frame: DocSync) -> Result<(), SyncError> {
        match check_record_id(frame.record_id) {
            Ok(id) => self.on_ack(id, frame.heads).await,
            Err(refusal) => self.refuse_frame(refusal).await,
        }
    }

    async fn refuse_frame(&mut self, refusal: FrameRefusal) -> Result<(), SyncError> {
        if refusal.rule == crate::workflow::RULE_LIMITS {
            warn!(record = %refusal.id, error = %refusal.reason, "refused a sync message past the limits");
        }
        self.reject(refusal.id, refusal.rule, refusal.reason).await
    }

    /// Applies peers' sync messages for distinct records in one trip to the store, which also
    /// loads their sync states and persists those the peer now shares in full; then answers
    /// each.
    async fn apply_incoming(&mut self, batch: Vec<Incoming>) -> Result<(), SyncError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Answers without changes read and write a little per record; changes are applied,
        // checked and made durable, which may take a while.
        let short = batch.len() <= SHORT_TRIP_ANSWERS
            && batch
                .iter()
                .all(|incoming| incoming.message.changes.is_empty());
        let inputs: Vec<(Incoming, Option<State>)> = batch
            .into_iter()
            .map(|incoming| {
                let state = self.states.remove(&incoming.id);
                (incoming, state)
            })
            .collect();
        let gate = self.ctx.gate.clone();
        let peer = self.ctx.peer_key.clone();
        let sync_in_trip = simulated();
        let carrying = inputs
            .iter()
            .filter(|(incoming, _)| !incoming.message.changes.is_empty())
            .count();
        // The simulation keeps to one thread, where its seeds order every step.
        let on_two_threads = carrying >= TWO_THREAD_CHANGES && !sync_in_trip;
        let trip_started = std::time::Instant::now();
        let outcomes = trip(&self.ctx.replica, short, move |r| {
            let receive_all = |inputs: Vec<(Incoming, Option<State>)>| {
                let mut outcomes = Vec::with_capacity(inputs.len());
                let mut confirmed_states = Vec::new();
                for (incoming, state) in inputs {
                    let id = incoming.id.clone();
                    let state = match state {
                        Some(state) => state,
                        None => persisted_state(r, &peer, &id)?.unwrap_or_default(),
                    };
                    let received = receive(r, gate.as_ref(), state, incoming);
                    if let Received::Applied {
                        state,
                        confirmed: true,
                        ..
                    } = &received
                    {
                        confirmed_states.push((id.clone(), state.encode()));
                    }
                    outcomes.push((id, received));
                }
                Ok::<_, SyncError>((outcomes, confirmed_states))
            };
            // The records of a batch are distinct, each behind its own lock: half of a large
            // batch goes to a second thread, so a burst of changes from one office is taken
            // in on both cores.
            let (outcomes, confirmed_states) = if on_two_threads {
                let mut inputs = inputs;
                let second = inputs.split_off(inputs.len() / 2);
                std::thread::scope(|scope| {
                    let other = scope.spawn(|| receive_all(second));
                    let (mut outcomes, mut confirmed) = receive_all(inputs)?;
                    let (more, more_confirmed) = other
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                    outcomes.extend(more);
                    confirmed.extend(more_confirmed);
                    Ok::<_, SyncError>((outcomes, confirmed))
                })?
            } else {
                receive_all(inputs)?
            };
            r.store().put_peer_states(&peer, &confirmed_states)?;
            let logged = outcomes
                .iter()
                .filter_map(|(_, received)| match received {
                    Received::Applied { logged, .. } => *logged,
                    _ => None,
                })
                .max();
            // The simulation keeps its one disk sync in the trip, where its seeds order it.
            if logged.is_some() && sync_in_trip {
                r.make_durable()?;
            }
            Ok((outcomes, logged))
        })
        .await?;
        let (outcomes, logged) = outcomes;
        debug!(
            records = outcomes.len(),
            carrying,
            on_two_threads,
            took_us = trip_started.elapsed().as_micros() as u64,
            "took in a batch of sync messages"
        );
        // The batch's changes were written unsynced. Its answers, and every frame after them,
        // wait for a disk sync that covers them (`Session::held`), which the replica's sync
        // task makes while this session takes in the next batch.
        if let Some(logged) = logged {
            self.hold_through = self.hold_through.max(logged);
            self.ctx.replica.request_durable(logged);
        }
        for (id, received) in outcomes {
            self.answer_received(id, received).await?;
        }
        if logged.is_some() && self.ctx.log_watch.is_some() {
            self.send_progress().await?;
        }
        Ok(())
    }

    async fn answer_received(&mut self, id: String, outcome: Received) -> Result<(), SyncError> {
        match outcome {
            Received::Applied {
                state,
                reply,
                confirmed,
                heads,
                ..
            } => {
                // A state whose exchange is over (the peer holds all of it, persisted in the
                // trip, and nothing more to say) leaves memory; see `Session::states`.
                if !(confirmed && reply.is_none()) {
                    self.states.insert(id.clone(), *state);
                }
                if confirmed {
                    self.confirm(&id).await?;
                }
                let frame = match reply {
                    Some(reply) => DocSync {
                        record_id: id,
                        message: reply.encode(),
                        heads: Vec::new(),
                        encoding: MessageEncoding::Plain.into(),
                        offered: None,
                    },
                    None => DocSync {
                        record_id: id,
                        message: Vec::new(),
                        heads,
                        encoding: MessageEncoding::Plain.into(),
                        offered: None,
                    },
                };
                self.send(Frame::Doc(frame)).await
            }
            Received::Refused(violation) => {
                // The next exchange of this record starts from what the peer confirmed
                // earlier (the store), not from this one; and a peer naming made-up records
                // leaves nothing behind in memory.
                self.states.remove(&id);
                self.ctx
                    .figures
                    .lock()
                    .expect("figures lock is never poisoned")
                    .records_rejected += 1;
                warn!(record = %id, rule = violation.rule, reason = %violation.message, "refused a peer's change");
                self.reject(id, violation.rule, violation.message).await
            }
            Received::Failed(e) => {
                warn!(record = %id, error = %e, "could not apply a peer's change");
                self.states.remove(&id);
                self.reject(id, "protocol", e).await
            }
        }
    }

    /// The peer had nothing to say about a record and reports its heads.
    async fn on_ack(&mut self, id: String, heads: Vec<Vec<u8>>) -> Result<(), SyncError> {
        if !self.offers.contains_key(&id) {
            return Ok(());
        }
        let theirs: Vec<automerge::ChangeHash> = heads
            .iter()
            .filter_map(|h| automerge::ChangeHash::try_from(h.as_slice()).ok())
            .collect();
        let doc = id.clone();
        let peer = self.ctx.peer_key.clone();
        let state = self.states.remove(&id);
        let (state, covered) = trip(&self.ctx.replica, true, move |r| {
            // The summary lists the record's heads: loading the record to read them cost as
            // much as the change the ack is for, when that was taken unloaded.
            let Some(ours) = r.summary(&doc)?.as_deref().and_then(summary_heads) else {
                return Ok((state, false));
            };
            if !covers(Some(&theirs), &ours) {
                return Ok((state, false));
            }
            // An ack carries no sync message, so Automerge never moved the shared heads; the
            // peer holds all of ours, and the persisted state must say so (the hub's tracker
            // compares it with the record's heads). Found by the simulation, seed 285.
            let mut state = state.unwrap_or_default();
            state.shared_heads = ours;
            r.store().put_peer_state(&peer, &doc, &state.encode())?;
            // Persisted and settled: the state leaves memory (see `Session::states`).
            Ok((None, true))
        })
        .await?;
        if let Some(state) = state {
            self.states.insert(id.clone(), state);
        }
        if covered {
            return self.confirm(&id).await;
        }
        // The peer answered an earlier message and holds less than we have now: changes made
        // since that message was sent were held back while it was in flight, and an ack does
        // not pass through Automerge, so its state still says "in flight" and would wait for
        // the offer timeout (a 20 s stall found by the benchmark at N=20). Start the record's
        // sync over, as a timed-out offer does.
        if let Some(seq) = self.offers.get(&id).map(|o| o.seq) {
            debug!(record = %id, "peer acked older heads; offering again");
            self.states.insert(id.clone(), State::new());
            self.offer(id, seq).await?;
        }
        Ok(())
    }

    async fn reject(&mut self, id: String, rule: &str, reason: String) -> Result<(), SyncError> {
        self.send(Frame::Rejected(Rejected {
            record_id: id,
            rule: rule.to_owned(),
            reason,
        }))
        .await
    }

    /// The peer refused our changes to a record. Keep the note for the office and stop
    /// offering that state of the record, so the session goes on with the others.
    async fn on_rejected(&mut self, rejected: Rejected) -> Result<(), SyncError> {
        warn!(record = %rejected.record_id, rule = %rejected.rule, reason = %rejected.reason, "peer refused our change");
        let note = RejectionNote {
            record_id: rejected.record_id.clone(),
            rule: rejected.rule,
            reason: rejected.reason,
            at_ms: self.ctx.replica.now_ms(),
        };
        let key = format!("{REJECTION_PREFIX}{}", note.record_id);
        let bytes = serde_json::to_vec(&note).expect("notes are plain data");
        blocking(&self.ctx.replica, move |r| {
            Ok(r.store().put_meta(&key, &bytes)?)
        })
        .await?;
        self.states.remove(&rejected.record_id);
        self.refused.insert(rejected.record_id.clone());
        self.settle(&rejected.record_id).await
    }

    /// The peer holds every change the record had when offered; the caller has persisted
    /// the sync state that says so, in the same trip to the store as the change.
    async fn confirm(&mut self, id: &str) -> Result<(), SyncError> {
        // The peer now holds what it once refused (a hub refilled from the nodes, say): the
        // note would tell the office its record is still blocked.
        if self.refused.remove(id) {
            let key = format!("{REJECTION_PREFIX}{id}");
            blocking(&self.ctx.replica, move |r| {
                Ok(r.store().delete_meta(&key)?)
            })
            .await?;
        }
        if !self.offers.contains_key(id) {
            return Ok(());
        }
        debug!(record = %id, "confirmed by peer");
        self.settle(id).await
    }

    async fn settle(&mut self, id: &str) -> Result<(), SyncError> {
        if let Some(offer) = self.offers.remove(id) {
            self.offers_by_seq.remove(&offer.seq);
        }
        self.advance_cursor().await
    }

    /// Moves the persisted cursor to just below the oldest unconfirmed offer.
    async fn advance_cursor(&mut self) -> Result<(), SyncError> {
        let target = match self.offers_by_seq.keys().next() {
            Some(oldest) => oldest - 1,
            None => self.scanned,
        };
        self.cursor = self.cursor.max(target);
        // The persisted cursor is a hint that may lag: a session that ends before writing it
        // re-offers a few records, which the peer's persisted sync states answer cheaply. So
        // it is written at most once per CURSOR_SAVE_EVERY (and on the progress tick), not
        // once per confirmed record: at 2,000 offices that write was one of a hub's three
        // trips to the store per copy delivered. Readers of how far a live session got take
        // the session's figures (`SessionFigures::cursor`) as well.
        let now = self.ctx.replica.now_ms();
        let due = now - self.cursor_saved_ms >= CURSOR_SAVE_EVERY.as_millis() as i64;
        if self.cursor > self.saved_cursor && due {
            self.save_cursor().await?;
        }
        self.update_figures();
        Ok(())
    }

    /// Writes the cursor, and the peer's log end with it. Both are hints: a lost cursor makes
    /// the next session offer again, a lost log end only makes a restored copy of the peer's
    /// store harder to recognise.
    async fn save_cursor(&mut self) -> Result<(), SyncError> {
        let peer = self.ctx.peer_key.clone();
        let target = self.cursor;
        let log = (self.peer_log != self.saved_peer_log).then(|| self.peer_log.clone());
        trip(&self.ctx.replica, true, move |r| {
            r.store().put_cursor(&peer, target)?;
            if let Some(log) = log {
                r.store().put_peer_log(&peer, &log)?;
            }
            Ok(())
        })
        .await?;
        self.saved_cursor = target;
        self.saved_peer_log = self.peer_log.clone();
        self.cursor_saved_ms = self.ctx.replica.now_ms();
        Ok(())
    }

    /// The peer saw this side's change log, named `seen_in`, reach `seen`: past its end, this
    /// store went back to an older copy. The peer's own check ([`Session::on_peer_log`]) offers
    /// it everything again; the positions past the end are the concern of whoever else holds
    /// them.
    ///
    /// Seen in a log this side has since replaced (a peer offline while a restored hub started
    /// a new feed log, back after the hub restarted), the position is old news: taking it for
    /// news of the current log made departments start over a second time. A log this side
    /// does not know as replaced is news, even if it is not the current one: the store may
    /// have been restored from a copy older than the log the peer saw.
    async fn on_own_log_seen(&mut self, seen: Seq, seen_in: &str) -> Result<(), SyncError> {
        let end = self.ctx.replica.store().last_seq();
        if seen <= end {
            return Ok(());
        }
        let replaced = self
            .ctx
            .log_watch
            .as_ref()
            .is_some_and(|watch| !seen_in.is_empty() && watch.replaced(seen_in));
        if replaced {
            info!(
                seen,
                seen_in, "the peer saw a log this side replaced reach further; no news of this one"
            );
            return Ok(());
        }
        warn!(
            seen,
            end,
            "the peer saw this side's change log reach further than it does now: this store went back to an older copy"
        );
        if let Some(watch) = self.ctx.log_watch.clone() {
            blocking(&self.ctx.replica, move |_| {
                watch.went_back(seen, end);
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// The name of this side's change log as peers are told it (empty where nobody else keeps
    /// positions in it).
    fn own_log_name(&self) -> String {
        self.ctx
            .log_watch
            .as_ref()
            .map(|watch| watch.log_name())
            .unwrap_or_default()
    }

    /// The peer reported the end of its change log, and the log's name. A store's log only
    /// grows; one reported below what the peer once reported is a store restored from an older
    /// copy (or rolled back with its machine), which lacks changes it confirmed since: what
    /// this side kept of the peer (cursor, sync states) is void, and everything is offered
    /// again.
    ///
    /// A log under a new name says the same: a hub renames its log only when it found its
    /// store gone back. This side may not have seen it go back: offline through the restore,
    /// it comes back after the renamed log has grown past the end it knew, and records the
    /// old hub confirmed, which the copy lacks, were never offered again (found by a
    /// break-test: an office's own records missing on the hub while status said converged).
    /// Once in a session is enough: the first report of a restored hub may still carry the
    /// old name, and the session that forgot everything for it offers everything anyway.
    async fn on_peer_log(&mut self, reported: Seq, name: String) -> Result<(), SyncError> {
        let renamed =
            !self.peer_log.name.is_empty() && !name.is_empty() && name != self.peer_log.name;
        if reported >= self.peer_log.end && (!renamed || self.forgot_peer) {
            self.peer_log = PeerLog {
                end: reported,
                name,
            };
            return Ok(());
        }
        warn!(
            reported,
            known = self.peer_log.end,
            log = %name,
            known_log = %self.peer_log.name,
            "the peer's change log went back or was renamed (its store restored from an older copy?); offering everything again"
        );
        let peer = self.ctx.peer_key.clone();
        blocking(&self.ctx.replica, move |r| {
            Ok(r.store().forget_peer(&peer)?)
        })
        .await?;
        // Offers in flight would hold the cursor at their positions; the rescan makes them again.
        self.states.clear();
        self.offers.clear();
        self.offers_by_seq.clear();
        self.scanned = 0;
        self.cursor = 0;
        self.saved_cursor = 0;
        self.peer_log = PeerLog {
            end: reported,
            name,
        };
        self.saved_peer_log = PeerLog::default();
        self.forgot_peer = true;
        Ok(())
    }

    fn update_figures(&self) {
        let last = self.ctx.replica.store().last_seq();
        let mut figures = self
            .ctx
            .figures
            .lock()
            .expect("figures lock is never poisoned");
        figures.pending_to_peer =
            self.offers.len() as u64 + last.saturating_sub(self.scanned).min(u64::from(u32::MAX));
        figures.oldest_pending_ms = self
            .offers
            .values()
            .map(|o| o.pending_since_ms)
            .min()
            .unwrap_or(0);
        figures.cursor = self.cursor;
    }

    /// Tells the peer at once when this side goes from nothing to push to something, or back:
    /// the hub's convergence view must not go on calling a node level for up to
    /// [`PROGRESS_EVERY`] after it wrote something (a status check right after a write saw
    /// "converged" without it, `link_faults`).
    ///
    /// Not when the log merely grew: the peer learns the log's end (to recognise this store
    /// restored from an older copy) from these and from the report every [`PROGRESS_EVERY`].
    /// Reporting every growth cost the hub 5–8 % more CPU per change at 2,000 offices (each
    /// office reporting each record it took in) and took the p99 from 0.56–0.59 s to
    /// 0.83–1.07 s; a copy made within two seconds of the loss goes unrecognised instead
    /// (README, known limitations).
    async fn report_if_level_changed(&mut self) -> Result<(), SyncError> {
        let level = self.offers.is_empty() && self.scanned >= self.ctx.replica.store().last_seq();
        if self.reported_level != Some(level) {
            self.send_progress().await?;
        }
        Ok(())
    }

    async fn send_progress(&mut self) -> Result<(), SyncError> {
        self.update_figures();
        let (pending, oldest) = {
            let figures = self
                .ctx
                .figures
                .lock()
                .expect("figures lock is never poisoned");
            (figures.pending_to_peer, figures.oldest_pending_ms)
        };
        self.reported_level = Some(pending == 0);
        self.send(Frame::Progress(Progress {
            pending_records: pending,
            oldest_pending_ms: oldest,
            last_seq: self.ctx.replica.published(),
            refused_records: self.refused.len() as u64,
            your_last_seq_seen: self.peer_log.end,
            log_id: self.own_log_name(),
            your_log_id: self.peer_log.name.clone(),
        }))
        .await
    }
}

/// The sync state persisted for `doc` with `peer`, if any.
fn persisted_state(replica: &Replica, peer: &str, doc: &str) -> Result<Option<State>, SyncError> {
    Ok(replica
        .store()
        .peer_state(peer, doc)?
        .map(|bytes| State::decode(&bytes).unwrap_or_default()))
}

/// A persisted sync state, made ready to offer from: the peer confirmed holding the shared
/// heads, so it is taken to hold them still, and the first message carries the changes made
/// since instead of heads the peer must answer with a request first (a round trip per record
/// when an office comes back from a day offline). A peer that holds more merges the
/// duplicates; one that holds less asks for what it lacks, as Automerge's protocol does.
///
/// The peer is not taken to read v2 messages here: given a v2 peer, Automerge sends the whole
/// document, saved compressed, whenever the changes since are more than a third of the
/// record's, which for a record of a few changes is nearly always. Those changes alone are a
/// fraction of its bytes, and the compressed save was an eighth of the hub's CPU offering an
/// office its changes back from a day offline.
fn resumed(mut state: State) -> State {
    if state.their_heads.is_none() && !state.shared_heads.is_empty() {
        state.their_heads = Some(state.shared_heads.clone());
        state.their_need = Some(Vec::new());
        state.their_have = Some(vec![Have {
            last_sync: state.shared_heads.clone(),
            bloom: BloomFilter::default(),
        }]);
        state.their_capabilities = Some(Vec::new());
    }
    state
}

/// A sync state as if the peer had said it holds nothing and reads v2 messages: what a first
/// offer assumes ([`FirstOffer`]).
pub fn told_nothing() -> State {
    let mut state = State::new();
    state.their_heads = Some(Vec::new());
    state.their_need = Some(Vec::new());
    state.their_have = Some(Vec::new());
    state.their_capabilities = Some(vec![Capability::MessageV2]);
    state
}

/// A sync message encoded for the wire.
#[derive(Debug, Clone)]
struct Outgoing {
    bytes: Vec<u8>,
    encoding: MessageEncoding,
    /// This side's summary of the record, on an offer of changes or of the whole document to a
    /// peer that trusts this side (see [`SessionContext::offer_summaries`]).
    offered: Option<OfferedRecord>,
}

impl Outgoing {
    fn plain(message: Message) -> Self {
        Outgoing {
            bytes: message.encode(),
            encoding: MessageEncoding::Plain,
            offered: None,
        }
    }
}

/// The first message of a record to a peer that has no sync state persisted for it, and the
/// state that message leaves.
///
/// It is made as if the peer had said it holds nothing of the record, so it carries the whole
/// document (Automerge's v2 document message) instead of heads the peer must answer with a
/// request first. A state is persisted once the peer confirms holding a record, so a missing
/// one means the record is new to the peer (the usual case: a record just made or just
/// received from another office), or that the peer never confirmed it; if the peer does hold
/// some of it after all, it merges the duplicate changes and says so in its answer. This
/// takes two messages of three off every new record's trip to each office. Both ends are
/// Linkage, so both read v2 messages.
///
/// The message depends only on the document's heads, so the replica makes it once per state
/// of the record ([`Replica::read_memo`]) and every session that offers that state sends it.
/// Automerge would put the document in it saved with its columns deflated one by one, each
/// with a fresh deflate state; it goes in saved plain instead, and the whole message is
/// deflated once ([`deflate`]).
#[derive(Debug)]
struct FirstOffer {
    message: Option<Outgoing>,
    state: State,
    /// The heads of the document the message carries saved plain, as a summary lists them;
    /// `None` if Automerge made the message (its columns deflated), which a peer cannot store
    /// as it came.
    plain_heads: Option<Vec<String>>,
}

impl FirstOffer {
    /// The offer as Automerge makes it: the document saved with its columns compressed.
    fn made_by_automerge(doc: &Automerge) -> Self {
        let mut state = told_nothing();
        let message = doc.generate_sync_message(&mut state).map(Outgoing::plain);
        FirstOffer {
            message,
            state,
            plain_heads: None,
        }
    }

    fn of(doc: &Automerge) -> Self {
        if doc.get_heads().is_empty() {
            return Self::made_by_automerge(doc);
        }
        let mut state = told_nothing();

        // Made as to a read-only peer, Automerge's message has the heads, needs and bloom
        // filter of a whole-document offer and leaves the same state, but carries no changes
        // and saves nothing; the document and the hashes it sends are added here.
        state.peer_read_only = true;
        let message = doc.generate_sync_message(&mut state);
        state.peer_read_only = false;
        let Some(mut message) = message else {
            return FirstOffer {
                message: None,
                state,
                plain_heads: None,
            };
        };
        message.changes = ChunkList::from(doc.save_nocompress());
        state
            .sent_hashes
            .extend(doc.get_changes_meta(&[]).iter().map(|change| change.hash));

        let plain = message.encode();
        if plain.len() > deflate::MAX_INFLATED {
            // The replica keeps a document's plain save within `MAX_DOCUMENT_BYTES`, so only
            // a message whose heads and hashes pass the frame's slack gets here: made as
            // Automerge makes it, with its columns compressed, it fits a frame, and a peer's
            // guard, which measures inflated columns against the document limit, takes it.
            return Self::made_by_automerge(doc);
        }
        FirstOffer {
            message: Some(Outgoing {
                bytes: deflate::deflate(&plain),
                encoding: MessageEncoding::Deflate,
                offered: None,
            }),
            state,
            plain_heads: Some(doc.get_heads().iter().map(ToString::to_string).collect()),
        }
    }

    /// The message, carrying `summary` if that is the record as this offer carries it.
    fn message_with(&self, summary: &Summary) -> Option<Outgoing> {
        let mut message = self.message.clone()?;
        if self.plain_heads.as_ref() == Some(&summary.heads) {
            message.offered = Some(offered_record(summary));
        }
        Some(message)
    }
}

/// The summary a peer keeps of a record, as an offer carries it.
fn offered_record(summary: &Summary) -> OfferedRecord {
    OfferedRecord {
        kind: summary.kind.clone(),
        owner: summary.owner.clone(),
        parties: summary.parties.clone(),
        status: summary.status.clone(),
        title: summary.title.clone(),
        created_at_ms: summary.created_at_ms,
        conflicted: summary.conflicted,
        category: summary.category,
    }
}

/// The heads `summary` lists, as change hashes; `None` if one does not parse (a summary the
/// store mangled), which no comparison then matches.
fn summary_heads(summary: &Summary) -> Option<Vec<automerge::ChangeHash>> {
    summary.heads.iter().map(|head| head.parse().ok()).collect()
}

/// The summary of record `id` at `heads` as a peer's offer carries it
/// ([`offered_record`]), updated here at `now_ms`.
fn offered_summary(
    id: &str,
    offered: &OfferedRecord,
    heads: &[automerge::ChangeHash],
    now_ms: i64,
) -> Summary {
    Summary {
        id: id.to_owned(),
        kind: offered.kind.clone(),
        owner: offered.owner.clone(),
        parties: offered.parties.clone(),
        status: offered.status.clone(),
        title: offered.title.clone(),
        created_at_ms: offered.created_at_ms,
        updated_at_ms: now_ms,
        conflicted: offered.conflicted,
        category: offered.category,
        heads: heads.iter().map(ToString::to_string).collect(),
    }
}

/// What to offer the peer of record `id` from `state` (`None`: nothing persisted for it with
/// this peer, see [`FirstOffer`]): `None` if the record is gone or the gate keeps it from the
/// peer, else the encoded sync message (if any) and whether the peer already holds all of it.
#[allow(clippy::type_complexity)]
fn prepare_offer(
    replica: &Replica,
    gate: &dyn Gate,
    id: &str,
    state: Option<State>,
    offer_summary: bool,
) -> Result<(Option<(Option<Outgoing>, bool)>, State), SyncError> {
    let Some(summary) = replica.summary(id)? else {
        return Ok((None, state.unwrap_or_default()));
    };
    if !gate.may_offer(&summary) {
        return Ok((None, state.unwrap_or_default()));
    }
    let Some(mut state) = state else {
        return Ok(match replica.read_memo(id, FirstOffer::of)? {
            // A peer told nothing yet never holds all of it.
            Some(first) => {
                let message = if offer_summary {
                    first.message_with(&summary)
                } else {
                    first.message.clone()
                };
                (Some((message, false)), first.state.clone())
            }
            None => (None, State::new()),
        });
    };
    // The peer holds all the stored record has, by the summary's heads: nothing to send, and
    // nothing loaded. Most records an office's change log shows after a reconnection are the
    // ones the hub just sent, stored without loading them (`adopt`); reading each to find that
    // out loaded them all. A change made since has its own log entry, offered in its turn.
    let listed = summary_heads(&summary);
    if let Some(listed) = &listed
        && covers(state.their_heads.as_deref(), listed)
    {
        return Ok((Some((None, true)), state));
    }
    // One change since what the peer confirmed, stored on its own and not loaded (an edit the
    // hub took unloaded, `take_body_edit`): offered from the store as Automerge would offer it.
    if let Some([head]) = listed.as_deref()
        && let Some(tail) = replica.tail_chunk(id)?
        && let Some(message) = offer_tail(
            &mut state,
            *head,
            tail,
            replica.taken_on(id, &summary.heads).as_deref(),
        )
    {
        let mut outgoing = Outgoing::plain(message);
        if offer_summary {
            outgoing.offered = Some(offered_record(&summary));
        }
        return Ok((Some((Some(outgoing), false)), state));
    }
    let outcome = replica.read(id, |doc| {
        let heads = doc.get_heads();
        // The peer holds all we have (it said so, or confirmed it in an earlier session):
        // nothing to send. What it has and we lack, its own session offers.
        if covers(state.their_heads.as_deref(), &heads) {
            return (None, true);
        }
        let message = doc.generate_sync_message(&mut state).map(|message| {
            let carries_changes = !message.changes.is_empty();
            let mut outgoing = Outgoing::plain(message);
            // With the summary, a peer that trusts this side appends the changes to the
            // record without loading it (`adopt_changes`), if the summary is the record as
            // the message leaves it: a change stored since the summary was read is not.
            if offer_summary && carries_changes && listed.as_ref() == Some(&heads) {
                outgoing.offered = Some(offered_record(&summary));
            }
            outgoing
        });
        (message, covers(state.their_heads.as_deref(), &heads))
    })?;
    // The changes a peer lacks can outweigh the document they make (many small changes, each
    // with its own header): past a frame, the whole document is offered instead, as to a
    // peer told nothing. It fits, since the replica keeps documents within the limit a frame
    // allows for, and the peer merges what it already holds.
    if let Some((Some(message), _)) = &outcome
        && message.bytes.len() > MAX_FRAME_BYTES
        && let Some(first) = replica.read_memo(id, FirstOffer::of)?
    {
        debug!(record = %id, bytes = message.bytes.len(), "changes since past a frame; offered whole");
        return Ok((Some((first.message.clone(), false)), first.state.clone()));
    }
    Ok((outcome, state))
}

/// The message Automerge makes from `state`, resumed from what the peer confirmed
/// ([`resumed`]), for a record whose only change since is `tail` (a stored chunk, its hash
/// `head`, the record's one head), and the state it leaves; made without the document.
/// `None` unless `tail` is that one change, on top of the shared heads, and `state` is just
/// resumed (nothing said or sent since): Automerge's message then carries that change alone
/// (v1, since a resumed peer's capabilities are unknown), the shared heads with a bloom filter
/// of it, and no request. A test compares the two.
///
/// On top of the shared heads means depending on them alone; or, if the change was taken on
/// them without loading the record (`taken_on`, [`Replica::taken_on`]), on them and on its
/// actor's own last change, which [`Frontier::take`] checked is already under them.
///
/// Loading a record to offer the change a hub took unloaded cost as much as loading it to
/// take the change.
///
/// [`Frontier::take`]: crate::record::doc::frontier::Frontier::take
fn offer_tail(
    state: &mut State,
    head: automerge::ChangeHash,
    tail: Vec<u8>,
    taken_on: Option<&[automerge::ChangeHash]>,
) -> Option<Message> {
    let links = guard::change_links([tail.as_slice()])?;
    let [link] = links.as_slice() else {
        return None;
    };
    let mut deps = link.deps.clone();
    deps.sort_unstable();
    let mut shared = state.shared_heads.clone();
    shared.sort_unstable();
    let resumed_at = Have {
        last_sync: state.shared_heads.clone(),
        bloom: BloomFilter::default(),
    };
    let just_resumed = state.their_heads.as_ref() == Some(&state.shared_heads)
        && state.their_need.as_deref() == Some(&[])
        && state.their_have.as_deref() == Some(std::slice::from_ref(&resumed_at))
        && state.their_capabilities.as_deref() == Some(&[])
        && !state.have_responded
        && state.sent_hashes.is_empty()
        && !(state.read_only || state.peer_read_only || state.needs_reset);
    let on_shared = deps == shared
        || (taken_on == Some(shared.as_slice()) && shared.iter().all(|h| deps.contains(h)));
    if link.hash != head || shared.is_empty() || !on_shared || !just_resumed {
        return None;
    }

    let mut flags = automerge::sync::MessageFlags::new();
    flags.set(automerge::sync::MessageFlags::SUPPORTS_SYNC_RESET);
    let message = Message {
        heads: vec![head],
        need: Vec::new(),
        have: vec![Have {
            last_sync: state.shared_heads.clone(),
            bloom: BloomFilter::from_hashes([head].iter()),
        }],
        changes: ChunkList::from(vec![tail]),
        flags: Some(flags),
        version: automerge::sync::MessageVersion::V1,
    };
    state.have_responded = true;
    state.last_sent_heads = vec![head];
    state.sent_hashes.insert(head);
    state.in_flight = true;
    Some(message)
}

/// A peer's sync message for one record, decoded and within the limits.
struct Incoming {
    id: String,
    message: Message,
    /// Some of its chunks came deflated (see [`guard::Checked`]).
    deflated: bool,
    /// The peer's summary of the record at the message's heads, if it sent one (see [`adopt`],
    /// [`adopt_changes`]).
    offered: Option<OfferedRecord>,
}

/// Why a frame was refused before it reached the store.
struct FrameRefusal {
    id: String,
    rule: &'static str,
    reason: String,
}

/// Checks a frame carrying a sync message: its record id, its size, that it decodes, and the
/// guard's limits.
fn check_doc(frame: DocSync) -> Result<Incoming, FrameRefusal> {
    let id = check_record_id(frame.record_id)?;
    let offered = frame.offered;
    let refuse = |id: String, rule, reason| FrameRefusal { id, rule, reason };
    if frame.message.len() > MAX_FRAME_BYTES {
        let reason = format!(
            "sync message of {} bytes is over the limit",
            frame.message.len()
        );
        return Err(refuse(id, "protocol", reason));
    }
    let bytes = match wire_bytes(frame.encoding, &frame.message) {
        Ok(bytes) => bytes,
        Err((rule, reason)) => return Err(refuse(id, rule, reason)),
    };
    let message = match Message::decode(&bytes) {
        Ok(message) => message,
        Err(e) => {
            return Err(refuse(
                id,
                "protocol",
                format!("malformed sync message: {e}"),
            ));
        }
    };
    match guard::check_message(&message) {
        Ok(checked) => Ok(Incoming {
            id,
            message,
            deflated: checked.deflated,
            offered,
        }),
        Err(e) => Err(refuse(id, crate::workflow::RULE_LIMITS, e.to_string())),
    }
}

/// The encoded sync message a frame carries, inflated if it came deflated; or the rule it
/// breaks and why.
pub fn message_bytes(frame: &DocSync) -> Result<Cow<'_, [u8]>, (&'static str, String)> {
    wire_bytes(frame.encoding, &frame.message)
}

fn wire_bytes(encoding: i32, message: &[u8]) -> Result<Cow<'_, [u8]>, (&'static str, String)> {
    match MessageEncoding::try_from(encoding) {
        Ok(MessageEncoding::Plain) => Ok(Cow::Borrowed(message)),
        Ok(MessageEncoding::Deflate) => match deflate::inflate(message) {
            Ok(plain) => Ok(Cow::Owned(plain)),
            Err(e @ deflate::InflateError::TooLarge { .. }) => {
                Err((crate::workflow::RULE_LIMITS, e.to_string()))
            }
            Err(e) => Err(("protocol", e.to_string())),
        },
        Err(_) => Err((
            "protocol",
            format!("unknown sync message encoding {encoding}"),
        )),
    }
}

fn check_record_id(id: String) -> Result<String, FrameRefusal> {
    if id.is_empty() || id.len() > MAX_RECORD_ID_BYTES {
        return Err(FrameRefusal {
            id,
            rule: "protocol",
            reason: format!("record id must be 1 to {MAX_RECORD_ID_BYTES} bytes"),
        });
    }
    Ok(id)
}

enum Received {
    Applied {
        state: Box<State>,
        reply: Option<Message>,
        confirmed: bool,
        heads: Vec<Vec<u8>>,
        /// The change-log position the record's changes were written at, unsynced.
        logged: Option<Seq>,
    },
    Refused(RuleViolation),
    Failed(String),
}

/// Applies one sync message to record `id`, if the gate admits what it changes, and writes it
/// (unsynced: the caller makes the batch durable).
fn receive(replica: &Replica, gate: &dyn Gate, state: State, incoming: Incoming) -> Received {
    let id = incoming.id.as_str();
    let existing = match replica.summary(id) {
        Ok(summary) => summary,
        Err(e) => return Received::Failed(e.to_string()),
    };
    // Answering a record the peer may not see would hand it the record's changes.
    if let Some(summary) = &existing
        && !gate.may_offer(summary)
    {
        return Received::Refused(RuleViolation {
            rule: crate::workflow::RULE_PARTY,
            message: format!("the peer is not a party to record {id}"),
        });
    }

    if let Some(held) = &existing
        && !gate.admits_everything()
        && let Some(received) = take_body_edit(replica, gate, held, &incoming)
    {
        return received;
    }

    if gate.admits_everything() {
        let adopted = match &existing {
            None => adopt(replica, id, &incoming),
            Some(held) => adopt_changes(replica, held, &incoming),
        };
        if let Some(received) = adopted {
            return received;
        }
    }

    // The guard keeps known bad messages away from Automerge; an unknown Automerge panic on a
    // peer's bytes is caught here, so it refuses that record instead of ending the session
    // (the replica reloads the record from the store on its next use).
    let held_readable = existing
        .as_ref()
        .is_some_and(|held| held.status != crate::replica::INCOMPLETE);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        apply_message(
            replica,
            id,
            gate,
            state,
            incoming.message,
            Arrived {
                deflated: incoming.deflated,
                held_readable,
            },
        )
    }));
    match outcome {
        Ok(received) => received,
        Err(_) => {
            warn!(record = %id, "Automerge panicked on a peer's sync message; refused");
            Received::Failed("the sync message made Automerge fail; refused".into())
        }
    }
}

/// Stores record `id`, new to this side, as the trusted peer sent it ([`Replica::adopt`]): if
/// the offer carries the peer's summary and its only chunk is a document saved plain whose
/// checksum holds and whose heads are the message's. The answer is an acknowledgement of those
/// heads. `None` if any of that is not so, or the record arrived meanwhile: the message is
/// then applied through Automerge as any other.
fn adopt(replica: &Replica, id: &str, incoming: &Incoming) -> Option<Received> {
    let offered = incoming.offered.as_ref()?;
    let mut chunks = incoming.message.changes.iter();
    let (Some(whole), None, false) = (chunks.next(), chunks.next(), incoming.deflated) else {
        return None;
    };
    let mut heads = guard::whole_document_heads(whole)?;
    heads.sort();
    let mut declared = incoming.message.heads.clone();
    declared.sort();
    if heads.is_empty() || heads != declared {
        return None;
    }

    let summary = offered_summary(id, offered, &heads, replica.now_ms());
    let seq = match replica.adopt(id, whole, summary) {
        Ok(Some(seq)) => seq,
        // Held by now, or past the size limit: Automerge's path refuses the latter under the
        // `limits` rule, as it does any change that takes a record past it.
        Ok(None) | Err(ReplicaError::TooLarge { .. }) => return None,
        Err(e) => return Some(Received::Failed(e.to_string())),
    };
    debug!(record = %id, "stored a record offered whole, unloaded");
    Some(acknowledged(heads, seq))
}

/// Appends the trusted peer's changes to a record this side holds as `held` says, without
/// loading it ([`Replica::adopt_changes`]): if the offer carries the peer's summary, every
/// chunk is a plain change whose checksum holds, each change depends only on `held`'s heads or
/// on changes before it in the message, and together they make the heads the message declares.
/// The answer is an acknowledgement of those heads. `None` if any of that is not so, or the
/// record changed or was loaded meanwhile: the message is then applied through Automerge.
fn adopt_changes(replica: &Replica, held: &Summary, incoming: &Incoming) -> Option<Received> {
    let offered = incoming.offered.as_ref()?;
    if incoming.deflated || incoming.message.changes.is_empty() {
        return None;
    }
    let links = guard::change_links(incoming.message.changes.iter())?;
    let mut heads = summary_heads(held)?;
    // A change that depends only on the heads, or on changes new to the record, is new to the
    // record itself: nothing stored follows a head. A change that depends on nothing is a
    // record's first, which this side may hold already; and one depending on an older change
    // may be held too. Either is left to Automerge, which knows the whole history.
    let mut known: HashSet<automerge::ChangeHash> = heads.iter().copied().collect();
    for link in &links {
        if link.deps.is_empty()
            || known.contains(&link.hash)
            || !link.deps.iter().all(|dep| known.contains(dep))
        {
            return None;
        }
        heads.retain(|head| !link.deps.contains(head));
        heads.push(link.hash);
        known.insert(link.hash);
    }
    heads.sort();
    let mut declared = incoming.message.heads.clone();
    declared.sort();
    if heads != declared {
        return None;
    }

    let id = incoming.id.as_str();
    let changes: Vec<u8> = incoming.message.changes.iter().flatten().copied().collect();
    let summary = offered_summary(id, offered, &heads, replica.now_ms());
    let seq = match replica.adopt_changes(id, &held.heads, &changes, summary) {
        Ok(Some(seq)) => seq,
        Ok(None) => return None,
        Err(e) => return Some(Received::Failed(e.to_string())),
    };
    debug!(record = %id, changes = links.len(), "appended changes to a record not loaded");
    Some(acknowledged(heads, seq))
}

/// Takes a peer's changes to record `id`, held as `held` says, without loading the record, if
/// they only put strings into its body's fields on top of the heads and this side keeps the
/// record's frontier ([`Frontier::take`], [`Replica::take_body_edit`]); the gate judges the
/// record they leave ([`Gate::admit_taken`]). The answer is an acknowledgement of the heads
/// they make, which must be the heads the peer declares. `None` if any of that is not so:
/// the message is then applied through Automerge as any other.
///
/// The hub takes a reconnecting office's edits this way: loading each record, applying the
/// change and hydrating the result was half of its CPU per edited record.
///
/// [`Frontier::take`]: crate::record::doc::frontier::Frontier::take
fn take_body_edit(
    replica: &Replica,
    gate: &dyn Gate,
    held: &Summary,
    incoming: &Incoming,
) -> Option<Received> {
    let message = &incoming.message;
    if incoming.deflated
        || message.changes.is_empty()
        || !message.need.is_empty()
        || held.conflicted
        || held.status == crate::replica::INCOMPLETE
    {
        return None;
    }
    let id = incoming.id.as_str();
    // A record in memory takes the changes through Automerge for little more, and stays
    // current there.
    if replica.is_loaded(id) {
        return None;
    }
    let frontier = replica.frontier(id, &held.heads)?;
    let changes = guard::plain_changes(message.changes.iter())?;
    // Decoding a peer's change can panic in Automerge on bytes the guard let through; the
    // message then goes to Automerge's path, which refuses it under its own catch.
    let taken = std::panic::catch_unwind(|| frontier.take(&changes)).ok()??;
    let mut declared = message.heads.clone();
    declared.sort_unstable();
    if declared != taken.heads() {
        return None;
    }
    if let Err(violation) = gate.admit_taken(id, &changes, taken.record())? {
        return Some(Received::Refused(violation));
    }

    let heads = taken.heads().to_vec();
    let summary = Summary::of_record(taken.record(), &heads, replica.now_ms(), false);
    let bytes: Vec<u8> = message.changes.iter().flatten().copied().collect();
    let seq = match replica.take_body_edit(id, &held.heads, &bytes, summary, taken) {
        Ok(Some(seq)) => seq,
        Ok(None) | Err(ReplicaError::TooLarge { .. }) => return None,
        Err(e) => return Some(Received::Failed(e.to_string())),
    };
    debug!(record = %id, changes = changes.len(), "took body edits without loading the record");
    Some(acknowledged(heads, seq))
}

/// The answer to a message stored without Automerge ([`adopt`], [`adopt_changes`]): an
/// acknowledgement that this side now holds `heads`, the peer's, and the state that leaves.
fn acknowledged(heads: Vec<automerge::ChangeHash>, seq: Seq) -> Received {
    let mut state = State::new();
    state.shared_heads = heads.clone();
    state.their_heads = Some(heads.clone());
    Received::Applied {
        state: Box::new(state),
        reply: None,
        confirmed: true,
        heads: heads.iter().map(|h| h.as_ref().to_vec()).collect(),
        logged: Some(seq),
    }
}

/// How a peer's message for a record arrived, beside the message itself.
#[derive(Debug, Clone, Copy)]
struct Arrived {
    /// Some of its chunks came deflated, as the guard found them.
    deflated: bool,
    /// This replica holds the record, and its summary says it read as a record when stored.
    held_readable: bool,
}

/// Applies a peer's `message` for record `id`.
fn apply_message(
    replica: &Replica,
    id: &str,
    gate: &dyn Gate,
    state: State,
    message: Message,
    arrived: Arrived,
) -> Received {
    let Arrived {
        deflated,
        held_readable,
    } = arrived;
    // Unsynced: the caller makes the whole batch durable before it answers (`apply_incoming`).
    let outcome = replica.change_unsynced(id, true, |doc| -> Result<_, ApplyError> {
        let before_heads = doc.get_heads();
        let before_exists = !before_heads.is_empty();
        let carries_changes = !message.changes.is_empty();
        // A record new to this replica arrives whole (see `FirstOffer`): its bytes are stored
        // as they came, if they came plain, as one document. Deflated inside, they are
        // smaller than the size the replica's limit measures, so the replica encodes the
        // document itself; and so it does a record sent as its changes. Automerge applies a
        // change whose op ids collide with an earlier one's and reads it back, but cannot
        // encode it again (it panics): stored as it came, it would make a record no one could
        // be sent (found by a break-test). A document's load rebuilds its changes, which
        // refuses such ops.
        let whole = (!before_exists && carries_changes && !deflated)
            .then(|| {
                message
                    .changes
                    .iter()
                    .flatten()
                    .copied()
                    .collect::<Vec<u8>>()
            })
            .filter(|bytes| guard::whole_document_heads(bytes).is_some());
        // Heads, needs and bloom filters change nothing in the document: only a message
        // carrying changes is put to the gate, and only if it inspects. The record as it
        // reads before them is what the gate compares with, unless the changes only put
        // values into its body's fields: its envelope and events then read as they did, and
        // the record before them need not be read (`doc::body_field_puts`).
        let inspect = carries_changes && !gate.admits_everything();
        let puts = (inspect && before_exists && held_readable)
            .then(|| guard::plain_changes(message.changes.iter()))
            .flatten()
            .and_then(|changes| doc::body_field_puts(doc, &changes));
        let before = (inspect && before_exists && puts.is_none()).then(|| doc::hydrate_record(doc));

        // The changes are applied in place, not to a trial copy: a copy of the document per
        // received message was a tenth of the hub's work taking in changes, and most of the
        // memory it touched. A refusal or a failure drops the changed document instead (an
        // error out of this closure), and the replica reloads the record from the store,
        // as it does should Automerge panic halfway (`lock_slot`).
        let mut state = state;
        if let Err(e) = doc.receive_sync_message(&mut state, message) {
            let failure = format!("sync message does not apply: {e}");
            if carries_changes {
                return Err(DocError::Load(failure).into());
            }
            return Ok((Received::Failed(failure), Known::default()));
        }
        // Changes whose dependencies have not arrived wait in Automerge's queue, unapplied
        // and unseen by the gate (it sees them once they apply). Stored as they came, they
        // sat in the record's bytes meanwhile, and a run of change chunks with one missing
        // its dependency does not load (`MissingDeps`): store only what applied.
        let whole = whole.filter(|_| doc.get_missing_deps(&[]).is_empty());
        let mut known = Known {
            record: None,
            whole,
        };
        if inspect {
            // Those of the document's changes not under its old heads are the added ones;
            // their metadata is all the gate needs, without decoding each change.
            let added = doc.get_changes_meta(&before_heads);
            if !added.is_empty() {
                let read_late;
                let before = match (&before, &puts) {
                    (Some(read), _) => Before::Read(read.as_ref()),
                    (None, Some(puts)) if puts.cover(&added) => Before::BodyFieldsPut,
                    // The message also let in changes held back for a dependency it brought:
                    // the record is read as it stood before them all.
                    (None, Some(_)) => {
                        read_late = doc
                            .fork_at(&before_heads)
                            .map_err(|e| DocError::Load(e.to_string()))
                            .and_then(|earlier| doc::hydrate_record(&earlier));
                        Before::Read(read_late.as_ref())
                    }
                    (None, None) => Before::Nothing,
                };
                known.record = gate
                    .admit(id, before, doc, &added)
                    .map_err(ApplyError::Refused)?;
            }
        }
        Ok((answer(doc, state), known))
    });
    match outcome {
        Ok(changed) => {
            let mut received = changed.result;
            if let Some(seq) = changed.seq {
                debug!(record = %id, "applied peer changes");
                if let Received::Applied { logged, .. } = &mut received {
                    *logged = Some(seq);
                }
            }
            received
        }
        Err(ApplyError::Refused(violation)) => Received::Refused(violation),
        // Each side's changes fitted; together they pass the limit (two devices of one office
        // editing offline, say). A rule of the district, not a fault of the link.
        Err(ApplyError::Replica(e @ ReplicaError::TooLarge { .. })) => {
            Received::Refused(RuleViolation {
                rule: crate::workflow::RULE_LIMITS,
                message: e.to_string(),
            })
        }
        Err(ApplyError::Replica(e)) => Received::Failed(e.to_string()),
    }
}

/// Why a peer's message left the document it changed to be dropped.
#[derive(Debug)]
enum ApplyError {
    Replica(ReplicaError),
    /// The gate refused changes already applied to the document in memory.
    Refused(RuleViolation),
}

impl From<ReplicaError> for ApplyError {
    fn from(e: ReplicaError) -> Self {
        Self::Replica(e)
    }
}

impl From<DocError> for ApplyError {
    fn from(e: DocError) -> Self {
        Self::Replica(e.into())
    }
}

/// The reply to a message just received, and whether the peer now holds all we have.
fn answer(doc: &Automerge, mut state: State) -> Received {
    let reply = doc.generate_sync_message(&mut state);
    let heads = doc.get_heads();
    let confirmed = covers(state.their_heads.as_deref(), &heads);
    let heads = heads.iter().map(|h| h.as_ref().to_vec()).collect();
    Received::Applied {
        state: Box::new(state),
        reply,
        confirmed,
        heads,
        logged: None,
    }
}

/// Whether the peer's heads include every one of ours, i.e. the peer holds all we have.
fn covers(theirs: Option<&[automerge::ChangeHash]>, ours: &[automerge::ChangeHash]) -> bool {
    theirs.is_some_and(|theirs| ours.iter().all(|h| theirs.contains(h)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordKind;
    use crate::record::doc::{actor_for, append_event, new_document};
    use crate::record::{Action, WorkflowEvent};

    const TOWNSHIP: &str = "130304100";

    /// A notice both sides hold, the state of the side that made one change since the peer
    /// confirmed it, and that change.
    fn one_change_since_confirmed() -> (Automerge, State, Vec<u8>) {
        let id = RecordKind::UrgentNotice.new_record_id();
        let record = crate::record::sample_notice(&id, TOWNSHIP);
        let mut doc = new_document(&record, actor_for(TOWNSHIP), 1_000).unwrap();
        let confirmed = State {
            shared_heads: doc.get_heads(),
            ..State::new()
        };
        let state = State::decode(&confirmed.encode()).unwrap();
        let before = doc.get_heads();
        append_event(
            &mut doc,
            &WorkflowEvent::new(Action::Updated, 2_000, TOWNSHIP),
            2_000,
        )
        .unwrap();
        let tail = doc.save_after(&before);
        (doc, resumed(state), tail)
    }

    #[test]
    fn a_stored_change_is_offered_as_automerge_offers_it() {
        let (doc, state, tail) = one_change_since_confirmed();
        let head = doc.get_heads()[0];

        let mut automerges = state.clone();
        let expected = doc.generate_sync_message(&mut automerges).unwrap();
        let mut ours = state.clone();
        let offered = offer_tail(&mut ours, head, tail.clone(), None).expect("one change since");
        assert_eq!(offered, expected);
        assert_eq!(ours, automerges);
        assert_eq!(offered.encode(), expected.encode());

        // Once anything was said or sent, or the change is not the head, Automerge decides.
        let mut sent = ours.clone();
        assert!(
            offer_tail(&mut sent, head, tail.clone(), None).is_none(),
            "sent already"
        );
        let mut fresh = State::new();
        assert!(
            offer_tail(&mut fresh, head, tail.clone(), None).is_none(),
            "nothing confirmed"
        );
        let mut other = state.clone();
        let not_head = state.shared_heads[0];
        assert!(
            offer_tail(&mut other, not_head, tail, None).is_none(),
            "not the head"
        );
        assert_eq!(other, state, "a refused offer leaves the state as it was");
    }

    /// A change whose actor's last change is no longer a head depends on it too (Automerge
    /// adds it): offered from the store only if it was taken on the shared heads, and then as
    /// Automerge offers it.
    #[test]
    fn a_change_depending_on_its_actors_own_last_one_is_offered_if_taken_on_the_shared_heads() {
        let id = RecordKind::UrgentNotice.new_record_id();
        let record = crate::record::sample_notice(&id, TOWNSHIP);
        let mut doc = new_document(&record, actor_for(TOWNSHIP), 1_000).unwrap();
        let mut bureau = doc.fork().with_actor(actor_for("bdh-yjgl"));
        let event = WorkflowEvent::new(Action::Updated, 2_000, "bdh-yjgl");
        append_event(&mut bureau, &event, 2_000).unwrap();
        doc.merge(&mut bureau).unwrap();

        let shared = doc.get_heads();
        let confirmed = State {
            shared_heads: shared.clone(),
            ..State::new()
        };
        let state = resumed(State::decode(&confirmed.encode()).unwrap());
        let event = WorkflowEvent::new(Action::Updated, 3_000, TOWNSHIP);
        append_event(&mut doc, &event, 3_000).unwrap();
        let tail = doc.save_after(&shared);
        let head = doc.get_heads()[0];
        assert_eq!(doc.get_changes(&shared)[0].deps().len(), 2);

        let mut automerges = state.clone();
        let expected = doc.generate_sync_message(&mut automerges).unwrap();
        let mut ours = state.clone();
        let offered = offer_tail(&mut ours, head, tail.clone(), Some(&shared)).unwrap();
        assert_eq!((offered, ours), (expected, automerges));

        let mut unknown = state.clone();
        assert!(offer_tail(&mut unknown, head, tail, None).is_none());
    }
}
