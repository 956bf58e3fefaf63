//! Linkage's gRPC contract, generated from `linkage/v1/*.proto`; prost types stop at the
//! gRPC layers of `linkage-node` and `linkage-hub`.

#![allow(clippy::all, clippy::pedantic, missing_docs)] // generated code

pub mod v1 {
    tonic::include_proto!("linkage.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("linkage_descriptor");
