//! Click-to-chat on the command line: `comptoir open LINK` (a customer
//! opens a business's link: the business as the library decides to show
//! it, the prefilled text, sent on confirmation) and `comptoir business
//! link` (a business prints its link and QR code). The link format and
//! the QR codes are the library's ([`comptoir_client::click_to_chat`]).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use comptoir_client::Client;
use comptoir_client::click_to_chat::{ChatLink, LinkHandle, MAX_TEXT_LEN};
use comptoir_client::error::{ClientError, Result};
use comptoir_protocol::AccountId;
use comptoir_protocol::business::Verification;

use crate::args::Cli;
use crate::business::Shown;
use crate::format::visible;

/// Parse a link on the command line (a malformed one is a usage error,
/// exit 2, before anything is opened or stored).
pub fn parse_link(value: &str) -> std::result::Result<ChatLink, String> {
    ChatLink::parse(value).map_err(|e| e.to_string())
}

/// Check `--text` of `business link` on the command line.
pub fn parse_text(value: &str) -> std::result::Result<String, String> {
    if value.len() > MAX_TEXT_LEN {
        return Err(format!("the text is longer than {MAX_TEXT_LEN} bytes"));
    }
    Ok(value.to_owned())
}

/// The business a link names, checked with the relay (the client must be
/// connected): its account, and how to show it — the certified name with
/// ✓ when the operator verified it, otherwise the contact name or the
/// link's handle, never a self-chosen name.
pub async fn resolve(client: &mut Client, link: &ChatLink) -> Result<(AccountId, Shown, String)> {
    let account = client.resolve_link(link).await?;
    let view = client.business(account).await?;
    let handle = match client.contact_name(&account)? {
        Some(name) => name,
        None => link.handle.to_string(),
    };
    let verified = match &view.verification {
        Verification::Verified { .. } => "yes, by the operator".to_owned(),
        Verification::NotVerified(why) => format!("no: {why}"),
    };
    Ok((
        account,
        Shown {
            name: visible(view.shown_name(&handle)),
            verified: view.verification.is_verified(),
        },
        verified,
    ))
}

/// What the user said to sending a link's text.
enum Answer {
    /// Send it.
    Yes,
    /// Do not (or nobody could be asked: no terminal).
    No,
    /// Run by the daemon for a program that can ask its user: the
    /// question goes back to it.
    AskCaller,
}

/// The question before sending a link's text to `shown`.
fn prompt(shown: &Shown) -> String {
    format!("Send this text to {}? [y/N] ", shown.text())
}

/// Ask on the terminal whether to send; no terminal means no. Run by the
/// daemon, the program that asked has the terminal: the question is left
/// to it when it has one, and is no otherwise, as here.
fn confirm(shown: &Shown) -> Answer {
    match crate::account::caller_can_ask() {
        Some(true) => return Answer::AskCaller,
        Some(false) => return Answer::No,
        None => {}
    }
    if !std::io::stdin().is_terminal() {
        return Answer::No;
    }
    eprint!("{}", prompt(shown));
    if read_yes() { Answer::Yes } else { Answer::No }
}

/// Read one answer line on standard input: whether it says yes.
pub(crate) fn read_yes() -> bool {
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "Yes")
}

/// What `open` says once the text is sent as message `id`.
pub(crate) fn say_sent(out: &mut dyn Write, id: &str, c: &str) -> Result<()> {
    say!(out, "sent\t{id}");
    note!(
        "the business may now answer you for 24 hours; this is not consent to its \
         templates (`{c} consent grant` gives that)"
    );
    Ok(())
}

/// What `open` says when the user said no.
pub(crate) const NOT_SENT: &str = "not sent (add --yes to send without asking)";

/// `comptoir open LINK [--yes]`.
pub(crate) async fn run_open(
    cli: &Cli,
    source: &mut crate::account::Source<'_>,
    link: &ChatLink,
    yes: bool,
    out: &mut dyn Write,
) -> Result<u8> {
    let c = cli.comptoir();
    let mut client = source.open(cli)?;
    client.connect(&cli.relay).await?;
    let result = async {
        let (account, shown, verified) = resolve(&mut client, link).await?;
        say!(out, "business\t{}", shown.text());
        say!(out, "verified\t{verified}");
        say!(out, "account\t{account}");
        let Some(text) = &link.text else {
            say!(out, "text\tnone");
            note!("nothing to send: write to it with `{c} send {account} TEXT`");
            return Ok(0);
        };
        say!(out, "text\t{}", visible(text));
        if !yes {
            match confirm(&shown) {
                Answer::Yes => {}
                Answer::No => {
                    note!("{NOT_SENT}");
                    return Ok(0);
                }
                Answer::AskCaller => {
                    crate::account::ask_caller(crate::account::Question {
                        prompt: prompt(&shown),
                        to: account.to_string(),
                        text: text.clone(),
                    });
                    return Ok(0);
                }
            }
        }
        // Once stored the message has an id: a connection lost on the way
        // leaves it queued in the outbox, and `open` names it, as `send`
        // does.
        let (id, sent) = client.send_text_naming(account, text).await?;
        match sent {
            Ok(()) => {
                say_sent(out, &id.to_string(), &c)?;
                Ok(0)
            }
            Err(e) if crate::daemon::is_unreachable(&e) => {
                say!(out, "queued\t{id}");
                note!("{}", crate::queued_note(&id, &c));
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
    .await;
    client.close().await?;
    result
}

/// `comptoir business link [--name NAME] [--text T] [--svg F] [--png F]`
/// (`client` connected).
pub(crate) async fn business_link(
    client: &mut Client,
    cli: &Cli,
    name: Option<&str>,
    text: Option<&str>,
    files: (Option<&PathBuf>, Option<&PathBuf>),
    out: &mut dyn Write,
) -> Result<u8> {
    let own = client.account_id();
    let handle = match name {
        None => LinkHandle::Account(own),
        Some(name) => {
            match client.lookup(name).await {
                Ok(account) if account == own => {}
                Ok(_) | Err(ClientError::NotFound(_)) => {
                    return Err(ClientError::InvalidArgument(format!(
                        "the name {} is not this account's: claim it first with `{} name claim`",
                        visible(name),
                        cli.comptoir()
                    )));
                }
                Err(e) => return Err(e),
            }
            let normalized = comptoir_protocol::handle::normalize_business_name(name)
                .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
            LinkHandle::Name(normalized)
        }
    };
    let link = ChatLink::new(handle, text).map_err(link_error)?;
    print_link(&link, files, out)?;
    Ok(0)
}

/// Print `link` and its QR code for a terminal; write the SVG and PNG
/// files asked for.
pub fn print_link(
    link: &ChatLink,
    (svg, png): (Option<&PathBuf>, Option<&PathBuf>),
    out: &mut dyn Write,
) -> Result<()> {
    let terminal = link.qr_terminal().map_err(link_error)?;
    if let Some(path) = svg {
        let svg = link.qr_svg().map_err(link_error)?;
        std::fs::write(path, svg)
            .map_err(|e| ClientError::io(format!("writing {}", path.display()), e))?;
    }
    if let Some(path) = png {
        let png = link.qr_png().map_err(link_error)?;
        std::fs::write(path, png)
            .map_err(|e| ClientError::io(format!("writing {}", path.display()), e))?;
    }
    say!(out, "{link}");
    say!(out, "{terminal}");
    Ok(())
}

fn link_error(e: comptoir_client::click_to_chat::LinkError) -> ClientError {
    ClientError::InvalidArgument(e.to_string())
}
