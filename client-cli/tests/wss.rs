//! The real `comptoir` binary against a relay serving TLS: two customers
//! register and chat over `wss://` with the relay's CA given by
//! `--ca-cert`; without it the handshake is refused and says what to do;
//! `ws://` to the TLS port says to use `wss://`; plain `ws://` to another
//! machine is refused unless `--insecure`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use comptoir_relay::{Config, LogCodeSender, Metrics, Services};
use tokio::net::TcpListener;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `comptoir` with `args` (blocking, on the blocking pool so the relay
/// in this process keeps serving).
async fn comptoir(data_dir: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_comptoir"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("COMPTOIR_PASSPHRASE", "a long enough passphrase")
        .env_remove("COMPTOIR_RELAY")
        .env_remove("COMPTOIR_CA_CERT");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run comptoir");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn ok(data_dir: &Path, args: &[&str]) -> String {
    let run = comptoir(data_dir, args).await;
    assert_eq!(run.code, 0, "comptoir {args:?}: {}", run.stderr);
    run.stdout
}

/// A relay with TLS on 127.0.0.1:0 and its certificate (for "localhost").
async fn tls_relay(dir: &Path) -> (u16, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let ca = dir.join("relay-ca.pem");
    std::fs::write(&ca, cert.cert.pem()).expect("write cert");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let tls = comptoir_relay::tls::acceptor_from_der(vec![cert.cert.der().clone()], key)
        .expect("acceptor");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = Config {
        data_dir: dir.join("relay"),
        ..Config::default()
    };
    let services = Services {
        admin_listener: None,
        http_listener: None,
        tls: Some(tls),
        code_sender: Arc::new(LogCodeSender),
        metrics: Arc::new(Metrics::default()),
        clock: Arc::default(),
    };
    tokio::spawn(comptoir_relay::run_with(
        listener,
        config,
        services,
        std::future::pending::<()>(),
    ));
    (port, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_chats_over_wss_with_a_given_ca() {
    let root = tempfile::tempdir().expect("dir");
    let (port, ca) = tls_relay(root.path()).await;
    let wss = format!("wss://localhost:{port}");
    let ca = ca.to_str().expect("utf-8 path");
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));

    let alice_id = ok(&alice, &["init"]).await.trim().to_string();
    let bob_id = ok(&bob, &["init"]).await.trim().to_string();

    // Without the relay's CA: refused, and the message says what to do.
    let run = comptoir(&alice, &["--relay", &wss, "register"]).await;
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("--ca-cert"), "{}", run.stderr);

    // ws:// to the TLS port: told to use wss://.
    let run = comptoir(
        &alice,
        &["--relay", &format!("ws://localhost:{port}"), "register"],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("wss://"), "{}", run.stderr);

    // Plain ws:// to another machine: a usage error, before connecting.
    let run = comptoir(&alice, &["--relay", "ws://192.0.2.1:7700", "register"]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--insecure"), "{}", run.stderr);

    let with_ca = |args: &[&'static str]| {
        let mut all = vec!["--relay", wss.as_str(), "--ca-cert", ca];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run_ca = |dir: PathBuf, args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&dir, &args).await
    };
    assert_eq!(
        run_ca(alice.clone(), with_ca(&["register"])).await.trim(),
        alice_id
    );
    run_ca(bob.clone(), with_ca(&["register"])).await;
    // `contacts add` checks the id with the relay.
    let mut add_bob = with_ca(&["contacts", "add", "bob"]);
    add_bob.push(bob_id.clone());
    run_ca(alice.clone(), add_bob).await;
    let mut add_alice = with_ca(&["contacts", "add", "alice"]);
    add_alice.push(alice_id.clone());
    run_ca(bob.clone(), add_alice).await;
    run_ca(alice.clone(), with_ca(&["send", "bob", "over tls"])).await;
    // The CA in the data directory is used when --ca-cert is not given.
    std::fs::copy(ca, bob.join("relay-ca.pem")).expect("copy ca");
    let heard = ok(
        &bob,
        &["--relay", &wss, "listen", "--count", "1", "--timeout", "10"],
    )
    .await;
    // Bob never wrote to Alice: her first message is a message request.
    assert!(
        heard.ends_with("] alice [request]: over tls\n"),
        "{heard:?}"
    );
}
