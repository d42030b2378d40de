//! Drawing the terminal UI from an [`App`]: conversation list with unread
//! counts (and, on a business's screen, each customer's window), chat view
//! with timestamps and delivery/read ticks, the identity warning, the
//! choice and template pickers, and a help line.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Wrap};

use crate::format::{time_of_day, visible};
use crate::tui::app::{App, Drawn, Mode};
use comptoir_client::messages::Status;
use comptoir_client::rule_checks::Window;

/// The help line for each mode.
pub fn help(mode: Mode) -> &'static str {
    match mode {
        Mode::List => {
            "↑/↓ select · Enter open · b block · u unblock · t trust new identity · s Status · \
             q quit"
        }
        Mode::Chat => {
            "Enter send · Esc back · ↑/↓ pick, r report, s save its file · PgUp/PgDn/Home/End \
             scroll · Ctrl-R answer a choice · Ctrl-P template · Ctrl-B block · Ctrl-T trust new \
             identity · Ctrl-C quit"
        }
        Mode::ConfirmIdentity => "type the contact's name · Enter accept · Esc cancel",
        Mode::Pick => "↑/↓ select · Enter choose · Esc back",
        Mode::PickTemplate => "↑/↓ select · type a value · Enter next/send · Esc cancel",
        Mode::ConfirmBlock => "y block · n cancel",
        Mode::Status => "↑/↓ select · Enter open (text shown, image or video saved) · Esc back",
    }
}

/// The tick shown after an outgoing message.
pub fn ticks(status: Status) -> &'static str {
    match status {
        Status::Pending => "…",
        Status::Accepted => "✓",
        Status::Delivered => "✓✓",
        Status::Read => "✓✓ read",
        Status::Failed => "✗ not sent",
    }
}

/// A business's line about a customer's 24-hour window at `now_ms`.
pub fn window_line(window: &Window, now_ms: u64) -> String {
    match window.time_left_ms(now_ms) {
        Some(left) => {
            let minutes = left.div_ceil(60_000);
            format!(
                "24-hour window open: {}h {:02}m left for free-form replies",
                minutes / 60,
                minutes % 60
            )
        }
        None if window.opened_at_ms.is_none() => {
            "24-hour window closed (the customer never wrote): only an approved template \
             (Ctrl-P)"
                .into()
        }
        None => "24-hour window closed: only an approved template (Ctrl-P)".into(),
    }
}

/// Draw the whole UI.
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let [main, status, help_area] = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let [list_area, chat_area] =
        Layout::horizontal([Constraint::Percentage(30), Constraint::Fill(1)]).areas(main);

    let items: Vec<ListItem<'_>> = app
        .conversations
        .iter()
        .map(|c| {
            let mut text = String::new();
            if c.identity_changed {
                text.push_str("⚠ ");
            }
            match &c.verified_name {
                Some(certified) => {
                    text.push_str("✓ ");
                    text.push_str(&visible(certified));
                }
                None => text.push_str(&visible(&c.name)),
            }
            if c.unread > 0 {
                text.push_str(&format!(" ({})", c.unread));
            }
            if c.request {
                text.push_str(" [request]");
            }
            // A business's screen: the customer's window at a glance.
            if let Some(window) = &c.window {
                match window.time_left_ms(app.now_ms) {
                    Some(left) => {
                        let minutes = left.div_ceil(60_000);
                        text.push_str(&format!(" [{}h{:02}m]", minutes / 60, minutes % 60));
                    }
                    None => text.push_str(" [closed]"),
                }
            }
            if c.blocked {
                text.push_str(" [blocked]");
            }
            let style = if c.unread > 0 {
                Style::default().add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            ListItem::new(text).style(style)
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(app.selected));
    let list = List::new(items)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title("Conversations"),
        )
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(list, list_area, &mut state);

    let [history_area, input_area] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(3)]).areas(chat_area);
    let mut lines = Vec::new();
    // The line the picked message starts on, to scroll it into view.
    let mut picked_line = None;
    let title = match (app.review.as_ref(), app.current()) {
        (Some(review), _) => {
            let warn = Style::default().fg(Color::Red).add_modifier(Modifier::BOLD);
            lines.push(Line::from(Span::styled(
                format!("⚠ The identity of {} changed.", visible(&review.name)),
                warn,
            )));
            lines.push(Line::from(format!("old safety number: {}", review.old)));
            lines.push(Line::from(format!("new safety number: {}", review.new)));
            lines.push(Line::from(format!(
                "An honest relay never changes an identity. Compare the new number with {} in person or by a call.",
                visible(&review.name)
            )));
            lines.push(Line::from(Span::styled(
                format!(
                    "To accept, type {} below and press Enter; Esc cancels.",
                    visible(&review.name)
                ),
                warn,
            )));
            format!("Identity change: {}", visible(&review.name))
        }
        (None, Some(_)) if app.mode == Mode::PickTemplate => {
            if let Some(picker) = &app.picker {
                match &picker.values {
                    None => {
                        lines.push(Line::from("Choose an approved template:"));
                        for (i, t) in app.templates.iter().enumerate() {
                            let marker = if i == picker.selected { "> " } else { "  " };
                            lines.push(Line::from(format!(
                                "{marker}{} ({}, {})",
                                visible(&t.template.name),
                                t.template.category,
                                visible(&t.template.language)
                            )));
                        }
                    }
                    Some(values) => {
                        if let Some(t) = app.templates.get(picker.selected) {
                            lines.push(Line::from(format!(
                                "Template {}: {}",
                                visible(&t.template.name),
                                visible(&t.template.body)
                            )));
                            for (p, value) in t.template.placeholders.iter().zip(values) {
                                lines.push(Line::from(format!(
                                    "{} ({}): {}",
                                    p.name,
                                    p.kind.name(),
                                    visible(value)
                                )));
                            }
                        }
                    }
                }
            }
            "Send a template".to_string()
        }
        (None, Some(c)) if app.mode == Mode::ConfirmBlock => {
            let name = app
                .blocking
                .and_then(|(peer, _)| app.conversations.iter().find(|c| c.peer == peer))
                .unwrap_or(c);
            let name = visible(name.verified_name.as_ref().unwrap_or(&name.name));
            lines.push(Line::from(Span::styled(
                format!("Block {name}?"),
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            )));
            lines.push(Line::from(format!(
                "The relay will refuse {name}'s messages to you until you unblock (u in the list)."
            )));
            lines.push(Line::from("Press y to block, n or Esc to cancel."));
            format!("Block {name}")
        }
        (None, Some(c)) if app.mode == Mode::Pick => {
            if let Some(choices) = &c.choices {
                lines.push(Line::from(format!("Answer message {}:", choices.message)));
                for (i, (label, _)) in choices.options.iter().enumerate() {
                    let marker = if i == app.pick { "> " } else { "  " };
                    lines.push(Line::from(format!("{marker}{}", visible(label))));
                }
            }
            "Choose".to_string()
        }
        (None, Some(c)) => {
            if let Some(window) = &c.window {
                let style = if window.time_left_ms(app.now_ms).is_some() {
                    Style::default().fg(Color::Green)
                } else {
                    Style::default().fg(Color::Red)
                };
                lines.push(Line::from(Span::styled(
                    window_line(window, app.now_ms),
                    style,
                )));
            }
            if c.identity_changed {
                lines.push(Line::from(Span::styled(
                    format!(
                        "⚠ The identity of {} changed. Compare safety numbers, then press t (Ctrl-T here) to accept.",
                        visible(&c.name)
                    ),
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                )));
            }
            for (index, m) in c.messages.iter().enumerate() {
                let who = match (&c.verified_name, m.outgoing) {
                    (_, true) => "me".to_string(),
                    (Some(certified), false) => format!("✓ {}", visible(certified)),
                    (None, false) => visible(&c.name),
                };
                let mut spans = vec![
                    Span::styled(
                        format!("{} ", time_of_day(m.sent_at_ms)),
                        Style::default().fg(Color::DarkGray),
                    ),
                    Span::raw(format!("{who}: {}", visible(&m.body))),
                ];
                if m.outgoing {
                    let color = match m.status {
                        Status::Read => Color::Cyan,
                        Status::Failed => Color::Red,
                        _ => Color::DarkGray,
                    };
                    spans.push(Span::styled(
                        format!(" {}", ticks(m.status)),
                        Style::default().fg(color),
                    ));
                }
                let line = Line::from(spans);
                if app.picked == Some(index) {
                    picked_line = Some(lines.len());
                }
                lines.push(if app.picked == Some(index) {
                    line.style(Style::default().add_modifier(Modifier::REVERSED))
                } else {
                    line
                });
            }
            visible(&c.name)
        }
        (None, None) => {
            lines.push(Line::from(
                "No conversations yet: add a contact with `comptoir contacts add`.",
            ));
            String::from("Chat")
        }
    };
    // Scrolled by wrapped rows: the newest row shows unless the user
    // scrolled back (or picked an older message).
    let width = history_area.width.saturating_sub(2);
    let height = usize::from(history_area.height.saturating_sub(2));
    let rows = |lines: &[Line<'_>]| {
        Paragraph::new(lines.to_vec())
            .wrap(Wrap { trim: false })
            .line_count(width)
    };
    let total = rows(&lines);
    let max_scroll = total.saturating_sub(height);
    let mut top = max_scroll - app.scroll.min(max_scroll);
    if let Some(at) = picked_line {
        let (start, end) = (rows(&lines[..at]), rows(&lines[..=at]));
        top = top.min(start).max(end.saturating_sub(height));
    }
    app.drawn.set(Drawn {
        max_scroll,
        page: height.saturating_sub(1).max(1),
    });
    let title = if top < max_scroll {
        format!("{title} · scrolled back, End: newest")
    } else {
        title
    };
    let history = Paragraph::new(lines)
        .block(Block::default().borders(Borders::ALL).title(title))
        .wrap(Wrap { trim: false })
        .scroll((u16::try_from(top).unwrap_or(u16::MAX), 0));
    frame.render_widget(history, history_area);

    let input_style = if app.mode != Mode::List {
        Style::default().fg(Color::Yellow)
    } else {
        Style::default().fg(Color::DarkGray)
    };
    let (typed, input_title) = match &app.review {
        Some(review) => (review.typed.as_str(), "Type the contact's name to accept"),
        None => (app.input.as_str(), "Message"),
    };
    let input = Paragraph::new(format!("> {typed}"))
        .style(input_style)
        .block(Block::default().borders(Borders::ALL).title(input_title));
    frame.render_widget(input, input_area);
    let status_style = if app.status.starts_with('⚠') {
        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    frame.render_widget(
        Paragraph::new(visible(&app.status)).style(status_style),
        status,
    );
    frame.render_widget(
        Paragraph::new(help(app.mode)).style(Style::default().fg(Color::DarkGray)),
        help_area,
    );
    if app.mode == Mode::Status {
        crate::tui::status_view::draw(frame, app, chat_area);
    }
}
