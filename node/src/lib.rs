//! Linkage's replica engine and office node.
//!
//! See `ARCHITECTURE.md` at the repository root for the code map and invariants.

pub mod calendar;
pub mod store;
pub mod org;
pub mod record;
pub mod workflow;
pub mod replica;
pub mod office;
pub mod sync;
pub mod config;
pub mod server;
pub mod service;
pub mod obligation;
