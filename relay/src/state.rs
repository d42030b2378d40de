//! What every connection shares: storage, the hub of connected devices,
//! limits, metrics and the configuration.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comptoir_protocol::{AccountId, OperatorKey, OperatorKeyPair, RateCard};

use crate::blobs::BlobStore;
use crate::clock::Clock;
use crate::config::Config;
use crate::hub::Hub;
use crate::limits::{PerAddress, RateLimiter};
use crate::metrics::Metrics;
use crate::phone::{CodeLimits, CodeSender, PhoneCodes};

/// Shared relay state (one per server).
#[derive(Debug)]
pub(crate) struct Relay<S> {
    pub(crate) store: S,
    pub(crate) hub: Hub,
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) account_limiter: RateLimiter<AccountId>,
    pub(crate) address_limiter: RateLimiter<IpAddr>,
    /// Open connections per address (or IPv6 /64), checked at accept.
    pub(crate) per_address: Arc<PerAddress>,
    /// New accounts, relay-wide.
    pub(crate) registration_limiter: RateLimiter<()>,
    /// New accounts per address prefix.
    pub(crate) registration_prefix_limiter: RateLimiter<IpAddr>,
    /// Prekey fetches per (requester account, target account, device).
    pub(crate) prekey_fetch_limiter: RateLimiter<(AccountId, AccountId, u32)>,
    /// PreKeysLow pushes per device (one per interval).
    pub(crate) prekeys_low_limiter: RateLimiter<(AccountId, u32)>,
    pub(crate) codes: PhoneCodes,
    pub(crate) code_sender: Arc<dyn CodeSender>,
    pub(crate) next_connection: AtomicU64,
    /// The clock of the time rules (the window, accept times).
    pub(crate) clock: Arc<Clock>,
    /// The operator's public key, published in every `AuthOk`.
    pub(crate) operator_key: OperatorKey,
    /// The operator's signing key: it signs bill heads and the rate card
    /// a business fetches.
    pub(crate) operator: Arc<OperatorKeyPair>,
    /// The rate card in effect (checked from the configuration at start).
    pub(crate) rate_card: RateCard,
    /// Every rate card the relay has priced with, oldest first (the last
    /// is `rate_card`): older bill lines were priced with them.
    pub(crate) rate_cards: Vec<RateCard>,
    /// Encrypted attachments.
    pub(crate) blobs: BlobStore,
    /// Attachment chunks (uploads and reads) per account.
    pub(crate) blob_chunk_limiter: RateLimiter<AccountId>,
    /// The relay's franking keys: the current one tags each pushed copy.
    pub(crate) franking: Arc<crate::franking::FrankingKeys>,
    /// Status posts (24 hours each).
    pub(crate) status_posts: crate::status_posts::StatusPosts,
    /// Leases shared by each account's devices (in memory).
    pub(crate) leases: crate::leases::Leases,
}

impl<S> Relay<S> {
    // Reason: each argument is a separate piece the server builds at start;
    // a struct holding them would only restate this signature.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: S,
        config: Config,
        metrics: Arc<Metrics>,
        code_sender: Arc<dyn CodeSender>,
        clock: Arc<Clock>,
        operator: Arc<OperatorKeyPair>,
        (rate_card, rate_cards): (RateCard, Vec<RateCard>),
        blobs: BlobStore,
        franking: Arc<crate::franking::FrankingKeys>,
        status_posts: crate::status_posts::StatusPosts,
    ) -> Self {
        let limits = &config.limits;
        let chunks_per_sec = blobs.limits().chunks_per_sec;
        Self {
            store,
            hub: Hub::default(),
            account_limiter: RateLimiter::new(limits.account_rate_per_sec, limits.account_burst),
            address_limiter: RateLimiter::new(limits.address_rate_per_sec, limits.address_burst),
            per_address: PerAddress::new(limits.max_connections_per_address),
            registration_limiter: RateLimiter::new(
                limits.registration_rate_per_sec,
                limits.registration_burst,
            ),
            registration_prefix_limiter: RateLimiter::new(
                limits.registration_rate_per_prefix_per_sec,
                limits.registration_prefix_burst,
            ),
            prekey_fetch_limiter: RateLimiter::new(
                limits.prekey_fetch_rate_per_sec,
                limits.prekey_fetch_burst,
            ),
            prekeys_low_limiter: RateLimiter::new(
                1000.0 / limits.prekeys_low_interval_ms.max(1) as f64,
                1.0,
            ),
            codes: PhoneCodes::new(CodeLimits {
                ttl: Duration::from_millis(limits.code_ttl_ms),
                attempts: limits.code_attempts,
                window: Duration::from_millis(limits.code_window_ms),
                requests_per_number: limits.code_requests_per_number,
                requests_per_account: limits.code_requests_per_account,
                max_pending: limits.max_pending_codes,
            }),
            code_sender,
            metrics,
            config,
            next_connection: AtomicU64::new(1),
            clock,
            operator_key: operator.public(),
            operator,
            rate_card,
            rate_cards,
            blobs,
            blob_chunk_limiter: RateLimiter::new(chunks_per_sec, 2.0 * chunks_per_sec),
            franking,
            status_posts,
            leases: crate::leases::Leases::default(),
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
