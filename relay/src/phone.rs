//! Phone-number verification: E.164 validation, a pluggable code sender
//! (the default writes the code to the operator's log), and the pending
//! codes with their limits.
//!
//! Pending codes live in memory: they last minutes, and a restart only
//! means asking for a new one. Codes are kept per (number, account), so
//! one account's request never cancels another's. Guessing is bounded per
//! number, not per code: within one window a number gets at most
//! `requests_per_number` codes and `attempts` wrong guesses in all, across
//! every account; an account gets at most `requests_per_account` codes.
//! Every table is bounded (`max_pending`) and swept in expiry order, so
//! no operation scans it.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use comptoir_protocol::AccountId;
use rand::RngExt;
use zeroize::Zeroizing;

use crate::error::RelayError;

/// Number of digits in a verification code.
pub const CODE_DIGITS: usize = 6;

/// Whether `number` is E.164: `+`, a non-zero digit, 7 to 15 digits in all.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Delivers a verification code to a phone (SMS gateway, voice, ...).
pub trait CodeSender: Send + Sync + Debug + 'static {
    /// Deliver `code` to `phone`. Must not block for long.
    fn send_code(&self, phone: &str, code: &str);
}

/// The default sender: writes the code to the log, for development.
#[derive(Debug, Default)]
pub struct LogCodeSender;

impl CodeSender for LogCodeSender {
    fn send_code(&self, phone: &str, code: &str) {
        tracing::info!(
            phone,
            code,
            "verification code (log sender; configure an SMS gateway in production)"
        );
    }
}

/// The limits of phone verification (from `[limits]` in the configuration).
#[derive(Clone, Copy, Debug)]
pub struct CodeLimits {
    /// How long a code is valid.
    pub ttl: Duration,
    /// Wrong codes allowed per number per window, across all accounts.
    pub attempts: u32,
    /// The window over which requests and wrong codes are counted (never
    /// shorter than `ttl`).
    pub window: Duration,
    /// Codes sent to one number per window.
    pub requests_per_number: u32,
    /// Codes one account may request per window.
    pub requests_per_account: u32,
    /// Pending codes, and numbers and accounts tracked, at most each.
    pub max_pending: usize,
}

/// Requests and wrong codes counted since `start`.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    requests: u32,
    wrong: u32,
}

/// Windows by key, with their keys in order of start, so expired ones are
/// swept from the front without a scan.
struct Windows<K> {
    map: HashMap<K, Window>,
    order: VecDeque<(Instant, K)>,
}

impl<K> Default for Windows<K> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Windows<K> {
    fn sweep(&mut self, now: Instant, length: Duration) {
        while let Some((start, _)) = self.order.front() {
            if !ended(*start, length, now) {
                break;
            }
            if let Some((start, key)) = self.order.pop_front()
                && self.map.get(&key).is_some_and(|w| w.start == start)
            {
                self.map.remove(&key);
            }
        }
    }

    /// Whether a new key could not be tracked.
    fn full_for(&self, key: &K, max: usize) -> bool {
        !self.map.contains_key(key) && self.map.len() >= max
    }

    fn entry(&mut self, key: &K, now: Instant) -> &mut Window {
        let order = &mut self.order;
        self.map.entry(key.clone()).or_insert_with(|| {
            order.push_back((now, key.clone()));
            Window {
                start: now,
                requests: 0,
                wrong: 0,
            }
        })
    }
}

/// Whether something started at `start` and lasting `length` is over.
fn ended(start: Instant, length: Duration, now: Instant) -> bool {
    start.checked_add(length).is_none_or(|end| end <= now)
}

/// Milliseconds until a window started at `start` ends (at least 1).
fn ms_left(start: Instant, length: Duration, now: Instant) -> u64 {
    let left = start
        .checked_add(length)
        .map_or(length, |end| end.saturating_duration_since(now));
    (left.as_millis() as u64).max(1)
}

struct Pending {
    code: Zeroizing<String>,
    expires: Instant,
}

#[derive(Default)]
struct Tables {
    /// Codes by (number, account).
    pending: HashMap<(String, AccountId), Pending>,
    /// Issued codes in order of expiry (a replaced code stays until swept).
    pending_order: VecDeque<(Instant, (String, AccountId))>,
    numbers: Windows<String>,
    accounts: Windows<AccountId>,
}

impl Tables {
    fn sweep(&mut self, now: Instant, window: Duration) {
        while let Some((expires, _)) = self.pending_order.front() {
            if *expires > now {
                break;
            }
            if let Some((expires, key)) = self.pending_order.pop_front()
                && self.pending.get(&key).is_some_and(|p| p.expires == expires)
            {
                self.pending.remove(&key);
            }
        }
        self.numbers.sweep(now, window);
        self.accounts.sweep(now, window);
    }
}

/// Codes waiting to be proved, by (phone number, account), with the
/// per-number and per-account limits.
pub struct PhoneCodes {
    limits: CodeLimits,
    tables: Mutex<Tables>,
}

impl Debug for PhoneCodes {
    /// Counts only: never a code or a number.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("PhoneCodes")
            .field("limits", &self.limits)
            .field("pending", &tables.pending.len())
            .field("numbers", &tables.numbers.map.len())
            .field("accounts", &tables.accounts.map.len())
            .finish()
    }
}

impl PhoneCodes {
    /// Pending codes under `limits`.
    pub fn new(limits: CodeLimits) -> Self {
        let limits = CodeLimits {
            attempts: limits.attempts.max(1),
            window: limits.window.max(limits.ttl),
            requests_per_number: limits.requests_per_number.max(1),
            requests_per_account: limits.requests_per_account.max(1),
            max_pending: limits.max_pending.max(1),
            ..limits
        };
        Self {
            limits,
            tables: Mutex::new(Tables::default()),
        }
    }

    /// Make a fresh code for `phone`, requested by `account` (replacing
    /// that account's earlier code for it, and no one else's). Returns the
    /// code to send, or a refusal when a limit is reached.
    pub fn issue(&self, phone: &str, account: AccountId) -> Result<Zeroizing<String>, RelayError> {
        let limits = self.limits;
        let now = Instant::now();
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.sweep(now, limits.window);
        let number = phone.to_owned();
        if let Some(w) = tables.numbers.map.get(&number) {
            if w.wrong >= limits.attempts {
                return Err(RelayError::TooManyCodeAttempts);
            }
            if w.requests >= limits.requests_per_number {
                return Err(RelayError::RateLimited {
                    scope: "verification codes for this number",
                    retry_after_ms: ms_left(w.start, limits.window, now),
                });
            }
        }
        if let Some(w) = tables.accounts.map.get(&account)
            && w.requests >= limits.requests_per_account
        {
            return Err(RelayError::RateLimited {
                scope: "verification codes for this account",
                retry_after_ms: ms_left(w.start, limits.window, now),
            });
        }
        if tables.pending_order.len() >= limits.max_pending
            || tables.numbers.full_for(&number, limits.max_pending)
            || tables.accounts.full_for(&account, limits.max_pending)
        {
            let retry_after_ms = tables.pending_order.front().map_or(1000, |(expires, _)| {
                (expires.saturating_duration_since(now).as_millis() as u64).max(1)
            });
            return Err(RelayError::RateLimited {
                scope: "phone verification (too many pending codes on this relay)",
                retry_after_ms,
            });
        }
        tables.numbers.entry(&number, now).requests += 1;
        tables.accounts.entry(&account, now).requests += 1;
        let n: u32 = rand::rng().random_range(0..1_000_000);
        let code = Zeroizing::new(format!("{n:0width$}", width = CODE_DIGITS));
        let expires = now.checked_add(limits.ttl).unwrap_or(now);
        let key = (number, account);
        tables.pending_order.push_back((expires, key.clone()));
        tables.pending.insert(
            key,
            Pending {
                code: code.clone(),
                expires,
            },
        );
        Ok(code)
    }

    /// Check `account`'s code for `phone`; success consumes it. A wrong
    /// code counts against the number, whoever sent it.
    pub fn verify(&self, phone: &str, account: AccountId, code: &str) -> Result<(), RelayError> {
        let limits = self.limits;
        let now = Instant::now();
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.sweep(now, limits.window);
        let number = phone.to_owned();
        if tables
            .numbers
            .map
            .get(&number)
            .is_some_and(|w| w.wrong >= limits.attempts)
        {
            return Err(RelayError::TooManyCodeAttempts);
        }
        let key = (number, account);
        let Some(entry) = tables.pending.get(&key) else {
            return Err(RelayError::CodeExpired);
        };
        if entry.expires <= now {
            tables.pending.remove(&key);
            return Err(RelayError::CodeExpired);
        }
        if entry.code.as_bytes() == code.as_bytes() {
            tables.pending.remove(&key);
            return Ok(());
        }
        let window = tables.numbers.entry(&key.0, now);
        window.wrong += 1;
        let remaining = limits.attempts.saturating_sub(window.wrong);
        if remaining == 0 {
            tables.pending.remove(&key);
            return Err(RelayError::TooManyCodeAttempts);
        }
        Err(RelayError::WrongCode { remaining })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMBER: &str = "+447700900123";

    fn limits() -> CodeLimits {
        CodeLimits {
            ttl: Duration::from_secs(60),
            attempts: 3,
            window: Duration::from_secs(3600),
            requests_per_number: 3,
            requests_per_account: 5,
            max_pending: 100,
        }
    }

    fn account() -> AccountId {
        AccountId::generate(&mut rand::rng())
    }

    fn wrong(code: &str) -> &'static str {
        if code == "000000" { "111111" } else { "000000" }
    }

    #[test]
    fn e164() {
        assert!(is_e164("+447700900123"));
        assert!(is_e164("+33612345678"));
        assert!(!is_e164("447700900123"));
        assert!(!is_e164("+0447700900"));
        assert!(!is_e164("+44 7700 900123"));
        assert!(!is_e164("+1234"));
        assert!(!is_e164("+1234567890123456"));
    }

    #[test]
    fn a_code_is_used_once() -> Result<(), RelayError> {
        let codes = PhoneCodes::new(limits());
        let a = account();
        let code = codes.issue(NUMBER, a)?;
        assert!(matches!(
            codes.verify(NUMBER, a, wrong(&code)),
            Err(RelayError::WrongCode { remaining: 2 })
        ));
        assert!(codes.verify(NUMBER, a, &code).is_ok());
        assert!(matches!(
            codes.verify(NUMBER, a, &code),
            Err(RelayError::CodeExpired)
        ));
        Ok(())
    }

    /// Issue 9 item 8: a new code used to reset the attempts, so repeated
    /// requests allowed unlimited guessing. Attempts are now per number.
    #[test]
    fn new_codes_do_not_reset_the_attempts_of_a_number() -> Result<(), RelayError> {
        let codes = PhoneCodes::new(limits());
        let attacker = account();
        let mut wrong_guesses = 0;
        for _ in 0..3 {
            let Ok(code) = codes.issue(NUMBER, attacker) else {
                break;
            };
            while let Err(RelayError::WrongCode { .. }) =
                codes.verify(NUMBER, attacker, wrong(&code))
            {
                wrong_guesses += 1;
            }
            wrong_guesses += 1;
        }
        assert_eq!(wrong_guesses, 3, "three wrong guesses per number in all");
        assert!(matches!(
            codes.issue(NUMBER, account()),
            Err(RelayError::TooManyCodeAttempts)
        ));
        Ok(())
    }

    /// Another account's request no longer cancels the owner's code, and
    /// another account cannot use it.
    #[test]
    fn codes_are_kept_per_number_and_account() -> Result<(), RelayError> {
        let codes = PhoneCodes::new(limits());
        let (owner, other) = (account(), account());
        let code = codes.issue(NUMBER, owner)?;
        let _ = codes.issue(NUMBER, other)?;
        assert!(codes.verify(NUMBER, owner, &code).is_ok());
        Ok(())
    }

    #[test]
    fn requests_are_limited_per_number_and_per_account() -> Result<(), RelayError> {
        let codes = PhoneCodes::new(limits());
        for _ in 0..3 {
            codes.issue(NUMBER, account())?;
        }
        assert!(matches!(
            codes.issue(NUMBER, account()),
            Err(RelayError::RateLimited { .. })
        ));
        let a = account();
        for n in 0..5 {
            codes.issue(&format!("+4477009001{n:02}"), a)?;
        }
        assert!(matches!(
            codes.issue("+447700900199", a),
            Err(RelayError::RateLimited { .. })
        ));
        Ok(())
    }

    /// Issue 9 item 9: the table was unbounded. It is bounded, and expired
    /// entries leave it.
    #[test]
    fn the_pending_table_is_bounded_and_expires() -> Result<(), RelayError> {
        let codes = PhoneCodes::new(CodeLimits {
            max_pending: 10,
            ..limits()
        });
        for n in 0..10 {
            codes.issue(&format!("+4477009001{n:02}"), account())?;
        }
        assert!(matches!(
            codes.issue("+447700900150", account()),
            Err(RelayError::RateLimited { .. })
        ));
        let expiring = PhoneCodes::new(CodeLimits {
            ttl: Duration::ZERO,
            window: Duration::ZERO,
            max_pending: 10,
            ..limits()
        });
        for n in 0..50 {
            expiring.issue(&format!("+4477009001{n:02}"), account())?;
        }
        let tables = expiring.tables.lock().unwrap_or_else(|p| p.into_inner());
        assert!(tables.pending_order.len() <= 1 && tables.numbers.map.len() <= 1);
        Ok(())
    }

    #[test]
    fn debug_shows_no_code() -> Result<(), RelayError> {
        let codes = PhoneCodes::new(limits());
        let code = codes.issue(NUMBER, account())?;
        let text = format!("{codes:?}");
        assert!(
            !text.contains(code.as_str()) && !text.contains(NUMBER),
            "{text}"
        );
        Ok(())
    }
}
