//! `linkage-bench`: Linkage's speed and scale, measured side by side with automerge-repo and
//! samod. Runs every workload of [`linkage_tests::bench`] on real hub and node processes on
//! loopback, then the two peers' runners on the same sizes, and prints one table with the
//! ratio Linkage / best peer. Progress goes to stderr, the table to stdout.
//!
//! ```sh
//! cargo build --release --workspace --bins && target/release/linkage-bench
//! target/debug/linkage-bench --quick            # about two minutes, small sizes
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use linkage_tests::bench::{self, Plan, Progress, Sizes, Workload};

/// The servers' allocator (`hub/src/main.rs`), so the node writes the limits workload makes in
/// this process, and the scale workload's light clients, are measured as a node makes them.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "linkage-bench",
    about = "Benchmark Linkage's hub and nodes on loopback beside automerge-repo and samod"
)]
struct Args {
    /// Small sizes for a fast run (N=4, D=10, U=2, K=500, 20 and 50 simulated offices).
    #[arg(long)]
    quick: bool,
    /// Workloads to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// N: offices in the district workload, at least 1 [default: 10].
    #[arg(long, value_parser = at_least_one)]
    offices: Option<usize>,
    /// D: records each office creates, at least 1 [default: 50].
    #[arg(long, value_parser = at_least_one)]
    records: Option<usize>,
    /// U: two-field updates of each record [default: 5].
    #[arg(long)]
    updates: Option<usize>,
    /// K: records the hub holds when a new office joins, at least 1 [default: 10000].
    #[arg(long, value_parser = at_least_one)]
    cold_records: Option<usize>,
    /// Simulated offices per scale tier, comma-separated, each at least 1 [default:
    /// 200,500,2000].
    #[arg(long, value_delimiter = ',', value_parser = at_least_one)]
    scale_clients: Vec<usize>,
    /// Do not run the peers.
    #[arg(long)]
    no_peers: bool,
    /// The folder holding the peers' runners.
    #[arg(long, default_value_os_t = Plan::default_peers_dir())]
    peers_dir: PathBuf,
    /// Seconds one peer run may take, install or build included.
    #[arg(long, default_value_t = 420)]
    peer_timeout: u64,
    /// Keep data and logs in this folder (default: a temporary folder, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the table as Markdown, with the command, core count and date, to this file.
    #[arg(long)]
    results: Option<PathBuf>,
}

/// A size of a workload: a run with no offices, records or clients measures nothing, and
/// some workloads divide by it.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl Args {
    fn sizes(&self) -> Sizes {
        let mut sizes = if self.quick {
            Sizes::quick()
        } else {
            Sizes::default()
        };
        if let Some(n) = self.offices {
            sizes.offices = n;
        }
        if let Some(d) = self.records {
            sizes.records = d;
            sizes.reconnect_records = sizes.reconnect_records.min(d.max(1));
        }
        if let Some(u) = self.updates {
            sizes.updates = u;
        }
        if let Some(k) = self.cold_records {
            sizes.cold_records = k;
        }
        if !self.scale_clients.is_empty() {
            sizes.scale_clients = self.scale_clients.clone();
        }
        sizes
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = tempfile::Builder::new()
        .prefix("linkage-bench-")
        .tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    // A folder holding an earlier run would give the new one its stores: the hub and nodes
    // would start with records and the figures would measure something else. Refused, not
    // cleared: whatever is there is somebody's.
    if let Some(dir) = &args.dir {
        check_data_dir(dir)?;
    }
    // Checked before the run, not after its minutes: a results file that cannot be written
    // would lose them.
    if let Some(path) = &args.results {
        check_results_path(path)?;
    }
    let sizes = args.sizes();
    let plan = Plan {
        workloads: if args.workloads.is_empty() {
            Workload::ALL.to_vec()
        } else {
            args.workloads.clone()
        },
        peers: !args.no_peers,
        peers_dir: args.peers_dir.clone(),
        peer_timeout: Duration::from_secs(args.peer_timeout),
        root: root.clone(),
        sizes,
    };
    let progress = Progress::new();
    progress.say(format!(
        "linkage-bench ({} build) in {}: N={} D={} U={} K={} scale {:?}",
        profile(),
        root.display(),
        plan.sizes.offices,
        plan.sizes.records,
        plan.sizes.updates,
        plan.sizes.cold_records,
        plan.sizes.scale_clients
    ));

    let started = Instant::now();
    let report = tokio::select! {
        report = bench::run(&plan, &progress) => report,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; every process this run started is stopped"),
    };
    let elapsed = started.elapsed();
    progress.say(format!("done in {:.0} s", elapsed.as_secs_f64()));

    println!("{}", report.table());
    for line in report.details() {
        println!("{line}");
    }
    if let Some(path) = &args.results {
        let command: Vec<String> = std::env::args().collect();
        let text = format!(
            "## Run of {date}\n\n\
             - command: `{command}` ({profile} build)\n\
             - machine: {cores} cores (`nproc`), {os}\n\
             - sizes: N={n} offices, D={d} records each, U={u} updates; reconnect {ru} updates \
             to {rr} records; K={k}; scale tiers {tiers:?} with {sc} changes at {rate}/s\n\
             - wall time: {secs:.0} s\n\n{table}",
            date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
            command = command.join(" "),
            profile = profile(),
            cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
            os = std::env::consts::OS,
            n = plan.sizes.offices,
            d = plan.sizes.records,
            u = plan.sizes.updates,
            ru = plan.sizes.reconnect_updates,
            rr = plan.sizes.reconnect_records,
            k = plan.sizes.cold_records,
            tiers = plan.sizes.scale_clients,
            sc = plan.sizes.scale_changes,
            rate = plan.sizes.scale_rate_per_s,
            secs = elapsed.as_secs_f64(),
            table = report.markdown(),
        );
        std::fs::write(path, text)
            .with_context(|| format!("writing the results to {}", path.display()))?;
        progress.say(format!("results written to {}", path.display()));
    }
    if args.dir.is_some() {
        progress.say(format!("data and logs kept in {}", root.display()));
    }
    anyhow::ensure!(report.complete(), "some workloads failed (see above)");
    Ok(())
}

/// Checks that `dir` is a new or empty folder, before any workload starts.
fn check_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    // `symlink_metadata`: a link that leads nowhere is something there, not nothing.
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        anyhow::anyhow!(
            "--dir {} is not a folder this run can use ({e}); name a new or empty folder",
            dir.display()
        )
    })?;
    anyhow::ensure!(
        entries.count() == 0,
        "--dir {} is not empty (an earlier run's data?); name a new or empty folder",
        dir.display()
    );
    Ok(())
}

/// Refuses a `--results` path whose folder does not exist, or that names a folder.
fn check_results_path(path: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !path.is_dir(),
        "--results {} is a folder; name a file to write the table to",
        path.display()
    );
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    anyhow::ensure!(
        parent.is_dir(),
        "--results {}: the folder {} does not exist",
        path.display(),
        parent.display()
    );
    Ok(())
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}
