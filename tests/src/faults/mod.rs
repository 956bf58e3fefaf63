//! Proof under faults: real processes killed and restarted under a write load while their
//! links misbehave ([`kill_loop`]), the same check against a deliberately unsafe store that
//! must fail (the negative control), a sweep of bad bytes through every decoder ([`fuzz`]), and
//! the report that puts the figures together ([`report`]). `linkage-faults` runs them;
//! `tests/FAULTS.md` records the last results and the commands.

pub mod cluster;
pub mod kill_loop;
pub mod ledger;
pub mod fuzz;
pub mod report;
