//! Listens for the server's shutdown signal (mini-redis shape): every
//! connection holds a [`Shutdown`]; the server broadcasts once.

use tokio::sync::broadcast;

/// Whether shutdown was signalled, and a way to wait for it.
#[derive(Debug)]
pub struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    /// Wrap a receiver of the server's broadcast.
    pub fn new(notify: broadcast::Receiver<()>) -> Self {
        Self {
            is_shutdown: false,
            notify,
        }
    }

    /// True once the signal was received.
    pub fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Wait for the signal (returns at once if already received).
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // Closed or lagged both mean "stop".
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}
