//! The kill loop's short form on real processes (`linkage-faults` runs the long one): a hub and
//! two offices killed with SIGKILL at random moments under a write load and through link faults,
//! then every acknowledged write checked on each node and the hub. And its negative control:
//! the same loop against a node whose store has no write-ahead log must report loss, which
//! proves the check can fail. And a run of 0 cycles, which would check nothing, refused.
//!
//! The schedule's seed is printed; `LINKAGE_FAULTS_SEED=N` replays it. Needs the binaries:
//! `cargo build --workspace --bins` first.

use linkage_tests::faults::kill_loop::{self, KillLoopConfig};
use linkage_tests::faults::report::render_kill_loop;

fn seed() -> u64 {
    std::env::var("LINKAGE_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kills_under_load_lose_and_double_no_acknowledged_write() -> anyhow::Result<()> {
    let config = KillLoopConfig::new(5, seed());
    let outcome = kill_loop::run(&config, &mut |line| eprintln!("{line}")).await?;
    let figures = render_kill_loop(&outcome);
    eprintln!("{figures}");
    assert!(outcome.kills_total() == 5, "{figures}");
    assert!(
        outcome.converged,
        "the offices did not converge:\n{figures}"
    );
    assert!(
        outcome.missing.is_empty() && outcome.duplicated.is_empty(),
        "replay with LINKAGE_FAULTS_SEED={}:\n{figures}",
        config.seed
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_a_write_ahead_log_is_caught_losing_writes() -> anyhow::Result<()>
{
    let config = KillLoopConfig {
        negative_control: true,
        ..KillLoopConfig::new(2, seed())
    };
    let outcome = kill_loop::run(&config, &mut |line| eprintln!("{line}")).await?;
    let figures = render_kill_loop(&outcome);
    eprintln!("{figures}");
    assert!(outcome.restart_checks > 0, "{figures}");
    assert!(
        !outcome.missing.is_empty(),
        "the check found no loss from a store without a write-ahead log; it proves nothing \
         (replay with LINKAGE_FAULTS_SEED={}):\n{figures}",
        config.seed
    );
    Ok(())
}

/// `linkage-faults --cycles 0` once printed HELD having killed and written nothing; 0 cycles
/// are refused before any process starts, in the kill loop and in the report alike.
#[test]
fn zero_cycles_are_refused_with_a_clear_error() {
    for args in [
        &["--cycles", "0"][..],
        &["--cycles", "0", "--negative-control"],
        &["report", "--cycles", "0", "--seed", "7"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_linkage-faults"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("linkage-faults runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded: {stderr}");
        assert!(
            output.stdout.is_empty(),
            "{args:?} printed a verdict: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(stderr.contains("at least 1 cycle"), "{args:?}: {stderr}");
    }
}
