//! What an application built on this library keeps in step between its
//! account's own devices: state it sends them ([`Client::sync_to_own_devices`],
//! an `AppSync` content, end-to-end encrypted as control traffic through
//! the outbox of control messages, so it survives a lost connection or a
//! restart), and leases they share on the relay ([`Client::acquire_lease`]),
//! so that exactly one of them acts where acting twice would be wrong. The
//! agent daemon syncs its inbox and decides which daemon posts webhooks
//! this way.

use std::time::{Duration, Instant};

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{AppSync, Content, content};
use comptoir_protocol::proto::wire::{AcquireLease, client_frame, server_frame};

use crate::control_outbox;
use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::messages::MessageId;

use super::{Client, now_ms, unexpected};

/// The most state one `AppSync` carries (well below the plaintext limit;
/// an application splits more into several).
pub const MAX_APP_SYNC_LEN: usize = 48 * 1024;
/// The longest application name.
const MAX_APP_NAME_LEN: usize = 64;

/// A lease as the relay answered a request for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The holding device of this account, `None` when nobody holds it.
    pub holder: Option<u32>,
    /// This device holds it.
    pub mine: bool,
    /// Until when this device may act on it (counted from before the
    /// request was sent, so it ends before the relay gives it away);
    /// `None` when it is not this device's.
    pub valid_until: Option<Instant>,
    /// How long the holder holds it from the relay's answer.
    pub expires_in: Duration,
}

impl Client {
    /// Queue `data` for application `app` on this account's other devices
    /// and send it if connected (what is not sent goes at the next
    /// connect). `false` when the account has no other device. Refused
    /// ([`ClientError::InvalidArgument`]) past [`MAX_APP_SYNC_LEN`] bytes
    /// or for an empty or long application name; nothing is queued then.
    pub async fn sync_to_own_devices(&mut self, app: &str, data: &[u8]) -> Result<bool> {
        if app.is_empty() || app.len() > MAX_APP_NAME_LEN {
            return Err(ClientError::InvalidArgument(format!(
                "an application name is 1 to {MAX_APP_NAME_LEN} bytes"
            )));
        }
        if data.len() > MAX_APP_SYNC_LEN {
            return Err(ClientError::InvalidArgument(format!(
                "application state is at most {MAX_APP_SYNC_LEN} bytes a message, got {}; split it",
                data.len()
            )));
        }
        let live = self.live();
        let own = self.account.id();
        if live.target_devices(own, &live.own_devices()?).is_empty() {
            return Ok(false);
        }
        let (id, now) = (MessageId::generate(), now_ms());
        let content = Content {
            message_id: id.0.to_vec(),
            sent_at_ms: now,
            body: Some(content::Body::AppSync(AppSync {
                app: app.to_owned(),
                data: data.to_vec(),
            })),
            labels: None,
            franking_key: Vec::new(),
            padding: Vec::new(),
        };
        let queued = control_outbox::put(&self.store, own, id, content, now)?;
        self.store.flush().await?;
        if live.requester.is_none() {
            return Ok(true);
        }
        if let Err(e) = live.send_control(queued).await {
            if super::sender::is_connection_lost(&e) {
                self.note_connection(&Err::<(), _>(e));
            } else {
                return Err(e);
            }
        }
        Ok(true)
    }

    /// Application state from another device of this account; from any
    /// other account it is refused with a warning.
    pub(super) fn accept_app_sync(
        &mut self,
        from: AccountId,
        device: u32,
        sync: AppSync,
    ) -> Option<Event> {
        if from != self.account.id() {
            return Some(Event::Warning(format!(
                "{from} sent state for this account's own devices; ignored"
            )));
        }
        if device == self.account.device_id() {
            return None;
        }
        Some(Event::AppSync {
            device,
            app: sync.app,
            data: sync.data,
        })
    }

    /// Take or renew lease `name` for `duration` (at least 1 s, at most
    /// 5 min), or give it up with a zero duration: the relay grants it
    /// when no other device of this account holds it. The answer says who
    /// holds it; this device may act on it until [`Lease::valid_until`].
    pub async fn acquire_lease(&mut self, name: &str, duration: Duration) -> Result<Lease> {
        let duration_ms = u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
        let asked_at = Instant::now();
        let reply = self
            .request(
                client_frame::Body::AcquireLease(AcquireLease {
                    name: name.to_owned(),
                    duration_ms,
                }),
                "a lease",
            )
            .await?;
        let server_frame::Body::Lease(lease) = reply else {
            return Err(unexpected("Lease", &reply));
        };
        let holder = (lease.holder_device != 0).then_some(lease.holder_device);
        let mine = holder == Some(self.account.device_id()) && duration_ms != 0;
        Ok(Lease {
            holder,
            mine,
            valid_until: mine.then(|| asked_at + duration),
            expires_in: Duration::from_millis(lease.expires_in_ms),
        })
    }
}
