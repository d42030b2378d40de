//! Types generated from `proto/` by `build.rs` (prost). Convert to domain
//! types at the edge; nothing else in the crate depends on these layouts.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Client <-> relay frames and the envelope.
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/comptoir.wire.rs"));
}

/// The encrypted content carried inside a ratchet message.
pub mod content {
    include!(concat!(env!("OUT_DIR"), "/comptoir.content.rs"));
}

/// Records stored at rest by clients.
pub mod storage {
    include!(concat!(env!("OUT_DIR"), "/comptoir.storage.rs"));
}
