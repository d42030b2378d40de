//! Shared code of the fuzz targets (also compiled into the corpus replay
//! tests, see `protocol/tests/decoders.rs`).
#![forbid(unsafe_code)]

pub mod interaction;
pub mod protocol_targets;
