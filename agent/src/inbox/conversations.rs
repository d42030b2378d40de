//! What the inbox shows of conversations: the list with unread counts and
//! assignees, one conversation's messages (oldest first), the 24-hour
//! window, internal notes (kept here, never sent), canned replies, and
//! reading position. Messages themselves are [`crate::db`]'s.

use rusqlite::{OptionalExtension, params};

use crate::db::{Db, MessageRow};

use super::{InboxError, Result};

/// How long the customer's last message keeps free-form replies allowed.
pub const WINDOW_MS: u64 = 24 * 3600 * 1000;
/// The longest internal note or canned reply.
pub const MAX_NOTE_LEN: usize = 4096;
/// Messages shown on a conversation page (the latest).
pub const PAGE_MESSAGES: u32 = 200;

/// Which conversations a list shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Every conversation.
    All,
    /// The agent's own.
    Mine,
    /// Nobody's yet.
    Unassigned,
    /// Message requests: customers writing for the first time whom no
    /// agent accepted or answered yet.
    Requests,
}

impl View {
    /// From the `view` query value (anything else is `All`).
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("mine") => Self::Mine,
            Some("unassigned") => Self::Unassigned,
            Some("requests") => Self::Requests,
            _ => Self::All,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Mine => "mine",
            Self::Unassigned => "unassigned",
            Self::Requests => "requests",
        }
    }
}

/// One conversation in a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The customer's account id.
    pub customer: String,
    /// The number the customer shared through a consent request.
    pub phone: Option<String>,
    /// The latest message either way.
    pub last_message_ms: u64,
    /// The customer's latest message.
    pub last_inbound_ms: Option<u64>,
    /// Customer messages no agent has opened yet.
    pub unread: u64,
    /// The assigned agent: id and name.
    pub assignee: Option<(i64, String)>,
    /// The latest message's text.
    pub last_text: String,
    /// A message request: the customer's first contact, not yet accepted
    /// or answered.
    pub request: bool,
    /// Messages of this customer the client library flagged.
    pub flagged: u64,
}

/// The 24-hour window at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Free-form text is allowed.
    pub open: bool,
    /// Time left, ms (0 when closed).
    pub left_ms: u64,
}

impl Window {
    /// The window for a customer whose last message was at `last_inbound_ms`.
    pub fn at(last_inbound_ms: Option<u64>, now_ms: u64) -> Self {
        let until = last_inbound_ms.map_or(0, |t| t.saturating_add(WINDOW_MS));
        let left_ms = until.saturating_sub(now_ms);
        Self {
            open: left_ms > 0,
            left_ms,
        }
    }

    /// "open, 23 h 05 min left" or "closed".
    pub fn describe(&self) -> String {
        if !self.open {
            return "closed".into();
        }
        let minutes = self.left_ms.div_ceil(60_000);
        format!("open, {} h {:02} min left", minutes / 60, minutes % 60)
    }
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const SUMMARY: &str = "
SELECT c.customer, c.phone, c.last_message_ms, c.last_inbound_ms,
    (SELECT count(*) FROM messages m WHERE m.customer = c.customer AND m.direction = 'in'
        AND m.seq > coalesce(s.read_seq, 0)),
    s.assignee, a.name,
    (SELECT m.body FROM messages m WHERE m.customer = c.customer ORDER BY m.seq DESC LIMIT 1),
    (EXISTS (SELECT 1 FROM message_requests r WHERE r.customer = c.customer
                AND r.accepted_ms IS NULL)
     AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.customer = c.customer
                AND m.direction = 'out')),
    (SELECT count(DISTINCT v.message_id) FROM violations v WHERE v.customer = c.customer)
FROM conversations c
LEFT JOIN inbox_conversations s ON s.customer = c.customer
LEFT JOIN agents a ON a.id = s.assignee";

fn summary(row: &rusqlite::Row<'_>) -> rusqlite::Result<Summary> {
    let assignee: Option<i64> = row.get(5)?;
    let name: Option<String> = row.get(6)?;
    Ok(Summary {
        customer: row.get(0)?,
        phone: row.get(1)?,
        last_message_ms: u64_of(row.get(2)?),
        last_inbound_ms: row.get::<_, Option<i64>>(3)?.map(u64_of),
        unread: u64_of(row.get(4)?),
        assignee: assignee.zip(name),
        last_text: row.get::<_, Option<String>>(7)?.unwrap_or_default(),
        request: row.get(8)?,
        flagged: u64_of(row.get(9)?),
    })
}

/// Conversations with messages, latest first.
pub fn list(db: &Db, view: View, me: i64, limit: u32) -> Result<Vec<Summary>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(&format!(
        "{SUMMARY}
         WHERE EXISTS (SELECT 1 FROM messages m WHERE m.customer = c.customer)
           AND (?1 = 'all' OR (?1 = 'mine' AND s.assignee = ?2)
                OR (?1 = 'unassigned' AND s.assignee IS NULL)
                OR (?1 = 'requests' AND {PENDING_REQUEST}))
         ORDER BY c.last_message_ms DESC, c.customer LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![view.as_str(), me, limit], summary)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A conversation that is a pending message request (see
/// [`Summary::request`]), as an SQL condition on `c.customer`.
const PENDING_REQUEST: &str = "EXISTS (SELECT 1 FROM message_requests r
        WHERE r.customer = c.customer AND r.accepted_ms IS NULL)
    AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.customer = c.customer
        AND m.direction = 'out')";

/// Accept `customer`'s message request (an agent pressed Accept); false
/// when there was none pending.
pub fn accept_request(db: &Db, customer: &str, agent_id: i64, now_ms: u64) -> Result<bool> {
    let changed = db.connection().execute(
        "UPDATE message_requests SET accepted_ms = ?2, accepted_by = ?3
         WHERE customer = ?1 AND accepted_ms IS NULL",
        params![
            customer,
            i64::try_from(now_ms).unwrap_or(i64::MAX),
            agent_id
        ],
    )?;
    if changed > 0 {
        db.changed();
    }
    Ok(changed > 0)
}

/// Undo [`accept_request`] by `agent_id` (the device could not accept it
/// after all): the conversation is a message request again. Whether it
/// was.
pub fn undo_accept(db: &Db, customer: &str, agent_id: i64) -> Result<bool> {
    let changed = db.connection().execute(
        "UPDATE message_requests SET accepted_ms = NULL, accepted_by = NULL
         WHERE customer = ?1 AND accepted_by = ?2",
        params![customer, agent_id],
    )?;
    if changed > 0 {
        db.changed();
    }
    Ok(changed > 0)
}

/// A violation mark: a message of the customer the client library
/// flagged, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flag {
    /// The flagged message's id (it may not be shown: a refused message
    /// or a forged reply is kept as evidence only).
    pub message_id: String,
    /// The client library's explanation.
    pub reason: String,
    /// When it was flagged.
    pub at_ms: u64,
}

/// A conversation's violation marks, oldest first.
pub fn flags(db: &Db, customer: &str) -> Result<Vec<Flag>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(
        "SELECT message_id, reason, at_ms FROM violations WHERE customer = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![customer], |row| {
        Ok(Flag {
            message_id: row.get(0)?,
            reason: row.get(1)?,
            at_ms: u64_of(row.get(2)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One conversation.
pub fn get(db: &Db, customer: &str) -> Result<Summary> {
    db.connection()
        .query_row(
            &format!("{SUMMARY} WHERE c.customer = ?1"),
            params![customer],
            summary,
        )
        .optional()?
        .ok_or(InboxError::NotFound)
}

/// The latest messages of a conversation, oldest first.
pub fn messages(db: &Db, customer: &str) -> Result<Vec<MessageRow>> {
    let mut rows = db.messages(Some(customer), None, PAGE_MESSAGES)?;
    rows.reverse();
    Ok(rows)
}

/// Mark every message of `customer` read (the inbox is shared: reading is
/// for the whole team).
pub fn mark_read(db: &Db, customer: &str) -> Result<bool> {
    let conn = db.connection();
    let changed = conn.execute(
        "INSERT INTO inbox_conversations (customer, read_seq)
         SELECT ?1, coalesce(max(seq), 0) FROM messages WHERE customer = ?1
         ON CONFLICT (customer) DO UPDATE SET read_seq = excluded.read_seq
         WHERE read_seq < excluded.read_seq",
        params![customer],
    )?;
    Ok(changed > 0)
}

/// An internal note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Who wrote it.
    pub author: String,
    /// What it says.
    pub body: String,
    /// When.
    pub at_ms: u64,
}

/// Refuse an empty `what` (a note, a canned reply) or one longer than
/// [`MAX_NOTE_LEN`].
pub(super) fn check_text(what: &str, body: &str) -> Result<()> {
    if body.trim().is_empty() {
        return Err(InboxError::Invalid(format!("the {what} is empty")));
    }
    if body.len() > MAX_NOTE_LEN {
        return Err(InboxError::Invalid(format!(
            "the {what} is {} bytes; at most {MAX_NOTE_LEN}",
            body.len()
        )));
    }
    Ok(())
}

/// Add an internal note to a conversation (never sent to the customer).
pub fn add_note(db: &Db, customer: &str, agent_id: i64, body: &str, now_ms: u64) -> Result<()> {
    check_text("note", body)?;
    get(db, customer)?;
    // A random id: the note's identity between daemons (crate::sync).
    let uid = hex::encode(rand::random::<[u8; 16]>());
    let mut conn = db.connection();
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO inbox_notes (uid, customer, agent_id, body, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            uid,
            customer,
            agent_id,
            body.trim(),
            i64::try_from(now_ms).unwrap_or(i64::MAX)
        ],
    )?;
    crate::sync::noted(&tx, &db.sync, &uid)?;
    tx.commit()?;
    drop(conn);
    db.changed();
    Ok(())
}

/// A conversation's notes, oldest first.
pub fn notes(db: &Db, customer: &str) -> Result<Vec<Note>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(
        "SELECT a.name, n.body, n.at_ms FROM inbox_notes n JOIN agents a ON a.id = n.agent_id
         WHERE n.customer = ?1 ORDER BY n.id",
    )?;
    let rows = stmt.query_map(params![customer], |row| {
        Ok(Note {
            author: row.get(0)?,
            body: row.get(1)?,
            at_ms: u64_of(row.get(2)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A canned reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canned {
    /// Its id.
    pub id: i64,
    /// A short title.
    pub title: String,
    /// The text sent.
    pub body: String,
}

/// Every canned reply, by title.
pub fn canned(db: &Db) -> Result<Vec<Canned>> {
    let conn = db.connection();
    let mut stmt = conn.prepare("SELECT id, title, body FROM canned_replies ORDER BY title")?;
    let rows = stmt.query_map([], |row| {
        Ok(Canned {
            id: row.get(0)?,
            title: row.get(1)?,
            body: row.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Add a canned reply.
pub fn add_canned(db: &Db, title: &str, body: &str) -> Result<()> {
    check_text("title", title)?;
    check_text("reply", body)?;
    let mut conn = db.connection();
    let tx = conn.transaction()?;
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO canned_replies (title, body) VALUES (?1, ?2)",
        params![title.trim(), body.trim()],
    )?;
    if inserted == 0 {
        return Err(InboxError::Invalid(format!(
            "a canned reply is titled {:?} already",
            title.trim()
        )));
    }
    crate::sync::canned_changed(&tx, &db.sync, title.trim())?;
    tx.commit()?;
    Ok(())
}

/// One canned reply's text.
pub fn canned_body(db: &Db, id: i64) -> Result<String> {
    db.connection()
        .query_row(
            "SELECT body FROM canned_replies WHERE id = ?1",
            params![id],
            |row| row.get(0),
        )
        .optional()?
        .ok_or(InboxError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_leaves_requests_when_accepted_or_answered() {
        use crate::db::NewMessage;
        use crate::status::MessageStatus;
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(&dir.path().join("a.sqlite3"), vec![]).expect("open");
        let message = |id: &str, customer: &str, incoming| NewMessage {
            id: id.into(),
            customer: customer.into(),
            incoming,
            kind: "text",
            body: "hi".into(),
            template_id: None,
            reply_to: None,
            status: if incoming {
                MessageStatus::Received
            } else {
                MessageStatus::Sent
            },
            at_ms: 1,
        };
        let requests = |db: &Db| -> Vec<String> {
            list(db, View::Requests, 0, 10)
                .expect("list")
                .into_iter()
                .map(|c| c.customer)
                .collect()
        };
        for customer in ["c1", "c2", "c3"] {
            db.record_message(&message(&format!("{customer}-in"), customer, true), &[], 1)
                .expect("record");
        }
        db.note_request("c1", 1).expect("request");
        db.note_request("c2", 1).expect("request");
        assert_eq!(requests(&db), ["c1", "c2"]);
        assert!(get(&db, "c1").expect("get").request);
        assert!(!get(&db, "c3").expect("get").request, "c3 is known");
        // Answering c1 makes it known; accepting c2 too, once.
        db.record_message(&message("c1-out", "c1", false), &[], 2)
            .expect("record");
        assert!(accept_request(&db, "c2", 0, 3).is_err(), "no agent 0");
        crate::inbox::agents::add(&db, "ana", "ana-long-password", false, 1).expect("agent");
        assert!(accept_request(&db, "c2", 1, 3).expect("accept"));
        assert!(!accept_request(&db, "c2", 1, 4).expect("again"));
        assert!(requests(&db).is_empty());
        assert_eq!(list(&db, View::All, 0, 10).expect("all").len(), 3);
        // Marks are counted per message.
        db.record_violation("c3", "m", "forged", 5).expect("flag");
        db.record_violation("c3", "m", "forged", 6).expect("again");
        assert_eq!(get(&db, "c3").expect("get").flagged, 1);
        assert_eq!(flags(&db, "c3").expect("flags").len(), 1);
    }

    #[test]
    fn the_window_counts_down_and_closes() {
        assert_eq!(Window::at(None, 5).describe(), "closed");
        let w = Window::at(Some(1_000), 1_000 + 60_000);
        assert!(w.open);
        assert_eq!(w.describe(), "open, 23 h 59 min left");
        assert!(!Window::at(Some(1_000), 1_000 + WINDOW_MS).open);
    }
}
