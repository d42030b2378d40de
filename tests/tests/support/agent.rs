//! The business agent daemon in tests: a business device made with
//! `agent init`'s library call, verified and with an approved utility
//! template, served in process on 127.0.0.1:0 under a manual clock; a
//! real HTTP webhook receiver that records each delivery and answers with
//! the status the test sets; and an API caller.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use comptoir_agent::clock::ManualClock;
use comptoir_agent::{Config, Running};
use comptoir_client::Client;
use comptoir_protocol::AccountId;
use comptoir_protocol::business::{BusinessProfile, Vertical};
use comptoir_protocol::proto::wire::Category;
use comptoir_protocol::template::{
    Button, Placeholder, PlaceholderKind, Template, TemplateCategory,
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Notify;

use super::client::{FAST_KDF, url};
use super::templates::{id_for, support_template};
use super::{TIMEOUT, TestRelay};

pub const PASSPHRASE: &str = "agent store passphrase";
pub const SECRET: &str = "webhook-secret-for-tests";
/// A key with every scope, and one that may only read.
pub const FULL_KEY: &str = "ck_full_key_for_the_tests_0123456789abcdef";
pub const READ_KEY: &str = "ck_read_only_key_for_the_tests_0123456789";

/// One delivery as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Hit {
    pub event_id: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub answered: u16,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

/// A real HTTP webhook receiver on 127.0.0.1:0.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub hits: Arc<Mutex<Vec<Hit>>>,
    pub answer: Arc<AtomicU16>,
    pub arrived: Arc<Notify>,
}

async fn record(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let answered = r.answer.load(Ordering::SeqCst);
    r.hits.lock().expect("hits").push(Hit {
        event_id: header("x-comptoir-event-id"),
        signature: header("x-comptoir-signature-256"),
        body: body.to_vec(),
        answered,
    });
    r.arrived.notify_waiters();
    StatusCode::from_u16(answered).expect("status")
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let receiver = Self {
            addr: listener.local_addr().expect("addr"),
            hits: Arc::default(),
            answer: Arc::new(AtomicU16::new(200)),
            arrived: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }

    /// Wait (bounded) until a hit `pick` accepts has arrived.
    pub async fn wait(&self, what: &str, pick: impl Fn(&Hit) -> bool) -> Hit {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let arrived = self.arrived.notified();
            if let Some(hit) = self.hits().into_iter().find(|h| pick(h)) {
                return hit;
            }
            assert!(
                tokio::time::timeout_at(deadline, arrived).await.is_ok(),
                "timed out waiting for the webhook {what}; got {:?}",
                self.hits().iter().map(|h| &h.event_id).collect::<Vec<_>>()
            );
        }
    }
}

/// Check a delivery's signature as a receiver does, independently of the
/// daemon's code: HMAC-SHA256 of "<t>." + body under the secret.
pub fn signature_checks(hit: &Hit, secret: &str) -> bool {
    let mut t = None;
    let mut sig = None;
    for part in hit.signature.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_owned()),
            Some(("sha256", v)) => sig = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(sig)) = (t, sig) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&hit.body);
    mac.verify_slice(&sig).is_ok()
}

/// The daemon's configuration for tests.
pub fn config(relay: &TestRelay, data_dir: &Path, receiver: &Receiver) -> Config {
    config_with(relay, data_dir, receiver, "")
}

/// [`config`] with more TOML after it.
pub fn config_with(relay: &TestRelay, data_dir: &Path, receiver: &Receiver, extra: &str) -> Config {
    let text = config_toml(relay, data_dir, receiver, "", extra);
    Config::parse(&text, &|_| None).expect("test config")
}

/// The TOML of [`config_with`], with `top` among the top-level settings
/// (a daemon run as a process reads it from a file).
pub fn config_toml(
    relay: &TestRelay,
    data_dir: &Path,
    receiver: &Receiver,
    top: &str,
    extra: &str,
) -> String {
    format!(
        r#"
{top}
data_dir = {data_dir:?}
relay = "{relay}"
listen = "127.0.0.1:0"
consent_poll_seconds = 0.1

[[api_keys]]
name = "backend"
sha256 = "{full}"
scopes = ["messages:send", "messages:read", "consent:request", "billing:read"]

[[api_keys]]
name = "reporting"
sha256 = "{read}"
scopes = ["messages:read"]

[[webhooks]]
url = "{hook}"
secret = "{SECRET}"
{extra}
"#,
        data_dir = data_dir.display().to_string(),
        relay = url(relay),
        full = hex::encode(comptoir_agent::keys::hash(FULL_KEY)),
        read = hex::encode(comptoir_agent::keys::hash(READ_KEY)),
        hook = receiver.url(),
    )
}

/// A utility template with two quick-reply buttons.
pub fn slot_template(business: AccountId) -> Template {
    Template {
        business,
        name: "delivery_slot".into(),
        language: "en_GB".into(),
        category: TemplateCategory::Utility,
        header: None,
        body: "Order {{order}}: when should we deliver?".into(),
        footer: None,
        placeholders: vec![Placeholder {
            name: "order".into(),
            kind: PlaceholderKind::Text,
        }],
        buttons: vec![
            Button::QuickReply {
                text: "Morning".into(),
            },
            Button::QuickReply {
                text: "Evening".into(),
            },
        ],
    }
}

/// `agent init`, then (through the device store, as `comptoir
/// --data-dir` would) a published profile the operator verifies and the
/// utility support template the operator approves.
pub async fn init_business(relay: &TestRelay, config: &Config) -> AccountId {
    let business = comptoir_agent::device::init_new(config, PASSPHRASE, FAST_KDF)
        .await
        .expect("agent init");
    let mut client = Client::open(&config.device_dir(), PASSPHRASE).expect("open");
    client.connect(&url(relay)).await.expect("connect");
    client
        .publish_profile(&BusinessProfile {
            account: business,
            display_name: "Acme Parcels".into(),
            about: String::new(),
            address: String::new(),
            website: None,
            email: None,
            opening_hours: String::new(),
            vertical: Vertical::Retail,
        })
        .await
        .expect("publish");
    client
        .submit_template(&support_template(business, Category::Utility))
        .await
        .expect("submit");
    let (slot, _) = client
        .submit_template(&slot_template(business))
        .await
        .expect("submit");
    client.close().await.expect("close");
    let admin = relay.admin_client();
    admin
        .verify_business(&business.to_string(), None)
        .await
        .expect("verify");
    admin
        .approve_template(&id_for(business, Category::Utility))
        .await
        .expect("approve");
    admin
        .approve_template(&slot.to_hex())
        .await
        .expect("approve");
    business
}

/// Start the daemon in process.
pub async fn serve(config: &Config, clock: Arc<ManualClock>) -> Running {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .expect("bind");
    comptoir_agent::start(config, PASSPHRASE, listener, clock)
        .await
        .expect("agent serve")
}

/// Call the API: status and JSON body.
pub async fn call(
    agent: &Running,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(key) = key {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    call_raw(agent, method, path, &headers, body).await
}

/// The backend asks, through the API, for utility consent from the
/// customer with `phone` for `purpose`: the request's reference.
pub async fn request_utility_consent(agent: &Running, phone: &str, purpose: &str) -> String {
    let (status, body) = call(
        agent,
        "POST",
        "/v1/consent_requests",
        Some(FULL_KEY),
        Some(serde_json::json!({
            "phone_number": phone,
            "categories": ["utility"],
            "purpose": purpose,
        })),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["reference"].as_str().expect("reference").to_owned()
}

/// Call the API with a raw body.
pub async fn call_raw(
    agent: &Running,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", agent.addr);
    let response = comptoir_agent::http_client::request(method, &url, headers, body)
        .await
        .expect("API answers");
    let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, json)
}

/// A data directory for the daemon under `root`.
pub fn data_dir(root: &Path) -> PathBuf {
    root.join("agent")
}

/// A relay, a webhook receiver, and a business set up for a daemon (not
/// yet serving).
pub struct Fixture {
    pub relay: TestRelay,
    pub root: tempfile::TempDir,
    pub receiver: Receiver,
    pub config: comptoir_agent::config::Config,
    pub business: comptoir_protocol::AccountId,
}

/// [`fixture_on`] a fresh relay with the default configuration.
pub async fn fixture() -> Fixture {
    fixture_on(super::start_relay().await).await
}

/// A webhook receiver and a business set up on `relay`.
pub async fn fixture_on(relay: TestRelay) -> Fixture {
    let root = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start().await;
    let config = config(&relay, &data_dir(root.path()), &receiver);
    let business = init_business(&relay, &config).await;
    Fixture {
        relay,
        root,
        receiver,
        config,
        business,
    }
}

/// A registered customer with its store under `root/name`.
pub async fn customer(relay: &TestRelay, root: &std::path::Path, name: &str) -> Client {
    super::client::registered_as(
        relay,
        &root.join(name),
        "pw-long-enough",
        comptoir_protocol::proto::wire::AccountKind::Customer,
    )
    .await
}

/// A registered customer that verified `phone` with the relay.
pub async fn customer_with_number(relay: &TestRelay, dir: &std::path::Path, phone: &str) -> Client {
    let mut client = super::client::registered_as(
        relay,
        dir,
        "pw-long-enough",
        comptoir_protocol::proto::wire::AccountKind::Customer,
    )
    .await;
    client.request_phone_code(phone).await.expect("code");
    let code = relay.codes.last_for(phone).expect("code sent");
    client
        .verify_phone(phone, &code, false)
        .await
        .expect("verify");
    client
}

/// The real `agent` binary, built (once per run of this test binary) by
/// the cargo running the tests, with the test-only crash points
/// (`comptoir_agent::fault`): `cargo test` builds only the tested
/// package's own binaries, and this one belongs to comptoir-agent.
pub fn agent_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            let mut args = vec![
                "build",
                "--quiet",
                "--package",
                "comptoir-agent",
                "--bin",
                "agent",
                "--features",
                "fault-injection",
                "--message-format=json",
            ];
            if !cfg!(debug_assertions) {
                args.push("--release");
            }
            let out = std::process::Command::new(env!("CARGO"))
                .args(args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("run cargo");
            assert!(
                out.status.success(),
                "cargo could not build the agent binary"
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "agent")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo names the agent binary")
        })
        .clone()
}

/// `agent --config CONFIG_FILE ARGS…` ([`agent_binary`]) with the tests'
/// passphrase and none of the daemon's other environment variables.
pub async fn agent_command(config_file: &Path, args: &[&str]) -> tokio::process::Command {
    let binary = tokio::task::spawn_blocking(agent_binary)
        .await
        .expect("the agent binary");
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("--config")
        .arg(config_file)
        .args(args)
        .env_remove(comptoir_agent::config::ENV_CONFIG)
        .env_remove(comptoir_agent::config::ENV_RELAY)
        .env_remove(comptoir_agent::config::ENV_LISTEN)
        .env_remove(comptoir_agent::config::ENV_DATA_DIR)
        .env_remove(comptoir_agent::config::ENV_OPERATOR_KEY)
        .env_remove(comptoir_agent::config::ENV_PASSPHRASE_FILE)
        .env(comptoir_agent::config::ENV_PASSPHRASE, PASSPHRASE)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    command
}

/// Run `agent --config CONFIG_FILE ARGS…` ([`agent_command`]) to its end;
/// it must succeed: its standard output.
pub async fn agent_ok(config_file: &Path, args: &[&str]) -> String {
    let out = agent_command(config_file, args)
        .await
        .output()
        .await
        .expect("run agent");
    assert!(
        out.status.success(),
        "agent {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
