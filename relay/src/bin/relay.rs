//! The `relay` command: `relay serve` runs the Comptoir blind relay.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use comptoir_relay::{Config, TlsFiles};
use tokio::net::TcpListener;

/// Comptoir blind relay: stores and forwards end-to-end encrypted envelopes
/// between devices, durably, without ever seeing plaintext.
#[derive(Debug, Parser)]
#[command(name = "relay", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay. With no options: ws://127.0.0.1:7700, metrics on
    /// http://127.0.0.1:7701, the admin API on 127.0.0.1:7702, data in
    /// ./relay-data.
    ///
    /// Settings come from (highest first) flags, environment variables,
    /// the TOML file given with --config, then defaults. See
    /// docs/OPERATIONS.md for every key.
    Serve(Box<ServeArgs>),
    /// Print what accepts committed besides mail, from the data directory
    /// of a stopped relay: one JSON object per line, the ledger entries
    /// (`"ledger"`), the signed first delivery of each billed send
    /// (`"delivered"`: the customer device's signed ack), the consents
    /// kept (`"consent"`), the conversation state (`"conversation"`: the accept
    /// time of the customer's last message, which the 24-hour window runs
    /// from), the customers each business reached by a conversation it
    /// started (`"reach"`: the usage the quality tiers count), the quota
    /// counts per sender and UTC day (`"quota"`) and the
    /// copies queued per device (`"queue"`).
    Accounting(AccountingArgs),
    /// The operator's tool: talks to the running relay's admin API
    /// (loopback, bearer token from the relay's admin.token file).
    Admin(comptoir_relay::admin::cli::AdminArgs),
    /// Add a new franking key to the data directory's franking.keys (with
    /// the relay stopped): deliveries are tagged with it from the next
    /// start; older keys stay to verify reports of older messages.
    RotateFrankingKey(AccountingArgs),
}

#[derive(Debug, clap::Args)]
struct AccountingArgs {
    /// Data directory of the (stopped) relay.
    #[arg(long, env = "COMPTOIR_RELAY_DATA_DIR", value_name = "DIR")]
    data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file (keys as in docs/OPERATIONS.md).
    #[arg(long, env = "COMPTOIR_RELAY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// WebSocket listen address.
    #[arg(long, env = "COMPTOIR_RELAY_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Listen address of /healthz and /metrics.
    #[arg(long, env = "COMPTOIR_RELAY_HTTP_LISTEN", value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Listen address of the operator's admin API (`relay admin`).
    #[arg(long, env = "COMPTOIR_RELAY_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Data directory (sled store), created if missing.
    #[arg(long, env = "COMPTOIR_RELAY_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TLS certificate chain (PEM) to serve wss://; needs --tls-key.
    #[arg(
        long,
        env = "COMPTOIR_RELAY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); needs --tls-cert.
    #[arg(
        long,
        env = "COMPTOIR_RELAY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Time an undelivered envelope is kept, in seconds (default 30 days).
    #[arg(long, env = "COMPTOIR_RELAY_MESSAGE_TTL_SECS", value_name = "SECS")]
    message_ttl_secs: Option<u64>,
    /// Envelopes queued per recipient device at most.
    #[arg(long, env = "COMPTOIR_RELAY_MAX_QUEUE_PER_DEVICE", value_name = "N")]
    max_queue_per_device: Option<u64>,
    /// Open connections at most.
    #[arg(long, env = "COMPTOIR_RELAY_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Sustained requests per second per account.
    #[arg(long, env = "COMPTOIR_RELAY_ACCOUNT_RATE", value_name = "PER_SEC")]
    account_rate: Option<f64>,
    /// Sustained connections and unauthenticated frames per second per IP.
    #[arg(long, env = "COMPTOIR_RELAY_ADDRESS_RATE", value_name = "PER_SEC")]
    address_rate: Option<f64>,
    /// Delete an account that has not authenticated this long after it
    /// registered, with its keys and queued mail (default 1 day; 0: never).
    #[arg(
        long,
        env = "COMPTOIR_RELAY_UNAUTHENTICATED_ACCOUNT_TTL_SECS",
        value_name = "SECS"
    )]
    unauthenticated_account_ttl_secs: Option<u64>,
    /// Refuse sends to business accounts from accounts without a verified
    /// phone number (true or false; default false).
    #[arg(
        long,
        env = "COMPTOIR_RELAY_REQUIRE_PHONE_FOR_BUSINESS",
        value_name = "BOOL"
    )]
    require_phone_for_business: Option<bool>,
}

impl ServeArgs {
    fn into_config(self) -> Result<Config, comptoir_relay::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.http_listen {
            config.http_listen = Some(v);
        }
        if let Some(v) = self.admin_listen {
            config.admin_listen = Some(v);
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            config.tls = Some(TlsFiles { cert, key });
        }
        if let Some(v) = self.message_ttl_secs {
            config.message_ttl_ms = v.saturating_mul(1000);
        }
        if let Some(v) = self.max_queue_per_device {
            config.limits.max_queue_per_device = v;
        }
        if let Some(v) = self.max_connections {
            config.limits.max_connections = v;
        }
        if let Some(v) = self.account_rate {
            config.limits.account_rate_per_sec = v;
        }
        if let Some(v) = self.address_rate {
            config.limits.address_rate_per_sec = v;
        }
        if let Some(v) = self.unauthenticated_account_ttl_secs {
            config.limits.unauthenticated_account_ttl_ms = v.saturating_mul(1000);
        }
        if let Some(v) = self.require_phone_for_business {
            config.limits.require_phone_for_business = v;
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Serve(args) => *args,
        Command::Accounting(args) => {
            // Logs to stderr: stdout is the report.
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
                )
                .init();
            return accounting(&args);
        }
        Command::Admin(args) => return comptoir_relay::admin::cli::run(args),
        Command::RotateFrankingKey(args) => {
            let path = args
                .data_dir
                .join(comptoir_relay::franking::FRANKING_KEYS_FILE);
            return match comptoir_relay::franking::FrankingKeys::rotate(&path) {
                Ok(id) => {
                    println!("{{\"franking_key_id\":{id}}}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("relay rotate-franking-key: {error}");
                    ExitCode::from(2)
                }
            };
        }
    };
    // Colour only on a terminal: a log file or pipe gets plain text that
    // scripts can parse.
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match args.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("relay: {error}");
            return ExitCode::from(2);
        }
    };
    // Many idle connections need many descriptors: raise the soft limit.
    if let Ok(limit) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!(limit, "file descriptor limit");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("relay: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("relay: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `relay accounting`: print the report as JSON lines.
fn accounting(args: &AccountingArgs) -> ExitCode {
    use comptoir_relay::storage::report;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("relay: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(report::read(&args.data_dir)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("relay: {error}");
            return ExitCode::FAILURE;
        }
    };
    for e in &report.ledger {
        let line = serde_json::json!({
            "ledger": {
                "accept_id": e.accept_id,
                "message_id": hex::encode(e.message_id),
                "business": e.business.to_string(),
                "customer": e.customer.to_string(),
                "category": e.category.name(),
                "template_id": e.template_id,
                "franking_tag": hex::encode(&e.franking_tag),
                "accepted_at_ms": e.accepted_at_ms,
                // Absent for entries from before prices were fixed at accept.
                "price_millionths": e.priced.map(|p| p.millionths),
                "inside_window": e.priced.map(|p| p.inside_window),
            }
        });
        println!("{line}");
    }
    for d in &report.delivered {
        let line = serde_json::json!({
            "delivered": {
                "accept_id": d.accept_id,
                "customer_device": d.customer_device,
                "signed_at_ms": d.signed_at_ms,
                "signature": hex::encode(d.signature),
                "delivered_at_ms": d.delivered_at_ms,
                "bill_position": d.chain_seq,
            }
        });
        println!("{line}");
    }
    for c in &report.consents {
        let line = serde_json::json!({
            "consent": {
                "customer": c.customer.to_string(),
                "business": c.business.to_string(),
                "device": c.device,
                "categories": c.categories.names(),
                "issued_at_ms": c.issued_at_ms,
                "expires_at_ms": c.expires_at_ms,
                "counter": c.counter,
                "revoked_by_block": c.revoked_by_block,
            }
        });
        println!("{line}");
    }
    for (business, customer, ms) in &report.conversations {
        let line = serde_json::json!({
            "conversation": {
                "business": business.to_string(),
                "customer": customer.to_string(),
                "last_customer_message_ms": ms,
            }
        });
        println!("{line}");
    }
    for (business, customer, ms) in &report.reaches {
        let line = serde_json::json!({
            "reach": {
                "business": business.to_string(),
                "customer": customer.to_string(),
                "counted_at_ms": ms,
            }
        });
        println!("{line}");
    }
    for (sender, day, counts) in &report.quotas {
        let line = serde_json::json!({
            "quota": {
                "sender": sender.to_string(),
                "utc_day": day,
                "accepted": counts.accepted,
                "customers_reached": counts.customers_reached,
            }
        });
        println!("{line}");
    }
    for (account, device, copies) in &report.queues {
        let line = serde_json::json!({
            "queue": {
                "account": account.to_string(),
                "device": device,
                "copies": copies,
            }
        });
        println!("{line}");
    }
    ExitCode::SUCCESS
}

async fn serve(config: Config) -> Result<(), comptoir_relay::ServerError> {
    let listener = TcpListener::bind(config.listen).await.map_err(|source| {
        comptoir_relay::ServerError::Io {
            what: format!(
                "cannot listen on {} (is another relay running? set --listen)",
                config.listen
            ),
            source,
        }
    })?;
    comptoir_relay::run(listener, config, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
