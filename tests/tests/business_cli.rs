//! The business and customer commands of `comptoir`, run in-process over a
//! real relay (the operator approves and verifies through the admin API):
//! a business publishes its profile, submits a template and asks a
//! customer's number for consent; the customer sees the request with the
//! verified mark and allows it; the template arrives rendered with numbered
//! buttons and the customer answers with one; a first message from a
//! stranger waits as a request. Bad input is refused and changes nothing.

use crate::support;

use support::cli::{account, comptoir, ok};
use support::*;

const CAROL_NUMBER: &str = "+447400123456";

const BOARDING_PASS: &str = r#"{
  "name": "boarding_pass", "language": "en_GB", "category": "utility",
  "header": "Flight {{flight}}",
  "body": "Gate {{gate}} closes at {{closes}}. Paid: {{fare}}.",
  "footer": "Acme Air",
  "placeholders": [{"name": "flight", "type": "text"}, {"name": "gate", "type": "number"},
                   {"name": "closes", "type": "date_time"}, {"name": "fare", "type": "money"}],
  "buttons": [{"type": "quick_reply", "text": "Change seat"},
              {"type": "link", "text": "Check in", "url": "https://acme.example/checkin"}]
}"#;

#[tokio::test]
async fn a_business_and_a_customer_go_through_consent_templates_and_replies() {
    let relay = start_relay().await;
    let admin = relay.admin_client();
    let root = tempfile::tempdir().expect("temp dir");
    let (acme, carol) = (root.path().join("acme"), root.path().join("carol"));
    let acme_id = account(&acme, &relay, true).await;
    let carol_id = account(&carol, &relay, false).await;

    // The profile: unverified, the business is shown by its handle only.
    ok(
        &acme,
        &relay,
        &[
            "business",
            "profile",
            "--name",
            "Acme Air",
            "--vertical",
            "travel",
        ],
    )
    .await;
    let shown = ok(&carol, &relay, &["business", "show", &acme_id]).await;
    assert!(shown.starts_with(&format!("{acme_id}\n")), "{shown}");
    assert!(!shown.contains("Acme Air"), "{shown}");
    admin.verify_business(&acme_id, None).await.expect("verify");
    let shown = ok(&carol, &relay, &["business", "show", &acme_id]).await;
    assert!(shown.starts_with("✓ Acme Air\n"), "{shown}");
    assert!(shown.contains("vertical\ttravel\n"), "{shown}");

    // A template: a broken file is refused and nothing is submitted.
    let file = root.path().join("boarding_pass.json");
    std::fs::write(&file, BOARDING_PASS.replace("\"body\"", "\"bodey\"")).expect("write");
    let path = file.display().to_string();
    assert_eq!(
        comptoir(&acme, &relay, &["business", "template", "submit", &path])
            .await
            .0,
        1
    );
    assert_eq!(
        ok(&acme, &relay, &["business", "template", "list"]).await,
        ""
    );
    std::fs::write(&file, BOARDING_PASS).expect("write");
    let submitted = ok(&acme, &relay, &["business", "template", "submit", &path]).await;
    let (template_id, status) = submitted.trim().split_once('\t').expect("id and status");
    assert_eq!(status, "pending");
    admin.approve_template(template_id).await.expect("approve");
    assert_eq!(
        ok(&acme, &relay, &["business", "template", "list"]).await,
        format!("{template_id}\tapproved\tutility\tboarding_pass\n")
    );

    // The customer proves the number it gives the business.
    ok(&carol, &relay, &["phone", "request", CAROL_NUMBER]).await;
    let code = relay.codes.last_for(CAROL_NUMBER).expect("code sent");
    ok(&carol, &relay, &["phone", "verify", CAROL_NUMBER, &code]).await;

    // A bad purpose is a command line error.
    let ask = |purpose: &'static str| {
        [
            "business",
            "consent",
            "request",
            CAROL_NUMBER,
            "--categories",
            "utility",
            "--purpose",
            purpose,
        ]
    };
    assert_eq!(comptoir(&acme, &relay, &ask("free-text")).await.0, 2);
    // Asked while the customer listens: `listen` shows the request (it
    // counts no message, so it times out: exit 9).
    const AUTHENTICATED: &str = "comptoir_authenticated_connections";
    relay.wait_metric_at_most(AUTHENTICATED, 0.0).await;
    let listening = comptoir(
        &carol,
        &relay,
        &["listen", "--count", "1", "--timeout", "15"],
    );
    let ask_once_listening = async {
        relay.wait_metric(AUTHENTICATED, 1.0).await;
        ok(&acme, &relay, &ask("boarding-pass")).await
    };
    let ((code, heard), reference) = tokio::join!(listening, ask_once_listening);
    assert_eq!(code, 9, "{heard}");
    let reference = reference.trim();
    assert_eq!(reference.len(), 32);

    let requests = ok(&carol, &relay, &["consent", "requests"]).await;
    let (request_id, rest) = requests.trim().split_once('\t').expect("a request");
    assert_eq!(
        rest,
        "✓ Acme Air\tutility\tboarding passes and flight updates"
    );
    assert!(
        heard.starts_with(
            "✓ Acme Air asks to send you: boarding passes and flight updates — allow with `"
        ) && heard.contains(&format!(" consent allow {request_id}`")),
        "{heard}"
    );
    let json = ok(&carol, &relay, &["--output", "json", "consent", "requests"]).await;
    let record: serde_json::Value = serde_json::from_str(json.trim()).expect("json");
    assert_eq!(record["type"], "consent_request");
    assert_eq!(record["id"], request_id);
    assert_eq!(record["business"], acme_id.as_str());
    assert_eq!(record["business_name"], "Acme Air");
    assert_eq!(record["verified"], true);
    assert_eq!(record["categories"], serde_json::json!(["utility"]));
    assert_eq!(record["purpose"], "boarding passes and flight updates");
    // Bad and unknown ids change nothing.
    assert_eq!(
        comptoir(&carol, &relay, &["consent", "allow", "not-an-id"])
            .await
            .0,
        1
    );
    assert_eq!(
        comptoir(&carol, &relay, &["consent", "allow", &"0".repeat(32)])
            .await
            .0,
        8
    );
    assert_eq!(ok(&carol, &relay, &["consent", "requests"]).await, requests);
    assert_eq!(
        ok(&acme, &relay, &["business", "consent", "answers"]).await,
        ""
    );
    ok(
        &carol,
        &relay,
        &["consent", "allow", request_id, "--days", "30"],
    )
    .await;
    assert_eq!(ok(&carol, &relay, &["consent", "requests"]).await, "");
    let consents = ok(&carol, &relay, &["consent", "list"]).await;
    assert!(
        consents.starts_with("✓ Acme Air: utility until "),
        "{consents}"
    );
    let answers = ok(&acme, &relay, &["business", "consent", "answers"]).await;
    assert!(
        answers.starts_with(&format!("{reference}\t{carol_id}\t")),
        "{answers}"
    );

    // The template: values that do not fit its types are refused, nothing sent.
    ok(&acme, &relay, &["contacts", "add", "carol", &carol_id]).await;
    let send = |gate: &'static str, fare: &'static str| {
        vec![
            "business".to_string(),
            "template".into(),
            "send".into(),
            "carol".into(),
            template_id.to_string(),
            "--param".into(),
            "flight=AC 123".into(),
            "--param".into(),
            format!("gate={gate}"),
            "--param".into(),
            "closes=2026-12-01T09:40:00+01:00".into(),
            "--param".into(),
            format!("fare={fare}"),
        ]
    };
    for (gate, fare) in [
        ("twelve", "129.50 GBP"),
        ("12", "129.505 GBP"),
        ("12", "129.50"),
    ] {
        let args = send(gate, fare);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(comptoir(&acme, &relay, &args).await.0, 1, "{args:?}");
    }
    assert_eq!(ok(&acme, &relay, &["history", "carol"]).await, "");
    let args = send("12", "129.50 GBP");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let message_id = ok(&acme, &relay, &args).await.trim().to_string();

    let shown = ok(
        &carol,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;
    let expected = format!(
        "✓ Acme Air (template {message_id}):\n  Flight AC 123\n  Gate 12 closes at \
         2026-12-01T08:40Z. Paid: 129.50 GBP.\n  Acme Air\n  [1] Change seat\n  [2] Check in: \
         https://acme.example/checkin\n"
    );
    assert!(shown.contains(&expected), "{shown}");
    // The history shows it the same way, with the verified mark as
    // `listen` last checked it (history works offline, from that check).
    let history = ok(&carol, &relay, &["history", &acme_id]).await;
    let (_, rest) = expected.split_once(" (template").expect("template line");
    assert!(
        history.contains(&format!(" ✓ Acme Air (template{rest}")),
        "{history}"
    );

    // The link button is no quick reply; the first one is.
    assert_eq!(
        comptoir(&carol, &relay, &["reply", &acme_id, &message_id, "2"])
            .await
            .0,
        1
    );
    ok(&carol, &relay, &["reply", &acme_id, &message_id, "1"]).await;
    let got = ok(
        &acme,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;
    assert!(
        got.contains(&format!(
            "carol chose button 1 \"Change seat\" of {message_id}"
        )),
        "{got}"
    );
    // A free-form reply in the window, shown under the certified name
    // with its mark, not the contact name carol gave the business.
    ok(&acme, &relay, &["send", "carol", "Seat 14C is yours"]).await;
    ok(&carol, &relay, &["contacts", "add", "acmeco", &acme_id]).await;
    ok(
        &carol,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;
    let history = ok(&carol, &relay, &["history", "acmeco"]).await;
    assert!(
        history.ends_with(" ✓ Acme Air: Seat 14C is yours\n"),
        "{history}"
    );
    assert!(!history.contains("acmeco"), "{history}");

    // For scripts: the same template as one JSON record.
    let second = ok(&acme, &relay, &args).await.trim().to_string();
    let json = ok(
        &carol,
        &relay,
        &[
            "--output",
            "json",
            "listen",
            "--count",
            "1",
            "--timeout",
            "30",
        ],
    )
    .await;
    let record = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|r| r["type"] == "template")
        .expect("a template record");
    assert_eq!(record["id"], second.as_str());
    assert_eq!(record["peer"], acme_id.as_str());
    assert_eq!(record["peer_name"], "Acme Air");
    assert_eq!(record["verified"], true);
    assert_eq!(record["template_id"], template_id);
    assert_eq!(record["header"], "Flight AC 123");
    assert_eq!(
        record["buttons"][0],
        serde_json::json!({"type": "quick_reply", "text": "Change seat"})
    );
}

#[tokio::test]
async fn a_first_message_from_a_stranger_waits_as_a_request() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (carol, dave) = (root.path().join("carol"), root.path().join("dave"));
    let carol_id = account(&carol, &relay, false).await;
    let dave_id = account(&dave, &relay, false).await;
    ok(&dave, &relay, &["send", &carol_id, "hello carol"]).await;

    let shown = ok(
        &carol,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;
    assert!(
        shown.ends_with(&format!("{dave_id} [request]: hello carol\n")),
        "{shown}"
    );
    let listed = ok(&carol, &relay, &["requests", "list"]).await;
    assert!(listed.starts_with(&format!("{dave_id}\t-\t")), "{listed}");
    let json = ok(&carol, &relay, &["--output", "json", "requests", "list"]).await;
    let record: serde_json::Value = serde_json::from_str(json.trim()).expect("json");
    assert_eq!(record["type"], "message_request");
    assert_eq!(record["peer"], dave_id.as_str());

    // Accepting someone who sent no request changes nothing.
    assert_eq!(
        comptoir(&carol, &relay, &["requests", "accept", &carol_id])
            .await
            .0,
        8
    );
    assert_eq!(ok(&carol, &relay, &["requests", "list"]).await, listed);
    ok(&carol, &relay, &["requests", "accept", &dave_id]).await;
    assert_eq!(ok(&carol, &relay, &["requests", "list"]).await, "");
}

#[tokio::test]
async fn the_operator_key_is_shown_and_pinned_only_when_valid() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let carol = root.path().join("carol");
    account(&carol, &relay, false).await;
    let probe = Account::new(1);
    probe.register(relay.addr).await;
    let (_, auth) = probe.login(relay.addr, 1).await;
    let relay_key = hex::encode(&auth.operator_key);

    assert_eq!(
        ok(&carol, &relay, &["operator-key"]).await,
        format!("{relay_key}\n")
    );
    for bad in ["zz", "00", "0".repeat(63).as_str()] {
        assert_eq!(
            comptoir(&carol, &relay, &["operator-key", "--pin", bad])
                .await
                .0,
            1,
            "{bad}"
        );
    }
    assert_eq!(
        ok(&carol, &relay, &["operator-key"]).await,
        format!("{relay_key}\n")
    );
    let other = comptoir_protocol::OperatorKeyPair::generate(&mut rand::rng());
    let other_key = other.public().to_string();
    ok(&carol, &relay, &["operator-key", "--pin", &other_key]).await;
    assert_eq!(
        ok(&carol, &relay, &["operator-key"]).await,
        format!("{other_key}\n")
    );
    // The relay now presents another key than the pinned one: `listen`
    // says so (and keeps the pin).
    let (code, heard) = comptoir(
        &carol,
        &relay,
        &[
            "--output",
            "json",
            "listen",
            "--count",
            "1",
            "--timeout",
            "3",
        ],
    )
    .await;
    assert_eq!(code, 9, "{heard}");
    let warning = heard
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|r| r["type"] == "warning")
        .expect("a warning");
    assert_eq!(warning["kind"], "operator_key_changed");
    let text = warning["text"].as_str().expect("text");
    assert!(
        text.contains(&relay_key) && text.contains(&other_key),
        "{text}"
    );
    assert_eq!(
        ok(&carol, &relay, &["operator-key"]).await,
        format!("{other_key}\n")
    );
}

/// Interactive messages on the command line (issue 13 item 9): the
/// business sends reply buttons and a list inside the window, the
/// customer sees them numbered or by row id and answers with `reply`; the
/// business's `listen` names the choice. Over the limits, or a choice the
/// message does not offer: refused, nothing sent.
#[tokio::test]
async fn interactive_messages_on_the_command_line() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (acme, carol) = (root.path().join("acme"), root.path().join("carol"));
    let acme_id = account(&acme, &relay, true).await;
    let carol_id = account(&carol, &relay, false).await;
    ok(&acme, &relay, &["contacts", "add", "carol", &carol_id]).await;
    ok(&carol, &relay, &["contacts", "add", "acme", &acme_id]).await;
    ok(&carol, &relay, &["send", "acme", "is my parcel coming?"]).await;
    ok(
        &acme,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;

    let four = [
        "business",
        "interactive",
        "carol",
        "--body",
        "In?",
        "--button",
        "Yes",
        "--button",
        "No",
        "--button",
        "Later",
        "--button",
        "Never",
    ];
    assert_eq!(comptoir(&acme, &relay, &four).await.0, 1);
    let mut eleven = vec![
        "business",
        "interactive",
        "carol",
        "--body",
        "Pick a slot",
        "--list-button",
        "Slots",
    ];
    let rows: Vec<String> = (0..11).map(|i| format!("s{i}:Slot {i}")).collect();
    for row in &rows {
        eleven.extend(["--row", row.as_str()]);
    }
    assert_eq!(comptoir(&acme, &relay, &eleven).await.0, 1);
    let history = ok(&acme, &relay, &["history", "carol"]).await;
    assert_eq!(history.lines().count(), 1, "{history}");

    let buttons = ok(&acme, &relay, &four[..four.len() - 2]).await;
    let buttons = buttons.trim();
    let shown = ok(
        &carol,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;
    assert!(
        shown.contains(&format!(
            " acme (interactive {buttons}):\n  In?\n  [1] Yes\n  [2] No\n  [3] Later\n  \
             answer with `"
        )),
        "{shown}"
    );
    assert_eq!(
        comptoir(&carol, &relay, &["reply", "acme", buttons, "4"])
            .await
            .0,
        1
    );
    ok(&carol, &relay, &["reply", "acme", buttons, "2"]).await;
    let got = ok(
        &acme,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;
    assert!(
        got.contains(&format!("carol chose button 2 \"No\" of {buttons}")),
        "{got}"
    );

    let list = ok(
        &acme,
        &relay,
        &[
            "business",
            "interactive",
            "carol",
            "--body",
            "Pick a slot",
            "--list-button",
            "Slots",
            "--row",
            "Morning/am:Nine to noon",
            "--row",
            "Evening/pm:Six to nine:after work",
        ],
    )
    .await;
    let list = list.trim();
    let shown = ok(
        &carol,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;
    assert!(
        shown.contains(
            "  Pick a slot\n  Slots:\n  Morning:\n    [am] Nine to noon\n  Evening:\n    [pm] \
             Six to nine — after work\n"
        ),
        "{shown}"
    );
    // A row the list does not have: refused, nothing sent.
    assert_eq!(
        comptoir(&carol, &relay, &["reply", "acme", list, "noon"])
            .await
            .0,
        1
    );
    ok(&carol, &relay, &["reply", "acme", list, "pm"]).await;
    let got = ok(
        &acme,
        &relay,
        &[
            "--output",
            "json",
            "listen",
            "--count",
            "1",
            "--timeout",
            "30",
        ],
    )
    .await;
    let record = got
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|r| r["type"] == "interactive_reply")
        .expect("an interactive reply");
    assert_eq!(record["reply_to"], list);
    assert_eq!(record["row"], "pm");
    assert_eq!(record["title"], "Six to nine");
    // Carol's history shows both messages with their choices, and her
    // answers; nothing refused reached it.
    let history = ok(&carol, &relay, &["history", "acme"]).await;
    assert!(
        history.contains(&format!(" acme (interactive {list}):\n  Pick a slot\n")),
        "{history}"
    );
    let answers: Vec<&str> = history
        .lines()
        .filter(|l| l.contains(" me: "))
        .map(|l| {
            let text = l.split(" me: ").nth(1).unwrap_or_default();
            text.rsplit_once(" [").map_or(text, |(text, _status)| text)
        })
        .collect();
    assert_eq!(
        answers,
        ["is my parcel coming?", "No", "Six to nine"],
        "{history}"
    );
}
