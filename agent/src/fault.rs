//! Fault injection for crash tests, compiled in only with the test-only
//! cargo feature `fault-injection` (enabled by the end-to-end tests
//! crate's dev-dependency, never in a release build of the daemon): when
//! the environment variable [`FAULT_POINT_ENV`] names a point, the
//! process aborts there, as `kill -9` would stop it. Without the feature
//! every point is an empty function.
//!
//! Points:
//! - `after-status-<status>` (`after-status-delivered`, …): a status the
//!   daemon learnt first hand is committed to its database, nothing more
//!   done (the other daemons not yet told).

/// The environment variable naming the point to abort at.
pub const FAULT_POINT_ENV: &str = "COMPTOIR_AGENT_FAULT_POINT";

/// Abort the process if `point` is the one named in [`FAULT_POINT_ENV`].
#[cfg(feature = "fault-injection")]
pub(crate) fn hit(point: &str) {
    if std::env::var(FAULT_POINT_ENV).is_ok_and(|p| p == point) {
        eprintln!("fault injection: aborting at {point}");
        std::process::abort();
    }
}

/// Without the `fault-injection` feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn hit(_point: &str) {}
