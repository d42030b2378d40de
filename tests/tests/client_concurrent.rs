//! One `Client` used from many tasks at once (issue 11 item 5): 16 tasks
//! send through `Sender` handles of one device to several peers over a
//! real relay, while the client itself decrypts what those peers send it.
//! Every message is decrypted exactly once, each task's messages arrive in
//! the order it sent them, and the store reopened afterwards is consistent
//! (empty outbox, every message accepted, sessions that still work: a
//! reused message key would show up as a duplicate or a failed decrypt).

use crate::support;

use std::collections::{HashMap, HashSet};

use comptoir_client::{Client, ClientError, Event, MessageId, Status};
use comptoir_protocol::AccountId;
use support::client::{registered, url, wait_message};
use support::{TIMEOUT, TestRelay, start_relay};

const TASKS: usize = 16;
const PER_TASK: usize = 6;
const PEERS: usize = 3;

fn text_of(task: usize, k: usize) -> String {
    format!("task {task} message {k}")
}

fn parse(text: &str) -> Option<(usize, usize)> {
    let rest = text.strip_prefix("task ")?;
    let (task, k) = rest.split_once(" message ")?;
    Some((task.parse().ok()?, k.parse().ok()?))
}

/// Collect `expected` text messages from `from` on `client`: each task's
/// messages in the order sent, none twice.
async fn receive_all(client: &mut Client, from: AccountId, expected: usize) -> Vec<(usize, usize)> {
    let mut seen_ids = HashSet::new();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT * 3;
    while got.len() < expected {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "only {} of {expected} arrived", got.len());
        match client.next_event(left).await.expect("connection stays up") {
            Some(Event::Message {
                from: f, id, text, ..
            }) if f == from => {
                assert!(seen_ids.insert(id), "message {id} shown twice");
                got.push(parse(&text).expect("a test message"));
            }
            Some(Event::Undecryptable { reason, .. }) => panic!("undecryptable: {reason}"),
            Some(_) => {}
            None => panic!("only {} of {expected} arrived", got.len()),
        }
    }
    got
}

fn assert_in_order(got: &[(usize, usize)]) {
    let mut next: HashMap<usize, usize> = HashMap::new();
    for &(task, k) in got {
        let want = next.entry(task).or_insert(0);
        assert_eq!(k, *want, "task {task}: message {k} arrived before {want}");
        *want += 1;
    }
}

async fn peers(relay: &TestRelay, dirs: &[tempfile::TempDir]) -> Vec<Client> {
    let mut out = Vec::new();
    for dir in dirs {
        out.push(registered(relay, dir.path(), "pw-long-enough").await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_send_through_one_client_each_message_once_in_order() {
    let relay = start_relay().await;
    let dir_a = tempfile::tempdir().unwrap();
    let peer_dirs: Vec<_> = (0..PEERS).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut alice = registered(&relay, dir_a.path(), "pw-long-enough").await;
    let mut peers = peers(&relay, &peer_dirs).await;
    let a = alice.account_id();
    let ids: Vec<AccountId> = peers.iter().map(Client::account_id).collect();

    // Every peer has a session with alice already and writes to her while
    // the tasks send: her decrypts and the tasks' encrypts share sessions.
    for peer in &mut peers {
        peer.send_text(a, "before").await.expect("peer sends");
    }
    let sender = alice.sender();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let sender = sender.clone();
            let to = ids[task % PEERS];
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for k in 0..PER_TASK {
                    sent.push(sender.send_text(to, &text_of(task, k)).await?);
                }
                Ok::<Vec<MessageId>, ClientError>(sent)
            })
        })
        .collect();
    let mut incoming = 0;
    let all_sent = async {
        let mut sent = Vec::new();
        for task in tasks {
            sent.extend(task.await.expect("task").expect("every send accepted"));
        }
        sent
    };
    tokio::pin!(all_sent);
    let sent = loop {
        tokio::select! {
            sent = &mut all_sent => break sent,
            event = alice.next_event(TIMEOUT) => {
                if let Some(Event::Message { .. }) = event.expect("alice stays connected") {
                    incoming += 1;
                }
            }
        }
    };
    assert_eq!(sent.len(), TASKS * PER_TASK);
    assert_eq!(
        sent.iter().collect::<HashSet<_>>().len(),
        sent.len(),
        "ids unique"
    );
    while incoming < PEERS {
        let (_, text) = wait_message(&mut alice, ids[incoming]).await;
        assert_eq!(text, "before");
        incoming += 1;
    }

    for (p, peer) in peers.iter_mut().enumerate() {
        let expected = (0..TASKS).filter(|t| t % PEERS == p).count() * PER_TASK;
        let got = receive_all(peer, a, expected).await;
        assert_in_order(&got);
        assert!(got.iter().all(|(task, _)| task % PEERS == p));
        assert_eq!(
            peer.history(&a).unwrap().len(),
            expected + 1,
            "stored once each"
        );
    }

    // Reopened: consistent, and the sessions go on without reusing a key.
    drop(sender);
    alice.close().await.expect("close");
    let mut alice = Client::open(dir_a.path(), "pw-long-enough").expect("reopen");
    assert_eq!(alice.outbox_len().unwrap(), 0);
    for (p, id) in ids.iter().enumerate() {
        let history = alice.history(id).unwrap();
        let outgoing: Vec<_> = history.iter().filter(|m| m.outgoing).collect();
        let expected = (0..TASKS).filter(|t| t % PEERS == p).count() * PER_TASK;
        assert_eq!(outgoing.len(), expected);
        assert!(
            outgoing
                .iter()
                .all(|m| m.status >= Status::Accepted && m.status != Status::Failed)
        );
    }
    alice.connect(&url(&relay)).await.expect("reconnect");
    for (peer, id) in peers.iter_mut().zip(&ids) {
        alice.send_text(*id, "after reopening").await.expect("send");
        assert_eq!(wait_message(peer, a).await.1, "after reopening");
    }
}
