//! The accept loop (mini-redis shape): a semaphore caps connections, accept
//! errors back off, each connection runs in its own task holding a
//! [`Shutdown`] and a completion sender; on shutdown the loop stops
//! accepting, connections close with a close code, the server waits for
//! them and flushes storage.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio_rustls::TlsAcceptor;

use crate::clock::Clock;
use crate::config::Config;
use crate::connection::{Connection, Corked, Stream, close, websocket_config};
use crate::error::RelayError;
use crate::limits::AddressSlot;
use crate::metrics::Metrics;
use crate::operator::{OperatorFileError, load_or_create_admin_token, load_or_create_operator_key};
use crate::phone::{CodeSender, LogCodeSender};
use crate::session::{EncodeFrame, Session};
use crate::shutdown::Shutdown;
use crate::state::Relay;
use crate::storage::{Backend, SledStore, StorageError};
use crate::tls::TlsError;

/// How long shutdown waits for connections to finish before flushing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listener could not be bound, or the data directory created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The store could not be opened or flushed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The operator key or admin token file is unusable.
    #[error(transparent)]
    Operator(#[from] OperatorFileError),
    /// The rate card in the configuration is refused.
    #[error("rate card: {0}; see docs/OPERATIONS.md, \"Rate card\"")]
    RateCard(String),
    /// The `[tiers]` table in the configuration is refused.
    #[error("{0}; see docs/OPERATIONS.md, \"Quality rating and messaging tiers\"")]
    Tiers(String),
}

/// Pluggable parts of a relay, beyond the configuration.
pub struct Services {
    /// Listener for `/healthz` and `/metrics`, if any.
    pub http_listener: Option<TcpListener>,
    /// Listener for the operator's admin API, if any.
    pub admin_listener: Option<TcpListener>,
    /// TLS acceptor for wss://, if any.
    pub tls: Option<TlsAcceptor>,
    /// Delivers phone verification codes.
    pub code_sender: Arc<dyn CodeSender>,
    /// Where metrics are recorded.
    pub metrics: Arc<Metrics>,
    /// The clock of the time rules (raised at start to the mark the
    /// backend persisted).
    pub clock: Arc<Clock>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("http_listener", &self.http_listener)
            .field("tls", &self.tls.is_some())
            .field("code_sender", &self.code_sender)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Bind the HTTP listener and load TLS as the configuration says; codes
    /// go to the log.
    pub async fn from_config(config: &Config) -> Result<Self, ServerError> {
        let http_listener = match config.http_listen {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServerError::Io {
                            what: format!("cannot listen for /metrics on {addr} (set http_listen)"),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let admin_listener = match config.admin_listen {
            Some(addr) => {
                if !addr.ip().is_loopback() {
                    tracing::warn!(
                        %addr,
                        "the admin API listens beyond loopback: its bearer token travels in clear; \
                         keep this address on a private network"
                    );
                }
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServerError::Io {
                            what: format!(
                                "cannot listen for the admin API on {addr} (set admin_listen)"
                            ),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::acceptor(&files.cert, &files.key)?),
            None => None,
        };
        Ok(Self {
            http_listener,
            admin_listener,
            tls,
            code_sender: Arc::new(LogCodeSender),
            metrics: Arc::new(Metrics::default()),
            clock: Arc::default(),
        })
    }
}

/// Run a relay on `listener` with the sled store in `config.data_dir` until
/// `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future,
) -> Result<(), ServerError> {
    let services = Services::from_config(&config).await?;
    run_with(listener, config, services, shutdown).await
}

/// [`run`] with explicit services (tests, embedding).
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    services: Services,
    shutdown: impl Future,
) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::Io {
        what: format!("cannot create data directory {}", config.data_dir.display()),
        source,
    })?;
    let log = crate::storage::mail_log::LogOptions {
        segment_bytes: config.mail_log.segment_bytes,
        checkpoint_min_bytes: config.mail_log.checkpoint_min_bytes,
        reserve_bytes: config.mail_log.reserve_bytes,
        #[cfg(feature = "bench-unmetered")]
        ledger_in_memory_only: !config.appends_ledger(),
        ..Default::default()
    };
    let store = SledStore::open_with(
        &config.data_dir,
        config.cache_capacity_bytes,
        log,
        services.metrics.clone(),
    )?;
    run_with_storage(listener, config, services, store, shutdown).await
}

/// [`run_with`] on any [`Backend`].
pub async fn run_with_storage<S: Backend + std::fmt::Debug>(
    listener: TcpListener,
    config: Config,
    services: Services,
    store: S,
    shutdown: impl Future,
) -> Result<(), ServerError> {
    let Services {
        http_listener,
        admin_listener,
        tls,
        code_sender,
        metrics,
        clock,
    } = services;
    let rate_card = config.rates.card().map_err(ServerError::RateCard)?;
    config.tiers.check().map_err(ServerError::Tiers)?;
    // A wall clock stepped back while the relay was down does not take
    // the time rules back with it.
    clock.raise_to(store.clock_mark().await?);
    metrics
        .queue_depth
        .store(store.total_queued().await? as i64, Relaxed);
    let rate_cards = crate::billing::rate_card_history(&store, rate_card, clock.now_ms())
        .await
        .map_err(|e| match e {
            crate::billing::RateCardChangeError::Storage(e) => ServerError::Storage(e),
            other => ServerError::RateCard(other.to_string()),
        })?;
    let rate_card = match rate_cards.last() {
        Some(card) => card.clone(),
        None => return Err(ServerError::RateCard("no rate card was recorded".into())),
    };
    let last_signing_pass = crate::billing::last_signing_pass(&store, clock.now_ms()).await?;
    let operator = Arc::new(load_or_create_operator_key(&config.operator_key_path())?);
    tracing::info!(
        operator_key = %hex::encode(operator.public().to_bytes()),
        "operator key (clients pin it; back up its file)"
    );
    let franking = Arc::new(crate::franking::FrankingKeys::load_or_create(
        &config.data_dir.join(crate::franking::FRANKING_KEYS_FILE),
    )?);
    tracing::info!(
        key_id = franking.current().0,
        "franking key (back up its file)"
    );
    let mut config = config;
    if let Ok(listening) = listener.local_addr() {
        if listening.ip().is_unspecified() && config.public_origins.is_empty() {
            tracing::warn!(
                "listening on all addresses without public_origins: only devices on this \
                 machine can authenticate until public_origins names this relay as they dial it"
            );
        }
        config.public_origins = config.origins_for(listening, tls.is_some());
    }
    tracing::info!(origins = ?config.public_origins, "devices authenticate to these origins");
    let blobs =
        crate::blobs::BlobStore::open(&config.data_dir.join("blobs"), config.blobs.clone())?;
    let status_posts = crate::status_posts::StatusPosts::open(&config.data_dir.join("status"))?;
    let relay = Arc::new(Relay::new(
        store,
        config,
        metrics.clone(),
        code_sender,
        clock,
        operator.clone(),
        (rate_card, rate_cards),
        blobs,
        franking.clone(),
        status_posts,
    ));
    let http_address = http_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "none".to_owned(), |a| a.to_string());
    let http = http_listener.map(|l| tokio::spawn(crate::http::serve(l, metrics.clone())));
    let admin = match admin_listener {
        Some(listener) => {
            let token = load_or_create_admin_token(&relay.config.admin_token_path())?;
            let address = listener
                .local_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string());
            tracing::info!(admin = %address, "admin API listening (`relay admin --admin {address}`)");
            let state = Arc::new(crate::admin::AdminState {
                operator: operator.clone(),
                token,
                relay: relay.clone(),
            });
            Some(tokio::spawn(crate::admin::serve(listener, state)))
        }
        None => None,
    };
    let gc = tokio::spawn(collect_garbage(relay.clone()));
    let heads = tokio::spawn(crate::billing::sign_heads_periodically(
        relay.clone(),
        last_signing_pass,
        relay.clock.shifts(),
    ));
    let (notify_shutdown, _) = broadcast::channel(1);
    let (shutdown_complete_tx, mut shutdown_complete_rx) = mpsc::channel::<()>(1);
    tracing::info!(
        address = %listener.local_addr().map_or("?".into(), |a| a.to_string()),
        tls = tls.is_some(),
        data_dir = %relay.config.data_dir.display(),
        "relay listening"
    );
    // After the listening line: tools take the first `address=` they see.
    let limits = &relay.config.limits;
    tracing::info!(
        http = %http_address,
        message_ttl_ms = relay.config.message_ttl_ms,
        max_queue_per_device = limits.max_queue_per_device,
        max_connections = limits.max_connections,
        max_connections_per_address = limits.max_connections_per_address,
        account_rate_per_sec = limits.account_rate_per_sec,
        address_rate_per_sec = limits.address_rate_per_sec,
        auth_attempts = limits.auth_attempts,
        unauthenticated_account_ttl_ms = limits.unauthenticated_account_ttl_ms,
        require_phone_for_business = limits.require_phone_for_business,
        tier_limits = ?relay.config.tiers.limits,
        "settings in effect"
    );
    let mut accept = Listener {
        relay: relay.clone(),
        listener,
        tls,
        limit: Arc::new(Semaphore::new(relay.config.limits.max_connections.max(1))),
        notify_shutdown,
        shutdown_complete_tx,
    };
    tokio::select! {
        () = accept.run() => {}
        _ = shutdown => tracing::info!("shutting down: no new connections"),
    }
    let Listener {
        notify_shutdown,
        shutdown_complete_tx,
        ..
    } = accept;
    drop(notify_shutdown);
    drop(shutdown_complete_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, shutdown_complete_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; flushing anyway");
    }
    for task in [gc, heads] {
        task.abort();
        let _ = task.await;
    }
    for task in [http, admin].into_iter().flatten() {
        task.abort();
        let _ = task.await;
    }
    if let Err(error) = relay
        .store
        .keep_clock_mark(relay.clock.high_water_ms())
        .await
    {
        tracing::error!(%error, "keeping the clock's mark failed");
    }
    relay.store.close().await?;
    drop(relay);
    tracing::info!("relay stopped; storage flushed");
    Ok(())
}

struct Listener<S> {
    relay: Arc<Relay<S>>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limit: Arc<Semaphore>,
    notify_shutdown: broadcast::Sender<()>,
    shutdown_complete_tx: mpsc::Sender<()>,
}

impl<S: Backend + std::fmt::Debug> Listener<S> {
    async fn run(&mut self) {
        loop {
            let Ok(permit) = self.limit.clone().acquire_owned().await else {
                return;
            };
            let (socket, peer) = self.accept().await;
            // Before any handshake: one address cannot hold every descriptor.
            let Some(slot) = self.relay.per_address.admit(peer.ip()) else {
                self.relay.metrics.connections_refused.fetch_add(1, Relaxed);
                self.relay.metrics.notify_change();
                tracing::debug!(%peer, "too many connections from this address; closed at accept");
                drop(socket);
                drop(permit);
                continue;
            };
            let relay = self.relay.clone();
            let tls = self.tls.clone();
            let shutdown = Shutdown::new(self.notify_shutdown.subscribe());
            let complete = self.shutdown_complete_tx.clone();
            tokio::spawn(serve(
                relay,
                socket,
                peer,
                tls,
                shutdown,
                (permit, slot, complete),
            ));
        }
    }

    /// Accept, backing off on errors (e.g. out of file descriptors).
    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.listener.accept().await {
                Ok(accepted) => return accepted,
                Err(error) => {
                    tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// One connection's task. Its future is what an idle connection costs, so
/// the handshakes run boxed (freed once done) and the task keeps only the
/// connection loop's state. A function returning an `async move` block, not
/// an `async fn`, which would hold its arguments twice.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep its arguments twice in the future"
)]
fn serve<S: Backend>(
    relay: Arc<Relay<S>>,
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shutdown: Shutdown,
    held: Held,
) -> impl Future<Output = ()> + Send {
    async move {
        let _open = OpenConnection::new(relay.metrics.clone(), held);
        let Some(conn) = Box::pin(open(&relay, socket, peer, tls)).await else {
            return;
        };
        Session::new(relay, peer.ip()).run(conn, shutdown).await;
    }
}

/// What a connection holds while it lives: its place under the connection
/// cap, under its address's cap, and in the server's shutdown wait.
type Held = (OwnedSemaphorePermit, AddressSlot, mpsc::Sender<()>);

/// Counts a connection as open while it lives, and holds its place under
/// the connection cap and the server's shutdown wait.
struct OpenConnection {
    metrics: Arc<Metrics>,
    _held: Held,
}

impl OpenConnection {
    fn new(metrics: Arc<Metrics>, held: Held) -> Self {
        metrics.connections_open.fetch_add(1, Relaxed);
        metrics.connections_total.fetch_add(1, Relaxed);
        Self {
            metrics,
            _held: held,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connections_open.fetch_sub(1, Relaxed);
    }
}

/// TLS (if configured) and WebSocket handshakes, then the per-address rate
/// limit; `None` if the connection ended there.
async fn open<S: Backend>(
    relay: &Relay<S>,
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
) -> Option<Connection<Stream>> {
    let _ = socket.set_nodelay(true);
    let limits = &relay.config.limits;
    let timeout = Duration::from_millis(limits.write_timeout_ms);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(limits.handshake_timeout_ms);
    let stream = match tls {
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
            Ok(Ok(stream)) => Stream::Tls(Box::new(stream)),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return None;
            }
        },
        None => Stream::Plain(socket),
    };
    let config = websocket_config(limits.max_write_buffer_bytes);
    let ws = match tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::accept_async_with_config(Corked::new(stream), Some(config)),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "websocket handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "websocket handshake timed out");
            return None;
        }
    };
    let mut conn = Connection::new(ws, timeout);
    if let Err(retry_after_ms) = relay.address_limiter.check(&peer.ip()) {
        let error = RelayError::RateLimited {
            scope: "address",
            retry_after_ms,
        };
        relay.metrics.refused(error.code());
        let _ = conn.send(error.to_frame(0).encode_frame()).await;
        conn.close(close::POLICY, "rate limited").await;
        return None;
    }
    Some(conn)
}

/// Every `gc_interval_ms`: persist the clock's mark, delete expired
/// envelopes and accounts that never authenticated.
async fn collect_garbage<S: Backend>(relay: Arc<Relay<S>>) {
    let period = Duration::from_millis(relay.config.gc_interval_ms.max(10));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mark = relay.clock.now_ms();
        if let Err(error) = relay.store.keep_clock_mark(mark).await {
            tracing::error!(%error, "keeping the clock's mark failed");
        }
        match relay.store.expire(mark).await {
            Ok(0) => {}
            Ok(n) => {
                relay.metrics.envelopes_expired.fetch_add(n, Relaxed);
                relay.metrics.notify_change();
                relay.metrics.queue_depth.fetch_sub(n as i64, Relaxed);
                tracing::info!(expired = n, "expired envelopes deleted");
            }
            Err(error) => tracing::error!(%error, "garbage collection failed"),
        }
        // Status posts before blobs: a post's blob expires with it.
        match relay.status_posts.expire(mark).await {
            Ok(gone) if gone.is_empty() => {}
            Ok(gone) => {
                relay
                    .metrics
                    .status_posts_expired
                    .fetch_add(gone.len() as u64, Relaxed);
                relay.metrics.notify_change();
                tracing::info!(expired = gone.len(), "expired Status posts deleted");
            }
            Err(error) => tracing::error!(%error, "expiring Status posts failed"),
        }
        match relay.blobs.expire(mark).await {
            Ok(0) => {}
            Ok(n) => {
                relay.metrics.blobs_expired.fetch_add(n as u64, Relaxed);
                relay.metrics.notify_change();
                tracing::info!(expired = n, "expired attachments deleted");
            }
            Err(error) => tracing::error!(%error, "expiring attachments failed"),
        }
        let ttl = relay.config.limits.unauthenticated_account_ttl_ms;
        if ttl > 0 {
            let before = mark.saturating_sub(ttl);
            match relay
                .store
                .expire_unauthenticated(before, EXPIRED_ACCOUNTS_PER_PASS)
                .await
            {
                Ok(expired) if expired.accounts > 0 => {
                    relay
                        .metrics
                        .queue_depth
                        .fetch_sub(expired.envelopes as i64, Relaxed);
                    relay.metrics.notify_change();
                    tracing::info!(
                        accounts = expired.accounts,
                        envelopes = expired.envelopes,
                        "accounts that never authenticated expired"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "expiring unauthenticated accounts failed"),
            }
        }
    }
}

/// Accounts that never authenticated deleted per garbage-collection pass
/// at most (more than registrations allow at the default limits).
const EXPIRED_ACCOUNTS_PER_PASS: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStore;

    /// The size of the future a function returns, without calling it.
    fn future_size<A, B, C, D, E, G, F>(_: impl FnOnce(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle connection costs its task's future (plus the socket's read
    /// buffer): keep it from growing back (it was 2.7 KiB plus a boxed
    /// 2.7 KiB before the handshakes were boxed and `run` stopped holding
    /// its arguments twice).
    #[test]
    fn connection_task_stays_small() {
        let size = future_size(serve::<SledStore>);
        assert!(size <= 1536, "connection task future is {size} bytes");
    }
}
