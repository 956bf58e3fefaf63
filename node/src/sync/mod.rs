//! Sync between a node and the hub (and later hub and hub): one long-lived bidirectional gRPC
//! stream per session, multiplexing records, resumable by change-log cursor.
//!
//! [`session`] is the protocol both ends run; [`client`] is the node's side of the connection,
//! reconnecting by itself. The hub's side lives in `linkage-hub` and plugs its routing and
//! validation in through [`session::Gate`].

pub mod client;
pub mod deflate;
pub mod guard;
pub mod session;

/// Version of the frame protocol in `proto/linkage/v1/sync.proto`. A peer speaking another
/// version is refused at hello. Version 2 added deflated first offers (`MessageEncoding`).
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest gRPC message either side accepts. One frame carries one record's sync message
/// and records are capped at [`crate::replica::MAX_DOCUMENT_BYTES`]; anything larger is refused
/// by tonic before it is decoded.
pub const MAX_FRAME_BYTES: usize = crate::replica::MAX_DOCUMENT_BYTES + 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("peer closed the session")]
    Closed,
    #[error("gRPC transport failed: {0}")]
    Transport(String),
    #[error("peer broke the protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Replica(#[from] crate::replica::ReplicaError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl From<tonic::Status> for SyncError {
    fn from(status: tonic::Status) -> Self {
        SyncError::Transport(format!("{}: {}", status.code(), status.message()))
    }
}
