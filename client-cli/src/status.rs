//! `comptoir status post|list|view|delete`: 24-hour Status posts
//! (docs/PROTOCOL.md, "Status"). Posts arrive like messages (`listen`,
//! `chat`, the TUI receive them); `list` and `view` read what this device
//! keeps, and hide what is past its 24 hours. With `--output json`, each
//! prints one JSON object per line ([`StatusRecord`]).

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use comptoir_client::error::{ClientError, Result};
use comptoir_client::{Client, Event, StatusInput, StatusView};
use comptoir_protocol::AccountId;

use crate::args::{Cli, OutputFormat, StatusCommand};
use crate::display_name;
use crate::format::{date_time, time_of_day, visible};
use crate::json::Time;

/// One viewer of this account's post, for scripts.
#[derive(Debug, Serialize)]
pub struct Viewer {
    /// Its account id.
    pub account: String,
    /// Its contact name, if it has one.
    pub name: Option<String>,
    /// When it says it viewed the post.
    #[serde(flatten)]
    pub time: Time,
}

/// What `comptoir status ... --output json` prints: one object per line
/// with a `type`, as the other commands' records (README, "Output for
/// scripts").
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StatusRecord {
    /// `status post`: the post, and where its key went.
    StatusPosted {
        /// The post id (32 hex digits).
        id: String,
        /// The relay's posting time.
        #[serde(flatten)]
        time: Time,
        /// When it goes, ms since the epoch.
        expires_ms: u64,
        /// The same in RFC 3339.
        expires: String,
        /// The accounts its key went to.
        sent_to: Vec<String>,
        /// The accounts it did not go to, with why.
        refused: Vec<Refused>,
    },
    /// `status list`: one live post.
    StatusPost {
        /// The post id (32 hex digits).
        id: String,
        /// Who posted it (this account for its own).
        poster: String,
        /// The poster's contact name, if it has one.
        poster_name: Option<String>,
        /// Posted by this account.
        outgoing: bool,
        /// `text`, `image` or `video`.
        kind: &'static str,
        /// Its content type, as the poster stated it.
        content_type: String,
        /// Its length in bytes.
        size: u64,
        /// When it was posted (the relay's clock).
        #[serde(flatten)]
        time: Time,
        /// When it is hidden and deleted here, ms since the epoch.
        expires_ms: u64,
        /// The same in RFC 3339.
        expires: String,
        /// For this account's posts: how many accounts its key went to
        /// (`null` for others').
        recipients: Option<usize>,
        /// For this account's posts: who chose to say they viewed it.
        viewers: Vec<Viewer>,
    },
    /// `status view`: the post opened.
    StatusView {
        /// The post id (32 hex digits).
        id: String,
        /// Who posted it.
        poster: String,
        /// The poster's contact name, if it has one.
        poster_name: Option<String>,
        /// `text`, `image` or `video`.
        kind: &'static str,
        /// Its content type.
        content_type: String,
        /// Its length in bytes.
        size: u64,
        /// When it was posted.
        #[serde(flatten)]
        time: Time,
        /// A text post's text, exactly as posted (`null` for a file).
        text: Option<String>,
        /// Where the file was written (`--save-to`), or `null`.
        saved_to: Option<String>,
    },
    /// `status subscribers`: one customer whose consent covers this
    /// business's Status.
    StatusSubscriber {
        /// Its account id.
        account: String,
        /// Its contact name, if it has one.
        name: Option<String>,
        /// Whether it ever wrote to this business (as this device holds
        /// the history).
        wrote: bool,
    },
    /// `status delete`: deleted, and how many accounts were told.
    StatusDeleted {
        /// The post id as given.
        id: String,
        /// Accounts told.
        told: usize,
    },
}

/// An account a post's key did not go to.
#[derive(Debug, Serialize)]
pub struct Refused {
    /// Its account id.
    pub account: String,
    /// Why, in words.
    pub error: String,
}

/// `text`, `image` or `video`, from a post's content type.
pub fn kind_of(view: &StatusView) -> &'static str {
    if view.is_text() {
        "text"
    } else if view.content_type.starts_with("video/") {
        "video"
    } else {
        "image"
    }
}

/// Write `record` as one line.
fn write_json(out: &mut dyn Write, record: &StatusRecord) -> Result<()> {
    let line = serde_json::to_string(record).map_err(|e| {
        ClientError::io(
            "writing JSON to standard output",
            std::io::Error::other(e.to_string()),
        )
    })?;
    writeln!(out, "{line}").map_err(|e| ClientError::io("writing to standard output", e))
}

/// A live post as `status list --output json` prints it.
pub fn post_record(client: &Client, post: &StatusView) -> StatusRecord {
    StatusRecord::StatusPost {
        id: hex::encode(post.post_id),
        poster: post.poster.to_string(),
        poster_name: crate::json::name(client, &post.poster),
        outgoing: post.outgoing,
        kind: kind_of(post),
        content_type: post.content_type.clone(),
        size: post.size,
        time: Time::at(post.posted_at_ms),
        expires_ms: post.expires_at_ms,
        expires: crate::format::rfc3339(post.expires_at_ms),
        recipients: post.outgoing.then_some(post.recipients),
        viewers: post
            .viewers
            .iter()
            .map(|(account, at)| Viewer {
                account: account.to_string(),
                name: crate::json::name(client, account),
                time: Time::at(*at),
            })
            .collect(),
    }
}

/// Run one `comptoir status` command.
pub(crate) async fn run(
    cli: &Cli,
    source: &mut crate::account::Source<'_>,
    command: &StatusCommand,
    out: &mut dyn Write,
) -> Result<u8> {
    let c = cli.comptoir();
    let json = cli.output_format() == OutputFormat::Json;
    match command {
        StatusCommand::Post { text, file, to } => {
            let mut client = source.open(cli)?;
            let named = to
                .iter()
                .map(|name| client.resolve(name))
                .collect::<Result<Vec<AccountId>>>()?;
            let input = match (text, file) {
                (Some(text), None) => StatusInput::Text(text),
                (None, Some(path)) => StatusInput::File(path),
                _ => {
                    return Err(ClientError::InvalidArgument(
                        "post either --text or --file".into(),
                    ));
                }
            };
            // A business posts to its subscribers, a person to its
            // conversations (the kind the relay tells at the login
            // decides); both to those named too.
            let result = match client.connect(&cli.relay).await {
                Ok(_) => match status_audience(&mut client).await {
                    Ok(mut recipients) => {
                        for account in named {
                            if !recipients.contains(&account) {
                                recipients.push(account);
                            }
                        }
                        client.post_status(input, &recipients).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let posted = match result {
                Ok(posted) => posted,
                Err(e) => {
                    client.close().await?;
                    return Err(e);
                }
            };
            if json {
                write_json(
                    out,
                    &StatusRecord::StatusPosted {
                        id: hex::encode(posted.post_id),
                        time: Time::at(posted.posted_at_ms),
                        expires_ms: posted.expires_at_ms,
                        expires: crate::format::rfc3339(posted.expires_at_ms),
                        sent_to: posted.sent_to.iter().map(|a| a.to_string()).collect(),
                        refused: posted
                            .refused
                            .iter()
                            .map(|(account, error)| Refused {
                                account: account.to_string(),
                                error: error.to_string(),
                            })
                            .collect(),
                    },
                )?;
            } else {
                say!(out, "{}", hex::encode(posted.post_id));
            }
            note!(
                "posted until {}; its key went to {} account(s)",
                date_time(posted.expires_at_ms),
                posted.sent_to.len()
            );
            for (account, error) in &posted.refused {
                note!("  not sent to {}: {error}", display_name(&client, account));
            }
            client.close().await?;
            Ok(0)
        }
        StatusCommand::List => {
            let mut client = source.open(cli)?;
            let posts = client.statuses().await?;
            if posts.is_empty() {
                note!("no Status in the last 24 hours (they arrive with `{c} listen`)");
            }
            for post in &posts {
                if json {
                    write_json(out, &post_record(&client, post))?;
                    continue;
                }
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
            let mut client = source.open(cli)?;
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
            if json {
                let text = match save_to {
                    Some(_) => None,
                    None => {
                        let bytes = read_scratch(&scratch)?;
                        view.is_text()
                            .then(|| String::from_utf8_lossy(&bytes).into_owned())
                    }
                };
                let client = source.open(cli).ok();
                write_json(
                    out,
                    &StatusRecord::StatusView {
                        id: hex::encode(view.post_id),
                        poster: view.poster.to_string(),
                        poster_name: client
                            .as_ref()
                            .and_then(|c| crate::json::name(c, &view.poster)),
                        kind: kind_of(&view),
                        content_type: view.content_type.clone(),
                        size: view.size,
                        time: Time::at(view.posted_at_ms),
                        text,
                        saved_to: save_to.as_ref().map(|p| p.display().to_string()),
                    },
                )?;
                return Ok(0);
            }
            say!(
                out,
                "{} at {}:",
                display_name_offline(cli, source, &view.poster),
                date_time(view.posted_at_ms)
            );
            if save_to.is_none() {
                let bytes = read_scratch(&scratch)?;
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
        StatusCommand::Subscribers { never_wrote } => {
            let mut client = source.open(cli)?;
            let result = match client.connect(&cli.relay).await {
                Ok(_) => client.status_subscribers().await,
                Err(e) => Err(e),
            };
            let listed = result.and_then(|subscribers| {
                subscribers
                    .into_iter()
                    .map(|account| {
                        let wrote = client.history(&account)?.iter().any(|m| !m.outgoing);
                        Ok((account, crate::json::name(&client, &account), wrote))
                    })
                    .collect::<Result<Vec<_>>>()
            });
            client.close().await?;
            let listed = listed?;
            if listed.is_empty() {
                note!(
                    "no customer's consent covers your Status (they give it with `{c} consent \
                     grant BUSINESS status`)"
                );
            }
            for (account, name, wrote) in listed {
                if *never_wrote && wrote {
                    continue;
                }
                if json {
                    write_json(
                        out,
                        &StatusRecord::StatusSubscriber {
                            account: account.to_string(),
                            name,
                            wrote,
                        },
                    )?;
                } else {
                    say!(
                        out,
                        "{account}\t{}\t{}",
                        name.as_deref().map_or_else(|| "-".to_owned(), visible),
                        if wrote { "wrote" } else { "never wrote" }
                    );
                }
            }
            Ok(0)
        }
        StatusCommand::Delete { id } => {
            let mut client = source.open(cli)?;
            let result = match client.connect(&cli.relay).await {
                Ok(_) => client.delete_status(id).await,
                Err(e) => Err(e),
            };
            client.close().await?;
            let told = result?;
            if json {
                write_json(
                    out,
                    &StatusRecord::StatusDeleted {
                        id: id.clone(),
                        told,
                    },
                )?;
            } else {
                say!(out, "deleted; {told} account(s) told");
            }
            Ok(0)
        }
    }
}

/// Whom a post goes to by default: a business's subscribers (from the
/// relay), or the accounts a person has a conversation with.
async fn status_audience(client: &mut Client) -> Result<Vec<AccountId>> {
    if client.is_business() {
        client.status_subscribers().await
    } else {
        client.conversation_peers()
    }
}

/// The bytes of a post decrypted to `scratch`, which is deleted.
fn read_scratch(scratch: &Path) -> Result<Vec<u8>> {
    let read = std::fs::read(scratch);
    let _ = std::fs::remove_file(scratch);
    read.map_err(|e| ClientError::io("reading the Status", e))
}

/// The poster's name, read again from the store (the client is closed).
fn display_name_offline(
    cli: &Cli,
    source: &mut crate::account::Source<'_>,
    account: &AccountId,
) -> String {
    match source.open(cli) {
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
    notes: &mut dyn Write,
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
            note_to!(notes, "  (see it with `{c} status view {id}`)");
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
