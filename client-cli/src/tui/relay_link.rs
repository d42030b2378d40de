//! The TUI's connection to the relay, kept by itself: the UI opens and
//! shows what is stored with the relay down, and reconnects (1 s doubling
//! to 30 s between attempts) without the user doing anything. Only errors
//! that retrying cannot fix (a removed device, a broken store) end the UI.

use std::time::Duration;

use comptoir_client::Client;
use comptoir_client::error::{ClientError, Result};
use tokio::time::Instant;

use super::app::App;

/// The first wait before another attempt.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// Errors after which another attempt may connect.
pub fn is_unreachable(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Connect { .. }
            | ClientError::ConnectionClosed(_)
            | ClientError::NotConnected
            | ClientError::Timeout(_)
    )
}

/// The relay address and when to try it next.
#[derive(Clone, Debug)]
pub struct RelayLink {
    relay: String,
    next_attempt: Instant,
    delay: Duration,
}

impl RelayLink {
    /// A link to `relay`, due for an attempt now.
    pub fn new(relay: &str) -> Self {
        Self {
            relay: relay.to_owned(),
            next_attempt: Instant::now(),
            delay: FIRST_DELAY,
        }
    }

    /// Connect `client` if it is not connected and an attempt is due at
    /// `now`, saying on `app`'s status line what happened. Returns whether
    /// it connected now.
    pub async fn reconnect_if_due(
        &mut self,
        client: &mut Client,
        app: &mut App,
        now: Instant,
    ) -> Result<bool> {
        if client.is_connected() || now < self.next_attempt {
            return Ok(false);
        }
        match client.connect(&self.relay).await {
            Ok(_) => {
                self.delay = FIRST_DELAY;
                app.status = "reconnected".into();
                Ok(true)
            }
            Err(e) if is_unreachable(&e) => {
                self.lost(now);
                app.status = format!(
                    "⚠ the relay is unreachable ({e}); showing what is stored here, trying again \
                     in {} s",
                    self.delay.as_secs()
                );
                self.delay = (self.delay * 2).min(MAX_DELAY);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The connection was lost at `now`: the next attempt waits the
    /// current delay.
    pub fn lost(&mut self, now: Instant) {
        self.next_attempt = now + self.delay;
    }
}
