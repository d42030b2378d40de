//! The keys role: each device's signed prekey and its stock of one-time
//! prekeys, each one-time key handed out at most once.

use std::future::Future;

use comptoir_protocol::AccountId;

use super::StorageResult;

/// Longest prekey public key kept: room for post-quantum KEM keys
/// (ML-KEM-1024's is 1568 bytes), far above X25519's 32.
pub const MAX_PREKEY_PUBLIC_LEN: usize = 2048;

/// A prekey's public key: 1 to [`MAX_PREKEY_PUBLIC_LEN`] bytes. What
/// kind of key it is (X25519 today) is the handlers' business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeyPublic(Vec<u8>);

/// A prekey public key of a length storage does not keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a prekey public key is 1 to {MAX_PREKEY_PUBLIC_LEN} bytes, got {0}")]
pub struct PreKeyLength(pub usize);

impl PreKeyPublic {
    /// Check the length and keep the bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, PreKeyLength> {
        if bytes.is_empty() || bytes.len() > MAX_PREKEY_PUBLIC_LEN {
            return Err(PreKeyLength(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Take the key bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// A device's signed prekey: its id, public key and the device identity
/// key's signature over it (checked by the handler before storing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPreKeyRecord {
    /// The key id (not 0).
    pub key_id: u32,
    /// The public key.
    pub public: PreKeyPublic,
    /// The identity key's signature.
    pub signature: Vec<u8>,
}

/// One one-time prekey of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimePreKeyRecord {
    /// The key id (not 0), unique among the device's one-time keys.
    pub key_id: u32,
    /// The public key.
    pub public: PreKeyPublic,
}

/// The parts of a prekey bundle for one device, the one-time key removed
/// from the store.
#[derive(Clone, Debug, Default)]
pub struct TakenPreKeys {
    /// The current signed prekey, if one was uploaded.
    pub signed: Option<SignedPreKeyRecord>,
    /// A one-time prekey nobody else will get, if any was left.
    pub one_time: Option<OneTimePreKeyRecord>,
    /// One-time prekeys left after this one.
    pub remaining: u32,
}

/// Prekeys per device. See the [module docs](super) for the contract.
pub trait Keys: Send + Sync + 'static {
    /// Store a signed prekey (replacing the previous) and one-time prekeys.
    /// Refuses (returns `Err(stock)`) if the stock would exceed `max`.
    fn store_prekeys(
        &self,
        account: AccountId,
        device: u32,
        signed: Option<SignedPreKeyRecord>,
        one_time: Vec<OneTimePreKeyRecord>,
        max: u32,
    ) -> impl Future<Output = StorageResult<Result<u32, u32>>> + Send;

    /// Take the signed prekey and one one-time prekey of a device; the
    /// one-time key is removed durably and given to no other caller.
    fn take_prekeys(
        &self,
        account: AccountId,
        device: u32,
    ) -> impl Future<Output = StorageResult<TakenPreKeys>> + Send;

    /// One-time prekeys stored for a device.
    fn one_time_prekey_count(
        &self,
        account: AccountId,
        device: u32,
    ) -> impl Future<Output = StorageResult<u32>> + Send;

    /// Forget a removed device's prekeys (durably).
    fn remove_device_keys(
        &self,
        account: AccountId,
        device: u32,
    ) -> impl Future<Output = StorageResult<()>> + Send;
}
