//! Relay configuration: defaults that run with no setup, overridable from a
//! TOML file and from environment variables / flags (see `src/bin/relay.rs`
//! and docs/OPERATIONS.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default WebSocket listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
/// Default `/healthz` + `/metrics` listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7701";
/// Default admin API listen address (loopback: the operator's tools only).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7702";
/// Default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "relay-data";
/// Default time an undelivered envelope is kept: 30 days.
pub const DEFAULT_MESSAGE_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// Default time an account may go without authenticating before it is
/// deleted: 24 hours (a client logs in right after it registers).
pub const DEFAULT_UNAUTHENTICATED_ACCOUNT_TTL_MS: u64 = 24 * 3600 * 1000;

/// Everything the relay reads at start.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// WebSocket (ws:// or, with `tls`, wss://) listen address.
    pub listen: SocketAddr,
    /// Plain-HTTP listener for `/healthz` and `/metrics`; `None` disables it.
    pub http_listen: Option<SocketAddr>,
    /// The operator's admin API (`relay admin`); `None` disables it. Keep
    /// it on loopback or a private network: its token travels in clear.
    pub admin_listen: Option<SocketAddr>,
    /// Directory of the embedded sled store (created if missing).
    pub data_dir: PathBuf,
    /// The operator signing key (created 0600 at first start); default
    /// `data_dir/operator.key`.
    pub operator_key_file: Option<PathBuf>,
    /// The admin API's bearer token (created 0600 at first start); default
    /// `data_dir/admin.token`.
    pub admin_token_file: Option<PathBuf>,
    /// Certificate chain and private key (PEM) to serve wss://.
    pub tls: Option<TlsFiles>,
    /// This relay as clients dial it (`wss://relay.example:443`, see
    /// `comptoir_protocol::relay_origin`): devices sign it when they
    /// authenticate, so a relay that relays the challenge gets a signature
    /// this one refuses. Empty: derived from the listen address at start
    /// (`ws(s)://IP:PORT`, plus `localhost` for a loopback address).
    pub public_origins: Vec<String>,
    /// How long an undelivered envelope is kept before it expires.
    pub message_ttl_ms: u64,
    /// How often expired envelopes are garbage-collected.
    pub gc_interval_ms: u64,
    /// sled page cache size (accounts, keys, directory).
    pub cache_capacity_bytes: u64,
    /// The mail log's segment size and checkpoint threshold.
    pub mail_log: MailLogConfig,
    /// Abuse and resource limits.
    pub limits: Limits,
    /// The rate card: what a delivered template costs the business
    /// (docs/OPERATIONS.md, "Rate card").
    pub rates: RatesConfig,
    /// Bill heads signed on the relay's schedule (the `[billing]` table,
    /// docs/OPERATIONS.md, "Periodic bill heads").
    pub billing: crate::billing::BillingConfig,
    /// Attachments (the `[blobs]` table): sizes per kind, the quota per
    /// account, how long blobs are kept.
    pub blobs: crate::blobs::BlobLimits,
    /// Quality rating and messaging tiers (the `[tiers]` table): the tier
    /// limits and the rating thresholds (docs/OPERATIONS.md, "Quality
    /// rating and messaging tiers").
    pub tiers: crate::quality::TiersConfig,
    /// Bench-only (cargo feature `bench-unmetered`, never in a release
    /// build of the relay): what a benchmark's relay leaves out of
    /// franking and the ledger ([`BenchMetering`]). Not a configuration
    /// key (a file cannot set it): only a program embedding the library
    /// sets it, to measure what franking and the ledger cost (`relay-load
    /// bench --compare-franking-ledger`, `--unmetered`).
    #[cfg(feature = "bench-unmetered")]
    #[serde(skip)]
    pub bench_metering: BenchMetering,
}

/// What a benchmark's relay leaves out (bench-only, cargo feature
/// `bench-unmetered`; see [`Config::bench_metering`]).
#[cfg(feature = "bench-unmetered")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BenchMetering {
    /// Nothing: franking required of businesses, the ledger appended,
    /// billed templates' acks signed and checked (every real relay).
    #[default]
    Metered,
    /// Franking and the ledger off, signed delivery kept: no franking
    /// commitment required, nothing appended to the ledger (its entries
    /// are kept in memory only, neither in the log nor in checkpoints),
    /// but a billed template's ack must still be signed by the customer's
    /// device, is checked, and its signature is passed on in `Delivered`
    /// (`relay-load bench --compare-franking-ledger`).
    FrankingAndLedgerOff,
    /// Franking, the ledger and signed delivery off: templates are
    /// delivered unbilled and their acks are not checked (`relay-load
    /// bench --unmetered`).
    Unmetered,
}

/// Default price of a utility template outside the window: £0.005.
pub const DEFAULT_UTILITY_OUTSIDE_MILLIONTHS: i64 = 5_000;
/// Default price of an authentication template, inside or outside: £0.03.
pub const DEFAULT_AUTHENTICATION_MILLIONTHS: i64 = 30_000;
/// Default price of a marketing template, inside or outside: £0.09.
pub const DEFAULT_MARKETING_MILLIONTHS: i64 = 90_000;

/// The rate card as configured: an explicit table of each billed category
/// inside and outside the 24-hour window, in integer millionths of the
/// currency unit. Given, `[rates]` must name every category, and each both
/// prices; a negative or missing price is refused at start. Service
/// replies are not in it: they are never billed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatesConfig {
    /// ISO 4217 currency code (three uppercase letters), e.g. `GBP`.
    pub currency: String,
    /// Utility templates.
    pub utility: Option<PricesConfig>,
    /// Authentication templates.
    pub authentication: Option<PricesConfig>,
    /// Marketing templates.
    pub marketing: Option<PricesConfig>,
    /// Each Status key a business's post delivers to a subscriber, in
    /// millionths (one price: Status has no window); 0, the default, is
    /// free and bills nothing.
    #[serde(default)]
    pub status: i64,
}

/// One category's prices, millionths of the currency unit (signed so a
/// negative one is refused with a clear message rather than a type error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricesConfig {
    /// Inside the 24-hour window.
    pub inside_window: i64,
    /// Outside it.
    pub outside_window: i64,
}

impl Default for RatesConfig {
    fn default() -> Self {
        Self {
            currency: "GBP".into(),
            utility: Some(PricesConfig {
                inside_window: 0,
                outside_window: DEFAULT_UTILITY_OUTSIDE_MILLIONTHS,
            }),
            authentication: Some(PricesConfig {
                inside_window: DEFAULT_AUTHENTICATION_MILLIONTHS,
                outside_window: DEFAULT_AUTHENTICATION_MILLIONTHS,
            }),
            marketing: Some(PricesConfig {
                inside_window: DEFAULT_MARKETING_MILLIONTHS,
                outside_window: DEFAULT_MARKETING_MILLIONTHS,
            }),
            status: 0,
        }
    }
}

impl RatesConfig {
    /// The rate card, or why the table is refused.
    pub fn card(&self) -> Result<comptoir_protocol::RateCard, String> {
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "[rates] currency = {:?} is not an ISO 4217 code (three uppercase letters, e.g. \"GBP\")",
                self.currency
            ));
        }
        let prices = |name: &str, row: Option<PricesConfig>| {
            let row = row.ok_or_else(|| {
                format!(
                    "[rates.{name}] is missing: the rate card must price every category (utility, authentication, marketing), inside_window and outside_window, in millionths of the currency unit"
                )
            })?;
            let price = |key: &str, value: i64| {
                u64::try_from(value).map_err(|_| {
                    format!("[rates.{name}] {key} = {value} is negative; prices are millionths of the currency unit, 0 or more")
                })
            };
            Ok::<_, String>(comptoir_protocol::Prices {
                inside_window: price("inside_window", row.inside_window)?,
                outside_window: price("outside_window", row.outside_window)?,
            })
        };
        let status = u64::try_from(self.status).map_err(|_| {
            format!(
                "[rates] status = {} is negative; prices are millionths of the currency unit, 0 or more",
                self.status
            )
        })?;
        Ok(comptoir_protocol::RateCard {
            // Set when the relay records the card it starts with.
            effective_from_ms: 0,
            currency: self.currency.clone(),
            utility: prices("utility", self.utility)?,
            authentication: prices("authentication", self.authentication)?,
            marketing: prices("marketing", self.marketing)?,
            status,
        })
    }
}

/// Tuning of the mail log (`data_dir/mail-log`); the defaults suit
/// production, small values make checkpoints frequent (tests).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailLogConfig {
    /// A segment file is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// No checkpoint until the log has grown by at least this much (and
    /// past twice what is live).
    pub checkpoint_min_bytes: u64,
    /// Size of the disk-space reserve (`mail-log/space-reserve`), given
    /// back when the disk is full so acks and deletions still commit while
    /// sends are refused; 0 disables it.
    pub reserve_bytes: u64,
}

impl MailLogConfig {
    /// Smallest accepted value of either setting: below it every append
    /// (or every group) would start a new file.
    pub const MIN_BYTES: u64 = 4096;

    /// Refuse settings that would make the log thrash.
    fn check(&self) -> Result<(), String> {
        for (key, value) in [
            ("segment_bytes", self.segment_bytes),
            ("checkpoint_min_bytes", self.checkpoint_min_bytes),
        ] {
            if value < Self::MIN_BYTES {
                return Err(format!(
                    "[mail_log] {key} = {value} is too small; use at least {}",
                    Self::MIN_BYTES
                ));
            }
        }
        Ok(())
    }
}

impl Default for MailLogConfig {
    fn default() -> Self {
        let log = crate::storage::mail_log::LogOptions::default();
        Self {
            segment_bytes: log.segment_bytes,
            checkpoint_min_bytes: log.checkpoint_min_bytes,
            reserve_bytes: log.reserve_bytes,
        }
    }
}

/// PEM files for TLS.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Limits, each refused with a typed error frame. Every one trades abuse
/// resistance against legitimate bursts; the defaults suit a small relay.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open connections at most; further ones wait to be accepted.
    pub max_connections: usize,
    /// Open connections per remote address (IPv6: per /64) at most; a
    /// further one is closed at accept, before any handshake. 0: no cap.
    pub max_connections_per_address: usize,
    /// Time for the TLS and WebSocket handshakes of a new connection.
    pub handshake_timeout_ms: u64,
    /// Sustained new accounts per second, relay-wide (0 disables).
    pub registration_rate_per_sec: f64,
    /// Burst of new accounts, relay-wide.
    pub registration_burst: f64,
    /// Sustained new accounts per second per address prefix (IPv4 /24,
    /// IPv6 /48; 0 disables).
    pub registration_rate_per_prefix_per_sec: f64,
    /// Burst of new accounts per address prefix.
    pub registration_prefix_burst: f64,
    /// Envelopes queued per recipient device; beyond, sends get QUEUE_FULL.
    /// Bounds the disk one offline device can cost.
    pub max_queue_per_device: u64,
    /// Sustained authenticated requests per second per account.
    pub account_rate_per_sec: f64,
    /// Burst of authenticated requests per account.
    pub account_burst: f64,
    /// Sustained connections + unauthenticated frames per second per IP.
    pub address_rate_per_sec: f64,
    /// Burst of connections + unauthenticated frames per IP.
    pub address_burst: f64,
    /// Failed authentications allowed on one connection before it closes.
    pub auth_attempts: u32,
    /// Time to authenticate after the WebSocket opens.
    pub auth_timeout_ms: u64,
    /// An authenticated connection that sends nothing (not even a ping) for
    /// this long is closed.
    pub idle_timeout_ms: u64,
    /// A write (or the TLS/WebSocket handshake) that takes longer than this
    /// closes the connection: the peer is not reading.
    pub write_timeout_ms: u64,
    /// Largest outgoing backlog kept for one connection, in bytes.
    pub max_write_buffer_bytes: usize,
    /// Envelopes pushed to a device and not yet acked, at most. Bounds what a
    /// slow reader can make the relay buffer.
    pub delivery_window: usize,
    /// Sends from one connection waiting for their durable write, at most.
    pub max_pending_sends: usize,
    /// One-time prekeys stored per device at most.
    pub max_one_time_prekeys: u32,
    /// When a device's one-time prekeys fall below this, it gets PreKeysLow.
    pub prekeys_low_threshold: u32,
    /// A device gets PreKeysLow at most once per this interval.
    pub prekeys_low_interval_ms: u64,
    /// Sustained prekey fetches per second by one account for one target
    /// device (0 disables); beyond, the fetch is rate limited, so one
    /// account cannot drain another device's one-time prekeys.
    pub prekey_fetch_rate_per_sec: f64,
    /// Burst of prekey fetches by one account for one target device.
    pub prekey_fetch_burst: f64,
    /// How long a phone verification code is valid.
    pub code_ttl_ms: u64,
    /// Wrong codes allowed per phone number per `code_window_ms`, across
    /// every code and account (a guesser cannot reset them by asking for
    /// new codes).
    pub code_attempts: u32,
    /// The window over which code requests and wrong codes are counted.
    pub code_window_ms: u64,
    /// Codes sent to one phone number per window.
    pub code_requests_per_number: u32,
    /// Codes one account may request per window.
    pub code_requests_per_account: u32,
    /// Pending codes (and numbers and accounts tracked) at most; beyond,
    /// `RequestCode` is rate limited.
    pub max_pending_codes: usize,
    /// An account that has not authenticated this long after its
    /// registration is deleted, with its keys, bindings and queued mail
    /// (0: never). Throwaway registrations otherwise stay forever.
    pub unauthenticated_account_ttl_ms: u64,
    /// Refuse a send to a business account from an account with no
    /// verified phone number (`PHONE_REQUIRED`).
    pub require_phone_for_business: bool,
    /// Consent requests one business may make per UTC day; beyond, they
    /// are dropped (the business gets the same answer either way).
    pub consent_requests_per_business_per_day: u64,
    /// New conversations (to an account it never talked with) an account
    /// with no verified phone number may start per UTC day
    /// (`QUOTA_EXCEEDED` beyond).
    pub new_conversations_per_day_without_phone: u64,
}

impl Config {
    /// Whether this relay requires a franking commitment on every message
    /// a business sends: always, except a benchmark's relay with franking
    /// off ([`Config::bench_metering`], feature `bench-unmetered`).
    pub fn requires_franking(&self) -> bool {
        #[cfg(feature = "bench-unmetered")]
        {
            self.bench_metering == BenchMetering::Metered
        }
        #[cfg(not(feature = "bench-unmetered"))]
        {
            true
        }
    }

    /// Whether this relay takes a billed template's ack only when signed
    /// by the customer's device (signed delivery, checked and passed on
    /// in `Delivered`): always, except a benchmark's relay with
    /// [`BenchMetering::Unmetered`].
    pub fn checks_signed_delivery(&self) -> bool {
        #[cfg(feature = "bench-unmetered")]
        {
            self.bench_metering != BenchMetering::Unmetered
        }
        #[cfg(not(feature = "bench-unmetered"))]
        {
            true
        }
    }

    /// Whether this relay appends to the ledger (a billed template's entry
    /// at accept, its signed delivery at ack) in its mail log: always,
    /// except a benchmark's relay with franking and the ledger off.
    pub fn appends_ledger(&self) -> bool {
        self.requires_franking()
    }

    /// Where the operator key lives.
    pub fn operator_key_path(&self) -> PathBuf {
        self.operator_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::operator::OPERATOR_KEY_FILE))
    }

    /// Where the admin token lives.
    pub fn admin_token_path(&self) -> PathBuf {
        self.admin_token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::operator::ADMIN_TOKEN_FILE))
    }

    /// The origins devices may sign: [`Self::public_origins`] (normalised)
    /// or, when empty, those derived from the address the relay listens on.
    pub fn origins_for(&self, listening: SocketAddr, tls: bool) -> Vec<String> {
        let mut out = Vec::new();
        for origin in &self.public_origins {
            let lower = origin.trim_end_matches('/').to_ascii_lowercase();
            if !out.contains(&lower) {
                out.push(lower);
            }
        }
        if out.is_empty() {
            let ip = listening.ip();
            let port = listening.port();
            out.push(comptoir_protocol::relay_origin(tls, &ip.to_string(), port));
            if ip.is_loopback() || ip.is_unspecified() {
                out.push(comptoir_protocol::relay_origin(tls, "localhost", port));
                out.push(comptoir_protocol::relay_origin(tls, "127.0.0.1", port));
                out.push(comptoir_protocol::relay_origin(tls, "::1", port));
                out.dedup();
            }
        }
        out
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: parse_addr(DEFAULT_LISTEN),
            http_listen: Some(parse_addr(DEFAULT_HTTP_LISTEN)),
            admin_listen: Some(parse_addr(DEFAULT_ADMIN_LISTEN)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            operator_key_file: None,
            admin_token_file: None,
            tls: None,
            public_origins: Vec::new(),
            message_ttl_ms: DEFAULT_MESSAGE_TTL_MS,
            gc_interval_ms: 60_000,
            cache_capacity_bytes: 256 * 1024 * 1024,
            mail_log: MailLogConfig::default(),
            limits: Limits::default(),
            rates: RatesConfig::default(),
            billing: crate::billing::BillingConfig::default(),
            blobs: crate::blobs::BlobLimits::default(),
            tiers: crate::quality::TiersConfig::default(),
            #[cfg(feature = "bench-unmetered")]
            bench_metering: BenchMetering::Metered,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_connections_per_address: 256,
            handshake_timeout_ms: 5_000,
            registration_rate_per_sec: 20.0,
            registration_burst: 200.0,
            registration_rate_per_prefix_per_sec: 0.5,
            registration_prefix_burst: 50.0,
            max_queue_per_device: 10_000,
            account_rate_per_sec: 100.0,
            account_burst: 500.0,
            address_rate_per_sec: 50.0,
            address_burst: 200.0,
            auth_attempts: 3,
            auth_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            write_timeout_ms: 10_000,
            max_write_buffer_bytes: 4 * comptoir_protocol::MAX_FRAME_SIZE,
            delivery_window: 256,
            max_pending_sends: 256,
            max_one_time_prekeys: 500,
            prekeys_low_threshold: 10,
            prekeys_low_interval_ms: 60_000,
            prekey_fetch_rate_per_sec: 10.0 / 3600.0,
            prekey_fetch_burst: 10.0,
            code_ttl_ms: 10 * 60 * 1000,
            code_attempts: 5,
            code_window_ms: 3600 * 1000,
            code_requests_per_number: 3,
            code_requests_per_account: 10,
            max_pending_codes: 10_000,
            unauthenticated_account_ttl_ms: DEFAULT_UNAUTHENTICATED_ACCOUNT_TTL_MS,
            require_phone_for_business: false,
            consent_requests_per_business_per_day: 1000,
            new_conversations_per_day_without_phone: 20,
        }
    }
}

fn parse_addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7700)))
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}; check the path given with --config")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {source}; see docs/OPERATIONS.md for the keys")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
}

impl Config {
    /// Load a TOML file (missing keys take their defaults).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Parse TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        let config: Self = toml::from_str(text)?;
        config
            .mail_log
            .check()
            .map_err(<toml::de::Error as serde::de::Error>::custom)?;
        config
            .rates
            .card()
            .map_err(<toml::de::Error as serde::de::Error>::custom)?;
        config
            .tiers
            .check()
            .map_err(<toml::de::Error as serde::de::Error>::custom)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_partial_toml() -> Result<(), toml::de::Error> {
        let config = Config::from_toml("listen = \"0.0.0.0:9000\"\n[limits]\nauth_attempts = 7\n")?;
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.auth_attempts, 7);
        assert_eq!(config.message_ttl_ms, DEFAULT_MESSAGE_TTL_MS);
        assert_eq!(Config::default().listen.to_string(), DEFAULT_LISTEN);
        assert!(Config::from_toml("nonsense = 1").is_err());
        assert!(Config::from_toml("[mail_log]\nsegment_bytes = 0\n").is_err());
        let tuned = Config::from_toml("[mail_log]\nsegment_bytes = 4096\n")?;
        assert_eq!(tuned.mail_log.segment_bytes, 4096);
        assert_eq!(
            tuned.mail_log.checkpoint_min_bytes,
            MailLogConfig::default().checkpoint_min_bytes
        );
        Ok(())
    }

    #[test]
    fn the_rate_card_is_explicit_and_refused_when_bad() -> Result<(), toml::de::Error> {
        let card = Config::default()
            .rates
            .card()
            .map_err(<toml::de::Error as serde::de::Error>::custom)?;
        assert_eq!(card.utility.inside_window, 0);
        assert_eq!(card.utility.outside_window, 5_000);
        assert_eq!(card.marketing.inside_window, 90_000);
        let full = "[rates]\ncurrency = \"EUR\"\n\
            [rates.utility]\ninside_window = 0\noutside_window = 6000\n\
            [rates.authentication]\ninside_window = 1\noutside_window = 2\n\
            [rates.marketing]\ninside_window = 3\noutside_window = 4\n";
        let config = Config::from_toml(full)?;
        let card = config
            .rates
            .card()
            .map_err(<toml::de::Error as serde::de::Error>::custom)?;
        assert_eq!(
            (card.currency.as_str(), card.utility.outside_window),
            ("EUR", 6000)
        );
        let negative = full.replace("outside_window = 6000", "outside_window = -5");
        let error = Config::from_toml(&negative).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("[rates.utility] outside_window = -5 is negative")),
            "{error:?}"
        );
        let missing = full.replace(
            "[rates.marketing]\ninside_window = 3\noutside_window = 4\n",
            "",
        );
        let error = Config::from_toml(&missing).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("[rates.marketing] is missing")),
            "{error:?}"
        );
        let half = full.replace("outside_window = 4\n", "");
        assert!(Config::from_toml(&half).is_err());
        // Status is free unless priced; a price is one number, never negative.
        assert_eq!(card.status, 0);
        let priced = full.replace(
            "currency = \"EUR\"\n",
            "currency = \"EUR\"\nstatus = 2500\n",
        );
        let card = Config::from_toml(&priced)?
            .rates
            .card()
            .map_err(<toml::de::Error as serde::de::Error>::custom)?;
        assert_eq!(card.status, 2_500);
        let negative = priced.replace("status = 2500", "status = -1");
        let error = Config::from_toml(&negative).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("[rates] status = -1 is negative")),
            "{error:?}"
        );
        let currency = full.replace("EUR", "euro");
        assert!(Config::from_toml(&currency).is_err());
        Ok(())
    }

    #[test]
    fn the_tiers_table_sets_limits_and_thresholds_or_is_refused() {
        let default = Config::from_toml("").expect("empty config");
        assert_eq!(default.tiers, crate::quality::TiersConfig::default());
        let config = Config::from_toml(
            "[tiers]\nlimits = [3, 6, 9, 12]\nlow_permille = 300\nmedium_permille = 100\n",
        )
        .expect("small tiers");
        assert_eq!(
            config.tiers.tier_limits(),
            crate::policy::quality::TierLimits([3, 6, 9, 12])
        );
        assert_eq!(config.tiers.rating_rules().low_permille, 300);
        for bad in [
            "[tiers]\nlimits = [3, 3, 9, 12]\n",
            "[tiers]\nlimits = [0, 6, 9, 12]\n",
            "[tiers]\nlimits = [3, 6, 9]\n",
            "[tiers]\nmedium_permille = 0\n",
            "[tiers]\nmedium_permille = 50\nlow_permille = 40\n",
            "[tiers]\nspeed = 1\n",
        ] {
            let error = Config::from_toml(bad).err().map(|e| e.to_string());
            assert!(
                error.is_some_and(|e| e.contains("tiers") || e.contains("speed")),
                "{bad}"
            );
        }
    }
}
