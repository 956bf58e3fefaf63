//! The deterministic district simulation (`linkage_tests::sim`): many seeds of faults, each
//! ending with the invariants checked; failing seeds kept below as regression tests.

use std::time::Instant;

use linkage_tests::sim::{self, Config};

#[test]
fn simulation_200_seeds() {
    let seeds = sim::seeds_from_env(200);
    let threads = sim::threads_from_env();
    let started = Instant::now();
    let outcomes = sim::run_seeds(&seeds, &Config::default(), threads);
    let failed: Vec<&sim::Outcome> = outcomes.iter().filter(|o| o.failed()).collect();
    for outcome in &failed {
        eprintln!("{}", outcome.report());
    }
    let slowest = outcomes.iter().max_by_key(|o| o.wall);
    eprintln!(
        "{} seeds on {threads} threads in {:.1?}; slowest seed {:?}",
        outcomes.len(),
        started.elapsed(),
        slowest.map(|o| (o.seed, o.wall)),
    );
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed; first: {}",
        failed.len(),
        outcomes.len(),
        failed[0].report()
    );
}

#[test]
fn a_seed_replays_exactly() {
    let cfg = Config::default();
    let first = sim::run_seed(7, &cfg);
    let again = sim::run_seed(7, &cfg);
    assert_eq!(first.digest, again.digest, "seed 7 ran differently twice");
    assert_eq!(first.violations, again.violations);
    assert!(first.stats.delivered > 0 && first.stats.writes > 0, "{:?}", first.stats);
}
