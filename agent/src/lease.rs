//! Which daemon of the business acts. Two daemons of one business are two
//! devices of one account; both record every message and status, but
//! only one posts webhooks, sends the away message and assigns waiting
//! conversations: the holder of the relay lease [`LEASE_NAME`] (an
//! `AcquireLease` between the account's devices, docs/PROTOCOL.md
//! "Leases").
//!
//! The device task asks for the lease every third of its duration: the
//! holder renews it, the other takes it once it is free (the relay frees
//! it when the holder's connection ends, as after a `kill -9`, or when
//! the holder stops renewing). A daemon acts only while its lease is
//! valid by its own clock, counted from before its request left, and
//! stops at once when its connection to the relay ends: so it stops
//! before the relay could give the lease to the other daemon.
//!
//! A daemon that is its account's only device has nobody to agree with:
//! it acts without a lease, connected or not (as before there were two).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The lease's name on the relay.
pub const LEASE_NAME: &str = "agent.acting";
/// How long the lease lasts unless `lease_seconds` says otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// "For good": how long an account's only device acts before it looks
/// at its device list again (it does so at each ask anyway).
const FOR_GOOD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Whether this daemon acts now, shared by the tasks that act (the
/// webhook deliverer, the assigner, the device task's away message).
#[derive(Clone, Debug)]
pub struct Acting {
    until: watch::Receiver<Option<Instant>>,
}

impl Acting {
    /// Always acting (the parts that act, tested alone). A watch keeps
    /// its last value when its sender is gone.
    pub fn always() -> Self {
        let (_, until) = watch::channel(Some(Instant::now() + FOR_GOOD));
        Self { until }
    }

    /// This daemon holds the lease now.
    pub fn now(&self) -> bool {
        self.until.borrow().is_some_and(|t| Instant::now() < t)
    }

    /// Resolves when the lease is taken or lost (or the holder goes).
    pub async fn changed(&mut self) {
        if self.until.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The device task's side: asks for the lease when due and publishes the
/// outcome to [`Acting`].
#[derive(Debug)]
pub struct LeaseKeeper {
    duration: Duration,
    next_ask: Instant,
    /// The account has no other device (as of the last look).
    alone: bool,
    until: watch::Sender<Option<Instant>>,
}

impl LeaseKeeper {
    /// A keeper for leases of `duration`, and the view of it the acting
    /// tasks watch.
    pub fn new(duration: Duration) -> (Self, Acting) {
        let (tx, rx) = watch::channel(None);
        (
            Self {
                duration,
                next_ask: Instant::now(),
                alone: false,
                until: tx,
            },
            Acting { until: rx },
        )
    }

    /// When the lease should be asked for next.
    pub fn next_ask(&self) -> Instant {
        self.next_ask
    }

    /// Whether this daemon holds the lease now.
    pub fn holding(&self) -> bool {
        self.until.borrow().is_some_and(|t| Instant::now() < t)
    }

    /// Whether the account has no device but this one (read from the
    /// device store); if so, act from now on without a lease. Returns
    /// whether it is alone.
    pub fn check_alone(&mut self, client: &comptoir_client::Client) -> bool {
        self.alone = client
            .own_devices()
            .is_ok_and(|list| list.devices.len() <= 1);
        if self.alone {
            self.until.send_replace(Some(Instant::now() + FOR_GOOD));
        }
        self.alone
    }

    /// Ask the relay now if due: returns `Some(true)` when this daemon
    /// just took the lease, `Some(false)` when it just lost it.
    pub async fn tick(&mut self, client: &mut comptoir_client::Client) -> Option<bool> {
        let was = self.holding();
        if Instant::now() >= self.next_ask {
            self.next_ask = Instant::now() + self.duration / 3;
            if self.check_alone(client) {
                return (!was).then_some(true);
            }
            match client.acquire_lease(LEASE_NAME, self.duration).await {
                Ok(lease) => {
                    let until = lease.valid_until.map(Instant::from_std);
                    if lease.mine != was {
                        tracing::info!(
                            holder = ?lease.holder,
                            "{}",
                            if lease.mine {
                                "this daemon took the lease: it posts webhooks, sends the away message and assigns"
                            } else {
                                "another daemon of the business holds the lease"
                            }
                        );
                    }
                    self.until.send_replace(until);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "asking for the lease");
                    // Keep what is valid until it runs out; ask again soon.
                    self.next_ask =
                        Instant::now() + Duration::from_millis(500).min(self.duration / 3);
                }
            }
        }
        let now = self.holding();
        if !now {
            self.until.send_if_modified(|until| until.take().is_some());
        }
        (now != was).then_some(now)
    }

    /// The connection ended: stop acting at once (unless alone), and ask
    /// again as soon as it is back. Returns whether this daemon stopped.
    pub fn disconnected(&mut self) -> bool {
        self.next_ask = Instant::now();
        if self.alone {
            return false;
        }
        self.until.send_if_modified(|until| until.take().is_some())
    }
}
