//! The quality role: each business's messaging tier as last evaluated
//! (and the operator's override), and what its rating is computed from
//! besides reports: the reasons and times of customers' blocks, and the
//! customers it reached (counted by the mailbox's accept, see
//! [`super::mail_log`]).
//!
//! Embedded backend: sled tree `tiers`, key the business account (16),
//! value version (1, = 1), evaluated tier (1, 0-based), override (1: 0
//! none, else the tier + 1), rating at the last evaluation (1: 0 none,
//! else [`Rating::to_byte`]), evaluated at (u64 BE). Every write is a
//! compare-and-swap on the value read, durable before it returns.

use std::future::Future;

use comptoir_protocol::AccountId;

use super::sled::SledStore;
use super::{StorageError, StorageResult};
use crate::policy::quality::{Rating, ReachWindow, TIER_COUNT, TierState};

const VERSION: u8 = 1;
const VALUE_LEN: usize = 12;

/// Tier state, block history and reach of businesses.
pub trait Quality: Send + Sync + 'static {
    /// `business`'s tier state (`None`: never evaluated).
    fn tier_state(
        &self,
        business: AccountId,
    ) -> impl Future<Output = StorageResult<Option<TierState>>> + Send;

    /// Replace `expected` (`None`: no state yet) by `new`; `false` if the
    /// state changed meanwhile. Durable on return.
    fn replace_tier_state(
        &self,
        business: AccountId,
        expected: Option<TierState>,
        new: TierState,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Each customer's latest block of `business`: its reason number and
    /// when (ms since the epoch).
    fn blocks_of(
        &self,
        business: AccountId,
    ) -> impl Future<Output = StorageResult<Vec<(i32, u64)>>> + Send;

    /// `business`'s customers counted towards its tier limit in the 24
    /// hours before `now_ms`, and how many in the 7 days before it.
    fn reach_usage(
        &self,
        business: AccountId,
        now_ms: u64,
    ) -> impl Future<Output = StorageResult<(ReachWindow, u64)>> + Send;
}

fn encode(state: &TierState) -> [u8; VALUE_LEN] {
    let mut out = [0; VALUE_LEN];
    out[0] = VERSION;
    out[1] = state.tier;
    out[2] = state.overridden.map_or(0, |t| t + 1);
    out[3] = state.rating.map_or(0, Rating::to_byte);
    out[4..].copy_from_slice(&state.evaluated_at_ms.to_be_bytes());
    out
}

fn decode(bytes: &[u8]) -> StorageResult<TierState> {
    let corrupt = StorageError::Corrupt("tiers");
    if bytes.len() != VALUE_LEN || bytes[0] != VERSION || bytes[1] >= TIER_COUNT {
        return Err(corrupt);
    }
    let overridden = match bytes[2] {
        0 => None,
        n if n <= TIER_COUNT => Some(n - 1),
        _ => return Err(corrupt),
    };
    let rating = match bytes[3] {
        0 => None,
        n => Some(Rating::from_byte(n).ok_or(StorageError::Corrupt("tiers"))?),
    };
    let evaluated_at_ms = u64::from_be_bytes(bytes[4..].try_into().map_err(|_| corrupt)?);
    Ok(TierState {
        tier: bytes[1],
        overridden,
        evaluated_at_ms,
        rating,
    })
}

fn backend(e: ::sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl Quality for SledStore {
    async fn tier_state(&self, business: AccountId) -> StorageResult<Option<TierState>> {
        match self.tiers.get(business.as_bytes()).map_err(backend)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn replace_tier_state(
        &self,
        business: AccountId,
        expected: Option<TierState>,
        new: TierState,
    ) -> StorageResult<bool> {
        let key = business.as_bytes();
        let current = self.tiers.get(key).map_err(backend)?;
        let still = match (&current, expected) {
            (None, None) => true,
            (Some(bytes), Some(expected)) => decode(bytes)? == expected,
            _ => false,
        };
        if !still {
            return Ok(false);
        }
        let swapped = self
            .tiers
            .compare_and_swap(key, current, Some(&encode(&new)[..]))
            .map_err(backend)?
            .is_ok();
        if swapped {
            self.committer.durable().await?;
        }
        Ok(swapped)
    }

    async fn blocks_of(&self, business: AccountId) -> StorageResult<Vec<(i32, u64)>> {
        let mut out = Vec::new();
        for item in self.block_reasons.scan_prefix(business.as_bytes()) {
            let (_, value) = item.map_err(backend)?;
            let corrupt = || StorageError::Corrupt("block_reasons");
            let reason = value
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(i32::from_be_bytes)
                .ok_or_else(corrupt)?;
            // A block noted before times were kept reads as time 0 (long
            // outside every window).
            let at = value
                .get(4..12)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            out.push((reason, at));
        }
        Ok(out)
    }

    async fn reach_usage(
        &self,
        business: AccountId,
        now_ms: u64,
    ) -> StorageResult<(ReachWindow, u64)> {
        Ok(self.mail.reach_usage(business, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_states_round_trip_and_bad_bytes_are_corrupt() {
        let state = TierState {
            tier: 3,
            overridden: Some(4),
            evaluated_at_ms: 1_234_567,
            rating: Some(Rating::Medium),
        };
        assert_eq!(decode(&encode(&state)).ok(), Some(state));
        assert_eq!(
            decode(&encode(&TierState::default())).ok(),
            Some(TierState::default())
        );
        let mut bad = encode(&state);
        bad[1] = TIER_COUNT;
        assert!(decode(&bad).is_err());
        let mut bad = encode(&state);
        bad[2] = TIER_COUNT + 1;
        assert!(decode(&bad).is_err());
        assert!(decode(&encode(&state)[..11]).is_err());
    }
}
