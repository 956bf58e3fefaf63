//! Linkage's replica engine and office node.
//!
//! See `ARCHITECTURE.md` at the repository root for the code map and invariants.

pub mod calendar;
pub mod config;
pub mod obligation;
pub mod office;
pub mod org;
pub mod record;
pub mod replica;
pub mod server;
pub mod service;
pub mod store;
pub mod sync;
pub mod tls;
pub mod watch;
pub mod workflow;
