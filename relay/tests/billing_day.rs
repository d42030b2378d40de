//! A scripted day of traffic on the real binary, under a moved clock
//! (the test-only feature `test-clock`: each relay process starts with
//! its clock shifted by the offset in `COMPTOIR_TEST_CLOCK_OFFSET_MS`),
//! whose bill export must equal a hand computation.
//!
//! The day: a customer writes to the business (opening the window); the
//! business replies in free form (free), sends a utility template inside
//! the window (free) and a marketing one (billed inside too); a utility
//! template outside the window to a second customer, retried with the
//! same message id (one send); an authentication template to that
//! customer whose signed ack kills the relay (`kill -9` through the
//! fault point `ack-before-ledger`: checked, nothing written), then is
//! delivered again after the restart and acked; acks from both devices of
//! the first customer and a duplicate ack; the next day (clock +25 h,
//! window closed) a utility template outside the window acked by both
//! devices, a marketing one refused for want of consent, and a utility
//! template never picked up that expires (message TTL 1 h, clock +28 h).
//! `relay admin bills export` (CSV and JSON) then gives totals equal to
//! the hand computation below, and the business's own fetched bill
//! checks against the operator key, the device keys and the rate card.
#![cfg(all(feature = "fault-injection", feature = "test-clock"))]

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::Ws;
use comptoir_protocol::proto::wire::{self, Category, client_frame, server_frame::Body};
use comptoir_protocol::template::{Template, TemplateCategory};
use comptoir_protocol::{
    AccountId, AccountKeyPair, ConsentCategories, ConsentFields, DeliveryFields, DeviceList,
    IdentityKey, IdentityKeyPair, auth_payload, register_payload, sign_consent, sign_delivery,
};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

const HOUR_MS: i64 = 3_600_000;

/// The relay's configuration: messages expire an hour after their accept;
/// expiry passes every 100 ms (so an expired message is deleted soon after
/// the clock passes its expiry).
const CONFIG: &str = "gc_interval_ms = 100\nmessage_ttl_ms = 3600000\n";

struct RelayChild {
    child: Child,
    addr: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
}

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RelayChild {
    /// `kill -9`.
    fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }
}

/// Start `relay serve` on `dir` with its clock moved by `offset_ms`, a
/// one-hour message TTL, aborting at `fault` if given.
fn spawn(dir: &Path, offset_ms: i64, fault: Option<&str>) -> RelayChild {
    let config = dir.join("relay.toml");
    std::fs::write(&config, CONFIG).expect("config");
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
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env(
            comptoir_relay::clock::TEST_CLOCK_OFFSET_ENV,
            offset_ms.to_string(),
        )
        .env_remove(comptoir_relay::fault::FAULT_POINT_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(point) = fault {
        command.env(comptoir_relay::fault::FAULT_POINT_ENV, point);
    }
    let mut child = command.spawn().expect("spawn relay");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let field = |line: &str, name: &str| -> Option<SocketAddr> {
        let at = line.find(name)? + name.len();
        let rest = &line[at..];
        let end = rest.find(' ').unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let (mut addr, mut http, mut admin) = (None, None, None);
    while addr.is_none() || http.is_none() || admin.is_none() {
        let line = lines
            .next()
            .expect("relay exited before listening")
            .expect("read log");
        if line.contains("admin API listening") {
            admin = field(&line, "admin=");
        }
        if line.contains("relay listening") {
            addr = field(&line, "address=");
        }
        if http.is_none() && line.contains(" http=") {
            http = field(&line, " http=");
        }
    }
    std::thread::spawn(move || for _ in lines.by_ref() {});
    RelayChild {
        child,
        addr: addr.expect("address"),
        http: http.expect("http"),
        admin: admin.expect("admin"),
    }
}

/// An account with `devices` devices (ids 1..).
struct Account {
    id: AccountId,
    key: AccountKeyPair,
    devices: Vec<IdentityKeyPair>,
}

impl Account {
    fn new(devices: usize) -> Self {
        let mut rng = rand::rng();
        Self {
            id: AccountId::generate(&mut rng),
            key: AccountKeyPair::generate(&mut rng),
            devices: (0..devices)
                .map(|_| IdentityKeyPair::generate(&mut rng))
                .collect(),
        }
    }

    fn device(&self, device: u32) -> &IdentityKeyPair {
        &self.devices[device as usize - 1]
    }

    fn device_ids(&self) -> Vec<u32> {
        (1..=self.devices.len() as u32).collect()
    }
}

/// One device's connection: requests by id, pushes kept in order.
struct Conn {
    ws: Ws,
    pushed: VecDeque<Body>,
    next_id: u64,
}

impl Conn {
    async fn frame(&mut self) -> Option<wire::ServerFrame> {
        loop {
            match tokio::time::timeout(common::TIMEOUT, self.ws.next()).await {
                Ok(Some(Ok(Message::Binary(bytes)))) => {
                    return Some(comptoir_protocol::frame::decode_server(&bytes).expect("frame"));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return None,
                Err(_) => panic!("no frame in time"),
            }
        }
    }

    /// Send `body`; its reply, or `None` if the connection dropped.
    async fn try_request(&mut self, body: client_frame::Body) -> Option<Body> {
        self.next_id += 1;
        let id = self.next_id;
        common::send(&mut self.ws, id, body).await;
        loop {
            let frame = self.frame().await?;
            match (frame.request_id, frame.body) {
                (r, Some(body)) if r == id => return Some(body),
                (0, Some(body)) => self.pushed.push_back(body),
                _ => {}
            }
        }
    }

    async fn request(&mut self, body: client_frame::Body) -> Body {
        self.try_request(body).await.expect("a reply")
    }

    /// The next pushed frame `pick` takes (earlier ones it leaves are kept).
    async fn pushed<T>(&mut self, mut pick: impl FnMut(&Body) -> Option<T>) -> T {
        if let Some(at) = self.pushed.iter().position(|b| pick(b).is_some()) {
            let body = self.pushed.remove(at).expect("at");
            return pick(&body).expect("picked");
        }
        loop {
            let frame = self.frame().await.expect("connection open");
            if let Some(body) = frame.body {
                if let Some(found) = pick(&body) {
                    return found;
                }
                self.pushed.push_back(body);
            }
        }
    }

    async fn envelope(&mut self) -> wire::Envelope {
        self.pushed(|b| match b {
            Body::Deliver(d) => d.envelope.clone(),
            _ => None,
        })
        .await
    }

    /// Wait for the `Delivered` receipt of `accept_id` from `device`: the
    /// ack (and its delivered entry) is durable.
    async fn delivered(&mut self, accept_id: u64, device: u32) {
        self.pushed(|b| match b {
            Body::Delivered(d) if d.accept_id == accept_id && d.recipient_device == device => {
                Some(())
            }
            _ => None,
        })
        .await;
    }
}

/// Connect; register `account` as `kind` first if `register`; then log
/// in as `device`.
async fn login(
    addr: SocketAddr,
    account: &Account,
    device: u32,
    register: Option<wire::AccountKind>,
) -> Conn {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect");
    let Some(Body::Challenge(challenge)) = common::next(&mut ws).await.body else {
        panic!("challenge")
    };
    let nonce = challenge.nonce;
    if let Some(kind) = register {
        let list = DeviceList::sign(
            &account.key,
            account.id,
            1,
            account
                .device_ids()
                .into_iter()
                .map(|d| (d, *account.device(d).public()))
                .collect(),
        )
        .expect("list");
        common::send(
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
    }
    let origin = comptoir_protocol::relay_origin(false, &addr.ip().to_string(), addr.port());
    common::send(
        &mut ws,
        2,
        client_frame::Body::AuthResponse(wire::AuthResponse {
            account_id: account.id.to_vec(),
            device_id: device,
            signature: account
                .device(device)
                .sign(&auth_payload(&nonce, &account.id, device, &origin))
                .to_vec(),
        }),
    )
    .await;
    loop {
        match common::next(&mut ws).await.body {
            Some(Body::AuthOk(_)) => break,
            Some(Body::PrekeysLow(_)) => continue,
            other => panic!("auth: {other:?}"),
        }
    }
    Conn {
        ws,
        pushed: VecDeque::new(),
        next_id: 10,
    }
}

/// Submit a template of `category` and approve it through the admin API.
async fn approved(
    b: &mut Conn,
    business: &Account,
    relay: &RelayChild,
    dir: &Path,
    category: TemplateCategory,
) -> String {
    let template = Template {
        business: business.id,
        name: format!("{}_notice", category.name()),
        language: "en_GB".into(),
        category,
        header: None,
        body: "Something happened.".into(),
        footer: None,
        placeholders: Vec::new(),
        buttons: Vec::new(),
    };
    let reply = b
        .request(client_frame::Body::SubmitTemplate(wire::SubmitTemplate {
            template_json: serde_json::to_string(&template).expect("json"),
        }))
        .await;
    let Body::TemplateSubmitted(submitted) = reply else {
        panic!("submit: {reply:?}")
    };
    admin(relay, dir)
        .approve_template(&submitted.template_id)
        .await
        .expect("approve");
    submitted.template_id
}

fn admin(relay: &RelayChild, dir: &Path) -> comptoir_relay::admin::client::AdminClient {
    let token = comptoir_relay::operator::read_admin_token(&dir.join("data").join("admin.token"))
        .expect("admin token");
    comptoir_relay::admin::client::AdminClient::new(relay.admin, token)
}

async fn consent(
    c: &mut Conn,
    customer: &Account,
    business: &Account,
    categories: ConsentCategories,
) {
    let issued_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let fields = ConsentFields {
        customer: customer.id,
        business: business.id,
        device: 1,
        categories,
        issued_at_ms,
        expires_at_ms: issued_at_ms + 7 * 24 * HOUR_MS as u64,
        counter: 1,
    };
    let reply = c
        .request(client_frame::Body::SetConsent(wire::SetConsent {
            business_account: business.id.to_vec(),
            categories: u32::from(categories.bits()),
            issued_at_ms,
            expires_at_ms: fields.expires_at_ms,
            counter: 1,
            signature: sign_consent(customer.device(1), &fields).to_vec(),
        }))
        .await;
    assert!(matches!(reply, Body::Ok(_)), "consent: {reply:?}");
}

/// `from` sends message `n` to every device of `to`.
async fn send(from: &mut Conn, to: &Account, n: u8, category: Category, template_id: &str) -> Body {
    from.request(client_frame::Body::Send(wire::Send {
        message_id: vec![n; 16],
        recipient_account: to.id.to_vec(),
        client_timestamp_ms: 1,
        category: category as i32,
        template_id: template_id.into(),
        // Every business send must be franked; a customer's may be.
        franking_tag: vec![0xF7; 32],
        devices: to
            .device_ids()
            .into_iter()
            .map(|device_id| wire::DeviceCiphertext {
                device_id,
                ciphertext: vec![0xAB; 48],
            })
            .collect(),
        ..Default::default()
    }))
    .await
}

fn accepted(reply: &Body) -> u64 {
    match reply {
        Body::Accepted(a) => a.accept_id,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// The ack `customer`'s `device` sends for `envelope`: signed when billed.
fn ack(
    customer: &Account,
    device: u32,
    envelope: &wire::Envelope,
    signed: bool,
) -> client_frame::Body {
    let signed_at_ms = 1_800_000_000_000;
    let signature = if signed {
        let fields = DeliveryFields {
            accept_id: envelope.accept_id,
            message_id: envelope.message_id.as_slice().try_into().expect("16 bytes"),
            business: AccountId::from_bytes(&envelope.sender_account).expect("sender"),
            customer: customer.id,
            customer_device: device,
            franking_commitment: envelope.franking_tag.clone(),
            time_ms: signed_at_ms,
        };
        sign_delivery(customer.device(device), &fields).to_vec()
    } else {
        Vec::new()
    };
    client_frame::Body::DeliveryAck(wire::DeliveryAck {
        accept_id: envelope.accept_id,
        delivery_signature: signature,
        signed_at_ms,
        ..Default::default()
    })
}

/// Receive the next envelope on `c` (it must be `accept_id`) and ack it.
async fn receive_and_ack(
    c: &mut Conn,
    customer: &Account,
    device: u32,
    accept_id: u64,
    signed: bool,
) -> wire::Envelope {
    let envelope = c.envelope().await;
    assert_eq!(envelope.accept_id, accept_id);
    let reply = c.request(ack(customer, device, &envelope, signed)).await;
    assert!(matches!(reply, Body::Ok(_)), "ack: {reply:?}");
    envelope
}

async fn metric(http: SocketAddr, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.expect("http");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect("read");
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().expect("value"))
}

#[tokio::test]
async fn a_scripted_day_bills_what_a_hand_computation_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let business = Account::new(1);
    let (alice, bob) = (Account::new(2), Account::new(1));

    // 09:00, clock unmoved.
    let relay = spawn(dir.path(), 0, None);
    let mut b = login(relay.addr, &business, 1, Some(wire::AccountKind::Business)).await;
    let mut a1 = login(relay.addr, &alice, 1, Some(wire::AccountKind::Customer)).await;
    let mut c = login(relay.addr, &bob, 1, Some(wire::AccountKind::Customer)).await;
    let utility = approved(
        &mut b,
        &business,
        &relay,
        dir.path(),
        TemplateCategory::Utility,
    )
    .await;
    let authentication = approved(
        &mut b,
        &business,
        &relay,
        dir.path(),
        TemplateCategory::Authentication,
    )
    .await;
    let marketing = approved(
        &mut b,
        &business,
        &relay,
        dir.path(),
        TemplateCategory::Marketing,
    )
    .await;
    consent(
        &mut a1,
        &alice,
        &business,
        ConsentCategories::UTILITY.union(ConsentCategories::MARKETING),
    )
    .await;
    consent(
        &mut c,
        &bob,
        &business,
        ConsentCategories::UTILITY.union(ConsentCategories::AUTHENTICATION),
    )
    .await;

    // Alice writes: her window opens.
    accepted(&send(&mut a1, &business, 1, Category::Conversation, "").await);
    // A free-form reply (free), a utility template inside the window
    // (free) and a marketing one (billed inside too).
    let service = accepted(&send(&mut b, &alice, 2, Category::Service, "").await);
    let inside_utility = accepted(&send(&mut b, &alice, 3, Category::Utility, &utility).await);
    let inside_marketing =
        accepted(&send(&mut b, &alice, 4, Category::Marketing, &marketing).await);
    // Bob never wrote: a utility template outside the window, retried.
    let outside_utility = accepted(&send(&mut b, &bob, 5, Category::Utility, &utility).await);
    assert_eq!(
        accepted(&send(&mut b, &bob, 5, Category::Utility, &utility).await),
        outside_utility,
        "a retry is the same send"
    );
    let code = accepted(&send(&mut b, &bob, 6, Category::Authentication, &authentication).await);

    // Alice's first device acks all three; her second device acks the two
    // billed ones too; a duplicate ack changes nothing.
    receive_and_ack(&mut a1, &alice, 1, service, false).await;
    let m3 = receive_and_ack(&mut a1, &alice, 1, inside_utility, true).await;
    receive_and_ack(&mut a1, &alice, 1, inside_marketing, true).await;
    assert!(matches!(
        a1.request(ack(&alice, 1, &m3, true)).await,
        Body::Ok(_)
    ));
    let mut a2 = login(relay.addr, &alice, 2, None).await;
    receive_and_ack(&mut a2, &alice, 2, service, false).await;
    receive_and_ack(&mut a2, &alice, 2, inside_utility, true).await;
    receive_and_ack(&mut a2, &alice, 2, inside_marketing, true).await;
    // Bob acks the utility template; the authentication one waits.
    receive_and_ack(&mut c, &bob, 1, outside_utility, true).await;
    for (accept_id, device) in [
        (inside_utility, 1),
        (inside_marketing, 1),
        (inside_utility, 2),
        (inside_marketing, 2),
    ] {
        b.delivered(accept_id, device).await;
    }
    b.delivered(outside_utility, 1).await;
    relay.kill();

    // 09:30: Bob's signed ack of the code kills the relay before anything
    // of it is written.
    let relay = spawn(dir.path(), HOUR_MS / 2, Some("ack-before-ledger"));
    let mut c = login(relay.addr, &bob, 1, None).await;
    let envelope = c.envelope().await;
    assert_eq!(envelope.accept_id, code);
    assert!(
        c.try_request(ack(&bob, 1, &envelope, true)).await.is_none(),
        "the relay aborted"
    );
    let mut relay = relay;
    assert!(!relay.child.wait().expect("wait").success());
    drop(relay);

    // Restarted: the code is delivered again and acked, billed once.
    let relay = spawn(dir.path(), HOUR_MS / 2, None);
    let mut b = login(relay.addr, &business, 1, None).await;
    let mut c = login(relay.addr, &bob, 1, None).await;
    receive_and_ack(&mut c, &bob, 1, code, true).await;
    b.delivered(code, 1).await;
    relay.kill();

    // The next day, 10:00 (+25 h): Alice's window is closed.
    let relay = spawn(dir.path(), 25 * HOUR_MS, None);
    let mut b = login(relay.addr, &business, 1, None).await;
    let outside_alice = accepted(&send(&mut b, &alice, 7, Category::Utility, &utility).await);
    // No marketing consent from Bob: refused, not billed.
    let refused = send(&mut b, &bob, 8, Category::Marketing, &marketing).await;
    assert!(matches!(refused, Body::Error(_)), "{refused:?}");
    // A utility template Bob never picks up: it expires in an hour.
    accepted(&send(&mut b, &bob, 9, Category::Utility, &utility).await);
    let mut a2 = login(relay.addr, &alice, 2, None).await;
    receive_and_ack(&mut a2, &alice, 2, outside_alice, true).await;
    let mut a1 = login(relay.addr, &alice, 1, None).await;
    receive_and_ack(&mut a1, &alice, 1, outside_alice, true).await;
    b.delivered(outside_alice, 2).await;
    b.delivered(outside_alice, 1).await;
    relay.kill();

    // +28 h: Bob's last template expired undelivered.
    let relay = spawn(dir.path(), 28 * HOUR_MS, None);
    tokio::time::timeout(common::TIMEOUT, async {
        while metric(relay.http, "comptoir_envelopes_expired_total").await < 1.0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the undelivered template expires");

    // By hand, default rate card (millionths of GBP):
    //   utility inside the window (Alice, msg 3)       0
    //   marketing inside the window (Alice, msg 4) 90000
    //   utility outside (Bob, msg 5, retried once)   5000
    //   authentication outside (Bob, msg 6, crash)  30000
    //   utility outside (Alice, msg 7, two devices)  5000
    //   service reply (msg 2): not billed; marketing to Bob (msg 8):
    //   refused; utility to Bob (msg 9): expired, never delivered.
    let hand = [
        ("utility", 3, 10_000),
        ("authentication", 1, 30_000),
        ("marketing", 1, 90_000),
    ];
    let total: u64 = hand.iter().map(|(_, _, m)| m).sum();
    assert_eq!(total, 130_000);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let range = [
        "--from".to_string(),
        (now - 3_600_000).to_string(),
        "--to".to_string(),
        (now + 30 * HOUR_MS as u64).to_string(),
    ];
    let export = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["admin", "--admin", &relay.admin.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["bills", "export", "--business", &business.id.to_string()])
            .args(&range)
            .args(["--format", format])
            .output()
            .expect("relay admin bills export");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let json: serde_json::Value = serde_json::from_str(&export("json")).expect("json");
    assert_eq!(json["total_lines"], 5);
    assert_eq!(json["total_millionths"], total);
    assert_eq!(json["total_rounded"], "0.13");
    for (i, (category, lines, millionths)) in hand.iter().enumerate() {
        assert_eq!(json["totals"][i]["category"], *category);
        assert_eq!(json["totals"][i]["lines"], *lines);
        assert_eq!(json["totals"][i]["total_millionths"], *millionths);
    }
    let billed: Vec<(u64, bool, u64)> = json["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["accept_id"].as_u64().expect("id"),
                l["inside_window"].as_bool().expect("bool"),
                l["price_millionths"].as_u64().expect("price"),
            )
        })
        .collect();
    assert_eq!(
        billed,
        [
            (inside_utility, true, 0),
            (inside_marketing, true, 90_000),
            (outside_utility, false, 5_000),
            (code, false, 30_000),
            (outside_alice, false, 5_000),
        ]
    );
    let csv = export("csv");
    assert!(csv.contains("\nutility,3,10000,0.010000 GBP\n"), "{csv}");
    assert!(
        csv.contains("\nauthentication,1,30000,0.030000 GBP\n"),
        "{csv}"
    );
    assert!(csv.contains("\nmarketing,1,90000,0.090000 GBP\n"), "{csv}");
    assert!(
        csv.contains("\nall,5,130000,0.130000 GBP (due: 0.13 GBP)\n"),
        "{csv}"
    );

    // The business's own bill checks: chain, operator signatures, the
    // customers' device signatures, prices on the rate card.
    let mut b = login(relay.addr, &business, 1, None).await;
    let Body::Bill(bill) = b
        .request(client_frame::Body::GetBill(wire::GetBill::default()))
        .await
    else {
        panic!("bill")
    };
    let lines: Vec<_> = bill
        .lines
        .iter()
        .map(|l| comptoir_protocol::BillLine::from_wire(l).expect("line"))
        .collect();
    let operator = {
        let text = admin(&relay, dir.path())
            .operator_key()
            .await
            .expect("key")
            .operator_key;
        comptoir_protocol::OperatorKey::from_bytes(&hex::decode(text).expect("hex")).expect("key")
    };
    let key_of = |customer: &AccountId, device: u32| -> Option<IdentityKey> {
        [&alice, &bob]
            .into_iter()
            .find(|a| a.id == *customer)
            .map(|a| *a.device(device).public())
    };
    let totals = comptoir_protocol::verify_bill(
        &business.id,
        &lines,
        bill.head.as_ref().expect("head"),
        &bill.periodic_heads,
        bill.rate_card.iter().chain(&bill.earlier_rate_cards),
        &operator,
        key_of,
    )
    .expect("the bill checks");
    assert_eq!(totals.total_millionths, total);
    assert_eq!(
        totals.per_category,
        [(3, 10_000), (1, 30_000), (1, 90_000), (0, 0)]
    );
    relay.kill();
}
