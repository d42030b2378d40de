//! The inbox's state between two daemons of one business (two devices of
//! one account): agents and whether each is available for automatic
//! assignment, assignments, internal notes, canned replies,
//! which webhooks were delivered, when the away message went to whom, and the statuses of sent messages each
//! daemon learns (the relay tells only the sending device that a message
//! was delivered). Each local change is written, in the
//! transaction that makes it, as an [`Op`] into `sync_outbox`; the device
//! task sends the waiting ops to the account's other devices as
//! `AppSync` contents (end-to-end encrypted: the relay carries bytes it
//! cannot read; [`APP`] names them) and deletes them once the client
//! library holds them in its durable outbox.
//!
//! **Convergence.** Applying ops is idempotent and order does not matter:
//! an agent, its availability, an assignment and a canned reply are last-writer-wins
//! registers ordered by a [`Stamp`] (hybrid logical time, then device id,
//! so a change made after seeing another always wins over it, and two
//! concurrent changes are decided the same way on both daemons); a note
//! is an element of a grow-only set keyed by its random id; a delivered
//! webhook is a grow-only mark; when the away message last went to a
//! customer is a max register. At each start the daemon sends its whole
//! state once more ([`queue_snapshot`]), which also brings a newly linked
//! daemon up to date and repairs an op lost in a crash between the change
//! and its hand-over.
//!
//! Agents are named, not numbered, between daemons (row ids differ): an
//! assignment or a note naming an agent this daemon lacks creates it
//! disabled, without a password, until its own op arrives.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError};

/// The application name on `AppSync` contents (another program sharing
/// the account ignores them).
pub const APP: &str = "comptoir-agent/1";
/// Ops per `AppSync` at most this many bytes of JSON (the client library
/// takes up to [`comptoir_client::MAX_APP_SYNC_LEN`]).
pub const MAX_BATCH_BYTES: usize = 40 * 1024;
/// The longest password hash accepted from another daemon (an Argon2id
/// PHC string is about 100 bytes).
const MAX_HASH_LEN: usize = 512;

/// The schema of the sync (a migration appended to [`crate::db`]'s).
pub const SCHEMA: &str = "
CREATE TABLE sync_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL
);
ALTER TABLE agents ADD COLUMN changed_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN changed_by INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbox_conversations ADD COLUMN assigned_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbox_conversations ADD COLUMN assigned_by INTEGER NOT NULL DEFAULT 0;
ALTER TABLE canned_replies ADD COLUMN changed_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE canned_replies ADD COLUMN changed_by INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbox_notes ADD COLUMN uid TEXT;
UPDATE inbox_notes SET uid = lower(hex(randomblob(16)));
CREATE UNIQUE INDEX inbox_notes_uid ON inbox_notes (uid);
CREATE TABLE webhook_delivered_elsewhere (
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    PRIMARY KEY (event_id, endpoint)
);
";

/// Agents' availability for automatic assignment, a register synced
/// apart from the rest of the agent (a migration appended to
/// [`crate::db`]'s).
pub const SCHEMA_AVAILABILITY: &str = "
ALTER TABLE agents ADD COLUMN available INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN available_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN available_by INTEGER NOT NULL DEFAULT 0;
";

/// Agents' presence: until when an inbox page of theirs is known to be
/// open (on either daemon), a register synced apart from availability
/// (a migration appended to [`crate::db`]'s; see
/// [`crate::inbox::events`]).
pub const SCHEMA_PRESENCE: &str = "
ALTER TABLE agents ADD COLUMN present_until_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN present_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN present_by INTEGER NOT NULL DEFAULT 0;
";

/// Why another daemon's state was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Not the format this daemon writes (another version or program).
    #[error("state from another daemon of the business in an unknown format: {0}")]
    Format(String),
    /// The database failed.
    #[error("{0}")]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for SyncError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e.into())
    }
}

/// When a change was made and on which device: compared as (ms, device).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// Hybrid logical time, ms since the Unix epoch.
    pub ms: u64,
    /// The device that made the change.
    pub device: u32,
}

/// One change to the inbox, as sent to the other daemons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// An agent as it is now (the password as its Argon2id hash).
    Agent {
        /// Login name (the agent's identity between daemons).
        name: String,
        /// PHC string.
        password_hash: String,
        /// Admin role.
        admin: bool,
        /// Disabled.
        disabled: bool,
        /// Assignment cap.
        cap: u32,
        /// When it changed.
        stamp: Stamp,
    },
    /// Whether an agent takes automatically assigned conversations (a
    /// register of its own, apart from [`Op::Agent`], so a login on one
    /// daemon never overwrites a password changed on the other).
    Available {
        /// The agent's name.
        name: String,
        /// Available (or away).
        available: bool,
        /// When it changed.
        stamp: Stamp,
    },
    /// Until when an agent has an inbox page open (by the clock of the
    /// daemon serving it; in the past once the page closed): automatic
    /// assignment counts only agents present now.
    Present {
        /// The agent's name.
        name: String,
        /// Present until then (ms since the Unix epoch).
        until_ms: u64,
        /// When it changed.
        stamp: Stamp,
    },
    /// Who a conversation is assigned to (`None`: nobody).
    Assign {
        /// The customer.
        customer: String,
        /// The agent's name.
        agent: Option<String>,
        /// When it changed.
        stamp: Stamp,
    },
    /// An internal note.
    Note {
        /// Its random id.
        uid: String,
        /// The customer.
        customer: String,
        /// The agent who wrote it.
        author: String,
        /// The text.
        body: String,
        /// When it was written.
        at_ms: u64,
    },
    /// A canned reply, by title.
    Canned {
        /// Its title.
        title: String,
        /// Its text.
        body: String,
        /// When it changed.
        stamp: Stamp,
    },
    /// A sent message's status as this daemon learnt it: the others
    /// advance theirs (never backwards) and queue the same webhook event.
    Status {
        /// The message id.
        message_id: String,
        /// Its new status.
        status: crate::status::MessageStatus,
        /// Why it failed, for `failed`.
        error: Option<String>,
    },
    /// The away message went to `customer` at `at_ms` (a max register):
    /// a daemon taking the lease over does not send it again that day.
    Away {
        /// The customer.
        customer: String,
        /// When it went.
        at_ms: u64,
    },
    /// A webhook delivered by the daemon acting then: the others never
    /// post it again.
    Delivered {
        /// The event id.
        event_id: String,
        /// The endpoint.
        endpoint: String,
    },
}

/// This device's side of the sync: its id (set when the device store is
/// open), the hybrid logical clock of its stamps, and whether ops wait.
#[derive(Debug, Default)]
pub struct SyncClock {
    origin: AtomicU32,
    last_ms: AtomicU64,
    dirty: AtomicBool,
}

impl SyncClock {
    /// Stamp this device's changes with `device`.
    pub fn set_origin(&self, device: u32) {
        self.origin.store(device, Ordering::SeqCst);
    }

    /// A stamp for a change made now: later than every stamp made or seen
    /// here, and not before the wall clock.
    pub fn stamp(&self) -> Stamp {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let previous = self
            .last_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(wall.max(last.saturating_add(1)))
            })
            .unwrap_or_else(|v| v);
        Stamp {
            ms: wall.max(previous.saturating_add(1)),
            device: self.origin.load(Ordering::SeqCst),
        }
    }

    fn observe(&self, stamp: Stamp) {
        self.last_ms.fetch_max(stamp.ms, Ordering::SeqCst);
    }

    /// Ops wait in `sync_outbox`: the device task sends them.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// Whether ops wait (and forget it: the caller sends them now).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::SeqCst)
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Write `op` for the other daemons, in the caller's transaction.
pub(crate) fn record(conn: &Connection, op: &Op) -> rusqlite::Result<()> {
    let text = serde_json::to_string(op)
        .unwrap_or_else(|_| unreachable!("an op is plain strings and numbers"));
    conn.execute("INSERT INTO sync_outbox (op) VALUES (?1)", params![text])?;
    Ok(())
}

/// Stamp agent `id` as changed now and write its op.
pub(crate) fn agent_changed(conn: &Connection, clock: &SyncClock, id: i64) -> rusqlite::Result<()> {
    let stamp = clock.stamp();
    conn.execute(
        "UPDATE agents SET changed_ms = ?2, changed_by = ?3 WHERE id = ?1",
        params![id, i64_of(stamp.ms), stamp.device],
    )?;
    if let Some(op) = agent_op(conn, id)? {
        record(conn, &op)?;
    }
    clock.mark_dirty();
    Ok(())
}

fn agent_op(conn: &Connection, id: i64) -> rusqlite::Result<Option<Op>> {
    conn.query_row(
        "SELECT name, password_hash, admin, disabled, cap, changed_ms, changed_by
         FROM agents WHERE id = ?1",
        params![id],
        |r| {
            Ok(Op::Agent {
                name: r.get(0)?,
                password_hash: r.get(1)?,
                admin: r.get(2)?,
                disabled: r.get(3)?,
                cap: r.get(4)?,
                stamp: Stamp {
                    ms: u64_of(r.get(5)?),
                    device: r.get(6)?,
                },
            })
        },
    )
    .optional()
}

/// Stamp agent `id`'s availability as changed now and write its op.
pub(crate) fn availability_changed(
    conn: &Connection,
    clock: &SyncClock,
    id: i64,
) -> rusqlite::Result<()> {
    let stamp = clock.stamp();
    conn.execute(
        "UPDATE agents SET available_ms = ?2, available_by = ?3 WHERE id = ?1",
        params![id, i64_of(stamp.ms), stamp.device],
    )?;
    if let Some(op) = available_op(conn, id)? {
        record(conn, &op)?;
    }
    clock.mark_dirty();
    Ok(())
}

fn available_op(conn: &Connection, id: i64) -> rusqlite::Result<Option<Op>> {
    conn.query_row(
        "SELECT name, available, available_ms, available_by FROM agents WHERE id = ?1",
        params![id],
        |r| {
            Ok(Op::Available {
                name: r.get(0)?,
                available: r.get(1)?,
                stamp: Stamp {
                    ms: u64_of(r.get(2)?),
                    device: r.get(3)?,
                },
            })
        },
    )
    .optional()
}

/// Set agent `id` present until `until_ms`, stamped now, and write its
/// op; whether that changed whether the agent is present at `now_ms`.
pub(crate) fn presence_changed(
    conn: &Connection,
    clock: &SyncClock,
    id: i64,
    until_ms: u64,
    now_ms: u64,
) -> rusqlite::Result<bool> {
    let Some(before) = present_until(conn, id)? else {
        return Ok(false);
    };
    let stamp = clock.stamp();
    conn.execute(
        "UPDATE agents SET present_until_ms = ?2, present_ms = ?3, present_by = ?4 WHERE id = ?1",
        params![id, i64_of(until_ms), i64_of(stamp.ms), stamp.device],
    )?;
    let name: String =
        conn.query_row("SELECT name FROM agents WHERE id = ?1", params![id], |r| {
            r.get(0)
        })?;
    record(
        conn,
        &Op::Present {
            name,
            until_ms,
            stamp,
        },
    )?;
    clock.mark_dirty();
    Ok((before > now_ms) != (until_ms > now_ms))
}

fn present_until(conn: &Connection, id: i64) -> rusqlite::Result<Option<u64>> {
    conn.query_row(
        "SELECT present_until_ms FROM agents WHERE id = ?1",
        params![id],
        |r| Ok(u64_of(r.get(0)?)),
    )
    .optional()
}

/// Stamp `customer`'s assignment as changed now and write its op.
pub(crate) fn assigned(
    conn: &Connection,
    clock: &SyncClock,
    customer: &str,
) -> rusqlite::Result<()> {
    let stamp = clock.stamp();
    conn.execute(
        "UPDATE inbox_conversations SET assigned_ms = ?2, assigned_by = ?3 WHERE customer = ?1",
        params![customer, i64_of(stamp.ms), stamp.device],
    )?;
    if let Some(op) = assign_op(conn, customer)? {
        record(conn, &op)?;
    }
    clock.mark_dirty();
    Ok(())
}

fn assign_op(conn: &Connection, customer: &str) -> rusqlite::Result<Option<Op>> {
    conn.query_row(
        "SELECT a.name, s.assigned_ms, s.assigned_by FROM inbox_conversations s
         LEFT JOIN agents a ON a.id = s.assignee WHERE s.customer = ?1",
        params![customer],
        |r| {
            Ok(Op::Assign {
                customer: customer.to_owned(),
                agent: r.get(0)?,
                stamp: Stamp {
                    ms: u64_of(r.get(1)?),
                    device: r.get(2)?,
                },
            })
        },
    )
    .optional()
}

/// Write the op of the note just inserted with `uid`.
pub(crate) fn noted(conn: &Connection, clock: &SyncClock, uid: &str) -> rusqlite::Result<()> {
    if let Some(op) = note_op(conn, uid)? {
        record(conn, &op)?;
    }
    clock.mark_dirty();
    Ok(())
}

fn note_op(conn: &Connection, uid: &str) -> rusqlite::Result<Option<Op>> {
    conn.query_row(
        "SELECT n.customer, a.name, n.body, n.at_ms FROM inbox_notes n
         JOIN agents a ON a.id = n.agent_id WHERE n.uid = ?1",
        params![uid],
        |r| {
            Ok(Op::Note {
                uid: uid.to_owned(),
                customer: r.get(0)?,
                author: r.get(1)?,
                body: r.get(2)?,
                at_ms: u64_of(r.get(3)?),
            })
        },
    )
    .optional()
}

/// Stamp canned reply `title` as changed now and write its op.
pub(crate) fn canned_changed(
    conn: &Connection,
    clock: &SyncClock,
    title: &str,
) -> rusqlite::Result<()> {
    let stamp = clock.stamp();
    conn.execute(
        "UPDATE canned_replies SET changed_ms = ?2, changed_by = ?3 WHERE title = ?1",
        params![title, i64_of(stamp.ms), stamp.device],
    )?;
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM canned_replies WHERE title = ?1",
            params![title],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(body) = body {
        record(
            conn,
            &Op::Canned {
                title: title.to_owned(),
                body,
                stamp,
            },
        )?;
    }
    clock.mark_dirty();
    Ok(())
}

/// Queue this daemon's whole inbox state for the other daemons (at each
/// start). Rows from before the sync, never stamped, take this device's
/// id at time 0, so two daemons that both had some decide the same way.
pub fn queue_snapshot(db: &Db) -> Result<usize, DbError> {
    let device = db.sync.origin.load(Ordering::SeqCst);
    let mut conn = db.connection();
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE agents SET changed_by = ?1 WHERE changed_by = 0 AND password_hash != '!'",
        params![device],
    )?;
    tx.execute(
        "UPDATE inbox_conversations SET assigned_by = ?1 WHERE assigned_by = 0",
        params![device],
    )?;
    tx.execute(
        "UPDATE canned_replies SET changed_by = ?1 WHERE changed_by = 0",
        params![device],
    )?;
    let mut ops = Vec::new();
    {
        let mut stmt =
            tx.prepare("SELECT id FROM agents WHERE password_hash != '!' ORDER BY id")?;
        let ids: Vec<i64> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in ids {
            ops.extend(agent_op(&tx, id)?);
            ops.extend(available_op(&tx, id)?);
        }
        let mut stmt = tx.prepare(
            "SELECT title, body, changed_ms, changed_by FROM canned_replies ORDER BY id",
        )?;
        let canned = stmt.query_map([], |r| {
            Ok(Op::Canned {
                title: r.get(0)?,
                body: r.get(1)?,
                stamp: Stamp {
                    ms: u64_of(r.get(2)?),
                    device: r.get(3)?,
                },
            })
        })?;
        for op in canned {
            ops.push(op?);
        }
        let mut stmt = tx.prepare("SELECT customer FROM inbox_conversations ORDER BY customer")?;
        let customers: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for customer in customers {
            ops.extend(assign_op(&tx, &customer)?);
        }
        let mut stmt = tx.prepare("SELECT uid FROM inbox_notes ORDER BY id")?;
        let uids: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for uid in uids {
            ops.extend(note_op(&tx, &uid)?);
        }
        let mut stmt = tx.prepare(
            "SELECT customer, away_sent_ms FROM conversations
             WHERE away_sent_ms IS NOT NULL ORDER BY customer",
        )?;
        let away = stmt.query_map([], |r| {
            Ok(Op::Away {
                customer: r.get(0)?,
                at_ms: u64_of(r.get(1)?),
            })
        })?;
        for op in away {
            ops.push(op?);
        }
    }
    for op in &ops {
        record(&tx, op)?;
    }
    tx.commit()?;
    drop(conn);
    db.sync.mark_dirty();
    Ok(ops.len())
}

/// The oldest waiting ops, as one `AppSync` payload of at most
/// [`MAX_BATCH_BYTES`] (at least one op): the last op's sequence number
/// (for [`sent`]) and the bytes. `None` when nothing waits.
pub fn next_batch(db: &Db) -> Result<Option<(i64, Vec<u8>)>, DbError> {
    let conn = db.connection();
    let mut stmt = conn.prepare("SELECT seq, op FROM sync_outbox ORDER BY seq LIMIT 1000")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut body = String::from(r#"{"v":1,"ops":["#);
    let mut last = None;
    for row in rows {
        let (seq, op) = row?;
        if last.is_some() && body.len() + op.len() + 2 > MAX_BATCH_BYTES {
            break;
        }
        if last.is_some() {
            body.push(',');
        }
        body.push_str(&op);
        last = Some(seq);
    }
    body.push_str("]}");
    Ok(last.map(|seq| (seq, body.into_bytes())))
}

/// The ops up to `seq` are in the client library's outbox: forget them.
pub fn sent(db: &Db, seq: i64) -> Result<(), DbError> {
    db.connection()
        .execute("DELETE FROM sync_outbox WHERE seq <= ?1", params![seq])?;
    Ok(())
}

#[derive(Deserialize)]
struct Batch {
    v: u32,
    /// Read one by one: an op of a later version is skipped, not the
    /// whole batch.
    ops: Vec<serde_json::Value>,
}

/// The local id of agent `name`, created disabled and without a password
/// (stamp 0, so its own op replaces it) if this daemon lacks it.
fn agent_id(conn: &Connection, name: &str, now_ms: u64) -> Result<Option<i64>, SyncError> {
    if crate::inbox::agents::check_name(name).is_err() {
        return Ok(None);
    }
    conn.execute(
        "INSERT OR IGNORE INTO agents (name, password_hash, disabled, created_ms) VALUES (?1, '!', 1, ?2)",
        params![name, i64_of(now_ms)],
    )?;
    Ok(conn
        .query_row(
            "SELECT id FROM agents WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?)
}

fn text_ok(text: &str) -> bool {
    !text.trim().is_empty() && text.len() <= crate::inbox::conversations::MAX_NOTE_LEN
}

/// What applying another daemon's ops did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Ops that changed something here.
    pub changed: usize,
    /// Statuses to advance (with their webhook events, which the caller
    /// makes): message id, status, error.
    pub statuses: Vec<(String, crate::status::MessageStatus, Option<String>)>,
}

/// Apply the ops another daemon of the business sent (in one
/// transaction). Ops this daemon cannot use (a bad name, an over-long
/// text) are skipped.
pub fn apply(db: &Db, data: &[u8], now_ms: u64) -> Result<Applied, SyncError> {
    let batch: Batch =
        serde_json::from_slice(data).map_err(|e| SyncError::Format(e.to_string()))?;
    if batch.v != 1 {
        return Err(SyncError::Format(format!("version {}", batch.v)));
    }
    let mut applied = Applied::default();
    // Webhooks the other daemon delivered that waited here.
    let mut delivered_elsewhere = 0;
    let mut conn = db.connection();
    let tx = conn.transaction()?;
    for op in batch.ops {
        match serde_json::from_value::<Op>(op) {
            Ok(Op::Status {
                message_id,
                status,
                error,
            }) => applied.statuses.push((message_id, status, error)),
            Ok(op @ Op::Delivered { .. }) => {
                delivered_elsewhere += apply_op(&tx, &db.sync, op, now_ms)?;
            }
            Ok(op) => applied.changed += apply_op(&tx, &db.sync, op, now_ms)?,
            Err(_) => {}
        }
    }
    tx.commit()?;
    drop(conn);
    if applied.changed > 0 {
        db.changed();
    }
    if delivered_elsewhere > 0 {
        db.outcome_recorded();
    }
    Ok(applied)
}

fn apply_op(conn: &Connection, clock: &SyncClock, op: Op, now_ms: u64) -> Result<usize, SyncError> {
    let n = match op {
        Op::Agent {
            name,
            password_hash,
            admin,
            disabled,
            cap,
            stamp,
        } => {
            if crate::inbox::agents::check_name(&name).is_err()
                || password_hash.len() > MAX_HASH_LEN
            {
                return Ok(0);
            }
            clock.observe(stamp);
            let n = conn.execute(
                "INSERT INTO agents (name, password_hash, admin, disabled, cap, created_ms, changed_ms, changed_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash,
                    admin = excluded.admin, disabled = excluded.disabled, cap = excluded.cap,
                    changed_ms = excluded.changed_ms, changed_by = excluded.changed_by
                 WHERE (excluded.changed_ms, excluded.changed_by) > (agents.changed_ms, agents.changed_by)",
                params![
                    name,
                    password_hash,
                    admin,
                    disabled,
                    cap,
                    i64_of(now_ms),
                    i64_of(stamp.ms),
                    stamp.device
                ],
            )?;
            if n > 0 && disabled {
                conn.execute(
                    "DELETE FROM agent_sessions WHERE agent_id = (SELECT id FROM agents WHERE name = ?1)",
                    params![name],
                )?;
            }
            n
        }
        Op::Available {
            name,
            available,
            stamp,
        } => {
            let Some(id) = agent_id(conn, &name, now_ms)? else {
                return Ok(0);
            };
            clock.observe(stamp);
            conn.execute(
                "UPDATE agents SET available = ?2, available_ms = ?3, available_by = ?4
                 WHERE id = ?1 AND (?3, ?4) > (available_ms, available_by)",
                params![id, available, i64_of(stamp.ms), stamp.device],
            )?
        }
        Op::Present {
            name,
            until_ms,
            stamp,
        } => {
            let Some(id) = agent_id(conn, &name, now_ms)? else {
                return Ok(0);
            };
            clock.observe(stamp);
            let before = present_until(conn, id)?.unwrap_or(0);
            let n = conn.execute(
                "UPDATE agents SET present_until_ms = ?2, present_ms = ?3, present_by = ?4
                 WHERE id = ?1 AND (?3, ?4) > (present_ms, present_by)",
                params![id, i64_of(until_ms), i64_of(stamp.ms), stamp.device],
            )?;
            // Only a change of whether the agent is present now counts
            // (an extension would refresh every open page for nothing).
            usize::from(n > 0 && (before > now_ms) != (until_ms > now_ms))
        }
        Op::Assign {
            customer,
            agent,
            stamp,
        } => {
            let assignee = match agent {
                None => None,
                Some(name) => match agent_id(conn, &name, now_ms)? {
                    Some(id) => Some(id),
                    None => return Ok(0),
                },
            };
            clock.observe(stamp);
            conn.execute(
                "INSERT INTO inbox_conversations (customer, assignee, assigned_ms, assigned_by)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (customer) DO UPDATE SET assignee = excluded.assignee,
                    assigned_ms = excluded.assigned_ms, assigned_by = excluded.assigned_by
                 WHERE (excluded.assigned_ms, excluded.assigned_by)
                     > (inbox_conversations.assigned_ms, inbox_conversations.assigned_by)",
                params![customer, assignee, i64_of(stamp.ms), stamp.device],
            )?
        }
        Op::Note {
            uid,
            customer,
            author,
            body,
            at_ms,
        } => {
            if !text_ok(&body) || uid.is_empty() || uid.len() > 64 {
                return Ok(0);
            }
            let Some(author) = agent_id(conn, &author, now_ms)? else {
                return Ok(0);
            };
            conn.execute(
                "INSERT OR IGNORE INTO inbox_notes (uid, customer, agent_id, body, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![uid, customer, author, body, i64_of(at_ms)],
            )?
        }
        Op::Canned { title, body, stamp } => {
            if !text_ok(&title) || !text_ok(&body) {
                return Ok(0);
            }
            clock.observe(stamp);
            conn.execute(
                "INSERT INTO canned_replies (title, body, changed_ms, changed_by) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (title) DO UPDATE SET body = excluded.body,
                    changed_ms = excluded.changed_ms, changed_by = excluded.changed_by
                 WHERE (excluded.changed_ms, excluded.changed_by)
                     > (canned_replies.changed_ms, canned_replies.changed_by)",
                params![title, body, i64_of(stamp.ms), stamp.device],
            )?
        }
        // Handed to the caller by `apply`.
        Op::Status { .. } => 0,
        Op::Away { customer, at_ms } => {
            conn.execute(
                "INSERT INTO conversations (customer, last_message_ms, away_sent_ms) VALUES (?1, 0, ?2)
                 ON CONFLICT (customer) DO UPDATE SET away_sent_ms = excluded.away_sent_ms
                 WHERE coalesce(conversations.away_sent_ms, 0) < excluded.away_sent_ms",
                params![customer, i64_of(at_ms)],
            )?;
            // Not a change agents see.
            0
        }
        Op::Delivered { event_id, endpoint } => {
            conn.execute(
                "INSERT OR IGNORE INTO webhook_delivered_elsewhere (event_id, endpoint) VALUES (?1, ?2)",
                params![event_id, endpoint],
            )?;
            // Not a change agents see: a delivery outcome (the caller
            // counts it as one).
            conn.execute(
                "UPDATE webhook_outbox SET state = 'delivered', last_error = NULL
                 WHERE event_id = ?1 AND endpoint = ?2 AND state = 'pending'",
                params![event_id, endpoint],
            )?
        }
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{NewEvent, NewMessage};
    use crate::inbox::{agents, assign, conversations};
    use crate::status::MessageStatus;

    const HOOK: &str = "https://backend.example/hook";

    fn daemon(dir: &std::path::Path, device: u32) -> Db {
        let db = Db::open(
            &dir.join(format!("{device}.sqlite3")),
            vec![HOOK.to_owned()],
        )
        .expect("open");
        db.sync.set_origin(device);
        db
    }

    /// What `from` has waiting, applied to `to` (and gone from `from`):
    /// how many ops changed something.
    fn exchange(from: &Db, to: &Db) -> usize {
        let mut changed = 0;
        while let Some((seq, data)) = next_batch(from).expect("batch") {
            changed += apply(to, &data, 1).expect("apply").changed;
            sent(from, seq).expect("sent");
        }
        changed
    }

    fn incoming(db: &Db, id: &str, customer: &str) {
        let message = NewMessage {
            id: id.into(),
            customer: customer.into(),
            incoming: true,
            kind: "text",
            body: "hello".into(),
            template_id: None,
            reply_to: None,
            status: MessageStatus::Received,
            at_ms: 1,
        };
        let event = NewEvent {
            event_id: format!("message:{id}"),
            subject: id.into(),
            body: "{}".into(),
        };
        db.record_message(&message, &[event], 1).expect("record");
    }

    fn owner(db: &Db, customer: &str) -> Option<String> {
        conversations::get(db, customer)
            .expect("conversation")
            .assignee
            .map(|(_, name)| name)
    }

    fn notes(db: &Db, customer: &str) -> Vec<(String, String)> {
        let mut all: Vec<_> = conversations::notes(db, customer)
            .expect("notes")
            .into_iter()
            .map(|n| (n.author, n.body))
            .collect();
        all.sort();
        all
    }

    fn state_of(db: &Db, event_id: &str) -> String {
        db.outbox()
            .expect("outbox")
            .into_iter()
            .find(|r| r.event_id == event_id)
            .map(|r| r.state)
            .expect("queued")
    }

    #[test]
    fn two_daemons_that_both_changed_things_converge_and_applying_again_changes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (daemon(dir.path(), 1), daemon(dir.path(), 2));
        for db in [&a, &b] {
            incoming(db, "m1", "c1");
        }
        let ana = agents::add(&a, "ana", "ana-long-password", true, 1).expect("ana");
        let bob = agents::add(&b, "bob", "bob-long-password", false, 1).expect("bob");
        exchange(&a, &b);
        exchange(&b, &a);
        // Each agent can log in on both daemons.
        assert!(
            agents::check_login(&b, "ana", "ana-long-password")
                .expect("login")
                .is_some()
        );
        assert!(
            agents::check_login(&a, "bob", "bob-long-password")
                .expect("login")
                .is_some()
        );

        // Both change the same things at once.
        let bob_on_a = agents::list(&a)
            .expect("list")
            .into_iter()
            .find(|x| x.name == "bob");
        assign::assign(&a, "c1", Some(ana.id)).expect("assign on A");
        assign::assign(&b, "c1", Some(bob.id)).expect("assign on B");
        conversations::add_note(&a, "c1", ana.id, "from A", 5).expect("note");
        conversations::add_note(&b, "c1", bob.id, "from B", 6).expect("note");
        conversations::add_canned(&a, "hello", "Hello from A").expect("canned");
        conversations::add_canned(&b, "hello", "Hello from B").expect("canned");
        assert!(exchange(&a, &b) > 0);
        assert!(exchange(&b, &a) > 0);

        assert_eq!(owner(&a, "c1"), owner(&b, "c1"));
        assert!(owner(&a, "c1").is_some());
        let both = vec![
            ("ana".to_owned(), "from A".to_owned()),
            ("bob".to_owned(), "from B".to_owned()),
        ];
        assert_eq!(notes(&a, "c1"), both);
        assert_eq!(notes(&b, "c1"), both);
        let canned = |db: &Db| conversations::canned(db).expect("canned");
        assert_eq!(canned(&a).len(), 1);
        assert_eq!(canned(&a)[0].body, canned(&b)[0].body);

        // A later change wins over one it has seen, on both.
        let bob_on_a = bob_on_a.expect("bob came to A");
        assign::assign(&a, "c1", Some(bob_on_a.id)).expect("assign");
        exchange(&a, &b);
        assert_eq!(owner(&b, "c1").as_deref(), Some("bob"));
        assign::assign(&b, "c1", None).expect("unassign");
        exchange(&b, &a);
        assert_eq!(owner(&a, "c1"), None);

        // A whole snapshot (as at a start) changes nothing more.
        queue_snapshot(&a).expect("snapshot");
        queue_snapshot(&b).expect("snapshot");
        assert_eq!(exchange(&a, &b), 0);
        assert_eq!(exchange(&b, &a), 0);
    }

    #[test]
    fn a_webhook_one_daemon_delivered_is_never_posted_by_the_other() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (daemon(dir.path(), 1), daemon(dir.path(), 2));
        incoming(&a, "m1", "c1");
        incoming(&b, "m1", "c1");
        // A delivers m1, and m2 which B has not received yet.
        incoming(&a, "m2", "c1");
        for pending in a.due(10, 10).expect("due") {
            a.delivery_outcome(&pending, true, None, None)
                .expect("delivered");
        }
        exchange(&a, &b);
        assert_eq!(state_of(&b, "message:m1"), "delivered");
        incoming(&b, "m2", "c1");
        assert_eq!(state_of(&b, "message:m2"), "delivered");
        assert!(b.due(10, 10).expect("due").is_empty());
        // A third, which A never delivered, waits for B.
        incoming(&b, "m3", "c1");
        assert_eq!(b.due(10, 10).expect("due").len(), 1);
    }

    #[test]
    fn availability_is_synced_apart_from_the_rest_of_the_agent() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (daemon(dir.path(), 1), daemon(dir.path(), 2));
        let ana = agents::add(&a, "ana", "ana-long-password", false, 1).expect("ana");
        exchange(&a, &b);
        let on = |db: &Db| {
            agents::list(db)
                .expect("agents")
                .into_iter()
                .find(|x| x.name == "ana")
                .expect("ana")
        };
        // At once: A disables Ana, B marks her available (she logged in there).
        agents::set_disabled(&a, ana.id, true).expect("disable");
        agents::set_available(&b, on(&b).id, true).expect("available");
        exchange(&a, &b);
        exchange(&b, &a);
        for db in [&a, &b] {
            assert!(on(db).disabled && on(db).available);
        }
        // Marking again what is already so sends nothing.
        agents::set_available(&a, ana.id, true).expect("again");
        assert_eq!(next_batch(&a).expect("batch"), None);
        queue_snapshot(&a).expect("snapshot");
        assert_eq!(exchange(&a, &b), 0);
    }

    #[test]
    fn an_away_message_one_daemon_sent_is_not_sent_by_the_other_the_same_day() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (daemon(dir.path(), 1), daemon(dir.path(), 2));
        incoming(&a, "m1", "c1");
        assert!(a.take_away_slot("c1", 0, 1_000).expect("slot"));
        // B has not recorded the customer's message yet: the op waits in
        // B's conversation row all the same.
        exchange(&a, &b);
        incoming(&b, "m1", "c1");
        assert!(!b.take_away_slot("c1", 500, 2_000).expect("slot"));
        // A day later it goes again, from whichever daemon acts.
        assert!(b.take_away_slot("c1", 1_500, 3_000).expect("slot"));
        exchange(&b, &a);
        assert!(!a.take_away_slot("c1", 2_500, 4_000).expect("slot"));
        // An older report changes nothing; a snapshot neither.
        let old = r#"{"v":1,"ops":[{"op":"away","customer":"c1","at_ms":10}]}"#;
        apply(&a, old.as_bytes(), 1).expect("apply");
        assert!(!a.take_away_slot("c1", 2_500, 4_000).expect("slot"));
        queue_snapshot(&a).expect("snapshot");
        exchange(&a, &b);
        assert!(!b.take_away_slot("c1", 2_500, 4_000).expect("slot"));
    }

    #[test]
    fn state_in_another_format_or_with_bad_values_is_refused_or_skipped() {
        let dir = tempfile::tempdir().expect("dir");
        let b = daemon(dir.path(), 2);
        incoming(&b, "m1", "c1");
        assert!(matches!(
            apply(&b, b"not json", 1),
            Err(SyncError::Format(_))
        ));
        assert!(matches!(
            apply(&b, br#"{"v":2,"ops":[]}"#, 1),
            Err(SyncError::Format(_))
        ));
        let stamp = r#"{"ms":5,"device":1}"#;
        let bad = format!(
            r#"{{"v":1,"ops":[
                {{"op":"agent","name":"<script>","password_hash":"x","admin":true,"disabled":false,"cap":1,"stamp":{stamp}}},
                {{"op":"note","uid":"n1","customer":"c1","author":"ana","body":"  ","at_ms":1}},
                {{"op":"canned","title":"t","body":"{long}","stamp":{stamp}}},
                {{"op":"assign","customer":"c1","agent":"no such name!","stamp":{stamp}}},
                {{"op":"from_the_future","x":1}}
            ]}}"#,
            long = "x".repeat(conversations::MAX_NOTE_LEN + 1)
        );
        assert_eq!(apply(&b, bad.as_bytes(), 1).expect("apply").changed, 0);
        assert!(agents::list(&b).expect("agents").is_empty());
        assert!(conversations::notes(&b, "c1").expect("notes").is_empty());
        assert!(conversations::canned(&b).expect("canned").is_empty());
        assert_eq!(owner(&b, "c1"), None);
        // A note by an agent B lacks brings the agent, disabled and
        // without a password, until its own op arrives.
        let note = r#"{"v":1,"ops":[{"op":"note","uid":"n1","customer":"c1","author":"ana","body":"hi","at_ms":1}]}"#;
        assert_eq!(apply(&b, note.as_bytes(), 1).expect("apply").changed, 1);
        assert_eq!(apply(&b, note.as_bytes(), 1).expect("again").changed, 0);
        let ana = agents::list(&b).expect("agents");
        assert!(ana[0].disabled);
        assert!(
            agents::check_login(&b, "ana", "!")
                .expect("login")
                .is_none()
        );
    }
}
