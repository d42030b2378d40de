//! The daemon's database (SQLite, compiled in): conversations, messages
//! with their statuses, full-text search over message text (FTS5), the
//! consent requests the backend made, and the webhook outbox. Schema
//! changes are numbered migrations (`rusqlite_migration`, tracked in
//! SQLite's `user_version`), applied at open. The device keys are not
//! here: they stay in the client library's encrypted store.
//!
//! Each change that must be reported (a message received, a status
//! advanced, a consent granted) is written in one transaction with its
//! webhook deliveries, so a crash never keeps one without the other.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use rusqlite_migration::{M, Migrations};

use crate::status::MessageStatus;

/// Why the database failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// SQLite failed (disk full, damaged file, …).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}; restore the data directory from a backup")]
    Migration(String),
}

/// Result alias for the database.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// The numbered schema migrations, oldest first. Never edit one that
/// shipped: add the next.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE conversations (
            customer TEXT PRIMARY KEY,
            phone TEXT,
            last_message_ms INTEGER NOT NULL,
            last_inbound_ms INTEGER,
            away_sent_ms INTEGER
        );
        CREATE TABLE messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL UNIQUE,
            customer TEXT NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            template_id TEXT,
            reply_to TEXT,
            status TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            status_at_ms INTEGER NOT NULL
        );
        CREATE INDEX messages_by_customer ON messages (customer, seq);
        CREATE VIRTUAL TABLE messages_fts USING fts5 (
            body, content = 'messages', content_rowid = 'seq'
        );
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, body) VALUES (new.seq, new.body);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.seq, old.body);
        END;
        CREATE TABLE consent_requests (
            reference TEXT PRIMARY KEY,
            phone TEXT NOT NULL,
            categories TEXT NOT NULL,
            purpose TEXT NOT NULL,
            requested_at_ms INTEGER NOT NULL,
            customer TEXT,
            answered_at_ms INTEGER
        );
        CREATE INDEX consent_requests_by_phone ON consent_requests (phone);
        CREATE TABLE webhook_outbox (
            event_id TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            subject TEXT NOT NULL,
            body TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'delivered', 'expired')),
            last_error TEXT,
            PRIMARY KEY (event_id, endpoint)
        );
        CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_attempt_ms);
        CREATE INDEX webhook_outbox_subject ON webhook_outbox (endpoint, subject, state);",
        ),
        // The agents' web inbox (crate::inbox): agents with Argon2id
        // password hashes, sessions stored as SHA-256 of their tokens,
        // assignment, read positions, internal notes, canned replies.
        M::up(crate::inbox::SCHEMA),
        // Documents the backend uploaded (POST /v1/media): the attachment
        // pointer (blob id, key, digests) to send them with, as protobuf.
        M::up(
            "CREATE TABLE media (
            media_id TEXT PRIMARY KEY,
            pointer BLOB NOT NULL,
            created_ms INTEGER NOT NULL
        );",
        ),
        // Message requests (a customer's first contact, as the client
        // library reports it) and violation marks (messages the client
        // library flagged: a rule the relay should have enforced, or
        // labels that disagree), for the inbox.
        M::up(
            "CREATE TABLE message_requests (
            customer TEXT PRIMARY KEY,
            since_ms INTEGER NOT NULL,
            accepted_ms INTEGER,
            accepted_by INTEGER REFERENCES agents (id)
        );
        CREATE TABLE violations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            customer TEXT NOT NULL,
            message_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            UNIQUE (message_id, reason)
        );
        CREATE INDEX violations_by_customer ON violations (customer, id);",
        ),
        // Files customers sent (issue 16 item 2): what the inbox lists
        // and offers as a download. The attachment pointer (blob id, key,
        // digests) stays in the client library's encrypted device store,
        // which the download reads it from; it is not copied here.
        M::up(
            "CREATE TABLE attachments (
            message_id TEXT PRIMARY KEY,
            customer TEXT NOT NULL,
            file_name TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            at_ms INTEGER NOT NULL
        );
        CREATE INDEX attachments_by_customer ON attachments (customer);",
        ),
        // Two daemons of one business (issue 15 item 2, crate::sync):
        // inbox changes waiting to go to the account's other devices,
        // when each assignment, canned reply and agent last changed and
        // on which device (last writer wins), a unique id per note, and
        // the webhook deliveries the other daemon made.
        M::up(crate::sync::SCHEMA),
        // Whether each agent is available for automatic assignment
        // (issue 15 review item 3): synced, so the daemon that assigns
        // counts agents logged in on either daemon.
        M::up(crate::sync::SCHEMA_AVAILABILITY),
        // Whether each agent has an inbox page open (issue 15 follow-up:
        // closing the browser ended nothing): synced like availability.
        M::up(crate::sync::SCHEMA_PRESENCE),
    ])
}

/// A webhook event to write with the change it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// Derived from message ids (see [`crate::webhook`]): the same change
    /// always has the same id, so it is queued once.
    pub event_id: String,
    /// What it is about (a message id, a consent reference): the events of
    /// one subject reach an endpoint in the order they were queued, so a
    /// retried `delivered` is never overtaken by its `read`.
    pub subject: String,
    /// The JSON body, signed as is at each attempt.
    pub body: String,
}

/// One delivery waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The event id.
    pub event_id: String,
    /// The endpoint URL.
    pub endpoint: String,
    /// The JSON body.
    pub body: String,
    /// When it was queued.
    pub created_ms: u64,
    /// Attempts so far.
    pub attempts: u32,
}

/// One delivery's row as stored (for operations and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// The event id.
    pub event_id: String,
    /// The endpoint.
    pub endpoint: String,
    /// `pending`, `delivered` or `expired`.
    pub state: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_ms: u64,
}

/// A conversation as the API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationRow {
    /// The customer's account id (hex).
    pub customer: String,
    /// The customer's number, when a consent request learnt it.
    pub phone: Option<String>,
    /// The latest message, either way.
    pub last_message_ms: u64,
    /// The customer's latest message (opens the 24-hour window).
    pub last_inbound_ms: Option<u64>,
}

/// A message as the API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRow {
    /// The message id (hex).
    pub id: String,
    /// The customer.
    pub customer: String,
    /// `in` (from the customer) or `out`.
    pub direction: String,
    /// `text`, `template`, `button_reply`, `document` (a file the business
    /// sent) or `attachment` (a file the customer sent; its text is a summary).
    pub kind: String,
    /// The text (a template's rendered text, a button's text).
    pub body: String,
    /// A template message's template id.
    pub template_id: Option<String>,
    /// The message a button reply answers.
    pub reply_to: Option<String>,
    /// Where it stands.
    pub status: MessageStatus,
    /// When it was sent or received.
    pub at_ms: u64,
}

/// A file a customer sent, as recorded (its pointer stays in the device
/// store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentRow {
    /// The message that carried it (hex).
    pub message_id: String,
    /// The customer who sent it.
    pub customer: String,
    /// Its name as the customer gave it (untrusted).
    pub file_name: String,
    /// Its MIME type as the customer gave it (untrusted).
    pub content_type: String,
    /// Its length in bytes.
    pub size: u64,
}

/// A message to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// The message id (hex).
    pub id: String,
    /// The customer.
    pub customer: String,
    /// From the customer.
    pub incoming: bool,
    /// `text`, `template`, `button_reply`, `document` (a file the business
    /// sent) or `attachment` (a file the customer sent; its text is a summary).
    pub kind: &'static str,
    /// The text.
    pub body: String,
    /// The template id of a template message.
    pub template_id: Option<String>,
    /// The message a button reply answers.
    pub reply_to: Option<String>,
    /// Its status when recorded.
    pub status: MessageStatus,
    /// When.
    pub at_ms: u64,
}

/// The database: one connection behind a lock (its calls are short; the
/// daemon's load is a business's, not a platform's).
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    endpoints: Arc<Vec<String>>,
    /// Counts recorded delivery outcomes, so a watcher (operations, tests)
    /// waits for the next one instead of polling.
    outcomes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Counts changes agents see (a message recorded, a status advanced,
    /// an assignment), so the inbox's live pages refresh.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    dir: Arc<std::path::PathBuf>,
    /// This device's place in the inbox's sync with the account's other
    /// devices (crate::sync).
    pub(crate) sync: Arc<crate::sync::SyncClock>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn attachment_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AttachmentRow> {
    Ok(AttachmentRow {
        message_id: row.get(0)?,
        customer: row.get(1)?,
        file_name: row.get(2)?,
        content_type: row.get(3)?,
        size: u64_of(row.get(4)?),
    })
}

impl Db {
    /// Open (or create) the database at `path`, migrate it, and queue
    /// webhooks to `endpoints` from now on.
    pub fn open(path: &Path, endpoints: Vec<String>) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Best effort: the directory is private already (0700).
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Self::prepare(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            endpoints: Arc::new(endpoints),
            outcomes: Arc::new(tokio::sync::watch::channel(0).0),
            changes: Arc::new(tokio::sync::watch::channel(0).0),
            sync: Arc::default(),
            dir: Arc::new(
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
            ),
        })
    }

    fn prepare(conn: &mut Connection) -> Result<()> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed change (and the webhook queued with it)
        // survives a power loss, not only a crash of the daemon.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations()
            .to_latest(conn)
            .map_err(|e| DbError::Migration(e.to_string()))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection, for the inbox's own tables (crate::inbox).
    pub(crate) fn connection(&self) -> MutexGuard<'_, Connection> {
        self.lock()
    }

    /// Tell the inbox's live pages that something they show changed.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Wakes on every change agents see (see [`Self::changed`]).
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn enqueue(&self, tx: &Transaction<'_>, event: &NewEvent, now_ms: u64) -> Result<()> {
        for endpoint in self.endpoints.iter() {
            // Delivered already when the other daemon of the business
            // delivered it (crate::sync): never posted twice.
            tx.execute(
                "INSERT OR IGNORE INTO webhook_outbox (event_id, endpoint, subject, body, created_ms, next_attempt_ms, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5,
                    CASE WHEN EXISTS (SELECT 1 FROM webhook_delivered_elsewhere e
                                      WHERE e.event_id = ?1 AND e.endpoint = ?2)
                         THEN 'delivered' ELSE 'pending' END)",
                params![event.event_id, endpoint, event.subject, event.body, i64_of(now_ms)],
            )?;
        }
        Ok(())
    }

    /// Record a message and the events reporting it, once: a message id
    /// already recorded changes nothing (returns false).
    pub fn record_message(&self, m: &NewMessage, events: &[NewEvent], now_ms: u64) -> Result<bool> {
        let inserted = self.record_messages(&[(m, events)], now_ms)?;
        Ok(inserted.first().copied().unwrap_or(false))
    }

    /// [`Self::record_message`] for each of `messages`, in one transaction
    /// (one sync of the disk for all of them); which were new.
    pub fn record_messages(
        &self,
        messages: &[(&NewMessage, &[NewEvent])],
        now_ms: u64,
    ) -> Result<Vec<bool>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut inserted = Vec::with_capacity(messages.len());
        for (m, events) in messages {
            let new = tx.execute(
                "INSERT OR IGNORE INTO messages
                    (message_id, customer, direction, kind, body, template_id, reply_to, status, at_ms, status_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
                params![
                    m.id,
                    m.customer,
                    if m.incoming { "in" } else { "out" },
                    m.kind,
                    m.body,
                    m.template_id,
                    m.reply_to,
                    m.status.as_str(),
                    i64_of(m.at_ms),
                ],
            )? == 1;
            if new {
                tx.execute(
                    "INSERT INTO conversations (customer, last_message_ms, last_inbound_ms)
                     VALUES (?1, ?2, CASE WHEN ?3 THEN ?2 END)
                     ON CONFLICT (customer) DO UPDATE SET
                        last_message_ms = max(last_message_ms, ?2),
                        last_inbound_ms = CASE WHEN ?3 THEN max(coalesce(last_inbound_ms, 0), ?2)
                                          ELSE last_inbound_ms END",
                    params![m.customer, i64_of(m.at_ms), m.incoming],
                )?;
                for event in events.iter() {
                    self.enqueue(&tx, event, now_ms)?;
                }
            }
            inserted.push(new);
        }
        tx.commit()?;
        drop(conn);
        if inserted.contains(&true) {
            self.changed();
        }
        Ok(inserted)
    }

    /// Record a file `a.customer` sent in message `a.message_id`, once.
    pub fn record_attachment(&self, a: &AttachmentRow, now_ms: u64) -> Result<()> {
        self.lock().execute(
            "INSERT OR IGNORE INTO attachments
                (message_id, customer, file_name, content_type, size, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                a.message_id,
                a.customer,
                a.file_name,
                a.content_type,
                i64_of(a.size),
                i64_of(now_ms)
            ],
        )?;
        Ok(())
    }

    /// The files `customer` sent, oldest first.
    pub fn attachments_of(&self, customer: &str) -> Result<Vec<AttachmentRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT message_id, customer, file_name, content_type, size FROM attachments
             WHERE customer = ?1 ORDER BY at_ms, message_id",
        )?;
        let rows = stmt.query_map(params![customer], attachment_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The file `customer` sent in message `message_id`, if recorded.
    pub fn attachment(&self, customer: &str, message_id: &str) -> Result<Option<AttachmentRow>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT message_id, customer, file_name, content_type, size FROM attachments
                 WHERE customer = ?1 AND message_id = ?2",
                params![customer, message_id],
                attachment_row,
            )
            .optional()?)
    }

    /// A customer's message arrived as a message request (the client
    /// library's first contact): remember since when, once.
    pub fn note_request(&self, customer: &str, since_ms: u64) -> Result<()> {
        let inserted = self.lock().execute(
            "INSERT OR IGNORE INTO message_requests (customer, since_ms) VALUES (?1, ?2)",
            params![customer, i64_of(since_ms)],
        )?;
        if inserted > 0 {
            self.changed();
        }
        Ok(())
    }

    /// The client library flagged `message_id` from `customer` (`reason`
    /// is its explanation); recorded once per message and reason.
    pub fn record_violation(
        &self,
        customer: &str,
        message_id: &str,
        reason: &str,
        at_ms: u64,
    ) -> Result<bool> {
        let inserted = self.lock().execute(
            "INSERT OR IGNORE INTO violations (customer, message_id, reason, at_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![customer, message_id, reason, i64_of(at_ms)],
        )? == 1;
        if inserted {
            self.changed();
        }
        Ok(inserted)
    }

    /// Move an outgoing message to `next` if that is forward (see
    /// [`MessageStatus::advances_to`]), with the events `events` makes for
    /// its customer; returns the customer when it moved, `None` when the
    /// message is unknown here or the status would go backwards.
    pub fn advance_status(
        &self,
        message_id: &str,
        next: MessageStatus,
        now_ms: u64,
        events: impl FnOnce(&str) -> Vec<NewEvent>,
    ) -> Result<Option<String>> {
        self.advance(message_id, next, None, now_ms, events)
    }

    /// [`Self::advance_status`] for a status this daemon learnt first
    /// hand: when it moves, the op that tells the business's other
    /// daemons (crate::sync) is written in the same transaction, so a
    /// crash right after the change loses nothing (it is sent after a
    /// restart). `error` says why it failed, for `failed`.
    pub fn advance_status_shared(
        &self,
        message_id: &str,
        next: MessageStatus,
        error: Option<&str>,
        now_ms: u64,
        events: impl FnOnce(&str) -> Vec<NewEvent>,
    ) -> Result<Option<String>> {
        self.advance(message_id, next, Some(error), now_ms, events)
    }

    /// `share`: with the sync op, and this error.
    fn advance(
        &self,
        message_id: &str,
        next: MessageStatus,
        share: Option<Option<&str>>,
        now_ms: u64,
        events: impl FnOnce(&str) -> Vec<NewEvent>,
    ) -> Result<Option<String>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let current: Option<(String, String)> = tx
            .query_row(
                "SELECT customer, status FROM messages WHERE message_id = ?1 AND direction = 'out'",
                params![message_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((customer, status)) = current else {
            return Ok(None);
        };
        let moves = MessageStatus::parse(&status).is_some_and(|s| s.advances_to(next));
        if !moves {
            return Ok(None);
        }
        tx.execute(
            "UPDATE messages SET status = ?2, status_at_ms = ?3 WHERE message_id = ?1",
            params![message_id, next.as_str(), i64_of(now_ms)],
        )?;
        for event in events(&customer) {
            self.enqueue(&tx, &event, now_ms)?;
        }
        if let Some(error) = share {
            crate::sync::record(
                &tx,
                &crate::sync::Op::Status {
                    message_id: message_id.to_owned(),
                    status: next,
                    error: error.map(str::to_owned),
                },
            )?;
        }
        tx.commit()?;
        drop(conn);
        if share.is_some() {
            self.sync.mark_dirty();
        }
        self.changed();
        Ok(Some(customer))
    }

    /// A stored message's status.
    pub fn status_of(&self, message_id: &str) -> Result<Option<MessageStatus>> {
        let status: Option<String> = self
            .lock()
            .query_row(
                "SELECT status FROM messages WHERE message_id = ?1",
                params![message_id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(status.and_then(|s| MessageStatus::parse(&s)))
    }

    /// Outgoing messages still queued (sent while the relay was unreachable).
    pub fn queued(&self) -> Result<Vec<(String, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT customer, message_id FROM messages WHERE status = 'queued' ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Remember a consent request made through the API; false if the
    /// reference was used before (nothing changed).
    pub fn record_consent_request(
        &self,
        reference: &str,
        phone: &str,
        categories: &str,
        purpose: &str,
        now_ms: u64,
    ) -> Result<bool> {
        let inserted = self.lock().execute(
            "INSERT OR IGNORE INTO consent_requests (reference, phone, categories, purpose, requested_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![reference, phone, categories, purpose, i64_of(now_ms)],
        )?;
        Ok(inserted == 1)
    }

    /// Record that the customer `customer` allowed the request
    /// `reference`, with its events; false if it was recorded already or
    /// the request was not made through this daemon.
    pub fn record_consent_answer(
        &self,
        reference: &str,
        customer: &str,
        answered_at_ms: u64,
        events: impl FnOnce(&str) -> Vec<NewEvent>,
        now_ms: u64,
    ) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let phone: Option<String> = tx
            .query_row(
                "SELECT phone FROM consent_requests WHERE reference = ?1 AND customer IS NULL",
                params![reference],
                |row| row.get(0),
            )
            .optional()?;
        let Some(phone) = phone else {
            return Ok(false);
        };
        tx.execute(
            "UPDATE consent_requests SET customer = ?2, answered_at_ms = ?3 WHERE reference = ?1",
            params![reference, customer, i64_of(answered_at_ms)],
        )?;
        tx.execute(
            "INSERT INTO conversations (customer, phone, last_message_ms) VALUES (?1, ?2, 0)
             ON CONFLICT (customer) DO UPDATE SET phone = ?2",
            params![customer, phone],
        )?;
        for event in events(&phone) {
            self.enqueue(&tx, &event, now_ms)?;
        }
        tx.commit()?;
        drop(conn);
        self.changed();
        Ok(true)
    }

    /// Take back a consent request the relay refused.
    pub fn remove_consent_request(&self, reference: &str) -> Result<()> {
        self.lock().execute(
            "DELETE FROM consent_requests WHERE reference = ?1 AND customer IS NULL",
            params![reference],
        )?;
        Ok(())
    }

    /// The customer account that allowed a consent request for `phone`
    /// (the latest), if any.
    pub fn customer_by_phone(&self, phone: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT customer FROM consent_requests WHERE phone = ?1 AND customer IS NOT NULL
                 ORDER BY answered_at_ms DESC LIMIT 1",
                params![phone],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// The phone number a customer gave through a consent request.
    pub fn phone_of(&self, customer: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT phone FROM conversations WHERE customer = ?1",
                params![customer],
                |row| row.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Whether the away message went to `customer` since `since_ms` (from
    /// this daemon or, as synced, another of the business); if not,
    /// record that it goes now, with the op that tells the other daemons
    /// in the same transaction (crate::sync), so a daemon taking the
    /// lease over never sends it twice the same day.
    pub fn take_away_slot(&self, customer: &str, since_ms: u64, now_ms: u64) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE conversations SET away_sent_ms = ?3
             WHERE customer = ?1 AND (away_sent_ms IS NULL OR away_sent_ms < ?2)",
            params![customer, i64_of(since_ms), i64_of(now_ms)],
        )?;
        if changed == 1 {
            crate::sync::record(
                &tx,
                &crate::sync::Op::Away {
                    customer: customer.to_owned(),
                    at_ms: now_ms,
                },
            )?;
        }
        tx.commit()?;
        drop(conn);
        if changed == 1 {
            self.sync.mark_dirty();
        }
        Ok(changed == 1)
    }

    /// Keep an uploaded document's attachment pointer under `media_id`.
    pub fn put_media(&self, media_id: &str, pointer: &[u8], now_ms: u64) -> Result<()> {
        self.lock().execute(
            "INSERT INTO media (media_id, pointer, created_ms) VALUES (?1, ?2, ?3)",
            params![media_id, pointer, i64_of(now_ms)],
        )?;
        Ok(())
    }

    /// The attachment pointer kept under `media_id`, if any.
    pub fn media(&self, media_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT pointer FROM media WHERE media_id = ?1",
                params![media_id],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// How many uploaded documents are kept.
    pub fn media_count(&self) -> Result<u64> {
        let n: i64 = self
            .lock()
            .query_row("SELECT COUNT(*) FROM media", [], |row| row.get(0))?;
        Ok(u64_of(n))
    }

    /// When `customer` last wrote (opening the 24-hour window), if ever.
    pub fn last_inbound_ms(&self, customer: &str) -> Result<Option<u64>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT last_inbound_ms FROM conversations WHERE customer = ?1",
                params![customer],
                |row| row.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten()
            .map(u64_of))
    }

    /// The directory the database is in (the daemon's private data
    /// directory: uploads wait there while they are encrypted).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Conversations, latest first.
    pub fn conversations(&self, limit: u32) -> Result<Vec<ConversationRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT customer, phone, last_message_ms, last_inbound_ms FROM conversations
             ORDER BY last_message_ms DESC, customer LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |row| {
            Ok(ConversationRow {
                customer: row.get(0)?,
                phone: row.get(1)?,
                last_message_ms: u64_of(row.get(2)?),
                last_inbound_ms: row.get::<_, Option<i64>>(3)?.map(u64_of),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Messages, newest first: of one customer and/or matching `search`
    /// (every word, as typed; FTS5 syntax is not interpreted).
    pub fn messages(
        &self,
        customer: Option<&str>,
        search: Option<&str>,
        limit: u32,
    ) -> Result<Vec<MessageRow>> {
        let conn = self.lock();
        let columns = "m.message_id, m.customer, m.direction, m.kind, m.body, m.template_id,
                       m.reply_to, m.status, m.at_ms";
        let query = fts_query(search.unwrap_or(""));
        let (sql, query) = match &query {
            Some(q) => (
                format!(
                    "SELECT {columns} FROM messages_fts f JOIN messages m ON m.seq = f.rowid
                     WHERE messages_fts MATCH ?1 AND (?2 IS NULL OR m.customer = ?2)
                     ORDER BY m.seq DESC LIMIT ?3"
                ),
                Some(q.as_str()),
            ),
            None => (
                format!(
                    "SELECT {columns} FROM messages m WHERE (?1 IS NULL) AND (?2 IS NULL OR m.customer = ?2)
                     ORDER BY m.seq DESC LIMIT ?3"
                ),
                None,
            ),
        };
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![query, customer, limit], |row| {
            let status: String = row.get(7)?;
            Ok(MessageRow {
                id: row.get(0)?,
                customer: row.get(1)?,
                direction: row.get(2)?,
                kind: row.get(3)?,
                body: row.get(4)?,
                template_id: row.get(5)?,
                reply_to: row.get(6)?,
                status: MessageStatus::parse(&status).unwrap_or(MessageStatus::Failed),
                at_ms: u64_of(row.get(8)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How many messages are stored (for tests and metrics).
    pub fn message_count(&self) -> Result<u64> {
        let n: i64 = self
            .lock()
            .query_row("SELECT count(*) FROM messages", [], |row| row.get(0))?;
        Ok(u64_of(n))
    }

    /// How many consent requests are stored.
    pub fn consent_request_count(&self) -> Result<u64> {
        let n: i64 = self
            .lock()
            .query_row("SELECT count(*) FROM consent_requests", [], |row| {
                row.get(0)
            })?;
        Ok(u64_of(n))
    }

    /// Deliveries due at `now_ms`, oldest first; an event waits while an
    /// older one of its subject is pending for the same endpoint.
    pub fn due(&self, now_ms: u64, limit: u32) -> Result<Vec<Pending>> {
        self.due_for(None, now_ms, limit)
    }

    /// The endpoints with a delivery due at `now_ms`.
    pub fn endpoints_due(&self, now_ms: u64) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT DISTINCT endpoint FROM webhook_outbox
             WHERE state = 'pending' AND next_attempt_ms <= ?1",
        )?;
        let rows = stmt.query_map(params![i64_of(now_ms)], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// [`Self::due`] for one endpoint.
    pub fn due_to(&self, endpoint: &str, now_ms: u64, limit: u32) -> Result<Vec<Pending>> {
        self.due_for(Some(endpoint), now_ms, limit)
    }

    /// [`Self::due`], for one endpoint or all.
    fn due_for(&self, endpoint: Option<&str>, now_ms: u64, limit: u32) -> Result<Vec<Pending>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT w.event_id, w.endpoint, w.body, w.created_ms, w.attempts FROM webhook_outbox w
             WHERE (?3 IS NULL OR w.endpoint = ?3)
               AND w.state = 'pending' AND w.next_attempt_ms <= ?1
               AND NOT EXISTS (SELECT 1 FROM webhook_outbox o
                               WHERE o.endpoint = w.endpoint AND o.subject = w.subject
                                 AND o.state = 'pending' AND o.rowid < w.rowid)
             ORDER BY w.next_attempt_ms, w.rowid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![i64_of(now_ms), limit, endpoint], |row| {
            Ok(Pending {
                event_id: row.get(0)?,
                endpoint: row.get(1)?,
                body: row.get(2)?,
                created_ms: u64_of(row.get(3)?),
                attempts: u32::try_from(row.get::<_, i64>(4)?).unwrap_or(u32::MAX),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the next pending delivery is due.
    pub fn next_due(&self) -> Result<Option<u64>> {
        let next: Option<i64> = self.lock().query_row(
            "SELECT min(next_attempt_ms) FROM webhook_outbox WHERE state = 'pending'",
            [],
            |row| row.get(0),
        )?;
        Ok(next.map(u64_of))
    }

    /// Record a delivery's outcome: delivered, retried at `next_ms`, or
    /// given up (`next_ms` `None`).
    pub fn delivery_outcome(
        &self,
        p: &Pending,
        delivered: bool,
        next_ms: Option<u64>,
        error: Option<&str>,
    ) -> Result<()> {
        let state = match (delivered, next_ms) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "expired",
        };
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE webhook_outbox SET state = ?3, attempts = attempts + 1,
                next_attempt_ms = coalesce(?4, next_attempt_ms), last_error = ?5
             WHERE event_id = ?1 AND endpoint = ?2",
            params![p.event_id, p.endpoint, state, next_ms.map(i64_of), error],
        )?;
        if delivered {
            // The other daemon of the business must not post it again.
            crate::sync::record(
                &tx,
                &crate::sync::Op::Delivered {
                    event_id: p.event_id.clone(),
                    endpoint: p.endpoint.clone(),
                },
            )?;
        }
        tx.commit()?;
        drop(conn);
        if delivered {
            self.sync.mark_dirty();
        }
        self.outcomes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Count a delivery outcome recorded elsewhere (another daemon of the
    /// business delivered a webhook waiting here; crate::sync).
    pub(crate) fn outcome_recorded(&self) {
        self.outcomes.send_modify(|n| *n += 1);
    }

    /// Wakes on every delivery outcome recorded after this call (see
    /// [`Self::delivery_outcome`]).
    pub fn watch_outcomes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outcomes.subscribe()
    }

    /// Every outbox row (operations and tests).
    pub fn outbox(&self) -> Result<Vec<OutboxRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT event_id, endpoint, state, attempts, next_attempt_ms FROM webhook_outbox
             ORDER BY created_ms, event_id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(OutboxRow {
                event_id: row.get(0)?,
                endpoint: row.get(1)?,
                state: row.get(2)?,
                attempts: u32::try_from(row.get::<_, i64>(3)?).unwrap_or(u32::MAX),
                next_attempt_ms: u64_of(row.get(4)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// A search as typed, made safe for FTS5: each word a quoted phrase (so
/// `AND`, `*`, `"` and column filters are plain text), all required.
fn fts_query(search: &str) -> Option<String> {
    let words: Vec<String> = search
        .split_whitespace()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, body: &str, status: MessageStatus) -> NewMessage {
        NewMessage {
            id: id.into(),
            customer: "c1".into(),
            incoming: status == MessageStatus::Received,
            kind: "text",
            body: body.into(),
            template_id: None,
            reply_to: None,
            status,
            at_ms: 1,
        }
    }

    fn event(id: &str) -> Vec<NewEvent> {
        vec![NewEvent {
            event_id: id.into(),
            subject: id.split(':').nth(1).unwrap_or(id).into(),
            body: "{}".into(),
        }]
    }

    #[test]
    fn migrations_are_valid() {
        migrations().validate().expect("valid migrations");
    }

    #[test]
    fn messages_and_events_are_recorded_once_and_searchable() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(
            &dir.path().join("a.sqlite3"),
            vec!["http://127.0.0.1:1/h".into()],
        )
        .expect("open");
        let m = message(
            "m1",
            "Where is my parcel? Order \"AB-12\" OR",
            MessageStatus::Received,
        );
        assert!(db.record_message(&m, &event("message.m1"), 5).expect("rec"));
        assert!(
            !db.record_message(&m, &event("message.m1"), 6)
                .expect("again")
        );
        assert_eq!(db.message_count().expect("count"), 1);
        assert_eq!(db.outbox().expect("outbox").len(), 1);
        assert_eq!(
            db.messages(None, Some("parcel"), 10).expect("search").len(),
            1
        );
        // FTS syntax in a search is plain text, not an error.
        assert_eq!(
            db.messages(None, Some("\"AB-12\" OR"), 10)
                .expect("search")
                .len(),
            1
        );
        assert!(
            db.messages(None, Some("refund"), 10)
                .expect("search")
                .is_empty()
        );
        assert_eq!(db.messages(Some("c2"), None, 10).expect("list").len(), 0);
    }

    #[test]
    fn a_status_learnt_first_hand_is_queued_for_the_other_daemons_with_it() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(&dir.path().join("a.sqlite3"), vec![]).expect("open");
        db.record_message(&message("m2", "hi", MessageStatus::Sent), &[], 1)
            .expect("rec");
        let waiting = |db: &Db| crate::sync::next_batch(db).expect("batch").map(|b| b.1);
        // From another daemon: not sent back.
        db.advance_status("m2", MessageStatus::Delivered, 2, |_| Vec::new())
            .expect("delivered");
        assert_eq!(waiting(&db), None);
        db.advance_status_shared("m2", MessageStatus::Read, None, 3, |_| Vec::new())
            .expect("read");
        let batch = String::from_utf8(waiting(&db).expect("an op")).expect("utf-8");
        assert!(
            batch.contains(r#""op":"status","message_id":"m2","status":"read""#),
            "{batch}"
        );
        // A status that does not move queues nothing more.
        let (seq, _) = crate::sync::next_batch(&db).expect("batch").expect("op");
        crate::sync::sent(&db, seq).expect("sent");
        db.advance_status_shared("m2", MessageStatus::Delivered, None, 4, |_| Vec::new())
            .expect("late");
        assert_eq!(waiting(&db), None);
    }

    #[test]
    fn statuses_never_go_backwards_and_report_once() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(
            &dir.path().join("a.sqlite3"),
            vec!["http://127.0.0.1:1/h".into()],
        )
        .expect("open");
        db.record_message(&message("m2", "hi", MessageStatus::Sent), &[], 1)
            .expect("rec");
        let read = db
            .advance_status("m2", MessageStatus::Read, 2, |_| event("status.m2.read"))
            .expect("read");
        assert_eq!(read.as_deref(), Some("c1"));
        let late = db
            .advance_status("m2", MessageStatus::Delivered, 3, |_| {
                event("status.m2.delivered")
            })
            .expect("late delivered");
        assert_eq!(late, None);
        assert_eq!(
            db.status_of("m2").expect("status"),
            Some(MessageStatus::Read)
        );
        let ids: Vec<String> = db
            .outbox()
            .expect("outbox")
            .into_iter()
            .map(|r| r.event_id)
            .collect();
        assert_eq!(ids, vec!["status.m2.read".to_owned()]);
        assert_eq!(
            db.advance_status("unknown", MessageStatus::Read, 4, |_| event("x"))
                .expect("unknown"),
            None
        );
    }

    #[test]
    fn one_subjects_events_reach_an_endpoint_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(
            &dir.path().join("a.sqlite3"),
            vec!["http://127.0.0.1:1/h".into()],
        )
        .expect("open");
        db.record_message(&message("m4", "hi", MessageStatus::Sent), &[], 1)
            .expect("rec");
        db.record_message(&message("m5", "hi", MessageStatus::Sent), &[], 1)
            .expect("rec");
        for (id, status) in [
            ("m4", MessageStatus::Delivered),
            ("m4", MessageStatus::Read),
            ("m5", MessageStatus::Read),
        ] {
            db.advance_status(id, status, 2, |_| {
                event(&format!("status:{id}:{}", status.as_str()))
            })
            .expect("advance");
        }
        let due = |db: &Db| -> Vec<String> {
            db.due(10, 10)
                .expect("due")
                .into_iter()
                .map(|p| p.event_id)
                .collect()
        };
        assert_eq!(due(&db), ["status:m4:delivered", "status:m5:read"]);
        // The delivered one fails and is retried later: its read waits.
        let first = db.due(10, 1).expect("due").remove(0);
        db.delivery_outcome(&first, false, Some(50), Some("503"))
            .expect("outcome");
        assert_eq!(due(&db), ["status:m5:read"]);
        let first = Pending {
            attempts: 1,
            ..first
        };
        db.delivery_outcome(&first, true, None, None)
            .expect("outcome");
        assert_eq!(due(&db), ["status:m4:read", "status:m5:read"]);
    }

    #[test]
    fn reopening_keeps_everything_and_migrates_nothing_twice() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a.sqlite3");
        let db = Db::open(&path, vec![]).expect("open");
        db.record_message(&message("m3", "kept", MessageStatus::Sent), &[], 1)
            .expect("rec");
        drop(db);
        let db = Db::open(&path, vec![]).expect("reopen");
        assert_eq!(db.message_count().expect("count"), 1);
    }
}
