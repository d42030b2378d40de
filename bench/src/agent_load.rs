//! The mode behind `relay-load agent`: the business agent daemon under
//! load (issue 15's bar). One daemon (`comptoir_agent::start`, in this
//! process, over real HTTP on 127.0.0.1) of a business that `customers`
//! real client-library customers wrote to once (so the 24-hour window is
//! open with each); then:
//!
//! 1. **API**: `sends` text messages posted to `POST /v1/messages` by
//!    `concurrency` tasks, spread over the customers (each call a fresh
//!    HTTP/1.1 connection, as the daemon's own small client makes them):
//!    sends per second and the latency of each call, to `200`.
//! 2. **Webhooks**: each accepted send makes a `sent` status event, posted
//!    from the durable outbox to a local receiver answering `200`:
//!    deliveries per second (from the first API call to the last delivery)
//!    and each event's delay from the start of its API call to its
//!    delivery (the daemon queues the event before it answers the call).
//! 3. **Peer**: the same sends, with the daemon stopped, made directly
//!    through the client library on the daemon's own device store (its
//!    `Sender` handles, `concurrency` tasks): what the daemon's HTTP layer,
//!    database and outbox add.
//!
//! Customers stay offline after writing (the relay queues the replies), so
//! the only status is `sent`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comptoir_agent::config::Config;
use comptoir_agent::{SystemClock, http_client};
use comptoir_client::{Client, ClientError, KdfParams};
use comptoir_protocol::AccountId;
use tokio::sync::Notify;

/// Cheap Argon2id costs: stores are opened outside the timed parts.
const BENCH_KDF: KdfParams = KdfParams {
    m_cost: 256,
    t_cost: 1,
    p_cost: 1,
};
const PASSPHRASE: &str = "bench passphrase";
const API_KEY: &str = "ck_agent_load_benchmark_key_0123456789abcdef";
const WEBHOOK_SECRET: &str = "agent-load-webhook-secret";
/// Customers registering and writing at once during setup.
const SETUP_PARALLEL: usize = 8;

/// One run's shape.
#[derive(Clone, Copy, Debug)]
pub struct AgentLoadOptions {
    /// Customers who wrote to the business (send i goes to customer i mod
    /// customers).
    pub customers: usize,
    /// Sends in each phase.
    pub sends: usize,
    /// Tasks sending at once.
    pub concurrency: usize,
    /// Text bytes per message.
    pub size: usize,
    /// Longest wait for one send, or for the webhooks to arrive.
    pub timeout: Duration,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct AgentLoadReport {
    /// The API phase.
    pub api: Phase,
    /// The webhook deliveries of the API phase's `sent` events.
    pub webhooks: Phase,
    /// The same sends through the client library, no daemon.
    pub library: Phase,
    /// Setup: customers registered and written to the business, until the
    /// daemon had posted each one's message webhook.
    pub setup: Duration,
}

/// One phase: how many, how long, and latency percentiles.
#[derive(Clone, Debug)]
pub struct Phase {
    /// Operations completed.
    pub count: usize,
    /// From the first start to the last completion.
    pub elapsed: Duration,
    /// Operations per second.
    pub per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl Phase {
    fn of(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        Self {
            count: latencies.len(),
            elapsed,
            per_sec: latencies.len() as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentLoadError {
    /// The client library failed.
    #[error("client: {0}")]
    Client(#[from] ClientError),
    /// The daemon did not start or answered an error.
    #[error("agent: {0}")]
    Agent(String),
    /// Something did not finish in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// Anything else (temp dirs, sockets, tasks).
    #[error("{0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> AgentLoadError {
    AgentLoadError::Other(e.to_string())
}

/// The webhook receiver: when each event id arrived.
#[derive(Clone, Default)]
struct Arrivals {
    at: Arc<Mutex<HashMap<String, Instant>>>,
    changed: Arc<Notify>,
}

impl Arrivals {
    fn count(&self, prefix: &str) -> usize {
        self.at
            .lock()
            .map(|m| m.keys().filter(|k| k.starts_with(prefix)).count())
            .unwrap_or(0)
    }

    async fn wait_for(
        &self,
        prefix: &str,
        count: usize,
        timeout: Duration,
        what: &'static str,
    ) -> Result<(), AgentLoadError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.count(prefix) >= count {
                return Ok(());
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .map_err(|_| AgentLoadError::Timeout(what))?;
        }
    }
}

async fn start_receiver() -> Result<(SocketAddr, Arrivals), AgentLoadError> {
    use axum::http::HeaderMap;
    let arrivals = Arrivals::default();
    let state = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let state = state.clone();
            async move {
                let now = Instant::now();
                if let Some(id) = headers
                    .get("x-comptoir-event-id")
                    .and_then(|v| v.to_str().ok())
                    && let Ok(mut map) = state.at.lock()
                {
                    map.entry(id.to_owned()).or_insert(now);
                }
                state.changed.notify_waiters();
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(other)?;
    let addr = listener.local_addr().map_err(other)?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, arrivals))
}

/// Run the three phases against the relay at `relay` (`ws://…`).
pub async fn run(
    relay: &str,
    options: AgentLoadOptions,
) -> Result<AgentLoadReport, AgentLoadError> {
    let root = tempfile::tempdir().map_err(other)?;
    let (hook, arrivals) = start_receiver().await?;
    let config = Config::parse(
        &format!(
            "data_dir = {data:?}\nrelay = {relay:?}\nlisten = \"127.0.0.1:0\"\n\
             consent_poll_seconds = 3600\n\n\
             [[api_keys]]\nname = \"bench\"\nsha256 = \"{key}\"\nscopes = [\"messages:send\"]\n\n\
             [[webhooks]]\nurl = \"http://{hook}/hook\"\nsecret = \"{WEBHOOK_SECRET}\"\n",
            data = root.path().join("agent").display().to_string(),
            key = hex::encode(comptoir_agent::keys::hash(API_KEY)),
        ),
        &|_| None,
    )
    .map_err(|e| AgentLoadError::Agent(e.to_string()))?;
    let business = comptoir_agent::device::init_new(&config, PASSPHRASE, BENCH_KDF)
        .await
        .map_err(|e| AgentLoadError::Agent(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(other)?;
    let agent = comptoir_agent::start(&config, PASSPHRASE, listener, Arc::new(SystemClock))
        .await
        .map_err(|e| AgentLoadError::Agent(e.to_string()))?;

    // Setup: every customer writes once (the window opens), then leaves.
    let started = Instant::now();
    let customers = setup_customers(relay, business, options.customers, options.timeout).await?;
    arrivals
        .wait_for(
            "message:",
            customers.len(),
            options.timeout,
            "the customers' message webhooks",
        )
        .await?;
    let setup = started.elapsed();

    // 1 and 2: the API, and the webhooks it causes.
    let url = format!("http://{}/v1/messages", agent.addr);
    let text = "x".repeat(options.size.max(1));
    let tasks = options.concurrency.max(1);
    let start = Instant::now();
    let mut running = Vec::new();
    for task in 0..tasks {
        let (url, text, customers) = (url.clone(), text.clone(), customers.clone());
        let timeout = options.timeout;
        running.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut i = task;
            while i < options.sends {
                let body = serde_json::json!({
                    "to": customers[i % customers.len()].to_string(),
                    "type": "text",
                    "text": { "body": text },
                })
                .to_string()
                .into_bytes();
                let headers = [
                    ("content-type", "application/json".to_owned()),
                    ("authorization", format!("Bearer {API_KEY}")),
                ];
                let begun = Instant::now();
                let response = tokio::time::timeout(
                    timeout,
                    http_client::request("POST", &url, &headers, body),
                )
                .await
                .map_err(|_| AgentLoadError::Timeout("an API call"))?
                .map_err(|e| AgentLoadError::Agent(e.to_string()))?;
                let answered = Instant::now();
                let reply: serde_json::Value =
                    serde_json::from_slice(&response.body).unwrap_or_default();
                if response.status != 200 {
                    return Err(AgentLoadError::Agent(format!(
                        "the API answered {}: {reply}",
                        response.status
                    )));
                }
                let id = reply["messages"][0]["id"]
                    .as_str()
                    .ok_or_else(|| AgentLoadError::Agent(format!("no message id in {reply}")))?
                    .to_owned();
                done.push((id, begun, answered));
                i += tasks;
            }
            Ok::<_, AgentLoadError>(done)
        }));
    }
    let mut sent = Vec::new();
    for task in running {
        sent.extend(task.await.map_err(other)??);
    }
    let api_elapsed = start.elapsed();
    arrivals
        .wait_for("status:", sent.len(), options.timeout, "the sent webhooks")
        .await?;
    let (delays, last) = {
        let map = arrivals.at.lock().map_err(other)?;
        let mut delays = Vec::new();
        let mut last = start;
        for (id, begun, _) in &sent {
            let at = map
                .get(&format!("status:{id}:sent"))
                .copied()
                .ok_or(AgentLoadError::Timeout("a sent webhook"))?;
            last = last.max(at);
            delays.push(at.saturating_duration_since(*begun));
        }
        (delays, last)
    };
    let api = Phase::of(
        sent.iter()
            .map(|(_, begun, answered)| *answered - *begun)
            .collect(),
        api_elapsed,
    );
    let webhooks = Phase::of(delays, last - start);
    agent.stop().await;

    // 3: the same sends through the library on the daemon's own store.
    let mut client = Client::open(&config.device_dir(), PASSPHRASE)?;
    client.connect(relay).await?;
    let sender = client.sender();
    let start = Instant::now();
    let mut running = Vec::new();
    for task in 0..tasks {
        let (sender, text, customers) = (sender.clone(), text.clone(), customers.clone());
        let timeout = options.timeout;
        running.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = task;
            while i < options.sends {
                let begun = Instant::now();
                tokio::time::timeout(
                    timeout,
                    sender.send_text(customers[i % customers.len()], &text),
                )
                .await
                .map_err(|_| AgentLoadError::Timeout("a library send"))??;
                latencies.push(begun.elapsed());
                i += tasks;
            }
            Ok::<_, AgentLoadError>(latencies)
        }));
    }
    drop(sender);
    let mut latencies = Vec::new();
    for task in running {
        latencies.extend(task.await.map_err(other)??);
    }
    let library = Phase::of(latencies, start.elapsed());
    client.close().await?;
    Ok(AgentLoadReport {
        api,
        webhooks,
        library,
        setup,
    })
}

/// Register `count` customers, each writing once to `business` (through
/// its own store and connection, a few at a time), each within `timeout`;
/// their account ids.
async fn setup_customers(
    relay: &str,
    business: AccountId,
    count: usize,
    timeout: Duration,
) -> Result<Vec<AccountId>, AgentLoadError> {
    let mut ids = Vec::with_capacity(count);
    let mut next = 0;
    while next < count {
        let batch = (next..count.min(next + SETUP_PARALLEL)).map(|i| {
            let relay = relay.to_owned();
            tokio::spawn(tokio::time::timeout(timeout, async move {
                let dir = tempfile::tempdir().map_err(other)?;
                let mut client = Client::create_with_params(dir.path(), PASSPHRASE, BENCH_KDF)?;
                client.register(&relay).await?;
                client
                    .send_text(business, &format!("hello from customer {i}"))
                    .await?;
                let id = client.account_id();
                client.close().await?;
                Ok::<_, AgentLoadError>(id)
            }))
        });
        let batch: Vec<_> = batch.collect();
        next += batch.len();
        for task in batch {
            ids.push(task.await.map_err(other)?.map_err(|_| {
                AgentLoadError::Timeout("a customer's registration and first message")
            })??);
        }
    }
    Ok(ids)
}
