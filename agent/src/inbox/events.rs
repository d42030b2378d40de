//! Live updates: each open inbox page holds a server-sent events stream
//! that says "change" whenever something agents see changed; the page's
//! script then fetches the page again and swaps its live parts. An open
//! stream also marks its agent online (shown to the team), and a task
//! assigns waiting conversations to available agents (see
//! [`super::assign`]) whenever something changes.

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

/// Keeps an agent online while a stream is open.
struct Online {
    presence: Arc<Presence>,
    agent: i64,
    db: crate::db::Db,
}

impl Online {
    fn new(state: &InboxState, agent: i64) -> Self {
        *state.presence.lock().entry(agent).or_default() += 1;
        // The pages show who is online.
        state.db.changed();
        Self {
            presence: Arc::clone(&state.presence),
            agent,
            db: state.db.clone(),
        }
    }
}

impl Drop for Online {
    fn drop(&mut self) {
        let mut map = self.presence.lock();
        if let Some(n) = map.get_mut(&self.agent) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.agent);
            }
        }
        drop(map);
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
    let online = Online::new(&state, session.agent.id);
    let stop = state.shutdown.clone();
    let events = futures_util::stream::unfold(
        (changes, online, stop),
        |(mut rx, online, mut stop)| async move {
            tokio::select! {
                changed = rx.changed() => changed.ok()?,
                () = stopping(stop.as_mut()) => return None,
            }
            let n = *rx.borrow_and_update();
            Some((
                Ok(Event::default().event("change").data(n.to_string())),
                (rx, online, stop),
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
