//! One atomic accept, checked on the real binary: it is aborted (as by
//! `kill -9`) at each fault-injection point of a send's accept (bytes
//! written but not synced; synced but not yet visible; visible but
//! `Accepted` not sent), for a billed template from a business to a
//! customer and for a customer's conversation message to a business.
//! After each abort, `relay accounting` on the stopped data directory shows
//! the device copies, the conversation state, the quota counts, the
//! customer the business reached (the quality tiers' usage) and the
//! ledger entry all present or all absent (and present when `Accepted` was
//! received). Needs the test-only feature `fault-injection` (on under
//! `cargo test --workspace` through the tests crate's dev-dependency).
#![cfg(feature = "fault-injection")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{Account, Ws, send};
use comptoir_protocol::proto::wire::{self, client_frame, server_frame::Body};
use comptoir_protocol::{
    AccountId, ConsentCategories, ConsentFields, DeviceList, auth_payload, register_payload,
    sign_consent,
};
use futures_util::StreamExt;
use std::io::{BufRead, BufReader};
use tokio_tungstenite::tungstenite::Message;

struct RelayChild(Child);

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `relay serve`, aborting at `fault` if given; its WebSocket and
/// admin API addresses.
fn spawn_relay(dir: &Path, fault: Option<&str>) -> (RelayChild, SocketAddr, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(point) = fault {
        command.env(comptoir_relay::fault::FAULT_POINT_ENV, point);
    }
    let mut child = command.spawn().expect("spawn relay");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let field = |line: &str, name: &str| -> SocketAddr {
        let at = line.find(name).expect("address field") + name.len();
        let rest = &line[at..];
        let end = rest.find(' ').unwrap_or(rest.len());
        rest[..end].parse().expect("address")
    };
    let mut admin = None;
    let addr = loop {
        let line = lines
            .next()
            .expect("relay exited before listening")
            .expect("read log");
        if line.contains("admin API listening") {
            admin = Some(field(&line, "admin="));
        }
        if line.contains("relay listening") {
            break field(&line, "address=");
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (
        RelayChild(child),
        addr,
        admin.expect("the admin API is announced first"),
    )
}

/// Submit the business's utility template over `ws` and approve it
/// through the admin API; its id (hex).
async fn approved_template(
    ws: &mut Ws,
    business: &Account,
    admin: SocketAddr,
    dir: &Path,
) -> String {
    let template = comptoir_protocol::template::Template {
        business: business.id,
        name: "order_update".into(),
        language: "en_GB".into(),
        category: comptoir_protocol::template::TemplateCategory::Utility,
        header: None,
        body: "Your order has shipped.".into(),
        footer: None,
        placeholders: Vec::new(),
        buttons: Vec::new(),
    };
    send(
        ws,
        4,
        client_frame::Body::SubmitTemplate(wire::SubmitTemplate {
            template_json: serde_json::to_string(&template).expect("json"),
        }),
    )
    .await;
    let id = loop {
        let reply = common::next(ws).await;
        if reply.request_id == 4 {
            match reply.body {
                Some(Body::TemplateSubmitted(s)) => break s.template_id,
                other => panic!("submit: {other:?}"),
            }
        }
    };
    let token =
        comptoir_relay::operator::read_admin_token(&dir.join("admin.token")).expect("admin token");
    comptoir_relay::admin::client::AdminClient::new(admin, token)
        .approve_template(&id)
        .await
        .expect("approve");
    id
}

/// Connect, register with `kind`, authenticate device 1.
async fn register_and_login(addr: SocketAddr, account: &Account, kind: wire::AccountKind) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect");
    let Some(Body::Challenge(challenge)) = common::next(&mut ws).await.body else {
        panic!("challenge")
    };
    let nonce = challenge.nonce;
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
                .sign(&register_payload(&account.id, kind, &nonce))
                .to_vec(),
            kind: kind as i32,
        }),
    )
    .await;
    assert!(matches!(
        common::next(&mut ws).await.body,
        Some(Body::Registered(_))
    ));
    let origin = comptoir_protocol::relay_origin(false, &addr.ip().to_string(), addr.port());
    send(
        &mut ws,
        2,
        client_frame::Body::AuthResponse(wire::AuthResponse {
            account_id: account.id.to_vec(),
            device_id: 1,
            signature: account
                .device
                .sign(&auth_payload(&nonce, &account.id, 1, &origin))
                .to_vec(),
        }),
    )
    .await;
    loop {
        match common::next(&mut ws).await.body {
            Some(Body::AuthOk(_)) => return ws,
            Some(Body::PrekeysLow(_)) => continue,
            other => panic!("auth: {other:?}"),
        }
    }
}

/// What `relay accounting` printed, parsed.
fn accounting(dir: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .arg("accounting")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run relay accounting");
    assert!(
        out.status.success(),
        "relay accounting: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    /// A business sends a utility template to a customer (billed).
    Template,
    /// A customer writes to a business (opens the window).
    Conversation,
}

/// Run one send under `fault`; returns whether `Accepted` came, and the
/// (copies, conversation, quota, ledger) presence after the relay stopped.
async fn run(scenario: Scenario, fault: Option<&str>) -> (bool, [bool; 4]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut relay, addr, admin) = spawn_relay(dir.path(), fault);
    let (business, customer) = (Account::new(), Account::new());
    let mut b = register_and_login(addr, &business, wire::AccountKind::Business).await;
    let mut c = register_and_login(addr, &customer, wire::AccountKind::Customer).await;
    let approved = approved_template(&mut b, &business, admin, dir.path()).await;
    if scenario == Scenario::Template {
        // Outside the window a template needs the customer's consent.
        let issued_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        let fields = ConsentFields {
            customer: customer.id,
            business: business.id,
            device: 1,
            categories: ConsentCategories::UTILITY,
            issued_at_ms,
            expires_at_ms: issued_at_ms + 3_600_000,
            counter: 1,
        };
        send(
            &mut c,
            3,
            client_frame::Body::SetConsent(wire::SetConsent {
                business_account: business.id.to_vec(),
                categories: u32::from(ConsentCategories::UTILITY.bits()),
                issued_at_ms,
                expires_at_ms: fields.expires_at_ms,
                counter: 1,
                signature: sign_consent(&customer.device, &fields).to_vec(),
            }),
        )
        .await;
        loop {
            let reply = common::next(&mut c).await;
            if reply.request_id == 3 {
                assert!(
                    matches!(reply.body, Some(Body::Ok(_))),
                    "consent: {reply:?}"
                );
                break;
            }
        }
    }
    let (ws, to, category, template_id) = match scenario {
        Scenario::Template => (
            &mut b,
            customer.id,
            wire::Category::Utility,
            approved.clone(),
        ),
        Scenario::Conversation => (
            &mut c,
            business.id,
            wire::Category::Conversation,
            String::new(),
        ),
    };
    send(
        ws,
        7,
        client_frame::Body::Send(wire::Send {
            message_id: vec![0x42; 16],
            recipient_account: to.to_vec(),
            category: category as i32,
            template_id,
            franking_tag: vec![0xF7; 32],
            devices: vec![wire::DeviceCiphertext {
                device_id: 1,
                ciphertext: vec![0xAB; 64],
            }],
            ..Default::default()
        }),
    )
    .await;
    // The reply, or the connection dropped by the abort.
    let mut accepted = false;
    loop {
        match tokio::time::timeout(common::TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => {
                let frame = comptoir_protocol::frame::decode_server(&bytes).expect("frame");
                if frame.request_id == 7 {
                    accepted = matches!(frame.body, Some(Body::Accepted(_)));
                    assert!(accepted, "{frame:?}");
                    break;
                }
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break,
            Err(_) => panic!("no reply and no abort"),
        }
    }
    if fault.is_some() {
        let status = relay.0.wait().expect("wait");
        assert!(!status.success(), "the relay aborted at {fault:?}");
    } else {
        relay.0.kill().expect("kill -9");
        relay.0.wait().expect("wait");
    }
    drop(relay);
    let lines = accounting(dir.path());
    let hex = |id: &AccountId| id.to_string();
    let (sender, recipient) = match scenario {
        Scenario::Template => (hex(&business.id), hex(&customer.id)),
        Scenario::Conversation => (hex(&customer.id), hex(&business.id)),
    };
    let copies = lines
        .iter()
        .any(|l| l["queue"]["account"] == recipient.as_str() && l["queue"]["copies"] == 1);
    let conversation = lines.iter().any(|l| {
        l["conversation"]["business"] == hex(&business.id).as_str()
            && l["conversation"]["customer"] == hex(&customer.id).as_str()
    });
    let quota = lines.iter().any(|l| {
        l["quota"]["sender"] == sender.as_str()
            && l["quota"]["accepted"] == 1
            && l["quota"]["customers_reached"] == u64::from(scenario == Scenario::Template)
    });
    let ledger = lines.iter().any(|l| {
        l["ledger"]["business"] == hex(&business.id).as_str()
            && l["ledger"]["customer"] == hex(&customer.id).as_str()
            && l["ledger"]["category"] == "utility"
            && l["ledger"]["template_id"] == approved.as_str()
            && l["ledger"]["franking_tag"] == "f7".repeat(32).as_str()
            && l["ledger"]["message_id"] == "42".repeat(16).as_str()
    });
    let reach = lines.iter().any(|l| {
        l["reach"]["business"] == hex(&business.id).as_str()
            && l["reach"]["customer"] == hex(&customer.id).as_str()
    });
    let ledger_count = lines.iter().filter(|l| l.get("ledger").is_some()).count();
    assert!(ledger_count <= 1, "{lines:?}");
    // Only what the scenario changes: a conversation message is not
    // billed, and a template opens no window.
    let present = match scenario {
        Scenario::Template => {
            assert!(!conversation, "{lines:?}");
            [copies, quota, reach, ledger]
        }
        Scenario::Conversation => {
            assert!(ledger_count == 0, "{lines:?}");
            assert!(!reach, "a customer's message reaches no one: {lines:?}");
            [copies, conversation, quota, copies]
        }
    };
    (accepted, present)
}

#[tokio::test]
async fn an_accept_aborted_at_any_point_commits_copies_window_quota_and_ledger_together() {
    for scenario in [Scenario::Template, Scenario::Conversation] {
        let (accepted, present) = run(scenario, None).await;
        assert!(accepted);
        assert_eq!(present, [true; 4], "{scenario:?} without a fault");
        for point in ["after-write", "after-sync", "before-accepted"] {
            let (accepted, present) = run(scenario, Some(point)).await;
            assert!(
                !accepted,
                "{scenario:?} at {point}: Accepted came before the abort"
            );
            assert!(
                present == [true; 4] || present == [false; 4],
                "{scenario:?} at {point}: all or nothing, got {present:?}"
            );
            if point != "after-write" {
                // Synced before the abort: it must all be there.
                assert_eq!(present, [true; 4], "{scenario:?} at {point}");
            }
        }
    }
}
