//! Each business's quality rating and messaging tier (issue 14 item 5):
//! gathers what [`crate::policy::quality`] decides on (verified reports,
//! blocks with their reasons, the customers reached) and keeps its
//! decisions in the [`Quality`] store.
//!
//! Cadence: a tier is evaluated lazily, at most once per 24 hours, when
//! the business sends a business-initiated conversation or asks for its
//! standing (or the operator looks at it); the rating shown is computed
//! at the time it is shown. Reports are verified the way `relay admin
//! reports` verifies them: only a valid report against the business
//! counts.

use comptoir_protocol::AccountId;
use serde::Deserialize;

use crate::policy::quality::{
    self, RATING_WINDOW_MS, Rating, RatingRules, ReachWindow, Signals, TIER_COUNT, TierLimits,
    TierState,
};
use crate::state::Relay;
use crate::storage::{Quality, Reports, StorageError, StorageResult};

/// The `[tiers]` table of the relay configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TiersConfig {
    /// The limits of tiers 1 to 4 (tier 5 is unlimited), increasing:
    /// distinct customers reached by business-initiated conversations in
    /// 24 hours. Default 250, 2,000, 10,000, 100,000.
    pub limits: Vec<u64>,
    /// Rating `low` at or above this many thousandths (default 30).
    pub low_permille: u64,
    /// Rating `medium` at or above this many thousandths (default 10).
    pub medium_permille: u64,
    /// The smallest audience a rating divides by (default 250).
    pub min_audience: u64,
}

impl Default for TiersConfig {
    fn default() -> Self {
        let rules = RatingRules::default();
        Self {
            limits: TierLimits::default().0.to_vec(),
            low_permille: rules.low_permille,
            medium_permille: rules.medium_permille,
            min_audience: rules.min_audience,
        }
    }
}

impl TiersConfig {
    /// Refuse limits that are not four increasing numbers from 1, and
    /// thresholds out of order.
    pub fn check(&self) -> Result<(), String> {
        let wanted = usize::from(TIER_COUNT - 1);
        if self.limits.len() != wanted
            || self.limits.first().is_none_or(|&l| l == 0)
            || self.limits.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(format!(
                "[tiers] limits must be {wanted} increasing numbers from 1 (tier {TIER_COUNT} \
                 is unlimited), got {:?}",
                self.limits
            ));
        }
        if self.medium_permille == 0 || self.medium_permille > self.low_permille {
            return Err(format!(
                "[tiers] needs 0 < medium_permille <= low_permille, got {} and {}",
                self.medium_permille, self.low_permille
            ));
        }
        Ok(())
    }

    /// The tier limits (defaults if the table was not checked).
    pub fn tier_limits(&self) -> TierLimits {
        match <[u64; TIER_COUNT as usize - 1]>::try_from(self.limits.as_slice()) {
            Ok(limits) => TierLimits(limits),
            Err(_) => TierLimits::default(),
        }
    }

    /// The rating thresholds.
    pub fn rating_rules(&self) -> RatingRules {
        RatingRules {
            low_permille: self.low_permille,
            medium_permille: self.medium_permille,
            min_audience: self.min_audience,
        }
    }
}

/// A business's standing as the relay sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// The rating now.
    pub rating: Rating,
    /// What it is computed from.
    pub signals: Signals,
    /// The tier state (after any evaluation that was due).
    pub state: TierState,
    /// The limit of the tier in force (`None`: unlimited).
    pub limit: Option<u64>,
    /// Customers counted in the last 24 hours.
    pub window: ReachWindow,
}

impl Standing {
    /// The tier in force, named.
    pub fn tier_name(&self, limits: &TierLimits) -> String {
        limits.name(self.state.effective())
    }
}

/// What the rating of `business` is computed from at `now_ms`.
pub(crate) async fn signals<S: Quality + Reports>(
    relay: &Relay<S>,
    business: AccountId,
    now_ms: u64,
) -> StorageResult<(Signals, ReachWindow)> {
    let within = |at: u64| now_ms < at.saturating_add(RATING_WINDOW_MS) && at <= now_ms;
    let sender = business.to_string();
    let mut verified_reports = 0;
    for kept in relay.store.reports().await? {
        if !within(kept.received_at_ms) {
            continue;
        }
        let report = crate::admin::reports::verify(&relay.operator, &relay.franking, &kept);
        if report.valid && report.sender == sender {
            verified_reports += 1;
        }
    }
    let block_reasons = relay
        .store
        .blocks_of(business)
        .await?
        .into_iter()
        .filter(|&(_, at)| within(at))
        .map(|(reason, _)| reason)
        .collect();
    let (window, customers_reached) = relay.store.reach_usage(business, now_ms).await?;
    Ok((
        Signals {
            verified_reports,
            block_reasons,
            customers_reached,
        },
        window,
    ))
}

/// `business`'s standing at `now_ms`, evaluating its tier if that is due
/// (and storing the result).
pub(crate) async fn standing<S: Quality + Reports>(
    relay: &Relay<S>,
    business: AccountId,
    now_ms: u64,
) -> StorageResult<Standing> {
    let config = &relay.config.tiers;
    let limits = config.tier_limits();
    // A concurrent evaluation or override wins; read again and redo.
    for _ in 0..8 {
        let kept = relay.store.tier_state(business).await?;
        let (signals, window) = signals(relay, business, now_ms).await?;
        let rating = quality::rate(&signals, &config.rating_rules());
        let current = kept.unwrap_or_default();
        let state = quality::evaluate(current, rating, signals.customers_reached, &limits, now_ms);
        if state != current || kept.is_none() {
            if !relay
                .store
                .replace_tier_state(business, kept, state)
                .await?
            {
                continue;
            }
            if state.tier != current.tier {
                tracing::info!(
                    %business,
                    from = current.tier + 1,
                    to = state.tier + 1,
                    rating = rating.name(),
                    "messaging tier changed"
                );
            }
        }
        return Ok(Standing {
            rating,
            signals,
            state,
            limit: limits.limit(state.effective()),
            window,
        });
    }
    Err(StorageError::Backend(
        "the tier state kept changing while it was evaluated".into(),
    ))
}

/// The limit a business-initiated send of `business` at `now_ms` is held
/// to (`None`: unlimited), evaluating the tier first if that is due.
pub(crate) async fn limit_for_send<S: Quality + Reports>(
    relay: &Relay<S>,
    business: AccountId,
    now_ms: u64,
) -> StorageResult<Option<u64>> {
    let limits = relay.config.tiers.tier_limits();
    match relay.store.tier_state(business).await? {
        Some(state) if !state.due(now_ms) => Ok(limits.limit(state.effective())),
        _ => Ok(standing(relay, business, now_ms).await?.limit),
    }
}

/// Set (`Some`) or lift (`None`) the operator's override of `business`'s
/// tier (0-based).
pub(crate) async fn set_override<S: Quality>(
    relay: &Relay<S>,
    business: AccountId,
    tier: Option<u8>,
) -> StorageResult<()> {
    for _ in 0..8 {
        let kept = relay.store.tier_state(business).await?;
        let new = TierState {
            overridden: tier,
            ..kept.unwrap_or_default()
        };
        if relay.store.replace_tier_state(business, kept, new).await? {
            tracing::info!(%business, tier = ?tier.map(|t| t + 1), "tier override set");
            return Ok(());
        }
    }
    Err(StorageError::Backend(
        "the tier state kept changing while the override was set".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tiers_table_is_checked() {
        assert!(TiersConfig::default().check().is_ok());
        assert_eq!(TiersConfig::default().tier_limits(), TierLimits::default());
        for limits in [vec![], vec![1, 2, 3], vec![0, 2, 3, 4], vec![3, 2, 5, 6]] {
            let config = TiersConfig {
                limits,
                ..TiersConfig::default()
            };
            assert!(config.check().is_err(), "{config:?}");
        }
        let upside_down = TiersConfig {
            medium_permille: 40,
            ..TiersConfig::default()
        };
        assert!(upside_down.check().is_err());
    }
}
