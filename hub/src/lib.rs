//! The district hub: accepts node sessions, admits and merges their changes, redistributes each
//! record to the nodes of its parties, tracks convergence, and serves department feeds.
//!
//! See `ARCHITECTURE.md` at the repository root for the code map and invariants.

pub mod config;
pub mod convergence;
pub mod feed;
pub mod gate;
pub mod incarnation;
pub mod server;
pub mod service;
