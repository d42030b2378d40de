//! The `comptoir` binary itself, run as a child process against a real
//! relay on 127.0.0.1:0: what it prints on standard error, what it reads
//! from standard input, and the exit codes scripts rely on.

use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use common::terminal::Terminal;
use common::{Customer, Run, have_tool, run_command, start_relay};

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
    let comptoir = format!("comptoir --data-dir {}", alice.dir.display());
    assert!(
        run.stderr.contains(&format!("{comptoir} outbox list"))
            && run
                .stderr
                .contains(&format!("{comptoir} outbox cancel {id}")),
        "says how to see and cancel what is queued, for this data directory: {run:?}"
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

/// Long text is refused the same way by `send` (argument or standard
/// input) and `chat` (in a terminal, through its line editor), never cut; `send -` reads the text from
/// standard input (issue 18 item 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_text_is_refused_not_cut_and_send_reads_standard_input() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (alice, bob, _, _) = common::contacts(root.path(), &relay).await;

    let sent = alice
        .run_at(
            &relay.url,
            &["send", "bob", "-"],
            Some(b"line one\nline two\n".to_vec()),
        )
        .await;
    assert_eq!(sent.code, 0, "{sent:?}");
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    assert!(
        // Bob never wrote to Alice: a message request, marked so.
        heard.ends_with("] alice [request]: line one\\nline two\n"),
        "{heard:?}"
    );

    let paste = "x".repeat(100 * 1024);
    let refused = "the text is 102400 bytes and a message holds at most 8192";
    let from_stdin = alice
        .run_at(
            &relay.url,
            &["send", "bob", "-"],
            Some(paste.clone().into_bytes()),
        )
        .await;
    let from_argument = alice.run(&["send", "bob", &paste]).await;
    for run in [&from_stdin, &from_argument] {
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stderr.contains(refused), "{run:?}");
    }
    assert_eq!(alice.ok(&["outbox", "list"]).await, "", "nothing queued");
    let history = alice.ok(&["history", "bob"]).await;
    assert_eq!(history.lines().count(), 1, "nothing stored: {history}");

    // A long paste into `chat` in a terminal: its line editor reads it
    // whole (no terminal line buffer cuts it), so it is refused with the
    // same message, and the next line goes. (9,000 bytes: past the 4095 a
    // terminal's line buffer keeps and past a message's 8192.)
    let mut chat = Terminal::start(&alice, &["chat", "bob"]);
    chat.wait_until("the prompt", |t| t.cursor_row() == ">")
        .await;
    chat.type_text(&"y".repeat(9000));
    chat.type_text("\r");
    chat.wait_for("not sent: the text is 9000 bytes and a message holds at most 8192")
        .await;
    chat.type_text("after the paste\r");
    // The tick names its message (issue 18 item 9).
    chat.wait_for("✓ sent (waiting at the relay): “after the paste”")
        .await;
    chat.type_text("\x04");
    assert_eq!(chat.exit_code().await, 0);
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    assert!(
        heard.ends_with("] alice [request]: after the paste\n"),
        "{heard:?}"
    );
}

/// `contacts add` does not silently re-point a name, verified or not, and
/// refuses an id the relay does not know; `--force` re-points and says the
/// verified mark is lost; `contacts rename|remove` (issue 18 item 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_name_is_not_silently_re_pointed_and_ids_are_checked() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);
    let carol = Customer::new(root.path(), "carol", &relay);
    let alice_id = alice.registered().await;
    let bob_id = bob.registered().await;
    let carol_id = carol.registered().await;
    alice.ok(&["contacts", "add", "bob", &bob_id]).await;
    bob.ok(&["contacts", "add", "alice", &alice_id]).await;
    let number = bob.ok(&["safety-number", "alice"]).await;
    alice
        .ok(&["safety-number", "bob", "--verify", number.trim()])
        .await;
    let verified_bob = format!("bob\t{bob_id}\tverified\n");
    assert_eq!(alice.ok(&["contacts", "list"]).await, verified_bob);

    let rebind = alice.run(&["contacts", "add", "bob", &carol_id]).await;
    assert_eq!(rebind.code, 1, "{rebind:?}");
    assert!(
        rebind.stderr.contains("verified") && rebind.stderr.contains("--force"),
        "says the verified mark would be lost and how to re-point: {rebind:?}"
    );
    assert_eq!(alice.ok(&["contacts", "list"]).await, verified_bob);
    assert_eq!(
        alice.ok(&["contacts", "add", "bob", &bob_id]).await.trim(),
        bob_id,
        "adding the same again is fine"
    );

    let ghost = "0123456789abcdef0123456789abcdef";
    let unknown = alice.run(&["contacts", "add", "ghost", ghost]).await;
    assert_eq!(unknown.code, 8, "{unknown:?}");
    assert!(unknown.stderr.contains("no account"), "{unknown:?}");
    assert_eq!(alice.ok(&["contacts", "list"]).await, verified_bob);
    // Sent to such an id directly: refused, and nothing waits for ever.
    let to_ghost = alice.run(&["send", ghost, "anyone there?"]).await;
    assert_eq!(to_ghost.code, 8, "{to_ghost:?}");
    assert_eq!(alice.ok(&["outbox", "list"]).await, "", "{to_ghost:?}");
    let offline = alice
        .run_at(
            "ws://127.0.0.1:1",
            &["contacts", "add", "carol", &carol_id],
            None,
        )
        .await;
    assert_eq!(offline.code, 5, "checked with the relay: {offline:?}");
    assert_eq!(alice.ok(&["contacts", "list"]).await, verified_bob);

    let forced = alice
        .run(&["contacts", "add", "bob", &carol_id, "--force"])
        .await;
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(forced.stderr.contains("is not verified"), "{forced:?}");
    assert_eq!(
        alice.ok(&["contacts", "list"]).await,
        format!("bob\t{carol_id}\n")
    );

    alice.ok(&["contacts", "add", "robert", &bob_id]).await;
    assert_eq!(
        alice
            .run(&["contacts", "rename", "bob", "robert"])
            .await
            .code,
        1,
        "the new name is taken"
    );
    alice.ok(&["contacts", "rename", "bob", "carol"]).await;
    assert_eq!(alice.run(&["contacts", "rename", "bob", "x"]).await.code, 8);
    alice.ok(&["contacts", "remove", "robert"]).await;
    assert_eq!(alice.run(&["contacts", "remove", "robert"]).await.code, 8);
    assert_eq!(
        alice.ok(&["contacts", "list"]).await,
        format!("carol\t{carol_id}\n")
    );
    // The conversation with a forgotten name stays, by account id.
    alice.ok(&["send", &bob_id, "still reachable by id"]).await;
}

/// Completion scripts for bash, zsh and fish and a manual page, generated
/// from the command-line definitions, need no account (issue 18 item 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_the_manual_page_come_from_the_command_line() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let nobody = Customer::new(root.path(), "nobody", &relay);

    let bash = nobody.ok(&["completions", "bash"]).await;
    assert!(
        bash.contains("_comptoir()") && bash.contains("outbox"),
        "{bash}"
    );
    if !have_tool("bash", "bash") {
        return;
    }
    let script = root.path().join("comptoir.bash");
    std::fs::write(&script, &bash).expect("write");
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("bash");
    assert!(checked.success(), "bash accepts the script");
    let zsh = nobody.ok(&["completions", "zsh"]).await;
    assert!(zsh.starts_with("#compdef comptoir"), "{zsh}");
    let fish = nobody.ok(&["completions", "fish"]).await;
    assert!(fish.contains("complete -c comptoir"), "{fish}");
    assert_eq!(nobody.run(&["completions", "tcsh"]).await.code, 2);

    let man = nobody.ok(&["man"]).await;
    assert!(man.contains(".TH comptoir 1"), "{man}");
    for text in ["outbox", "completions", "COMPTOIR_PASSPHRASE", "Exit codes"] {
        assert!(man.contains(text), "{text} in the manual page");
    }
    assert!(!root.path().join("nobody").exists(), "no store created");

    // Standard output closed before anything is written (`| head` that
    // ended): an error line and exit 1, as for any failed write, no panic.
    for args in [&["completions", "bash"][..], &["man"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut command = nobody.command(&nobody.relay, args, false, false);
        let out = command.stdout(writer).output().expect("run comptoir");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && stderr.contains("standard output"),
            "{args:?}: {stderr}"
        );
    }
}

/// The JSON lines a command printed, each parsed.
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn is_hex(value: &serde_json::Value, digits: usize) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == digits && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `--output json` prints one JSON object per line for `send`, `listen`,
/// `history`, `contacts list` and `devices list`, with a type, the
/// message id, the sender, the time and the status; the exit codes are
/// the documented ones and the text output is unchanged (issue 18 item 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_object_per_line_for_scripts() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (alice, bob, alice_id, bob_id) = common::contacts(root.path(), &relay).await;

    let text = "hello \u{1b}[2K bob";
    let sent = json_lines(&alice.ok(&["--output", "json", "send", "bob", text]).await);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sent = &sent[0];
    assert_eq!(sent["type"], "sent", "{sent}");
    assert!(is_hex(&sent["id"], 32), "{sent}");
    assert_eq!(sent["peer"], bob_id.as_str());
    assert_eq!(sent["peer_name"], "bob");
    assert_eq!(sent["status"], "sent");
    let time_ms = sent["time_ms"].as_u64().expect("time_ms");
    assert!(time_ms > 1_700_000_000_000, "{sent}");
    let time = sent["time"].as_str().expect("time");
    assert!(time.len() == 24 && time.ends_with('Z'), "RFC 3339: {time}");

    let heard = bob
        .ok(&[
            "--output",
            "json",
            "listen",
            "--count",
            "1",
            "--timeout",
            "10",
        ])
        .await;
    assert!(!heard.contains('\u{1b}'), "escaped: {heard:?}");
    let messages: Vec<_> = json_lines(&heard)
        .into_iter()
        .filter(|r| r["type"] == "message")
        .collect();
    assert_eq!(messages.len(), 1, "{heard}");
    let message = &messages[0];
    assert_eq!(message["id"], sent["id"]);
    assert_eq!(message["from"], alice_id.as_str());
    assert_eq!(message["peer"], alice_id.as_str());
    assert_eq!(message["peer_name"], "alice");
    assert_eq!(message["direction"], "in");
    assert_eq!(message["text"], text);
    assert_eq!(message["time_ms"], time_ms);
    assert_eq!(message["time"], time);
    assert_eq!(message["status"], "received");

    let history = json_lines(&alice.ok(&["--output", "json", "history", "bob"]).await);
    assert_eq!(history.len(), 1, "{history:?}");
    let mine = &history[0];
    assert_eq!(
        (&mine["type"], &mine["id"], &mine["direction"]),
        (&"message".into(), &sent["id"], &"out".into())
    );
    assert_eq!(mine["from"], alice_id.as_str());
    assert_eq!(mine["text"], text);
    assert!(
        ["sent", "delivered"].contains(&mine["status"].as_str().unwrap_or("")),
        "{mine}"
    );
    // The text output is unchanged by default.
    let shown = alice.ok(&["history", "bob"]).await;
    assert!(
        shown.contains(" me: hello \\u{1b}[2K bob ["),
        "text output as before: {shown}"
    );

    let contacts = json_lines(&alice.ok(&["--output", "json", "contacts", "list"]).await);
    assert_eq!(
        contacts,
        vec![serde_json::json!({
            "type": "contact", "name": "bob", "account": bob_id,
            "verified": false, "blocked": false,
        })]
    );
    let devices = json_lines(&alice.ok(&["--output", "json", "devices", "list"]).await);
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["type"], "device");
    assert_eq!(devices[0]["device_id"], 1);
    assert_eq!(devices[0]["this_device"], true);
    assert_eq!(devices[0]["first_device"], true);
    assert!(is_hex(&devices[0]["identity_key"], 64), "{devices:?}");
    assert_eq!(devices[0]["name"], serde_json::Value::Null);
    assert!(devices[0]["added_ms"].as_u64().is_some(), "{devices:?}");
    assert!(
        devices[0]["added"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // Exit codes are the documented ones; errors stay on standard error.
    let unknown = alice
        .run(&["--output", "json", "send", "nobody", "hi"])
        .await;
    assert_eq!(unknown.code, 8, "{unknown:?}");
    assert_eq!(unknown.stdout, "");
    let quiet = bob
        .run(&[
            "--output",
            "json",
            "listen",
            "--count",
            "1",
            "--timeout",
            "1",
        ])
        .await;
    assert_eq!(quiet.code, 9, "{quiet:?}");
    assert!(
        quiet.stdout.lines().all(|l| !l.contains("\"message\"")),
        "{quiet:?}"
    );
    let offline = alice
        .run_at(
            "ws://127.0.0.1:1",
            &["--output", "json", "send", "bob", "later"],
            None,
        )
        .await;
    assert_eq!(offline.code, 5, "{offline:?}");
    let pending = json_lines(&offline.stdout);
    assert_eq!(pending.len(), 1, "{offline:?}");
    assert_eq!(
        (&pending[0]["type"], &pending[0]["status"]),
        (&"sent".into(), &"pending".into())
    );
    let bad = alice.run(&["--output", "yaml", "contacts", "list"]).await;
    assert_eq!(bad.code, 2, "{bad:?}");
}

/// Errors say what happened and what to do, in words, never a Rust or
/// wire name (issue 18 item 10): an unknown phone number or business name
/// says so; `register` again is a success; a relay refusal is a sentence;
/// the hint for an unknown name fits the command; `devices list` shows no
/// Rust type; a removed device is told so and how to start over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_happened_and_what_to_do() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);
    let alice_id = alice.registered().await;
    bob.registered().await;
    let no_internals = |run: &Run| {
        for internal in [
            "ERROR_CODE",
            "UnknownAccount",
            "AccountKind",
            "IdentityKey(",
        ] {
            assert!(
                !run.stderr.contains(internal) && !run.stdout.contains(internal),
                "{internal}: {run:?}"
            );
        }
    };

    let again = alice.run(&["register"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("already registered"), "{again:?}");
    assert_eq!(again.stdout.trim(), alice_id);

    for handle in ["+33612345678", "nobody-here"] {
        let unknown = alice.run(&["contacts", "add", "who", handle]).await;
        assert_eq!(unknown.code, 8, "{unknown:?}");
        assert!(
            unknown.stderr.contains("no account") && unknown.stderr.contains(handle),
            "says nobody has it: {unknown:?}"
        );
        assert!(!unknown.stderr.contains("contacts add"), "{unknown:?}");
        no_internals(&unknown);
    }

    let not_business = alice.run(&["name", "claim", "alice-shop"]).await;
    assert_eq!(not_business.code, 6, "{not_business:?}");
    assert!(not_business.stderr.contains("business"), "{not_business:?}");
    no_internals(&not_business);

    for args in [
        &["contacts", "remove", "nobody"][..],
        &["contacts", "rename", "nobody", "somebody"],
    ] {
        let run = alice.run(args).await;
        assert_eq!(run.code, 8, "{run:?}");
        assert!(
            run.stderr.contains(&format!(
                "comptoir --data-dir {} contacts list",
                alice.dir.display()
            )) && !run.stderr.contains("contacts add"),
            "{args:?}: {run:?}"
        );
    }

    // A second device, linked, then removed by the first.
    let laptop = Customer::new(root.path(), "laptop", &relay);
    let code = laptop.ok(&["link-device"]).await;
    let added = alice
        .run(&["devices", "add", code.trim(), "--name", "laptop"])
        .await;
    assert_eq!(added.code, 0, "{added:?}");
    // The new device may be a `comptoir` or a business's agent daemon:
    // the hint names the command of each.
    assert!(
        added.stderr.contains("comptoir link-device --finish")
            && added.stderr.contains("agent --config")
            && added.stderr.contains("init --approval"),
        "{added:?}"
    );
    let approval = added.stdout;
    laptop
        .ok(&["link-device", "--finish", approval.trim()])
        .await;
    alice.ok(&["devices", "name", "1", "phone"]).await;
    let bad_name = alice.run(&["devices", "name", "1", "a\tb"]).await;
    assert_eq!(bad_name.code, 1, "{bad_name:?}");
    let not_listed = alice.run(&["devices", "name", "7", "tablet"]).await;
    assert_eq!(not_listed.code, 1, "{not_listed:?}");
    let devices = alice.run(&["devices", "list"]).await;
    assert_eq!(devices.code, 0, "{devices:?}");
    let lines: Vec<&str> = devices.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{devices:?}");
    // A date, `added YYYY-MM-DD HH:MM:SS`, not `added -`.
    let dated = |line: &str| {
        line.split('\t')
            .nth(2)
            .and_then(|added| added.strip_prefix("added "))
            .is_some_and(|date| date.len() == 19 && date.as_bytes()[4] == b'-')
    };
    assert!(
        lines[0].starts_with("1\tphone\tadded ")
            && dated(lines[0])
            && lines[0].ends_with("first device, this device"),
        "names, dates, roles: {devices:?}"
    );
    assert!(
        lines[1].starts_with("2\tlaptop\tadded ") && dated(lines[1]),
        "{devices:?}"
    );
    no_internals(&devices);
    let on_laptop = laptop.ok(&["devices", "list"]).await;
    assert!(on_laptop.contains("\tthis device\n"), "{on_laptop}");
    alice.ok(&["devices", "remove", "2"]).await;
    let removed = laptop
        .run(&["listen", "--count", "1", "--timeout", "5"])
        .await;
    assert_eq!(removed.code, 4, "{removed:?}");
    assert!(
        removed.stderr.contains("removed") && removed.stderr.contains("link-device"),
        "says it was removed and how to start over: {removed:?}"
    );
    assert!(!removed.stderr.contains("comptoir register"), "{removed:?}");
}

/// Phone numbers are normalised (spaces, national format with --region)
/// before they reach the relay, `phone request` says where a development
/// relay writes the code, and a number made discoverable finds the
/// account however it is written (issue 18 item 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_numbers_are_normalised_before_they_reach_the_relay() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);
    let alice_id = alice.registered().await;
    bob.registered().await;

    let asked = alice
        .run(&["phone", "request", "06 12 34 56 78", "--region", "FR"])
        .await;
    assert_eq!(asked.code, 0, "{asked:?}");
    assert!(asked.stderr.contains("+33612345678"), "{asked:?}");
    assert!(asked.stderr.contains("log"), "where the code is: {asked:?}");
    let (number, code) = relay.codes.last().expect("a code was sent");
    assert_eq!(number, "+33612345678");
    let verified = alice
        .run(&[
            "phone",
            "verify",
            "+33 6 12 34 56 78",
            &code,
            "--discoverable",
        ])
        .await;
    assert_eq!(verified.code, 0, "{verified:?}");
    let found = bob
        .ok(&[
            "contacts",
            "add",
            "alice",
            "06.12.34.56.78",
            "--region",
            "FR",
        ])
        .await;
    assert_eq!(found.trim(), alice_id);

    // Not a number of that region, or no region for a national number:
    // refused before anything is sent.
    for args in [
        &["phone", "request", "06 12 34 56 78"][..],
        &["phone", "request", "+33 1"],
    ] {
        let run = alice.run(args).await;
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(run.stderr.contains("phone number"), "{run:?}");
    }
    assert_eq!(relay.codes.0.lock().map(|c| c.len()).unwrap_or(0), 1);
}

/// `comptoir` as a person with no flags runs it: a home, per-user data
/// and config directories (XDG), and no COMPTOIR_* variables but the
/// passphrase.
async fn as_user(root: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_comptoir"));
    command
        .args(args)
        .current_dir(root.join("home"))
        .env("HOME", root.join("home"))
        .env("XDG_DATA_HOME", root.join("data"))
        .env("XDG_CONFIG_HOME", root.join("config"))
        .env("COMPTOIR_PASSPHRASE", "a test passphrase")
        .env_remove("COMPTOIR_RELAY")
        .env_remove("COMPTOIR_DATA_DIR")
        .env_remove("COMPTOIR_CA_CERT")
        .env_remove("COMPTOIR_CONFIG")
        .env_remove("COMPTOIR_OUTPUT")
        .env_remove("COMPTOIR_REGION")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_command(command, None).await
}

/// Without --data-dir the store lives in the per-user data directory
/// ($XDG_DATA_HOME/comptoir), created readable by its owner only; a config
/// file gives the relay and the output format, the command line wins over
/// it, and a bad one is a usage error naming the file and the key; hints
/// repeat the --data-dir in use (issue 18 item 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_lives_in_the_per_user_directory_and_a_config_file_gives_defaults() {
    use std::os::unix::fs::PermissionsExt;

    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let root = root.path();
    std::fs::create_dir(root.join("home")).expect("home");

    let created = as_user(root, &["init"]).await;
    assert_eq!(created.code, 0, "{created:?}");
    let data_dir = root.join("data").join("comptoir");
    let mode = std::fs::metadata(&data_dir)
        .expect("the per-user data directory")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "user-only: {mode:o}");
    assert!(
        !root.join("home").join("comptoir-data").exists(),
        "nothing in the working directory"
    );
    // The relay address comes from the config file.
    let config_dir = root.join("config").join("comptoir");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    let config = config_dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "relay = \"{}\"\noutput = \"json\"\nkeepalive_seconds = 15\n",
            relay.url
        ),
    )
    .expect("write config");
    let registered = as_user(root, &["register"]).await;
    assert_eq!(registered.code, 0, "{registered:?}");
    assert_eq!(
        as_user(root, &["whoami"]).await.stdout,
        created.stdout,
        "the same account, found without --data-dir"
    );
    let listed = as_user(root, &["devices", "list"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let devices = json_lines(&listed.stdout);
    assert_eq!(devices[0]["type"], "device", "json from the config file");
    let text = as_user(root, &["--output", "text", "devices", "list"]).await;
    assert!(text.stdout.starts_with("1\t"), "the flag wins: {text:?}");

    for (bad, named) in [
        ("relay = \"http://127.0.0.1:1\"\n", "wss://"),
        ("relays = \"ws://127.0.0.1:1\"\n", "relays"),
        ("output = \"yaml\"\n", "output"),
        ("keepalive_seconds = 0\n", "keepalive_seconds"),
    ] {
        std::fs::write(&config, bad).expect("write config");
        let run = as_user(root, &["whoami"]).await;
        assert_eq!(run.code, 2, "{bad}: {run:?}");
        assert!(
            run.stderr.contains("config") && run.stderr.contains(named),
            "{bad}: {run:?}"
        );
    }
    std::fs::remove_file(&config).expect("remove config");

    // Hints repeat the --data-dir in use, quoted for the shell.
    let elsewhere = as_user(root, &["--data-dir", "other dir", "whoami"]).await;
    assert_eq!(elsewhere.code, 4, "{elsewhere:?}");
    assert!(
        elsewhere
            .stderr
            .contains("`comptoir --data-dir 'other dir' init`"),
        "{elsewhere:?}"
    );
    let unknown = as_user(root, &["send", "nobody", "hi"]).await;
    assert_eq!(unknown.code, 8, "{unknown:?}");
    assert!(
        unknown.stderr.contains("`comptoir contacts add NAME"),
        "the default needs no --data-dir: {unknown:?}"
    );
}

/// Whether any file under `dir` holds `needle`.
fn any_file_holds(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).expect("read dir").any(|entry| {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            any_file_holds(&path, needle)
        } else {
            let bytes = std::fs::read(&path).expect("read");
            bytes.windows(needle.len()).any(|w| w == needle)
        }
    })
}

/// Contact names are sealed on disk like the rest of the store: no file
/// of the data directory holds one (issue 18 item 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_names_are_not_readable_on_disk() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);
    alice.registered().await;
    let bob_id = bob.registered().await;
    let name = "my-cardiologist-zanzibar";
    alice.ok(&["contacts", "add", name, &bob_id]).await;
    alice
        .ok(&["contacts", "rename", name, "dr-zanzibar-heart"])
        .await;
    assert_eq!(
        alice.ok(&["contacts", "list"]).await,
        format!("dr-zanzibar-heart\t{bob_id}\n")
    );
    for secret in [name, "dr-zanzibar-heart", "zanzibar"] {
        assert!(
            !any_file_holds(&alice.dir, secret.as_bytes()),
            "{secret:?} readable in the data directory"
        );
    }
}

/// `listen --output json` shows files and Status posts (it printed nothing
/// for them), and `--count` counts them as the text output does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_listen_shows_files_and_status_posts() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (alice, bob, alice_id, _bob_id) = common::contacts(root.path(), &relay).await;
    let file = root.path().join("menu.txt");
    std::fs::write(&file, b"soup of the day").expect("write");
    let file_path = file.display().to_string();
    let sent = json_lines(
        &alice
            .ok(&["--output", "json", "send-file", "bob", &file_path])
            .await,
    );
    let file_id = sent[0]["id"].clone();
    // The `sent` record of a text: the contact's name, `sent` once stored.
    assert_eq!(sent[0]["type"], "sent", "{sent:?}");
    assert_eq!(sent[0]["peer_name"], "bob", "{sent:?}");
    assert_eq!(sent[0]["status"], "sent", "{sent:?}");
    alice
        .ok(&["status", "post", "--text", "Open until 5", "--to", "bob"])
        .await;

    let heard = json_lines(
        &bob.ok(&[
            "--output",
            "json",
            "listen",
            "--count",
            "2",
            "--timeout",
            "30",
        ])
        .await,
    );
    let of_type = |kind: &str| -> Vec<&serde_json::Value> {
        heard.iter().filter(|r| r["type"] == kind).collect()
    };
    let files = of_type("attachment");
    assert_eq!(files.len(), 1, "{heard:?}");
    assert_eq!(files[0]["id"], file_id);
    assert_eq!(files[0]["peer"], alice_id.as_str());
    assert_eq!(files[0]["peer_name"], "alice");
    assert_eq!(files[0]["file_name"], "menu.txt");
    assert_eq!(files[0]["size"], 15);
    assert!(files[0]["time_ms"].as_u64().is_some(), "{heard:?}");
    let posts = of_type("status_received");
    assert_eq!(posts.len(), 1, "{heard:?}");
    assert!(is_hex(&posts[0]["id"], 32), "{heard:?}");
    assert_eq!(posts[0]["poster"], alice_id.as_str());
    assert_eq!(posts[0]["poster_name"], "alice");
    let post_id = posts[0]["id"].as_str().expect("post id");
    let viewed = bob.ok(&["status", "view", post_id]).await;
    assert!(viewed.contains("Open until 5"), "{viewed}");
}

/// A 50 MiB file goes from one `comptoir` to another encrypted, through the
/// relay in chunks, and comes out identical with both digests checked,
/// while neither process ever holds more than a small part of it in memory
/// (issue 17's bar; the peak is each child's VmHWM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifty_mebibyte_file_goes_through_in_bounded_memory() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);
    alice.registered().await;
    let bob_id = bob.registered().await;
    let len = 50 * 1024 * 1024;
    let original = root.path().join("film.bin");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&original).expect("create"));
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..len / 8 {
            // xorshift: incompressible, reproducible bytes.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            file.write_all(&state.to_le_bytes()).expect("write");
        }
    }
    // The same command for a file of one byte: what the process needs
    // whatever the file (the store's key derivation alone takes 64 MiB).
    let small = root.path().join("small.bin");
    std::fs::write(&small, b"x").expect("write");
    let small_path = small.display().to_string();
    // `send --file` is the same command as `send-file`; a text beside it,
    // or --type without it, is a command-line error.
    let (sent_small, small_peak) = alice
        .run_measured(&["send", &bob_id, "--file", &small_path])
        .await;
    assert_eq!(sent_small.code, 0, "send --file: {sent_small:?}");
    let both = alice
        .run(&["send", &bob_id, "a text", "--file", &small_path])
        .await;
    assert_eq!(both.code, 2, "send TEXT --file: {both:?}");
    let type_alone = alice
        .run(&["send", &bob_id, "a text", "--type", "image/png"])
        .await;
    assert_eq!(
        type_alone.code, 2,
        "send --type without --file: {type_alone:?}"
    );
    let original_path = original.display().to_string();
    let (sent, send_peak) = alice
        .run_measured(&[
            "send-file",
            &bob_id,
            &original_path,
            "--type",
            "application/octet-stream",
        ])
        .await;
    assert_eq!(sent.code, 0, "send-file: {sent:?}");

    let listened = bob
        .run(&["listen", "--count", "2", "--timeout", "60"])
        .await;
    assert_eq!(listened.code, 0, "listen: {listened:?}");
    assert!(listened.stdout.contains("film.bin"), "{listened:?}");
    let save_hint = listened
        .stderr
        .lines()
        .filter_map(|l| l.split("`comptoir").nth(1))
        .next_back()
        .expect("listen says how to save the file");
    let words: Vec<&str> = save_hint.split_whitespace().collect();
    let save_at = words.iter().position(|w| *w == "save").expect("save hint");
    let (from, id) = (words[save_at + 1], words[save_at + 2]);
    let copy = root.path().join("copy.bin");
    let copy_path = copy.display().to_string();
    let (saved, save_peak) = bob.run_measured(&["save", from, id, &copy_path]).await;
    assert_eq!(saved.code, 0, "save: {saved:?}");
    assert!(
        std::fs::read(&copy).expect("saved") == std::fs::read(&original).expect("original"),
        "the saved file differs from the one sent"
    );
    eprintln!(
        "peak memory: send-file {send_peak} KiB (one byte: {small_peak} KiB), save {save_peak} KiB"
    );
    // The 50 MiB file adds at most 8 MiB to what a one-byte file needs:
    // it is never held whole, only a chunk or two at a time.
    assert!(small_peak > 0, "no VmHWM read");
    for (what, peak) in [("send-file", send_peak), ("save", save_peak)] {
        assert!(
            peak < small_peak + 8 * 1024,
            "{what} held {peak} KiB at its peak, against {small_peak} KiB for one byte"
        );
    }
    // Saving again over the file is refused and leaves it alone.
    let again = bob.run(&["save", from, id, &copy_path]).await;
    assert_ne!(again.code, 0);
}
