//! Proof under faults: real processes killed and restarted under a write load while their
//! links misbehave ([`kill_loop`]), the same check against a deliberately unsafe store that
//! must fail (the negative control), the figures of the fuzz properties that feed bad bytes to
//! every decoder ([`fuzz`]; the properties live in `node/tests/fuzz.rs` and
//! `hub/tests/fuzz_sync.rs`), and the report that puts them together ([`report`]).
//! `linkage-faults` runs them; `tests/FAULTS.md` records the last results and the commands.

pub mod cluster;
pub mod fuzz;
pub mod kill_loop;
pub mod ledger;
pub mod report;
