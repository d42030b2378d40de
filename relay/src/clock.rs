//! The relay's clock for its business time rules: the 24-hour window and
//! the accept time every send is stamped with. It reads the wall clock
//! but never goes back: it keeps a high-water mark, persisted by the
//! storage backend (every garbage-collection pass and at shutdown), so a
//! wall clock stepped backwards, before or across a restart, cannot
//! reopen a window that had closed. After a crash it may go back by at
//! most the time since the mark was last persisted (`gc_interval_ms`).
//!
//! With the test-only cargo feature `test-clock` (enabled by the
//! end-to-end tests crate's dev-dependency, never in a release build of
//! the relay) the clock can be shifted by an offset, forwards or back, and
//! a spawned relay's clock starts shifted by [`TEST_CLOCK_OFFSET_ENV`].

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;

/// With the test-only feature `test-clock`: the environment variable
/// holding an offset in ms (may be negative) the clock starts shifted by,
/// so a test moves the clock of a relay process it spawns.
pub const TEST_CLOCK_OFFSET_ENV: &str = "COMPTOIR_TEST_CLOCK_OFFSET_MS";

/// A wall clock in ms since the Unix epoch that never goes back.
#[derive(Debug, Default)]
pub struct Clock {
    high_water: AtomicU64,
    #[cfg(feature = "test-clock")]
    offset_ms: std::sync::atomic::AtomicI64,
    /// Counts shifts, so a task waiting for a time wakes when a test
    /// moves the clock rather than when the wall clock gets there.
    #[cfg(feature = "test-clock")]
    shifts: tokio::sync::watch::Sender<u64>,
}

/// Wakes a task that waits for a time on the [`Clock`] when the clock is
/// shifted (feature `test-clock`); without that feature it never wakes,
/// and the task's own timer is what wakes it.
#[derive(Debug)]
pub struct ClockShifts {
    #[cfg(feature = "test-clock")]
    shifts: tokio::sync::watch::Receiver<u64>,
}

impl ClockShifts {
    /// Complete at the next shift of the clock (never without the
    /// feature `test-clock`).
    pub async fn next(&mut self) {
        #[cfg(feature = "test-clock")]
        {
            if self.shifts.changed().await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

impl Clock {
    /// The current time: the wall clock, or the highest time this clock
    /// (or the mark it was raised to) has shown, whichever is later.
    pub fn now_ms(&self) -> u64 {
        let wall = self.wall_ms();
        self.high_water.fetch_max(wall, SeqCst).max(wall)
    }

    /// The highest time shown so far (what the backend persists).
    pub fn high_water_ms(&self) -> u64 {
        self.high_water.load(SeqCst)
    }

    /// Never show a time before `mark_ms` (the persisted mark, at start).
    pub fn raise_to(&self, mark_ms: u64) {
        self.high_water.fetch_max(mark_ms, SeqCst);
    }

    /// Shift the wall clock this clock reads by `delta_ms` (tests only:
    /// feature `test-clock`). A shift back is held at the high-water mark.
    /// Wakes the tasks waiting on [`Self::shifts`].
    #[cfg(feature = "test-clock")]
    pub fn shift(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, SeqCst);
        self.shifts.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// What wakes a task waiting for a time on this clock when a test
    /// shifts it (see [`ClockShifts`]); shifts from now on count.
    pub fn shifts(&self) -> ClockShifts {
        ClockShifts {
            #[cfg(feature = "test-clock")]
            shifts: self.shifts.subscribe(),
        }
    }

    #[cfg(feature = "test-clock")]
    fn wall_ms(&self) -> u64 {
        static FROM_ENV: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        let start = *FROM_ENV.get_or_init(|| {
            std::env::var(TEST_CLOCK_OFFSET_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        });
        let offset = self.offset_ms.load(SeqCst).saturating_add(start);
        crate::state::now_ms().saturating_add_signed(offset)
    }

    #[cfg(not(feature = "test-clock"))]
    fn wall_ms(&self) -> u64 {
        crate::state::now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_back_below_its_mark() {
        let clock = Clock::default();
        let now = clock.now_ms();
        clock.raise_to(now + 3_600_000);
        assert!(clock.now_ms() >= now + 3_600_000);
        assert_eq!(clock.high_water_ms(), now + 3_600_000);
    }
}
