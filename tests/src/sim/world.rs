//! The simulated district: one hub, seven nodes, the links between them, and the driver that
//! decides, from the seed alone, what happens next. Workload lives in [`super::workload`],
//! invariants in [`super::check`].
//!
//! A link is one node session: two `session::run_inline` tasks, each writing its frames into a
//! channel the driver drains. Drained frames wait in a per-direction queue (in order, as on one
//! HTTP/2 stream) until the driver delivers them, drops them (partition) or keeps them (hold).
//! The driver only acts between steps, when every task is parked, so each session sees at most
//! one cause to wake: that is what makes `tokio::select!`'s random branch order harmless.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use automerge::ChangeHash;
use linkage_hub::convergence::Registry;
use linkage_hub::gate::HubGate;
use linkage_hub::incarnation::node_peer_key;
use linkage_node::org::Directory;
use linkage_node::replica::{Clock, Replica};
use linkage_node::store::{MemoryStore, Store};
use linkage_node::sync::SyncError;
use linkage_node::sync::client::HUB_PEER;
use linkage_node::sync::session::{self, FiguresHandle, SessionContext, TrustHub};
use linkage_proto::v1::SyncFrame;
use linkage_proto::v1::sync_frame::Frame;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Config;
use super::rng::SimRng;

/// 2026-10-01T00:00+08:00, the start of the National Day holiday: every run starts there.
const EPOCH_MS: i64 = 1_790_784_000_000;
/// The node client's reconnect backoff (`sync::client`): 250 ms doubling to 20 s, with jitter.
const MIN_BACKOFF_MS: i64 = 250;
const MAX_BACKOFF_MS: i64 = 20_000;
const HEALTHY_SESSION_MS: i64 = 10_000;
/// The client's HTTP/2 keepalive: a ping every 15 s, dead after 10 s without an answer. A
/// partition that lasts this long ends the session on both sides.
const KEEPALIVE_DEAD_MS: i64 = 25_000;
/// Room in a session's outbound channel; large enough that no session ever waits on it.
const OUTBOUND_CAPACITY: usize = 1 << 14;
/// Same as the node's own key (`sync::client`), private there.
const HUB_STORE_ID_KEY: &str = "peer-store-id/hub";

/// The hub's organisation id in the simulation, as in the in-process tests.
pub const HUB_ORG: &str = "district-hub";

/// The nodes: six organisations of `Directory::beidaihe()`, one of them (Niutouya township)
/// with a second device so that one organisation edits offline on two replicas.
pub const NODES: [(&str, &str); 7] = [
    ("130304103", "niutouya-pc"),
    ("130304103", "niutouya-laptop"),
    ("130304100", "haibin"),
    ("bdh-yjgl", "emergency"),
    ("bdh-scjg", "market"),
    ("bdh-sfj", "justice"),
    ("bdh-gov", "government"),
];

/// Wall time under the driver's control, shared by every replica.
#[derive(Debug, Default)]
pub struct SimClock(AtomicI64);

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    ToHub,
    ToNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partition {
    /// Nothing gets through either way.
    Full,
    /// Frames from the hub to the node are lost; the node's frames still arrive.
    HubToNode,
}

impl Partition {
    fn blocks(self, dir: Dir) -> bool {
        self == Partition::Full || dir == Dir::ToNode
    }
}

#[derive(Debug)]
struct Flight {
    frame: SyncFrame,
    deliver_at_ms: i64,
}

type Inbound = mpsc::UnboundedSender<Result<SyncFrame, tonic::Status>>;

/// One live session between a node and the hub.
#[derive(Debug)]
pub struct Link {
    pub id: u64,
    opened_at_ms: i64,
    node_task: JoinHandle<Result<(), SyncError>>,
    hub_task: JoinHandle<Result<(), SyncError>>,
    from_node: mpsc::Receiver<SyncFrame>,
    from_hub: mpsc::Receiver<SyncFrame>,
    into_hub: Inbound,
    into_node: Inbound,
    to_hub: VecDeque<Flight>,
    to_node: VecDeque<Flight>,
    pub node_figures: FiguresHandle,
    pub hub_figures: FiguresHandle,
}

impl Link {
    fn queue(&mut self, dir: Dir) -> &mut VecDeque<Flight> {
        match dir {
            Dir::ToHub => &mut self.to_hub,
            Dir::ToNode => &mut self.to_node,
        }
    }

    fn input(&self, dir: Dir) -> &Inbound {
        match dir {
            Dir::ToHub => &self.into_hub,
            Dir::ToNode => &self.into_node,
        }
    }

    pub fn queued(&self) -> usize {
        self.to_hub.len() + self.to_node.len()
    }
}

#[derive(Debug)]
pub struct Node {
    pub org: String,
    pub name: String,
    pub node_id: String,
    pub store: Arc<MemoryStore>,
    /// `None` while the node is crashed; its store survives.
    pub replica: Option<Arc<Replica>>,
    pub link: Option<Link>,
    restart_at_ms: i64,
    next_connect_ms: i64,
    failures: u32,
    pub partition: Option<(Partition, i64, i64)>,
    /// Per direction, the time a hold is released.
    hold_until_ms: [Option<i64>; 2],
    /// How far this node's change log has been checked for records it must not hold.
    pub checked_seq: u64,
    /// Where this node's actor ids come from: one per (re)start, drawn from the seed.
    actors: SeededActors,
}

#[derive(Debug)]
pub struct Hub {
    pub store: Arc<MemoryStore>,
    pub replica: Option<Arc<Replica>>,
    pub registry: Option<Arc<Registry>>,
    restart_at_ms: i64,
    actors: SeededActors,
}

/// A write the office acknowledged: the record and the heads it had right after.
#[derive(Debug, Clone)]
pub struct Ack {
    pub node: usize,
    pub record: String,
    pub heads: Vec<ChangeHash>,
    pub what: String,
}

/// A frame that was delivered, kept so that it can be delivered again.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub node: usize,
    pub dir: Dir,
    pub frame: SyncFrame,
}

/// Counts every poll of every session task: when a yield passes without one, all are parked.
struct Counted<F> {
    polls: Arc<AtomicU64>,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub steps: u64,
    pub writes: u64,
    pub refused_writes: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub node_crashes: u64,
    pub hub_crashes: u64,
    pub partitions: u64,
    pub holds: u64,
    pub resets: u64,
    pub duplicates: u64,
    pub sessions: u64,
}

pub struct Sim {
    pub seed: u64,
    pub cfg: Config,
    rt: Runtime,
    /// Runs `Office`'s async calls (which use `spawn_blocking`) while the simulation's runtime
    /// is stopped, so their completion races nothing.
    pub(super) helper: Runtime,
    pub rng: SimRng,
    clock: Arc<SimClock>,
    pub directory: Arc<Directory>,
    pub hub: Hub,
    pub nodes: Vec<Node>,
    polls: Arc<AtomicU64>,
    next_link_id: u64,
    /// Every record ever acknowledged, in creation order.
    pub records: Vec<String>,
    /// The organisations each record was ever given as parties by an acknowledged write.
    pub entitled: BTreeMap<String, BTreeSet<String>>,
    pub acks: Vec<Ack>,
    pub delivered: Vec<Delivered>,
    pub violations: Vec<String>,
    /// The last time a record's sync message was sent by anyone.
    last_doc_frame_ms: i64,
    digest: DefaultHasher,
    pub stats: Stats,
    /// `LINKAGE_SIM_VERBOSE=1`: print every act, for reading one seed's story.
    verbose: bool,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now_ms", &self.now_ms())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Sim {
    pub fn new(seed: u64, cfg: Config) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime builds");
        let helper = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .build()
            .expect("a current-thread runtime builds");
        let mut rng = SimRng::new(seed);
        let clock = Arc::new(SimClock(AtomicI64::new(EPOCH_MS)));

        let hub_store = Arc::new(MemoryStore::with_store_id("hub"));
        let hub_actors = SeededActors::new(HUB_ORG, &mut rng);
        let nodes = NODES
            .iter()
            .map(|(org, name)| {
                let store = Arc::new(MemoryStore::with_store_id(format!("node-{name}")));
                let actors = SeededActors::new(org, &mut rng);
                Node {
                    org: (*org).to_owned(),
                    name: (*name).to_owned(),
                    node_id: store.store_id(),
                    store,
                    replica: None,
                    link: None,
                    restart_at_ms: EPOCH_MS,
                    next_connect_ms: EPOCH_MS,
                    failures: 0,
                    partition: None,
                    hold_until_ms: [None, None],
                    checked_seq: 0,
                    actors,
                }
            })
            .collect();
        let mut sim = Sim {
            seed,
            cfg,
            rt,
            helper,
            rng,
            clock,
            directory: Arc::new(Directory::beidaihe()),
            hub: Hub {
                store: hub_store,
                replica: None,
                registry: None,
                restart_at_ms: EPOCH_MS,
                actors: hub_actors,
            },
            nodes,
            polls: Arc::new(AtomicU64::new(0)),
            next_link_id: 0,
            records: Vec::new(),
            entitled: BTreeMap::new(),
            acks: Vec::new(),
            delivered: Vec::new(),
            violations: Vec::new(),
            last_doc_frame_ms: EPOCH_MS,
            digest: DefaultHasher::new(),
            stats: Stats::default(),
            verbose: std::env::var_os("LINKAGE_SIM_VERBOSE").is_some(),
        };
        sim.restart_hub();
        for i in 0..sim.nodes.len() {
            sim.restart_node(i);
        }
        sim
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Folds an event into the run's fingerprint: two runs of one seed must end with the same.
    pub fn trace(&mut self, event: impl Hash + std::fmt::Debug) {
        if self.verbose {
            eprintln!("[{:>8} ms] {event:?}", self.now_ms() - EPOCH_MS);
        }
        event.hash(&mut self.digest);
    }

    pub fn digest(&self) -> u64 {
        self.digest.finish()
    }

    pub fn hub_replica(&self) -> Option<&Arc<Replica>> {
        self.hub.replica.as_ref()
    }

    // ---- time and quiescence ----

    /// Runs the session tasks until every one is parked, then collects what they sent.
    pub fn settle(&mut self) {
        let polls = self.polls.clone();
        self.rt.block_on(async move {
            let mut last = polls.load(Ordering::Relaxed);
            let mut still = 0;
            // A yield returns only after every task that was ready has been polled; two in a
            // row without a poll mean nothing is ready and nothing will be until the driver
            // acts (time is paused and nothing runs on another thread).
            while still < 2 {
                tokio::task::yield_now().await;
                let now = polls.load(Ordering::Relaxed);
                if now == last {
                    still += 1;
                } else {
                    still = 0;
                    last = now;
                }
            }
        });
        self.drain();
    }

    /// Lets the tasks run for a few scheduler turns only: a crash then lands mid-step.
    fn run_briefly(&mut self, turns: u64) {
        self.rt.block_on(async move {
            for _ in 0..turns {
                tokio::task::yield_now().await;
            }
        });
    }

    pub fn advance(&mut self, ms: i64) {
        let ms = ms.max(1);
        self.rt
            .block_on(tokio::time::advance(Duration::from_millis(ms as u64)));
        self.clock.0.fetch_add(ms, Ordering::Relaxed);
        self.trace(("advance", ms));
        self.settle();
    }

    // ---- the network ----

    fn drain(&mut self) {
        for i in 0..self.nodes.len() {
            for dir in [Dir::ToHub, Dir::ToNode] {
                while let Some(link) = self.nodes[i].link.as_mut() {
                    let received = match dir {
                        Dir::ToHub => link.from_node.try_recv(),
                        Dir::ToNode => link.from_hub.try_recv(),
                    };
                    let Ok(frame) = received else { break };
                    self.enqueue(i, dir, frame);
                }
            }
        }
    }

    fn enqueue(&mut self, i: usize, dir: Dir, frame: SyncFrame) {
        let now = self.now_ms();
        self.trace_frame("sent", i, dir, &frame);
        if matches!(&frame.frame, Some(Frame::Doc(d)) if !d.message.is_empty()) {
            self.last_doc_frame_ms = now;
        }
        if self.nodes[i]
            .partition
            .is_some_and(|(p, _, _)| p.blocks(dir))
        {
            self.stats.dropped += 1;
            return;
        }
        let latency = self.rng.range(1, self.cfg.max_latency_ms);
        let link = self.nodes[i].link.as_mut().expect("draining a live link");
        let queue = link.queue(dir);
        let after = queue.back().map_or(0, |f| f.deliver_at_ms);
        queue.push_back(Flight {
            frame,
            deliver_at_ms: (now + latency).max(after),
        });
    }

    fn is_held(&self, i: usize, dir: Dir) -> bool {
        self.nodes[i].hold_until_ms[dir as usize].is_some()
    }

    /// Queues whose next frame may be delivered now, and the earliest time one may be later.
    fn deliverable(&self) -> (Vec<(usize, Dir)>, Option<i64>) {
        let now = self.now_ms();
        let mut ready = Vec::new();
        let mut next = None::<i64>;
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(link) = &node.link else { continue };
            for (dir, queue) in [(Dir::ToHub, &link.to_hub), (Dir::ToNode, &link.to_node)] {
                let Some(head) = queue.front() else { continue };
                if self.is_held(i, dir) {
                    continue;
                }
                if head.deliver_at_ms <= now {
                    ready.push((i, dir));
                } else {
                    next = Some(next.map_or(head.deliver_at_ms, |n| n.min(head.deliver_at_ms)));
                }
            }
        }
        (ready, next)
    }

    /// Delivers the next frame of one queue, chosen by the seed; waits for one if none is due.
    pub fn deliver_one(&mut self) -> bool {
        let (ready, next) = self.deliverable();
        if ready.is_empty() {
            if let Some(at) = next {
                let wait = at - self.now_ms();
                self.advance(wait);
                return self.deliver_one();
            }
            return false;
        }
        let (i, dir) = *self.rng.pick(&ready);
        let link_id = self.nodes[i].link.as_ref().map(|l| l.id);
        let frame = self.push_next(i, dir);
        self.settle();
        self.reap();
        // Keep it for replay only if the session lived to handle it.
        if let Some(frame) = frame
            && self.nodes[i].link.as_ref().map(|l| l.id) == link_id
            && matches!(&frame.frame, Some(Frame::Doc(d)) if !d.message.is_empty())
        {
            self.delivered.push(Delivered {
                node: i,
                dir,
                frame,
            });
        }
        true
    }

    fn push_next(&mut self, i: usize, dir: Dir) -> Option<SyncFrame> {
        let link = self.nodes[i].link.as_mut()?;
        let flight = link.queue(dir).pop_front()?;
        let _ = link.input(dir).send(Ok(flight.frame.clone()));
        self.stats.delivered += 1;
        let frame = flight.frame;
        self.trace_frame("delivered", i, dir, &frame);
        Some(frame)
    }

    /// Hands a copy of an earlier frame to the current session of the same node and side.
    pub fn redeliver(&mut self, earlier: &Delivered) -> bool {
        let Some(link) = self.nodes[earlier.node].link.as_ref() else {
            return false;
        };
        let sent = link
            .input(earlier.dir)
            .send(Ok(earlier.frame.clone()))
            .is_ok();
        self.trace_frame("redelivered", earlier.node, earlier.dir, &earlier.frame);
        sent
    }

    pub fn start_partition(&mut self, i: usize, kind: Partition, for_ms: i64) {
        let now = self.now_ms();
        self.nodes[i].partition = Some((kind, now, now + for_ms));
        self.stats.partitions += 1;
        self.trace(("partition", i, kind, for_ms));
        // What was on the wire in a cut direction is lost with it.
        if let Some(link) = self.nodes[i].link.as_mut() {
            for dir in [Dir::ToHub, Dir::ToNode] {
                if kind.blocks(dir) {
                    self.stats.dropped += link.queue(dir).len() as u64;
                    link.queue(dir).clear();
                }
            }
        }
    }

    pub fn start_hold(&mut self, i: usize, dir: Dir, for_ms: i64) {
        let until = self.now_ms() + for_ms;
        self.nodes[i].hold_until_ms[dir as usize] = Some(until);
        self.stats.holds += 1;
        self.trace(("hold", i, dir, for_ms));
    }

    /// Ends faults whose time is up, notices dead links, restarts and reconnects.
    pub fn maintain(&mut self) {
        let now = self.now_ms();
        if self.hub.replica.is_none() && now >= self.hub.restart_at_ms {
            self.restart_hub();
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() && now >= self.nodes[i].restart_at_ms {
                self.restart_node(i);
            }
            for dir in 0..2 {
                if self.nodes[i].hold_until_ms[dir].is_some_and(|t| now >= t) {
                    self.nodes[i].hold_until_ms[dir] = None;
                }
            }
            if let Some((_, since, until)) = self.nodes[i].partition {
                if now >= until {
                    self.nodes[i].partition = None;
                } else if now - since >= KEEPALIVE_DEAD_MS && self.nodes[i].link.is_some() {
                    self.trace(("keepalive-dead", i));
                    self.teardown(i);
                }
            }
            if self.nodes[i].link.is_none()
                && self.nodes[i].replica.is_some()
                && now >= self.nodes[i].next_connect_ms
            {
                self.connect(i);
            }
        }
    }

    /// Brings every fault to an end: heals partitions, releases holds, restarts what is down.
    pub fn heal_everything(&mut self) {
        let now = self.now_ms();
        for node in &mut self.nodes {
            node.partition = None;
            node.hold_until_ms = [None, None];
            node.restart_at_ms = node.restart_at_ms.min(now);
            node.next_connect_ms = node.next_connect_ms.min(now + MAX_BACKOFF_MS);
        }
        self.hub.restart_at_ms = self.hub.restart_at_ms.min(now);
        self.trace("heal");
        self.maintain();
        self.settle();
    }

    // ---- sessions ----

    fn spawn_session(
        &self,
        ctx: SessionContext,
        mut inbound: mpsc::UnboundedReceiver<Result<SyncFrame, tonic::Status>>,
        outbound: mpsc::Sender<SyncFrame>,
    ) -> JoinHandle<Result<(), SyncError>> {
        let stream = futures::stream::poll_fn(move |cx| inbound.poll_recv(cx));
        self.rt.spawn(Counted {
            polls: self.polls.clone(),
            inner: Box::pin(session::run_inline(ctx, stream, outbound)),
        })
    }

    /// Opens a session as `sync::client` and the hub's `Sync` service would: hello, forget a
    /// recreated peer, register with the convergence tracker, then both ends run the session.
    fn connect(&mut self, i: usize) {
        let now = self.now_ms();
        let reachable = self.hub.replica.is_some() && self.nodes[i].partition.is_none();
        let (Some(hub), Some(registry), Some(replica), true) = (
            self.hub.replica.clone(),
            self.hub.registry.clone(),
            self.nodes[i].replica.clone(),
            reachable,
        ) else {
            self.trace(("connect-failed", i));
            self.nodes[i].failures += 1;
            self.nodes[i].next_connect_ms = now + self.backoff(self.nodes[i].failures);
            return;
        };
        let node = &self.nodes[i];
        let (org, node_id) = (node.org.clone(), node.node_id.clone());

        let hub_store_id = hub.store().store_id();
        let store = replica.store();
        if store.meta(HUB_STORE_ID_KEY).unwrap().as_deref() != Some(hub_store_id.as_bytes()) {
            store.forget_peer(HUB_PEER).unwrap();
            store
                .put_meta(HUB_STORE_ID_KEY, hub_store_id.as_bytes())
                .unwrap();
        }
        // A node's store id is its node id here (a restarted node keeps its store).
        let node_key = node_peer_key(hub.store().as_ref(), &node_id, &node_id).unwrap();
        let hub_figures = registry.connected(&node_id, &org).unwrap();
        let node_figures = FiguresHandle::default();

        let (node_out, from_node) = mpsc::channel(OUTBOUND_CAPACITY);
        let (hub_out, from_hub) = mpsc::channel(OUTBOUND_CAPACITY);
        let (into_hub, hub_in) = mpsc::unbounded_channel();
        let (into_node, node_in) = mpsc::unbounded_channel();
        let node_ctx = SessionContext {
            replica,
            peer_key: HUB_PEER.to_owned(),
            peer_org: "hub".to_owned(),
            gate: Arc::new(TrustHub),
            figures: node_figures.clone(),
            log_watch: None,
            offer_summaries: false,
        };
        let hub_ctx = SessionContext {
            replica: hub,
            peer_key: node_key,
            peer_org: org.clone(),
            gate: Arc::new(HubGate {
                org,
                directory: self.directory.clone(),
                refill: false,
            }),
            figures: hub_figures.clone(),
            log_watch: None,
            offer_summaries: true,
        };
        let node_task = self.spawn_session(node_ctx, node_in, node_out);
        let hub_task = self.spawn_session(hub_ctx, hub_in, hub_out);
        self.next_link_id += 1;
        self.stats.sessions += 1;
        self.trace(("connected", i, self.next_link_id));
        self.nodes[i].link = Some(Link {
            id: self.next_link_id,
            opened_at_ms: now,
            node_task,
            hub_task,
            from_node,
            from_hub,
            into_hub,
            into_node,
            to_hub: VecDeque::new(),
            to_node: VecDeque::new(),
            node_figures,
            hub_figures,
        });
        self.settle();
    }

    /// The client's backoff, with the jitter drawn from the seed.
    fn backoff(&mut self, failures: u32) -> i64 {
        let exp = (MIN_BACKOFF_MS << failures.min(16)).min(MAX_BACKOFF_MS);
        exp * self.rng.range(500, 1500) / 1000
    }

    /// Ends node `i`'s session on both sides, losing whatever was on the wire.
    pub fn teardown(&mut self, i: usize) {
        let Some(link) = self.nodes[i].link.take() else {
            return;
        };
        link.node_task.abort();
        link.hub_task.abort();
        if let Some(registry) = &self.hub.registry {
            registry.disconnected(&self.nodes[i].node_id).unwrap();
        }
        let now = self.now_ms();
        let node = &mut self.nodes[i];
        if now - link.opened_at_ms >= HEALTHY_SESSION_MS {
            node.failures = 0;
        }
        node.failures += 1;
        let failures = node.failures;
        self.nodes[i].next_connect_ms = now + self.backoff(failures);
        self.trace(("teardown", i, link.id));
        self.settle();
    }

    /// A session that ended by itself is a failure the simulation did not inject: the frames
    /// were all well formed, so neither side should ever give up on its own.
    pub fn reap(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(link) = self.nodes[i].link.as_mut() else {
                continue;
            };
            let (side, task) = if link.node_task.is_finished() {
                ("node", &mut link.node_task)
            } else if link.hub_task.is_finished() {
                ("hub", &mut link.hub_task)
            } else {
                continue;
            };
            let message = match self.rt.block_on(task) {
                Ok(Ok(())) => "ended".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("panicked: {e}"),
            };
            self.violations.push(format!(
                "the {side} side of {}'s session ended by itself at {} ms: {message}",
                self.nodes[i].name,
                self.end_ms()
            ));
            self.teardown(i);
        }
    }

    // ---- crashes ----

    pub fn crash_node(&mut self, i: usize, down_ms: i64) {
        self.teardown(i);
        self.nodes[i].replica = None;
        self.nodes[i].restart_at_ms = self.now_ms() + down_ms;
        self.stats.node_crashes += 1;
        self.trace(("crash-node", i, down_ms));
        self.settle();
    }

    fn restart_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let store: Arc<dyn Store> = node.store.clone();
        let actor = node.actors.next();
        let replica = Replica::open_as(&node.org, actor, store, self.clock.clone(), 1024).unwrap();
        node.replica = Some(Arc::new(replica));
        node.failures = 0;
        node.next_connect_ms = self.clock.now_ms();
        self.trace(("restart-node", i));
    }

    pub fn crash_hub(&mut self, down_ms: i64) {
        for i in 0..self.nodes.len() {
            self.teardown(i);
        }
        self.hub.replica = None;
        self.hub.registry = None;
        self.hub.restart_at_ms = self.now_ms() + down_ms;
        self.stats.hub_crashes += 1;
        self.trace(("crash-hub", down_ms));
        self.settle();
    }

    fn restart_hub(&mut self) {
        let store: Arc<dyn Store> = self.hub.store.clone();
        let actor = self.hub.actors.next();
        // As `linkage-hub` runs, with fewer documents and frontiers kept than a seed makes
        // records, so that edits meet records loaded and not, with and without a frontier,
        // and take both the Automerge path and the unloaded one (`Frontier::take`).
        let replica = Arc::new(
            Replica::open_as(HUB_ORG, actor, store, self.clock.clone(), 16)
                .unwrap()
                .keep_frontiers(24),
        );
        self.hub.registry = Some(Arc::new(Registry::load(replica.clone()).unwrap()));
        self.hub.replica = Some(replica);
        self.trace("restart-hub");
    }

    /// Delivers one frame and crashes its receiver (or the hub) a few scheduler turns later,
    /// between two of the session's store calls.
    pub fn deliver_then_crash(&mut self) {
        let (ready, _) = self.deliverable();
        if ready.is_empty() {
            return;
        }
        let (i, dir) = *self.rng.pick(&ready);
        self.push_next(i, dir);
        let turns = self.rng.range(0, 12) as u64;
        self.run_briefly(turns);
        let down = self.rng.range(100, 15_000);
        if dir == Dir::ToHub && self.rng.chance(300) {
            self.crash_hub(down);
        } else {
            self.crash_node(i, down);
        }
    }

    // ---- the two phases ----

    /// One step of the fault phase: the seed picks what happens, then every task runs until
    /// parked and the party invariant is checked.
    pub fn step(&mut self) {
        self.stats.steps += 1;
        self.maintain();
        let n = self.nodes.len();
        match self.rng.below(1000) {
            0..=449 => {
                self.deliver_one();
            }
            450..=569 => {
                let ms = self.rng.range(1, 3_000);
                self.advance(ms);
            }
            570..=769 => self.write(),
            770..=799 => self.twin_edit(),
            800..=839 => {
                let i = self.rng.index(n);
                if self.nodes[i].partition.is_none() {
                    let kind = if self.rng.chance(500) {
                        Partition::Full
                    } else {
                        Partition::HubToNode
                    };
                    let ms = self.rng.range(200, 60_000);
                    self.start_partition(i, kind, ms);
                }
            }
            840..=879 => {
                let i = self.rng.index(n);
                let dir = if self.rng.chance(500) {
                    Dir::ToHub
                } else {
                    Dir::ToNode
                };
                let ms = self.rng.range(50, 20_000);
                self.start_hold(i, dir, ms);
            }
            880..=904 => {
                let i = self.rng.index(n);
                if self.nodes[i].replica.is_some() {
                    let ms = self.rng.range(100, 30_000);
                    self.crash_node(i, ms);
                }
            }
            905..=914 => {
                if self.hub.replica.is_some() {
                    let ms = self.rng.range(100, 20_000);
                    self.crash_hub(ms);
                }
            }
            915..=934 => self.deliver_then_crash(),
            935..=964 => {
                let i = self.rng.index(n);
                self.stats.resets += 1;
                self.teardown(i);
            }
            _ => {
                if !self.delivered.is_empty() {
                    let index = self.rng.index(self.delivered.len());
                    let earlier = self.delivered[index].clone();
                    self.stats.duplicates += 1;
                    self.redeliver(&earlier);
                }
            }
        }
        self.settle();
        self.reap();
        self.check_parties();
    }

    /// Runs until nothing moves: no frame waiting, every node connected, no record offered
    /// and unconfirmed, and no sync message for longer than an offer may wait. `None` if that
    /// never happens within `limit_ms`.
    pub fn run_until_quiet(&mut self, limit_ms: i64) -> Option<i64> {
        let start = self.now_ms();
        loop {
            self.maintain();
            if self.deliver_ready() {
                continue;
            }
            let now = self.now_ms();
            if self.quiet() {
                return Some(now - start);
            }
            if now - start > limit_ms {
                return None;
            }
            let (_, next) = self.deliverable();
            let wait = next.map_or(1_000, |at| (at - now).clamp(1, 1_000));
            self.advance(wait);
        }
    }

    fn deliver_ready(&mut self) -> bool {
        let (ready, _) = self.deliverable();
        if ready.is_empty() {
            return false;
        }
        self.deliver_one()
    }

    fn quiet(&self) -> bool {
        let now = self.now_ms();
        self.hub.replica.is_some()
            && now - self.last_doc_frame_ms > 45_000
            && self.nodes.iter().all(|n| {
                n.link.as_ref().is_some_and(|l| {
                    l.queued() == 0
                        && l.node_figures.lock().unwrap().pending_to_peer == 0
                        && l.hub_figures.lock().unwrap().pending_to_peer == 0
                })
            })
    }

    pub fn end_ms(&self) -> i64 {
        self.now_ms() - EPOCH_MS
    }
}

/// The actor ids a simulated server opens its replica with, one per (re)start as
/// `Replica::open` draws them: `actor_for`'s layout (organisation, separator, 16 bytes), the
/// 16 bytes from the seed and the count of opens instead of the system's randomness, so a run
/// replays exactly without drawing from the run's own generator at each restart.
#[derive(Debug)]
struct SeededActors {
    base: Vec<u8>,
    opened: u64,
}

impl SeededActors {
    fn new(org: &str, rng: &mut SimRng) -> Self {
        let mut base = linkage_node::record::doc::actor_for(org)
            .to_bytes()
            .to_vec();
        let tail = base.len() - 16;
        base[tail..tail + 8].copy_from_slice(&rng.next_u64().to_le_bytes());
        base[tail + 8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        SeededActors { base, opened: 0 }
    }

    fn next(&mut self) -> automerge::ActorId {
        let mut bytes = self.base.clone();
        let tail = bytes.len() - 8;
        let mixed =
            u64::from_le_bytes(bytes[tail..].try_into().expect("eight bytes")) ^ self.opened;
        bytes[tail..].copy_from_slice(&mixed.to_le_bytes());
        self.opened += 1;
        automerge::ActorId::from(bytes)
    }
}

impl Sim {
    fn trace_frame(&mut self, what: &str, i: usize, dir: Dir, frame: &SyncFrame) {
        match &frame.frame {
            Some(Frame::Doc(d)) => {
                d.message.hash(&mut self.digest);
                let bytes = d.message.len();
                self.trace((what, i, dir, "doc", &d.record_id, bytes, d.heads.len()));
            }
            Some(Frame::Progress(p)) => self.trace((what, i, dir, "progress", p.pending_records)),
            Some(Frame::Rejected(r)) => {
                self.trace((what, i, dir, "rejected", &r.record_id, &r.rule, &r.reason))
            }
            Some(Frame::Hello(_)) => self.trace((what, i, dir, "hello")),
            None => self.trace((what, i, dir, "empty")),
        }
    }
}
