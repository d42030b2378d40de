//! The account a command runs on: opened from the store by the command
//! itself, or lent by the running daemon that holds the store (and keeps
//! its relay connection open), so a command's code is the same either way.
//!
//! Through the daemon, what a command says on standard error and reads on
//! standard input belong to the program that asked for it: [`note!`]
//! writes to a buffer sent back with the result, and [`stdin`] gives what
//! that program read from its own standard input.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use comptoir_client::Client;
use comptoir_client::attachments::EncryptedFile;
use comptoir_client::error::Result;

use crate::args::Cli;

/// What a command run for another program says on standard error, and
/// what that program read from its standard input.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    /// Standard error, sent back to the program.
    pub err: Vec<u8>,
    /// The program's standard input, when the command reads it.
    pub stdin: Option<Vec<u8>>,
    /// Whether the program can ask its user (its standard input is a
    /// terminal): a command that would ask leaves the question to it.
    pub can_ask: bool,
    /// The question left to the program, if any.
    pub question: Option<Question>,
    /// The file the command sends, read and encrypted already by the
    /// daemon (so that a big file held up no other request).
    pub prepared: Option<Result<EncryptedFile>>,
}

/// A yes/no question a command run in the daemon leaves to the program
/// that asked for it (which has the terminal), with what to do on yes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Question {
    /// What to print before reading the answer.
    pub prompt: String,
    /// On yes: the account to send `text` to, with the method `send`.
    pub to: String,
    /// The text to send on yes.
    pub text: String,
}

tokio::task_local! {
    /// Set while the daemon runs a command for another program.
    pub(crate) static CAPTURED: RefCell<Captured>;
}

/// Write to standard error, or, while the daemon runs a command for
/// another program, to what is sent back to it.
pub(crate) fn write_err(args: std::fmt::Arguments<'_>) {
    let captured = CAPTURED.try_with(|captured| {
        use std::io::Write;
        let _ = captured.borrow_mut().err.write_fmt(args);
    });
    if captured.is_err() {
        eprint!("{args}");
    }
}

/// Whether the program a command runs for can ask its user: `None` when
/// the command runs for no other program.
pub(crate) fn caller_can_ask() -> Option<bool> {
    CAPTURED.try_with(|captured| captured.borrow().can_ask).ok()
}

/// The file the command sends, if the daemon read and encrypted it
/// already (or why that failed); taken once.
pub(crate) fn prepared_file() -> Option<Result<EncryptedFile>> {
    CAPTURED
        .try_with(|captured| captured.borrow_mut().prepared.take())
        .ok()
        .flatten()
}

/// Leave `question` to the program the command runs for.
pub(crate) fn ask_caller(question: Question) {
    let _ = CAPTURED.try_with(|captured| captured.borrow_mut().question = Some(question));
}

/// The bytes of standard input: the other program's when the daemon runs
/// the command for it (`None`: read this process's own).
pub(crate) fn stdin() -> Option<Vec<u8>> {
    CAPTURED
        .try_with(|captured| captured.borrow_mut().stdin.take().unwrap_or_default())
        .ok()
}

/// Where commands get the account.
pub(crate) enum Source<'a> {
    /// Open the store (asking for the passphrase).
    Store,
    /// The running daemon's account, connected to `relay` when it can be.
    Daemon {
        /// The daemon's client.
        client: &'a mut Client,
        /// The daemon's relay.
        relay: &'a str,
    },
}

impl Source<'_> {
    /// The account, for one command.
    pub(crate) fn open(&mut self, cli: &Cli) -> Result<Account<'_>> {
        Ok(match self {
            Self::Store => Account::Owned(Box::new(crate::open(cli)?)),
            Self::Daemon { client, relay } => Account::Lent { client, relay },
        })
    }
}

/// An open account: a [`Client`], whose connecting and closing leave a
/// daemon's connection as it is.
pub(crate) enum Account<'a> {
    /// Opened by this command, closed by it.
    Owned(Box<Client>),
    /// The daemon's: stays open and connected after the command.
    Lent {
        /// The daemon's client.
        client: &'a mut Client,
        /// The daemon's relay.
        relay: &'a str,
    },
}

impl Account<'_> {
    /// Connect to `relay`; the daemon's account stays on its connection
    /// (or connects to the daemon's relay when it has none).
    pub(crate) async fn connect(&mut self, relay: &str) -> Result<u64> {
        match self {
            Self::Owned(client) => client.connect(relay).await,
            Self::Lent { client, .. } if client.is_connected() => Ok(0),
            Self::Lent { client, relay } => client.connect(relay).await,
        }
    }

    /// Close the connection (not the daemon's).
    pub(crate) async fn close_connection(&mut self) {
        if let Self::Owned(client) = self {
            client.close_connection().await;
        }
    }

    /// Close the account (not the daemon's).
    pub(crate) async fn close(self) -> Result<()> {
        match self {
            Self::Owned(client) => (*client).close().await,
            Self::Lent { .. } => Ok(()),
        }
    }
}

impl Deref for Account<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        match self {
            Self::Owned(client) => client,
            Self::Lent { client, .. } => client,
        }
    }
}

impl DerefMut for Account<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        match self {
            Self::Owned(client) => client,
            Self::Lent { client, .. } => client,
        }
    }
}
