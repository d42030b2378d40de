//! Quality rating and messaging tiers (issue 14 item 5), as pure
//! functions: no I/O, no clock, no storage. [`crate::quality`] gathers
//! the inputs (verified reports, blocks with their reasons, the customers
//! a business reached) and stores what [`evaluate`] decides; the mail
//! log's accept applies [`admit_reach`] under its lock, so the limit and
//! the reach it counts commit together. docs/OPERATIONS.md ("Quality
//! rating and messaging tiers") states the same rules for operators.
//!
//! - **Rating** ([`rate`]): over the last [`RATING_WINDOW_MS`] (7 days),
//!   each verified report against the business weighs
//!   [`WEIGHT_REPORT`], each customer's block with its reason weighs
//!   [`block_weight`]; the sum, in thousandths of the distinct customers
//!   the business reached in those 7 days (at least
//!   [`RatingRules::min_audience`]), gives `low` at or above
//!   [`RatingRules::low_permille`], `medium` at or above
//!   [`RatingRules::medium_permille`], `high` below.
//! - **Tiers** ([`TierLimits`]): the distinct customers a business may
//!   reach by business-initiated conversations (a template outside the
//!   customer's 24-hour window, to a customer it did not reach in the
//!   last [`REACH_WINDOW_MS`]) in any rolling 24 hours: 250, 2,000,
//!   10,000, 100,000, unlimited by default.
//! - **Evaluation** ([`evaluate`]): at most once per
//!   [`EVALUATION_INTERVAL_MS`]: down one tier when the rating is low; up
//!   one when it is not low and the business reached at least half its
//!   limit in the last 7 days. An operator's override fixes the tier.

use comptoir_protocol::proto::wire::BlockReason;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The rolling window reports, blocks and reach are rated over: 7 days.
pub const RATING_WINDOW_MS: u64 = 7 * DAY_MS;
/// The rolling window the tier limit counts customers in: 24 hours. A
/// customer reached stays counted (and may receive further templates
/// without counting again) for this long.
pub const REACH_WINDOW_MS: u64 = DAY_MS;
/// A tier is re-evaluated at most this often (lazily: on a
/// business-initiated send and on a standing request).
pub const EVALUATION_INTERVAL_MS: u64 = DAY_MS;

/// Weight of one verified report.
pub const WEIGHT_REPORT: u64 = 4;

/// A quality rating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rating {
    /// Many reports or blocks for the customers reached.
    Low,
    /// Some.
    Medium,
    /// Few or none.
    High,
}

impl Rating {
    /// Its name on the wire, the CLI and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Rating::Low => "low",
            Rating::Medium => "medium",
            Rating::High => "high",
        }
    }

    /// Its stored byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Rating::Low => 1,
            Rating::Medium => 2,
            Rating::High => 3,
        }
    }

    /// From its stored byte.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Rating::Low),
            2 => Some(Rating::Medium),
            3 => Some(Rating::High),
            _ => None,
        }
    }
}

/// The weight of one customer's block of a business with `reason` (a
/// `BlockReason` number): spam and offensive 3, did not sign up 2, no
/// reason or no longer needed 1.
pub fn block_weight(reason: i32) -> u64 {
    match BlockReason::try_from(reason) {
        Ok(BlockReason::Spam | BlockReason::Offensive) => 3,
        Ok(BlockReason::DidNotSignUp) => 2,
        Ok(BlockReason::NoLongerNeeded | BlockReason::Unspecified) | Err(_) => 1,
    }
}

/// What a rating is computed from, over the last [`RATING_WINDOW_MS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// Verified reports against the business.
    pub verified_reports: u64,
    /// The reason of each customer's block of the business.
    pub block_reasons: Vec<i32>,
    /// Distinct customers it reached by business-initiated conversations.
    pub customers_reached: u64,
}

impl Signals {
    /// The weighted sum of reports and blocks.
    pub fn penalty(&self) -> u64 {
        let blocks: u64 = self.block_reasons.iter().map(|&r| block_weight(r)).sum();
        self.verified_reports
            .saturating_mul(WEIGHT_REPORT)
            .saturating_add(blocks)
    }
}

/// The rating thresholds (relay configuration `[tiers]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatingRules {
    /// `low` at or above this many thousandths of the audience.
    pub low_permille: u64,
    /// `medium` at or above this many thousandths of the audience.
    pub medium_permille: u64,
    /// The audience is never taken as smaller than this: a business that
    /// reached few customers is not rated low for one report.
    pub min_audience: u64,
}

impl Default for RatingRules {
    fn default() -> Self {
        Self {
            low_permille: 30,
            medium_permille: 10,
            min_audience: 250,
        }
    }
}

/// The rating `signals` give under `rules`.
pub fn rate(signals: &Signals, rules: &RatingRules) -> Rating {
    let audience = signals.customers_reached.max(rules.min_audience).max(1);
    let permille = u128::from(signals.penalty()) * 1000 / u128::from(audience);
    if permille >= u128::from(rules.low_permille) {
        Rating::Low
    } else if permille >= u128::from(rules.medium_permille) {
        Rating::Medium
    } else {
        Rating::High
    }
}

/// How many tiers there are; the last is unlimited.
pub const TIER_COUNT: u8 = 5;

/// The limits of the limited tiers, lowest first (relay configuration
/// `[tiers] limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierLimits(pub [u64; TIER_COUNT as usize - 1]);

impl Default for TierLimits {
    fn default() -> Self {
        Self([250, 2_000, 10_000, 100_000])
    }
}

impl TierLimits {
    /// The limit of tier `tier` (0-based; `None`: unlimited).
    pub fn limit(&self, tier: u8) -> Option<u64> {
        self.0.get(usize::from(tier)).copied()
    }

    /// The tier's name: its number from 1 and its limit, e.g.
    /// `"1 (250 customers a day)"` or `"5 (unlimited)"`.
    pub fn name(&self, tier: u8) -> String {
        match self.limit(tier) {
            Some(limit) => format!("{} ({limit} customers a day)", tier + 1),
            None => format!("{} (unlimited)", tier + 1),
        }
    }
}

/// A business's tier as kept between evaluations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierState {
    /// The tier evaluation arrived at (0-based).
    pub tier: u8,
    /// The operator's override (0-based), if any: it is the tier in force.
    pub overridden: Option<u8>,
    /// When it was last evaluated (0: never).
    pub evaluated_at_ms: u64,
    /// The rating it was last evaluated with.
    pub rating: Option<Rating>,
}

impl TierState {
    /// The tier in force.
    pub fn effective(&self) -> u8 {
        self.overridden.unwrap_or(self.tier)
    }

    /// Whether [`evaluate`] would look at it again at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        self.evaluated_at_ms == 0
            || now_ms >= self.evaluated_at_ms.saturating_add(EVALUATION_INTERVAL_MS)
    }

    /// When it is next evaluated (0 when it is due now).
    pub fn next_evaluation_ms(&self) -> u64 {
        if self.evaluated_at_ms == 0 {
            0
        } else {
            self.evaluated_at_ms.saturating_add(EVALUATION_INTERVAL_MS)
        }
    }
}

/// Evaluate `state` at `now_ms` with the current `rating` and the
/// distinct customers reached in the last 7 days: unchanged when not
/// due; otherwise down one tier when the rating is low, up one when it
/// is not low and `reached_7d` is at least half the tier's limit (the
/// evaluated tier moves under an override too, which stays in force).
pub fn evaluate(
    state: TierState,
    rating: Rating,
    reached_7d: u64,
    limits: &TierLimits,
    now_ms: u64,
) -> TierState {
    if !state.due(now_ms) {
        return state;
    }
    let tier = state.tier.min(TIER_COUNT - 1);
    let tier = match (rating, limits.limit(tier)) {
        (Rating::Low, _) => tier.saturating_sub(1),
        (_, Some(limit)) if reached_7d.saturating_mul(2) >= limit => tier + 1,
        _ => tier,
    };
    TierState {
        tier,
        overridden: state.overridden,
        evaluated_at_ms: now_ms,
        rating: Some(rating),
    }
}

/// Customers a business reached in the last [`REACH_WINDOW_MS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReachWindow {
    /// How many.
    pub used: u64,
    /// When the oldest of them was reached.
    pub oldest_ms: Option<u64>,
}

/// What [`admit_reach`] says of a business-initiated send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReachAdmission {
    /// The customer was reached in the last 24 hours: it does not count
    /// again.
    AlreadyReached,
    /// A new customer within the limit: it counts from `now`.
    Counts,
    /// Over the limit: nothing is stored; a customer's slot frees at
    /// `retry_at_ms`.
    OverLimit {
        /// When the oldest reach in the window leaves it.
        retry_at_ms: u64,
        /// The limit.
        limit: u64,
    },
}

/// Whether a business-initiated send to a customer last reached at
/// `last_reached_ms` fits `limit` (`None`: unlimited) at `now_ms`, given
/// the business's `window`.
pub fn admit_reach(
    last_reached_ms: Option<u64>,
    window: ReachWindow,
    limit: Option<u64>,
    now_ms: u64,
) -> ReachAdmission {
    if last_reached_ms.is_some_and(|at| now_ms < at.saturating_add(REACH_WINDOW_MS)) {
        return ReachAdmission::AlreadyReached;
    }
    match limit {
        Some(limit) if window.used >= limit => ReachAdmission::OverLimit {
            retry_at_ms: window
                .oldest_ms
                .map_or(now_ms, |at| at.saturating_add(REACH_WINDOW_MS))
                .max(now_ms),
            limit,
        },
        _ => ReachAdmission::Counts,
    }
}

/// Parse an operator's tier argument: `auto` (`Ok(None)`), a tier number
/// 1 to 5, or `unlimited` (tier 5).
pub fn parse_tier(text: &str) -> Result<Option<u8>, String> {
    match text.trim() {
        "auto" => Ok(None),
        "unlimited" => Ok(Some(TIER_COUNT - 1)),
        other => match other.parse::<u8>() {
            Ok(n) if (1..=TIER_COUNT).contains(&n) => Ok(Some(n - 1)),
            _ => Err(format!(
                "a tier is a number from 1 to {TIER_COUNT}, `unlimited` or `auto`, not {other:?}"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(reports: u64, blocks: &[BlockReason], reached: u64) -> Signals {
        Signals {
            verified_reports: reports,
            block_reasons: blocks.iter().map(|&r| r as i32).collect(),
            customers_reached: reached,
        }
    }

    #[test]
    fn the_rating_changes_exactly_at_its_thresholds() {
        let rules = RatingRules::default();
        // 1,000 customers: medium from 10 points, low from 30.
        assert_eq!(rate(&signals(0, &[], 1000), &rules), Rating::High);
        let nine = [BlockReason::DidNotSignUp; 4];
        assert_eq!(
            rate(
                &signals(0, &[&nine[..], &[BlockReason::Unspecified]].concat(), 1000),
                &rules
            ),
            Rating::High,
            "9 points"
        );
        assert_eq!(
            rate(&signals(0, &[BlockReason::DidNotSignUp; 5], 1000), &rules),
            Rating::Medium,
            "10 points"
        );
        assert_eq!(
            rate(&signals(7, &[BlockReason::NoLongerNeeded], 1000), &rules),
            Rating::Medium,
            "29 points"
        );
        assert_eq!(
            rate(&signals(7, &[BlockReason::DidNotSignUp], 1000), &rules),
            Rating::Low,
            "30 points"
        );
    }

    #[test]
    fn a_small_audience_counts_as_the_minimum() {
        let rules = RatingRules::default();
        // 5 customers reached: taken as 250, so one report (4) is 16‰,
        // two are 32‰, a block for not signing up (2) is 8‰.
        assert_eq!(rate(&signals(1, &[], 5), &rules), Rating::Medium);
        assert_eq!(rate(&signals(2, &[], 5), &rules), Rating::Low);
        assert_eq!(
            rate(&signals(0, &[BlockReason::DidNotSignUp], 5), &rules),
            Rating::High
        );
        assert_eq!(rate(&signals(0, &[], 0), &rules), Rating::High);
        let none = RatingRules {
            min_audience: 0,
            ..rules
        };
        assert_eq!(rate(&signals(0, &[], 0), &none), Rating::High);
        assert_eq!(
            rate(&signals(0, &[BlockReason::Spam], 0), &none),
            Rating::Low
        );
    }

    #[test]
    fn blocks_weigh_by_their_reason() {
        assert_eq!(block_weight(BlockReason::Spam as i32), 3);
        assert_eq!(block_weight(BlockReason::Offensive as i32), 3);
        assert_eq!(block_weight(BlockReason::DidNotSignUp as i32), 2);
        assert_eq!(block_weight(BlockReason::NoLongerNeeded as i32), 1);
        assert_eq!(block_weight(BlockReason::Unspecified as i32), 1);
        assert_eq!(block_weight(99), 1);
        assert_eq!(
            signals(2, &[BlockReason::Spam, BlockReason::DidNotSignUp], 0).penalty(),
            13
        );
    }

    #[test]
    fn a_tier_moves_up_at_half_its_limit_and_down_when_low() {
        let limits = TierLimits::default();
        let fresh = TierState::default();
        let now = 10 * DAY_MS;
        // 124 of 250 is under half: stays; 125 is half: up.
        assert_eq!(evaluate(fresh, Rating::High, 124, &limits, now).tier, 0);
        let up = evaluate(fresh, Rating::Medium, 125, &limits, now);
        assert_eq!(
            (up.tier, up.evaluated_at_ms, up.rating),
            (1, now, Some(Rating::Medium))
        );
        // Not again within a day, whatever happens.
        assert_eq!(evaluate(up, Rating::Low, 0, &limits, now + DAY_MS - 1), up);
        // A day later: 1,000 of 2,000 moves up; low moves down instead.
        assert_eq!(
            evaluate(up, Rating::High, 1000, &limits, now + DAY_MS).tier,
            2
        );
        assert_eq!(
            evaluate(up, Rating::Low, 1000, &limits, now + DAY_MS).tier,
            0
        );
        // Not below the first tier, not above unlimited.
        assert_eq!(evaluate(fresh, Rating::Low, 0, &limits, now).tier, 0);
        let top = TierState {
            tier: TIER_COUNT - 1,
            ..fresh
        };
        assert_eq!(
            evaluate(top, Rating::High, u64::MAX, &limits, now).tier,
            TIER_COUNT - 1
        );
        assert_eq!(limits.limit(TIER_COUNT - 1), None);
        assert_eq!(limits.limit(0), Some(250));
    }

    #[test]
    fn an_override_is_the_tier_in_force() {
        let limits = TierLimits::default();
        let state = TierState {
            tier: 2,
            overridden: Some(0),
            ..TierState::default()
        };
        assert_eq!(state.effective(), 0);
        let after = evaluate(state, Rating::Low, 0, &limits, DAY_MS);
        assert_eq!((after.tier, after.effective()), (1, 0));
    }

    #[test]
    fn the_reach_limit_counts_new_customers_and_says_when_to_retry() {
        let now = 5 * DAY_MS;
        let full = ReachWindow {
            used: 250,
            oldest_ms: Some(now - 1000),
        };
        // Reached within 24 hours: never refused, never counted again.
        assert_eq!(
            admit_reach(Some(now - REACH_WINDOW_MS + 1), full, Some(250), now),
            ReachAdmission::AlreadyReached
        );
        // Reached exactly 24 hours ago: counts anew.
        assert_eq!(
            admit_reach(Some(now - REACH_WINDOW_MS), full, Some(250), now),
            ReachAdmission::OverLimit {
                retry_at_ms: now - 1000 + REACH_WINDOW_MS,
                limit: 250
            }
        );
        let one_left = ReachWindow { used: 249, ..full };
        assert_eq!(
            admit_reach(None, one_left, Some(250), now),
            ReachAdmission::Counts
        );
        assert_eq!(admit_reach(None, full, None, now), ReachAdmission::Counts);
    }

    #[test]
    fn tier_arguments_parse_or_say_what_is_expected() {
        assert_eq!(parse_tier("auto"), Ok(None));
        assert_eq!(parse_tier("1"), Ok(Some(0)));
        assert_eq!(parse_tier("5"), Ok(Some(4)));
        assert_eq!(parse_tier("unlimited"), Ok(Some(4)));
        for bad in ["0", "6", "-1", "", "high", "250"] {
            assert!(parse_tier(bad).is_err(), "{bad}");
        }
    }
}
