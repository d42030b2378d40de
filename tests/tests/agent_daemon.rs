//! The business agent daemon end to end (issue 15): a real relay, the
//! daemon in process on 127.0.0.1:0 with its API called over HTTP, a real
//! HTTP webhook receiver, and real customers on the client library.
//!
//! - The notification flow: the backend asks for consent through the
//!   API, the customer allows (consents webhook), the backend sends a
//!   utility template (statuses sent, delivered, read, in that order),
//!   the customer replies (message webhook), the business answers inside
//!   the window through the API; every webhook's signature checks.
//! - A customer who did not consent: the API refuses with the relay's
//!   reason, typed, and the daemon stores nothing.
//! - Bad input, missing or wrong keys, missing scopes: typed 4xx, nothing stored.
//! - Webhooks retried while the receiver fails, under the injected clock,
//!   for more than 24 hours, delivered after a daemon restart, once.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use comptoir_agent::Clock;
use comptoir_agent::clock::ManualClock;
use comptoir_client::{Client, Event};
use comptoir_protocol::proto::wire::AccountKind;
use serde_json::{Value, json};
use support::agent::{
    FULL_KEY, Fixture, READ_KEY, Receiver, SECRET, call, call_raw, config, customer,
    customer_with_number, data_dir, fixture, init_business, request_utility_consent, serve,
    signature_checks,
};
use support::client::{registered_as, wait_for};
use support::*;

const CAROL: &str = "+447700900123";
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
const HOUR_MS: u64 = 3600 * 1000;

fn status_events(receiver: &Receiver, message: &str) -> Vec<String> {
    receiver
        .hits()
        .iter()
        .filter(|h| h.answered == 200)
        .filter_map(|h| {
            h.event_id
                .strip_prefix(&format!("status:{message}:"))
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn the_notification_flow_through_the_api_and_webhooks() {
    let Fixture {
        relay,
        root,
        receiver,
        config,
        business,
    } = fixture().await;
    let clock = ManualClock::at(comptoir_client::client::now_ms());
    let agent = serve(&config, clock.clone()).await;
    let mut carol = customer_with_number(&relay, &root.path().join("carol"), CAROL).await;

    // The shop took Carol's number; the backend asks for consent.
    let reference = request_utility_consent(&agent, CAROL, "delivery_updates").await;
    // A reference names one request.
    let (status, again) = call(
        &agent,
        "POST",
        "/v1/consent_requests",
        Some(FULL_KEY),
        Some(json!({
            "phone_number": CAROL,
            "categories": ["utility"],
            "purpose": "delivery_updates",
            "reference": reference,
        })),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "duplicate_reference");
    assert_eq!(agent.db.consent_request_count().expect("count"), 1);
    let asked = wait_for(&mut carol, |e| match e {
        Event::ConsentRequested(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(asked.business, business);
    carol
        .answer_consent_request(&asked, true, YEAR)
        .await
        .expect("allow");
    let consent = receiver
        .wait("consent", |h| h.event_id == format!("consent:{reference}"))
        .await;
    assert!(signature_checks(&consent, SECRET));
    assert!(!signature_checks(&consent, "another-secret-of-length"));
    let value = &consent.json()["value"]["consents"][0];
    assert_eq!(value["status"], "granted");
    assert_eq!(value["phone"], CAROL);
    assert_eq!(value["customer"], carol.account_id().to_string());

    // A delivery confirmation: the approved utility template, by name.
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(json!({
            "messaging_product": "comptoir",
            "to": CAROL,
            "type": "template",
            "template": {
                "name": "order_update",
                "language": { "code": "en_GB" },
                "components": [{
                    "type": "body",
                    "parameters": [{ "type": "text", "parameter_name": "order", "text": "AB-12" }],
                }],
            },
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["contacts"][0]["account_id"],
        carol.account_id().to_string()
    );
    assert_eq!(body["messages"][0]["message_status"], "sent");
    let template_message = body["messages"][0]["id"].as_str().expect("id").to_owned();
    let rendered = wait_for(&mut carol, |e| match e {
        Event::Template { id, rendered, .. } if id.to_string() == template_message => {
            Some(rendered.body.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(rendered, "Your order AB-12 has shipped.");
    receiver
        .wait("delivered", |h| {
            h.event_id == format!("status:{template_message}:delivered")
        })
        .await;
    // Delivered (signed by Carol's device): the template is a line of the
    // bill, which the daemon checks before it answers; outside Carol's
    // window a utility template is £0.005.
    let (status, bill) = call(&agent, "GET", "/v1/bill", Some(FULL_KEY), None).await;
    assert_eq!(status, 200, "{bill}");
    assert_eq!(bill["verified"], true);
    assert_eq!(bill["currency"], "GBP");
    assert_eq!(bill["lines"], 1);
    assert_eq!(bill["total_millionths"], 5_000);
    assert_eq!(bill["total_hundredths"], 1);
    assert_eq!(bill["head_count"], 1);
    assert_eq!(bill["totals"][0]["category"], "utility");
    assert_eq!(bill["totals"][0]["total_millionths"], 5_000);
    let line = &bill["data"][0];
    assert_eq!(line["message_id"], template_message);
    assert_eq!(line["customer"], carol.account_id().to_string());
    assert_eq!(line["inside_window"], false);
    let (status, standing) = call(&agent, "GET", "/v1/standing", Some(FULL_KEY), None).await;
    assert_eq!(status, 200, "{standing}");
    assert_eq!(standing["customers_reached_24h"], 1);
    assert_eq!(standing["lines"], 1);
    assert_eq!(standing["currency"], "GBP");
    assert!(standing["tier"].is_string(), "{standing}");
    // A key without `billing:read` reads neither.
    for path in ["/v1/bill", "/v1/standing"] {
        let (status, body) = call(&agent, "GET", path, Some(READ_KEY), None).await;
        assert_eq!(status, 403, "{body}");
    }
    assert_eq!(carol.mark_read(business).await.expect("read"), 1);
    let read = receiver
        .wait("read", |h| {
            h.event_id == format!("status:{template_message}:read")
        })
        .await;
    assert!(signature_checks(&read, SECRET));
    assert_eq!(
        read.json()["value"]["statuses"][0]["recipient_id"],
        carol.account_id().to_string()
    );
    assert_eq!(
        status_events(&receiver, &template_message),
        ["sent", "delivered", "read"]
    );

    // A question with quick-reply buttons; Carol taps one: an
    // interactive webhook naming the button and the message it answers.
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(json!({
            "to": CAROL,
            "type": "template",
            "template": {
                "id": support::agent::slot_template(business).template_id().expect("id").to_hex(),
                "components": [{
                    "type": "body",
                    "parameters": [{ "type": "text", "parameter_name": "order", "text": "AB-12" }],
                }],
            },
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let question = body["messages"][0]["id"].as_str().expect("id").to_owned();
    let question_id = wait_for(&mut carol, |e| match e {
        Event::Template { id, .. } if id.to_string() == question => Some(*id),
        _ => None,
    })
    .await;
    let tap = carol
        .reply_button(business, question_id, 1)
        .await
        .expect("tap");
    let hit = receiver
        .wait("button reply", |h| h.event_id == format!("message:{tap}"))
        .await;
    assert!(signature_checks(&hit, SECRET));
    let message = &hit.json()["value"]["messages"][0];
    assert_eq!(message["type"], "interactive");
    assert_eq!(message["context"]["id"], question);
    assert_eq!(message["interactive"]["button_reply"]["id"], "1");
    assert_eq!(message["interactive"]["button_reply"]["title"], "Evening");

    // Carol replies: the message webhook; the window opens.
    let reply = carol
        .send_text(business, "Thanks! Can I change the delivery address?")
        .await
        .expect("reply");
    let hit = receiver
        .wait("message", |h| h.event_id == format!("message:{reply}"))
        .await;
    assert!(signature_checks(&hit, SECRET));
    let message = &hit.json()["value"]["messages"][0];
    assert_eq!(message["type"], "text");
    assert_eq!(
        message["text"]["body"],
        "Thanks! Can I change the delivery address?"
    );
    assert_eq!(hit.json()["value"]["contacts"][0]["phone"], CAROL);

    // The business answers inside the window, free form.
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(json!({ "to": CAROL, "type": "text", "text": { "body": "Yes: reply with the new address." } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = body["messages"][0]["id"].as_str().expect("id").to_owned();
    let (_, text) = support::client::wait_message(&mut carol, business).await;
    assert_eq!(text, "Yes: reply with the new address.");
    receiver
        .wait("answer delivered", |h| {
            h.event_id == format!("status:{answer}:delivered")
        })
        .await;

    // Listed and searchable, with the reading key.
    let (status, body) = call(&agent, "GET", "/v1/conversations", Some(READ_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["data"][0]["phone"], CAROL);
    assert!(body["data"][0]["window_open_until_ms"].as_u64().is_some());
    let (status, body) = call(
        &agent,
        "GET",
        "/v1/messages?search=delivery%20address",
        Some(READ_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let found: Vec<&Value> = body["data"].as_array().expect("list").iter().collect();
    assert_eq!(found.len(), 1, "{body}");
    assert_eq!(found[0]["id"], reply.to_string());
    assert_eq!(found[0]["direction"], "in");
    let path = format!("/v1/conversations/{}/messages", carol.account_id());
    let (status, body) = call(&agent, "GET", &path, Some(READ_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<&str> = body["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses.len(), 5, "{body}");
    assert!(statuses.contains(&"read"));
    assert!(statuses.contains(&"received"));

    // No event was delivered twice.
    let mut ids: Vec<String> = receiver.hits().into_iter().map(|h| h.event_id).collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all, "every event delivered once");
    agent.stop().await;
}

#[tokio::test]
async fn refusals_bad_input_and_keys_are_typed_and_store_nothing() {
    let Fixture {
        relay,
        root,
        receiver: _receiver,
        config,
        business: _business,
    } = fixture().await;
    let agent = serve(&config, ManualClock::at(comptoir_client::client::now_ms())).await;
    let dave = customer(&relay, root.path(), "dave").await;
    let dave_id = dave.account_id().to_string();
    let template = json!({
        "to": dave_id,
        "type": "template",
        "template": {
            "name": "order_update",
            "language": { "code": "en_GB" },
            "components": [{ "type": "body", "parameters": [{ "type": "text", "parameter_name": "order", "text": "AB-12" }] }],
        },
    });
    let code = |body: &Value| {
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // The relay's refusals, typed, with what to do.
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(template.clone()),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (422, "no_consent"),
        "{body}"
    );
    assert!(
        body["error"]["what_to_do"]
            .as_str()
            .is_some_and(|s| s.contains("consent"))
    );
    let text = json!({ "to": dave_id, "type": "text", "text": { "body": "hello" } });
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(text.clone()),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (422, "window_closed"),
        "{body}"
    );
    let mut unknown = template.clone();
    unknown["template"]["name"] = json!("no_such_template");
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(unknown),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (422, "template_not_approved"),
        "{body}"
    );
    let mut bad_value = template.clone();
    bad_value["template"]["components"][0]["parameters"][0]["parameter_name"] = json!("colour");
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(bad_value),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (400, "invalid_parameters"),
        "{body}"
    );

    // Bad input.
    let json_headers = [
        ("content-type", "application/json".to_owned()),
        ("authorization", format!("Bearer {FULL_KEY}")),
    ];
    let (status, body) = call_raw(
        &agent,
        "POST",
        "/v1/messages",
        &json_headers,
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (400, "invalid_request"),
        "{body}"
    );
    for bad in [
        json!({ "to": dave_id, "type": "text" }),
        json!({ "to": dave_id, "type": "text", "text": { "body": "" } }),
        json!({ "to": dave_id, "type": "text", "text": { "body": "x".repeat(9000) } }),
        json!({ "to": dave_id, "type": "video", "text": { "body": "hi" } }),
        json!({ "to": "not-a-number", "type": "text", "text": { "body": "hi" } }),
        json!({ "to": dave_id, "type": "text", "text": { "body": "hi" }, "extra": 1 }),
        json!({ "to": dave_id, "type": "template", "template": { "id": "zz" } }),
        json!({ "to": dave_id, "type": "template", "template": { "name": "x", "language": { "code": "en" },
            "components": [{ "type": "body", "parameters": ["x"] }] } }),
        json!([1, 2]),
    ] {
        let (status, body) = call(
            &agent,
            "POST",
            "/v1/messages",
            Some(FULL_KEY),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(
            (status, code(&body).as_str()),
            (400, "invalid_request"),
            "{bad} -> {body}"
        );
        let said = body.to_string();
        assert!(
            !["SendRequest", "struct ", "enum "]
                .iter()
                .any(|rust| said.contains(rust)),
            "no Rust type names: {body}"
        );
    }
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(json!({ "to": "+447700900999", "type": "text", "text": { "body": "hi" } })),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (404, "unknown_recipient"),
        "{body}"
    );
    for bad in [
        json!({ "phone_number": "07700900123", "categories": ["utility"], "purpose": "order_updates" }),
        json!({ "phone_number": CAROL, "categories": [], "purpose": "order_updates" }),
        json!({ "phone_number": CAROL, "categories": ["spam"], "purpose": "order_updates" }),
        json!({ "phone_number": CAROL, "categories": ["utility"], "purpose": "anything I like" }),
        json!({ "phone_number": CAROL, "categories": ["utility"], "purpose": "order_updates", "reference": "12" }),
    ] {
        let (status, body) = call(
            &agent,
            "POST",
            "/v1/consent_requests",
            Some(FULL_KEY),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(
            (status, code(&body).as_str()),
            (400, "invalid_request"),
            "{bad} -> {body}"
        );
    }
    let (status, body) = call(&agent, "GET", "/v1/messages?limit=0", Some(FULL_KEY), None).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (400, "invalid_request"),
        "{body}"
    );
    let (status, body) = call(
        &agent,
        "GET",
        "/v1/messages?customer=zz",
        Some(FULL_KEY),
        None,
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (400, "invalid_request"),
        "{body}"
    );

    // Keys and scopes.
    let (status, body) = call(&agent, "POST", "/v1/messages", None, Some(text.clone())).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (401, "unauthorized"),
        "{body}"
    );
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some("ck_wrong"),
        Some(text.clone()),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (401, "unauthorized"),
        "{body}"
    );
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(READ_KEY),
        Some(text.clone()),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "forbidden_scope"),
        "{body}"
    );
    let consent =
        json!({ "phone_number": CAROL, "categories": ["utility"], "purpose": "order_updates" });
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/consent_requests",
        Some(READ_KEY),
        Some(consent),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "forbidden_scope"),
        "{body}"
    );
    let (status, _) = call(&agent, "GET", "/v1/conversations", None, None).await;
    assert_eq!(status, 401);

    // The long poll of changes: a key, and a bounded wait.
    let (status, _) = call(&agent, "GET", "/v1/changes", None, None).await;
    assert_eq!(status, 401);
    let (status, body) = call(&agent, "GET", "/v1/changes", Some(READ_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    let count = body["changes"].as_u64().expect("a count");
    let (status, body) = call(
        &agent,
        "GET",
        "/v1/changes?wait_ms=30001",
        Some(READ_KEY),
        None,
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (400, "invalid_request"),
        "{body}"
    );
    // Nothing changed meanwhile: a poll past the count ends at its wait.
    let path = format!("/v1/changes?after={count}&wait_ms=10");
    let (status, body) = call(&agent, "GET", &path, Some(READ_KEY), None).await;
    assert_eq!((status, body["changes"].as_u64()), (200, Some(count)));

    // Nothing of it was stored, and no webhook went out.
    assert_eq!(agent.db.message_count().expect("count"), 0);
    assert_eq!(agent.db.consent_request_count().expect("count"), 0);
    assert!(agent.db.outbox().expect("outbox").is_empty());

    // The OpenAPI document is served, without a key.
    let (status, body) = call(&agent, "GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(body["paths"]["/v1/messages"]["post"].is_object());
    agent.stop().await;
}

#[tokio::test]
async fn webhooks_are_retried_for_over_a_day_survive_a_restart_and_arrive_once() {
    let Fixture {
        relay,
        root,
        receiver,
        config,
        business,
    } = fixture().await;
    receiver.answer.store(503, Ordering::SeqCst);
    let start = comptoir_client::client::now_ms();
    let clock = ManualClock::at(start);
    let agent = serve(&config, clock.clone()).await;
    let mut erin = customer(&relay, root.path(), "erin").await;
    let first = erin
        .send_text(business, "Is my parcel on its way?")
        .await
        .expect("send");
    let event_id = format!("message:{first}");
    let attempts = |agent: &comptoir_agent::Running| {
        agent
            .db
            .outbox()
            .expect("outbox")
            .into_iter()
            .find(|r| r.event_id == event_id)
            .map(|r| (r.state, r.attempts, r.next_attempt_ms))
    };
    receiver
        .wait("first attempt", |h| h.event_id == event_id)
        .await;
    let wait_attempts = |n: u32, agent: &comptoir_agent::Running| {
        let agent_db = agent.db.clone();
        let event_id = event_id.clone();
        async move {
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            // Subscribed before the check: no outcome falls in between.
            let mut outcomes = agent_db.watch_outcomes();
            loop {
                let row = agent_db
                    .outbox()
                    .expect("outbox")
                    .into_iter()
                    .find(|r| r.event_id == event_id);
                if row.as_ref().is_some_and(|r| r.attempts >= n) {
                    return row.expect("row");
                }
                tokio::time::timeout_at(deadline, outcomes.changed())
                    .await
                    .unwrap_or_else(|_| panic!("attempt {n} never happened: {row:?}"))
                    .expect("the daemon's database is open");
            }
        }
    };
    let row = wait_attempts(1, &agent).await;
    assert_eq!(row.state, "pending");
    // The first retry waits 5 to 10 s by the daemon's clock: nothing happens
    // before the clock moves.
    assert!(
        (start + 5_000..=start + 10_000).contains(&row.next_attempt_ms),
        "{row:?}"
    );

    // The receiver stays down for 25 hours: retried all along, not given up.
    let mut n = 1;
    while clock.now_ms() < start + 25 * HOUR_MS {
        let (_, _, next) = attempts(&agent).expect("row");
        clock.advance(next.saturating_sub(clock.now_ms()) + 1);
        agent.webhooks.notify_one();
        n += 1;
        let row = wait_attempts(n, &agent).await;
        assert_eq!(row.state, "pending", "{row:?}");
        // One attempt per move of the clock: the next waits for its time.
        assert_eq!(row.attempts, n, "{row:?}");
        // Backoff and jitter: never more than an hour apart.
        assert!(row.next_attempt_ms - clock.now_ms() <= HOUR_MS, "{row:?}");
    }
    assert!(n > 25, "retried {n} times in 25 hours");
    assert!(n < 60, "retried {n} times in 25 hours: backoff");

    // The daemon stops; the receiver comes back; the daemon starts again on
    // the same directory and delivers the event, once, signed.
    agent.stop().await;
    receiver.answer.store(200, Ordering::SeqCst);
    clock.advance(HOUR_MS);
    let agent = serve(&config, clock.clone()).await;
    let delivered = receiver
        .wait("delivery after the restart", |h| {
            h.event_id == event_id && h.answered == 200
        })
        .await;
    assert!(signature_checks(&delivered, SECRET));
    assert_eq!(
        delivered.json()["value"]["messages"][0]["text"]["body"],
        "Is my parcel on its way?"
    );
    let row = wait_row(&agent, &event_id, |r| r.state != "pending").await;
    assert_eq!(row.state, "delivered", "{row:?}");
    // Every attempt carried the same id and body.
    let tries: Vec<_> = receiver
        .hits()
        .into_iter()
        .filter(|h| h.event_id == event_id)
        .collect();
    assert!(tries.iter().all(|h| h.body == delivered.body));
    assert_eq!(tries.iter().filter(|h| h.answered == 200).count(), 1);

    // A second message after the restart goes through at once, and the
    // first is not sent again.
    let second = erin.send_text(business, "Thanks").await.expect("send");
    receiver
        .wait("second", |h| h.event_id == format!("message:{second}"))
        .await;
    clock.advance(10 * HOUR_MS);
    agent.webhooks.notify_one();
    let (_, body) = call(&agent, "GET", "/v1/messages", Some(FULL_KEY), None).await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(
        receiver
            .hits()
            .iter()
            .filter(|h| h.event_id == event_id && h.answered == 200)
            .count(),
        1
    );
    agent.stop().await;
}

/// Wait (bounded) until the outbox row of `event_id` satisfies `done`.
async fn wait_row(
    agent: &comptoir_agent::Running,
    event_id: &str,
    done: impl Fn(&comptoir_agent::db::OutboxRow) -> bool,
) -> comptoir_agent::db::OutboxRow {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut outcomes = agent.db.watch_outcomes();
    loop {
        let row = agent
            .db
            .outbox()
            .expect("outbox")
            .into_iter()
            .find(|r| r.event_id == event_id);
        if let Some(row) = row.filter(|r| done(r)) {
            return row;
        }
        tokio::time::timeout_at(deadline, outcomes.changed())
            .await
            .unwrap_or_else(|_| panic!("outbox row {event_id} never got there"))
            .expect("the daemon's database is open");
    }
}

#[tokio::test]
async fn a_delivery_is_given_up_only_after_the_retry_period() {
    let Fixture {
        relay,
        root,
        receiver,
        config,
        business,
    } = fixture().await;
    receiver.answer.store(500, Ordering::SeqCst);
    let clock = ManualClock::at(comptoir_client::client::now_ms());
    let agent = serve(&config, clock.clone()).await;
    let mut frank = customer(&relay, root.path(), "frank").await;
    let id = frank.send_text(business, "hello?").await.expect("send");
    let event_id = format!("message:{id}");
    receiver
        .wait("first attempt", |h| h.event_id == event_id)
        .await;
    let state = |agent: &comptoir_agent::Running| {
        agent
            .db
            .outbox()
            .expect("outbox")
            .into_iter()
            .find(|r| r.event_id == event_id)
            .expect("row")
    };
    // Jump past the retry period: the next attempt is the last.
    clock.advance(comptoir_agent::webhook::RETRY_FOR.as_millis() as u64 + 1);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut outcomes = agent.db.watch_outcomes();
    loop {
        agent.webhooks.notify_one();
        let row = state(&agent);
        if row.state == "expired" {
            assert_eq!(row.attempts, 2);
            break;
        }
        tokio::time::timeout_at(deadline, outcomes.changed())
            .await
            .unwrap_or_else(|_| panic!("never given up: {row:?}"))
            .expect("the daemon's database is open");
    }
    assert_eq!(
        receiver
            .hits()
            .iter()
            .filter(|h| h.event_id == event_id)
            .count(),
        2
    );
    agent.stop().await;
}

#[tokio::test]
async fn outside_opening_hours_a_customer_gets_the_away_message_once_a_day() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start().await;
    let away = "We are closed; we answer from 09:00.";
    let config = support::agent::config_with(
        &relay,
        &data_dir(root.path()),
        &receiver,
        &format!(
            "[opening_hours]\nutc_offset = \"+00:00\"\nperiods = [\"mon-fri 09:00-17:00\"]\naway_message = {away:?}\n"
        ),
    );
    let business = init_business(&relay, &config).await;
    // Tuesday 2026-12-01, 03:00 UTC: closed.
    let clock = ManualClock::at(1_796_094_000_000);
    let agent = serve(&config, clock.clone()).await;
    let mut gina = customer(&relay, root.path(), "gina").await;
    gina.send_text(business, "Are you open?")
        .await
        .expect("send");
    let (_, text) = support::client::wait_message(&mut gina, business).await;
    assert_eq!(text, away);

    // A second message the same night: no second away message. The daemon
    // handles the second message fully before the API's next send, so the
    // next thing Gina gets is that send.
    let second = gina.send_text(business, "Hello?").await.expect("send");
    receiver
        .wait("second message", |h| {
            h.event_id == format!("message:{second}")
        })
        .await;
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(json!({ "to": gina.account_id().to_string(), "type": "text", "text": { "body": "On call: how can we help?" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, text) = support::client::wait_message(&mut gina, business).await;
    assert_eq!(text, "On call: how can we help?");

    // Open hours (09:30): no away message; the next thing Gina gets is again the API's.
    clock.advance(6 * HOUR_MS + 30 * 60 * 1000);
    let third = gina.send_text(business, "Now?").await.expect("send");
    receiver
        .wait("third message", |h| {
            h.event_id == format!("message:{third}")
        })
        .await;
    let (status, _) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(json!({ "to": gina.account_id().to_string(), "type": "text", "text": { "body": "Good morning!" } })),
    )
    .await;
    assert_eq!(status, 200);
    let (_, text) = support::client::wait_message(&mut gina, business).await;
    assert_eq!(text, "Good morning!");
    agent.stop().await;
}

#[tokio::test]
async fn off_loopback_the_api_is_served_only_over_tls() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cert_path, key_path) = (root.path().join("cert.pem"), root.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");

    // Plain HTTP on every interface: refused before anything starts.
    let plain = support::agent::config(&relay, &data_dir(root.path()), &receiver);
    init_business(&relay, &plain).await;
    let everywhere = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let refused = comptoir_agent::start(
        &plain,
        support::agent::PASSPHRASE,
        everywhere,
        ManualClock::at(0),
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(
            refused,
            comptoir_agent::ServeError::Config(comptoir_agent::ConfigError::TlsRequired(_))
        ),
        "{refused}"
    );

    // With a certificate: HTTPS answers, plain HTTP gets nothing.
    let tls = support::agent::config_with(
        &relay,
        &data_dir(root.path()),
        &receiver,
        &format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
    );
    let agent = serve(&tls, ManualClock::at(0)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(agent.addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(client_config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /v1/openapi.json HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut response))
        .await
        .expect("in time")
        .ok();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response[..response.len().min(200)])
    );
    let plain_http = comptoir_agent::http_client::request(
        "GET",
        &format!("http://{}/v1/openapi.json", agent.addr),
        &[],
        Vec::new(),
    )
    .await;
    assert!(plain_http.is_err(), "plain HTTP answered: {plain_http:?}");
    agent.stop().await;
}

#[tokio::test]
async fn a_message_queued_while_the_relay_is_down_reports_failed_when_refused() {
    let Fixture {
        relay,
        root,
        receiver,
        config,
        business: _business,
    } = fixture().await;
    let agent = serve(&config, ManualClock::at(comptoir_client::client::now_ms())).await;
    let hank = customer(&relay, root.path(), "hank").await;
    // Talk to the relay once, so the daemon has Hank's keys.
    let text =
        json!({ "to": hank.account_id().to_string(), "type": "text", "text": { "body": "hello" } });
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(text.clone()),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("window_closed")),
        "{body}"
    );

    // The relay goes away: the API accepts the send as queued.
    let mut relay = relay;
    relay.stop().await;
    let (status, body) = call(&agent, "POST", "/v1/messages", Some(FULL_KEY), Some(text)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["message_status"], "queued");
    let id = body["messages"][0]["id"].as_str().expect("id").to_owned();

    // Back: the daemon sends it on reconnect; the relay refuses it (Hank
    // never wrote), and a failed status is reported with the reason.
    let _relay = relay.start_again_at_same_address().await;
    let failed = receiver
        .wait("failed", |h| h.event_id == format!("status:{id}:failed"))
        .await;
    assert!(signature_checks(&failed, SECRET));
    let status = &failed.json()["value"]["statuses"][0];
    assert_eq!(status["status"], "failed");
    assert!(status["errors"][0]["title"].is_string(), "{status}");
    let (_, body) = call(&agent, "GET", "/v1/messages", Some(FULL_KEY), None).await;
    assert_eq!(body["data"][0]["id"], id);
    assert_eq!(body["data"][0]["status"], "failed");
    agent.stop().await;
}

#[tokio::test]
async fn a_message_the_device_took_while_the_daemon_was_down_is_reported_at_start() {
    let Fixture {
        relay,
        root,
        receiver,
        config,
        business,
    } = fixture().await;
    let mut ivy = customer(&relay, root.path(), "ivy").await;
    let sent = ivy
        .send_text(business, "Did you get this?")
        .await
        .expect("send");
    // The device store takes and acknowledges the message, as the client
    // library does inside the daemon, but no daemon records it (a crash
    // between the two): the relay will not deliver it again.
    let mut device = Client::open(&config.device_dir(), support::agent::PASSPHRASE).expect("open");
    device
        .connect(&support::client::url(&relay))
        .await
        .expect("connect");
    let (got, _) = support::client::wait_message(&mut device, ivy.account_id()).await;
    assert_eq!(got, sent);
    device.close().await.expect("close");

    let agent = serve(&config, ManualClock::at(comptoir_client::client::now_ms())).await;
    let hit = receiver
        .wait("caught-up message", |h| {
            h.event_id == format!("message:{sent}")
        })
        .await;
    assert_eq!(
        hit.json()["value"]["messages"][0]["text"]["body"],
        "Did you get this?"
    );
    let (_, body) = call(&agent, "GET", "/v1/messages", Some(FULL_KEY), None).await;
    assert_eq!(body["data"][0]["id"], sent.to_string(), "{body}");
    // Starting again reports nothing twice.
    agent.stop().await;
    let agent = serve(&config, ManualClock::at(comptoir_client::client::now_ms())).await;
    let (_, body) = call(&agent, "GET", "/v1/messages", Some(FULL_KEY), None).await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(agent.db.outbox().expect("outbox").len(), 1);
    agent.stop().await;
}

#[tokio::test]
async fn agent_init_can_join_an_existing_business_account_as_a_new_device() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start().await;
    let config = config(&relay, &data_dir(root.path()), &receiver);
    let mut first = registered_as(
        &relay,
        &root.path().join("first"),
        "pw-long-enough",
        AccountKind::Business,
    )
    .await;
    let code = comptoir_agent::device::init_link(
        &config,
        support::agent::PASSPHRASE,
        support::client::FAST_KDF,
    )
    .expect("link code");
    let approval = first.add_device(&code).await.expect("approve");
    let joined =
        comptoir_agent::device::finish_link(&config, support::agent::PASSPHRASE, &approval)
            .await
            .expect("finish link");
    assert_eq!(joined, first.account_id());

    // A customer's message reaches the daemon's device too.
    let agent = serve(&config, ManualClock::at(comptoir_client::client::now_ms())).await;
    let mut jo = customer(&relay, root.path(), "jo").await;
    let sent = jo
        .send_text(first.account_id(), "Hello, both of you")
        .await
        .expect("send");
    let hit = receiver
        .wait("message to the linked device", |h| {
            h.event_id == format!("message:{sent}")
        })
        .await;
    assert_eq!(hit.json()["business"], first.account_id().to_string());
    let (got, _) = support::client::wait_message(&mut first, jo.account_id()).await;
    assert_eq!(got, sent);
    agent.stop().await;
}

/// Many API sends at once (the daemon's text sends go through the client
/// library's sender side by side, and only their records through the
/// device task, in batches) while the customers receive and acknowledge:
/// every call is answered `sent` with its own id, every message is
/// recorded once with its own text, and its statuses are reported once
/// each, in order (`sent`, then `delivered`), even when the delivery
/// comes back before the send was recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_api_sends_are_each_answered_recorded_and_reported_once() {
    const CUSTOMERS: usize = 3;
    const EACH: usize = 16;
    let Fixture {
        relay,
        root,
        receiver,
        config,
        business,
    } = fixture().await;
    let agent = serve(&config, ManualClock::at(comptoir_client::client::now_ms())).await;
    // Each customer writes first: the window is open.
    let mut customers = Vec::new();
    for name in ["ana", "ben", "cy"] {
        let mut c = customer(&relay, root.path(), name).await;
        let hello = c.send_text(business, "hello").await.expect("send");
        receiver
            .wait("the customer's first message", |h| {
                h.event_id == format!("message:{hello}")
            })
            .await;
        customers.push(c);
    }
    let ids: Vec<_> = customers.iter().map(Client::account_id).collect();

    // The customers take their messages as they come.
    let readers: Vec<_> = customers
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut got = std::collections::BTreeMap::new();
                while got.len() < EACH {
                    let (id, text) = support::client::wait_message(&mut c, business).await;
                    got.insert(id.to_string(), text);
                }
                (c, got)
            })
        })
        .collect();
    let sends = (0..CUSTOMERS * EACH).map(|i| {
        let to = ids[i % CUSTOMERS].to_string();
        let agent = &agent;
        async move {
            let text = format!("message {i} to {to}");
            let (status, body) = call(
                agent,
                "POST",
                "/v1/messages",
                Some(FULL_KEY),
                Some(json!({ "to": to, "type": "text", "text": { "body": text } })),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["messages"][0]["message_status"], "sent", "{body}");
            let id = body["messages"][0]["id"].as_str().expect("id").to_owned();
            (id, to, text)
        }
    });
    let answered = futures_util::future::join_all(sends).await;
    let sent: std::collections::BTreeMap<String, (String, String)> = answered
        .iter()
        .map(|(id, to, text)| (id.clone(), (to.clone(), text.clone())))
        .collect();
    assert_eq!(sent.len(), CUSTOMERS * EACH, "an id answered twice");

    // Each customer got exactly its messages, under the answered ids.
    for reader in readers {
        let (c, got) = tokio::time::timeout(TIMEOUT, reader)
            .await
            .expect("the customer gets every message")
            .expect("reader");
        let me = c.account_id().to_string();
        let expected: std::collections::BTreeMap<String, String> = sent
            .iter()
            .filter(|(_, (to, _))| *to == me)
            .map(|(id, (_, text))| (id.clone(), text.clone()))
            .collect();
        assert_eq!(got, expected);
    }

    // Recorded once each, with its text, and delivered in the end.
    let mut changes = agent.db.watch_changes();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let rows: Vec<_> = ids
            .iter()
            .flat_map(|c| {
                agent
                    .db
                    .messages(Some(&c.to_string()), None, 500)
                    .expect("messages")
            })
            .filter(|r| r.direction == "out")
            .collect();
        assert_eq!(rows.len(), sent.len(), "each send recorded once");
        for row in &rows {
            let (to, text) = &sent[&row.id];
            assert_eq!((&row.customer, &row.body), (to, text));
        }
        if rows
            .iter()
            .all(|r| r.status == comptoir_agent::MessageStatus::Delivered)
        {
            break;
        }
        tokio::time::timeout_at(deadline, changes.changed())
            .await
            .expect("every message is recorded delivered")
            .expect("daemon running");
    }
    for id in sent.keys() {
        receiver
            .wait("the delivered status", |h| {
                h.event_id == format!("status:{id}:delivered") && h.answered == 200
            })
            .await;
        assert_eq!(status_events(&receiver, id), ["sent", "delivered"]);
    }
    agent.stop().await;
}

/// An API send whose caller stops waiting (the HTTP client hung up) once
/// the relay took the message is still recorded: before, the handler's
/// future was dropped with its `RecordSent` unsent, so a message the
/// customer got never showed in the API, the inbox or the webhooks. Here
/// the device task is busy (its command queue full) when the caller
/// gives up, as it is during a large upload.
#[tokio::test]
async fn an_api_send_the_caller_stopped_waiting_for_is_still_recorded() {
    let relay = start_relay().await;
    let (shop_dir, customer_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut shop = support::client::registered_business(&relay, shop_dir.path(), "shop pass").await;
    let mut customer =
        support::client::registered(&relay, customer_dir.path(), "customer pass").await;
    customer
        .send_text(shop.account_id(), "hello")
        .await
        .expect("write first");
    support::client::wait_message(&mut shop, customer.account_id()).await;

    let path = comptoir_agent::device::SendPath::with(shop.sender());
    let (commands, mut queue) = tokio::sync::mpsc::channel(1);
    let (busy, _) = tokio::sync::oneshot::channel();
    commands
        .send(comptoir_agent::device::Command::SendText {
            to: customer.account_id(),
            text: "filler".into(),
            reply: busy,
        })
        .await
        .expect("queue full");
    let send = comptoir_agent::device::send_text(
        &path,
        &commands,
        customer.account_id(),
        "Your order shipped".into(),
    );
    tokio::select! {
        _ = send => panic!("the send did not wait for the device task"),
        (_, text) = support::client::wait_message(&mut customer, shop.account_id()) => {
            assert_eq!(text, "Your order shipped");
        }
    }
    // The caller gave up (its future is dropped); the device task now
    // takes its queue.
    assert!(matches!(
        queue.recv().await,
        Some(comptoir_agent::device::Command::SendText { .. })
    ));
    let next = tokio::time::timeout(TIMEOUT, queue.recv())
        .await
        .expect("the accepted send was never handed over for recording");
    assert!(
        matches!(
            next,
            Some(comptoir_agent::device::Command::RecordSent { sent: Ok(_), .. })
        ),
        "{next:?}"
    );
}

/// One endpoint that never answers holds up no other: each endpoint's
/// deliveries go on their own (before, every attempt of a pass was made
/// in turn, so each event waited out the dead endpoint's ten seconds
/// before the healthy one got it).
#[tokio::test]
async fn a_webhook_endpoint_that_never_answers_holds_up_no_other() {
    // Accepts connections and never answers them.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_url = format!("http://{}/hook", dead.local_addr().expect("addr"));
    let _holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = dead.accept().await {
            held.push(socket);
        }
    });
    let healthy = Receiver::start().await;
    let endpoints = vec![dead_url, healthy.url()];
    let dir = tempfile::tempdir().expect("temp dir");
    let db = comptoir_agent::db::Db::open(&dir.path().join("agent.sqlite3"), endpoints.clone())
        .expect("db");
    let now = comptoir_client::client::now_ms();
    let customer = "ab".repeat(16);
    // More events than one batch holds: the dead endpoint's backlog must
    // not fill the batches either.
    let events = 100;
    for n in 0..events {
        let id = format!("{n:032x}");
        let event = comptoir_agent::webhook::message_event("shop", &customer, None, &id, "hi", now);
        db.record_message(
            &comptoir_agent::db::NewMessage {
                id,
                customer: customer.clone(),
                incoming: true,
                kind: "text",
                body: "hi".into(),
                template_id: None,
                reply_to: None,
                status: comptoir_agent::MessageStatus::Received,
                at_ms: now,
            },
            &[event],
            now,
        )
        .expect("record");
    }
    let webhooks: Vec<_> = endpoints
        .iter()
        .map(|url| comptoir_agent::config::Webhook {
            url: url.clone(),
            secret: SECRET.to_owned().into(),
        })
        .collect();
    let clock: comptoir_agent::SharedClock = ManualClock::at(now);
    let deliverer = comptoir_agent::webhook::Deliverer::new(db, clock, &webhooks);
    let _delivering = tokio::spawn(async move { deliverer.deliver_due().await });
    // Well within the dead endpoint's ten-second attempt.
    let arrived = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let notified = healthy.arrived.notified();
            if healthy.hits().len() == events {
                return;
            }
            notified.await;
        }
    })
    .await;
    assert!(
        arrived.is_ok(),
        "the healthy endpoint waited for the dead one"
    );
}
