//! The inbox's agents: names, Argon2id password hashes (PHC strings; the
//! password itself is never stored), the admin role, a disabled flag and
//! how many conversations each takes at most (the assignment cap).

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use crate::db::Db;

use super::{InboxError, Result};

/// The shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 10;
/// The longest agent name (shown in lists and notes).
pub const MAX_NAME_LEN: usize = 40;
/// Conversations an agent takes at most unless the admin says otherwise.
pub const DEFAULT_CAP: u32 = 10;

/// An agent as the inbox shows it (no hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    /// Its row id.
    pub id: i64,
    /// Its login name.
    pub name: String,
    /// Manages agents.
    pub admin: bool,
    /// May not log in; keeps its history.
    pub disabled: bool,
    /// At most this many open conversations assigned automatically.
    pub cap: u32,
    /// Takes automatically assigned conversations (set at login and by
    /// the agent; cleared at logout and when the agent steps away).
    pub available: bool,
    /// Until when an inbox page of theirs is known to be open (ms since
    /// the Unix epoch; see [`super::events`]): assigned automatically
    /// only while available and present.
    pub present_until_ms: u64,
}

/// Check a name: 1 to 40 letters, digits, `.`, `-`, `_`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(InboxError::Invalid(format!(
            "an agent name is 1 to {MAX_NAME_LEN} letters, digits, '.', '-' or '_'"
        )))
    }
}

fn hash_password(password: &str) -> Result<String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(InboxError::Invalid(format!(
            "a password has at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    let salt: [u8; 16] = rand::random();
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| InboxError::Invalid("the password cannot be hashed".into()))
}

fn row_to_agent(row: &rusqlite::Row<'_>) -> rusqlite::Result<Agent> {
    Ok(Agent {
        id: row.get(0)?,
        name: row.get(1)?,
        admin: row.get(2)?,
        disabled: row.get(3)?,
        cap: row.get(4)?,
        available: row.get(5)?,
        present_until_ms: u64::try_from(row.get::<_, i64>(6)?).unwrap_or(0),
    })
}

const COLUMNS: &str = "id, name, admin, disabled, cap, available, present_until_ms";

/// Add an agent; [`InboxError::Invalid`] for a bad name or short password,
/// [`InboxError::NameTaken`] if the name exists (nothing changes then).
pub fn add(db: &Db, name: &str, password: &str, admin: bool, now_ms: u64) -> Result<Agent> {
    check_name(name)?;
    let hash = Zeroizing::new(hash_password(password)?);
    let conn = db.connection();
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO agents (name, password_hash, admin, cap, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            name,
            hash.as_str(),
            admin,
            DEFAULT_CAP,
            i64::try_from(now_ms).unwrap_or(i64::MAX)
        ],
    )?;
    if inserted == 0 {
        return Err(InboxError::NameTaken(name.to_owned()));
    }
    let id = conn.last_insert_rowid();
    crate::sync::agent_changed(&conn, &db.sync, id)?;
    Ok(Agent {
        id,
        name: name.to_owned(),
        admin,
        disabled: false,
        cap: DEFAULT_CAP,
        available: false,
        present_until_ms: 0,
    })
}

/// The agent `name` if `password` is its password and it is not disabled.
/// Takes the same time whether or not the name exists (a dummy hash is
/// checked), so names cannot be probed by timing.
pub fn check_login(db: &Db, name: &str, password: &str) -> Result<Option<Agent>> {
    let found: Option<(Agent, String)> = db
        .connection()
        .query_row(
            &format!("SELECT {COLUMNS}, password_hash FROM agents WHERE name = ?1"),
            params![name],
            |row| Ok((row_to_agent(row)?, row.get(7)?)),
        )
        .optional()?;
    let (agent, stored) = match found {
        Some((agent, stored)) => (Some(agent), Zeroizing::new(stored)),
        None => (None, Zeroizing::new(dummy_hash().to_owned())),
    };
    let matches = PasswordHash::new(stored.as_str()).ok().is_some_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    });
    Ok(agent.filter(|a| matches && !a.disabled))
}

/// A valid Argon2id hash of a random password, checked for unknown names.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let password: [u8; 16] = rand::random();
        let salt: [u8; 16] = rand::random();
        Argon2::default()
            .hash_password_with_salt(&password, &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// One agent by id.
pub fn get(db: &Db, id: i64) -> Result<Option<Agent>> {
    Ok(db
        .connection()
        .query_row(
            &format!("SELECT {COLUMNS} FROM agents WHERE id = ?1"),
            params![id],
            row_to_agent,
        )
        .optional()?)
}

/// Every agent, by name.
pub fn list(db: &Db) -> Result<Vec<Agent>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM agents ORDER BY name"))?;
    let rows = stmt.query_map([], row_to_agent)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Mark agent `id` available for automatic assignment, or away: a
/// change synced to the business's other daemons (crate::sync), so the
/// daemon that assigns counts an agent whichever daemon's inbox they use.
pub fn set_available(db: &Db, id: i64, available: bool) -> Result<()> {
    let mut conn = db.connection();
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE agents SET available = ?2 WHERE id = ?1 AND available != ?2",
        params![id, available],
    )?;
    if changed == 0 {
        return Ok(());
    }
    crate::sync::availability_changed(&tx, &db.sync, id)?;
    tx.commit()?;
    drop(conn);
    db.changed();
    Ok(())
}

/// Mark agent `id` present until `until_ms` (in the past: gone), by the
/// daemon's clock `now_ms`; synced like availability. The inbox's pages
/// hear of it only when the agent comes or goes, not when a presence is
/// extended.
pub fn set_present(db: &Db, id: i64, until_ms: u64, now_ms: u64) -> Result<()> {
    let mut conn = db.connection();
    let tx = conn.transaction()?;
    let flipped = crate::sync::presence_changed(&tx, &db.sync, id, until_ms, now_ms)?;
    tx.commit()?;
    drop(conn);
    if flipped {
        db.changed();
    }
    Ok(())
}

/// Disable or re-enable an agent; a disabled agent's sessions end and
/// their conversations go back to automatic assignment.
pub fn set_disabled(db: &Db, id: i64, disabled: bool) -> Result<()> {
    let mut conn = db.connection();
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE agents SET disabled = ?2 WHERE id = ?1",
        params![id, disabled],
    )?;
    if changed == 0 {
        return Err(InboxError::NotFound);
    }
    if disabled {
        tx.execute(
            "DELETE FROM agent_sessions WHERE agent_id = ?1",
            params![id],
        )?;
        // Their conversations go back to assignment (to someone present),
        // on every daemon of the business.
        let theirs: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT customer FROM inbox_conversations WHERE assignee = ?1")?;
            let rows = stmt.query_map(params![id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for customer in &theirs {
            tx.execute(
                "UPDATE inbox_conversations SET assignee = NULL WHERE customer = ?1",
                params![customer],
            )?;
            crate::sync::assigned(&tx, &db.sync, customer)?;
        }
    }
    crate::sync::agent_changed(&tx, &db.sync, id)?;
    tx.commit()?;
    drop(conn);
    db.changed();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_stored_as_argon2id_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(&dir.path().join("a.sqlite3"), vec![]).expect("open");
        let ana = add(&db, "ana", "correct horse battery", true, 1).expect("add");
        assert!(ana.admin);
        let stored: String = db
            .connection()
            .query_row("SELECT password_hash FROM agents", [], |r| r.get(0))
            .expect("row");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        assert_eq!(
            check_login(&db, "ana", "correct horse battery").expect("login"),
            Some(ana.clone())
        );
        assert_eq!(
            check_login(&db, "ana", "wrong password!").expect("login"),
            None
        );
        assert_eq!(
            check_login(&db, "bob", "correct horse battery").expect("login"),
            None
        );
        assert!(matches!(
            add(&db, "ana", "another password", false, 2),
            Err(InboxError::NameTaken(_))
        ));
        assert!(matches!(
            add(&db, "bob", "short", false, 2),
            Err(InboxError::Invalid(_))
        ));
        assert!(matches!(
            add(&db, "<b>", "long enough password", false, 2),
            Err(InboxError::Invalid(_))
        ));
        assert_eq!(list(&db).expect("list").len(), 1);
        set_disabled(&db, ana.id, true).expect("disable");
        assert_eq!(
            check_login(&db, "ana", "correct horse battery").expect("login"),
            None
        );
    }
}
