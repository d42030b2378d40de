//! Click-to-chat through the business agent daemon (issue 15 item 5): the
//! daemon serves its link and QR code (`GET /v1/link`); a customer opens
//! the link with `comptoir open --yes`; the daemon receives the prefilled
//! text (the message webhook) and its free-form reply through the API,
//! refused before, now succeeds: sending the text opened the window.

use crate::support;

use comptoir_agent::clock::ManualClock;
use comptoir_agent::config::Config;
use comptoir_client::Client;
use serde_json::json;
use support::agent::{
    FULL_KEY, PASSPHRASE, READ_KEY, Receiver, SECRET, agent_command, agent_ok, call, config,
    config_toml, data_dir, init_business, serve, signature_checks,
};
use support::cli::{account, ok};
use support::client::url;
use support::*;

#[tokio::test]
async fn a_customer_opens_the_daemons_link_and_the_daemon_answers_in_the_window() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start().await;
    let config = config(&relay, &data_dir(root.path()), &receiver);
    let business = init_business(&relay, &config).await;
    let agent = serve(&config, ManualClock::at(now_ms())).await;

    // The link: by account id, the text percent-encoded, with its SVG.
    let (status, body) = call(
        &agent,
        "GET",
        "/v1/link?text=Hello%20Acme%21",
        Some(FULL_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let link = body["link"].as_str().expect("link").to_owned();
    assert_eq!(
        link,
        format!("comptoir://chat/{business}?text=Hello%20Acme%21")
    );
    assert!(
        body["svg"].as_str().expect("svg").contains("<svg"),
        "{body}"
    );
    let (status, body) = call(&agent, "GET", "/v1/link", Some(READ_KEY), None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(&agent, "GET", "/v1/link?txt=x", Some(FULL_KEY), None).await;
    assert_eq!(status, 400, "{body}");

    let dave = root.path().join("dave");
    let dave_id = account(&dave, &relay, false).await;
    let reply = json!({ "to": dave_id, "type": "text", "text": { "body": "How can we help?" } });
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(reply.clone()),
    )
    .await;
    assert_eq!(status, 422, "no window yet: {body}");
    assert!(body.to_string().contains("window_closed"), "{body}");

    let opened = ok(&dave, &relay, &["open", &link, "--yes"]).await;
    assert!(opened.contains("text\tHello Acme!\n"), "{opened}");
    let hit = receiver
        .wait("the prefilled text", |h| {
            h.json()["value"]["messages"][0]["text"]["body"] == "Hello Acme!"
        })
        .await;
    assert!(signature_checks(&hit, SECRET));
    let (status, body) = call(&agent, "POST", "/v1/messages", Some(FULL_KEY), Some(reply)).await;
    assert_eq!(status, 200, "a free reply inside the window: {body}");
    let heard = ok(
        &dave,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;
    assert!(heard.contains("How can we help?"), "{heard}");
    agent.stop().await;
}

/// `agent link --name` prints a link only for a name this business
/// claimed: another business's name, or one nobody claimed, is refused
/// (exit 1, no link printed) with the command that claims it; once
/// claimed, the link names it (README review item 1). A closed standard
/// output (`| head` that ended) ends the command quietly (item 3).
#[tokio::test]
async fn agent_link_names_only_a_name_this_business_claimed() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start().await;
    let text = config_toml(&relay, &data_dir(root.path()), &receiver, "", "");
    let file = root.path().join("agent.toml");
    std::fs::write(&file, &text).expect("write the configuration");
    let config = Config::parse(&text, &|_| None).expect("configuration");
    init_business(&relay, &config).await;

    let rival = root.path().join("rival");
    account(&rival, &relay, true).await;
    ok(&rival, &relay, &["name", "claim", "rival-shop"]).await;

    let claim = format!(
        "comptoir --data-dir {} name claim",
        config.device_dir().display()
    );
    for name in ["rival-shop", "nobody-has-this"] {
        let out = agent_command(&file, &["link", "--name", name, "--text", "hi"])
            .await
            .output()
            .await
            .expect("run agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: no link printed");
        assert!(
            stderr.contains("claim it first") && stderr.contains(&format!("{claim} {name}")),
            "{name}: {stderr}"
        );
    }

    let mut device = Client::open(&config.device_dir(), PASSPHRASE).expect("open");
    device.connect(&url(&relay)).await.expect("connect");
    device.claim_name("acme-own").await.expect("claim");
    device.close().await.expect("close");
    let stdout = agent_ok(&file, &["link", "--name", "Acme-Own", "--text", "hi"]).await;
    assert_eq!(
        stdout.lines().next(),
        Some("comptoir://chat/acme-own?text=hi"),
        "{stdout}"
    );

    // Standard output closed (`| head` that ended): no panic, exit 0.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut command = agent_command(&file, &["link", "--name", "acme-own", "--text", "hi"]).await;
    let out = command
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run agent")
        .wait_with_output()
        .await
        .expect("agent ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
