//! Types generated from `proto/` by `build.rs` (prost). Convert to domain
//! types at the edge; nothing else in the crate depends on these layouts.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Client <-> relay frames and the envelope.
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/comptoir.wire.rs"));

    /// Written by hand: a report holds the plaintext and its franking key.
    impl ::core::fmt::Debug for ReportContents {
        fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
            f.write_str("ReportContents(..)")
        }
    }
}

/// The encrypted content carried inside a ratchet message.
pub mod content {
    include!(concat!(env!("OUT_DIR"), "/comptoir.content.rs"));

    /// Written by hand: the franking key is a secret until the message is
    /// reported, so only its length is shown.
    impl ::core::fmt::Debug for Content {
        fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
            let Self {
                message_id,
                sent_at_ms,
                body,
                labels,
                franking_key,
                padding,
            } = self;
            f.debug_struct("Content")
                .field("message_id", message_id)
                .field("sent_at_ms", sent_at_ms)
                .field("body", body)
                .field("labels", labels)
                .field("franking_key_len", &franking_key.len())
                .field("padding_len", &padding.len())
                .finish()
        }
    }
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
