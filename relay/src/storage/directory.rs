//! The directory role: who exists and what the relay must check on every
//! request. Accounts (their record and their signed device list), phone
//! bindings, business names, blocks, and the expiry of accounts that never
//! authenticated. Later also consents, certificates and templates.
//!
//! Every read sees every write that completed before it started: a device
//! removal or a block takes effect for the next request (no cache that
//! could serve the old answer).

use std::future::Future;
use std::sync::Arc;

use comptoir_protocol::{AccountId, DeviceList};

use super::StorageResult;

/// An account's signed device list: the bytes as the account published
/// them (what the relay hands to others, and stores), with their parse.
/// Whoever builds one vouches that `list` is `signed` as verified (the
/// handlers verify before they store; a backend parses what it stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDeviceList {
    /// The encoded `SignedDeviceList` (signature included), as published.
    pub signed: Vec<u8>,
    /// Its content: account, account key, version, devices.
    pub list: DeviceList,
}

/// An account's kind, stated at registration and never changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// A person (also an account registered before kinds existed that
    /// holds no business name).
    #[default]
    Customer,
    /// A business.
    Business,
}

/// What the relay keeps about an account besides its device list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountRecord {
    /// Stated at registration, never changed.
    pub kind: Kind,
    /// The relay's clock at registration, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// The verified E.164 phone number bound to the account, empty if none.
    pub phone_number: String,
    /// Whether others may find the account by that number.
    pub discoverable: bool,
    /// The operator's certificate of the business profile (empty:
    /// unverified). Filled by the business issue.
    pub business_certificate: Vec<u8>,
    /// The quality tier (0: none yet).
    pub quality_tier: u32,
    /// The daily quota of customers reached by business-initiated
    /// conversations (0: the tier's default).
    pub daily_conversation_quota: u64,
}

/// What `replace_device_list` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListUpdate {
    /// Stored.
    Stored,
    /// Refused: not newer than the stored version.
    Stale {
        /// The stored version.
        have: u64,
    },
    /// No such account.
    UnknownAccount,
}

/// What `claim_name` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameClaim {
    /// The name is now the account's (stored durably).
    Claimed,
    /// The account already held this name: nothing written.
    AlreadyYours,
    /// Another account holds the name: nothing written.
    TakenByOther,
    /// The account already holds a different name: nothing written.
    AccountHasOther,
}

/// What `expire_unauthenticated` deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpiredAccounts {
    /// Accounts deleted.
    pub accounts: u64,
    /// Envelopes that were queued for them.
    pub envelopes: u64,
}

/// What [`Directory::create_account`] did.
#[derive(Debug)]
pub enum Created {
    /// The account is new.
    New,
    /// The account exists already: its device list, unchanged (and its
    /// record left as it was).
    Exists(Arc<StoredDeviceList>),
    /// The id was an account's that expired, never having logged in: it is
    /// never given out again, so nothing that named that account (consents
    /// given to it, blocks, first contacts, mail in flight) passes to
    /// another. Nothing was written.
    Retired,
}

/// Accounts, names, phones and blocks. See the [module docs](super) for
/// the contract every role keeps.
pub trait Directory: Send + Sync + 'static {
    /// Create an account with its first device list and its record, both
    /// or neither (atomically), unless the id is taken or retired (see
    /// [`Created`]).
    fn create_account(
        &self,
        list: &StoredDeviceList,
        record: &AccountRecord,
    ) -> impl Future<Output = StorageResult<Created>> + Send;

    /// Note that the account authenticated (durably, the first time): it
    /// no longer expires under `expire_unauthenticated`.
    fn mark_authenticated(
        &self,
        account: AccountId,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// Delete up to `limit` accounts registered (by this relay version or
    /// later) before `registered_before_ms` that never authenticated: their
    /// record, device list, prekeys, phone and name bindings, and the mail
    /// queued for them, durably; their ids are retired (see
    /// [`Created::Retired`]). Throwaway accounts otherwise stay forever.
    fn expire_unauthenticated(
        &self,
        registered_before_ms: u64,
        limit: usize,
    ) -> impl Future<Output = StorageResult<ExpiredAccounts>> + Send;

    /// The account's record (kind, creation time, phone binding, business
    /// fields); it is read on every send. `None` for an unknown account
    /// (a backend gives accounts registered before records existed one
    /// when it opens: a customer created at time 0, or a business if it
    /// holds a business name).
    fn account_record(
        &self,
        account: AccountId,
    ) -> impl Future<Output = StorageResult<Option<AccountRecord>>> + Send;

    /// The account's current signed device list (shared: it is read on
    /// every send). Never older than the last completed
    /// [`replace_device_list`](Directory::replace_device_list).
    fn device_list(
        &self,
        account: AccountId,
    ) -> impl Future<Output = StorageResult<Option<Arc<StoredDeviceList>>>> + Send;

    /// Replace the device list if `list.version` is newer (atomically).
    fn replace_device_list(
        &self,
        account: AccountId,
        list: &StoredDeviceList,
    ) -> impl Future<Output = StorageResult<ListUpdate>> + Send;

    /// Record (or lift) `blocker`'s block of `blocked`.
    fn set_blocked(
        &self,
        blocker: AccountId,
        blocked: AccountId,
        on: bool,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// Whether `blocker` blocks `blocked`.
    fn is_blocked(
        &self,
        blocker: AccountId,
        blocked: AccountId,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Bind a verified phone number (E.164) to an account, and note it in
    /// the account's record; an earlier holder's record no longer names it,
    /// and the account's own earlier number no longer finds it (one step:
    /// an account holds one number, a number one account).
    fn bind_phone(
        &self,
        phone: &str,
        account: AccountId,
        discoverable: bool,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// The account a phone number is bound to, and whether it is
    /// discoverable.
    fn lookup_phone(
        &self,
        phone: &str,
    ) -> impl Future<Output = StorageResult<Option<(AccountId, bool)>>> + Send;

    /// Bind a (normalised) business name to an account, first come first
    /// served and one name per account, atomically even against concurrent
    /// claims on other nodes: two claimers of one name never both win.
    fn claim_name(
        &self,
        name: &str,
        account: AccountId,
    ) -> impl Future<Output = StorageResult<NameClaim>> + Send;

    /// The account holding a (normalised) business name.
    fn lookup_name(
        &self,
        name: &str,
    ) -> impl Future<Output = StorageResult<Option<AccountId>>> + Send;
}
