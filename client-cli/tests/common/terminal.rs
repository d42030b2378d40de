//! The `comptoir` binary run in a pseudo-terminal, as a person runs it,
//! and the screen a terminal emulator (vt100) shows of what it writes:
//! type into it, then wait until the screen shows something (never a
//! sleep standing in for it).

use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pty_process::blocking::{Command, Pty};
use tokio::sync::watch;

use super::Customer;

/// The terminal's size: tall enough that nothing a test waits for scrolls
/// off the screen.
pub const ROWS: u16 = 50;
pub const COLUMNS: u16 = 100;

/// How long a wait for the screen may take.
const WAIT: Duration = Duration::from_secs(30);

/// A `comptoir` process in a pseudo-terminal.
pub struct Terminal {
    pty: Arc<Pty>,
    child: std::process::Child,
    screen: Arc<Mutex<vt100::Parser>>,
    /// Bumped each time the process wrote.
    updates: watch::Receiver<u64>,
}

impl Terminal {
    /// Start `comptoir --data-dir DIR --relay RELAY <args>` as `customer`
    /// (the store's passphrase in the environment) in a new terminal.
    pub fn start(customer: &Customer, args: &[&str]) -> Self {
        let (pty, pts) = pty_process::blocking::open().expect("open a pseudo-terminal");
        pty.resize(pty_process::Size::new(ROWS, COLUMNS))
            .expect("size the terminal");
        let child = Command::new(env!("CARGO_BIN_EXE_comptoir"))
            .arg("--data-dir")
            .arg(&customer.dir)
            .arg("--relay")
            .arg(&customer.relay)
            .args(args)
            .env_remove("COMPTOIR_RELAY")
            .env_remove("COMPTOIR_DATA_DIR")
            .env_remove("COMPTOIR_CA_CERT")
            .env_remove("COMPTOIR_CONFIG")
            .env_remove("COMPTOIR_OUTPUT")
            .env_remove("COMPTOIR_REGION")
            .env("XDG_CONFIG_HOME", customer.dir.with_extension("config"))
            .env("COMPTOIR_PASSPHRASE", "a test passphrase")
            .env("TERM", "xterm")
            .spawn(pts)
            .expect("start comptoir in the terminal");
        let pty = Arc::new(pty);
        let rows = NonZeroU16::new(ROWS).expect("rows");
        let columns = NonZeroU16::new(COLUMNS).expect("columns");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(rows, columns, 0)));
        let (updated, updates) = watch::channel(0u64);
        let (reader, shown) = (pty.clone(), screen.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // Ends when the process exited and the terminal closed.
            while let Ok(n @ 1..) = (&*reader).read(&mut buffer) {
                shown.lock().expect("screen").process(&buffer[..n]);
                updated.send_modify(|count| *count += 1);
            }
        });
        Self {
            pty,
            child,
            screen,
            updates,
        }
    }

    /// Type `text` (a `\r` is the Enter key, `\x04` Ctrl-D).
    pub fn type_text(&self, text: &str) {
        (&*self.pty)
            .write_all(text.as_bytes())
            .expect("type into the terminal");
    }

    /// The screen's rows, without trailing blanks.
    pub fn rows(&self) -> Vec<String> {
        let screen = self.screen.lock().expect("screen");
        screen
            .screen()
            .rows(0, COLUMNS)
            .map(|row| row.trim_end().to_string())
            .collect()
    }

    /// The row the cursor is on, without trailing blanks.
    pub fn cursor_row(&self) -> String {
        let (row, _) = self
            .screen
            .lock()
            .expect("screen")
            .screen()
            .cursor_position();
        self.rows()[usize::from(row)].clone()
    }

    /// The screen as text, one line per row.
    pub fn text(&self) -> String {
        self.rows().join("\n")
    }

    /// Wait until the screen satisfies `shown` (`what` says what is
    /// awaited, for the failure message); the screen's text then.
    pub async fn wait_until(&mut self, what: &str, shown: impl Fn(&Self) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if shown(self) {
                return self.text();
            }
            let changed = tokio::time::timeout_at(deadline, self.updates.changed()).await;
            match changed {
                Ok(Ok(())) => {}
                // The process ended (the terminal closed) or time is up.
                Ok(Err(_)) | Err(_) => {
                    let ended = self.child.try_wait().ok().flatten();
                    assert!(
                        shown(self),
                        "waited for {what}; comptoir ended: {ended:?}; the screen:\n{}",
                        self.text()
                    );
                    return self.text();
                }
            }
        }
    }

    /// Wait until the screen shows `text` somewhere.
    pub async fn wait_for(&mut self, text: &str) -> String {
        let wanted = text.to_string();
        self.wait_until(&format!("{text:?}"), move |t| t.text().contains(&wanted))
            .await
    }

    /// Wait for the process to end; its exit code.
    pub async fn exit_code(mut self) -> i32 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            let changed = tokio::time::timeout_at(deadline, self.updates.changed()).await;
            match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    // The terminal closed: the process is ending.
                    let status = tokio::task::spawn_blocking(move || self.child.wait())
                        .await
                        .expect("join")
                        .expect("wait");
                    return status.code().unwrap_or(-1);
                }
                Err(_) => panic!("comptoir did not end; the screen:\n{}", self.text()),
            }
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // A failed test leaves no process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
