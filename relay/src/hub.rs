//! Who is connected: one [`Presence`] per authenticated device, through
//! which other connections wake it (new mail, a delivery receipt kept for
//! it) or hand it frames (prekey warnings, a released phone number, a
//! request to close). Delivery receipts never travel as posted frames:
//! they are kept in storage until the device acks them, and a wake makes
//! the connection read them.
//!
//! A request to close ([`Posted::Close`]: the device was removed, or
//! reconnected elsewhere) takes effect at once: from the moment it is
//! posted, the connection serves no further request and pushes no mail,
//! even if frames it already read are waiting (see [`Presence::closing`]).
//!
//! A clustered relay would replace this with a pub/sub between nodes; the
//! connection code only uses [`Hub::wake`] and [`Hub::post`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use comptoir_protocol::AccountId;
use tokio::sync::Notify;

/// Frames waiting for one connection, at most. A device that does not read
/// its connection loses the oldest ones rather than growing memory (only
/// advisory pushes are posted: nothing stored is lost with them).
const MAX_POSTED: usize = 256;

/// Something another task asks a connection to do.
#[derive(Debug)]
pub enum Posted {
    /// Send this encoded server frame.
    Frame(Vec<u8>),
    /// Close with this WebSocket close code and reason.
    Close(u16, &'static str),
}

/// One connected device.
#[derive(Debug, Default)]
pub struct Presence {
    /// Identifies the connection (a device reconnecting replaces it).
    pub connection: u64,
    /// Woken on new mail or posted frames.
    pub notify: Notify,
    posted: Mutex<VecDeque<Posted>>,
    /// Set once by the first [`Posted::Close`]: never evicted, never taken.
    close: OnceLock<(u16, &'static str)>,
}

impl Presence {
    /// Hand this connection something to do. A close is kept apart from
    /// the frames (the connection must close even if frames overflow) and
    /// is visible to [`Presence::closing`] before this returns.
    pub fn post(&self, item: Posted) {
        if let Posted::Close(code, reason) = item {
            // The first reason wins; either way the connection closes.
            let _ = self.close.set((code, reason));
            self.notify.notify_one();
            return;
        }
        {
            let mut posted = self.posted.lock().unwrap_or_else(|e| e.into_inner());
            if posted.len() >= MAX_POSTED {
                posted.pop_front();
            }
            posted.push_back(item);
        }
        self.notify.notify_one();
    }

    /// Whether this connection was asked to close, and how: once it was,
    /// it must serve no request and push nothing more.
    pub fn closing(&self) -> Option<(u16, &'static str)> {
        self.close.get().copied()
    }

    /// Take every frame posted so far.
    pub fn take_posted(&self) -> VecDeque<Posted> {
        std::mem::take(&mut *self.posted.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The registry of connected devices.
#[derive(Debug, Default)]
pub struct Hub {
    devices: Mutex<HashMap<(AccountId, u32), Arc<Presence>>>,
}

impl Hub {
    /// Register a device's connection; returns the presence it replaced.
    pub fn join(
        &self,
        account: AccountId,
        device: u32,
        connection: u64,
    ) -> (Arc<Presence>, Option<Arc<Presence>>) {
        let presence = Arc::new(Presence {
            connection,
            ..Presence::default()
        });
        let old = self.lock().insert((account, device), presence.clone());
        (presence, old)
    }

    /// Remove the device's entry if it is still this connection.
    pub fn leave(&self, account: AccountId, device: u32, connection: u64) {
        let mut devices = self.lock();
        if devices
            .get(&(account, device))
            .is_some_and(|p| p.connection == connection)
        {
            devices.remove(&(account, device));
        }
    }

    /// Tell a device's connection that it has new mail.
    pub fn wake(&self, account: AccountId, device: u32) {
        if let Some(p) = self.get(account, device) {
            p.notify.notify_one();
        }
    }

    /// Hand a device's connection something to do; false if not connected.
    pub fn post(&self, account: AccountId, device: u32, item: Posted) -> bool {
        match self.get(account, device) {
            Some(p) => {
                p.post(item);
                true
            }
            None => false,
        }
    }

    /// Whether a device is connected here.
    pub fn is_connected(&self, account: AccountId, device: u32) -> bool {
        self.get(account, device).is_some()
    }

    fn get(&self, account: AccountId, device: u32) -> Option<Arc<Presence>> {
        self.lock().get(&(account, device)).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(AccountId, u32), Arc<Presence>>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }
}
