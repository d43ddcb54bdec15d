//! The types and service traits generated from `proto/dialtone/v1` (package `dialtone.v1`).
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("dialtone.v1");

/// The encoded file descriptor set of the protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("dialtone_v1_descriptor");
