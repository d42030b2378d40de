//! What franking and the ledger cost the relay (issue 14's bar), behind
//! `relay-load bench --compare-franking-ledger`: the same business-template
//! mix against a relay with both on and against one with both off.
//!
//! - **On** ([`on`], [`RelayMetering::On`]): every send carries a franking
//!   commitment, customers' conversation messages too (the client library
//!   franks every message); the relay tags every franked copy it delivers
//!   (HMAC-SHA256 under its franking key), appends a ledger entry in the
//!   accept of each billed template, checks the customer device's signed
//!   ack of it and appends that delivery to the business's bill.
//! - **Off** ([`off`], [`RelayMetering::FrankingAndLedgerOff`]): no send
//!   franked, so the relay computes no franking tag, and nothing appended
//!   to the ledger (neither at accept nor at ack, nor in the mail log's
//!   checkpoints). Signed delivery (issue 12), which is not franking or
//!   the ledger, stays: the customers still sign their acks of billed
//!   templates, and the relay still checks each signature against the
//!   device's key and passes it on in `Delivered`. The relay is built with
//!   the relay's `bench-unmetered` cargo feature (reached through this
//!   crate's `unmetered-relay` feature).
//! - **Unmetered** ([`unmetered`], [`RelayMetering::Unmetered`]): the same
//!   with signed delivery off too: no ack signed or checked. `relay-load
//!   bench --unmetered` runs both of issue 13's mixes on such a relay (what
//!   the business rules alone cost), and `--compare-franking-ledger
//!   --off-unmetered` takes it as the off side.
//!
//! Everything else is the same in all three: the ring, the businesses,
//! their templates approved through the admin API, the customers' consent,
//! the 24-hour window, the rules the relay's policy applies to each send.
//!
//! The relays run in child processes of `relay-load` from the same build
//! (`relay-load relay-child --metering …`, [`serve`]), so the switch is
//! the only difference between them. The `relay` binary operators run
//! cannot set it: it is no configuration key, and the relay's
//! `bench-unmetered` feature is never enabled in its release build.

use std::net::SocketAddr;
use std::path::PathBuf;

use comptoir_relay::Config;
use comptoir_relay::operator::OperatorFileError;
use tokio::net::TcpListener;

use crate::load::{LoadOptions, Metering};

/// Why a benchmark relay could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Binding a listener failed.
    #[error("listening on 127.0.0.1: {0}")]
    Io(#[from] std::io::Error),
    /// The relay failed to start or stopped with an error.
    #[error("relay: {0}")]
    Relay(#[from] comptoir_relay::ServerError),
    /// The admin token could not be created.
    #[error("admin token: {0}")]
    Token(#[from] OperatorFileError),
    /// The relay's task ended unexpectedly.
    #[error("the relay stopped: {0}")]
    Stopped(String),
    /// An unmetered relay was asked of a build without it.
    #[error(
        "this relay-load was built without the unmetered relay; build it with \
         `cargo build --release -p comptoir-bench --features unmetered-relay` \
         (in its own cargo invocation, so that the `relay` binary is not built with it)"
    )]
    NotBuilt,
}

/// What a benchmark relay leaves out of franking and the ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RelayMetering {
    /// Nothing: as every relay.
    #[default]
    On,
    /// Franking and the ledger off, signed delivery kept.
    FrankingAndLedgerOff,
    /// Franking, the ledger and signed delivery off.
    Unmetered,
}

impl RelayMetering {
    /// How `relay-load relay-child --metering` names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::FrankingAndLedgerOff => "franking-and-ledger-off",
            Self::Unmetered => "unmetered",
        }
    }

    /// What the load sends to a relay of this kind.
    pub fn load(self) -> Metering {
        match self {
            Self::On => Metering::FrankEvery,
            Self::FrankingAndLedgerOff => Metering::SignedAcksOnly,
            Self::Unmetered => Metering::Off,
        }
    }
}

/// `options` with franking and the ledger on: every send franked, the
/// acks of billed templates signed.
pub fn on(options: LoadOptions) -> LoadOptions {
    LoadOptions {
        metering: RelayMetering::On.load(),
        ..options
    }
}

/// `options` with franking and the ledger off: nothing franked, the acks
/// of billed templates still signed (for a relay [`serve`]d with
/// [`RelayMetering::FrankingAndLedgerOff`]).
pub fn off(options: LoadOptions) -> LoadOptions {
    LoadOptions {
        metering: RelayMetering::FrankingAndLedgerOff.load(),
        ..options
    }
}

/// `options` with nothing franked or signed (for a relay [`serve`]d
/// [`RelayMetering::Unmetered`]).
pub fn unmetered(options: LoadOptions) -> LoadOptions {
    LoadOptions {
        metering: RelayMetering::Unmetered.load(),
        ..options
    }
}

/// The configuration `relay-load` gives every relay it starts (as the
/// TOML it writes for the `relay` binary says): loopback listeners on
/// free ports, rate and registration limits off, deep queues.
pub fn bench_config(data_dir: PathBuf) -> Config {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = Config {
        listen: loopback,
        http_listen: Some(loopback),
        admin_listen: Some(loopback),
        data_dir,
        ..Config::default()
    };
    config.limits.account_rate_per_sec = 0.0;
    config.limits.address_rate_per_sec = 0.0;
    config.limits.registration_rate_per_sec = 0.0;
    config.limits.registration_rate_per_prefix_per_sec = 0.0;
    config.limits.max_queue_per_device = 1_000_000;
    config
}

/// A benchmark relay running in this process (see [`start`]).
#[derive(Debug)]
pub struct BenchRelay {
    /// Where devices connect (loopback).
    pub address: SocketAddr,
    /// Its admin API (loopback); the token is `admin.token` in its data
    /// directory.
    pub admin: SocketAddr,
    /// What it leaves out of franking and the ledger.
    pub metering: RelayMetering,
    running: tokio::task::JoinHandle<Result<(), comptoir_relay::ServerError>>,
}

impl BenchRelay {
    /// Wait until the relay stops (it runs until the process ends, or
    /// fails).
    pub async fn wait(mut self) -> Result<(), ServeError> {
        (&mut self.running)
            .await
            .map_err(|e| ServeError::Stopped(e.to_string()))??;
        Ok(())
    }
}

impl Drop for BenchRelay {
    fn drop(&mut self) {
        self.running.abort();
    }
}

/// Start a benchmark relay on `data_dir` (created if missing) on this
/// runtime, with [`bench_config`] and franking and the ledger as
/// `metering` says. The admin token is in `data_dir` when this returns.
pub async fn start(data_dir: PathBuf, metering: RelayMetering) -> Result<BenchRelay, ServeError> {
    #[allow(unused_mut)] // Reason: set only with the `unmetered-relay` feature.
    let mut config = bench_config(data_dir);
    if metering != RelayMetering::On {
        #[cfg(feature = "unmetered-relay")]
        {
            config.bench_metering = match metering {
                RelayMetering::On => comptoir_relay::BenchMetering::Metered,
                RelayMetering::FrankingAndLedgerOff => {
                    comptoir_relay::BenchMetering::FrankingAndLedgerOff
                }
                RelayMetering::Unmetered => comptoir_relay::BenchMetering::Unmetered,
            };
        }
        #[cfg(not(feature = "unmetered-relay"))]
        return Err(ServeError::NotBuilt);
    }
    std::fs::create_dir_all(&config.data_dir)?;
    comptoir_relay::operator::load_or_create_admin_token(&config.admin_token_path())?;
    let listener = TcpListener::bind(config.listen).await?;
    let services = comptoir_relay::Services::from_config(&config).await?;
    let admin = services
        .admin_listener
        .as_ref()
        .ok_or(ServeError::Stopped("no admin API".into()))?
        .local_addr()?;
    let address = listener.local_addr()?;
    let running = tokio::spawn(comptoir_relay::run_with(
        listener,
        config,
        services,
        std::future::pending::<()>(),
    ));
    Ok(BenchRelay {
        address,
        admin,
        metering,
        running,
    })
}

/// `relay-load relay-child`: [`start`], print one line `relay
/// admin=ADDR address=ADDR metering=NAME` (the admin token is in
/// `data_dir` by then), and run until the process is killed.
pub async fn serve(data_dir: PathBuf, metering: RelayMetering) -> Result<(), ServeError> {
    let relay = start(data_dir, metering).await?;
    println!(
        "relay admin={} address={} metering={}",
        relay.admin,
        relay.address,
        relay.metering.name()
    );
    relay.wait().await
}
