//! The agents' web inbox in tests: a daemon serving it (on the agent
//! fixture of [`super::agent`]), agents added as `agent agent-add` does,
//! logins over HTTP, and a wait for what the daemon recorded.

use std::net::SocketAddr;
use std::sync::Arc;

use comptoir_agent::Running;
use comptoir_agent::clock::ManualClock;
use comptoir_agent::db::MessageRow;
use comptoir_protocol::AccountId;

use super::agent::{Receiver, config, data_dir, init_business, serve};
use super::http::{Reply, form, request};
use super::{TIMEOUT, TestRelay, start_relay};

/// A relay, a business, and its daemon serving the inbox.
pub struct InboxFixture {
    pub relay: TestRelay,
    pub root: tempfile::TempDir,
    pub business: AccountId,
    pub agent: Running,
    pub clock: Arc<ManualClock>,
    _receiver: Receiver,
}

impl InboxFixture {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// [`Self::start`] with the daemon's configuration adjusted first.
    pub async fn start_with(adjust: impl FnOnce(&mut comptoir_agent::config::Config)) -> Self {
        let relay = start_relay().await;
        let root = tempfile::tempdir().expect("temp dir");
        let receiver = Receiver::start().await;
        let mut config = config(&relay, &data_dir(root.path()), &receiver);
        // As `inbox_hosts = ["inbox.acme.test"]` in agent.toml.
        config.inbox_hosts = vec!["inbox.acme.test".into()];
        adjust(&mut config);
        let business = init_business(&relay, &config).await;
        let clock = ManualClock::at(comptoir_client::client::now_ms());
        let agent = serve(&config, Arc::clone(&clock)).await;
        Self {
            relay,
            root,
            business,
            agent,
            clock,
            _receiver: receiver,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.agent.addr
    }

    /// Add an agent as `agent agent-add` does.
    pub fn add_agent(&self, name: &str, password: &str, admin: bool) {
        comptoir_agent::inbox::agents::add(&self.agent.db, name, password, admin, 1)
            .expect("add agent");
    }

    /// Wait until the daemon recorded a message of `customer` that `pick` accepts.
    pub async fn wait_recorded(
        &self,
        customer: AccountId,
        pick: impl Fn(&MessageRow) -> bool,
    ) -> MessageRow {
        let mut changes = self.agent.db.watch_changes();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let rows = self
                .agent
                .db
                .messages(Some(&customer.to_string()), None, 100)
                .expect("messages");
            if let Some(row) = rows.into_iter().find(|r| pick(r)) {
                return row;
            }
            tokio::time::timeout_at(deadline, changes.changed())
                .await
                .expect("timed out waiting for the daemon to record a message")
                .expect("daemon running");
        }
    }
}

/// A cookie's value from a reply's `Set-Cookie` headers.
pub fn set_cookie<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply
        .headers("set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// The `value` of the hidden `csrf` field of a page.
pub fn csrf_field(page: &str) -> String {
    let at =
        page.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().expect("a value").to_owned()
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("a cookie value")
}

/// Log in over HTTP: the reply to the login form's POST.
pub async fn try_login(addr: SocketAddr, name: &str, password: &str) -> Reply {
    try_login_forwarded(addr, name, password, None).await
}

/// [`try_login`] through a reverse proxy that says the client is
/// `forwarded_for` (an `X-Forwarded-For` value).
pub async fn try_login_forwarded(
    addr: SocketAddr,
    name: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> Reply {
    let page = request(addr, "GET", "/inbox/login", &[], b"").await;
    let login_cookie = cookie_value(set_cookie(&page, "comptoir_login").expect("login cookie"));
    let csrf = csrf_field(&page.text());
    let cookie = format!("comptoir_login={login_cookie}");
    let mut headers = vec![
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    if let Some(client) = forwarded_for {
        headers.push(("X-Forwarded-For", client));
    }
    request(
        addr,
        "POST",
        "/inbox/login",
        &headers,
        &form(&[("csrf", &csrf), ("name", name), ("password", password)]),
    )
    .await
}

/// A logged-in agent over HTTP: its cookie header and CSRF token.
pub struct HttpAgent {
    pub cookie: String,
    pub csrf: String,
}

/// Log in and read the CSRF token from the inbox page.
pub async fn login(addr: SocketAddr, name: &str, password: &str) -> HttpAgent {
    let reply = try_login(addr, name, password).await;
    assert_eq!(reply.status, 303, "login of {name}: {}", reply.text());
    let session = cookie_value(set_cookie(&reply, "comptoir_session").expect("session cookie"));
    let cookie = format!("comptoir_session={session}");
    let page = request(addr, "GET", "/inbox", &[("Cookie", &cookie)], b"").await;
    assert_eq!(page.status, 200);
    HttpAgent {
        csrf: csrf_field(&page.text()),
        cookie,
    }
}

/// An inbox page held open, as a browser tab holds it: its live-update
/// stream (`GET /inbox/events`). Dropping it closes the connection, as
/// closing the tab or the browser does.
pub struct OpenPage {
    _stream: tokio::net::TcpStream,
}

impl HttpAgent {
    /// Open an inbox page: its event stream, once the daemon answered.
    pub async fn open_page(&self, addr: SocketAddr) -> OpenPage {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::time::timeout(TIMEOUT, async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let head = format!(
                "GET /inbox/events HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nAccept: text/event-stream\r\n\r\n",
                self.cookie
            );
            stream.write_all(head.as_bytes()).await.expect("write");
            let mut raw = Vec::new();
            let mut buf = [0u8; 1024];
            while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "the daemon closed the event stream");
                raw.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&raw);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            OpenPage { _stream: stream }
        })
        .await
        .expect("the event stream opens")
    }

    pub async fn get(&self, addr: SocketAddr, path: &str) -> Reply {
        request(addr, "GET", path, &[("Cookie", &self.cookie)], b"").await
    }

    /// POST a form (the CSRF token is not added: give it in `fields`).
    pub async fn post(&self, addr: SocketAddr, path: &str, fields: &[(&str, &str)]) -> Reply {
        request(
            addr,
            "POST",
            path,
            &[
                ("Cookie", &self.cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &form(fields),
        )
        .await
    }
}
