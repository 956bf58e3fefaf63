//! The benchmark harness behind `linkage-bench`: the issue "Speed and scale, measured side by
//! side with automerge-repo". Each workload module starts what it measures (real hub and node
//! processes on loopback, or the library in this process), returns [`Figure`]s, and stops
//! everything it started; [`peers`] runs the two peer runners on the same sizes; [`report`]
//! puts Linkage and the best peer side by side with their ratio.
//!
//! Nothing here asserts on timings: the smoke test runs [`Sizes::tiny`] to keep the harness
//! from rotting, and the numbers are for people to read.

use std::path::PathBuf;
use std::time::Duration;

pub mod cold_start;
pub mod district;
pub mod limits;
pub mod peers;
pub mod procstat;
pub mod progress;
pub mod report;
pub mod scale;
pub mod text;

pub use progress::Progress;
pub use report::{Figure, Metric, Report, Unit};

use linkage_proto::v1 as pb;
use linkage_proto::v1::records_client::RecordsClient;
use tonic::transport::Channel;

/// Follows a node's `Records.Watch` stream from change-log position `after` (0: from the
/// start), handing each record summary to `seen` until it returns `true`. A node still starting refuses the call, and a restart cuts
/// the stream; either way the watch is asked again from the last position received. Workloads
/// wait on these change events, as the peers' runners do, instead of polling the nodes.
pub async fn follow(
    mut client: RecordsClient<Channel>,
    mut after: u64,
    mut seen: impl FnMut(pb::RecordSummary) -> bool,
) {
    loop {
        if let Ok(response) = client.watch(pb::WatchRequest { after }).await {
            let mut changes = response.into_inner();
            while let Ok(Some(change)) = changes.message().await {
                after = change.position;
                if let Some(summary) = change.record
                    && seen(summary)
                {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How big each workload is. [`Sizes::default`] is the issue's; [`Sizes::quick`] runs in
/// about a minute; [`Sizes::tiny`] is the smoke test's.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// N: offices, each its own node process.
    pub offices: usize,
    /// D: records each office creates.
    pub records: usize,
    /// U: updates of two fields applied to each record.
    pub updates: usize,
    /// Records office 0 edits while offline in the reconnect workload.
    pub reconnect_records: usize,
    /// Updates office 0 makes to them while offline.
    pub reconnect_updates: usize,
    /// K: records the hub holds when a new office joins.
    pub cold_records: usize,
    /// Light clients per scale tier.
    pub scale_clients: Vec<usize>,
    /// Changes in each tier's trickle, and how many per second.
    pub scale_changes: usize,
    pub scale_rate_per_s: f64,
    /// How long each limits measurement runs.
    pub limits_window: Duration,
    /// How long a workload may wait for sync before it reports a timeout.
    pub sync_timeout: Duration,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            offices: 10,
            records: 50,
            updates: 5,
            reconnect_records: 50,
            reconnect_updates: 100,
            cold_records: 10_000,
            scale_clients: vec![200, 500, 2_000],
            scale_changes: 20,
            scale_rate_per_s: 2.0,
            limits_window: Duration::from_secs(3),
            sync_timeout: Duration::from_secs(240),
        }
    }
}

impl Sizes {
    pub fn quick() -> Self {
        Sizes {
            offices: 4,
            records: 10,
            updates: 2,
            reconnect_records: 10,
            reconnect_updates: 20,
            cold_records: 500,
            scale_clients: vec![20, 50],
            scale_changes: 5,
            scale_rate_per_s: 5.0,
            limits_window: Duration::from_millis(700),
            sync_timeout: Duration::from_secs(90),
        }
    }

    /// The smoke test's sizes: every code path, seconds of work.
    pub fn tiny() -> Self {
        Sizes {
            offices: 2,
            records: 3,
            updates: 1,
            reconnect_records: 2,
            reconnect_updates: 4,
            cold_records: 20,
            scale_clients: vec![4],
            scale_changes: 2,
            scale_rate_per_s: 10.0,
            limits_window: Duration::from_millis(200),
            sync_timeout: Duration::from_secs(90),
        }
    }
}

/// The workloads, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Workload {
    /// N offices create and update records offline, then sync; then one reconnects.
    District,
    /// A new office joins a hub holding K records.
    ColdStart,
    /// The disk's synced-batch rate against the node's durable write rate; Automerge's apply
    /// cost.
    Limits,
    /// One hub, hundreds to thousands of light clients, a trickle of changes.
    Scale,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::District,
        Workload::ColdStart,
        Workload::Limits,
        Workload::Scale,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::District => "district",
            Workload::ColdStart => "cold start",
            Workload::Limits => "limits",
            Workload::Scale => "scale",
        }
    }
}

/// One run of the harness.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sizes: Sizes,
    pub workloads: Vec<Workload>,
    /// Run the peers' runners beside Linkage (district and reconnect figures).
    pub peers: bool,
    /// The folder holding `automerge-repo/run.sh` and `samod/run.sh`.
    pub peers_dir: PathBuf,
    /// How long one peer run may take, build or install included.
    pub peer_timeout: Duration,
    /// Where processes keep their data and logs.
    pub root: PathBuf,
}

impl Plan {
    /// The peers' folder, `shared/bench` beside the repository: found from the working folder
    /// or the executable's, so a binary built in another clone still finds it.
    pub fn default_peers_dir() -> PathBuf {
        let compiled_in = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let starts = [
            std::env::current_dir().ok(),
            std::env::current_exe().ok(),
            Some(compiled_in.clone()),
        ];
        starts
            .into_iter()
            .flatten()
            .find_map(|start| {
                start
                    .ancestors()
                    .map(|a| a.join("shared").join("bench"))
                    .find(|dir| dir.join("samod").is_dir())
            })
            .unwrap_or_else(|| compiled_in.join("../../shared/bench"))
    }
}

/// Runs every planned workload, then the peers, and gathers the figures. A workload that fails
/// is reported as failed and the others still run.
pub async fn run(plan: &Plan, progress: &Progress) -> Report {
    let mut report = Report::new(plan);
    for workload in &plan.workloads {
        progress.say(format!("== {} ==", workload.name()));
        let root = plan.root.join(workload.name().replace(' ', "-"));
        let outcome = match workload {
            Workload::District => district::run(&plan.sizes, &root, progress).await,
            Workload::ColdStart => cold_start::run(&plan.sizes, &root, progress).await,
            Workload::Limits => limits::run(&plan.sizes, &root, progress).await,
            Workload::Scale => scale::run(&plan.sizes, &root, progress).await,
        };
        match outcome {
            Ok(figures) => report.figures.extend(figures),
            Err(e) => {
                progress.say(format!("{} failed: {e:#}", workload.name()));
                report
                    .failures
                    .push((workload.name().to_owned(), format!("{e:#}")));
            }
        }
    }
    if plan.peers && plan.workloads.contains(&Workload::District) {
        for peer in peers::Peer::ALL {
            progress.say(format!("== peer {} ==", peer.name()));
            let run = peers::run(peer, plan, progress).await;
            progress.say(format!("{}: {}", peer.name(), run.outcome.describe()));
            report.peers.push(run);
        }
    }
    report
}
