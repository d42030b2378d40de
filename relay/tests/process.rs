//! The real `relay` binary as a child process: `kill -9` right after
//! `Accepted` loses nothing (also while tiny mail log segments roll over
//! and checkpoints run), and SIGTERM shuts down cleanly; each restarts on
//! the same data directory and drains everything; `kill -9` after an ack
//! keeps the receipt for its sender.

mod common;

use common::{Account, Ws, next, send};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use comptoir_protocol::proto::wire::{self, client_frame, server_frame::Body};
use comptoir_protocol::{AccountId, DeviceList, auth_payload, register_payload};

/// A relay child process, killed when dropped (a failing test leaves no
/// relay behind).
struct RelayChild(Child);

impl std::ops::Deref for RelayChild {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for RelayChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `relay serve` on an ephemeral port; returns once it listens.
fn spawn_relay(dir: &Path) -> (RelayChild, SocketAddr) {
    spawn_relay_with(dir, None)
}

/// [`spawn_relay`] with a configuration file.
fn spawn_relay_with(dir: &Path, config: Option<&Path>) -> (RelayChild, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
    command.arg("serve");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn relay");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("relay exited before listening")
            .expect("read log");
        if line.contains("relay listening") {
            let at = line.find("address=").expect("address field") + "address=".len();
            let rest = &line[at..];
            let end = rest.find(' ').unwrap_or(rest.len());
            break rest[..end].parse().expect("address");
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (RelayChild(child), addr)
}

/// Connect, register if asked, authenticate device 1.
async fn login(addr: SocketAddr, account: &Account, register: bool) -> (Ws, wire::AuthOk) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect");
    let Some(Body::Challenge(challenge)) = next(&mut ws).await.body else {
        panic!("challenge")
    };
    let nonce = challenge.nonce;
    if register {
        let list = DeviceList::sign(
            &account.key,
            account.id,
            1,
            vec![(1, *account.device.public())],
        )
        .expect("list");
        send(
            &mut ws,
            1,
            client_frame::Body::Register(wire::Register {
                account_id: account.id.to_vec(),
                account_key: account.key.public().to_bytes().to_vec(),
                device_list: Some(list),
                signature: account
                    .key
                    .sign(&register_payload(
                        &account.id,
                        wire::AccountKind::Customer,
                        &nonce,
                    ))
                    .to_vec(),
                kind: wire::AccountKind::Customer as i32,
            }),
        )
        .await;
        assert!(matches!(
            next(&mut ws).await.body,
            Some(Body::Registered(_))
        ));
    }
    send(
        &mut ws,
        2,
        client_frame::Body::AuthResponse(wire::AuthResponse {
            account_id: account.id.to_vec(),
            device_id: 1,
            signature: account
                .device
                .sign(&auth_payload(
                    &nonce,
                    &account.id,
                    1,
                    &comptoir_protocol::relay_origin(false, &addr.ip().to_string(), addr.port()),
                ))
                .to_vec(),
        }),
    )
    .await;
    loop {
        match next(&mut ws).await.body {
            Some(Body::AuthOk(ok)) => return (ws, ok),
            Some(Body::PrekeysLow(_)) => continue,
            other => panic!("auth: {other:?}"),
        }
    }
}

fn message_id(n: u32) -> Vec<u8> {
    let mut id = vec![0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id
}

/// Pipeline `count` sends and wait for every `Accepted`.
async fn send_all_and_wait_accepted(ws: &mut Ws, to: &AccountId, count: u32) {
    send_range_and_wait_accepted(ws, to, 0, count).await;
}

/// Pipeline sends of ids `from..from + count` and wait for every `Accepted`
/// (skipping receipts of earlier sends).
async fn send_range_and_wait_accepted(ws: &mut Ws, to: &AccountId, from: u32, count: u32) {
    for n in from..from + count {
        send(
            ws,
            100 + u64::from(n),
            client_frame::Body::Send(wire::Send {
                message_id: message_id(n),
                recipient_account: to.to_vec(),
                category: wire::Category::Conversation as i32,
                devices: vec![wire::DeviceCiphertext {
                    device_id: 1,
                    // Big enough that the log outgrows what stays live.
                    ciphertext: vec![n as u8; 2000],
                }],
                ..Default::default()
            }),
        )
        .await;
    }
    let mut accepted = 0;
    while accepted < count {
        match next(ws).await.body {
            Some(Body::Accepted(_)) => accepted += 1,
            Some(Body::PrekeysLow(_) | Body::Delivered(_)) => {}
            other => panic!("expected Accepted, got {other:?}"),
        }
    }
}

async fn drain_all(addr: SocketAddr, bob: &Account, count: u32) {
    let (mut ws, ok) = login(addr, bob, false).await;
    assert_eq!(
        ok.queued,
        u64::from(count),
        "every accepted envelope is still queued"
    );
    let mut seen = Vec::new();
    while seen.len() < count as usize {
        if let Some(Body::Deliver(d)) = next(&mut ws).await.body {
            seen.push(d.envelope.expect("envelope").message_id);
        }
    }
    let expected: Vec<_> = (0..count).map(message_id).collect();
    assert_eq!(seen, expected, "all of them, in order");
}

#[tokio::test]
async fn kill_dash_nine_after_accepted_loses_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut relay, addr) = spawn_relay(dir.path());
    let (alice, bob) = (Account::new(), Account::new());
    let (_b, _) = login(addr, &bob, true).await;
    drop(_b);
    let (mut a, _) = login(addr, &alice, true).await;
    send_all_and_wait_accepted(&mut a, &bob.id, 60).await;
    relay.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    relay.wait().expect("reaped");

    let (mut relay, addr) = spawn_relay(dir.path());
    drain_all(addr, &bob, 60).await;
    relay.kill().expect("kill");
    relay.wait().expect("reaped");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_shuts_down_gracefully_and_keeps_the_queue() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut relay, addr) = spawn_relay(dir.path());
    let (alice, bob) = (Account::new(), Account::new());
    let (b, _) = login(addr, &bob, true).await;
    drop(b);
    let (mut a, _) = login(addr, &alice, true).await;
    send_all_and_wait_accepted(&mut a, &bob.id, 5).await;
    let status = Command::new("kill")
        .args(["-TERM", &relay.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    // The connected client is told, then closed with 1001.
    let frame = next(&mut a).await;
    assert!(
        matches!(frame.body, Some(Body::Error(e)) if e.code == wire::ErrorCode::ShuttingDown as i32)
    );
    let exit = relay.wait().expect("exit");
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");

    let (mut relay, addr) = spawn_relay(dir.path());
    drain_all(addr, &bob, 5).await;
    relay.kill().expect("kill");
    relay.wait().expect("reaped");
}

fn id_number(id: &[u8]) -> u32 {
    u32::from_be_bytes(id[..4].try_into().expect("4 bytes"))
}

/// Log in as Bob and take everything queued: it must include every id in
/// `owed`, in send order (ids acked before a crash may come back: acks are
/// not waited on for durability). Acks all but every fifth id, which stay
/// owed.
async fn take_and_ack(
    addr: SocketAddr,
    bob: &Account,
    alice: &AccountId,
    owed: &mut std::collections::BTreeSet<u32>,
) {
    let (mut ws, ok) = login(addr, bob, false).await;
    assert!(
        ok.queued >= owed.len() as u64,
        "queued {} < owed {}",
        ok.queued,
        owed.len()
    );
    let mut seen = Vec::new();
    while seen.len() < ok.queued as usize {
        let Some(Body::Deliver(d)) = next(&mut ws).await.body else {
            continue;
        };
        let id = d.envelope.expect("envelope").message_id;
        let n = id_number(&id);
        seen.push(n);
        if !n.is_multiple_of(5) {
            send(
                &mut ws,
                0,
                client_frame::Body::DeliveryAck(wire::DeliveryAck {
                    message_id: id,
                    sender_account: alice.to_vec(),
                    accept_id: 0,
                    ..Default::default()
                }),
            )
            .await;
            owed.remove(&n);
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in send order: {seen:?}"
    );
    let missing: Vec<_> = owed.iter().filter(|n| !seen.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "accepted, never acked, lost: {missing:?}"
    );
}

#[tokio::test]
async fn kill_dash_nine_while_segments_roll_and_checkpoints_run_loses_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("relay.toml");
    // Segments of 4 KiB and checkpoints every few: both run all the time.
    std::fs::write(
        &config,
        "[mail_log]\nsegment_bytes = 4096\ncheckpoint_min_bytes = 8192\n",
    )
    .expect("config");
    let data = dir.path().join("data");
    let (alice, bob) = (Account::new(), Account::new());
    let (mut relay, mut addr) = spawn_relay_with(&data, Some(&config));
    drop(login(addr, &bob, true).await);
    let (mut a, _) = login(addr, &alice, true).await;
    let mut owed = std::collections::BTreeSet::new();
    let mut next_id = 0;
    for _ in 0..4 {
        send_range_and_wait_accepted(&mut a, &bob.id, next_id, 150).await;
        owed.extend(next_id..next_id + 150);
        next_id += 150;
        take_and_ack(addr, &bob, &alice.id, &mut owed).await;
        // More appends on top of the acks' tombstones, then crash.
        send_range_and_wait_accepted(&mut a, &bob.id, next_id, 50).await;
        owed.extend(next_id..next_id + 50);
        next_id += 50;
        relay.kill().expect("SIGKILL");
        relay.wait().expect("reaped");
        (relay, addr) = spawn_relay_with(&data, Some(&config));
        (a, _) = login(addr, &alice, false).await;
    }
    take_and_ack(addr, &bob, &alice.id, &mut owed).await;
    let first = data.join("mail-log").join(format!("{:010}.seg", 1));
    assert!(!first.exists(), "checkpoints replaced the first segments");
    relay.kill().expect("kill");
    relay.wait().expect("reaped");
}

/// The reproduction: ten envelopes accepted for an offline device,
/// a clean stop, one bit flipped inside the third envelope's record. The
/// restart must stop naming the file and offset, and cut nothing (it used
/// to cut the log there and deliver 2 of 10).
#[cfg(unix)]
#[tokio::test]
async fn a_flipped_bit_in_an_accepted_envelope_stops_the_restart_and_nothing_is_cut() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut relay, addr) = spawn_relay(dir.path());
    let (alice, bob) = (Account::new(), Account::new());
    drop(login(addr, &bob, true).await);
    let (mut a, _) = login(addr, &alice, true).await;
    send_all_and_wait_accepted(&mut a, &bob.id, 10).await;
    let status = Command::new("kill")
        .args(["-TERM", &relay.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    assert!(relay.wait().expect("exit").success());
    let log_dir = dir.path().join("mail-log");
    let mut segments: Vec<_> = std::fs::read_dir(&log_dir)
        .expect("mail-log")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let (path, at, mut bytes) = segments
        .iter()
        .find_map(|p| {
            let bytes = std::fs::read(p).expect("segment");
            let at = bytes
                .windows(2000)
                .position(|w| w.iter().all(|b| *b == 2))?;
            Some((p.clone(), at, bytes))
        })
        .expect("the third envelope is in a segment");
    bytes[at + 1000] ^= 0x08;
    std::fs::write(&path, &bytes).expect("flip");

    let mut child = RelayChild(
        Command::new(env!("CARGO_BIN_EXE_relay"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn relay"),
    );
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let read = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut text = String::new();
        // Both reach their end only once the relay has exited.
        let _ = BufReader::new(stdout).read_to_string(&mut text);
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let text = tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the relay stopped instead of serving")
        .expect("read output");
    let exit = child.wait().expect("exit");
    assert!(!exit.success(), "refused to start: {text}");
    assert!(
        text.contains(&path.display().to_string()) && text.contains("offset"),
        "names the file and offset: {text}"
    );
    assert_eq!(std::fs::read(&path).expect("segment"), bytes, "nothing cut");
}

/// `kill -9` right after an ack (made durable by a later send, whose
/// `Accepted` waits for everything logged before it): the sender, offline
/// at the time, still gets the `Delivered` receipt from the restarted relay,
/// and again on every connection until it acks it.
#[tokio::test]
async fn kill_dash_nine_after_an_ack_keeps_its_receipt_for_the_sender() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut relay, addr) = spawn_relay(dir.path());
    let (alice, bob) = (Account::new(), Account::new());
    let (b, _) = login(addr, &bob, true).await;
    drop(b);
    let (mut a, _) = login(addr, &alice, true).await;
    send_all_and_wait_accepted(&mut a, &bob.id, 1).await;
    drop(a);
    let (mut b, _) = login(addr, &bob, false).await;
    let envelope = loop {
        if let Some(Body::Deliver(d)) = next(&mut b).await.body {
            break d.envelope.expect("envelope");
        }
    };
    send(
        &mut b,
        7,
        client_frame::Body::DeliveryAck(wire::DeliveryAck {
            message_id: envelope.message_id.clone(),
            sender_account: envelope.sender_account.clone(),
            accept_id: 0,
            ..Default::default()
        }),
    )
    .await;
    loop {
        let frame = next(&mut b).await;
        if frame.request_id == 7 {
            assert!(matches!(frame.body, Some(Body::Ok(_))), "{frame:?}");
            break;
        }
    }
    send_range_and_wait_accepted(&mut b, &alice.id, 1, 1).await;
    relay.kill().expect("SIGKILL");
    relay.wait().expect("reaped");

    let (mut relay, addr) = spawn_relay(dir.path());
    for round in 0..2 {
        let (mut a, _) = login(addr, &alice, false).await;
        let delivered = loop {
            if let Some(Body::Delivered(d)) = next(&mut a).await.body {
                break d;
            }
        };
        assert_eq!(delivered.message_id, message_id(0));
        assert_eq!(delivered.recipient_account, bob.id.to_vec());
        if round == 1 {
            send(
                &mut a,
                9,
                client_frame::Body::ReceiptAck(wire::ReceiptAck {
                    message_id: delivered.message_id,
                    recipient_account: delivered.recipient_account,
                    recipient_device: delivered.recipient_device,
                }),
            )
            .await;
            loop {
                let frame = next(&mut a).await;
                if frame.request_id == 9 {
                    assert!(matches!(frame.body, Some(Body::Ok(_))), "{frame:?}");
                    break;
                }
            }
        }
    }
    relay.kill().expect("kill");
    relay.wait().expect("reaped");
}
