//! `comptoir daemon`: one process holds the account (its store is locked
//! by whoever opens it) and the relay connection, and other programs use
//! the account through it with JSON-RPC 2.0 over a socket in the data
//! directory, readable by the user only. docs/CLIENT-RPC.md documents
//! the methods, notifications and errors.
//!
//! - [`rpc`]: the JSON-RPC framing (one object per line) and typed errors.
//! - [`methods`]: the methods, run on the account.
//! - [`server`]: the daemon: the socket, `--stdio`, the account's task.
//! - [`remote`]: a command's connection to a running daemon.
//! - [`forward`]: the commands that go through a running daemon.
//! - [`chat`]: `comptoir chat` through a running daemon.

pub mod chat;
pub mod forward;
pub mod methods;
pub mod remote;
pub mod rpc;
pub mod server;

use std::io::Write;
use std::path::{Path, PathBuf};

use comptoir_client::error::{ClientError, Result};

use crate::args::Cli;

/// The daemon's socket, in the data directory.
pub const SOCKET_FILE: &str = "daemon.sock";

/// Where the daemon of `data_dir` listens.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Errors after which another attempt to reach the relay may succeed.
pub fn is_unreachable(error: &ClientError) -> bool {
    crate::tui::relay_link::is_unreachable(error)
}

/// Whether a daemon answers on `data_dir`'s socket.
pub async fn is_running(data_dir: &Path) -> bool {
    remote::Remote::connect_if_running(data_dir).await.is_some()
}

/// `comptoir daemon [--stdio]`: open the account and serve it until
/// stopped; a second daemon (or any other process holding the store) on
/// the same data directory is refused.
pub async fn run(cli: &Cli, stdio: bool, _out: &mut dyn Write) -> Result<u8> {
    let client = match crate::open(cli) {
        Ok(client) => client,
        Err(ClientError::StoreLocked { .. }) if is_running(&cli.data_dir).await => {
            eprintln!(
                "error: a comptoir daemon already serves {}; use it (see docs/CLIENT-RPC.md), \
                 or stop it (Ctrl-C in its terminal) first",
                crate::config::shell_word(&cli.data_dir)
            );
            return Ok(1);
        }
        Err(e) => return Err(e),
    };
    server::run(client, &cli.data_dir, &cli.relay, stdio).await?;
    Ok(0)
}
