//! `linkage-faults`: the kill loop on real processes, its negative control, and the fault
//! report. See `tests/FAULTS.md` for what each run proves and the last figures.
//!
//! ```sh
//! cargo build --workspace --bins
//! target/debug/linkage-faults                      # 50 kill cycles, random seed (printed)
//! target/debug/linkage-faults --cycles 5 --seed 7  # a short, reproducible schedule
//! target/debug/linkage-faults --negative-control   # must report loss
//! target/debug/linkage-faults report               # short loop + control + fuzz properties
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use linkage_tests::faults::kill_loop::{self, KillLoopConfig, KillLoopOutcome};

#[derive(Debug, Parser)]
#[command(
    name = "linkage-faults",
    about = "Kill -9 loop on real processes under link faults, its negative control, and the fault report"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Kill cycles (at least 1): each SIGKILLs a node or the hub under a write load and
    /// restarts it.
    #[arg(long, default_value_t = 50, value_parser = at_least_one_cycle)]
    cycles: u32,
    /// Seed of the schedule (victims, faults, waits); random when omitted, always printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Run against a node whose store has no write-ahead log: the check must report loss.
    #[arg(long)]
    negative_control: bool,
    /// Kill processes only, without link faults.
    #[arg(long)]
    no_link_faults: bool,
    /// Keep data, logs and the acknowledgement log in this folder.
    #[arg(long)]
    keep: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The short kill loop, the negative control and the fuzz sweep, with every figure.
    Report {
        #[arg(long)]
        seed: Option<u64>,
        /// Cycles of the short kill loop and of the negative control (at least 1).
        #[arg(long, default_value_t = 5, value_parser = at_least_one_cycle)]
        cycles: u32,
        /// Cases per fuzz property; the CI counts written in the tests when omitted.
        #[arg(long)]
        fuzz_cases: Option<u32>,
    },
}

/// Refuses 0 cycles before anything starts: such a run kills and writes nothing, so there is
/// nothing its verdict could hold for.
fn at_least_one_cycle(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => {
            Err("a run needs at least 1 cycle; with 0 nothing is killed, written or checked".into())
        }
        Ok(cycles) => Ok(cycles),
        Err(e) => Err(format!("not a number of cycles: {e}")),
    }
}

fn random_seed() -> u64 {
    rand::random()
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    match args.command {
        Some(Command::Report {
            seed,
            cycles,
            fuzz_cases,
        }) => {
            let seed = seed.unwrap_or_else(random_seed);
            let report =
                linkage_tests::faults::report::run(seed, cycles, fuzz_cases, &mut |line| {
                    eprintln!("{line}")
                })
                .await?;
            println!("{}", report.render());
            Ok(if report.held() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        None => {
            let config = KillLoopConfig {
                cycles: args.cycles,
                seed: args.seed.unwrap_or_else(random_seed),
                negative_control: args.negative_control,
                link_faults: !args.no_link_faults,
                keep_dir: args.keep,
            };
            let outcome = kill_loop::run(&config, &mut |line| eprintln!("{line}")).await?;
            println!(
                "{}",
                linkage_tests::faults::report::render_kill_loop(&outcome)
            );
            Ok(if expected(&outcome) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The real run must hold; the negative control must not.
fn expected(outcome: &KillLoopOutcome) -> bool {
    outcome.held() != outcome.negative_control
}
