//! Assignment: an agent takes a conversation, hands it to another with a
//! note, or the daemon assigns it by round robin over the agents who are
//! available and under their cap (the choice is [`pick`], a pure function
//! with the order and the loads as inputs).
//!
//! **Available** means: not disabled, marked available, which an agent
//! is from logging in to the inbox (on either daemon of the business)
//! until logging out or stepping away with the inbox's Away button, and
//! present: with an inbox page open now (see
//! [`super::events`]: presence ends when the last page closes, when the
//! session it was opened with ends, or [`super::events::PRESENCE_TTL`]
//! after the daemon serving it last confirmed it). Both marks are kept
//! in the database and synced between the daemons (crate::sync), so the
//! daemon that assigns counts every agent, whichever daemon's inbox they
//! use. With opening hours configured,
//! nothing is assigned automatically while the business is closed
//! ([`run_assigner`](super::events::run_assigner) checks it): waiting
//! conversations are assigned when it opens.

use rusqlite::{OptionalExtension, params};

use crate::db::Db;

use super::agents::Agent;
use super::conversations::{self, WINDOW_MS};
use super::{InboxError, Result};

/// An agent who could take a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The agent.
    pub id: i64,
    /// Open conversations assigned now.
    pub load: u32,
    /// At most this many.
    pub cap: u32,
}

/// Round robin: the first candidate under its cap after `last` in id
/// order, wrapping around; `None` when everyone is full.
pub fn pick(candidates: &[Candidate], last: Option<i64>) -> Option<i64> {
    let mut free: Vec<&Candidate> = candidates.iter().filter(|c| c.load < c.cap).collect();
    free.sort_by_key(|c| c.id);
    let after = last.and_then(|l| free.iter().find(|c| c.id > l));
    after.or_else(|| free.first()).map(|c| c.id)
}

/// Assign `customer` to `agent` (or to nobody).
pub fn assign(db: &Db, customer: &str, agent: Option<i64>) -> Result<()> {
    conversations::get(db, customer)?;
    if let Some(id) = agent {
        let active: Option<bool> = db
            .connection()
            .query_row(
                "SELECT NOT disabled FROM agents WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        if active != Some(true) {
            return Err(InboxError::Invalid(
                "pick an agent who is not disabled".into(),
            ));
        }
    }
    let mut conn = db.connection();
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO inbox_conversations (customer, assignee) VALUES (?1, ?2)
         ON CONFLICT (customer) DO UPDATE SET assignee = ?2",
        params![customer, agent],
    )?;
    crate::sync::assigned(&tx, &db.sync, customer)?;
    tx.commit()?;
    drop(conn);
    db.changed();
    Ok(())
}

/// Hand `customer` from `from` to the agent `to`, leaving `note` for them
/// (an internal note, never sent to the customer).
pub fn hand_off(
    db: &Db,
    customer: &str,
    from: &Agent,
    to: &Agent,
    note: &str,
    now_ms: u64,
) -> Result<()> {
    let note = note.trim();
    let text = if note.is_empty() {
        format!("Handed off to {}.", to.name)
    } else {
        format!("Handed off to {}: {note}", to.name)
    };
    // The note is checked first: a refused one hands nothing off.
    conversations::check_text("note", &text)?;
    assign(db, customer, Some(to.id))?;
    conversations::add_note(db, customer, from.id, &text, now_ms)
}

/// Assign every active unassigned conversation (the customer wrote in
/// the last 24 hours) by round robin over the available agents (see the
/// module's documentation); returns how many were assigned.
pub fn auto_assign(db: &Db, now_ms: u64) -> Result<usize> {
    let since = i64::try_from(now_ms.saturating_sub(WINDOW_MS)).unwrap_or(0);
    let mut conn = db.connection();
    let tx = conn.transaction()?;
    let waiting: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT c.customer FROM conversations c
             LEFT JOIN inbox_conversations s ON s.customer = c.customer
             WHERE s.assignee IS NULL AND c.last_inbound_ms >= ?1
             ORDER BY c.last_inbound_ms",
        )?;
        let rows = stmt.query_map(params![since], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if waiting.is_empty() {
        return Ok(0);
    }
    let mut candidates: Vec<Candidate> = {
        let mut stmt = tx.prepare(
            "SELECT a.id, a.cap, (SELECT count(*) FROM inbox_conversations s
                                  JOIN conversations c ON c.customer = s.customer
                                  WHERE s.assignee = a.id AND c.last_inbound_ms >= ?1)
             FROM agents a
             WHERE a.available AND a.present_until_ms > ?2 AND NOT a.disabled ORDER BY a.id",
        )?;
        let rows = stmt.query_map(
            params![since, i64::try_from(now_ms).unwrap_or(i64::MAX)],
            |r| {
                Ok(Candidate {
                    id: r.get(0)?,
                    cap: r.get(1)?,
                    load: r.get(2)?,
                })
            },
        )?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if candidates.is_empty() {
        return Ok(0);
    }
    let mut last: Option<i64> = tx
        .query_row(
            "SELECT last_agent FROM inbox_round_robin WHERE only_row = 0",
            [],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let mut assigned = 0;
    for customer in waiting {
        let Some(id) = pick(&candidates, last) else {
            break;
        };
        tx.execute(
            "INSERT INTO inbox_conversations (customer, assignee) VALUES (?1, ?2)
             ON CONFLICT (customer) DO UPDATE SET assignee = ?2",
            params![customer, id],
        )?;
        crate::sync::assigned(&tx, &db.sync, &customer)?;
        if let Some(c) = candidates.iter_mut().find(|c| c.id == id) {
            c.load += 1;
        }
        last = Some(id);
        assigned += 1;
    }
    tx.execute(
        "INSERT INTO inbox_round_robin (only_row, last_agent) VALUES (0, ?1)
         ON CONFLICT (only_row) DO UPDATE SET last_agent = ?1",
        params![last],
    )?;
    tx.commit()?;
    drop(conn);
    if assigned > 0 {
        db.changed();
    }
    Ok(assigned)
}

#[cfg(test)]
mod tests {
    use super::super::agents::{set_available, set_present};
    use super::*;

    /// Available, with a page open until `until`.
    fn here(db: &Db, id: i64, until: u64, now: u64) {
        set_available(db, id, true).expect("available");
        set_present(db, id, until, now).expect("present");
    }

    fn c(id: i64, load: u32, cap: u32) -> Candidate {
        Candidate { id, load, cap }
    }

    fn incoming(db: &Db, customer: &str, at_ms: u64) {
        let m = crate::db::NewMessage {
            id: format!("m-{customer}"),
            customer: customer.into(),
            incoming: true,
            kind: "text",
            body: "hello".into(),
            template_id: None,
            reply_to: None,
            status: crate::status::MessageStatus::Received,
            at_ms,
        };
        db.record_message(&m, &[], at_ms).expect("record");
    }

    #[test]
    fn waiting_conversations_go_round_robin_to_available_agents_under_their_cap() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(&dir.path().join("a.sqlite3"), vec![]).expect("open");
        let ana = super::super::agents::add(&db, "ana", "long enough pw", false, 1).expect("ana");
        let bob = super::super::agents::add(&db, "bob", "long enough pw", false, 1).expect("bob");
        let cid = super::super::agents::add(&db, "cid", "long enough pw", false, 1).expect("cid");
        db.connection()
            .execute("UPDATE agents SET cap = 1 WHERE id = ?1", params![bob.id])
            .expect("cap");
        let now = 10 * WINDOW_MS;
        for c in ["c1", "c2", "c3", "c4"] {
            incoming(&db, c, now - 1000);
        }
        incoming(&db, "old", now - WINDOW_MS - 1);
        assert_eq!(auto_assign(&db, now).expect("nobody available"), 0);
        // Cid is away; Bob takes one (his cap), Ana the rest.
        here(&db, ana.id, now + 1, now);
        here(&db, bob.id, now + 1, now);
        assert_eq!(auto_assign(&db, now).expect("assign"), 4);
        let owner = |c: &str| {
            conversations::get(&db, c)
                .expect("get")
                .assignee
                .map(|a| a.1)
        };
        assert_eq!(owner("c1").as_deref(), Some("ana"));
        assert_eq!(owner("c2").as_deref(), Some("bob"));
        assert_eq!(owner("c3").as_deref(), Some("ana"));
        assert_eq!(owner("c4").as_deref(), Some("ana"));
        assert_eq!(
            owner("old"),
            None,
            "a closed conversation waits for a manual pick"
        );
        // The order goes on from the last one picked.
        incoming(&db, "c5", now);
        here(&db, cid.id, now + 1, now);
        assert_eq!(auto_assign(&db, now).expect("assign"), 1);
        assert_eq!(owner("c5").as_deref(), Some("cid"));
        // A hand-off leaves a note for the next agent.
        hand_off(&db, "c5", &cid, &ana, "VIP", now).expect("hand off");
        assert_eq!(owner("c5").as_deref(), Some("ana"));
        let notes = conversations::notes(&db, "c5").expect("notes");
        assert_eq!(notes[0].body, "Handed off to ana: VIP");
        assert_eq!(notes[0].author, "cid");
        assert!(matches!(
            assign(&db, "nobody-here", Some(ana.id)),
            Err(InboxError::NotFound)
        ));
        // A hand-off whose note is refused hands nothing off (before, the
        // conversation moved and only the note was refused).
        let long = "x".repeat(conversations::MAX_NOTE_LEN);
        assert!(matches!(
            hand_off(&db, "c5", &ana, &bob, &long, now),
            Err(InboxError::Invalid(_))
        ));
        assert_eq!(owner("c5").as_deref(), Some("ana"), "handed off anyway");
        assert_eq!(conversations::notes(&db, "c5").expect("notes").len(), 1);
    }

    /// Disabling an agent gives back the conversations assigned to them:
    /// automatic assignment then hands them to someone present (before,
    /// they stayed with the disabled agent, in nobody's list).
    #[test]
    fn a_disabled_agents_conversations_go_back_to_assignment() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(&dir.path().join("a.sqlite3"), vec![]).expect("open");
        let ana = super::super::agents::add(&db, "ana", "long enough pw", false, 1).expect("ana");
        let bob = super::super::agents::add(&db, "bob", "long enough pw", false, 1).expect("bob");
        let now = 10 * WINDOW_MS;
        for c in ["c1", "c2"] {
            incoming(&db, c, now - 1000);
            assign(&db, c, Some(bob.id)).expect("assign");
        }
        here(&db, ana.id, now + 1, now);
        super::super::agents::set_disabled(&db, bob.id, true).expect("disable");
        assert_eq!(auto_assign(&db, now).expect("assign"), 2);
        for c in ["c1", "c2"] {
            let owner = conversations::get(&db, c).expect("get").assignee;
            assert_eq!(owner.map(|a| a.1).as_deref(), Some("ana"), "{c}");
        }
    }

    #[test]
    fn only_agents_present_now_are_assigned() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(&dir.path().join("a.sqlite3"), vec![]).expect("open");
        let ana = super::super::agents::add(&db, "ana", "long enough pw", false, 1).expect("ana");
        let now = 10 * WINDOW_MS;
        incoming(&db, "c1", now - 1000);
        // Available (logged in) but with no page open: not assigned.
        set_available(&db, ana.id, true).expect("available");
        assert_eq!(auto_assign(&db, now).expect("assign"), 0);
        // Her page closed (present until now): still not.
        set_present(&db, ana.id, now, now).expect("gone");
        assert_eq!(auto_assign(&db, now).expect("assign"), 0);
        // Her presence lapsed (no word from the page since): not either.
        set_present(&db, ana.id, now + 5, now).expect("present");
        assert_eq!(auto_assign(&db, now + 5).expect("assign"), 0);
        // Present now: assigned.
        assert_eq!(auto_assign(&db, now + 4).expect("assign"), 1);
    }

    #[test]
    fn round_robin_goes_around_and_skips_full_agents() {
        let agents = [c(1, 0, 2), c(2, 0, 2), c(3, 2, 2)];
        assert_eq!(pick(&agents, None), Some(1));
        assert_eq!(pick(&agents, Some(1)), Some(2));
        assert_eq!(pick(&agents, Some(2)), Some(1), "3 is full: wraps to 1");
        assert_eq!(pick(&agents, Some(7)), Some(1));
        assert_eq!(pick(&[c(1, 3, 3)], None), None);
        assert_eq!(pick(&[], None), None);
    }
}
