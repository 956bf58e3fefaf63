//! The office node over real gRPC on loopback and real RocksDB in temporary folders: every
//! record kind end to end, every workflow rule named by its ID, malformed requests that must
//! leave the store untouched, and the admission check the hub runs on a node's changes.
//!
//! Nodes here run alone (no hub); where a test needs a record on a second office's node,
//! [`support::deliver`] hands the document over the way sync would.

mod admission;
mod malformed;
mod records;
mod rules;
mod support;
