//! What every connection shares: storage, the hub of connected devices,
//! limits, metrics and the configuration.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comptoir_protocol::AccountId;

use crate::config::Config;
use crate::hub::Hub;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::phone::{CodeSender, PhoneCodes};

/// Shared relay state (one per server).
#[derive(Debug)]
pub(crate) struct Relay<S> {
    pub(crate) store: S,
    pub(crate) hub: Hub,
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) account_limiter: RateLimiter<AccountId>,
    pub(crate) address_limiter: RateLimiter<IpAddr>,
    pub(crate) codes: PhoneCodes,
    pub(crate) code_sender: Arc<dyn CodeSender>,
    pub(crate) next_connection: AtomicU64,
}

impl<S> Relay<S> {
    pub(crate) fn new(
        store: S,
        config: Config,
        metrics: Arc<Metrics>,
        code_sender: Arc<dyn CodeSender>,
    ) -> Self {
        let limits = &config.limits;
        Self {
            store,
            hub: Hub::default(),
            account_limiter: RateLimiter::new(limits.account_rate_per_sec, limits.account_burst),
            address_limiter: RateLimiter::new(limits.address_rate_per_sec, limits.address_burst),
            codes: PhoneCodes::new(
                Duration::from_millis(limits.code_ttl_ms),
                limits.code_attempts,
            ),
            code_sender,
            metrics,
            config,
            next_connection: AtomicU64::new(1),
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
