//! Sessions, CSRF tokens and the login rate limit.
//!
//! A session is a random 32-byte token in an `HttpOnly`, `SameSite=Strict`
//! cookie (`Secure` under TLS); the database keeps only its SHA-256, so a
//! copy of the database opens no session. Each form carries a CSRF token
//! derived from the session token (SHA-256 under a distinct label), checked
//! in constant time; the login form, before any session, uses a random
//! token in a cookie and in the form that must match (double submit).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::serve::IncomingStream;
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::agents::{self, Agent};
use super::{InboxError, InboxState, Result};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "comptoir_session";
/// The login form's CSRF cookie.
pub const LOGIN_COOKIE: &str = "comptoir_login";
/// How long a session lasts: a working day and then some.
pub const SESSION_MS: u64 = 12 * 3600 * 1000;
/// Failed logins allowed per name and address in [`LIMIT_WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// The window of the login rate limit.
pub const LIMIT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Name-and-address pairs counted at most (see [`LoginLimiter::attempt`]).
const MAX_TRACKED: usize = 10_000;
/// Names one address may be counted under at once: an address trying
/// many names is refused new ones (not the others), and filling the table
/// takes [`MAX_TRACKED`] / this many addresses.
const MAX_NAMES_PER_ADDRESS: usize = 50;

fn sha256_hex(label: &[u8], token: &str) -> String {
    let mut h = Sha256::new();
    h.update(label);
    h.update(token.as_bytes());
    hex::encode(h.finalize())
}

/// A new random token (64 hex digits).
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The CSRF token of the session `token`.
pub fn csrf_of(token: &str) -> String {
    sha256_hex(b"comptoir inbox csrf\0", token)
}

/// Whether `given` equals `expected`, in constant time.
pub fn tokens_match(given: &str, expected: &str) -> bool {
    !expected.is_empty() && given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Open a session for `agent`: returns the token for the cookie.
pub fn open(state: &InboxState, agent: &Agent) -> Result<String> {
    let token = new_token();
    let now = state.clock.now_ms();
    let conn = state.db.connection();
    conn.execute(
        "DELETE FROM agent_sessions WHERE expires_ms < ?1",
        params![i64::try_from(now).unwrap_or(i64::MAX)],
    )?;
    conn.execute(
        "INSERT INTO agent_sessions (token_sha256, agent_id, expires_ms) VALUES (?1, ?2, ?3)",
        params![
            sha256_hex(b"", &token),
            agent.id,
            i64::try_from(now + SESSION_MS).unwrap_or(i64::MAX)
        ],
    )?;
    Ok(token)
}

/// End the session `token`.
pub fn close(state: &InboxState, token: &str) -> Result<()> {
    state.db.connection().execute(
        "DELETE FROM agent_sessions WHERE token_sha256 = ?1",
        params![sha256_hex(b"", token)],
    )?;
    Ok(())
}

/// A cookie value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for the inbox.
pub fn set_cookie(state: &InboxState, name: &str, value: &str, max_age_s: u64) -> String {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    format!("{name}={value}; Path=/inbox; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

/// The logged-in agent of a request, with the CSRF token its forms carry.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who.
    pub agent: Agent,
    /// The token forms must send back.
    pub csrf: String,
    /// The session token (to log out).
    token: String,
    /// When the session ends (ms since the Unix epoch, daemon's clock).
    pub expires_ms: u64,
}

impl Session {
    /// Check a form's CSRF token.
    pub fn check_csrf(&self, given: &str) -> Result<()> {
        if tokens_match(given, &self.csrf) {
            Ok(())
        } else {
            Err(InboxError::Csrf)
        }
    }

    /// Refuse unless an admin.
    pub fn require_admin(&self) -> Result<()> {
        if self.agent.admin {
            Ok(())
        } else {
            Err(InboxError::AdminOnly)
        }
    }

    /// The session token.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl FromRequestParts<InboxState> for Session {
    type Rejection = InboxError;

    async fn from_request_parts(parts: &mut Parts, state: &InboxState) -> Result<Self> {
        let token = cookie(&parts.headers, SESSION_COOKIE)
            .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or(InboxError::LoggedOut)?
            .to_owned();
        let now = i64::try_from(state.clock.now_ms()).unwrap_or(i64::MAX);
        let found: Option<(i64, i64)> = state
            .db
            .connection()
            .query_row(
                "SELECT agent_id, expires_ms FROM agent_sessions WHERE token_sha256 = ?1 AND expires_ms >= ?2",
                params![sha256_hex(b"", &token), now],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let expires_ms = found.map_or(0, |(_, e)| u64::try_from(e).unwrap_or(0));
        let agent = match found {
            Some((id, _)) => agents::get(&state.db, id)?,
            None => None,
        }
        .filter(|a| !a.disabled)
        .ok_or(InboxError::LoggedOut)?;
        Ok(Self {
            agent,
            csrf: csrf_of(&token),
            token,
            expires_ms,
        })
    }
}

/// When the session `token` ends, if it is still open at `now_ms` and its
/// agent not disabled (`None` otherwise: logged out, expired, disabled).
pub fn live_until(db: &crate::db::Db, token: &str, now_ms: u64) -> Result<Option<u64>> {
    let expires: Option<i64> = db
        .connection()
        .query_row(
            "SELECT s.expires_ms FROM agent_sessions s JOIN agents a ON a.id = s.agent_id
             WHERE s.token_sha256 = ?1 AND s.expires_ms >= ?2 AND NOT a.disabled",
            params![
                sha256_hex(b"", token),
                i64::try_from(now_ms).unwrap_or(i64::MAX)
            ],
            |row| row.get(0),
        )
        .optional()?;
    Ok(expires.map(|e| u64::try_from(e).unwrap_or(0)))
}

/// The client's address, recorded per connection by `agent serve` (over
/// plain TCP or TLS) for the login rate limit.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The client's address (for the login rate limit): the peer's, or, when
/// the peer is one of the `trusted` reverse proxies, the right-most
/// address of its `X-Forwarded-For` that is not itself a trusted proxy
/// (the left part of the header is whatever the client wrote). A header
/// that does not parse counts as absent: the proxy's address then.
pub fn client_ip(
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
    trusted: &[IpAddr],
) -> IpAddr {
    let peer = extensions
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut forwarded = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        for hop in text.split(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => forwarded.push(ip),
                Err(_) => return peer,
            }
        }
    }
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

/// Login attempts per (name, address): after [`MAX_FAILURES`] in
/// [`LIMIT_WINDOW`] that did not log in, that name is refused from that
/// address until the window passes, without checking the password (so
/// guessing stays slow and costs the daemon no Argon2 work). An attempt
/// counts when it arrives, before its password is checked, so guesses
/// sent all at once are limited as if sent one by one; a login that
/// succeeds forgets its pair's attempts.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    attempts: Mutex<HashMap<(String, IpAddr), Vec<Instant>>>,
}

impl LoginLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, IpAddr), Vec<Instant>>> {
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Count an attempt of `name` from `ip` now, if it may be made: false
    /// when the pair made [`MAX_FAILURES`] in the window, when `ip` is
    /// counted under [`MAX_NAMES_PER_ADDRESS`] names already, or when
    /// [`MAX_TRACKED`] pairs are all still counted (a new pair is then
    /// refused rather than any counted one forgotten, which would let
    /// failures under many names reset a limited one).
    pub fn attempt(&self, name: &str, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.lock();
        let key = (name.to_lowercase(), ip);
        if let Some(times) = map.get_mut(&key) {
            times.retain(|t| now.duration_since(*t) < LIMIT_WINDOW);
            if times.len() >= MAX_FAILURES {
                return false;
            }
            times.push(now);
            return true;
        }
        let live =
            |times: &Vec<Instant>| times.iter().any(|t| now.duration_since(*t) < LIMIT_WINDOW);
        let names_here = map
            .iter()
            .filter(|((_, from), times)| *from == ip && live(times))
            .count();
        if names_here >= MAX_NAMES_PER_ADDRESS {
            return false;
        }
        if map.len() >= MAX_TRACKED {
            map.retain(|_, times| live(times));
            if map.len() >= MAX_TRACKED {
                return false;
            }
        }
        map.insert(key, vec![now]);
        true
    }

    /// Forget the attempts of a name and address that logged in.
    pub fn succeeded(&self, name: &str, ip: IpAddr) {
        self.lock().remove(&(name.to_lowercase(), ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_per_name_and_address_and_expires() {
        let limiter = LoginLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let t = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(limiter.attempt("Ana", a, t));
        }
        assert!(!limiter.attempt("ana", a, t));
        assert!(limiter.attempt("ana", b, t));
        assert!(limiter.attempt("bob", a, t));
        assert!(limiter.attempt("ana", a, t + LIMIT_WINDOW));
        // A login forgets its pair's attempts.
        limiter.succeeded("ana", b);
        for _ in 0..MAX_FAILURES {
            assert!(limiter.attempt("ana", b, t));
        }
    }

    /// A full table forgets nobody still limited: before, reaching
    /// [`MAX_TRACKED`] live entries cleared them all, the limited name
    /// with them, so failing with many other names reset the count. A new
    /// pair is refused while the table is full, and taken once entries
    /// expire.
    #[test]
    fn a_full_table_keeps_the_names_it_limits() {
        let limiter = LoginLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let t = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(limiter.attempt("ana", a, t));
        }
        assert!(!limiter.attempt("ana", a, t));
        for n in 0..MAX_TRACKED as u32 - 1 {
            let other = IpAddr::from((n + 1).to_be_bytes());
            assert!(limiter.attempt("someone", other, t));
        }
        assert!(!limiter.attempt("ana", a, t), "the limit was forgotten");
        assert!(!limiter.attempt("newcomer", a, t), "a new pair while full");
        assert!(limiter.attempt("newcomer", a, t + LIMIT_WINDOW));
    }

    /// One address trying name after name is refused new names once it
    /// has [`MAX_NAMES_PER_ADDRESS`], and nobody else is: one address
    /// cannot fill the table and lock every agent out.
    #[test]
    fn one_address_cannot_fill_the_table() {
        let limiter = LoginLimiter::default();
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        let t = Instant::now();
        let taken = (0..MAX_TRACKED)
            .filter(|n| limiter.attempt(&format!("name{n}"), a, t))
            .count();
        assert_eq!(taken, MAX_NAMES_PER_ADDRESS);
        assert!(limiter.attempt("ana", b, t), "another address was refused");
        assert!(limiter.attempt("name0", a, t), "a name it has still counts");
        assert!(limiter.attempt("newcomer", a, t + LIMIT_WINDOW));
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let (s1, s2) = (new_token(), new_token());
        assert_ne!(csrf_of(&s1), csrf_of(&s2));
        assert!(tokens_match(&csrf_of(&s1), &csrf_of(&s1)));
        assert!(!tokens_match(&csrf_of(&s2), &csrf_of(&s1)));
        assert!(!tokens_match("", ""));
    }
}
