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

#[test]
fn agent_add_reads_the_password_from_stdin_and_refuses_bad_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nrelay = \"ws://127.0.0.1:9\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("write config");
    let add = |args: &[&str], password: &str| {
        let mut child = agent()
            .arg("--config")
            .arg(&config)
            .arg("agent-add")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run agent");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(password.as_bytes())
            .expect("write password");
        child.wait_with_output().expect("agent exits")
    };
    let out = add(&["ana", "--admin"], "a-long-password\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("added admin ana"));
    // Neither the database nor its write-ahead log holds the password.
    let needle = b"a-long-password";
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path().join("data")).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().contains("agent.sqlite3") {
            files += 1;
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the password is not stored"
            );
        }
    }
    assert!(files > 0, "the database exists");

    let taken = add(&["ana"], "another-long-password\n");
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("taken"));
    let short = add(&["bob"], "short\n");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10"));
}

#[test]
fn link_prints_the_link_and_a_terminal_qr_code_and_writes_a_png_that_decodes_to_it() {
    // Without --name the link names the account id, read from the device
    // store (here one never registered: no relay is needed to read it).
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    comptoir_client::store::create_private_dir(&data).expect("data dir");
    let fast = comptoir_client::KdfParams {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    };
    let account = comptoir_client::Client::create_with_params(
        &data.join("device"),
        "a long enough passphrase",
        fast,
    )
    .expect("a device store")
    .account_id();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nrelay = \"ws://127.0.0.1:9\"\n",
            data.display().to_string()
        ),
    )
    .expect("write config");
    let (png, svg) = (dir.path().join("link.png"), dir.path().join("link.svg"));
    let out = agent()
        .args(["link", "--text", "Hi, order 42?", "--config"])
        .arg(&config)
        .env("COMPTOIR_AGENT_PASSPHRASE", "a long enough passphrase")
        .arg("--png")
        .arg(&png)
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("run agent");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let link = text.lines().next().expect("the link");
    assert_eq!(
        link,
        format!("comptoir://chat/{account}?text=Hi%2C%20order%2042%3F")
    );
    assert!(
        text.contains('\u{2580}') || text.contains('\u{2584}'),
        "{text}"
    );
    assert!(std::fs::read_to_string(&svg).expect("svg").contains("<svg"));

    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png).expect("png"),
    ));
    let mut reader = decoder.read_info().expect("png header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut pixels).expect("png frame");
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(
        info.width as usize,
        info.height as usize,
        |x, y| pixels[y * info.line_size + x],
    );
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1);
    assert_eq!(grids[0].decode().expect("decodes").1, link);

    // A name no business could claim makes no link (refused before the
    // relay is asked: it is not reachable here).
    let out = agent()
        .args(["link", "--name", "no spaces allowed", "--config"])
        .arg(&config)
        .env("COMPTOIR_AGENT_PASSPHRASE", "a long enough passphrase")
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

/// Standard output closed before anything is written (`agent openapi |
/// head` that ended): the command ends quietly with exit 0, no panic.
#[test]
fn a_closed_standard_output_ends_the_command_quietly() {
    for args in [
        &["openapi"][..],
        &["key-new", "--name", "x", "--scopes", "messages:send"],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = agent()
            .args(args)
            .stdout(writer)
            .output()
            .expect("run agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
