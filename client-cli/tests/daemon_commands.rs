//! Every `comptoir` command that opens the store goes through a running
//! `comptoir daemon` (issue 18 item 6): run as real processes against a
//! real relay on 127.0.0.1:0, each prints what it prints without the
//! daemon and exits with the same code, bad input gets the same typed
//! error and changes nothing stored, the commands that change the account
//! change it, and those that need the store to themselves say a daemon
//! runs and how to stop it.
//!
//! Here rather than in tests/tests: it runs the `comptoir` binary, which
//! Cargo builds for this package's tests only.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

mod common;

use common::{Customer, Daemon, Run, start_relay};

/// The id of the last message in `customer`'s history with `peer` that
/// came in.
async fn last_incoming(customer: &Customer, peer: &str) -> String {
    let history = customer.ok(&["--output", "json", "history", peer]).await;
    history
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["direction"] == "in")
        .find_map(|m| m["id"].as_str().map(str::to_owned))
        .expect("a message came in")
}

fn same(without: &Run, with: &Run, args: &[String]) {
    assert_eq!(
        (with.code, &with.stdout, &with.stderr),
        (without.code, &without.stdout, &without.stderr),
        "comptoir {args:?} through the daemon differs from without it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_command_goes_through_the_daemon_as_without_it() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (alice, bob, alice_id, bob_id) = common::contacts(root.path(), &relay).await;
    let carol = Customer::new(root.path(), "carol", &relay);
    let carol_id = carol.registered().await;
    alice.ok(&["send", "bob", "hello bob"]).await;
    bob.ok(&["send", "alice", "buy cheap watches"]).await;
    carol
        .ok(&["send", &alice_id, "hello, a stranger here"])
        .await;
    alice
        .ok(&["listen", "--count", "2", "--timeout", "20"])
        .await;
    let from_bob = last_incoming(&alice, "bob").await;
    let wrong_number = "1".repeat(60);
    let saved = root.path().join("saved.bin");
    let saved = saved.to_str().expect("utf-8 path");

    // What each prints without a daemon, and with: the same. Reading
    // commands, then one bad input per family with its typed exit code.
    let cases: Vec<(Vec<&str>, Option<i32>)> = vec![
        (vec!["whoami"], Some(0)),
        (vec!["contacts", "list"], Some(0)),
        (vec!["--output", "json", "contacts", "list"], Some(0)),
        (vec!["devices", "list"], Some(0)),
        (vec!["--output", "json", "devices", "list"], Some(0)),
        (vec!["outbox", "list"], Some(0)),
        (vec!["requests", "list"], Some(0)),
        (vec!["--output", "json", "requests", "list"], Some(0)),
        (vec!["safety-number", "bob"], Some(0)),
        (vec!["trust", "bob"], Some(0)),
        (vec!["operator-key"], Some(0)),
        (vec!["consent", "list"], Some(0)),
        (vec!["consent", "requests"], Some(0)),
        (vec!["status", "list"], Some(0)),
        // Bad input.
        (vec!["contacts", "add", "bob", &carol_id], Some(1)),
        (vec!["contacts", "rename", "nobody", "somebody"], Some(8)),
        (vec!["contacts", "remove", "nobody"], Some(8)),
        (vec!["contacts", "rename", "bob", "a\u{1b}[2Kname"], Some(1)),
        (vec!["outbox", "cancel", "not-an-id"], Some(1)),
        (vec!["requests", "accept", "bob"], Some(8)),
        (vec!["consent", "allow", "zz"], Some(1)),
        (vec!["safety-number", "nobody"], Some(8)),
        (
            vec!["safety-number", "bob", "--verify", &wrong_number],
            Some(10),
        ),
        (vec!["save", "bob", "not-an-id", saved], Some(1)),
        (vec!["report", "not-an-id"], Some(1)),
        (vec!["reply", "bob", "not-an-id", "1"], Some(1)),
        (vec!["operator-key", "--pin", "zz"], Some(1)),
        (vec!["status", "delete", "zz"], None),
        (vec!["phone", "verify", "+44 7400 123456", "000000"], None),
        (vec!["name", "claim", "alice-shop"], None),
        (vec!["business", "template", "list"], Some(0)),
        (vec!["devices", "name", "7", "laptop"], Some(1)),
    ];
    let contacts_before = alice.ok(&["--output", "json", "contacts", "list"]).await;
    let mut without = Vec::new();
    for (args, code) in &cases {
        let run = alice.run(args).await;
        match code {
            Some(code) => assert_eq!(run.code, *code, "comptoir {args:?}: {run:?}"),
            // Refused by the relay or the account: some typed failure.
            None => assert!(run.code > 1, "comptoir {args:?}: {run:?}"),
        }
        without.push(run);
    }

    let daemon = Daemon::start(&alice, &[]);
    for ((args, _), without) in cases.iter().zip(&without) {
        // Without the passphrase: the store is not opened.
        let with = alice.run_with(args, false, None).await;
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        same(without, &with, &args);
    }
    // Nothing stored changed.
    let contacts = alice
        .run_with(&["--output", "json", "contacts", "list"], false, None)
        .await;
    assert_eq!(contacts.stdout, contacts_before, "{contacts:?}");
    assert!(!std::path::Path::new(saved).exists());

    // The commands that change the account change it through the daemon.
    let added = alice
        .run_with(&["contacts", "add", "carol", &carol_id], false, None)
        .await;
    assert_eq!(
        (added.code, added.stdout.trim()),
        (0, carol_id.as_str()),
        "{added:?}"
    );
    let renamed = alice
        .run_with(&["contacts", "rename", "carol", "caroline"], false, None)
        .await;
    assert_eq!(renamed.code, 0, "{renamed:?}");
    assert_eq!(
        renamed.stderr,
        format!("carol is now caroline ({carol_id})\n")
    );
    let listed = alice.run_with(&["contacts", "list"], false, None).await;
    assert_eq!(
        listed.stdout,
        format!("bob\t{bob_id}\ncaroline\t{carol_id}\n"),
        "{listed:?}"
    );
    let accepted = alice
        .run_with(&["requests", "accept", "caroline"], false, None)
        .await;
    assert_eq!(accepted.code, 0, "{accepted:?}");
    assert!(
        accepted.stderr.starts_with("accepted: caroline"),
        "{accepted:?}"
    );
    let requests = alice.run_with(&["requests", "list"], false, None).await;
    assert_eq!(
        (requests.code, requests.stderr.as_str()),
        (0, "no message requests\n"),
        "{requests:?}"
    );
    let removed = alice
        .run_with(&["contacts", "remove", "caroline"], false, None)
        .await;
    assert_eq!(removed.code, 0, "{removed:?}");
    let reported = alice
        .run_with(&["report", &from_bob, "--reason", "spam"], false, None)
        .await;
    assert_eq!(reported.code, 0, "{reported:?}");
    assert!(
        reported.stderr.starts_with("reported to the operator"),
        "{reported:?}"
    );
    let posted = alice
        .run_with(&["status", "post", "--text", "open until 6"], false, None)
        .await;
    assert_eq!(posted.code, 0, "{posted:?}");
    let post_id = posted.stdout.trim().to_owned();
    let statuses = alice
        .run_with(&["--output", "json", "status", "list"], false, None)
        .await;
    assert!(statuses.stdout.contains(&post_id), "{statuses:?}");

    // A script runs a command with the method `run`: what it prints and
    // its exit code; a command that cannot run there, or a relative path,
    // is refused as invalid params.
    let socket = tokio::net::UnixStream::connect(alice.socket())
        .await
        .expect("connect to the daemon");
    let (read, mut write) = socket.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    let requests = [
        json!({"command": {"Contacts": {"Rename": {"old": "nobody", "new": "x"}}}, "data_dir": "here"}),
        json!({"command": "Whoami", "output": "json"}),
        json!({"command": "Init"}),
        json!({"command": {"Save": {"from": "bob", "message_id": from_bob, "path": "relative.bin"}}}),
    ];
    let mut answers = Vec::new();
    for (id, params) in requests.iter().enumerate() {
        let line = json!({"jsonrpc": "2.0", "id": id, "method": "run", "params": params});
        write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
        let answer = tokio::time::timeout(common::WAIT, lines.next_line())
            .await
            .expect("an answer in time")
            .expect("read")
            .expect("a line");
        answers.push(serde_json::from_str::<Value>(&answer).expect("JSON"));
    }
    assert_eq!(answers[0]["result"]["exit_code"], 8, "{answers:?}");
    assert_eq!(answers[0]["result"]["stdout"], "");
    assert!(
        answers[0]["result"]["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("comptoir --data-dir here contacts list")),
        "{answers:?}"
    );
    assert_eq!(
        answers[1]["result"],
        json!({"exit_code": 0, "stdout": format!("{alice_id}\n"), "stderr": ""})
    );
    for refused in &answers[2..] {
        assert_eq!(refused["error"]["code"], -32602, "{refused}");
        assert_eq!(refused["error"]["data"]["exit_code"], 2, "{refused}");
    }
    assert!(!alice.dir.join("relative.bin").exists());
    drop((lines, write));

    // The commands that make or replace the store say a daemon runs.
    for args in [
        vec!["init"],
        vec!["link-device"],
        vec!["restore", "backup.bin"],
    ] {
        let refused = alice.run(&args).await;
        assert_eq!(refused.code, 1, "{args:?}: {refused:?}");
        assert!(
            refused.stderr.contains("a comptoir daemon is running on")
                && refused.stderr.contains("stop the daemon first"),
            "{args:?}: {refused:?}"
        );
    }
    assert_eq!(daemon.terminate(), 0);

    // What the daemon changed is in the store.
    let listed = alice.ok(&["contacts", "list"]).await;
    assert_eq!(listed, format!("bob\t{bob_id}\n"));
    let history = alice.ok(&["history", &carol_id]).await;
    assert!(history.contains("hello, a stranger here"), "{history}");
}
