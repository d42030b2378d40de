//! The TUI's Status pane: the posts of the last 24 hours, one line each
//! (id, who posted, when, what; for one's own, how many it went to and
//! who sent a view receipt), drawn over the chat pane. ↑/↓ pick one and
//! Enter opens it: a text is shown under the list (made visible line by
//! line), an image or video is saved to the downloads directory
//! ([`crate::tui::downloads`]) and the pane says where. Opening sends no
//! view receipt (`comptoir status view --receipt` does).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use comptoir_client::Client;
use comptoir_client::error::{ClientError, Result};

use crate::format::{date_time, time_of_day, visible};
use crate::tui::app::{App, OpenedStatus, StatusEntry};
use crate::tui::downloads;

/// A contact's name made visible, or the account id.
fn name_of(client: &Client, account: &comptoir_protocol::AccountId) -> String {
    match client.contact_name(account) {
        Ok(Some(name)) => visible(&name),
        _ => account.to_string(),
    }
}

/// The live posts, newest first (those past 24 hours are deleted from the
/// store first).
pub async fn load(client: &mut Client) -> Result<Vec<StatusEntry>> {
    let posts = client.statuses().await?;
    let client: &Client = client;
    Ok(posts
        .iter()
        .map(|post| {
            let who = if post.outgoing {
                "me".to_owned()
            } else {
                name_of(client, &post.poster)
            };
            let what = if post.is_text() {
                "text".to_owned()
            } else {
                visible(&post.content_type)
            };
            let post_id = hex::encode(post.post_id);
            let mut line = format!(
                "{} {who} · {} · {what} · until {}",
                &post_id[..8],
                date_time(post.posted_at_ms),
                time_of_day(post.expires_at_ms)
            );
            if post.outgoing {
                let viewers: Vec<String> = post
                    .viewers
                    .iter()
                    .map(|(v, _)| name_of(client, v))
                    .collect();
                line.push_str(&format!(" · sent to {}", post.recipients));
                if !viewers.is_empty() {
                    line.push_str(&format!(" · viewed by {}", viewers.join(", ")));
                }
            }
            StatusEntry { post_id, line }
        })
        .collect())
}

/// Open the post `post_id` (downloaded, both digests checked, decrypted):
/// a text into `app`'s pane, an image or video into the downloads
/// directory; what to tell the user.
pub async fn open(client: &mut Client, app: &mut App, post_id: &str) -> Result<String> {
    let posts = client.statuses().await?;
    let Some(post) = posts.iter().find(|p| hex::encode(p.post_id) == post_id) else {
        return Ok("that Status is gone (deleted, or past its 24 hours)".to_owned());
    };
    let who = if post.outgoing {
        "me".to_owned()
    } else {
        name_of(client, &post.poster)
    };
    let heading = format!("{who} at {}", date_time(post.posted_at_ms));
    // A text longer than a Status text may be (a poster can state any
    // size) is saved like a file rather than read into the screen.
    let size_limit = u64::try_from(comptoir_client::status::MAX_STATUS_TEXT_BYTES).unwrap_or(0);
    if post.is_text() && post.size <= size_limit {
        // Decrypted beside the store, read, then deleted.
        let scratch = client
            .data_dir()
            .join(format!(".status-view-{}-{post_id}", std::process::id()));
        let viewed = client.view_status(post_id, &scratch, false).await;
        let read = viewed.and_then(|_| {
            std::fs::read(&scratch).map_err(|e| ClientError::io("reading the Status", e))
        });
        let _ = std::fs::remove_file(&scratch);
        let text = String::from_utf8_lossy(&read?).into_owned();
        app.opened_status = Some(OpenedStatus {
            post_id: post_id.to_owned(),
            heading,
            body: text,
        });
        return Ok(format!("opened the Status of {who}"));
    }
    let name = format!(
        "status-{}.{}",
        &post_id[..8.min(post_id.len())],
        downloads::status_extension(&post.content_type)
    );
    let path = downloads::destination(client.data_dir(), &name)?;
    client.view_status(post_id, &path, false).await?;
    let saved = format!(
        "{} ({} bytes, digests checked) saved to {}",
        visible(&post.content_type),
        post.size,
        visible(&path.display().to_string())
    );
    app.opened_status = Some(OpenedStatus {
        post_id: post_id.to_owned(),
        heading,
        body: saved.clone(),
    });
    Ok(format!("the Status of {who}: {saved}"))
}

/// Draw the Status pane over `area`.
pub fn draw(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let mut lines: Vec<Line<'_>> = Vec::new();
    if app.statuses.is_empty() {
        lines.push(Line::from("No Status in the last 24 hours."));
    }
    let selected = app
        .status_selected
        .min(app.statuses.len().saturating_sub(1));
    for (i, entry) in app.statuses.iter().enumerate() {
        if i == selected {
            lines.push(
                Line::from(format!("> {}", entry.line))
                    .style(Style::default().add_modifier(Modifier::REVERSED)),
            );
        } else {
            lines.push(Line::from(format!("  {}", entry.line)));
        }
    }
    if let Some(opened) = &app.opened_status {
        lines.push(Line::from(""));
        lines.push(
            Line::from(format!(
                "{} {}:",
                &opened.post_id[..8.min(opened.post_id.len())],
                opened.heading
            ))
            .style(Style::default().add_modifier(Modifier::BOLD)),
        );
        for line in opened.body.split('\n') {
            lines.push(Line::from(visible(line)));
        }
    }
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title("Status (last 24 hours)"),
        ),
        area,
    );
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use crate::tui::app::{Action, App, Mode, OpenedStatus, StatusEntry};
    use crate::tui::view;

    fn screen(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(160, 12)).expect("test backend");
        terminal.draw(|frame| view::draw(frame, app)).expect("draw");
        let buffer = terminal.backend().buffer();
        let mut out = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                out.push_str(buffer[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn entry(post_id: &str, line: &str) -> StatusEntry {
        StatusEntry {
            post_id: post_id.into(),
            line: line.into(),
        }
    }

    fn press(app: &mut App, code: KeyCode) -> Action {
        app.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn s_shows_the_status_pane_and_esc_leaves_it() {
        let mut app = App::new(Vec::new());
        app.statuses = vec![entry(
            &"0a1b2c3d".repeat(4),
            "0a1b2c3d acme · 2026-12-01 09:00 · text · until 09:00",
        )];
        assert!(!screen(&app).contains("Status (last 24 hours)"));
        press(&mut app, KeyCode::Char('s'));
        assert_eq!(app.mode, Mode::Status);
        let shown = screen(&app);
        assert!(shown.contains("Status (last 24 hours)"), "{shown}");
        assert!(shown.contains("> 0a1b2c3d acme"), "{shown}");
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.mode, Mode::List);
        app.statuses.clear();
        press(&mut app, KeyCode::Char('s'));
        assert!(screen(&app).contains("No Status in the last 24 hours."));
        assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    }

    #[test]
    fn enter_opens_the_picked_post_and_its_text_is_drawn_visibly() {
        let mut app = App::new(Vec::new());
        let (first, second) = ("11".repeat(16), "22".repeat(16));
        app.statuses = vec![
            entry(
                &first,
                "11111111 acme · 2026-12-01 09:00 · text · until 09:00",
            ),
            entry(
                &second,
                "22222222 bob · 2026-12-01 08:00 · image/png · until 08:00",
            ),
        ];
        press(&mut app, KeyCode::Char('s'));
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Down);
        assert_eq!(app.status_selected, 1);
        assert!(screen(&app).contains("> 22222222 bob"));
        press(&mut app, KeyCode::Up);
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            Action::OpenStatus(first.clone())
        );
        // What `tui::perform` puts in the pane once the post is decrypted.
        app.opened_status = Some(OpenedStatus {
            post_id: first.clone(),
            heading: "acme at 2026-12-01 09:00:00".into(),
            body: "Flash sale\nnow \u{1b}[2J\u{202e}gone".into(),
        });
        let shown = screen(&app);
        assert!(
            shown.contains("11111111 acme at 2026-12-01 09:00:00:"),
            "{shown}"
        );
        assert!(shown.contains("Flash sale"), "{shown}");
        assert!(shown.contains("now \\u{1b}[2J\\u{202e}gone"), "{shown}");
        assert!(!shown.contains('\u{1b}') && !shown.contains('\u{202e}'));
        // Esc closes the post first, then the pane.
        press(&mut app, KeyCode::Esc);
        assert_eq!(
            (app.mode, app.opened_status.is_none()),
            (Mode::Status, true)
        );
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.mode, Mode::List);
    }

    #[test]
    fn a_saved_image_says_where_it_went() {
        let mut app = App::new(Vec::new());
        let id = "33".repeat(16);
        app.statuses = vec![entry(
            &id,
            "33333333 bob · 2026-12-01 08:00 · image/png · until 08:00",
        )];
        press(&mut app, KeyCode::Char('s'));
        app.opened_status = Some(OpenedStatus {
            post_id: id,
            heading: "bob at 2026-12-01 08:00:00".into(),
            body:
                "image/png (2800 bytes, digests checked) saved to /d/downloads/status-33333333.png"
                    .into(),
        });
        let shown = screen(&app);
        assert!(
            shown.contains("saved to /d/downloads/status-33333333.png"),
            "{shown}"
        );
        assert!(shown.contains("Enter open"), "{shown}");
    }
}
