//! The deterministic district simulation (`linkage_tests::sim`): many seeds of faults, each
//! ending with the invariants checked; failing seeds kept below as regression tests.

use std::time::Instant;

use linkage_tests::sim::{self, Config};

#[test]
fn simulation_200_seeds() {
    let seeds = sim::seeds_from_env(200);
    let threads = sim::threads_from_env();
    let started = Instant::now();
    let outcomes = sim::run_seeds(&seeds, &Config::from_env(), threads);
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
    assert!(
        first.stats.delivered > 0 && first.stats.writes > 0,
        "{:?}",
        first.stats
    );
}

/// Seed 1 with every workload: two offices act twice on a new record within one millisecond.
///
/// FIXME: the hub refuses both records for good. `workflow::admit_change` replays a record's
/// new events in stated-time order `(at_ms, id)` instead of the order they were appended, so
/// the government's `updated` (smaller random id, same millisecond) is taken for the opening
/// event and its `formed` refused, and Niutouya's `closed` is checked before its `extended`.
/// Neither record ever reaches the hub or its other parties. Ordering new events causally
/// (by the changes that added them) would fix it; then this test should expect no violation.
#[test]
fn regression_seed_1() {
    let outcome = sim::run_seed(1, &Config::everything());
    let refused = |who: &str, record: &str, reason: &str| {
        outcome.violations.iter().any(|v| {
            v.starts_with(&format!("the hub refused {who}'s changes to {record}"))
                && v.contains(reason)
        })
    };
    assert!(
        refused("government", "SI-bc2ab3483576b36d", "may not record formed"),
        "{}",
        outcome.report()
    );
    assert!(
        refused("niutouya-laptop", "SI-1dc28fc7eb573ea9", "is closed"),
        "{}",
        outcome.report()
    );
    assert!(
        outcome
            .violations
            .iter()
            .any(|v| v == "the hub never received record SI-bc2ab3483576b36d"),
        "{}",
        outcome.report()
    );
}

/// Seed 133 with contested events: the Justice Bureau and the other party to an urgent notice
/// both close it while apart.
///
/// FIXME: both closings were valid where they were made, but the hub checks the second against
/// its copy, which is already closed, and refuses it (`workflow::admit_change`, "record is
/// closed"). The refused change stays in the Justice Bureau's replica, so every later change it
/// makes to the notice (here a body edit and an added party) is refused with it and never
/// reaches anyone: the acknowledged writes are lost to the district, and the record's copies
/// never converge. design.md wants contradictory events surfaced, never dropped; admitting a
/// concurrent close (or any event already superseded) as a contradiction would fix it, and this
/// test should then expect no violation.
#[test]
fn regression_seed_133() {
    let cfg = Config {
        contested_events: true,
        ..Config::default()
    };
    let outcome = sim::run_seed(133, &cfg);
    let has = |text: &str| outcome.violations.iter().any(|v| v.contains(text));
    assert!(
        has("the hub refused justice's changes to UN-8076b40b882185e2")
            && has("record UN-8076b40b882185e2 is closed"),
        "{}",
        outcome.report()
    );
    assert!(
        has("government lacks the change")
            && has("(add party bdh-ly) acknowledged by justice for UN-8076b40b882185e2"),
        "{}",
        outcome.report()
    );
}
