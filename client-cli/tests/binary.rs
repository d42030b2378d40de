//! The `comptoir` binary itself, run as a child process against a real
//! relay on 127.0.0.1:0: what it prints on standard error, what it reads
//! from standard input, and the exit codes scripts rely on.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use comptoir_relay::{Config, LogCodeSender, Metrics, Services};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A relay running in this test process.
struct Relay {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_relay() -> Relay {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        cache_capacity_bytes: 16 * 1024 * 1024,
        ..Config::default()
    };
    config.limits.registration_rate_per_sec = 0.0;
    config.limits.registration_rate_per_prefix_per_sec = 0.0;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let services = Services {
        http_listener: None,
        tls: None,
        code_sender: Arc::new(LogCodeSender),
        metrics: Arc::new(Metrics::default()),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(comptoir_relay::run_with(
        listener,
        config,
        services,
        async {
            let _ = stopped.await;
        },
    ));
    Relay {
        url,
        stop: Some(stop),
        _dir: dir,
    }
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// One customer's data directory, used through the binary.
struct Customer {
    dir: PathBuf,
    relay: String,
}

impl Customer {
    fn new(root: &Path, name: &str, relay: &Relay) -> Self {
        Self {
            dir: root.join(name),
            relay: relay.url.clone(),
        }
    }

    /// Run `comptoir --relay RELAY <args>` with `stdin` as its standard input.
    async fn run_at(&self, relay: &str, args: &[&str], stdin: Option<Vec<u8>>) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_comptoir"));
        command
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--relay")
            .arg(relay)
            .args(args)
            .env("COMPTOIR_PASSPHRASE", "a test passphrase")
            .env_remove("COMPTOIR_RELAY")
            .env_remove("COMPTOIR_DATA_DIR")
            .env_remove("COMPTOIR_CA_CERT")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The relay runs on this runtime's other worker meanwhile.
        let output = tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("start comptoir");
            if let Some(input) = stdin {
                use std::io::Write;
                let mut pipe = child.stdin.take().expect("stdin pipe");
                pipe.write_all(&input).expect("write stdin");
            }
            child.wait_with_output().expect("comptoir runs")
        })
        .await
        .expect("join");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_at(&self.relay.clone(), args, None).await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, 0, "comptoir {args:?}: {run:?}");
        run.stdout
    }

    /// `init` and `register`; returns the account id.
    async fn registered(&self) -> String {
        let id = self.ok(&["init"]).await.trim().to_string();
        self.ok(&["register"]).await;
        id
    }
}

/// A mistyped `--relay` (no scheme, `http://`, plain ws:// to another
/// machine) is a command-line error that queues nothing; a well-formed but
/// unreachable one (a wrong port) queues the message and says how to see
/// and cancel it, and a cancelled message is never sent (issue 18 item 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_relay_stores_nothing_and_an_unreachable_one_says_how_to_cancel() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);
    alice.registered().await;
    let bob_id = bob.registered().await;
    alice.ok(&["contacts", "add", "bob", &bob_id]).await;

    let port = relay.url.rsplit(':').next().expect("port");
    for bad in [
        format!("127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}"),
        format!("ws//127.0.0.1:{port}"),
        "ws://192.0.2.1:7700".to_string(),
    ] {
        let run = alice.run_at(&bad, &["send", "bob", "typo"], None).await;
        assert_eq!(run.code, 2, "--relay {bad}: {run:?}");
        assert!(run.stderr.contains("wss://"), "says what to write: {run:?}");
    }
    assert_eq!(alice.ok(&["outbox", "list"]).await, "", "nothing queued");

    let run = alice
        .run_at("ws://127.0.0.1:1", &["send", "bob", "wrong port"], None)
        .await;
    assert_eq!(run.code, 5, "{run:?}");
    let listed = alice.ok(&["outbox", "list"]).await;
    let fields: Vec<&str> = listed.trim_end().split('\t').collect();
    assert_eq!(fields.len(), 4, "{listed:?}");
    let id = fields[0];
    assert_eq!((fields[1], fields[3]), ("bob", "wrong port"), "{listed:?}");
    assert!(
        run.stderr.contains("comptoir outbox list")
            && run.stderr.contains(&format!("comptoir outbox cancel {id}")),
        "says how to see and cancel what is queued: {run:?}"
    );

    alice.ok(&["outbox", "cancel", id]).await;
    assert_eq!(alice.ok(&["outbox", "list"]).await, "");
    assert_eq!(alice.run(&["outbox", "cancel", id]).await.code, 1);
    assert_eq!(alice.run(&["outbox", "cancel", "not-an-id"]).await.code, 1);
    // Connecting sends the outbox first: had the cancelled message been
    // left there, Bob would get it before this one.
    alice.ok(&["send", "bob", "after the typo"]).await;
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    assert!(heard.ends_with(": after the typo\n"), "{heard:?}");
    let history = alice.ok(&["history", "bob"]).await;
    assert!(history.contains(" me: wrong port [failed]"), "{history}");
}
