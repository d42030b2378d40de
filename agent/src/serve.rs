//! `agent serve`: open the database and the device store, start the
//! device task, the webhook deliverer and the HTTP API, and stop them all
//! together (the device store is closed last, so the daemon can be started
//! again on the same directory at once).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{AppState, app};
use crate::clock::SharedClock;
use crate::config::{Config, ConfigError};
use crate::db::{Db, DbError};
use crate::device::{Device, DeviceError};
use crate::tls::{TlsError, TlsListener, acceptor};
use crate::webhook::Deliverer;

/// API requests waiting for the device task at most.
const COMMAND_QUEUE: usize = 256;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The database.
    #[error("{0}")]
    Db(#[from] DbError),
    /// The device store.
    #[error("{0}")]
    Device(#[from] DeviceError),
    /// TLS.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The listener.
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
}

/// A running daemon.
#[derive(Debug)]
pub struct Running {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// Wakes the webhook deliverer (after a test moved the clock).
    pub webhooks: Arc<Notify>,
    /// The database (for tests and operations).
    pub db: Db,
    /// Whether this daemon holds the business's lease (it posts webhooks,
    /// sends the away message and assigns; crate::lease).
    pub acting: crate::lease::Acting,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop everything and wait until the device store is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Start the daemon on `listener` with `clock`.
pub async fn start(
    config: &Config,
    passphrase: &str,
    listener: TcpListener,
    clock: SharedClock,
) -> Result<Running, ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Listen)?;
    crate::vanished_peers::end_connections_to_vanished_peers(&listener)
        .map_err(ServeError::Listen)?;
    if config.tls.is_none() && !addr.ip().is_loopback() {
        return Err(ConfigError::TlsRequired(addr).into());
    }
    let tls = match &config.tls {
        Some(files) => Some(acceptor(&files.cert, &files.key)?),
        None => None,
    };
    // The database holds conversations in clear (docs/OPERATIONS.md):
    // the directory is its owner's only.
    comptoir_client::store::create_private_dir(&config.data_dir).map_err(DeviceError::from)?;
    let endpoints = config.webhooks.iter().map(|w| w.url.clone()).collect();
    let db = Db::open(&config.database_path(), endpoints)?;
    // Decrypted customer files a crash left in the middle of a download.
    match crate::received_files::sweep(db.dir()) {
        Ok(0) => {}
        Ok(n) => tracing::info!(n, "removed downloads a stop interrupted"),
        Err(e) => tracing::warn!(error = %e, "removing downloads a stop interrupted"),
    }
    let client = crate::device::open(config, passphrase).await?;
    let business = client.account_id();
    let device_id = client.device_id();
    let (lease, acting) = crate::lease::LeaseKeeper::new(config.lease);
    let deliverer = Deliverer::new(db.clone(), Arc::clone(&clock), &config.webhooks)
        .with_acting(acting.clone());
    let webhooks = deliverer.waker();
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (stop, stopped) = watch::channel(false);
    let send_path = crate::device::SendPath::default();
    let downloads = crate::received_files::Downloads::new(send_path.clone());
    let inbox = crate::inbox::InboxState::new(
        db.clone(),
        commands.clone(),
        Arc::clone(&clock),
        addr,
        tls.is_some(),
    )
    .with_away(config.away.clone())
    .with_hosts(&config.inbox_hosts)
    .with_trusted_proxies(&config.inbox_trusted_proxies)
    .with_shutdown(stopped.clone())
    .with_acting(acting.clone())
    .with_downloads(downloads.clone());
    let device = Device::new(
        client,
        db.clone(),
        clock,
        config,
        Arc::clone(&webhooks),
        lease,
        send_path.clone(),
    );
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(device.run(command_rx, stopped.clone())));
    tasks.push(tokio::spawn(deliverer.run(changed(stopped.clone()))));
    tasks.push(tokio::spawn(crate::inbox::events::run_assigner(
        inbox.clone(),
        stopped.clone(),
    )));
    let router = app(AppState {
        commands,
        send_path,
        downloads,
        db: db.clone(),
        keys: Arc::new(config.api_keys.clone()),
        business,
        device: device_id,
        acting: acting.clone(),
        shutdown: stopped.clone(),
    })
    .merge(crate::inbox::router(inbox))
    .into_make_service_with_connect_info::<crate::inbox::session::PeerAddr>();
    let shutdown = changed(stopped);
    tasks.push(match tls {
        Some(acceptor) => {
            let listener = TlsListener::new(listener, acceptor).map_err(ServeError::Listen)?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(error = %e, "HTTP API");
                }
            })
        }
        None => tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "HTTP API");
            }
        }),
    });
    tracing::info!(%addr, "agent serving");
    Ok(Running {
        addr,
        webhooks,
        db,
        acting,
        stop,
        tasks,
    })
}

async fn changed(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
