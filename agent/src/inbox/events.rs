//! Live updates: each open inbox page holds a server-sent events stream
//! that says "change" whenever something agents see changed; the page's
//! script then fetches the page again and swaps its live parts. An open
//! stream also marks its agent online (shown to the team), and a task
//! assigns waiting conversations to available agents (see
//! [`super::assign`]) whenever something changes.
//!
//! **Presence.** Automatic assignment counts only agents with an inbox
//! page open. While a stream is open, its daemon marks the agent present
//! until [`PRESENCE_TTL`] from now, renewed every [`PRESENCE_REFRESH`]
//! (never past the end of the session the page was opened with); when
//! the agent's last stream on this daemon closes (the tab or browser
//! closed, the connection lost: one whose other end vanished ends within
//! about 45 s, see [`crate::vanished_peers`]), the mark ends at once. A
//! renewal first checks the session: once it is logged out, expired or
//! its agent disabled, the stream ends. The mark is synced to the
//! business's other daemons (crate::sync), so if this daemon stops
//! without a word, the others stop counting the agent [`PRESENCE_TTL`]
//! after its last renewal.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::watch;

use super::session::Session;
use super::{InboxState, assign};

/// How often an idle stream sends a comment (so proxies keep it open).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often an open stream renews its agent's presence.
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(20);
/// How long a presence lasts unless renewed (three renewals).
pub const PRESENCE_TTL: Duration = Duration::from_secs(60);

/// Open event streams per agent: an agent with one is online (on this
/// daemon; shown in the pages, not used for assignment).
#[derive(Debug, Default)]
pub struct Presence {
    streams: Mutex<HashMap<i64, usize>>,
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, usize>> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The agents online now, by id.
    pub fn online(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Whether `agent` is online.
    pub fn is_online(&self, agent: i64) -> bool {
        self.lock().contains_key(&agent)
    }
}

/// Keeps an agent online, and present for automatic assignment, while a
/// stream is open.
struct Online {
    presence: Arc<Presence>,
    agent: i64,
    db: crate::db::Db,
    clock: crate::clock::SharedClock,
    /// The session the stream was opened with.
    token: String,
}

impl Online {
    fn new(state: &InboxState, session: &Session) -> Self {
        let agent = session.agent.id;
        *state.presence.lock().entry(agent).or_default() += 1;
        let online = Self {
            presence: Arc::clone(&state.presence),
            agent,
            db: state.db.clone(),
            clock: Arc::clone(&state.clock),
            token: session.token().to_owned(),
        };
        online.mark_present(session.expires_ms);
        // The pages show who is online.
        state.db.changed();
        online
    }

    /// Present until [`PRESENCE_TTL`] from now, or the session's end.
    fn mark_present(&self, session_ends_ms: u64) {
        let now = self.clock.now_ms();
        let ttl = u64::try_from(PRESENCE_TTL.as_millis()).unwrap_or(u64::MAX);
        let until = now.saturating_add(ttl).min(session_ends_ms);
        if let Err(e) = super::agents::set_present(&self.db, self.agent, until, now) {
            tracing::error!(error = %e, "recording an agent's presence");
        }
    }

    /// Renew the presence; false once the session ended (the stream
    /// ends then).
    fn renew(&self) -> bool {
        let now = self.clock.now_ms();
        match super::session::live_until(&self.db, &self.token, now) {
            Ok(Some(ends)) => {
                self.mark_present(ends);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(error = %e, "checking an inbox session");
                true
            }
        }
    }
}

impl Drop for Online {
    fn drop(&mut self) {
        let mut map = self.presence.lock();
        let last = match map.get_mut(&self.agent) {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if last {
            map.remove(&self.agent);
        }
        drop(map);
        if last {
            // The agent's last page here closed: gone, at once.
            let now = self.clock.now_ms();
            if let Err(e) = super::agents::set_present(&self.db, self.agent, now, now) {
                tracing::error!(error = %e, "recording that an agent left");
            }
        }
        self.db.changed();
    }
}

/// `GET /inbox/events`: a "change" event after each change.
pub async fn stream(
    State(state): State<InboxState>,
    session: Session,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut changes = state.db.watch_changes();
    changes.mark_unchanged();
    let online = Online::new(&state, &session);
    let stop = state.shutdown.clone();
    let mut renewals = tokio::time::interval_at(
        tokio::time::Instant::now() + PRESENCE_REFRESH,
        PRESENCE_REFRESH,
    );
    renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events = futures_util::stream::unfold(
        (changes, online, stop, renewals),
        |(mut rx, online, mut stop, mut renewals)| async move {
            loop {
                tokio::select! {
                    changed = rx.changed() => {
                        changed.ok()?;
                        break;
                    }
                    _ = renewals.tick() => if !online.renew() {
                        return None;
                    },
                    () = stopping(stop.as_mut()) => return None,
                }
            }
            let n = *rx.borrow_and_update();
            Some((
                Ok(Event::default().event("change").data(n.to_string())),
                (rx, online, stop, renewals),
            ))
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// Resolves once `stop` is true (never without one).
async fn stopping(stop: Option<&mut watch::Receiver<bool>>) {
    let Some(stop) = stop else {
        return std::future::pending().await;
    };
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// How often the assigner looks again with nothing changed (the
/// business may have opened meanwhile).
const ASSIGN_EVERY: Duration = Duration::from_secs(60);

/// Assign waiting conversations after each change until `stop` turns true.
/// Only the daemon holding the business's lease assigns (crate::lease),
/// and, with opening hours configured, only while the business is open;
/// its assignments reach the other daemon through crate::sync.
pub async fn run_assigner(state: InboxState, mut stop: watch::Receiver<bool>) {
    let mut changes = state.db.watch_changes();
    let mut acting = state.acting.clone();
    loop {
        let now = state.clock.now_ms();
        let open = state.away.as_ref().is_none_or(|a| a.hours.is_open(now));
        if open
            && acting.now()
            && let Err(e) = assign::auto_assign(&state.db, now)
        {
            tracing::error!(error = %e, "assigning conversations");
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = acting.changed() => {}
            () = tokio::time::sleep(ASSIGN_EVERY) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}
