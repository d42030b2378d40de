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

/// Records the relay keeps about accounts.
pub mod relay {
    include!(concat!(env!("OUT_DIR"), "/comptoir.relay.rs"));
}

/// Records stored at rest by clients. Their `Debug` names the type and
/// prints no field: most fields are secrets.
pub mod storage {
    include!(concat!(env!("OUT_DIR"), "/comptoir.storage.rs"));

    macro_rules! redacted_debug {
        ($($ty:ident),* $(,)?) => {$(
            impl ::core::fmt::Debug for $ty {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.write_str(concat!(stringify!($ty), "(..)"))
                }
            }
        )*};
    }

    redacted_debug!(
        ChainRecord,
        SkippedKeyRecord,
        PendingPreKeyRecord,
        SessionStateRecord,
        SessionRecord,
        IdentityRecord,
        SignedPreKeyRecord,
        OneTimePreKeyRecord,
        EvictedRecord,
    );
}
