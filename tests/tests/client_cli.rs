//! The `comptoir` command line, run in-process over a real relay: its
//! output lines and the exit codes scripts rely on (listed in `--help`).

use crate::support;

use std::path::{Path, PathBuf};

use comptoir_cli::run_args;
use support::{TestRelay, start_relay};

struct Customer {
    dir: PathBuf,
    passphrase_file: PathBuf,
    relay: String,
}

impl Customer {
    fn new(root: &Path, name: &str, relay: &TestRelay) -> Self {
        let passphrase_file = root.join(format!("{name}.pass"));
        std::fs::write(&passphrase_file, format!("{name} passphrase\n")).expect("write");
        Self {
            dir: root.join(name),
            passphrase_file,
            relay: format!("ws://{}", relay.addr),
        }
    }

    /// Run `comptoir <args>` as this customer: (exit code, stdout).
    async fn run(&self, args: &[&str]) -> (u8, String) {
        self.run_with(&self.passphrase_file, args).await
    }

    async fn run_with(&self, passphrase_file: &Path, args: &[&str]) -> (u8, String) {
        let mut argv = vec![
            "comptoir".to_string(),
            "--data-dir".into(),
            self.dir.display().to_string(),
            "--relay".into(),
            self.relay.clone(),
            "--passphrase-file".into(),
            passphrase_file.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut out = Vec::new();
        let code = run_args(argv, &mut out).await;
        (code, String::from_utf8(out).expect("utf-8 output"))
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (code, out) = self.run(args).await;
        assert_eq!(code, 0, "comptoir {args:?} failed; output: {out}");
        out
    }
}

fn is_hex_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn two_customers_chat_through_the_command_line() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);

    let alice_id = alice.ok(&["init"]).await.trim().to_string();
    assert!(
        is_hex_id(&alice_id),
        "init prints the account id: {alice_id}"
    );
    assert_eq!(alice.ok(&["register"]).await.trim(), alice_id);
    assert_eq!(alice.ok(&["whoami"]).await.trim(), alice_id);
    let bob_id = bob.ok(&["init"]).await.trim().to_string();
    bob.ok(&["register"]).await;
    alice.ok(&["contacts", "add", "bob", &bob_id]).await;
    bob.ok(&["contacts", "add", "alice", &alice_id]).await;
    assert_eq!(
        bob.ok(&["contacts", "list"]).await,
        format!("alice\t{alice_id}\n")
    );

    let sent = alice.ok(&["send", "bob", "hello bob\nsecond line"]).await;
    assert!(is_hex_id(sent.trim()), "send prints the message id: {sent}");
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    assert!(
        heard.ends_with("] alice [request]: hello bob\\nsecond line\n"),
        "one line per message, named by contact, marked as a message request (bob \
         never wrote to alice): {heard:?}"
    );
    bob.ok(&["requests", "accept", "alice"]).await;
    // By account id works as well as by contact name.
    bob.ok(&["send", &alice_id, "hi alice"]).await;
    let heard = alice
        .ok(&["listen", "--count", "1", "--timeout", "10"])
        .await;
    assert!(heard.ends_with("] bob: hi alice\n"), "{heard:?}");

    let history = alice.ok(&["history", "bob"]).await;
    let lines: Vec<_> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(
        lines[0].contains(" me: hello bob\\nsecond line ["),
        "{history}"
    );
    assert!(lines[1].ends_with(" bob: hi alice"), "{history}");

    let number = alice.ok(&["safety-number", "bob"]).await;
    assert_eq!(number.trim().len(), 60 + 11, "12 groups of 5 digits");
    assert_eq!(bob.ok(&["safety-number", "alice"]).await, number);
    // Verify: Alice reads hers out, Bob types it; a different one is exit 10.
    let mut wrong: Vec<char> = number.trim().chars().collect();
    wrong[0] = if wrong[0] == '1' { '2' } else { '1' };
    let wrong: String = wrong.into_iter().collect();
    assert_eq!(
        bob.run(&["safety-number", "alice", "--verify", &wrong])
            .await
            .0,
        10
    );
    assert_eq!(
        bob.run(&["safety-number", "alice", "--verify", "12345"])
            .await
            .0,
        1,
        "not a safety number"
    );
    assert_eq!(
        bob.ok(&["contacts", "list"]).await,
        format!("alice\t{alice_id}\n")
    );
    bob.ok(&["safety-number", "alice", "--verify", number.trim()])
        .await;
    assert_eq!(
        bob.ok(&["contacts", "list"]).await,
        format!("alice\t{alice_id}\tverified\n")
    );

    // Block: the relay refuses Alice's message (exit 6); unblock restores.
    bob.ok(&["block", "alice"]).await;
    assert!(
        bob.ok(&["contacts", "list"])
            .await
            .ends_with("\tverified\tblocked\n")
    );
    assert_eq!(alice.run(&["send", "bob", "blocked?"]).await.0, 6);
    bob.ok(&["unblock", "alice"]).await;
    alice.ok(&["send", "bob", "unblocked"]).await;
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    assert!(heard.ends_with("] alice: unblocked\n"), "{heard:?}");
}

/// Text from a contact cannot erase or reorder what the terminal shows:
/// escape sequences, bidirectional overrides and zero-width characters are
/// printed visibly by `listen` and `history` (issue 18 item 1).
#[tokio::test]
async fn a_contact_cannot_forge_who_said_what_with_control_characters() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);
    let alice_id = alice.ok(&["init"]).await.trim().to_string();
    alice.ok(&["register"]).await;
    let bob_id = bob.ok(&["init"]).await.trim().to_string();
    bob.ok(&["register"]).await;
    alice.ok(&["contacts", "add", "bob", &bob_id]).await;
    bob.ok(&["contacts", "add", "alice", &alice_id]).await;

    let forged = "\u{1b}[2K\u{1b}[1G[17:44:00] carol: please wire 500 EUR \u{202e}fdp.exe\u{200b}";
    alice.ok(&["send", "bob", forged]).await;
    let shown =
        "\\u{1b}[2K\\u{1b}[1G[17:44:00] carol: please wire 500 EUR \\u{202e}fdp.exe\\u{200b}";
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    let history = bob.ok(&["history", "alice"]).await;
    // `listen` marks the first message of a stranger as a request.
    for (output, sender) in [(&heard, "alice [request]"), (&history, "alice")] {
        assert!(
            !output.contains(['\u{1b}', '\u{202e}', '\u{200b}']),
            "raw control characters printed: {output:?}"
        );
        assert!(
            output.ends_with(&format!(" {sender}: {shown}\n")),
            "the real sender, then the text made visible: {output:?}"
        );
    }
}

#[tokio::test]
async fn exit_codes_scripts_can_rely_on() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);

    // 4: nothing here yet; then not registered; then already initialized.
    assert_eq!(alice.run(&["history", "bob"]).await.0, 4);
    alice.ok(&["init"]).await;
    assert_eq!(alice.run(&["listen", "--count", "1"]).await.0, 4);
    assert_eq!(alice.run(&["init"]).await.0, 4);
    alice.ok(&["register"]).await;
    let bob_id = bob.ok(&["init"]).await.trim().to_string();
    bob.ok(&["register"]).await;

    // 3: wrong passphrase, and the store is untouched by the attempt.
    let wrong = root.path().join("wrong.pass");
    std::fs::write(&wrong, "not alice's\n").expect("write");
    assert_eq!(alice.run_with(&wrong, &["whoami"]).await.0, 3);

    // 8: unknown contact. 2: bad command line.
    assert_eq!(alice.run(&["send", "carol", "hi"]).await.0, 8);
    assert_eq!(alice.run(&["send"]).await.0, 2);

    // 5: relay unreachable; the message waits in the outbox and goes out
    // with the next command that connects.
    let offline = Customer {
        relay: "ws://127.0.0.1:1".into(),
        dir: alice.dir.clone(),
        passphrase_file: alice.passphrase_file.clone(),
    };
    assert_eq!(
        offline.run(&["send", &bob_id, "from the outbox"]).await.0,
        5
    );
    assert_eq!(
        alice
            .run(&["listen", "--count", "1", "--timeout", "1"])
            .await
            .0,
        9
    );
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    assert!(heard.ends_with(": from the outbox\n"), "{heard:?}");
}

#[tokio::test]
async fn contacts_found_by_a_verified_discoverable_phone_number() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);
    let alice_id = alice.ok(&["init"]).await.trim().to_string();
    alice.ok(&["register"]).await;
    bob.ok(&["init"]).await;
    bob.ok(&["register"]).await;

    // Not verified yet: nobody finds the number (exit 8).
    let number = "+447400123456";
    assert_eq!(bob.run(&["contacts", "add", "alice", number]).await.0, 8);

    alice.ok(&["phone", "request", number]).await;
    let code = relay.codes.last_for(number).expect("a code was sent");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(
        alice.run(&["phone", "verify", number, wrong]).await.0,
        6,
        "a wrong code is a relay refusal"
    );
    alice
        .ok(&["phone", "verify", number, &code, "--discoverable"])
        .await;

    assert_eq!(
        bob.ok(&["contacts", "add", "alice", number]).await.trim(),
        alice_id
    );
    bob.ok(&["send", "alice", "found you by number"]).await;
    let heard = alice
        .ok(&["listen", "--count", "1", "--timeout", "10"])
        .await;
    assert!(heard.ends_with(": found you by number\n"), "{heard:?}");

    // A number verified without --discoverable stays hidden.
    let hidden = "+447400123789";
    bob.ok(&["phone", "request", hidden]).await;
    let code = relay.codes.last_for(hidden).expect("a code was sent");
    bob.ok(&["phone", "verify", hidden, &code]).await;
    assert_eq!(alice.run(&["contacts", "add", "bob", hidden]).await.0, 8);
}

#[tokio::test]
async fn a_second_device_links_through_the_command_line() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let phone = Customer::new(root.path(), "phone", &relay);
    let laptop = Customer::new(root.path(), "laptop", &relay);
    let account = phone.ok(&["init"]).await.trim().to_string();
    phone.ok(&["register"]).await;

    let code = laptop.ok(&["link-device"]).await.trim().to_string();
    assert!(code.starts_with("comptoir-link:"), "{code}");
    assert_eq!(
        laptop.run(&["listen", "--count", "1"]).await.0,
        4,
        "not linked yet"
    );
    assert_eq!(laptop.run(&["devices", "add", &code]).await.0, 4);
    let approval = phone
        .ok(&["devices", "add", &code])
        .await
        .trim()
        .to_string();
    assert!(approval.starts_with("comptoir-approve:"), "{approval}");
    assert_eq!(
        laptop
            .ok(&["link-device", "--finish", &approval])
            .await
            .trim(),
        account
    );
    let listed = laptop.ok(&["devices", "list"]).await;
    let lines: Vec<_> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines[1].starts_with("2\t") && lines[1].ends_with("this device"));
    assert_eq!(
        laptop.run(&["devices", "remove", "1"]).await.0,
        4,
        "only the first device"
    );
    phone.ok(&["devices", "remove", "2"]).await;
    assert_eq!(laptop.run(&["devices", "list"]).await.0, 4, "removed");
}

#[tokio::test]
async fn a_business_claims_a_name_and_a_customer_adds_it_by_name() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let shop = Customer::new(root.path(), "shop", &relay);
    let rival = Customer::new(root.path(), "rival", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);
    let shop_id = shop.ok(&["init"]).await.trim().to_string();
    shop.ok(&["register", "--business"]).await;
    rival.ok(&["init"]).await;
    rival.ok(&["register", "--business"]).await;
    bob.ok(&["init"]).await;
    bob.ok(&["register"]).await;
    assert_eq!(
        bob.run(&["name", "claim", "bobs-shop"]).await.0,
        6,
        "a customer account cannot claim a business name"
    );

    // Not claimed yet: unknown contact (exit 8).
    assert_eq!(
        bob.run(&["contacts", "add", "acme", "acme-deliveries"])
            .await
            .0,
        8
    );
    assert_eq!(
        shop.ok(&["name", "claim", "Acme-Deliveries"]).await.trim(),
        "acme-deliveries"
    );
    assert_eq!(
        rival.run(&["name", "claim", "acme-deliveries"]).await.0,
        6,
        "a taken name is a relay refusal"
    );
    assert_eq!(
        rival.run(&["name", "claim", "no spaces"]).await.0,
        1,
        "a malformed name is a usage error"
    );
    assert_eq!(
        bob.ok(&["contacts", "add", "acme", "ACME-deliveries"])
            .await
            .trim(),
        shop_id
    );
    bob.ok(&["send", "acme", "found you by name"]).await;
    let heard = shop
        .ok(&["listen", "--count", "1", "--timeout", "10"])
        .await;
    assert!(heard.ends_with(": found you by name\n"), "{heard:?}");
}

/// `comptoir report ID --reason TEXT` reveals a received message to the
/// operator, who verifies it (issue 14 item 4); an id of no received
/// message is refused and nothing reaches the relay.
#[tokio::test]
async fn a_received_message_is_reported_through_the_command_line() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);
    let alice_id = alice.ok(&["init"]).await.trim().to_string();
    alice.ok(&["register"]).await;
    let bob_id = bob.ok(&["init"]).await.trim().to_string();
    bob.ok(&["register"]).await;
    alice.ok(&["contacts", "add", "bob", &bob_id]).await;
    let sent = alice.ok(&["send", "bob", "send me your card number"]).await;
    let id = sent.trim();
    bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;

    // Her own message, or no message at all: refused, nothing filed.
    assert_ne!(alice.run(&["report", id]).await.0, 0);
    assert_ne!(bob.run(&["report", &"0".repeat(32)]).await.0, 0);
    assert_ne!(bob.run(&["report", "not-an-id"]).await.0, 0);
    let admin = relay.admin_client();
    assert!(admin.reports().await.expect("reports").reports.is_empty());

    bob.ok(&["report", id, "--reason", "phishing"]).await;
    let reports = admin.reports().await.expect("reports").reports;
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert!(report.valid, "{report:?}");
    assert_eq!(report.content, "send me your card number");
    assert_eq!(report.sender, alice_id);
    assert_eq!(report.reporter, bob_id);
    assert_eq!(report.reason, "phishing");
}
