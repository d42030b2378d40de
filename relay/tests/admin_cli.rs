//! `relay admin` against a real `relay serve` child process: it reads the
//! token the relay created and prints the operator key; a wrong token, a
//! missing token file and an operator key file others can read are each
//! refused with a sentence saying what to do.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// A relay child process, killed when dropped.
struct RelayChild(Child);

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay_command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    command
}

/// Start `relay serve`; returns once it listens, with its admin address.
fn spawn_relay(dir: &Path) -> (RelayChild, SocketAddr) {
    let mut child = relay_command(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn relay");
    let stdout = child.stdout.take().expect("stdout");
    let child = RelayChild(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut admin = None;
    loop {
        let line = lines
            .next()
            .expect("relay exited before listening")
            .expect("read log");
        if line.contains("admin API listening") {
            let at = line.find("admin=").expect("admin field") + "admin=".len();
            let rest = &line[at..];
            let end = rest.find(' ').unwrap_or(rest.len());
            admin = Some(rest[..end].parse().expect("admin address"));
        }
        if line.contains("relay listening") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (
        child,
        admin.expect("the admin API is announced before the relay listens"),
    )
}

fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relay"))
        .arg("admin")
        .args(args)
        .env_remove("COMPTOIR_RELAY_DATA_DIR")
        .env_remove("COMPTOIR_RELAY_ADMIN")
        .env_remove("COMPTOIR_RELAY_ADMIN_TOKEN_FILE")
        .output()
        .expect("run relay admin")
}

#[test]
fn relay_admin_prints_the_operator_key_with_the_relays_token_and_refuses_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let (_relay, address) = spawn_relay(&data);
    let address = address.to_string();
    let data_arg = data.to_str().expect("utf-8 path");

    let out = admin(&["--admin", &address, "--data-dir", data_arg, "operator-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let key = line["operator_key"].as_str().expect("operator_key");
    assert_eq!(key.len(), 64);
    let on_disk = std::fs::read_to_string(data.join("operator.key")).expect("key file");
    assert_ne!(
        on_disk.trim(),
        key,
        "the file holds the secret seed, not the public key"
    );

    // Another token: refused by the relay (exit 1), nothing printed.
    let other = dir.path().join("other.token");
    std::fs::write(&other, format!("{}\n", "ab".repeat(32))).expect("write token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let out = admin(&[
        "--admin",
        &address,
        "--token-file",
        other.to_str().expect("utf-8 path"),
        "operator-key",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.token"), "{stderr}");

    // No token file: a local error (exit 2) naming the way out.
    let out = admin(&[
        "--admin",
        &address,
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
        "operator-key",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--token-file"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn a_relay_whose_operator_key_others_can_read_refuses_to_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    drop(spawn_relay(&data));
    let key = data.join("operator.key");
    let before = std::fs::read(&key).expect("key file");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = relay_command(&data).output().expect("run relay");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert_eq!(
        std::fs::read(&key).expect("key file"),
        before,
        "left as it was"
    );
}
