//! The TUI's Status pane: the posts of the last 24 hours, one line each
//! (id, who posted, when, what; for one's own, how many it went to and
//! who sent a view receipt), drawn over the chat pane. Opening one is
//! `comptoir status view ID`.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use comptoir_client::Client;
use comptoir_client::error::Result;

use crate::format::{date_time, time_of_day, visible};
use crate::tui::app::App;

/// The live posts as lines, newest first (those past 24 hours are deleted
/// from the store first).
pub async fn load(client: &mut Client) -> Result<Vec<String>> {
    let posts = client.statuses().await?;
    let name = |account: &comptoir_protocol::AccountId| match client.contact_name(account) {
        Ok(Some(name)) => visible(&name),
        _ => account.to_string(),
    };
    Ok(posts
        .iter()
        .map(|post| {
            let who = if post.outgoing {
                "me".to_owned()
            } else {
                name(&post.poster)
            };
            let what = if post.is_text() {
                "text".to_owned()
            } else {
                visible(&post.content_type)
            };
            let mut line = format!(
                "{} {who} · {} · {what} · until {}",
                &hex::encode(post.post_id)[..8],
                date_time(post.posted_at_ms),
                time_of_day(post.expires_at_ms)
            );
            if post.outgoing {
                let viewers: Vec<String> = post.viewers.iter().map(|(v, _)| name(v)).collect();
                line.push_str(&format!(" · sent to {}", post.recipients));
                if !viewers.is_empty() {
                    line.push_str(&format!(" · viewed by {}", viewers.join(", ")));
                }
            }
            line
        })
        .collect())
}

/// Draw the Status pane over `area`.
pub fn draw(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let text = if app.statuses.is_empty() {
        "No Status in the last 24 hours.".to_owned()
    } else {
        app.statuses.join("\n")
    };
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: false }).block(
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

    use crate::tui::app::{App, Mode};
    use crate::tui::view;

    fn screen(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(100, 12)).expect("test backend");
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

    #[test]
    fn s_shows_the_status_pane_and_esc_leaves_it() {
        let mut app = App::new(Vec::new());
        app.statuses = vec!["0a1b2c3d acme · 2026-12-01 09:00 · text · until 09:00".into()];
        assert!(!screen(&app).contains("Status (last 24 hours)"));
        app.handle_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::NONE));
        assert_eq!(app.mode, Mode::Status);
        let shown = screen(&app);
        assert!(shown.contains("Status (last 24 hours)"), "{shown}");
        assert!(shown.contains("0a1b2c3d acme"), "{shown}");
        app.handle_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        assert_eq!(app.mode, Mode::List);
        app.statuses.clear();
        app.handle_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::NONE));
        assert!(screen(&app).contains("No Status in the last 24 hours."));
    }
}
