//! Webhooks: what is posted to the business's backend, how it is signed,
//! and the durable outbox that delivers it.
//!
//! **Body.** JSON in the shape integrators know from the WhatsApp Cloud
//! API: `{"object":"comptoir_business","business":…,"event_id":…,
//! "field":"messages","value":{"messages":[…]}}`, with `value.statuses`
//! for statuses and `field: "consents"` for consent answers.
//!
//! **Signature.** `X-Comptoir-Signature-256: t=<unix seconds>,sha256=<hex>`
//! where the hex is HMAC-SHA256 under the endpoint's secret of
//! `"<t>." + raw body`. The timestamp is inside the signed bytes so a
//! captured delivery cannot be replayed later: receivers check the MAC in
//! constant time and refuse a `t` more than five minutes away from their
//! clock. Each attempt is signed afresh.
//!
//! **Ids.** `X-Comptoir-Event-Id` (also `event_id` in the body) derives
//! from the message id: `message:<id>`, `status:<id>:<status>`,
//! `consent:<reference>`. The same change always gets the same id, so it
//! is queued once and a receiver can drop a repeat.
//!
//! **Order.** The events of one message (or consent request) reach an
//! endpoint in the order they were queued: while one is being retried,
//! the later ones wait, so a receiver never sees `read` and then the
//! retried `delivered`. Events of different messages do not wait for
//! each other, and endpoints are served at once: one that is down (each
//! attempt waiting out [`crate::http_client::REQUEST_TIMEOUT`]) gets one
//! attempt per pass and holds up no other endpoint, whatever its backlog;
//! events queued during that attempt wait for the next pass.
//!
//! **Outbox.** Written in the same SQLite transaction as the change it
//! reports; retried on anything but a 2xx with exponential backoff and
//! full jitter on its upper half, for [`RETRY_FOR`]; it survives a
//! restart because it is rows, not tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;
use zeroize::Zeroizing;

use crate::clock::SharedClock;
use crate::config::Webhook;
use crate::db::{Db, NewEvent, Pending};
use crate::status::MessageStatus;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-comptoir-signature-256";
/// The event id header.
pub const EVENT_ID_HEADER: &str = "x-comptoir-event-id";
/// The first retry waits about this long.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Retries never wait longer than this, so a receiver back after an
/// outage gets its events within the hour.
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(3600);
/// How long a delivery is retried before it is given up (kept in the
/// outbox as `expired`): three days, so a receiver down over a weekend
/// loses nothing.
pub const RETRY_FOR: Duration = Duration::from_secs(3 * 24 * 3600);
/// Deliveries attempted per pass.
const BATCH: u32 = 64;

/// The wait before retry number `attempt` (1 for the first retry):
/// `FIRST_RETRY · 2^(attempt-1)`, at most [`MAX_RETRY_INTERVAL`], then a
/// random point in its upper half (jitter, so receivers back from an
/// outage are not hit by every daemon at once).
pub fn backoff(attempt: u32, random_unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let base = FIRST_RETRY
        .saturating_mul(1u32 << exp)
        .min(MAX_RETRY_INTERVAL);
    base.mul_f64(0.5 + 0.5 * random_unit.clamp(0.0, 1.0))
}

/// `t=<secs>,sha256=<hex>` for `body` at `unix_secs` under `secret`.
pub fn signature(secret: &[u8], unix_secs: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_secs},sha256={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Check a signature header as a receiver does: the MAC (constant time)
/// and the timestamp within `tolerance_secs` of `now_secs`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: u64,
    tolerance_secs: u64,
) -> bool {
    let mut t = None;
    let mut sig = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("sha256", v)) => sig = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(sig)) = (t, sig) else {
        return false;
    };
    if t.abs_diff(now_secs) > tolerance_secs {
        return false;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn envelope(business: &str, event_id: &str, subject: &str, field: &str, value: Value) -> NewEvent {
    let body = json!({
        "object": "comptoir_business",
        "business": business,
        "event_id": event_id,
        "field": field,
        "value": value,
    });
    NewEvent {
        event_id: event_id.to_owned(),
        subject: subject.to_owned(),
        body: body.to_string(),
    }
}

fn contact(customer: &str, phone: Option<&str>) -> Value {
    json!([{ "account_id": customer, "phone": phone }])
}

/// A message from a customer: `fields` (its `type` and what goes with
/// it) with who sent it, its id and its time.
fn customer_message(
    business: &str,
    customer: &str,
    phone: Option<&str>,
    id: &str,
    at_ms: u64,
    fields: Value,
) -> NewEvent {
    let mut message = json!({
        "from": customer,
        "id": id,
        "timestamp": (at_ms / 1000).to_string(),
    });
    if let (Some(message), Value::Object(fields)) = (message.as_object_mut(), fields) {
        message.extend(fields);
    }
    envelope(
        business,
        &format!("message:{id}"),
        id,
        "messages",
        json!({
            "contacts": contact(customer, phone),
            "messages": [message],
        }),
    )
}

/// A text message from a customer.
pub fn message_event(
    business: &str,
    customer: &str,
    phone: Option<&str>,
    id: &str,
    text: &str,
    at_ms: u64,
) -> NewEvent {
    let fields = json!({ "type": "text", "text": { "body": text } });
    customer_message(business, customer, phone, id, at_ms, fields)
}

/// A file from a customer: its name, type and size as the customer gave
/// them (untrusted), and where the backend downloads it, decrypted.
#[allow(clippy::too_many_arguments)]
pub fn document_event(
    business: &str,
    customer: &str,
    phone: Option<&str>,
    id: &str,
    file_name: &str,
    mime_type: &str,
    size: u64,
    at_ms: u64,
) -> NewEvent {
    let fields = json!({
        "type": "document",
        "document": {
            "id": id,
            "filename": file_name,
            "mime_type": mime_type,
            "file_size": size,
            "path": format!("/v1/conversations/{customer}/files/{id}"),
        },
    });
    customer_message(business, customer, phone, id, at_ms, fields)
}

/// A customer's tap on a quick-reply button of a template message.
#[allow(clippy::too_many_arguments)]
pub fn button_reply_event(
    business: &str,
    customer: &str,
    phone: Option<&str>,
    id: &str,
    reply_to: &str,
    button_index: u32,
    title: &str,
    at_ms: u64,
) -> NewEvent {
    let fields = json!({
        "type": "interactive",
        "context": { "id": reply_to },
        "interactive": {
            "type": "button_reply",
            "button_reply": { "id": button_index.to_string(), "title": title },
        },
    });
    customer_message(business, customer, phone, id, at_ms, fields)
}

/// An outgoing message's new status.
pub fn status_event(
    business: &str,
    customer: &str,
    id: &str,
    status: MessageStatus,
    at_ms: u64,
    error: Option<&str>,
) -> NewEvent {
    let event_id = format!("status:{id}:{}", status.as_str());
    let mut entry = json!({
        "id": id,
        "status": status.as_str(),
        "timestamp": (at_ms / 1000).to_string(),
        "recipient_id": customer,
    });
    if let Some(error) = error {
        entry["errors"] = json!([{ "title": error }]);
    }
    envelope(
        business,
        &event_id,
        id,
        "messages",
        json!({ "statuses": [entry] }),
    )
}

/// A customer allowed a consent request (the relay tells a business only
/// allowances: a refusal stays with the relay by design).
pub fn consent_event(
    business: &str,
    reference: &str,
    phone: &str,
    customer: &str,
    at_ms: u64,
) -> NewEvent {
    let event_id = format!("consent:{reference}");
    envelope(
        business,
        &event_id,
        reference,
        "consents",
        json!({
            "consents": [{
                "reference": reference,
                "phone": phone,
                "customer": customer,
                "status": "granted",
                "timestamp": (at_ms / 1000).to_string(),
            }],
        }),
    )
}

/// Delivers the outbox: each due row is posted, then marked delivered,
/// rescheduled or given up. One per daemon; it posts only while its daemon
/// holds the business's lease ([`crate::lease`]), so of two daemons of one
/// business one posts, and the other marks what the first delivered
/// ([`crate::sync`]) and takes over what is left when it takes the lease.
#[derive(Clone)]
pub struct Deliverer {
    db: Db,
    clock: SharedClock,
    secrets: Arc<HashMap<String, Zeroizing<String>>>,
    wake: Arc<Notify>,
    acting: crate::lease::Acting,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("endpoints", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    /// A deliverer for `webhooks`, reading `clock`.
    pub fn new(db: Db, clock: SharedClock, webhooks: &[Webhook]) -> Self {
        let secrets = webhooks
            .iter()
            .map(|w| (w.url.clone(), w.secret.clone()))
            .collect();
        Self {
            db,
            clock,
            secrets: Arc::new(secrets),
            wake: Arc::new(Notify::new()),
            acting: crate::lease::Acting::always(),
        }
    }

    /// Post only while `acting` says this daemon holds the lease.
    pub fn with_acting(mut self, acting: crate::lease::Acting) -> Self {
        self.acting = acting;
        self
    }

    /// The handle that makes it look at the outbox now (after a change is
    /// queued, or a test moved the clock).
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Attempt the deliveries due now; returns how many were delivered.
    /// Endpoints are served at once, each one's deliveries in turn (a
    /// batch holds one delivery per subject: a subject's later events wait
    /// in the outbox); an endpoint that fails one gets no more attempts in
    /// this call, so one that is down (each attempt waiting out its
    /// timeout) holds up no other, however many of its events wait.
    pub async fn deliver_due(&self) -> Result<usize, crate::db::DbError> {
        let endpoints = self.db.endpoints_due(self.clock.now_ms())?;
        let passes = futures_util::future::join_all(
            endpoints.iter().map(|endpoint| self.deliver_to(endpoint)),
        )
        .await;
        let mut delivered = 0;
        for pass in passes {
            delivered += pass?;
        }
        Ok(delivered)
    }

    /// Attempt `endpoint`'s due deliveries in turn until none is left, one
    /// fails or this daemon stops acting; how many were delivered.
    async fn deliver_to(&self, endpoint: &str) -> Result<usize, crate::db::DbError> {
        let mut delivered = 0;
        loop {
            let due = self.db.due_to(endpoint, self.clock.now_ms(), BATCH)?;
            if due.is_empty() {
                return Ok(delivered);
            }
            for pending in &due {
                if !self.acting.now() || !self.attempt(pending).await? {
                    return Ok(delivered);
                }
                delivered += 1;
            }
        }
    }

    async fn attempt(&self, pending: &Pending) -> Result<bool, crate::db::DbError> {
        let Some(secret) = self.secrets.get(&pending.endpoint) else {
            self.db.delivery_outcome(
                pending,
                false,
                None,
                Some("endpoint no longer configured"),
            )?;
            return Ok(false);
        };
        let now = self.clock.now_ms();
        let header = signature(secret.as_bytes(), now / 1000, pending.body.as_bytes());
        let headers = [
            ("content-type", "application/json".to_owned()),
            (SIGNATURE_HEADER, header),
            (EVENT_ID_HEADER, pending.event_id.clone()),
        ];
        let outcome = crate::http_client::request(
            "POST",
            &pending.endpoint,
            &headers,
            pending.body.clone().into_bytes(),
        )
        .await;
        let error = match outcome {
            Ok(r) if (200..300).contains(&r.status) => {
                self.db.delivery_outcome(pending, true, None, None)?;
                return Ok(true);
            }
            Ok(r) => format!("the receiver answered {}", r.status),
            Err(e) => e.to_string(),
        };
        let retry_at = now
            + u64::try_from(backoff(pending.attempts + 1, rand::rng().random::<f64>()).as_millis())
                .unwrap_or(u64::MAX);
        let deadline =
            pending.created_ms + u64::try_from(RETRY_FOR.as_millis()).unwrap_or(u64::MAX);
        let next = (now < deadline).then_some(retry_at.min(deadline));
        tracing::info!(event = %pending.event_id, endpoint = %pending.endpoint, attempts = pending.attempts + 1, %error, "webhook not delivered");
        self.db
            .delivery_outcome(pending, false, next, Some(&error))?;
        Ok(false)
    }

    /// Deliver until `shutdown` resolves: after each pass, wait for a
    /// wake-up or the next due time (at most a second, so a moved clock
    /// is noticed).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut acting = self.acting.clone();
        loop {
            if let Err(e) = self.deliver_due().await {
                tracing::error!(error = %e, "webhook outbox");
            }
            let now = self.clock.now_ms();
            let wait = match self.db.next_due() {
                // Not this daemon's turn: it waits for the lease.
                _ if !self.acting.now() => Duration::from_secs(1),
                Ok(Some(at)) => Duration::from_millis(at.saturating_sub(now)),
                _ => Duration::from_secs(1),
            }
            .min(Duration::from_secs(1));
            tokio::select! {
                () = &mut shutdown => return,
                () = self.wake.notified() => {}
                () = acting.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_in_the_upper_half() {
        assert_eq!(backoff(1, 1.0), FIRST_RETRY);
        assert_eq!(backoff(1, 0.0), FIRST_RETRY / 2);
        assert_eq!(backoff(2, 1.0), FIRST_RETRY * 2);
        assert_eq!(backoff(4, 1.0), FIRST_RETRY * 8);
        assert_eq!(backoff(40, 1.0), MAX_RETRY_INTERVAL);
        assert!(backoff(40, 0.0) >= MAX_RETRY_INTERVAL / 2);
        // Enough attempts to cover the retry period.
        let total: Duration = (1..=160).map(|a| backoff(a, 0.0)).sum();
        assert!(total > RETRY_FOR);
    }

    #[test]
    fn a_signature_checks_only_with_its_secret_body_and_fresh_time() {
        let body = br#"{"event_id":"message:ab"}"#;
        let header = signature(b"secret-of-sixteen", 1_000, body);
        assert!(header.starts_with("t=1000,sha256="));
        assert!(verify(b"secret-of-sixteen", &header, body, 1_100, 300));
        assert!(!verify(b"another-secret!!!", &header, body, 1_100, 300));
        assert!(!verify(b"secret-of-sixteen", &header, b"{}", 1_100, 300));
        assert!(!verify(
            b"secret-of-sixteen",
            &header,
            body,
            1_000 + 301,
            300
        ));
        let moved = header.replace("t=1000", "t=1100");
        assert!(!verify(b"secret-of-sixteen", &moved, body, 1_100, 300));
    }
}
