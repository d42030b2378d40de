//! `comptoir status post|list|view|delete`: 24-hour Status posts
//! (docs/PROTOCOL.md, "Status"). Posts arrive like messages (`listen`,
//! `chat`, the TUI receive them); `list` and `view` read what this device
//! keeps, and hide what is past its 24 hours.

use std::io::Write;

use comptoir_client::error::{ClientError, Result};
use comptoir_client::{Client, Event, StatusInput, StatusView};
use comptoir_protocol::AccountId;

use crate::args::{Cli, StatusCommand};
use crate::format::{date_time, time_of_day, visible};
use crate::{display_name, open};

/// Run one `comptoir status` command.
pub(crate) async fn run(cli: &Cli, command: &StatusCommand, out: &mut dyn Write) -> Result<u8> {
    let c = cli.comptoir();
    match command {
        StatusCommand::Post { text, file, to } => {
            let mut client = open(cli)?;
            let mut recipients = client.conversation_peers()?;
            for name in to {
                let account = client.resolve(name)?;
                if !recipients.contains(&account) {
                    recipients.push(account);
                }
            }
            let input = match (text, file) {
                (Some(text), None) => StatusInput::Text(text),
                (None, Some(path)) => StatusInput::File(path),
                _ => {
                    return Err(ClientError::InvalidArgument(
                        "post either --text or --file".into(),
                    ));
                }
            };
            let result = match client.connect(&cli.relay).await {
                Ok(_) => client.post_status(input, &recipients).await,
                Err(e) => Err(e),
            };
            let posted = match result {
                Ok(posted) => posted,
                Err(e) => {
                    client.close().await?;
                    return Err(e);
                }
            };
            say!(out, "{}", hex::encode(posted.post_id));
            eprintln!(
                "posted until {}; its key went to {} account(s)",
                date_time(posted.expires_at_ms),
                posted.sent_to.len()
            );
            for (account, error) in &posted.refused {
                eprintln!("  not sent to {}: {error}", display_name(&client, account));
            }
            client.close().await?;
            Ok(0)
        }
        StatusCommand::List => {
            let mut client = open(cli)?;
            let posts = client.statuses().await?;
            if posts.is_empty() {
                eprintln!("no Status in the last 24 hours (they arrive with `{c} listen`)");
            }
            for post in &posts {
                say!(out, "{}", list_line(&client, post));
                for (viewer, at) in &post.viewers {
                    say!(
                        out,
                        "  viewed by {} at {}",
                        display_name(&client, viewer),
                        time_of_day(*at)
                    );
                }
            }
            client.close().await?;
            Ok(0)
        }
        StatusCommand::View {
            id,
            save_to,
            receipt,
        } => {
            if let Some(path) = save_to
                && path.exists()
            {
                return Err(ClientError::InvalidArgument(format!(
                    "{} exists already; choose a new path",
                    path.display()
                )));
            }
            let mut client = open(cli)?;
            // A text is decrypted next to the store, printed, then deleted.
            let scratch = cli
                .data_dir
                .join(format!(".status-view-{}", std::process::id()));
            let destination = save_to.clone().unwrap_or_else(|| scratch.clone());
            let result = match client.connect(&cli.relay).await {
                Ok(_) => client.view_status(id, &destination, *receipt).await,
                Err(e) => Err(e),
            };
            client.close().await?;
            let view = result?;
            say!(
                out,
                "{} at {}:",
                display_name_offline(cli, &view.poster),
                date_time(view.posted_at_ms)
            );
            if save_to.is_none() {
                let read = std::fs::read(&scratch);
                let _ = std::fs::remove_file(&scratch);
                let bytes = read.map_err(|e| ClientError::io("reading the Status", e))?;
                if view.is_text() {
                    say!(out, "{}", visible(&String::from_utf8_lossy(&bytes)));
                } else {
                    say!(
                        out,
                        "[{} ({} bytes): add --save-to PATH to keep it]",
                        visible(&view.content_type),
                        view.size
                    );
                }
            } else {
                say!(out, "saved {}", destination.display());
            }
            Ok(0)
        }
        StatusCommand::Delete { id } => {
            let mut client = open(cli)?;
            let result = match client.connect(&cli.relay).await {
                Ok(_) => client.delete_status(id).await,
                Err(e) => Err(e),
            };
            client.close().await?;
            let told = result?;
            say!(out, "deleted; {told} account(s) told");
            Ok(0)
        }
    }
}

/// The poster's name, read again from the store (the client is closed).
fn display_name_offline(cli: &Cli, account: &AccountId) -> String {
    match open(cli) {
        Ok(client) => display_name(&client, account),
        Err(_) => account.to_string(),
    }
}

/// One post as `list` shows it.
fn list_line(client: &Client, post: &StatusView) -> String {
    let who = if post.outgoing {
        "me".to_owned()
    } else {
        display_name(client, &post.poster)
    };
    let what = if post.is_text() {
        "text".to_owned()
    } else {
        format!("{} ({} bytes)", visible(&post.content_type), post.size)
    };
    let seen = if post.outgoing {
        format!(
            ", sent to {}, {} viewer(s)",
            post.recipients,
            post.viewers.len()
        )
    } else {
        String::new()
    };
    format!(
        "{} {who} {} {what}, until {}{seen}",
        hex::encode(post.post_id),
        date_time(post.posted_at_ms),
        time_of_day(post.expires_at_ms)
    )
}

/// Print a Status event for `listen`; whether it counts as a message
/// (a new post does).
pub(crate) fn print_event(
    client: &mut Client,
    event: &Event,
    out: &mut dyn Write,
    c: &str,
) -> Result<bool> {
    match event {
        Event::StatusPosted {
            from,
            post_id,
            posted_at_ms,
        } => {
            let id = hex::encode(post_id);
            say!(
                out,
                "[{}] {} posted a Status {id}",
                time_of_day(*posted_at_ms),
                display_name(client, from)
            );
            eprintln!("  (see it with `{c} status view {id}`)");
            Ok(true)
        }
        Event::StatusDeleted { from, post_id } => {
            say!(
                out,
                "{} deleted its Status {}",
                display_name(client, from),
                hex::encode(post_id)
            );
            Ok(false)
        }
        Event::StatusViewed {
            by,
            post_id,
            viewed_at_ms,
        } => {
            say!(
                out,
                "[{}] {} viewed your Status {}",
                time_of_day(*viewed_at_ms),
                display_name(client, by),
                hex::encode(post_id)
            );
            Ok(false)
        }
        _ => Ok(false),
    }
}
