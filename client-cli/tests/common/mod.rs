//! What the `comptoir` binary's tests share: a real relay in the test
//! process on 127.0.0.1:0, and customers whose data directories are used
//! through the binary run as a child process.
#![allow(dead_code, unreachable_pub)]

pub mod cut;
pub mod terminal;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use comptoir_relay::{CodeSender, Config, Metrics, Services};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long any one wait for the daemon or the relay may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// A relay running in this test process.
pub struct Relay {
    pub url: String,
    pub codes: Arc<CapturedCodes>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), comptoir_relay::ServerError>>>,
    dir: tempfile::TempDir,
    /// Origins devices may sign besides the relay's own (a proxy's).
    origins: Vec<String>,
}

/// The phone verification codes the relay sent: (number, code).
#[derive(Debug, Default)]
pub struct CapturedCodes(pub std::sync::Mutex<Vec<(String, String)>>);

impl CodeSender for CapturedCodes {
    fn send_code(&self, phone: &str, code: &str) {
        if let Ok(mut codes) = self.0.lock() {
            codes.push((phone.to_string(), code.to_string()));
        }
    }
}

impl CapturedCodes {
    pub fn last(&self) -> Option<(String, String)> {
        self.0.lock().ok()?.last().cloned()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Whether the system tool `name` (Debian package `package`) can run.
/// Missing: a failure under CI (`.ci/run` installs it), else a skip that
/// says how to install it.
pub fn have_tool(name: &str, package: &str) -> bool {
    let found = std::process::Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "`{name}` is missing: .ci/run installs it (apt-get install {package})"
        );
        eprintln!("skipped: `{name}` is missing; install it with: apt-get install {package}");
    }
    found
}

pub async fn start_relay() -> Relay {
    start_relay_with_origins(Vec::new()).await
}

/// A relay that also accepts devices signing `origins` (the URLs of
/// proxies in front of it).
pub async fn start_relay_with_origins(origins: Vec<String>) -> Relay {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut relay = Relay {
        url: format!("ws://{addr}"),
        codes: Arc::new(CapturedCodes::default()),
        addr,
        stop: None,
        task: None,
        dir,
        origins,
    };
    relay.serve(listener);
    relay
}

impl Relay {
    /// Run the relay on `listener` with this relay's data directory.
    fn serve(&mut self, listener: TcpListener) {
        let mut config = Config {
            data_dir: self.dir.path().to_owned(),
            cache_capacity_bytes: 16 * 1024 * 1024,
            public_origins: if self.origins.is_empty() {
                Vec::new()
            } else {
                let own = comptoir_protocol::relay_origin(false, "127.0.0.1", self.addr.port());
                self.origins.iter().cloned().chain([own]).collect()
            },
            ..Config::default()
        };
        config.limits.registration_rate_per_sec = 0.0;
        config.limits.registration_rate_per_prefix_per_sec = 0.0;
        let services = Services {
            admin_listener: None,
            http_listener: None,
            tls: None,
            code_sender: self.codes.clone(),
            metrics: Arc::new(Metrics::default()),
            clock: Arc::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(comptoir_relay::run_with(
            listener,
            config,
            services,
            async {
                let _ = stopped.await;
            },
        )));
    }

    /// Stop the relay (its connections close) and wait until its storage
    /// is closed; [`Self::start_again`] starts it on the same data
    /// directory and port.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(std::time::Duration::from_secs(30), task)
                .await
                .expect("the relay stops in time")
                .expect("relay task")
                .expect("the relay ran cleanly");
        }
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Start the stopped relay again on its data directory and port (its
    /// clients find it at the URL they have).
    pub async fn start_again(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("bind the same port");
        self.serve(listener);
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `command`, writing `stdin` to it meanwhile.
pub async fn run_command(mut command: Command, stdin: Option<Vec<u8>>) -> Run {
    // The relay runs on this runtime's other worker meanwhile.
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("start comptoir");
        let writer = stdin.map(|input| {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            std::thread::spawn(move || {
                use std::io::Write;
                // The command may stop reading early: not an error here.
                let _ = pipe.write_all(&input);
            })
        });
        let output = child.wait_with_output().expect("comptoir runs");
        if let Some(writer) = writer {
            writer.join().expect("stdin writer");
        }
        output
    })
    .await
    .expect("join");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

/// One customer's data directory, used through the binary.
pub struct Customer {
    pub dir: PathBuf,
    pub relay: String,
}

impl Customer {
    pub fn new(root: &Path, name: &str, relay: &Relay) -> Self {
        Self {
            dir: root.join(name),
            relay: relay.url.clone(),
        }
    }

    /// Run `comptoir --relay RELAY <args>` with `stdin` as its standard input.
    pub async fn run_at(&self, relay: &str, args: &[&str], stdin: Option<Vec<u8>>) -> Run {
        let command = self.command(relay, args, true, stdin.is_some());
        // The relay runs on this runtime's other worker meanwhile.
        run_command(command, stdin).await
    }

    /// `comptoir <args>` as this customer, and the most memory the process
    /// held (its `VmHWM`, KiB), read from /proc while it runs.
    pub async fn run_measured(&self, args: &[&str]) -> (Run, u64) {
        let mut command = self.command(&self.relay.clone(), args, true, false);
        tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("start comptoir");
            let status_file = format!("/proc/{}/status", child.id());
            let mut peak = 0;
            // VmHWM only grows: the last read before the exit is the peak
            // up to a few milliseconds.
            while child.try_wait().expect("wait").is_none() {
                if let Ok(status) = std::fs::read_to_string(&status_file)
                    && let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                {
                    peak = kib;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let output = child.wait_with_output().expect("comptoir runs");
            let run = Run {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            };
            (run, peak)
        })
        .await
        .expect("join")
    }

    /// `comptoir --data-dir DIR --relay RELAY <args>`; with `passphrase`,
    /// the store's passphrase is in the environment, else nowhere (a
    /// command that opened the store would fail).
    pub fn command(&self, relay: &str, args: &[&str], passphrase: bool, stdin: bool) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_comptoir"));
        command
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--relay")
            .arg(relay)
            .args(args)
            .env_remove("COMPTOIR_PASSPHRASE")
            .env_remove("COMPTOIR_RELAY")
            .env_remove("COMPTOIR_DATA_DIR")
            .env_remove("COMPTOIR_CA_CERT")
            .env_remove("COMPTOIR_CONFIG")
            .env_remove("COMPTOIR_OUTPUT")
            .env_remove("COMPTOIR_REGION")
            // No config file of the person running the tests.
            .env("XDG_CONFIG_HOME", self.dir.with_extension("config"))
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if passphrase {
            command.env("COMPTOIR_PASSPHRASE", "a test passphrase");
        }
        command
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_at(&self.relay.clone(), args, None).await
    }

    pub async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, 0, "comptoir {args:?}: {run:?}");
        run.stdout
    }

    /// `init` and `register`; returns the account id.
    pub async fn registered(&self) -> String {
        let id = self.ok(&["init"]).await.trim().to_string();
        self.ok(&["register"]).await;
        id
    }

    /// `comptoir <args>`, with the passphrase at hand only if
    /// `passphrase`, and `stdin` as its standard input.
    pub async fn run_with(&self, args: &[&str], passphrase: bool, stdin: Option<&str>) -> Run {
        let command = self.command(&self.relay.clone(), args, passphrase, stdin.is_some());
        run_command(command, stdin.map(|s| s.as_bytes().to_vec())).await
    }

    /// Where `comptoir daemon` serves this customer's account.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("daemon.sock")
    }
}

/// Alice and Bob, registered, each with the other as a contact; returns
/// them and their account ids.
pub async fn contacts(root: &Path, relay: &Relay) -> (Customer, Customer, String, String) {
    let alice = Customer::new(root, "alice", relay);
    let bob = Customer::new(root, "bob", relay);
    let alice_id = alice.registered().await;
    let bob_id = bob.registered().await;
    alice.ok(&["contacts", "add", "bob", &bob_id]).await;
    bob.ok(&["contacts", "add", "alice", &alice_id]).await;
    (alice, bob, alice_id, bob_id)
}

/// Acme, a business that claimed the name `acme`, and Alice, a
/// registered customer who does not know it yet; returns Acme, its
/// account id and Alice.
pub async fn acme_and_alice(root: &Path, relay: &Relay) -> (Customer, String, Customer) {
    let acme = Customer::new(root, "acme", relay);
    let acme_id = acme.ok(&["init"]).await.trim().to_owned();
    acme.ok(&["register", "--business"]).await;
    acme.ok(&["name", "claim", "acme"]).await;
    let alice = Customer::new(root, "alice", relay);
    alice.registered().await;
    (acme, acme_id, alice)
}

/// A `comptoir daemon` process and what it wrote on standard error.
pub struct Daemon {
    pub child: Child,
    stderr: std_mpsc::Receiver<String>,
}

impl Daemon {
    /// Start `comptoir daemon <extra>` for `customer` and wait until it
    /// says it serves (after its socket exists).
    pub fn start(customer: &Customer, extra: &[&str]) -> Self {
        let mut args = vec!["daemon"];
        args.extend_from_slice(extra);
        let mut daemon = Self::spawn(customer, &args, true);
        let banner = daemon.wait_for_stderr("serves JSON-RPC on");
        assert!(banner.contains("daemon.sock"), "{banner}");
        daemon
    }

    /// Start `comptoir <args>` (with the passphrase if `passphrase`),
    /// its standard error read line by line.
    pub fn spawn(customer: &Customer, args: &[&str], passphrase: bool) -> Self {
        let mut command = customer.command(&customer.relay, args, passphrase, false);
        command.stdin(Stdio::piped());
        let mut child = command.spawn().expect("start the daemon");
        let stderr = child.stderr.take().expect("stderr pipe");
        let (lines_tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stderr: lines,
        }
    }

    /// The first line of standard error containing `needle` (panics with
    /// what it printed if none comes in time).
    pub fn wait_for_stderr(&mut self, needle: &str) -> String {
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "the daemon did not print {needle:?} (exit: {:?}); it printed: {seen:#?}",
                    self.child.try_wait()
                ),
            }
        }
    }

    /// Stop it with SIGTERM (as a service manager does) and return its
    /// exit code.
    pub fn terminate(mut self) -> i32 {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.wait()
    }

    pub fn wait(&mut self) -> i32 {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon did not stop"
            );
            // Waiting for the process to exit (no event to wait on
            // without blocking this thread for good).
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
