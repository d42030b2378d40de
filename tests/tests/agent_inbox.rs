//! The agents' web inbox (issue 16), end to end: a real relay, the
//! business's daemon serving the inbox on 127.0.0.1:0, real customers on
//! the client library.
//!
//! - Web security and the pages over plain HTTP: every page's headers
//!   (CSP without inline script, nosniff), the Host check (and
//!   `inbox_hosts`), session and login cookies (HttpOnly,
//!   SameSite=Strict), CSRF on every form (a missing or another session's
//!   token sends nothing), the login rate limit per name and address,
//!   customer HTML escaped on list, page and search, both sides' verified
//!   state, notes kept here, canned replies, sessions expiring, the window
//!   closing (reply refused, template picker sending a template), the
//!   admin role, and disabling an agent ending its session.
//! - Automatic assignment only to agents present: an agent whose
//!   session ended is assigned nothing, though her page stays open.
//! - Files customers send, shown on the page and served to logged-in
//!   agents as downloads (exact bytes, octet-stream, a safe file name).
//! - Message requests (a customer's first contact under Requests until
//!   accepted) and violation marks (a forged quick reply counted on the
//!   list and explained on the page, reasons escaped).
//! - The inbox in a real browser (Debian's chromium and chromium-driver
//!   over WebDriver): login, a customer's message appearing live and
//!   assigned by round robin, a reply typed with the keyboard alone, HTML
//!   and script from a customer shown as text, a hand-off with a note
//!   picked up by a second agent, a phone-sized layout, and the daemon
//!   stopping with pages open. Screenshots go to target/inbox-screenshots
//!   and are checked not blank. Without chromium the test is skipped with
//!   how to install it; with `CI` set it fails instead.

use crate::support;

use comptoir_protocol::proto::wire::AccountKind;
use support::client::{registered_as, wait_for, wait_message};
use support::http::{request, request_with_host};
use support::inbox::{InboxFixture, login, set_cookie, try_login, try_login_forwarded};
use support::webdriver::{Driver, ENTER, binaries, png_is_not_blank};

const ANA_PW: &str = "ana-long-password";
const BOB_PW: &str = "bob-long-password";
const HOSTILE: &str =
    "<script>document.title='owned'</script><img src=x onerror=alert(1)><b>bold</b> & \"quotes\"";

/// Wrong passwords sent all at once count as they arrive, not as their
/// checks end: of twenty at the same moment for one name from one
/// address, at most five are checked (the others refused with 429), so
/// guessing in parallel is no faster than one at a time (before, all
/// twenty were checked: the count rose only once a check had failed).
#[tokio::test]
async fn wrong_passwords_sent_at_once_are_limited_like_one_by_one() {
    let f = InboxFixture::start().await;
    f.add_agent("dave", "dave-long-password", false);
    let addr = f.addr();
    let replies =
        futures_util::future::join_all((0..20).map(|_| try_login(addr, "dave", "wrong-guess")))
            .await;
    let checked = replies.iter().filter(|r| r.status == 401).count();
    let limited = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(checked + limited, 20, "only 401s and 429s");
    assert!(checked <= 5, "{checked} guesses were checked");
    let right = try_login(addr, "dave", "dave-long-password").await;
    assert_eq!(
        right.status, 429,
        "the name stays limited from this address"
    );
}

/// Behind a reverse proxy every login arrives from the proxy's address:
/// the limit counted them all as one client, so one client's wrong
/// guesses refused everyone's logins under that name (and 50 made-up
/// names refused all new ones). With the proxy in
/// `inbox_trusted_proxies`, the client its `X-Forwarded-For` names is
/// counted; what a client writes left of the proxy's own entry is not
/// believed.
#[tokio::test]
async fn behind_a_trusted_proxy_logins_are_limited_per_client() {
    let f = InboxFixture::start_with(|config| {
        config.inbox_trusted_proxies = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    })
    .await;
    f.add_agent("dave", "dave-long-password", false);
    let addr = f.addr();
    let guesser = Some("203.0.113.7");
    for _ in 0..5 {
        let guess = try_login_forwarded(addr, "dave", "wrong-guess", guesser).await;
        assert_eq!(guess.status, 401, "{}", guess.text());
    }
    let limited = try_login_forwarded(addr, "dave", "dave-long-password", guesser).await;
    assert_eq!(limited.status, 429, "the guesser is limited");
    // Dave, from his own address through the same proxy, logs in.
    let dave = try_login_forwarded(addr, "dave", "dave-long-password", Some("198.51.100.2")).await;
    assert_eq!(dave.status, 303, "{}", dave.text());
    // The guesser cannot pick another address by writing one first.
    let spoofed = try_login_forwarded(
        addr,
        "dave",
        "dave-long-password",
        Some("198.51.100.9, 203.0.113.7"),
    )
    .await;
    assert_eq!(spoofed.status, 429);
}

/// An inbox served on 127.0.0.1:0 over its own database (agent ana, a
/// customer's message request) whose device task is the test: it takes
/// the commands from `queue`, or leaves them there, as a busy device does.
struct InboxOverAQueue {
    db: comptoir_agent::db::Db,
    customer: String,
    queue: tokio::sync::mpsc::Receiver<comptoir_agent::device::Command>,
    addr: std::net::SocketAddr,
    router: axum::Router,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl InboxOverAQueue {
    /// The queue holds `capacity` commands; `prefill` of them are there
    /// already (a device busy with them).
    async fn start(capacity: usize, prefill: usize) -> Self {
        use comptoir_agent::device::Command;
        let dir = tempfile::tempdir().expect("temp dir");
        let db =
            comptoir_agent::db::Db::open(&dir.path().join("agent.sqlite3"), vec![]).expect("db");
        comptoir_agent::inbox::agents::add(&db, "ana", ANA_PW, false, 1).expect("ana");
        let now = comptoir_client::client::now_ms();
        let customer = "ab".repeat(16);
        db.record_message(
            &comptoir_agent::db::NewMessage {
                id: "cd".repeat(16),
                customer: customer.clone(),
                incoming: true,
                kind: "text",
                body: "where is my order?".into(),
                template_id: None,
                reply_to: None,
                status: comptoir_agent::MessageStatus::Received,
                at_ms: now,
            },
            &[],
            now,
        )
        .expect("record");
        db.note_request(&customer, now).expect("a message request");
        let (commands, queue) = tokio::sync::mpsc::channel(capacity);
        for _ in 0..prefill {
            let (busy, _) = tokio::sync::oneshot::channel();
            commands
                .try_send(Command::ApprovedTemplates { reply: busy })
                .map_err(|_| ())
                .expect("room");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let clock: comptoir_agent::SharedClock = comptoir_agent::ManualClock::at(now);
        let state =
            comptoir_agent::inbox::InboxState::new(db.clone(), commands, clock, addr, false);
        let router = comptoir_agent::inbox::router(state);
        let app = router
            .clone()
            .into_make_service_with_connect_info::<comptoir_agent::inbox::session::PeerAddr>();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            db,
            customer,
            queue,
            addr,
            router,
            server,
            _dir: dir,
        }
    }
}

/// Wait (bounded) until `customer`'s conversation is a message request
/// again, with note number `n` (from 0), by Ana, saying the accept was not
/// done.
async fn a_request_again_with_a_note(
    db: &comptoir_agent::db::Db,
    customer: &str,
    changes: &mut tokio::sync::watch::Receiver<u64>,
    n: usize,
) {
    tokio::time::timeout(support::TIMEOUT, async {
        loop {
            let view = comptoir_agent::inbox::conversations::get(db, customer).expect("get");
            let notes = comptoir_agent::inbox::conversations::notes(db, customer).expect("notes");
            if view.request && notes.len() == n + 1 {
                assert_eq!(notes[n].author, "ana");
                assert!(
                    notes[n]
                        .body
                        .starts_with("The message request was not accepted"),
                    "{}",
                    notes[n].body
                );
                return;
            }
            changes.changed().await.expect("the database is open");
        }
    })
    .await
    .expect("a request again, with a note");
}

/// A reply the device task has not taken within the page's wait (it is
/// busy, with a large upload say) is reported as queued, not as "Not
/// sent": it goes out once the device is free, and an agent told it
/// failed would send it twice (before, the page said "Not sent: the
/// daemon is stopping"). The inbox here is served over a command queue
/// nobody takes from, as a busy device task leaves it.
#[tokio::test]
async fn a_reply_the_busy_device_has_not_sent_yet_is_reported_queued() {
    use comptoir_agent::device::Command;
    let InboxOverAQueue {
        db: inbox_db,
        customer,
        mut queue,
        addr,
        server,
        ..
    } = InboxOverAQueue::start(1, 0).await;

    let ana = login(addr, "ana", ANA_PW).await;
    let reply = ana
        .post(
            addr,
            &format!("/inbox/c/{customer}/reply"),
            &[("csrf", &ana.csrf), ("text", "On its way")],
        )
        .await;
    let page = reply.text();
    assert_eq!(reply.status, 202, "{page}");
    assert!(
        page.contains("queued") && !page.contains("Not sent"),
        "{page}"
    );
    let Ok(Command::SendText { reply: device, .. }) = queue.try_recv() else {
        panic!("the reply waits for the device");
    };
    // The device gets to it later and the relay refuses it: the agent,
    // told it was queued, finds why in the conversation (before, only the
    // daemon's log said so).
    let mut changes = inbox_db.watch_changes();
    device
        .send(Err(comptoir_client::ClientError::Relay {
            code: comptoir_protocol::proto::wire::ErrorCode::WindowClosed,
            message: "the 24-hour window is closed".into(),
        }))
        .map_err(|_| ())
        .expect("the inbox still waits for the outcome");
    let note = tokio::time::timeout(support::TIMEOUT, async {
        loop {
            let notes =
                comptoir_agent::inbox::conversations::notes(&inbox_db, &customer).expect("notes");
            if let Some(note) = notes.into_iter().next() {
                return note;
            }
            changes.changed().await.expect("the database is open");
        }
    })
    .await
    .expect("a note on the conversation");
    assert_eq!(note.author, "ana");
    assert!(
        note.body.starts_with("Not sent: the reply “On its way”:"),
        "{}",
        note.body
    );
    // Accepting the request while the device is busy: queued for the
    // device, and the inbox no longer shows it as a request (before, the
    // page returned early and it stayed one). The accept fills the queue:
    // the read receipt after it waits for room without holding up the
    // page (before, the page hung there).
    let accept = ana
        .post(
            addr,
            &format!("/inbox/c/{customer}/accept"),
            &[("csrf", &ana.csrf)],
        )
        .await;
    assert_eq!(accept.status, 202, "{}", accept.text());
    let Ok(Command::AcceptRequest { reply: device, .. }) = queue.try_recv() else {
        panic!("the accept waits for the device");
    };
    let view = comptoir_agent::inbox::conversations::get(&inbox_db, &customer).expect("get");
    assert!(!view.request, "still a message request");
    // The device cannot accept it after all: a request again, and a note
    // says why (before, the inbox showed it accepted for good).
    device
        .send(Err(comptoir_client::ClientError::NotConnected))
        .map_err(|_| ())
        .expect("the inbox still waits for the outcome");
    a_request_again_with_a_note(&inbox_db, &customer, &mut changes, 1).await;
    server.abort();
}

/// An agent accepts a message request while the device's command queue
/// is full, and the browser leaves before there is room: the accept
/// still reaches the device (before, the request, dropped while waiting
/// for room, never sent it, and the inbox showed it accepted for good),
/// and a refusal then makes it a request again, with a note.
#[tokio::test]
async fn an_accept_whose_page_left_while_the_queue_was_full_still_reaches_the_device() {
    use comptoir_agent::device::Command;
    use tower_service::Service;
    // Room for one command, taken: the device is busy with it.
    let InboxOverAQueue {
        db: inbox_db,
        customer,
        mut queue,
        addr,
        mut router,
        server,
        ..
    } = InboxOverAQueue::start(1, 1).await;
    let ana = login(addr, "ana", ANA_PW).await;

    // The accept, called on the router itself so that it is dropped at a
    // known point: once the inbox recorded it, while it waits for room.
    let body = format!("csrf={}", ana.csrf);
    let mut accept = axum::http::Request::post(format!("/inbox/c/{customer}/accept"))
        .header("host", addr.to_string())
        .header("cookie", &ana.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(body))
        .expect("request");
    accept.extensions_mut().insert(axum::extract::ConnectInfo(
        comptoir_agent::inbox::session::PeerAddr(addr),
    ));
    let mut changes = inbox_db.watch_changes();
    {
        let answer = router.call(accept);
        let mut answer = std::pin::pin!(answer);
        tokio::time::timeout(support::TIMEOUT, async {
            loop {
                tokio::select! {
                    answered = answer.as_mut() => {
                        let answered = answered.expect("infallible");
                        panic!("answered while the queue is full: {}", answered.status());
                    }
                    changed = changes.changed() => changed.expect("the database is open"),
                }
                let view =
                    comptoir_agent::inbox::conversations::get(&inbox_db, &customer).expect("get");
                if !view.request {
                    return;
                }
            }
        })
        .await
        .expect("the inbox records the accept");
    }
    // The page is gone; the device gets through its busy command.
    let Some(Command::ApprovedTemplates { .. }) = queue.recv().await else {
        panic!("the busy command first");
    };
    let next = tokio::time::timeout(support::TIMEOUT, queue.recv())
        .await
        .expect("the accept reaches the device after its page left");
    let Some(Command::AcceptRequest { reply: device, .. }) = next else {
        panic!("an accept");
    };
    device
        .send(Err(comptoir_client::ClientError::NotConnected))
        .map_err(|_| ())
        .expect("the inbox still waits for the outcome");
    a_request_again_with_a_note(&inbox_db, &customer, &mut changes, 0).await;
    server.abort();
}

async fn customer(f: &InboxFixture, name: &str) -> comptoir_client::Client {
    registered_as(
        &f.relay,
        &f.root.path().join(name),
        "pw-long-enough",
        AccountKind::Customer,
    )
    .await
}

#[tokio::test]
async fn the_inbox_is_locked_down_and_escapes_customer_text() {
    let f = InboxFixture::start().await;
    let addr = f.addr();
    f.add_agent("ana", ANA_PW, true);
    f.add_agent("bob", BOB_PW, false);
    f.add_agent("dave", "dave-long-password", false);

    // Every inbox response carries the headers, logged in or not.
    let page = request(addr, "GET", "/inbox", &[], b"").await;
    assert_eq!(page.status, 303, "logged out goes to the login page");
    assert_eq!(page.header("location"), Some("/inbox/login"));
    let login_page = request(addr, "GET", "/inbox/login", &[], b"").await;
    for reply in [&page, &login_page] {
        let csp = reply.header("content-security-policy").expect("CSP");
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("http"),
            "{csp}"
        );
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    }
    assert!(!login_page.text().contains("<script>"), "no inline script");
    let login_cookie = set_cookie(&login_page, "comptoir_login").expect("login cookie");
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"));

    // Another Host (DNS rebinding) is refused.
    let evil = request_with_host(
        addr,
        "GET",
        "/inbox/login",
        &[("Host", &format!("evil.example:{}", addr.port()))],
        b"",
    )
    .await;
    assert_eq!(evil.status, 403);
    assert!(!evil.text().contains("password"));
    // A name listed in `inbox_hosts` is accepted.
    let named = request_with_host(
        addr,
        "GET",
        "/inbox/login",
        &[("Host", "inbox.acme.test")],
        b"",
    )
    .await;
    assert_eq!(named.status, 200);

    // The login form needs its CSRF token.
    let forged = request(
        addr,
        "POST",
        "/inbox/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &support::http::form(&[("csrf", "00"), ("name", "ana"), ("password", ANA_PW)]),
    )
    .await;
    assert_eq!(forged.status, 403);
    assert!(set_cookie(&forged, "comptoir_session").is_none());

    // Five wrong passwords, then even the right one is refused for that
    // name from this address; another name is not affected.
    for _ in 0..5 {
        let wrong = try_login(addr, "dave", "not-the-password").await;
        assert_eq!(wrong.status, 401);
        assert!(set_cookie(&wrong, "comptoir_session").is_none());
    }
    let limited = try_login(addr, "dave", "dave-long-password").await;
    assert_eq!(limited.status, 429);
    assert!(set_cookie(&limited, "comptoir_session").is_none());

    let ana = login(addr, "ana", ANA_PW).await;
    let bob = login(addr, "bob", BOB_PW).await;
    let session = try_login(addr, "ana", ANA_PW).await;
    let cookie = set_cookie(&session, "comptoir_session").expect("session cookie");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/inbox"),
        "{cookie}"
    );

    // A customer writes HTML and script: every page shows it as text.
    let mut carol = customer(&f, "carol").await;
    carol.send_text(f.business, HOSTILE).await.expect("send");
    let carol_id = carol.account_id();
    f.wait_recorded(carol_id, |m| m.body == HOSTILE).await;
    let list = ana.get(addr, "/inbox").await;
    let page = ana.get(addr, &format!("/inbox/c/{carol_id}")).await;
    let search = ana.get(addr, "/inbox?q=bold").await;
    for reply in [&list, &page, &search] {
        let html = reply.text();
        assert_eq!(reply.status, 200);
        assert!(!html.contains("<script>document"), "script escaped");
        assert!(
            !html.contains("<img src=x") && !html.contains("<b>bold"),
            "HTML escaped"
        );
        assert!(html.contains("bold"), "the text is there");
    }
    assert!(page.text().contains("&#60;script&#62;document.title"));
    // Both sides' verified state: the customer's safety number, and the
    // business's operator certificate as customers see it.
    assert!(page.text().contains("safety number not verified"));
    assert!(
        page.text()
            .contains("customers see the business as Acme Parcels, verified by the operator"),
        "{}",
        page.text()
    );

    // A reply without a CSRF token, or with another session's, sends nothing.
    let before = f.agent.db.message_count().expect("count");
    let path = format!("/inbox/c/{carol_id}/reply");
    let missing = ana.post(addr, &path, &[("text", "forged")]).await;
    assert!(missing.status >= 400, "{}", missing.status);
    let foreign = ana
        .post(addr, &path, &[("csrf", &bob.csrf), ("text", "forged")])
        .await;
    assert_eq!(foreign.status, 403);
    assert_eq!(f.agent.db.message_count().expect("count"), before);

    // With its token the reply goes out, and the customer receives it.
    let sent = ana
        .post(addr, &path, &[("csrf", &ana.csrf), ("text", "Hello Carol")])
        .await;
    assert_eq!(sent.status, 303, "{}", sent.text());
    let (_, text) = wait_message(&mut carol, f.business).await;
    assert_eq!(text, "Hello Carol");

    // Internal notes stay here.
    let note = ana
        .post(
            addr,
            &format!("/inbox/c/{carol_id}/note"),
            &[("csrf", &ana.csrf), ("body", "VIP, be nice")],
        )
        .await;
    assert_eq!(note.status, 303);
    assert!(
        ana.get(addr, &format!("/inbox/c/{carol_id}"))
            .await
            .text()
            .contains("VIP, be nice")
    );
    assert_eq!(f.agent.db.message_count().expect("count"), before + 1);

    // An admin adds a canned reply; one press sends it.
    let canned = ana
        .post(
            addr,
            "/inbox/canned",
            &[
                ("csrf", &ana.csrf),
                ("title", "Thanks"),
                ("body", "Thank you for waiting!"),
            ],
        )
        .await;
    assert_eq!(canned.status, 303, "{}", canned.text());
    let page = ana.get(addr, &format!("/inbox/c/{carol_id}")).await.text();
    assert!(page.contains("name=\"canned\" value=\"1\""), "{page}");
    let used = ana
        .post(addr, &path, &[("csrf", &ana.csrf), ("canned", "1")])
        .await;
    assert_eq!(used.status, 303);
    let (_, text) = wait_message(&mut carol, f.business).await;
    assert_eq!(text, "Thank you for waiting!");

    // A day later the window is closed: no reply box, and a reply is
    // refused here; the template picker offers the approved templates and
    // sends one with its value (a missing value is refused, nothing sent).
    // Sessions last 12 hours: Ana logs in again.
    f.clock.advance(25 * 3600 * 1000);
    assert_eq!(
        ana.get(addr, "/inbox").await.status,
        303,
        "the session expired"
    );
    let ana = login(addr, "ana", ANA_PW).await;
    let bob = login(addr, "bob", BOB_PW).await;
    let closed = ana.get(addr, &format!("/inbox/c/{carol_id}")).await.text();
    assert!(
        closed.contains("Window closed") && !closed.contains("id=\"reply\""),
        "{closed}"
    );
    assert!(closed.contains("order_update") && closed.contains("delivery_slot"));
    assert!(closed.contains("name=\"p.order\""));
    let late = ana
        .post(addr, &path, &[("csrf", &ana.csrf), ("text", "too late")])
        .await;
    assert_eq!(late.status, 400);
    assert!(late.text().contains("window is closed"));
    let template_id = closed
        .split("name=\"template\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a template in the picker")
        .to_owned();
    let template = ana
        .post(
            addr,
            &format!("/inbox/c/{carol_id}/template"),
            &[
                ("csrf", &ana.csrf),
                ("template", &template_id),
                ("p.order", "A-1"),
            ],
        )
        .await;
    assert_eq!(template.status, 303, "{}", template.text());
    let text = wait_for(&mut carol, |e| match e {
        comptoir_client::Event::Template { rendered, .. } => Some(rendered.body.clone()),
        _ => None,
    })
    .await;
    assert!(text.contains("A-1"), "{text}");
    let missing_value = ana
        .post(
            addr,
            &format!("/inbox/c/{carol_id}/template"),
            &[("csrf", &ana.csrf), ("template", &template_id)],
        )
        .await;
    assert_eq!(missing_value.status, 400);
    assert!(missing_value.text().contains("give a value for order"));
    assert_eq!(f.agent.db.message_count().expect("count"), before + 3);

    // Only an admin manages agents; a disabled agent's session ends.
    assert_eq!(bob.get(addr, "/inbox/agents").await.status, 403);
    let refused = bob
        .post(
            addr,
            "/inbox/agents",
            &[
                ("csrf", &bob.csrf),
                ("name", "mallory"),
                ("password", "mallory-password"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403);
    let added = ana
        .post(
            addr,
            "/inbox/agents",
            &[
                ("csrf", &ana.csrf),
                ("name", "erin"),
                ("password", "erin-long-password"),
            ],
        )
        .await;
    assert_eq!(added.status, 303, "{}", added.text());
    login(addr, "erin", "erin-long-password").await;
    assert_eq!(
        try_login(addr, "mallory", "mallory-password").await.status,
        401
    );
    // Agents were added in order: ana is 1, bob 2.
    let agents_page = ana.get(addr, "/inbox/agents").await.text();
    assert!(agents_page.contains("/inbox/agents/2/disabled") && agents_page.contains("erin"));
    let disabled = ana
        .post(
            addr,
            "/inbox/agents/2/disabled",
            &[("csrf", &ana.csrf), ("disabled", "1")],
        )
        .await;
    assert_eq!(disabled.status, 303);
    assert_eq!(
        bob.get(addr, "/inbox").await.status,
        303,
        "bob is logged out"
    );
    assert_eq!(try_login(addr, "bob", BOB_PW).await.status, 401);

    // Logging out ends the session.
    let out = ana
        .post(addr, "/inbox/logout", &[("csrf", &ana.csrf)])
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(ana.get(addr, "/inbox").await.status, 303);
}

/// Files customers send (issue 16 item 2), over plain HTTP: a customer
/// sends an HTML file with a hostile name through the client library; the
/// conversation page shows the name escaped, with a link; a logged-in
/// agent downloads the exact bytes as an `application/octet-stream`
/// attachment (name sanitised and quoted, nosniff, the inbox's CSP); no
/// session, or a message that carried no file, gets nothing.
#[tokio::test]
async fn files_customers_send_are_served_as_downloads() {
    let f = InboxFixture::start().await;
    let addr = f.addr();
    f.add_agent("ana", ANA_PW, true);
    let ana = login(addr, "ana", ANA_PW).await;

    let mut erin = customer(&f, "erin").await;
    let erin_id = erin.account_id();
    let contents = format!("<html><body>{HOSTILE}</body></html>").into_bytes();
    let path = f.root.path().join("page.html");
    std::fs::write(&path, &contents).expect("write");
    let mut file = erin.encrypt_file(&path, "text/html").expect("encrypt");
    let hostile_name = "<img src=x onerror=alert(1)>\"; x=\r\nSet-Cookie: a=b.html";
    file.file_name = hostile_name.to_owned();
    let id = erin
        .send_attachment(f.business, &file)
        .await
        .expect("send the file");
    let row = f.wait_recorded(erin_id, |m| m.id == id.to_string()).await;
    assert_eq!(row.kind, "attachment");
    let recorded = f
        .agent
        .db
        .attachment(&erin_id.to_string(), &id.to_string())
        .expect("db")
        .expect("the attachment is recorded");
    assert_eq!(recorded.file_name, hostile_name);
    assert_eq!(recorded.content_type, "text/html");
    assert_eq!(recorded.size, contents.len() as u64);

    // The page shows the name as text, with a link to the download.
    let link = format!("/inbox/c/{erin_id}/file/{id}");
    let page = ana.get(addr, &format!("/inbox/c/{erin_id}")).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
    assert!(
        html.contains("Download &#60;img src=x onerror=alert(1)&#62;"),
        "{html}"
    );
    assert!(!html.contains("<img src=x"), "{html}");

    // The download: the exact bytes, never rendered by the browser.
    let download = ana.get(addr, &link).await;
    assert_eq!(download.status, 200, "{}", download.text());
    assert_eq!(download.body, contents);
    assert_eq!(
        download.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(download.header("x-content-type-options"), Some("nosniff"));
    let csp = download.header("content-security-policy").expect("CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let disposition = download.header("content-disposition").expect("disposition");
    assert!(
        disposition.starts_with("attachment; filename=\"_img src_x onerror_alert(1)"),
        "{disposition}"
    );
    assert!(
        !disposition.contains('<') && !disposition.contains('\r'),
        "{disposition}"
    );
    assert_eq!(disposition.matches('"').count(), 2, "{disposition}");
    assert!(download.header("set-cookie").is_none());

    // Without a session: the login page, not the file.
    let anonymous = request(addr, "GET", &link, &[], b"").await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.header("location"), Some("/inbox/login"));
    assert!(!anonymous.body.windows(6).any(|w| w == b"<html>"));
    // A message without a file, and a made-up id: not found.
    let text_id = erin.send_text(f.business, "hello").await.expect("send");
    f.wait_recorded(erin_id, |m| m.id == text_id.to_string())
        .await;
    for path in [
        format!("/inbox/c/{erin_id}/file/{text_id}"),
        format!("/inbox/c/{erin_id}/file/zz"),
    ] {
        assert_eq!(ana.get(addr, &path).await.status, 404, "{path}");
    }
}

/// Message requests and violation marks, over plain HTTP: a customer's
/// first contact is listed under Requests (and marked "new customer") until
/// an agent accepts it (CSRF-checked); a message the client library
/// flagged (here a forged quick reply, which is never shown) is counted on
/// the list and explained on the conversation page, escaped.
#[tokio::test]
async fn message_requests_and_violation_marks_show_in_the_inbox() {
    use comptoir_protocol::proto::content::{ButtonReply, Content, Text, content};
    let f = InboxFixture::start().await;
    let addr = f.addr();
    f.add_agent("ana", ANA_PW, true);
    let ana = login(addr, "ana", ANA_PW).await;

    // Dan writes for the first time: a message request.
    let mut dan = customer(&f, "dan").await;
    dan.send_text(f.business, "Hello, first time here")
        .await
        .expect("send");
    let dan_id = dan.account_id();
    let first = f
        .wait_recorded(dan_id, |m| m.body == "Hello, first time here")
        .await;
    let requests = ana.get(addr, "/inbox?view=requests").await.text();
    assert!(requests.contains("href=\"/inbox?view=requests\" aria-current"));
    assert!(
        requests.contains(&format!("/inbox/c/{dan_id}"))
            && requests.contains("new customer · message request"),
        "{requests}"
    );
    let all = ana.get(addr, "/inbox").await.text();
    assert!(all.contains(&format!("/inbox/c/{dan_id}")) && all.contains("new customer"));
    let page = ana.get(addr, &format!("/inbox/c/{dan_id}")).await.text();
    let accept = format!("/inbox/c/{dan_id}/accept");
    assert!(page.contains(&format!("action=\"{accept}\"")), "{page}");

    // Accepting needs the CSRF token; with it the request leaves Requests.
    let forged = ana.post(addr, &accept, &[("csrf", "00")]).await;
    assert_eq!(forged.status, 403);
    assert!(
        ana.get(addr, "/inbox?view=requests")
            .await
            .text()
            .contains(&format!("/inbox/c/{dan_id}"))
    );
    let accepted = ana.post(addr, &accept, &[("csrf", &ana.csrf)]).await;
    assert_eq!(accepted.status, 303, "{}", accepted.text());
    let requests = ana.get(addr, "/inbox?view=requests").await.text();
    assert!(
        !requests.contains(&format!("/inbox/c/{dan_id}")),
        "{requests}"
    );
    let page = ana.get(addr, &format!("/inbox/c/{dan_id}")).await.text();
    assert!(!page.contains(&accept) && page.contains("Hello, first time here"));
    // Accepted from the page that showed it: Dan learns it was read (not
    // before: a message request is not acknowledged as read).
    let read = wait_for(&mut dan, |e| match e {
        comptoir_client::Event::Read { ids, .. } => Some(ids.clone()),
        _ => None,
    })
    .await;
    assert!(read.iter().any(|id| id.to_string() == first.id), "{read:?}");
    assert!(
        ana.get(addr, "/inbox")
            .await
            .text()
            .contains(&format!("/inbox/c/{dan_id}"))
    );

    // Mallory speaks raw protocol: a text (a request too), then a quick
    // reply to a template the business never sent. The business's client
    // flags it and shows nothing of it; the inbox counts and explains it.
    let mut mallory = support::hostile::Hostile::register(f.relay.addr).await;
    let mallory_id = mallory.id();
    mallory.start_session(f.business, 1).await;
    let content = |body| Content {
        message_id: comptoir_client::MessageId::generate().0.to_vec(),
        sent_at_ms: 1,
        body: Some(body),
        ..Default::default()
    };
    mallory
        .send_content(
            f.business,
            1,
            &content(content::Body::Text(Text {
                body: "hi from mallory".into(),
            })),
        )
        .await;
    mallory
        .send_content(
            f.business,
            1,
            &content(content::Body::ButtonReply(ButtonReply {
                message_id: comptoir_client::MessageId::generate().0.to_vec(),
                template_id: "00".repeat(32),
                button_index: 0,
                text: HOSTILE.into(),
            })),
        )
        .await;
    // The mark is recorded after the text: wait for the list to count it.
    let mut changes = f.agent.db.watch_changes();
    let list = loop {
        let list = ana.get(addr, "/inbox").await.text();
        if list.contains("1 flagged") {
            break list;
        }
        tokio::time::timeout(support::TIMEOUT, changes.changed())
            .await
            .expect("timed out waiting for the violation mark")
            .expect("daemon running");
    };
    assert!(list.contains("⚠ 1 flagged"), "{list}");
    let page = ana
        .get(addr, &format!("/inbox/c/{mallory_id}"))
        .await
        .text();
    assert!(
        page.contains("id=\"flags\"")
            && page.contains(
                "not shown: a quick reply to a message that is not a template this account sent"
            ),
        "{page}"
    );
    assert!(!page.contains("<script>document") && !page.contains("<b>bold"));
    assert!(
        !page.contains("bold"),
        "the forged reply's text is not shown"
    );

    // A mark on a message the page shows sits by it, its reason escaped.
    f.agent
        .db
        .record_violation(&dan_id.to_string(), &first.id, HOSTILE, 1)
        .expect("record");
    let page = ana.get(addr, &format!("/inbox/c/{dan_id}")).await.text();
    assert!(page.contains("class=\"in flagged\""), "{page}");
    assert!(
        page.contains("⚠ Flagged: &#60;script&#62;document.title"),
        "{page}"
    );
    assert!(!page.contains("<script>document") && !page.contains("<b>bold"));
}

fn screenshot_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/inbox-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn keep_screenshot(browser: &support::webdriver::Browser<'_>, name: &str) {
    let png = browser.screenshot().await;
    assert!(png_is_not_blank(&png), "the {name} screenshot is blank");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), &png).expect("write screenshot");
}

#[tokio::test]
async fn agents_answer_customers_in_a_real_browser() {
    let Some((chromium, chromedriver)) = binaries() else {
        let message =
            "the inbox browser test needs Chromium: apt-get install -y chromium chromium-driver";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("skipped: {message}");
        return;
    };
    // On the heap: the scenario's future is too large for a test
    // thread's stack in a debug build.
    Box::pin(browser_scenario(chromium, chromedriver)).await;
}

async fn browser_scenario(chromium: std::path::PathBuf, chromedriver: std::path::PathBuf) {
    let f = InboxFixture::start().await;
    let base = format!("http://{}", f.addr());
    f.add_agent("ana", ANA_PW, true);
    f.add_agent("bob", BOB_PW, false);
    let driver = Driver::start(&chromium, &chromedriver).await;

    // Ana logs in with the keyboard: name, Tab-free typing, Enter submits.
    let ana = driver.session(&f.root.path().join("ana-profile")).await;
    ana.goto(&format!("{base}/inbox/login")).await;
    // The page puts the focus on the name field (waited for in the DOM).
    let name = ana.focused("name").await;
    ana.keys(&name, "ana").await;
    let password = ana.css("#password").await;
    ana.keys(&password, &format!("{ANA_PW}{ENTER}")).await;
    ana.css("#conversations").await;
    keep_screenshot(&ana, "1-empty-inbox").await;

    // A customer writes; the conversation appears without a reload, unread.
    let mut carol = customer(&f, "carol").await;
    carol
        .send_text(f.business, "Hello, where is my parcel?")
        .await
        .expect("send");
    // Ana is online, so round robin gives it to her.
    ana.xpath(
        "//ul[@id='conversations']/li[contains(., 'where is my parcel')][contains(., 'assigned to ana')]",
    )
    .await;
    let badge = ana
        .xpath("//ul[@id='conversations']//span[@class='badge']")
        .await;
    assert_eq!(ana.text(&badge).await, "1");
    keep_screenshot(&ana, "2-conversation-list").await;
    let link = ana.css("#conversations a.who").await;

    // She opens it and answers with the keyboard alone: Enter on the link,
    // the reply box has the focus, Enter sends.
    ana.keys(&link, ENTER).await;
    ana.css("ol#messages").await;
    // The reply box has the focus: typing goes there.
    let reply = ana.focused("reply").await;
    ana.keys(&reply, &format!("It left the depot this morning.{ENTER}"))
        .await;
    ana.xpath("//ol[@id='messages']/li[contains(@class, 'out')][contains(., 'It left the depot')]")
        .await;
    let (_, text) = wait_message(&mut carol, f.business).await;
    assert_eq!(text, "It left the depot this morning.");

    // HTML and script from the customer arrive live and show as text.
    carol.send_text(f.business, HOSTILE).await.expect("send");
    ana.xpath("//ol[@id='messages']/li[contains(@class, 'in')][contains(., \"<b>bold</b>\")]")
        .await;
    assert_eq!(
        ana.count_now("#messages b, #messages img, #messages script")
            .await,
        0
    );
    assert!(!ana.title().await.contains("owned"));
    keep_screenshot(&ana, "3-conversation").await;
    // Shortcuts outside a text field: "/" goes to search, "r" to the reply box.
    let body = ana.css("body").await;
    ana.keys(&body, "/").await;
    ana.focused("search").await;
    ana.keys(&body, "r").await;
    ana.focused("reply").await;

    // Ana hands the conversation to Bob with a note, by keyboard.
    let select = ana.css("#agent").await;
    ana.keys(&select, "bob").await;
    let note = ana.css("#handoff-note").await;
    ana.keys(&note, &format!("Wants a delivery slot{ENTER}"))
        .await;
    ana.xpath("//ul[@id='notes']/li[contains(., 'Handed off to bob: Wants a delivery slot')]")
        .await;

    // Bob logs in, finds it under Mine, reads the note and answers.
    let bob = driver.session(&f.root.path().join("bob-profile")).await;
    bob.goto(&format!("{base}/inbox/login")).await;
    let name = bob.css("#name").await;
    bob.keys(&name, "bob").await;
    let password = bob.css("#password").await;
    bob.keys(&password, &format!("{BOB_PW}{ENTER}")).await;
    bob.css("#conversations").await;
    bob.goto(&format!("{base}/inbox?view=mine")).await;
    let mine = bob
        .xpath("//ul[@id='conversations']//li[contains(., 'assigned to bob')]//a[@class='who']")
        .await;
    bob.keys(&mine, ENTER).await;
    bob.xpath("//ul[@id='notes']/li[contains(., 'Wants a delivery slot')]")
        .await;
    let reply = bob.focused("reply").await;
    bob.keys(&reply, &format!("Bob here: tomorrow morning suits?{ENTER}"))
        .await;
    bob.xpath("//ol[@id='messages']/li[contains(@class, 'out')][contains(., 'Bob here')]")
        .await;
    let (_, text) = wait_message(&mut carol, f.business).await;
    assert_eq!(text, "Bob here: tomorrow morning suits?");
    // Ana's page shows Bob's answer live, and the note never reached Carol.
    ana.xpath("//ol[@id='messages']/li[contains(., 'Bob here')]")
        .await;
    keep_screenshot(&bob, "4-handed-off").await;
    // On a phone-sized screen the page is one readable column.
    bob.window_size(390, 844).await;
    bob.css("#reply").await;
    keep_screenshot(&bob, "5-phone").await;
    // The daemon stops promptly although both agents' pages hold event
    // streams open.
    tokio::time::timeout(support::TIMEOUT, f.agent.stop())
        .await
        .expect("the daemon stops with inbox pages open");
    bob.quit().await;
    ana.quit().await;
}

/// An agent's page that vanished without a word (a laptop put to sleep,
/// a network gone) keeps her present only as long as its connection
/// lasts: the daemon's listener makes every connection it accepts end
/// once what it sent stays unacknowledged for 30 s (before, TCP gave up
/// after about 15 minutes, and she was assigned conversations all that
/// time). This reads the option on the daemon's listening socket; that
/// accepted connections inherit it is
/// `vanished_peers::tests::accepted_connections_inherit_the_limit`. A
/// half-open connection itself is not made here (that takes dropping
/// packets).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_daemons_listener_sets_a_30_s_tcp_user_timeout() {
    use support::agent::{PASSPHRASE, Receiver, config, data_dir, init_business};
    let relay = support::start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start().await;
    let config = config(&relay, &data_dir(root.path()), &receiver);
    init_business(&relay, &config).await;
    let listener = std::net::TcpListener::bind(config.listen).expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    // The same socket, kept here to read its options.
    let probe = listener.try_clone().expect("a second handle");
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let clock = comptoir_agent::clock::ManualClock::at(comptoir_client::client::now_ms());
    let agent = comptoir_agent::start(&config, PASSPHRASE, listener, clock)
        .await
        .expect("agent serve");
    let limit = socket2::SockRef::from(&probe)
        .tcp_user_timeout()
        .expect("read the listener's option");
    assert_eq!(limit, Some(comptoir_agent::vanished_peers::UNACKED_LIMIT));
    assert_eq!(limit, Some(std::time::Duration::from_secs(30)));
    agent.stop().await;
}

/// Presence ends with the session: Ana opens a page half a minute before
/// her session expires; past its end, her page counts for nothing (the
/// daemon never marked her present beyond it), so the next customers go
/// to Bob, whose session is fresh, and none to Ana (round robin would
/// start with her).
#[tokio::test]
async fn an_agent_whose_session_ended_is_no_longer_assigned() {
    let f = InboxFixture::start().await;
    let addr = f.addr();
    f.add_agent("ana", ANA_PW, false);
    f.add_agent("bob", BOB_PW, false);
    let session_ms = comptoir_agent::inbox::session::SESSION_MS;
    let ana = login(addr, "ana", ANA_PW).await;
    f.clock.advance(session_ms - 30_000);
    let _ana_page = ana.open_page(addr).await;
    let ana_row = |f: &InboxFixture| {
        comptoir_agent::inbox::agents::list(&f.agent.db)
            .expect("agents")
            .into_iter()
            .find(|a| a.name == "ana")
            .expect("ana")
    };
    assert!(ana_row(&f).present_until_ms > comptoir_agent::Clock::now_ms(&*f.clock));
    // Her session ends; Bob logs in and opens his page.
    f.clock.advance(31_000);
    assert!(ana_row(&f).present_until_ms <= comptoir_agent::Clock::now_ms(&*f.clock));
    let bob = login(addr, "bob", BOB_PW).await;
    let _bob_page = bob.open_page(addr).await;

    let mut ids = Vec::new();
    for name in ["kim", "lu"] {
        let mut c = customer(&f, name).await;
        c.send_text(f.business, "Hello").await.expect("send");
        ids.push(c.account_id().to_string());
    }
    let assignee = |customer: &str| {
        comptoir_agent::inbox::conversations::get(&f.agent.db, customer)
            .ok()
            .and_then(|c| c.assignee)
            .map(|(_, name)| name)
    };
    let mut changes = f.agent.db.watch_changes();
    let deadline = tokio::time::Instant::now() + support::TIMEOUT;
    while !ids.iter().all(|c| assignee(c).is_some()) {
        tokio::time::timeout_at(deadline, changes.changed())
            .await
            .expect("both customers are assigned")
            .expect("daemon running");
    }
    for c in &ids {
        assert_eq!(assignee(c).as_deref(), Some("bob"), "{c}");
    }
    f.agent.stop().await;
}
