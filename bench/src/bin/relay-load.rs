//! `relay-load`: load generator for the Comptoir relay (docs/BENCHMARKS.md).
//!
//! `relay-load bench` starts the real relay (the `relay` binary next to this
//! one, on a fresh temp data dir) and a storage-free forwarder (this binary,
//! `relay-load forwarder`) as child processes on 127.0.0.1, runs the same
//! load against each, and prints both; with `--business-percent` it runs
//! the relay on a business mix and on customer-only traffic instead,
//! alternating, and prints their ratio (the cost of the business rules);
//! with `--compare-franking-ledger` too, it runs the business mix against
//! a relay with franking and the ledger on and against one with both off,
//! signed delivery kept (relays hosted by this binary, `relay-load
//! relay-child`), and prints on ÷ off.
//! `relay-load idle` measures the relay's resident memory per idle
//! authenticated connection.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use comptoir_bench::attachment;
use comptoir_bench::client_mux::{self, ClientMuxOptions};
use comptoir_bench::load::{
    self, LoadAccount, LoadOptions, LoadReport, Metering, TemplateApproval,
};
use comptoir_bench::metering::{self, RelayMetering};
use comptoir_bench::mux::{self, MuxOptions};
use comptoir_relay::admin::client::AdminClient;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "relay-load",
    about = "Load generator for the Comptoir relay (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Drive a relay from before origin-bound logins, kind-bound
    /// registrations, `ReceiptAck` and the registration limits (main at
    /// 515e604, the benchmarks' "old"): signs as it expects, leaves out the
    /// configuration keys it does not know, and counts receipts without
    /// acking them. Used by `single` and `drain`.
    #[arg(long, global = true)]
    old_relay: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Relay vs storage-free forwarder, same load, one run.
    Bench {
        /// Connected devices (one account each); device i sends to i+1.
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// Envelopes each device sends.
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// Ciphertext bytes per envelope.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Sends per device awaiting Accepted, at most.
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// Percent of the sends that are billed business templates whose
        /// acks the customer devices sign (0 to 50; 0: all conversation).
        #[arg(long, default_value_t = 0)]
        billed_percent: u32,
        /// Measure the business rules instead: percent of the sends that
        /// are business traffic (a business's approved utility templates
        /// under consent and service replies inside the window, in turn;
        /// 1 to 50). Each round runs the relay on this mix and on
        /// customer-only traffic, alternating which goes first, and the
        /// ratio is reported.
        #[arg(long, default_value_t = 0)]
        business_percent: u32,
        /// In the business mix: percent of a business's sends that are
        /// templates, the others service replies (0 to 100).
        #[arg(long, default_value_t = 50)]
        template_percent: u32,
        /// With --business-percent: run the forwarder on both mixes too
        /// (what the mix costs the load generator itself).
        #[arg(long)]
        with_forwarder: bool,
        /// With --business-percent: run the business mix against a relay
        /// with franking and the ledger on (every send franked, billed
        /// templates' acks signed, checked and appended to the bills) and
        /// against one with both off (nothing franked, nothing appended to
        /// the ledger; billed templates' acks still signed and checked:
        /// signed delivery is not franking or the ledger), alternating,
        /// instead of against customer-only traffic. Needs relay-load
        /// built with the feature `unmetered-relay`.
        #[arg(long, conflicts_with = "with_forwarder")]
        compare_franking_ledger: bool,
        /// With --compare-franking-ledger: the off side signs and checks
        /// no ack either (signed delivery off too).
        #[arg(long, requires = "compare_franking_ledger")]
        off_unmetered: bool,
        /// With --business-percent, comparing against customer-only
        /// traffic: run both mixes against a relay with franking and the
        /// ledger off (nothing franked or signed, no ledger), so that the
        /// ratio is what the business rules alone cost (consent, the
        /// window, template approval); --compare-franking-ledger measures
        /// franking and the ledger. Needs relay-load built with the
        /// feature `unmetered-relay`.
        #[arg(long, conflicts_with_all = ["with_forwarder", "compare_franking_ledger"])]
        unmetered: bool,
        /// Rounds (each runs forwarder then relay); the best round of each
        /// is reported too.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Run the load once against a server already listening (relay or
    /// forwarder); its limits must allow the load.
    Run {
        /// Server address (loopback).
        #[arg(long)]
        addr: SocketAddr,
        /// Connected devices (one account each); device i sends to i+1.
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// Envelopes each device sends.
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// Ciphertext bytes per envelope.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Sends per device awaiting Accepted, at most.
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// Percent of the sends that are billed business templates whose
        /// acks the customer devices sign (0 to 50; 0: all conversation).
        #[arg(long, default_value_t = 0)]
        billed_percent: u32,
        /// Percent of the sends that are business templates and service
        /// replies inside the window (0 to 50; not with --billed-percent).
        #[arg(long, default_value_t = 0)]
        business_percent: u32,
        /// In the business mix: percent of a business's sends that are
        /// templates, the others service replies (0 to 100).
        #[arg(long, default_value_t = 50)]
        template_percent: u32,
        /// The relay's admin API (its `admin_listen` address), to approve
        /// the businesses' templates; without it they are only submitted
        /// (enough for the forwarder, refused by a relay).
        #[arg(long, requires = "admin_token")]
        admin: Option<SocketAddr>,
        /// The relay's admin token file (`DATA_DIR/admin.token`).
        #[arg(long, requires = "admin")]
        admin_token: Option<PathBuf>,
    },
    /// Run only a benchmark relay on loopback (used by `bench
    /// --compare-franking-ledger`): the relay library in this process, with
    /// the limits `bench` gives every relay.
    #[command(hide = true)]
    RelayChild {
        /// Its data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// What it leaves out of franking and the ledger (anything but
        /// `on` needs the feature `unmetered-relay`).
        #[arg(long, value_enum, default_value_t = RelayMetering::On)]
        metering: RelayMetering,
    },
    /// Run only the storage-free forwarder (used by `bench`).
    Forwarder {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Sends per second through ONE client-library connection, from 1 task
    /// and from many tasks sharing it (requests matched by request id).
    Mux {
        /// Task counts to compare, e.g. 1,16 (the first is the baseline).
        #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
        tasks: Vec<usize>,
        /// Sends per run, split between the tasks.
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Ciphertext bytes per send.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Rounds (each runs every task count on a fresh relay); the best
        /// run of each count is compared.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// One file as an attachment through a real relay (encrypt, upload,
    /// download and decrypt), against copying it on the same disk.
    Attachment {
        /// The file's size in MiB.
        #[arg(long, default_value_t = 50)]
        mib: u64,
        /// Rounds (each on a fresh relay).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Encrypted sends per second through ONE `Client` (its `Sender`
    /// handles), from 1 task and from many tasks at once.
    ClientMux {
        /// Task counts to compare, e.g. 1,16 (the first is the baseline).
        #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
        tasks: Vec<usize>,
        /// Messages per run, split between the tasks.
        #[arg(long, default_value_t = 800)]
        messages: usize,
        /// Text bytes per message.
        #[arg(long, default_value_t = 1000)]
        size: usize,
        /// Recipient accounts (task i writes to recipient i mod peers).
        #[arg(long, default_value_t = 4)]
        peers: usize,
        /// Rounds (each runs every task count on a fresh relay).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// One device sends to one online device, each send awaited until
    /// accepted (a fresh relay child).
    Single {
        /// Sends.
        #[arg(long, default_value_t = 5_000)]
        messages: usize,
        /// Ciphertext bytes per envelope.
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// Queue envelopes for an offline device, then time its drain while
    /// the sender counts `Delivered` receipts (a fresh relay child).
    Drain {
        /// Envelopes queued.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Ciphertext bytes per envelope.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Sends awaiting Accepted while filling, at most.
        #[arg(long, default_value_t = 64)]
        window: usize,
    },
    /// The business agent daemon (in this process) on a fresh relay child:
    /// API sends per second to many customers, the webhook deliveries they
    /// cause, and the same sends through the client library without the
    /// daemon (docs/BENCHMARKS.md).
    Agent {
        /// Customers who wrote to the business (the window is open).
        #[arg(long, default_value_t = 1000)]
        customers: usize,
        /// Sends in each phase.
        #[arg(long, default_value_t = 2000)]
        sends: usize,
        /// Tasks sending at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Text bytes per message.
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// A small run (20 customers, 100 sends) to check that it works.
        #[arg(long)]
        smoke: bool,
    },
    /// Resident memory per idle authenticated connection on the relay.
    Idle {
        /// Connections to open (each a registered, authenticated device).
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let old_relay = cli.old_relay;
    if old_relay {
        load::use_old_auth_payload();
    }
    let result = runtime.block_on(async move {
        match cli.command {
            Cmd::Forwarder { listen } => forwarder(listen).await,
            Cmd::RelayChild { data_dir, metering } => {
                // The relay's warnings and errors, as the `relay` child's.
                tracing_subscriber::fmt()
                    .with_ansi(false)
                    .with_writer(std::io::stderr)
                    .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
                    .init();
                metering::serve(data_dir, metering).await?;
                Ok(())
            }
            Cmd::Bench {
                devices,
                messages,
                size,
                window,
                billed_percent,
                business_percent,
                template_percent,
                with_forwarder,
                compare_franking_ledger,
                off_unmetered,
                unmetered,
                rounds,
            } => {
                let options = LoadOptions {
                    devices,
                    messages,
                    size,
                    window,
                    billed_percent,
                    business_percent,
                    template_percent,
                    metering: Metering::default(),
                    timeout: Duration::from_secs(300),
                };
                if compare_franking_ledger {
                    if business_percent == 0 {
                        return Err("--compare-franking-ledger runs the business mix: give \
                                    --business-percent (1 to 50)"
                            .into());
                    }
                    let off = if off_unmetered {
                        RelayMetering::Unmetered
                    } else {
                        RelayMetering::FrankingAndLedgerOff
                    };
                    bench_metering(options, rounds, off).await
                } else if business_percent > 0 {
                    let relay = if unmetered {
                        RulesRelay::Unmetered
                    } else {
                        RulesRelay::Metered { with_forwarder }
                    };
                    bench_rules(options, rounds, relay).await
                } else if unmetered {
                    Err("--unmetered compares the business mix with customer-only traffic: \
                         give --business-percent (1 to 50)"
                        .into())
                } else {
                    bench(options, rounds).await
                }
            }
            Cmd::Idle { connections } => idle(connections).await,
            Cmd::Mux {
                tasks,
                messages,
                size,
                rounds,
            } => mux(&tasks, messages, size, rounds).await,
            Cmd::Attachment { mib, rounds } => attachment_bench(mib, rounds).await,
            Cmd::Agent {
                customers,
                sends,
                concurrency,
                size,
                smoke,
            } => {
                let options = if smoke {
                    comptoir_bench::agent_load::AgentLoadOptions {
                        customers: 20,
                        sends: 100,
                        concurrency: 4,
                        size,
                        timeout: Duration::from_secs(120),
                    }
                } else {
                    comptoir_bench::agent_load::AgentLoadOptions {
                        customers,
                        sends,
                        concurrency,
                        size,
                        timeout: Duration::from_secs(600),
                    }
                };
                let server = start_relay()?;
                let r = comptoir_bench::agent_load::run(&format!("ws://{}", server.addr), options)
                    .await?;
                println!(
                    "setup: {} customers wrote once, all message webhooks in {:.1} s",
                    options.customers,
                    r.setup.as_secs_f64()
                );
                for (name, p, unit) in [
                    ("daemon API", &r.api, "sends"),
                    ("webhooks", &r.webhooks, "deliveries"),
                    ("library", &r.library, "sends"),
                ] {
                    println!(
                        "{name:<11} {:>6} {unit:<10} {:>8.0}/s  p50 {:>8.2} ms  p99 {:>8.2} ms  ({:.2} s)",
                        p.count,
                        p.per_sec,
                        p.p50.as_secs_f64() * 1e3,
                        p.p99.as_secs_f64() * 1e3,
                        p.elapsed.as_secs_f64()
                    );
                }
                Ok(())
            }
            Cmd::ClientMux {
                tasks,
                messages,
                size,
                peers,
                rounds,
            } => client_mux(&tasks, messages, size, peers, rounds).await,
            Cmd::Single { messages, size } => {
                let server = start_relay_with(old_relay)?;
                let r = load::run_single(server.addr, messages, size, Duration::from_secs(600))
                    .await?;
                println!(
                    "single sender: {} sequential sends in {:.2} s: {:.0} sends/s, p50 send->accepted {:.3} ms",
                    r.sends,
                    r.elapsed.as_secs_f64(),
                    r.throughput,
                    r.p50.as_secs_f64() * 1e3
                );
                Ok(())
            }
            Cmd::Drain {
                messages,
                size,
                window,
            } => {
                let server = start_relay_with(old_relay)?;
                let r = load::run_drain(
                    server.addr,
                    messages,
                    size,
                    window,
                    !old_relay,
                    Duration::from_secs(600),
                )
                .await?;
                println!(
                    "drain: {} envelopes queued in {:.2} s, drained in {:.2} s: {:.0} env/s; Delivered receipts at the sender: {} of {} (last at {:.2} s{})",
                    r.envelopes,
                    r.fill.as_secs_f64(),
                    r.drain.as_secs_f64(),
                    r.throughput,
                    r.receipts,
                    r.envelopes,
                    r.until_last_receipt.as_secs_f64(),
                    if old_relay { ", not acked" } else { ", each acked" },
                );
                Ok(())
            }
            Cmd::Run {
                addr,
                devices,
                messages,
                size,
                window,
                billed_percent,
                business_percent,
                template_percent,
                admin,
                admin_token,
            } => {
                if !addr.ip().is_loopback() {
                    return Err("relay-load only targets loopback addresses".into());
                }
                let options = LoadOptions {
                    devices,
                    messages,
                    size,
                    window,
                    billed_percent,
                    business_percent,
                    template_percent,
                    metering: Metering::default(),
                    timeout: Duration::from_secs(300),
                };
                let admin = match (admin, admin_token) {
                    (Some(addr), Some(token)) => Some(AdminClient::new(
                        addr,
                        comptoir_relay::operator::read_admin_token(&token)?,
                    )),
                    _ => None,
                };
                let approval = admin
                    .as_ref()
                    .map_or(TemplateApproval::NotChecked, TemplateApproval::Admin);
                let report = load::run(addr, options, approval).await?;
                print_report("server", &report);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-load: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

async fn forwarder(listen: SocketAddr) -> Res {
    let listener = TcpListener::bind(listen).await?;
    println!("forwarder listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    comptoir_bench::forwarder::run(listener).await;
    Ok(())
}

/// A child server process, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The relay's admin API (none for the forwarder).
    admin: Option<AdminClient>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// How the load's templates get approved on this server.
    fn approval(&self) -> TemplateApproval<'_> {
        self.admin
            .as_ref()
            .map_or(TemplateApproval::NotChecked, TemplateApproval::Admin)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sibling(name: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    if !path.exists() {
        return Err(format!(
            "{} not found; build it: cargo build --release -p comptoir-relay --bin relay",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// The address after `marker` in a log line, if the line has it.
fn address_after(line: &str, marker: &str) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
    let Some(at) = line.find(marker) else {
        return Ok(None);
    };
    let rest = &line[at + marker.len()..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().map(Some)
}

/// Wait for a log line naming the listen address; also the address after
/// `admin_marker` in an earlier line (the relay logs its admin API first).
fn wait_listening(
    child: &mut Child,
    marker: &str,
    admin_marker: Option<&str>,
) -> Result<(SocketAddr, Option<SocketAddr>), Box<dyn std::error::Error>> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut admin = None;
    let addr = loop {
        let line = lines.next().ok_or("server exited before listening")??;
        if let Some(admin_marker) = admin_marker
            && admin.is_none()
        {
            admin = address_after(&line, admin_marker)?;
        }
        if let Some(addr) = address_after(&line, marker)? {
            break addr;
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Ok((addr, admin))
}

fn start_relay() -> Result<Server, Box<dyn std::error::Error>> {
    start_relay_with(false)
}

/// Start the `relay` beside this binary; `old` leaves out the
/// configuration keys a relay from before the registration limits and the
/// admin API refuses.
fn start_relay_with(old: bool) -> Result<Server, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("relay.toml");
    let (admin_listen, registration) = if old {
        ("", "")
    } else {
        (
            "admin_listen = \"127.0.0.1:0\"\n",
            "registration_rate_per_sec = 0.0\n\
             registration_rate_per_prefix_per_sec = 0.0\n",
        )
    };
    std::fs::write(
        &config,
        format!(
            "http_listen = \"127.0.0.1:0\"\n\
             {admin_listen}\
             [limits]\n\
             account_rate_per_sec = 0.0\n\
             address_rate_per_sec = 0.0\n\
             {registration}\
             max_queue_per_device = 1000000\n"
        ),
    )?;
    let mut child = Command::new(sibling("relay")?)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn,comptoir_relay::server=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()?;
    let (addr, admin) = wait_listening(&mut child, "address=", Some("admin="))?;
    // A relay from before the admin API logs none: nothing to approve with.
    let admin = match admin {
        Some(admin) => Some(AdminClient::new(
            admin,
            comptoir_relay::operator::read_admin_token(
                &dir.path()
                    .join("data")
                    .join(comptoir_relay::operator::ADMIN_TOKEN_FILE),
            )?,
        )),
        None => None,
    };
    Ok(Server {
        child,
        addr,
        admin,
        _dir: Some(dir),
    })
}

/// Start a benchmark relay as a child of this binary (`relay-load
/// relay-child`, see [`metering::serve`]) with franking and the ledger as
/// `metering` says.
fn start_bench_relay(metering: RelayMetering) -> Result<Server, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("relay-child")
        .arg("--data-dir")
        .arg(&data)
        .arg("--metering")
        .arg(metering.name());
    let mut child = command
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()?;
    let (addr, admin) = wait_listening(&mut child, "address=", Some("admin="))?;
    let admin = admin.ok_or("the benchmark relay named no admin API")?;
    let token = comptoir_relay::operator::read_admin_token(
        &data.join(comptoir_relay::operator::ADMIN_TOKEN_FILE),
    )?;
    Ok(Server {
        child,
        addr,
        admin: Some(AdminClient::new(admin, token)),
        _dir: Some(dir),
    })
}

fn start_forwarder() -> Result<Server, Box<dyn std::error::Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["forwarder"])
        .stdout(Stdio::piped())
        .spawn()?;
    let (addr, _) = wait_listening(&mut child, "listening on ", None)?;
    Ok(Server {
        child,
        addr,
        admin: None,
        _dir: None,
    })
}

fn print_report(name: &str, r: &LoadReport) {
    println!(
        "{name:<10} {:>9} env {:>9.0} env/s  p50 {:>8.2} ms  p99 {:>8.2} ms  p99.9 {:>8.2} ms  ({:.2} s)",
        r.envelopes,
        r.throughput,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.p999.as_secs_f64() * 1e3,
        r.elapsed.as_secs_f64()
    );
    if r.billed > 0 && r.signed_acks == 0 {
        // Franking and the ledger off: nothing signed, nothing billed.
        println!(
            "{:<10} templates {} of {} sends ({:.1}%) from {} businesses; none billed (no ack signed)",
            "",
            r.billed,
            r.envelopes,
            100.0 * r.billed as f64 / (r.envelopes as f64).max(1.0),
            r.businesses,
        );
    } else if r.billed > 0 {
        println!(
            "{:<10} billed templates {} of {} sends ({:.1}%) from {} businesses; signed acks answered Ok {}",
            "",
            r.billed,
            r.envelopes,
            100.0 * r.billed as f64 / (r.envelopes as f64).max(1.0),
            r.businesses,
            r.signed_acks
        );
    }
    if r.service > 0 {
        println!(
            "{:<10} business traffic {} of {} sends ({:.1}%): {} templates, {} service replies",
            "",
            r.billed + r.service,
            r.envelopes,
            100.0 * (r.billed + r.service) as f64 / (r.envelopes as f64).max(1.0),
            r.billed,
            r.service
        );
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// CPU time (user + system) a process has used so far, from
/// `/proc/PID/stat` (`self` for this process), in seconds.
fn cpu_seconds(pid: &str) -> Result<f64, Box<dyn std::error::Error>> {
    /// Clock ticks per second of `/proc` times (`getconf CLK_TCK`; 100 on
    /// Linux everywhere this runs).
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in brackets:
    // state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, Box<dyn std::error::Error>> {
        Ok(fields.get(i).ok_or("short /proc stat")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

/// Which servers [`bench_rules`] runs both mixes against.
#[derive(Clone, Copy, Debug)]
enum RulesRelay {
    /// The `relay` binary as operators run it (franking and the ledger
    /// on), and, `with_forwarder`, the storage-free forwarder too.
    Metered {
        /// Run the forwarder on both mixes as well.
        with_forwarder: bool,
    },
    /// A benchmark relay with franking, the ledger and signed delivery
    /// off, nothing franked or signed: what the business rules alone cost.
    Unmetered,
}

/// One run of [`bench_rules`].
#[derive(Clone, Copy, Debug, Default)]
struct RulesRun {
    /// Envelopes per second.
    throughput: f64,
    /// Server CPU (user + system) per delivered envelope during the run
    /// (setup included, start-up not), in µs.
    server_cpu_us: f64,
    /// The load generator's own CPU per delivered envelope, in µs.
    load_cpu_us: f64,
}

/// `relay-load bench --business-percent P [--unmetered]`: each round runs
/// the relay (`relay`: the operators' binary, with the forwarder too if
/// asked; or a benchmark relay with franking and the ledger off) on the
/// business mix and on customer-only traffic, a fresh server per run, alternating which mix
/// goes first; prints the rounds, the medians and business ÷ customer, for
/// throughput and for the CPU each process spent per envelope.
async fn bench_rules(business: LoadOptions, rounds: usize, relay: RulesRelay) -> Res {
    let (business, with_forwarder, unmetered) = match relay {
        RulesRelay::Metered { with_forwarder } => (business, with_forwarder, false),
        RulesRelay::Unmetered => (metering::unmetered(business), false, true),
    };
    let customer = LoadOptions {
        business_percent: 0,
        ..business
    };
    println!(
        "devices {} x messages {} x {} B, window {}, business mix {}% ({}% of a business's \
         sends templates) against customer-only{}, {} rounds, alternating (loopback, child \
         processes)",
        business.devices,
        business.messages,
        business.size,
        business.window,
        business.business_percent,
        business.template_percent,
        if unmetered {
            ", both on a relay with franking and the ledger off"
        } else {
            ""
        },
        rounds
    );
    let servers: &[&str] = if with_forwarder {
        &["relay", "forwarder"]
    } else {
        &["relay"]
    };
    // Per server: (business, customer) of each round.
    let mut runs: Vec<Vec<(RulesRun, RulesRun)>> = vec![Vec::new(); servers.len()];
    for round in 1..=rounds.max(1) {
        let business_first = round % 2 == 1;
        for (slot, &name) in servers.iter().enumerate() {
            let (mut on_business, mut on_customer) = (RulesRun::default(), RulesRun::default());
            for business_turn in [business_first, !business_first] {
                let (mix, options) = if business_turn {
                    ("business", business)
                } else {
                    ("customer", customer)
                };
                // A fresh server per run: same starting state every time.
                let server = if unmetered {
                    start_bench_relay(RelayMetering::Unmetered)?
                } else if name == "relay" {
                    start_relay()?
                } else {
                    start_forwarder()?
                };
                let pid = server.child.id().to_string();
                let (server_before, load_before) = (cpu_seconds(&pid)?, cpu_seconds("self")?);
                let report = load::run(server.addr, options, server.approval()).await?;
                let (server_after, load_after) = (cpu_seconds(&pid)?, cpu_seconds("self")?);
                let envelopes = (report.envelopes as f64).max(1.0);
                let run = RulesRun {
                    throughput: report.throughput,
                    server_cpu_us: (server_after - server_before) * 1e6 / envelopes,
                    load_cpu_us: (load_after - load_before) * 1e6 / envelopes,
                };
                print!("round {round} {mix:<8} ");
                print_report(name, &report);
                println!(
                    "{:<10} CPU per envelope: {name} {:.1} us, load generator {:.1} us",
                    "", run.server_cpu_us, run.load_cpu_us
                );
                if business_turn {
                    on_business = run;
                } else {
                    on_customer = run;
                }
                drop(server);
            }
            println!(
                "round {round} {name}: business / customer throughput {:.3}, {name} CPU per \
                 envelope {:.3}",
                on_business.throughput / on_customer.throughput.max(f64::EPSILON),
                on_business.server_cpu_us / on_customer.server_cpu_us.max(f64::EPSILON),
            );
            if let Some(runs) = runs.get_mut(slot) {
                runs.push((on_business, on_customer));
            }
        }
    }
    for (&name, runs) in servers.iter().zip(&runs) {
        print_pair_summary(name, ("business", "customer"), runs);
    }
    Ok(())
}

/// The medians of paired runs `(a, b)` of one server over the rounds, and
/// the per-round ratios a ÷ b, for throughput and for the CPU each process
/// spent per envelope.
fn print_pair_summary(name: &str, (a, b): (&str, &str), runs: &[(RulesRun, RulesRun)]) {
    let column = |pick: fn(&RulesRun) -> f64, first: bool| -> Vec<f64> {
        runs.iter()
            .map(|(x, y)| pick(if first { x } else { y }))
            .collect()
    };
    let ratios = |pick: fn(&RulesRun) -> f64| -> Vec<f64> {
        runs.iter()
            .map(|(x, y)| pick(x) / pick(y).max(f64::EPSILON))
            .collect()
    };
    let range = |values: &[f64]| {
        values
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(l, h), &r| (l.min(r), h.max(r)))
    };
    let throughput = ratios(|r| r.throughput);
    let (low, high) = range(&throughput);
    println!(
        "{name}: median env/s {a} {:.0}, {b} {:.0} (ratio of medians {:.3}); \
         per-round {a} / {b}: median {:.3}, range {low:.3}-{high:.3}",
        median(&column(|r| r.throughput, true)),
        median(&column(|r| r.throughput, false)),
        median(&column(|r| r.throughput, true)) / median(&column(|r| r.throughput, false)),
        median(&throughput),
    );
    let cpu = ratios(|r| r.server_cpu_us);
    let (low, high) = range(&cpu);
    println!(
        "{name}: median CPU per envelope {a} {:.1} us, {b} {:.1} us; per-round \
         {a} / {b}: median {:.3}, range {low:.3}-{high:.3}; load generator \
         {:.1} us against {:.1} us",
        median(&column(|r| r.server_cpu_us, true)),
        median(&column(|r| r.server_cpu_us, false)),
        median(&cpu),
        median(&column(|r| r.load_cpu_us, true)),
        median(&column(|r| r.load_cpu_us, false)),
    );
}

/// `relay-load bench --compare-franking-ledger`: each round runs the
/// business mix against a fresh benchmark relay with franking and the
/// ledger on and against a fresh one with them off as `off` says (see
/// [`comptoir_bench::metering`]), alternating which goes first; prints the
/// rounds, the medians and on ÷ off.
async fn bench_metering(options: LoadOptions, rounds: usize, off_relay: RelayMetering) -> Res {
    let on = metering::on(options);
    let off = LoadOptions {
        metering: off_relay.load(),
        ..options
    };
    println!(
        "devices {} x messages {} x {} B, window {}, business mix {}% ({}% of a business's \
         sends templates), franking and ledger on against off ({}: {}), {} rounds, alternating \
         (loopback, relays as child processes of this binary)",
        options.devices,
        options.messages,
        options.size,
        options.window,
        options.business_percent,
        options.template_percent,
        off_relay.name(),
        if off_relay == RelayMetering::Unmetered {
            "no ack signed or checked"
        } else {
            "billed templates' acks still signed and checked"
        },
        rounds
    );
    let mut runs: Vec<(RulesRun, RulesRun)> = Vec::new();
    for round in 1..=rounds.max(1) {
        let on_first = round % 2 == 1;
        let (mut with, mut without) = (RulesRun::default(), RulesRun::default());
        for on_turn in [on_first, !on_first] {
            let (label, options) = if on_turn { ("on", on) } else { ("off", off) };
            // A fresh relay per run: same starting state every time.
            let server = start_bench_relay(if on_turn {
                RelayMetering::On
            } else {
                off_relay
            })?;
            let pid = server.child.id().to_string();
            let (server_before, load_before) = (cpu_seconds(&pid)?, cpu_seconds("self")?);
            let report = load::run(server.addr, options, server.approval()).await?;
            let (server_after, load_after) = (cpu_seconds(&pid)?, cpu_seconds("self")?);
            let envelopes = (report.envelopes as f64).max(1.0);
            let run = RulesRun {
                throughput: report.throughput,
                server_cpu_us: (server_after - server_before) * 1e6 / envelopes,
                load_cpu_us: (load_after - load_before) * 1e6 / envelopes,
            };
            print!("round {round} {label:<4} ");
            print_report("relay", &report);
            println!(
                "{:<10} CPU per envelope: relay {:.1} us, load generator {:.1} us",
                "", run.server_cpu_us, run.load_cpu_us
            );
            if on_turn {
                with = run;
            } else {
                without = run;
            }
            drop(server);
        }
        println!(
            "round {round}: on / off throughput {:.3}, relay CPU per envelope {:.3}",
            with.throughput / without.throughput.max(f64::EPSILON),
            with.server_cpu_us / without.server_cpu_us.max(f64::EPSILON),
        );
        runs.push((with, without));
    }
    print_pair_summary("relay", ("on", "off"), &runs);
    Ok(())
}

/// `relay-load mux`: see [`comptoir_bench::mux`].
async fn mux(tasks: &[usize], messages: usize, size: usize, rounds: usize) -> Res {
    println!(
        "one device connection, {messages} sends of {size} B per run, tasks {tasks:?}, \
         {rounds} rounds (relay as a child process on loopback)"
    );
    let mut best: Vec<f64> = vec![0.0; tasks.len()];
    for round in 1..=rounds.max(1) {
        for (slot, &count) in tasks.iter().enumerate() {
            // A fresh relay and fresh accounts per run: same starting state.
            let server = start_relay()?;
            let sender = LoadAccount::generate();
            let recipient = LoadAccount::generate();
            load::connect(server.addr, 0, &sender, true).await?;
            load::connect(server.addr, 1, &recipient, true).await?;
            let options = MuxOptions {
                tasks: count,
                messages,
                size,
                timeout: Duration::from_secs(60),
            };
            let report = mux::run(server.addr, &sender, recipient.id, options).await?;
            println!(
                "round {round}: {:>3} tasks  {:>6} sends  {:>8.1} ms  {:>9.0} sends/s",
                report.tasks,
                report.sends,
                report.elapsed.as_secs_f64() * 1e3,
                report.per_sec
            );
            if let Some(best) = best.get_mut(slot) {
                *best = best.max(report.per_sec);
            }
            drop(server);
        }
    }
    let baseline = best.first().copied().unwrap_or(0.0);
    for (&count, &per_sec) in tasks.iter().zip(&best) {
        println!(
            "best {count:>3} tasks: {per_sec:>9.0} sends/s = {:.2}x {} task(s)",
            per_sec / baseline.max(f64::EPSILON),
            tasks.first().copied().unwrap_or(1)
        );
    }
    Ok(())
}

/// `relay-load attachment`: see [`comptoir_bench::attachment`].
async fn attachment_bench(mib: u64, rounds: usize) -> Res {
    let bytes = mib * 1024 * 1024;
    println!(
        "one file of {mib} MiB as an attachment, {rounds} rounds (relay as a child process on \
         loopback; every step against copying the file on the same disk)"
    );
    let rate = |d: Duration| bytes as f64 / 1_048_576.0 / d.as_secs_f64().max(f64::EPSILON);
    for round in 1..=rounds.max(1) {
        let server = start_relay()?;
        let r = attachment::run(server.addr, bytes).await?;
        let copy = r.copy.as_secs_f64().max(f64::EPSILON);
        println!(
            "round {round}: copy {:.0} MiB/s; encrypt {:.0} MiB/s ({:.2}x the copy's time); \
             upload {:.0} MiB/s ({:.2}x); download+decrypt {:.0} MiB/s ({:.2}x)",
            rate(r.copy),
            rate(r.encrypt),
            r.encrypt.as_secs_f64() / copy,
            rate(r.upload),
            r.upload.as_secs_f64() / copy,
            rate(r.download),
            r.download.as_secs_f64() / copy,
        );
        drop(server);
    }
    Ok(())
}

/// `relay-load client-mux`: see [`comptoir_bench::client_mux`].
async fn client_mux(
    tasks: &[usize],
    messages: usize,
    size: usize,
    peers: usize,
    rounds: usize,
) -> Res {
    println!(
        "one Client, {messages} encrypted sends of {size} B text per run to {peers} peers, \
         tasks {tasks:?}, {rounds} rounds (relay as a child process on loopback)"
    );
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); tasks.len()];
    for round in 1..=rounds.max(1) {
        for (slot, &count) in tasks.iter().enumerate() {
            // A fresh relay and fresh accounts per run: same starting state.
            let server = start_relay()?;
            let options = ClientMuxOptions {
                tasks: count,
                messages,
                size,
                peers,
                timeout: Duration::from_secs(60),
            };
            let report = client_mux::run(server.addr, options).await?;
            println!(
                "round {round}: {:>3} tasks  {:>6} sends  {:>8.1} ms  {:>9.0} sends/s",
                report.tasks,
                report.sends,
                report.elapsed.as_secs_f64() * 1e3,
                report.per_sec
            );
            if let Some(slot) = runs.get_mut(slot) {
                slot.push(report.per_sec);
            }
            drop(server);
        }
    }
    let summary = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        let best = sorted.last().copied().unwrap_or(0.0);
        (median, best)
    };
    let (base_median, base_best) = runs.first().map_or((0.0, 0.0), |r| summary(r));
    for (&count, values) in tasks.iter().zip(&runs) {
        let (median, best) = summary(values);
        println!(
            "{count:>3} tasks: median {median:>7.0} sends/s ({:.2}x), best {best:>7.0} sends/s ({:.2}x)",
            median / base_median.max(f64::EPSILON),
            best / base_best.max(f64::EPSILON),
        );
    }
    Ok(())
}

async fn bench(options: LoadOptions, rounds: usize) -> Res {
    println!(
        "devices {} x messages {} x {} B, window {}, billed {}%, {} rounds (loopback, child processes)",
        options.devices,
        options.messages,
        options.size,
        options.window,
        options.billed_percent,
        rounds
    );
    let mut best: [Option<LoadReport>; 2] = [None, None];
    for round in 1..=rounds.max(1) {
        for (slot, name) in [(0, "forwarder"), (1, "relay")] {
            // A fresh server per run: same starting state every time.
            let server = if slot == 0 {
                start_forwarder()?
            } else {
                start_relay()?
            };
            let report = load::run(server.addr, options, server.approval()).await?;
            print!("round {round} ");
            print_report(name, &report);
            if best[slot]
                .as_ref()
                .is_none_or(|b| b.throughput < report.throughput)
            {
                best[slot] = Some(report);
            }
            drop(server);
        }
    }
    if let [Some(f), Some(r)] = &best {
        println!("best:");
        print_report("forwarder", f);
        print_report("relay", r);
        println!(
            "relay / forwarder throughput: {:.2}",
            r.throughput / f.throughput
        );
    }
    Ok(())
}

fn rss_kib(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

async fn idle(connections: usize) -> Res {
    let server = start_relay()?;
    let addr = server.addr;
    let pid = server.child.id();
    let accounts: Vec<LoadAccount> = (0..connections).map(|_| LoadAccount::generate()).collect();
    let accounts = std::sync::Arc::new(accounts);
    // Register every account first, on short-lived connections, so the
    // baseline already holds the directory.
    let started = Instant::now();
    run_batches(addr, accounts.clone(), true, false).await?;
    println!(
        "registered {connections} accounts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let before = rss_kib(pid)?;
    let held = run_batches(addr, accounts.clone(), false, true).await?;
    // Let the allocator settle, then read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid)?;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / connections as f64;
    println!(
        "relay RSS {before} KiB before, {after} KiB with {} idle authenticated connections: {per:.0} bytes ({:.2} KiB) per connection",
        held.len(),
        per / 1024.0
    );
    drop(held);
    Ok(())
}

async fn run_batches(
    addr: SocketAddr,
    accounts: std::sync::Arc<Vec<LoadAccount>>,
    register: bool,
    keep: bool,
) -> Result<Vec<impl Sized>, Box<dyn std::error::Error>> {
    const PARALLEL: usize = 64;
    let mut kept = Vec::new();
    for chunk in (0..accounts.len()).collect::<Vec<_>>().chunks(PARALLEL) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let accounts = accounts.clone();
            tasks.push(tokio::spawn(async move {
                load::connect(addr, i, &accounts[i], register).await
            }));
        }
        for t in tasks {
            let ws = t.await??;
            if keep {
                kept.push(ws);
            }
        }
    }
    Ok(kept)
}
