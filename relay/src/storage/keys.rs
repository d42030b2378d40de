//! The keys role: each device's signed prekey and its stock of one-time
//! prekeys, each one-time key handed out at most once.

use std::future::Future;

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::wire::{OneTimePreKey, SignedPreKey};

use super::StorageResult;

/// The parts of a prekey bundle for one device, the one-time key removed
/// from the store.
#[derive(Clone, Debug, Default)]
pub struct TakenPreKeys {
    /// The current signed prekey, if one was uploaded.
    pub signed: Option<SignedPreKey>,
    /// A one-time prekey nobody else will get, if any was left.
    pub one_time: Option<OneTimePreKey>,
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
        signed: Option<SignedPreKey>,
        one_time: Vec<OneTimePreKey>,
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
