//! Linkage's replica engine and office node.
//!
//! See `ARCHITECTURE.md` at the repository root for the code map and invariants.

pub mod store;
