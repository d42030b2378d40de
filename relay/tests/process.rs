//! The real `relay` binary as a child process: `kill -9` right after
//! `Accepted` loses nothing, and SIGTERM shuts down cleanly; both restart on
//! the same data directory and drain everything.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use comptoir_protocol::frame::{decode_server, encode_client};
use comptoir_protocol::proto::wire::{self, client_frame, server_frame::Body};
use comptoir_protocol::{
    AccountId, AccountKeyPair, DeviceList, IdentityKeyPair, auth_payload, register_payload,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const TIMEOUT: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Start `relay serve` on an ephemeral port; returns once it listens.
fn spawn_relay(dir: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
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
    (child, addr)
}

struct Account {
    id: AccountId,
    key: AccountKeyPair,
    device: IdentityKeyPair,
}

impl Account {
    fn new() -> Self {
        let mut rng = rand::rng();
        Self {
            id: AccountId::generate(&mut rng),
            key: AccountKeyPair::generate(&mut rng),
            device: IdentityKeyPair::generate(&mut rng),
        }
    }
}

async fn next(ws: &mut Ws) -> wire::ServerFrame {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("frame in time")
            .expect("open")
            .expect("ok");
        if let Message::Binary(b) = msg {
            return decode_server(&b).expect("frame");
        }
    }
}

async fn send(ws: &mut Ws, request_id: u64, body: client_frame::Body) {
    let bytes = encode_client(&wire::ClientFrame {
        request_id,
        body: Some(body),
    });
    ws.send(Message::Binary(bytes.into())).await.expect("send");
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
                    .sign(&register_payload(&account.id, &nonce))
                    .to_vec(),
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
                .sign(&auth_payload(&nonce, &account.id, 1))
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
    for n in 0..count {
        send(
            ws,
            100 + u64::from(n),
            client_frame::Body::Send(wire::Send {
                message_id: message_id(n),
                recipient_account: to.to_vec(),
                category: wire::Category::Conversation as i32,
                devices: vec![wire::DeviceCiphertext {
                    device_id: 1,
                    ciphertext: vec![n as u8; 200],
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
            Some(Body::PrekeysLow(_)) => {}
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
