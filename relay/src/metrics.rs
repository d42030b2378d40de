//! Counters and gauges, rendered as Prometheus text on `/metrics`.
//! Lock-free atomics: recording costs a relaxed add on the hot path.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use comptoir_protocol::proto::wire::ErrorCode;

/// Flush-latency histogram bucket upper bounds, in seconds.
const FLUSH_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];
/// Error codes are small integers; refusals are counted per code.
const CODES: usize = 32;

/// The relay's metrics. One instance per relay, shared by every task.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections_open: AtomicI64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections closed at accept: their address held too many.
    pub connections_refused: AtomicU64,
    /// Authenticated devices connected now.
    pub authenticated_open: AtomicI64,
    /// Envelopes (device copies) durably accepted.
    pub envelopes_accepted: AtomicU64,
    /// Envelopes acked by their recipient device and deleted.
    pub envelopes_delivered: AtomicU64,
    /// `Delivered` receipts acked by their sending device and deleted.
    pub receipts_acked: AtomicU64,
    /// Envelopes deleted by TTL expiry.
    pub envelopes_expired: AtomicU64,
    /// Attachments (complete or not) deleted when their time was up.
    pub blobs_expired: AtomicU64,
    /// Status posts deleted 24 hours after posting.
    pub status_posts_expired: AtomicU64,
    /// Bill heads signed on the relay's schedule (`[billing]`).
    pub bill_heads_signed: AtomicU64,
    /// Passes of the periodic bill head signing (each signs the heads of
    /// the chains that grew since the last).
    pub bill_head_passes: AtomicU64,
    /// Retried sends recognised as duplicates (nothing stored).
    pub envelopes_duplicate: AtomicU64,
    /// Envelopes waiting in queues.
    pub queue_depth: AtomicI64,
    /// Consent requests handled after their answer (forwarded or not:
    /// the count does not say which).
    pub consent_requests_handled: AtomicU64,
    refusals: [AtomicU64; CODES],
    flushes: AtomicU64,
    flushed_writes: AtomicU64,
    flush_micros_sum: AtomicU64,
    flush_buckets: [AtomicU64; FLUSH_BUCKETS.len()],
    /// Bits set while a part of storage fails to write ([`SLED_FAILED`],
    /// [`MAIL_LOG_FAILED`]): the relay refuses sends until a retry
    /// succeeds, and `/healthz` says so.
    storage_failed: AtomicU8,
    /// Woken when a connection, delivery or expiry count changes, so a
    /// watcher (an operator tool, a test) waits for the event, not a timer.
    changed: tokio::sync::Notify,
}

/// Bit of [`Metrics::storage_failed`] for the directory store (sled).
const SLED_FAILED: u8 = 1;

/// Bit of [`Metrics::storage_failed`] for the mail log.
const MAIL_LOG_FAILED: u8 = 2;

impl Metrics {
    /// Tell watchers that a connection, delivery or expiry count changed.
    pub fn notify_change(&self) {
        self.changed.notify_waiters();
    }

    /// A future that completes at the next [`Self::notify_change`]. Create
    /// and `enable` it before checking the value it guards, so no change is
    /// missed in between.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Record that the directory store (sled) cannot write.
    pub fn set_storage_failed(&self) {
        self.set_failing(SLED_FAILED, true);
    }

    /// Record that the directory store (sled) writes again.
    pub fn set_storage_recovered(&self) {
        self.set_failing(SLED_FAILED, false);
    }

    /// Record whether the mail log fails to write.
    pub fn set_mail_log_failed(&self, failed: bool) {
        self.set_failing(MAIL_LOG_FAILED, failed);
    }

    fn set_failing(&self, part: u8, failed: bool) {
        let before = if failed {
            self.storage_failed.fetch_or(part, Relaxed)
        } else {
            self.storage_failed.fetch_and(!part, Relaxed)
        };
        if (before & part != 0) != failed {
            self.notify_change();
        }
    }

    /// Whether some part of storage is failing to write now.
    pub fn storage_failed(&self) -> bool {
        self.storage_failed.load(Relaxed) != 0
    }

    /// Count a refusal sent to a client.
    pub fn refused(&self, code: ErrorCode) {
        if let Some(counter) = self.refusals.get(code as usize) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// How many refusals of one kind were sent.
    pub fn refusals(&self, code: ErrorCode) -> u64 {
        self.refusals
            .get(code as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Record one group-commit flush covering `writes` waiting writers.
    pub fn record_flush(&self, took: Duration, writes: usize) {
        self.flushes.fetch_add(1, Relaxed);
        self.flushed_writes.fetch_add(writes as u64, Relaxed);
        self.flush_micros_sum
            .fetch_add(took.as_micros() as u64, Relaxed);
        let secs = took.as_secs_f64();
        for (bound, bucket) in FLUSH_BUCKETS.iter().zip(&self.flush_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "comptoir_connections_open",
            "gauge",
            "Open WebSocket connections.",
            self.connections_open.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_storage_healthy",
            "gauge",
            "1 while storage writes succeed; 0 while a write fails or the disk is full (see /healthz).",
            u8::from(!self.storage_failed()).to_string(),
        );
        metric(
            "comptoir_connections_total",
            "counter",
            "WebSocket connections accepted.",
            self.connections_total.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_connections_refused_total",
            "counter",
            "Connections closed at accept because their address (IPv6: /64) held too many.",
            self.connections_refused.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_authenticated_connections",
            "gauge",
            "Authenticated device connections.",
            self.authenticated_open.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_envelopes_accepted_total",
            "counter",
            "Envelopes (one per recipient device) durably accepted.",
            self.envelopes_accepted.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_envelopes_delivered_total",
            "counter",
            "Envelopes acked by the recipient device and deleted.",
            self.envelopes_delivered.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_receipts_acked_total",
            "counter",
            "Delivered receipts acked by the sending device and deleted.",
            self.receipts_acked.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_envelopes_expired_total",
            "counter",
            "Envelopes deleted undelivered after their TTL.",
            self.envelopes_expired.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_blobs_expired_total",
            "counter",
            "Attachments deleted when their time was up (complete or not).",
            self.blobs_expired.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_status_posts_expired_total",
            "counter",
            "Status posts deleted 24 hours after posting.",
            self.status_posts_expired.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_bill_heads_signed_total",
            "counter",
            "Bill heads signed on the relay's schedule (chains that grew).",
            self.bill_heads_signed.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_bill_head_passes_total",
            "counter",
            "Passes of the periodic bill head signing.",
            self.bill_head_passes.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_consent_requests_handled_total",
            "counter",
            "Consent requests handled (forwarded or dropped; not told apart).",
            self.consent_requests_handled.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_envelopes_duplicate_total",
            "counter",
            "Retried sends recognised by message id (nothing stored).",
            self.envelopes_duplicate.load(Relaxed).to_string(),
        );
        metric(
            "comptoir_queue_depth",
            "gauge",
            "Envelopes waiting in device queues.",
            self.queue_depth.load(Relaxed).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP comptoir_refusals_total Error frames sent, by reason.\n# TYPE comptoir_refusals_total counter"
        );
        for (code, counter) in self.refusals.iter().enumerate() {
            let n = counter.load(Relaxed);
            if n == 0 {
                continue;
            }
            let name = i32::try_from(code)
                .ok()
                .and_then(|c| ErrorCode::try_from(c).ok())
                .map_or("unknown", |c| c.as_str_name());
            let _ = writeln!(out, "comptoir_refusals_total{{reason=\"{name}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP comptoir_flush_seconds Group-commit flush (fsync) latency.\n# TYPE comptoir_flush_seconds histogram"
        );
        for (bound, bucket) in FLUSH_BUCKETS.iter().zip(&self.flush_buckets) {
            let _ = writeln!(
                out,
                "comptoir_flush_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let flushes = self.flushes.load(Relaxed);
        let _ = writeln!(
            out,
            "comptoir_flush_seconds_bucket{{le=\"+Inf\"}} {flushes}"
        );
        let _ = writeln!(
            out,
            "comptoir_flush_seconds_sum {}",
            self.flush_micros_sum.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "comptoir_flush_seconds_count {flushes}");
        let _ = writeln!(
            out,
            "# HELP comptoir_flushed_writes_total Writes made durable by group-commit flushes.\n# TYPE comptoir_flushed_writes_total counter\ncomptoir_flushed_writes_total {}",
            self.flushed_writes.load(Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.envelopes_accepted.fetch_add(3, Relaxed);
        m.refused(ErrorCode::RateLimited);
        m.record_flush(Duration::from_micros(300), 5);
        let text = m.render();
        assert!(text.contains("comptoir_envelopes_accepted_total 3"));
        assert!(text.contains("comptoir_refusals_total{reason=\"ERROR_CODE_RATE_LIMITED\"} 1"));
        assert!(text.contains("comptoir_flush_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("comptoir_flush_seconds_count 1"));
        assert!(text.contains("comptoir_flushed_writes_total 5"));
    }
}
