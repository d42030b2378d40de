//! Limits on automatic re-keys and re-sends, kept in the store so that a
//! restart (each `comptoir` command is a new process) does not reset them.
//!
//! A relay that flips one bit per message, or a contact that floods re-key
//! requests, must not be able to make this device use up a peer's one-time
//! prekeys or re-send its history without end. Every decision is taken
//! here, from the wall clock in milliseconds; the record is small and
//! bounded (at most one entry per allowed action in the window, plus two
//! bounded lists of ids).

use comptoir_protocol::AccountId;
use prost::Message;

use crate::error::{ClientError, Result};
use crate::messages::MessageId;
use crate::store::{Store, Tree};

/// The window every rate below is counted over: one hour.
pub const GUARD_WINDOW_MS: u64 = 60 * 60 * 1000;
/// Automatic re-keys with one remote device per window. Two: one to
/// recover a wedged session, one more in case the re-key request itself
/// was lost; a session still failing after that needs the user.
pub const REKEYS_PER_DEVICE: usize = 2;
/// Automatic re-keys with all the devices of one account per window: an
/// account listing many devices (or making up undecryptable envelopes
/// from each) gets a share of [`REKEYS_TOTAL`], not all of it.
pub const REKEYS_PER_ACCOUNT: usize = 4;
/// Automatic re-keys with all remote devices together per window, of
/// accounts this account wrote to (and its own devices).
pub const REKEYS_TOTAL: usize = 10;
/// Automatic re-keys with the devices of accounts this account never
/// wrote to, all together per window: a budget of their own, so that
/// strangers sending undecryptable envelopes cannot use up the re-keys a
/// wedged session with a contact needs.
pub const REKEYS_STRANGERS_TOTAL: usize = 4;
/// Messages re-sent at the request of one remote device per window.
pub const RESENDS_PER_DEVICE: usize = 5;
/// Messages re-sent at the request of all the devices of one account per
/// window (a share of [`RESENDS_TOTAL`]).
pub const RESENDS_PER_ACCOUNT: usize = 10;
/// Messages re-sent at anyone's request per window.
pub const RESENDS_TOTAL: usize = 20;
/// Failed message ids remembered (so none triggers a second re-key), and
/// (device, message) pairs remembered (so none is re-sent twice).
pub const REMEMBERED_IDS: usize = 512;

const GUARD_KEY: &[u8] = b"rekey";
const GUARD_RECORD_VERSION: u32 = 1;
const KIND_REKEY: u32 = 1;
const KIND_RESEND: u32 = 2;

#[derive(Clone, PartialEq, Message)]
struct GuardRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    /// Actions taken inside the current window.
    #[prost(message, repeated, tag = "2")]
    actions: Vec<Action>,
    /// Envelope ids a re-key was already requested for, oldest first.
    #[prost(bytes = "vec", repeated, tag = "3")]
    rekeyed_for: Vec<Vec<u8>>,
    /// account (16) || device (u32 BE) || message id (16) already re-sent,
    /// oldest first.
    #[prost(bytes = "vec", repeated, tag = "4")]
    resent: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct Action {
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(bytes = "vec", tag = "2")]
    account: Vec<u8>,
    #[prost(uint32, tag = "3")]
    device: u32,
    #[prost(uint64, tag = "4")]
    at_ms: u64,
    /// With an account this account never wrote to (counted apart).
    #[prost(bool, tag = "5")]
    stranger: bool,
}

/// Whether an automatic action may go ahead, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Go ahead (already recorded).
    Allowed,
    /// This message already caused a re-key (or was already re-sent).
    AlreadyDone,
    /// The limit for this remote device in the window is reached.
    DeviceLimit,
    /// The limit for all the devices of this account in the window is
    /// reached.
    AccountLimit,
    /// The limit over all peers in the window is reached.
    TotalLimit,
}

impl Decision {
    /// Why it was refused, for a warning shown to the user.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::AlreadyDone => "already done once for this message",
            Self::DeviceLimit => "too many for this device in the last hour",
            Self::AccountLimit => "too many for this account in the last hour",
            Self::TotalLimit => "too many in the last hour",
        }
    }
}

/// The persisted limits.
pub(super) struct RekeyGuard {
    record: GuardRecord,
}

impl RekeyGuard {
    /// Load the record (an empty one if there is none yet).
    pub(super) fn load(store: &Store) -> Result<Self> {
        let record = match store.get(Tree::Guards, GUARD_KEY)? {
            Some(bytes) => GuardRecord::decode(bytes.as_slice())
                .map_err(|e| ClientError::CorruptStore(format!("re-key limits record: {e}")))?,
            None => GuardRecord {
                version: GUARD_RECORD_VERSION,
                ..GuardRecord::default()
            },
        };
        Ok(Self { record })
    }

    /// Write the record back (the caller flushes).
    pub(super) fn save(&self, store: &Store) -> Result<()> {
        store.put(Tree::Guards, GUARD_KEY, &self.record.encode_to_vec())
    }

    /// May this device re-key with `peer`'s `device` because envelope
    /// `failed` did not decrypt? `stranger`: this account never wrote to
    /// `peer` (its re-keys count against [`REKEYS_STRANGERS_TOTAL`], not
    /// [`REKEYS_TOTAL`]). Records the re-key when allowed.
    pub(super) fn allow_rekey(
        &mut self,
        peer: &AccountId,
        device: u32,
        failed: &MessageId,
        stranger: bool,
        now_ms: u64,
    ) -> Decision {
        if self.record.rekeyed_for.iter().any(|id| id == &failed.0) {
            return Decision::AlreadyDone;
        }
        let total = if stranger {
            REKEYS_STRANGERS_TOTAL
        } else {
            REKEYS_TOTAL
        };
        let decision = self.allow(
            KIND_REKEY,
            (peer, device, stranger),
            now_ms,
            [REKEYS_PER_DEVICE, REKEYS_PER_ACCOUNT, total],
        );
        if decision == Decision::Allowed {
            remember(&mut self.record.rekeyed_for, failed.0.to_vec());
        }
        decision
    }

    /// May this device re-send `message` because `peer`'s `device` asked?
    /// Records the re-send when allowed.
    pub(super) fn allow_resend(
        &mut self,
        peer: &AccountId,
        device: u32,
        message: &MessageId,
        now_ms: u64,
    ) -> Decision {
        let mut key = peer.to_vec();
        key.extend_from_slice(&device.to_be_bytes());
        key.extend_from_slice(&message.0);
        if self.record.resent.contains(&key) {
            return Decision::AlreadyDone;
        }
        // Only messages this account sent are re-sent: never a stranger's.
        let decision = self.allow(
            KIND_RESEND,
            (peer, device, false),
            now_ms,
            [RESENDS_PER_DEVICE, RESENDS_PER_ACCOUNT, RESENDS_TOTAL],
        );
        if decision == Decision::Allowed {
            remember(&mut self.record.resent, key);
        }
        decision
    }

    /// Allow (and record) an action of `kind` with `peer`'s `device` if
    /// the window holds fewer than `[per device, per account, in all]`
    /// (in all: of the same standing, strangers or not).
    fn allow(
        &mut self,
        kind: u32,
        (peer, device, stranger): (&AccountId, u32, bool),
        now_ms: u64,
        [per_device, per_account, total]: [usize; 3],
    ) -> Decision {
        // An action stamped in the future (the clock went back) still
        // counts: a clock change must not reopen the limits.
        self.record
            .actions
            .retain(|a| a.at_ms.saturating_add(GUARD_WINDOW_MS) > now_ms);
        let same_kind = || self.record.actions.iter().filter(|a| a.kind == kind);
        if same_kind()
            .filter(|a| a.account == peer.as_bytes() && a.device == device)
            .count()
            >= per_device
        {
            return Decision::DeviceLimit;
        }
        if same_kind().filter(|a| a.account == peer.as_bytes()).count() >= per_account {
            return Decision::AccountLimit;
        }
        if same_kind().filter(|a| a.stranger == stranger).count() >= total {
            return Decision::TotalLimit;
        }
        self.record.actions.push(Action {
            kind,
            account: peer.to_vec(),
            device,
            at_ms: now_ms,
            stranger,
        });
        Decision::Allowed
    }
}

fn remember(list: &mut Vec<Vec<u8>>, id: Vec<u8>) {
    list.push(id);
    if list.len() > REMEMBERED_IDS {
        let excess = list.len() - REMEMBERED_IDS;
        list.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FAST_TEST_KDF, Store};

    fn fresh() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(dir.path(), "a passphrase", FAST_TEST_KDF).expect("store");
        (dir, store)
    }

    #[test]
    fn rekeys_are_limited_per_device_overall_and_per_message() {
        let (_dir, store) = fresh();
        let mut rng = rand::rng();
        let peer = AccountId::generate(&mut rng);
        let mut guard = RekeyGuard::load(&store).expect("load");
        let first = MessageId::generate();
        assert_eq!(
            guard.allow_rekey(&peer, 1, &first, false, 1_000),
            Decision::Allowed
        );
        assert_eq!(
            guard.allow_rekey(&peer, 1, &first, false, 1_001),
            Decision::AlreadyDone
        );
        guard.save(&store).expect("save");

        // Kept across a reload.
        let mut guard = RekeyGuard::load(&store).expect("load");
        assert_eq!(
            guard.allow_rekey(&peer, 1, &first, false, 1_002),
            Decision::AlreadyDone
        );
        for _ in 1..REKEYS_PER_DEVICE {
            assert_eq!(
                guard.allow_rekey(&peer, 1, &MessageId::generate(), false, 1_003),
                Decision::Allowed
            );
        }
        assert_eq!(
            guard.allow_rekey(&peer, 1, &MessageId::generate(), false, 1_004),
            Decision::DeviceLimit
        );
        // After the window, the device may re-key again.
        assert_eq!(
            guard.allow_rekey(
                &peer,
                1,
                &MessageId::generate(),
                false,
                1_003 + GUARD_WINDOW_MS
            ),
            Decision::Allowed
        );

        // Many peers: the total bound holds.
        let mut allowed = 0;
        for _ in 0..(REKEYS_TOTAL * 2) {
            let other = AccountId::generate(&mut rng);
            if guard.allow_rekey(
                &other,
                1,
                &MessageId::generate(),
                false,
                3 * GUARD_WINDOW_MS,
            ) == Decision::Allowed
            {
                allowed += 1;
            }
        }
        assert_eq!(allowed, REKEYS_TOTAL);
    }

    /// One account, however many devices it lists, gets a share of the
    /// totals, not all of them (before, five devices with two re-keys
    /// each used up the whole hour's ten, and four devices the twenty
    /// re-sends: no wedged session with anyone else recovered that hour).
    #[test]
    fn one_account_cannot_use_up_the_totals() {
        let (_dir, store) = fresh();
        let mut rng = rand::rng();
        let (hostile, friend) = (AccountId::generate(&mut rng), AccountId::generate(&mut rng));
        let mut guard = RekeyGuard::load(&store).expect("load");
        let rekeys = (1..=16u32)
            .flat_map(|device| [device; 2])
            .filter(|&device| {
                guard.allow_rekey(&hostile, device, &MessageId::generate(), false, 10)
                    == Decision::Allowed
            })
            .count();
        assert!(rekeys < REKEYS_TOTAL, "{rekeys} re-keys for one account");
        assert_eq!(
            guard.allow_rekey(&friend, 1, &MessageId::generate(), false, 11),
            Decision::Allowed
        );
        let resends = (1..=16u32)
            .flat_map(|device| [device; RESENDS_PER_DEVICE])
            .filter(|&device| {
                guard.allow_resend(&hostile, device, &MessageId::generate(), 12)
                    == Decision::Allowed
            })
            .count();
        assert!(
            resends < RESENDS_TOTAL,
            "{resends} re-sends for one account"
        );
        assert_eq!(
            guard.allow_resend(&friend, 1, &MessageId::generate(), 13),
            Decision::Allowed
        );
    }

    /// Strangers (accounts this one never wrote to) sending undecryptable
    /// envelopes use up their own budget, not the one a wedged session
    /// with a contact needs (before, three of them took all ten).
    #[test]
    fn strangers_cannot_use_up_the_re_keys_of_contacts() {
        let (_dir, store) = fresh();
        let mut rng = rand::rng();
        let mut guard = RekeyGuard::load(&store).expect("load");
        let mut allowed = 0;
        for _ in 0..3 {
            let stranger = AccountId::generate(&mut rng);
            for device in 1..=4u32 {
                if guard.allow_rekey(&stranger, device, &MessageId::generate(), true, 10)
                    == Decision::Allowed
                {
                    allowed += 1;
                }
            }
        }
        assert_eq!(allowed, REKEYS_STRANGERS_TOTAL);
        let contact = AccountId::generate(&mut rng);
        for device in 1..=2u32 {
            assert_eq!(
                guard.allow_rekey(&contact, device, &MessageId::generate(), false, 11),
                Decision::Allowed
            );
        }
        guard.save(&store).expect("save");
        // The standing is kept with each action across a reload.
        let mut guard = RekeyGuard::load(&store).expect("load");
        assert_eq!(
            guard.allow_rekey(
                &AccountId::generate(&mut rng),
                1,
                &MessageId::generate(),
                true,
                12
            ),
            Decision::TotalLimit
        );
    }

    #[test]
    fn resends_are_limited_and_never_repeated_for_one_device() {
        let (_dir, store) = fresh();
        let peer = AccountId::generate(&mut rand::rng());
        let mut guard = RekeyGuard::load(&store).expect("load");
        let message = MessageId::generate();
        assert_eq!(guard.allow_resend(&peer, 1, &message, 5), Decision::Allowed);
        assert_eq!(
            guard.allow_resend(&peer, 1, &message, 6),
            Decision::AlreadyDone
        );
        // Another device of the peer may need it too.
        assert_eq!(guard.allow_resend(&peer, 2, &message, 7), Decision::Allowed);
        let allowed = (0..100)
            .filter(|_| {
                guard.allow_resend(&peer, 1, &MessageId::generate(), 8) == Decision::Allowed
            })
            .count();
        assert_eq!(allowed, RESENDS_PER_DEVICE - 1);
    }
}
