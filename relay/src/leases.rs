//! Leases shared by one account's devices (`AcquireLease`): at most one
//! device of an account holds a lease of a given name at a time, until it
//! runs out or the holder gives it up or disconnects. Two agent daemons of
//! one business use one to agree on which of them acts where acting twice
//! would be wrong (webhooks, the away message, automatic assignment).
//!
//! Metadata only (an account, a name, a device id, an expiry), kept in
//! memory: a relay restart drops every lease, and every connection with
//! it; a holder stops acting when its connection ends (see the agent
//! daemon), so no two devices act at once across a restart.

use std::collections::HashMap;
use std::sync::Mutex;

use comptoir_protocol::AccountId;

/// The shortest lease: shorter ones would have their holder renew more
/// often than a busy relay answers.
pub const MIN_LEASE_MS: u32 = 1_000;
/// The longest lease: how long a vanished holder (a half-open connection)
/// can keep the others waiting at most.
pub const MAX_LEASE_MS: u32 = 300_000;
/// The longest lease name.
pub const MAX_NAME_LEN: usize = 64;
/// Leases one account holds at most (its devices agree on a few roles,
/// not on one lease per conversation).
pub const MAX_LEASES_PER_ACCOUNT: usize = 8;

/// Why a lease request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// A name outside the allowed alphabet or length.
    #[error("a lease name is 1 to {MAX_NAME_LEN} ASCII letters, digits, '.', '-' or '_'")]
    BadName,
    /// A duration outside [`MIN_LEASE_MS`]..=[`MAX_LEASE_MS`] (and not 0).
    #[error("a lease lasts {MIN_LEASE_MS} to {MAX_LEASE_MS} ms (0 gives it up), got {0}")]
    BadDuration(u32),
    /// The account holds [`MAX_LEASES_PER_ACCOUNT`] other leases.
    #[error("an account holds at most {MAX_LEASES_PER_ACCOUNT} leases")]
    TooMany,
}

/// Who holds a lease after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// The holding device, 0 when nobody holds it.
    pub holder_device: u32,
    /// How long it is held from now (0 when nobody holds it).
    pub expires_in_ms: u64,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    device: u32,
    connection: u64,
    expires_ms: u64,
}

/// Every account's leases.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<AccountId, HashMap<String, Held>>>,
}

fn check_name(name: &str) -> Result<(), LeaseError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok { Ok(()) } else { Err(LeaseError::BadName) }
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, HashMap<String, Held>>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Device `device` of `account`, on connection `connection`, asks for
    /// lease `name` for `duration_ms` from `now_ms` (0: give it up). It
    /// gets it when nobody holds it, the holder's time ran out, or it
    /// holds it already (a renewal); otherwise the answer names the
    /// holder. Nothing changes on a refusal.
    pub fn acquire(
        &self,
        account: AccountId,
        device: u32,
        connection: u64,
        name: &str,
        duration_ms: u32,
        now_ms: u64,
    ) -> Result<LeaseView, LeaseError> {
        check_name(name)?;
        if duration_ms != 0 && !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&duration_ms) {
            return Err(LeaseError::BadDuration(duration_ms));
        }
        let mut all = self.lock();
        let leases = all.entry(account).or_default();
        leases.retain(|_, h| h.expires_ms > now_ms);
        let view = match leases.get(name) {
            Some(h) if h.device != device => LeaseView {
                holder_device: h.device,
                expires_in_ms: h.expires_ms - now_ms,
            },
            mine if duration_ms == 0 => {
                if mine.is_some() {
                    leases.remove(name);
                }
                LeaseView {
                    holder_device: 0,
                    expires_in_ms: 0,
                }
            }
            mine => {
                if mine.is_none() && leases.len() >= MAX_LEASES_PER_ACCOUNT {
                    return Err(LeaseError::TooMany);
                }
                let expires_ms = now_ms.saturating_add(u64::from(duration_ms));
                leases.insert(
                    name.to_owned(),
                    Held {
                        device,
                        connection,
                        expires_ms,
                    },
                );
                LeaseView {
                    holder_device: device,
                    expires_in_ms: u64::from(duration_ms),
                }
            }
        };
        if leases.is_empty() {
            all.remove(&account);
        }
        Ok(view)
    }

    /// Connection `connection` of `account` ended: the leases it took are
    /// free at once (a killed holder's connection ends with it).
    pub fn release_connection(&self, account: AccountId, connection: u64) {
        let mut all = self.lock();
        if let Some(leases) = all.get_mut(&account) {
            leases.retain(|_, h| h.connection != connection);
            if leases.is_empty() {
                all.remove(&account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(n: u8) -> AccountId {
        AccountId::from_bytes(&[n; 16]).expect("16 bytes")
    }

    #[test]
    fn one_device_holds_a_lease_until_it_runs_out_gives_it_up_or_disconnects() {
        let leases = Leases::default();
        let (a, other) = (account(1), account(2));
        let got = leases
            .acquire(a, 1, 10, "webhooks", 5_000, 0)
            .expect("take");
        assert_eq!(got.holder_device, 1);
        // The other device sees the holder and how long it holds.
        let seen = leases
            .acquire(a, 2, 20, "webhooks", 5_000, 1_000)
            .expect("ask");
        assert_eq!((seen.holder_device, seen.expires_in_ms), (1, 4_000));
        // Another account's lease of the same name is its own.
        let theirs = leases.acquire(other, 2, 30, "webhooks", 5_000, 1_000);
        assert_eq!(theirs.expect("other account").holder_device, 2);
        // A renewal extends it.
        leases
            .acquire(a, 1, 10, "webhooks", 5_000, 4_000)
            .expect("renew");
        let seen = leases
            .acquire(a, 2, 20, "webhooks", 5_000, 8_999)
            .expect("ask");
        assert_eq!(seen.holder_device, 1);
        // Run out: the other takes it.
        let seen = leases
            .acquire(a, 2, 20, "webhooks", 5_000, 9_000)
            .expect("take");
        assert_eq!(seen.holder_device, 2);
        // Giving up a lease one does not hold changes nothing.
        let seen = leases.acquire(a, 1, 10, "webhooks", 0, 9_001).expect("ask");
        assert_eq!(seen.holder_device, 2);
        // The holder disconnects: free at once.
        leases.release_connection(a, 20);
        let seen = leases
            .acquire(a, 1, 11, "webhooks", 5_000, 9_002)
            .expect("take");
        assert_eq!(seen.holder_device, 1);
        // Given up: free.
        let seen = leases
            .acquire(a, 1, 11, "webhooks", 0, 9_003)
            .expect("give up");
        assert_eq!(seen.holder_device, 0);
        assert_eq!(
            leases
                .acquire(a, 2, 20, "webhooks", 5_000, 9_004)
                .expect("take")
                .holder_device,
            2
        );
    }

    #[test]
    fn bad_requests_are_refused_and_change_nothing() {
        let leases = Leases::default();
        let a = account(1);
        assert_eq!(
            leases.acquire(a, 1, 1, "", 5_000, 0),
            Err(LeaseError::BadName)
        );
        assert_eq!(
            leases.acquire(a, 1, 1, "a b", 5_000, 0),
            Err(LeaseError::BadName)
        );
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            leases.acquire(a, 1, 1, &long, 5_000, 0),
            Err(LeaseError::BadName)
        );
        assert_eq!(
            leases.acquire(a, 1, 1, "w", 999, 0),
            Err(LeaseError::BadDuration(999))
        );
        assert_eq!(
            leases.acquire(a, 1, 1, "w", MAX_LEASE_MS + 1, 0),
            Err(LeaseError::BadDuration(MAX_LEASE_MS + 1))
        );
        for i in 0..MAX_LEASES_PER_ACCOUNT {
            leases
                .acquire(a, 1, 1, &format!("l{i}"), 5_000, 0)
                .expect("take");
        }
        assert_eq!(
            leases.acquire(a, 1, 1, "one-more", 5_000, 0),
            Err(LeaseError::TooMany)
        );
        // Refusals took nothing: another device still finds "w" free.
        assert_eq!(
            leases
                .acquire(a, 2, 2, "l0", 5_000, 1)
                .expect("ask")
                .holder_device,
            1
        );
        leases.release_connection(a, 1);
        assert_eq!(
            leases
                .acquire(a, 2, 2, "w", 5_000, 1)
                .expect("take")
                .holder_device,
            2
        );
    }
}
