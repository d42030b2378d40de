//! Phone-number verification: E.164 validation, a pluggable code sender
//! (the default writes the code to the operator's log), codes that expire
//! and allow a few attempts.
//!
//! Pending codes live in memory: they last minutes, and a restart only
//! means asking for a new one.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use comptoir_protocol::AccountId;
use rand::RngExt;

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

#[derive(Debug)]
struct Pending {
    account: AccountId,
    code: String,
    expires: Instant,
    attempts_left: u32,
}

/// Codes waiting to be proved, by phone number.
#[derive(Debug)]
pub struct PhoneCodes {
    ttl: Duration,
    attempts: u32,
    pending: Mutex<HashMap<String, Pending>>,
}

impl PhoneCodes {
    /// Codes valid for `ttl`, with `attempts` tries each.
    pub fn new(ttl: Duration, attempts: u32) -> Self {
        Self {
            ttl,
            attempts: attempts.max(1),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Make a fresh code for `phone`, requested by `account` (replacing any
    /// earlier one). Returns the code to send.
    pub fn issue(&self, phone: &str, account: AccountId) -> String {
        let n: u32 = rand::rng().random_range(0..1_000_000);
        let code = format!("{n:0width$}", width = CODE_DIGITS);
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.expires > now);
        pending.insert(
            phone.to_owned(),
            Pending {
                account,
                code: code.clone(),
                expires: now + self.ttl,
                attempts_left: self.attempts,
            },
        );
        code
    }

    /// Check a code; success consumes it.
    pub fn verify(&self, phone: &str, account: AccountId, code: &str) -> Result<(), RelayError> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = pending.get_mut(phone) else {
            return Err(RelayError::CodeExpired);
        };
        if entry.expires <= Instant::now() || entry.account != account {
            if entry.expires <= Instant::now() {
                pending.remove(phone);
            }
            return Err(RelayError::CodeExpired);
        }
        if entry.code.as_bytes() == code.as_bytes() {
            pending.remove(phone);
            return Ok(());
        }
        entry.attempts_left -= 1;
        if entry.attempts_left == 0 {
            pending.remove(phone);
            return Err(RelayError::TooManyCodeAttempts);
        }
        Err(RelayError::WrongCode {
            remaining: entry.attempts_left,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn attempts_and_consumption() {
        let codes = PhoneCodes::new(Duration::from_secs(60), 2);
        let account = AccountId::generate(&mut rand::rng());
        let code = codes.issue("+447700900123", account);
        assert!(matches!(
            codes.verify("+447700900123", account, "x"),
            Err(RelayError::WrongCode { remaining: 1 })
        ));
        assert!(codes.verify("+447700900123", account, &code).is_ok());
        assert!(matches!(
            codes.verify("+447700900123", account, &code),
            Err(RelayError::CodeExpired)
        ));
        let code = codes.issue("+447700900123", account);
        assert!(codes.verify("+447700900123", account, "1").is_err());
        assert!(matches!(
            codes.verify("+447700900123", account, "2"),
            Err(RelayError::TooManyCodeAttempts)
        ));
        assert!(codes.verify("+447700900123", account, &code).is_err());
    }
}
