//! Headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`): chromedriver started on a free localhost port,
//! spoken to with plain HTTP and JSON. Element lookups use WebDriver's
//! implicit wait, so a test waits on the page's DOM, never on a timer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::TIMEOUT;
use super::http::request_for;

/// The WebDriver key code of Enter.
pub const ENTER: &str = "\u{E007}";

/// The installed browser and driver, if any.
pub fn binaries() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
            .find(|p| p.is_file())
    };
    Some((
        find(&["chromium", "chromium-browser"])?,
        find(&["chromedriver"])?,
    ))
}

/// A running chromedriver.
pub struct Driver {
    addr: SocketAddr,
    browser: PathBuf,
    group: Option<u32>,
    _child: Child,
}

impl Drop for Driver {
    /// End chromedriver and every browser it started (also when a test
    /// fails half way), by signalling its process group.
    fn drop(&mut self) {
        if let Some(group) = self.group {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Driver {
    /// Start chromedriver on a free port and wait until it is ready.
    pub async fn start(browser: &Path, driver: &Path) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let mut child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so the browsers it starts end with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // Ready once it says so on its standard output.
        let stdout = child.stdout.take().expect("chromedriver's stdout");
        let mut lines = BufReader::new(stdout).lines();
        tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("read chromedriver") {
                if line.contains("started successfully") {
                    return;
                }
            }
            panic!("chromedriver exited before it was ready");
        })
        .await
        .expect("chromedriver did not start");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            addr,
            browser: browser.to_owned(),
            group: child.id(),
            _child: child,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let reply = request_for(
            2 * TIMEOUT,
            self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            &body,
        )
        .await;
        let json: Value = serde_json::from_slice(&reply.body).expect("WebDriver answers JSON");
        assert!(
            reply.status == 200,
            "WebDriver {method} {path}: {} {json}",
            reply.status
        );
        json["value"].clone()
    }

    /// A new browser session with a fresh profile in `profile`.
    pub async fn session(&self, profile: &Path) -> Browser<'_> {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-crash-reporter",
            "--disable-breakpad",
            "--disable-dev-shm-usage",
            "--window-size=1000,800",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": self.browser.display().to_string(), "args": args}
        }}});
        let value = self.call("POST", "/session", Some(caps)).await;
        let id = value["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        let browser = Browser { driver: self, id };
        browser.implicit_wait(TIMEOUT.as_millis() as u64).await;
        browser
    }
}

/// One browser session.
pub struct Browser<'a> {
    driver: &'a Driver,
    id: String,
}

/// An element reference.
#[derive(Clone, Debug)]
pub struct Element(String);

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser<'_> {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
            .await
    }

    /// How long element lookups wait for the element to appear.
    pub async fn implicit_wait(&self, ms: u64) {
        self.call("POST", "/timeouts", Some(json!({"implicit": ms})))
            .await;
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url}))).await;
    }

    pub async fn title(&self) -> String {
        self.call("GET", "/title", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn element(value: &Value) -> Element {
        match value[ELEMENT_KEY].as_str() {
            Some(id) => Element(id.to_owned()),
            None => panic!("not an element reference: {value}"),
        }
    }

    /// The first element matching the CSS selector, waiting for it.
    pub async fn css(&self, selector: &str) -> Element {
        let v = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        Self::element(&v)
    }

    /// The first element matching the XPath, waiting for it.
    pub async fn xpath(&self, xpath: &str) -> Element {
        let v = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "xpath", "value": xpath})),
            )
            .await;
        Self::element(&v)
    }

    /// How many elements match the CSS selector now (no waiting).
    pub async fn count_now(&self, selector: &str) -> usize {
        self.implicit_wait(0).await;
        let v = self
            .call(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        self.implicit_wait(TIMEOUT.as_millis() as u64).await;
        v.as_array().map_or(0, Vec::len)
    }

    /// The element that has the keyboard focus.
    pub async fn active(&self) -> Element {
        Self::element(&self.call("GET", "/element/active", None).await)
    }

    /// Wait (bounded) until the element with `id` has the keyboard focus,
    /// asking the browser which element is active (the page sets the
    /// focus after it loads).
    pub async fn focused(&self, id: &str) -> Element {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let active = self.active().await;
            if self.attribute(&active, "id").await.as_deref() == Some(id) {
                return active;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "#{id} never got the keyboard focus"
            );
        }
    }

    /// Type `text` into `element` (WebDriver key codes allowed).
    pub async fn keys(&self, element: &Element, text: &str) {
        self.call(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn text(&self, element: &Element) -> String {
        self.call("GET", &format!("/element/{}/text", element.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.call(
            "GET",
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// Resize the browser window.
    pub async fn window_size(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// A PNG screenshot of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.call("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("valid base64")
    }

    /// End the session (closes the browser).
    pub async fn quit(self) {
        self.driver
            .call("DELETE", &format!("/session/{}", self.id), None)
            .await;
    }
}

/// Whether a PNG shows something: decodes it and checks that its pixels
/// vary (a blank or single-colour page has no variance).
pub fn png_is_not_blank(png_bytes: &[u8]) -> bool {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let luma: Vec<f64> = pixels
        .chunks(channels)
        .map(|p| p.iter().take(3).map(|&c| f64::from(c)).sum::<f64>() / 3.0)
        .collect();
    let n = luma.len() as f64;
    let mean = luma.iter().sum::<f64>() / n;
    let variance = luma.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n;
    variance > 20.0
}
