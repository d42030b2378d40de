//! The `agent` binary: making API keys, and refusing to start with a
//! configuration it cannot use (before touching anything).

use std::process::Command;

use sha2::{Digest, Sha256};

fn agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agent"));
    command
        .env_remove("COMPTOIR_AGENT_CONFIG")
        .env_remove("COMPTOIR_AGENT_PASSPHRASE")
        .env_remove("COMPTOIR_AGENT_PASSPHRASE_FILE")
        .env_remove("COMPTOIR_AGENT_LISTEN")
        .env_remove("COMPTOIR_AGENT_RELAY")
        .env_remove("COMPTOIR_AGENT_DATA_DIR");
    command
}

#[test]
fn key_new_prints_a_key_and_only_its_hash_for_the_configuration() {
    let out = agent()
        .args([
            "key-new",
            "--name",
            "backend",
            "--scopes",
            "messages:send,consent:request",
        ])
        .output()
        .expect("run agent");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let key = text
        .split_whitespace()
        .find(|w| w.starts_with("ck_"))
        .expect("a key");
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    assert!(text.contains(&format!("sha256 = \"{hash}\"")), "{text}");
    assert!(
        text.contains(r#"scopes = ["messages:send", "consent:request"]"#),
        "{text}"
    );

    let out = agent()
        .args(["key-new", "--name", "x", "--scopes", "everything"])
        .output()
        .expect("run agent");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scope"));
}

#[test]
fn serve_refuses_plain_http_off_loopback_and_a_missing_passphrase() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nrelay = \"ws://127.0.0.1:9\"\nlisten = \"0.0.0.0:8480\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("write config");
    let out = agent()
        .args(["serve", "--config"])
        .arg(&config)
        .env("COMPTOIR_AGENT_PASSPHRASE", "a long enough passphrase")
        .output()
        .expect("run agent");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only over TLS"), "{stderr}");

    let out = agent()
        .args(["serve", "--config"])
        .arg(&config)
        .env("COMPTOIR_AGENT_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run agent");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("COMPTOIR_AGENT_PASSPHRASE"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing created");
}
