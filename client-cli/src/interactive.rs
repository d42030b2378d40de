//! Interactive messages on the command line: how one is shown (its body,
//! then its buttons numbered from 1, or its list's rows by id: what
//! `comptoir reply` takes), how `comptoir business interactive` reads one
//! from its flags, and how `comptoir reply` reads a choice.

use comptoir_client::error::{ClientError, Result};
use comptoir_protocol::interactive::Choice;
use comptoir_protocol::proto::content::{
    Interactive, ListMessage, ListRow, ListSection, ReplyButtons, interactive,
};

use crate::format::visible;

/// `message` as lines for people: its body, then `[1] Yes` for each
/// button, or the list's label and `[ROW-ID] Title — description` for
/// each row under its section's title.
pub fn interactive_lines(message: &Interactive) -> Vec<String> {
    let mut lines: Vec<String> = message.body.split('\n').map(visible).collect();
    match &message.kind {
        Some(interactive::Kind::Buttons(buttons)) => {
            for (i, title) in buttons.titles.iter().enumerate() {
                lines.push(format!("[{}] {}", i + 1, visible(title)));
            }
        }
        Some(interactive::Kind::List(list)) => {
            lines.push(format!("{}:", visible(&list.button)));
            for section in &list.sections {
                if !section.title.is_empty() {
                    lines.push(format!("{}:", visible(&section.title)));
                }
                for row in &section.rows {
                    let mut line = format!("  [{}] {}", visible(&row.id), visible(&row.title));
                    if !row.description.is_empty() {
                        line.push_str(&format!(" — {}", visible(&row.description)));
                    }
                    lines.push(line);
                }
            }
        }
        None => {}
    }
    lines
}

/// What to type to answer `message`: `NUMBER` for buttons, `ROW-ID` for a
/// list.
pub fn answer_hint(message: &Interactive) -> &'static str {
    match message.kind {
        Some(interactive::Kind::List(_)) => "ROW-ID",
        _ => "NUMBER",
    }
}

/// The choice `arg` names in `message`: a row id in a list, a button's
/// number (from 1) otherwise.
pub fn parse_choice(message: &Interactive, arg: &str) -> Result<Choice> {
    if let Some(interactive::Kind::List(_)) = message.kind {
        return Ok(Choice::Row(arg.to_owned()));
    }
    button_number(arg).map(Choice::Button)
}

/// A button's number as shown (from 1), as its index (from 0).
pub fn button_number(arg: &str) -> Result<u32> {
    arg.parse::<u32>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "{} is not a button number (1, 2, … as `listen` and `history` show them)",
                visible(arg)
            ))
        })
}

/// The message `comptoir business interactive` sends: `buttons` when
/// given, else a list opened by `list_button` with `rows`, each
/// `[SECTION/]ID:TITLE[:DESCRIPTION]` (rows of one section grouped in the
/// order their section first appears). The limits are checked by the
/// library when sending.
pub fn from_flags(
    body: &str,
    buttons: &[String],
    list_button: Option<&str>,
    rows: &[String],
) -> Result<Interactive> {
    let kind = match (buttons.is_empty(), list_button, rows.is_empty()) {
        (false, None, true) => interactive::Kind::Buttons(ReplyButtons {
            titles: buttons.to_vec(),
        }),
        (true, Some(label), false) => {
            let mut sections: Vec<ListSection> = Vec::new();
            for spec in rows {
                let (section, row) = parse_row(spec)?;
                match sections.iter_mut().find(|s| s.title == section) {
                    Some(found) => found.rows.push(row),
                    None => sections.push(ListSection {
                        title: section,
                        rows: vec![row],
                    }),
                }
            }
            interactive::Kind::List(ListMessage {
                button: label.to_owned(),
                sections,
            })
        }
        _ => {
            return Err(ClientError::InvalidArgument(
                "give either --button (up to 3 times) or --list-button with --row (up to 10 \
                 times)"
                    .into(),
            ));
        }
    };
    Ok(Interactive {
        body: body.to_owned(),
        kind: Some(kind),
    })
}

fn parse_row(spec: &str) -> Result<(String, ListRow)> {
    let bad = || {
        ClientError::InvalidArgument(format!(
            "{} is not a row: write [SECTION/]ID:TITLE[:DESCRIPTION]",
            visible(spec)
        ))
    };
    let (head, rest) = spec.split_once(':').ok_or_else(bad)?;
    let (section, id) = match head.split_once('/') {
        Some((section, id)) => (section.to_owned(), id.to_owned()),
        None => (String::new(), head.to_owned()),
    };
    let (title, description) = match rest.split_once(':') {
        Some((title, description)) => (title.to_owned(), description.to_owned()),
        None => (rest.to_owned(), String::new()),
    };
    if id.is_empty() || title.is_empty() {
        return Err(bad());
    }
    Ok((
        section,
        ListRow {
            id,
            title,
            description,
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Reason: test code fails by panicking.
    use super::*;

    #[test]
    fn flags_make_a_list_in_sections_and_choices_parse() {
        let rows = [
            "Morning/am:Nine".to_string(),
            "Evening/pm:Evening slot:from 18h to 21h".to_string(),
            "Morning/late:Eleven".to_string(),
        ];
        let message = from_flags("Pick a slot", &[], Some("Slots"), &rows).unwrap();
        assert_eq!(
            interactive_lines(&message),
            [
                "Pick a slot",
                "Slots:",
                "Morning:",
                "  [am] Nine",
                "  [late] Eleven",
                "Evening:",
                "  [pm] Evening slot — from 18h to 21h"
            ]
        );
        assert_eq!(
            parse_choice(&message, "pm").unwrap(),
            Choice::Row("pm".into())
        );
        let buttons = from_flags("In?", &["Yes".into(), "No".into()], None, &[]).unwrap();
        assert_eq!(parse_choice(&buttons, "2").unwrap(), Choice::Button(1));
        assert!(parse_choice(&buttons, "0").is_err());
        assert!(parse_choice(&buttons, "yes").is_err());
        assert!(from_flags("x", &["Yes".into()], Some("Slots"), &rows).is_err());
        assert!(from_flags("x", &[], Some("Slots"), &["no-title".into()]).is_err());
    }
}
