//! `agent`: the Comptoir business agent daemon's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use comptoir_agent::config::{self, Config};
use comptoir_agent::{SystemClock, device, inbox, keys, serve};
use comptoir_client::KdfParams;

/// The Comptoir business agent daemon.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, short, env = config::ENV_CONFIG, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the business's device and register it as a new business
    /// account, or (with --link) as a new device of an existing one.
    Init {
        /// Join an existing business account: prints a link code to
        /// approve on its first device (`comptoir devices add CODE` on
        /// that daemon's device store, the daemon stopped).
        #[arg(long, conflicts_with = "approval")]
        link: bool,
        /// Finish linking with the approval the first device printed.
        #[arg(long)]
        approval: Option<String>,
    },
    /// Run the daemon.
    Serve,
    /// Make a new API key: prints the key (give it to the backend) and
    /// the configuration entry with its hash (the daemon keeps only that).
    KeyNew {
        /// A name for logs.
        #[arg(long)]
        name: String,
        /// Scopes: messages:send, messages:read, consent:request, billing:read.
        #[arg(long, required = true, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Add an agent of the web inbox: the password is read from standard
    /// input (one line) or, on a terminal, asked for twice.
    AgentAdd {
        /// The agent's login name.
        name: String,
        /// May add and disable agents and add canned replies.
        #[arg(long)]
        admin: bool,
    },
    /// Print this business's click-to-chat link and its QR code (for a
    /// terminal with light text on a dark background); customers open it
    /// with `comptoir open LINK`. It reads the account id from the device
    /// store (stop `agent serve` first, or use `GET /v1/link`).
    Link {
        /// The name the business claimed (`comptoir name claim`), in place
        /// of its account id; the relay is asked whether it is this
        /// business's (a name it does not hold is refused).
        #[arg(long)]
        name: Option<String>,
        /// Text to prefill in the customer's composer.
        #[arg(long)]
        text: Option<String>,
        /// Also write the QR code as SVG to this file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Also write the QR code as PNG to this file.
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal: a log file or a service manager's
        // journal gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        // A closed standard output (`agent openapi | head`) ends the
        // command quietly, as the end of a pipe ends `cat`.
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(Failure::Message(message)) => {
            eprintln!("agent: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command ended without doing all it should.
#[derive(Debug)]
enum Failure {
    /// Standard output is closed (the reader of a pipe went away).
    OutputClosed,
    /// What went wrong and what to do, for standard error.
    Message(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self::Message(message)
    }
}

/// Write `text` to standard output, checked (`println!` panics when the
/// pipe it writes to is closed).
fn emit(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                Failure::OutputClosed
            } else {
                Failure::Message(format!("cannot write to standard output: {e}"))
            }
        })
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let env = |name: &str| std::env::var(name).ok();
    match cli.command {
        Command::Openapi => emit(&format!("{}\n", comptoir_agent::openapi_json())),
        Command::KeyNew { name, scopes } => {
            for s in &scopes {
                let known = [
                    "messages:send",
                    "messages:read",
                    "consent:request",
                    "billing:read",
                ];
                if !known.contains(&s.as_str()) {
                    return Err(format!(
                        "unknown scope {s:?}: use messages:send, messages:read, consent:request, billing:read"
                    )
                    .into());
                }
            }
            let (key, hash) = keys::generate();
            emit(&format!(
                "API key (give it to the backend; it is not stored): {}\n\n\
                 [[api_keys]]\nname = {name:?}\nsha256 = \"{}\"\nscopes = {scopes:?}\n",
                key.as_str(),
                hex::encode(hash)
            ))
        }
        Command::AgentAdd { name, admin } => {
            let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
            let password = read_password()?;
            comptoir_client::store::create_private_dir(&config.data_dir)
                .map_err(|e| format!("cannot create the data directory: {e}"))?;
            let db = comptoir_agent::db::Db::open(&config.database_path(), Vec::new())
                .map_err(|e| e.to_string())?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let agent =
                inbox::agents::add(&db, &name, &password, admin, now).map_err(|e| e.to_string())?;
            emit(&format!(
                "added {} {}; open http://{}/inbox and log in\n",
                if agent.admin { "admin" } else { "agent" },
                agent.name,
                config.listen
            ))
        }
        Command::Link {
            name,
            text,
            svg,
            png,
        } => {
            use comptoir_client::click_to_chat::{ChatLink, LinkHandle};
            if let Some(name) = &name {
                // Refused before the configuration is read.
                comptoir_protocol::handle::normalize_business_name(name)
                    .map_err(|e| e.to_string())?;
            }
            let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
            let passphrase = config::passphrase(&env).map_err(|e| e.to_string())?;
            let handle = match name {
                Some(name) => comptoir_agent::link::claimed_name(&config, &passphrase, &name)
                    .await
                    .map_err(|e| e.to_string())?,
                None => {
                    let client = comptoir_client::Client::open(&config.device_dir(), &passphrase)
                        .map_err(|e| e.to_string())?;
                    LinkHandle::Account(client.account_id())
                }
            };
            let link = ChatLink::new(handle, text.as_deref()).map_err(|e| e.to_string())?;
            let printed = comptoir_agent::link::print(&link, svg.as_deref(), png.as_deref())?;
            emit(&format!("{printed}\n"))
        }
        Command::Init { link, approval } => {
            let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
            let passphrase = config::passphrase(&env).map_err(|e| e.to_string())?;
            if link {
                let code = device::init_link(&config, &passphrase, KdfParams::DEFAULT)
                    .map_err(|e| e.to_string())?;
                let config_arg = cli.config.as_deref().map_or(String::new(), |path| {
                    format!(" --config {}", comptoir_client::hints::shell_word(path))
                });
                emit(&format!(
                    "Approve this device on the business's first device (its daemon stopped):\n  comptoir --data-dir DATA_DIR/device devices add {code}\nthen run here: agent{config_arg} init --approval APPROVAL\n"
                ))
            } else if let Some(approval) = approval {
                let id = device::finish_link(&config, &passphrase, &approval)
                    .await
                    .map_err(|e| e.to_string())?;
                emit(&format!("linked to business account {id}\n"))
            } else {
                let id = device::init_new(&config, &passphrase, KdfParams::DEFAULT)
                    .await
                    .map_err(|e| e.to_string())?;
                emit(&format!("registered business account {id}\n"))
            }
        }
        Command::Serve => {
            let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
            let passphrase = config::passphrase(&env).map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
            let running = serve::start(&config, &passphrase, listener, Arc::new(SystemClock))
                .await
                .map_err(|e| e.to_string())?;
            // Serving goes on without a standard output to say it on.
            let _ = emit(&format!("agent listening on {}\n", running.addr));
            shutdown_signal().await;
            running.stop().await;
            Ok(())
        }
    }
}

/// The new agent's password: a line of standard input, or asked twice on
/// a terminal.
fn read_password() -> Result<zeroize::Zeroizing<String>, String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = zeroize::Zeroizing::new(
            rpassword::prompt_password("Password for the agent: ")
                .map_err(|e| format!("cannot read the password: {e}"))?,
        );
        let second = zeroize::Zeroizing::new(
            rpassword::prompt_password("Again: ")
                .map_err(|e| format!("cannot read the password: {e}"))?,
        );
        if *first != *second {
            return Err("the two passwords differ".into());
        }
        return Ok(first);
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    Ok(trimmed)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
