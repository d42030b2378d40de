//! Interactive messages (docs/PROTOCOL.md, "Interactive messages"): a
//! business's free-form message with up to three reply buttons or a list
//! of up to ten rows, the customer's structured choice in it, and the
//! checks both sides make: the sender's library refuses a message over
//! the limits ([`validate`]), the customer's client checks it again on
//! receipt and refuses a pick that is not one of its choices ([`choose`]),
//! and the business checks that a reply names a choice of the message it
//! answers, with that choice's title ([`check_reply`]).
//!
//! The limits are the WhatsApp Business Platform's for interactive reply
//! buttons and list messages, so a business moving its flows here keeps
//! them. Lists travel in service replies only: approved templates carry
//! quick-reply buttons (their canonical bytes, and so their ids and
//! approvals, have no place for a list).

use std::collections::BTreeSet;

use crate::canonical::{char_len, has_forbidden_char};
use crate::proto::content::{
    Interactive, InteractiveReply, ListMessage, ReplyButtons, interactive, interactive_reply,
};

/// The most reply buttons a message carries: more do not fit a phone's
/// width as buttons (a list is the form for more choices).
pub const MAX_REPLY_BUTTONS: usize = 3;
/// The most characters of a reply button's title.
pub const MAX_BUTTON_TITLE_LEN: usize = 20;
/// The most rows of a list, over all its sections: a longer list is a
/// catalogue, not a choice.
pub const MAX_LIST_ROWS: usize = 10;
/// The most sections of a list (each holds at least one row).
pub const MAX_LIST_SECTIONS: usize = 10;
/// The most characters of the label of the button that opens a list.
pub const MAX_LIST_BUTTON_LEN: usize = 20;
/// The most characters of a section's title.
pub const MAX_SECTION_TITLE_LEN: usize = 24;
/// The most characters of a row's title.
pub const MAX_ROW_TITLE_LEN: usize = 24;
/// The most characters of a row's description.
pub const MAX_ROW_DESCRIPTION_LEN: usize = 72;
/// The most characters of a row's id (the business's own key for it).
pub const MAX_ROW_ID_LEN: usize = 200;
/// The most characters of the body of a message with reply buttons.
pub const MAX_BUTTONS_BODY_LEN: usize = 1024;
/// The most characters of the body of a list message.
pub const MAX_LIST_BODY_LEN: usize = 4096;

/// Why an interactive message breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InteractiveError {
    /// Neither buttons nor a list.
    #[error("an interactive message needs reply buttons or a list")]
    NoChoices,
    /// A required text is empty.
    #[error("the {field} is empty")]
    Empty {
        /// Which text.
        field: &'static str,
    },
    /// A text is over its limit (in characters).
    #[error("the {field} has {got} characters, more than {limit}")]
    TooLong {
        /// Which text.
        field: &'static str,
        /// The limit.
        limit: usize,
        /// Its length.
        got: usize,
    },
    /// A text holds a control or bidirectional control character (a
    /// newline is allowed in the body only).
    #[error("the {field} holds a control character")]
    ForbiddenCharacter {
        /// Which text.
        field: &'static str,
    },
    /// More reply buttons than [`MAX_REPLY_BUTTONS`].
    #[error("{got} reply buttons, more than {MAX_REPLY_BUTTONS}")]
    TooManyButtons {
        /// How many.
        got: usize,
    },
    /// More rows than [`MAX_LIST_ROWS`].
    #[error("{got} list rows, more than {MAX_LIST_ROWS}")]
    TooManyRows {
        /// How many.
        got: usize,
    },
    /// More sections than [`MAX_LIST_SECTIONS`].
    #[error("{got} list sections, more than {MAX_LIST_SECTIONS}")]
    TooManySections {
        /// How many.
        got: usize,
    },
    /// A section without rows.
    #[error("list section {index} has no rows")]
    EmptySection {
        /// The section's index (from 0).
        index: usize,
    },
    /// A list of several sections with an untitled one.
    #[error("list section {index} needs a title: the list has several sections")]
    UntitledSection {
        /// The section's index (from 0).
        index: usize,
    },
    /// Two buttons with one title: the reply could not tell them apart
    /// on screen.
    #[error("two reply buttons are titled {title:?}")]
    DuplicateButton {
        /// The title.
        title: String,
    },
    /// Two rows with one id.
    #[error("two list rows have the id {id:?}")]
    DuplicateRow {
        /// The id (cut to 80 characters).
        id: String,
    },
}

/// What the customer picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// A reply button, by index (from 0).
    Button(u32),
    /// A list row, by id.
    Row(String),
}

/// Why a pick or a reply is not one of the message's choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChoiceError {
    /// There is no button at that index (or the message has a list).
    #[error("the message has no reply button {index}")]
    NoSuchButton {
        /// The index given.
        index: u32,
    },
    /// No row has that id (or the message has buttons).
    #[error("the list has no row {id:?}")]
    NoSuchRow {
        /// The id given (cut to 80 characters).
        id: String,
    },
    /// A reply that names no choice.
    #[error("the reply names no choice")]
    NoChoice,
    /// The reply's title is not the chosen button's or row's.
    #[error("the reply's title is not the title of the choice it names")]
    TitleMismatch,
    /// The message answered breaks the rules itself.
    #[error("the message breaks the rules: {0}")]
    InvalidMessage(#[from] InteractiveError),
}

fn check_text(
    field: &'static str,
    text: &str,
    limit: usize,
    required: bool,
    newline_allowed: bool,
) -> Result<(), InteractiveError> {
    let got = char_len(text);
    if got == 0 && required {
        return Err(InteractiveError::Empty { field });
    }
    if got > limit {
        return Err(InteractiveError::TooLong { field, limit, got });
    }
    if has_forbidden_char(text, newline_allowed) {
        return Err(InteractiveError::ForbiddenCharacter { field });
    }
    Ok(())
}

fn validate_buttons(buttons: &ReplyButtons) -> Result<(), InteractiveError> {
    let got = buttons.titles.len();
    if got == 0 {
        return Err(InteractiveError::NoChoices);
    }
    if got > MAX_REPLY_BUTTONS {
        return Err(InteractiveError::TooManyButtons { got });
    }
    let mut seen = BTreeSet::new();
    for title in &buttons.titles {
        check_text("button title", title, MAX_BUTTON_TITLE_LEN, true, false)?;
        if !seen.insert(title.as_str()) {
            return Err(InteractiveError::DuplicateButton {
                title: title.clone(),
            });
        }
    }
    Ok(())
}

fn validate_list(list: &ListMessage) -> Result<(), InteractiveError> {
    check_text(
        "list button",
        &list.button,
        MAX_LIST_BUTTON_LEN,
        true,
        false,
    )?;
    let sections = list.sections.len();
    if sections == 0 {
        return Err(InteractiveError::NoChoices);
    }
    if sections > MAX_LIST_SECTIONS {
        return Err(InteractiveError::TooManySections { got: sections });
    }
    let rows: usize = list.sections.iter().map(|s| s.rows.len()).sum();
    if rows > MAX_LIST_ROWS {
        return Err(InteractiveError::TooManyRows { got: rows });
    }
    let mut ids = BTreeSet::new();
    for (index, section) in list.sections.iter().enumerate() {
        check_text(
            "section title",
            &section.title,
            MAX_SECTION_TITLE_LEN,
            sections > 1,
            false,
        )
        .map_err(|e| match e {
            InteractiveError::Empty { .. } => InteractiveError::UntitledSection { index },
            other => other,
        })?;
        if section.rows.is_empty() {
            return Err(InteractiveError::EmptySection { index });
        }
        for row in &section.rows {
            check_text("row id", &row.id, MAX_ROW_ID_LEN, true, false)?;
            check_text("row title", &row.title, MAX_ROW_TITLE_LEN, true, false)?;
            check_text(
                "row description",
                &row.description,
                MAX_ROW_DESCRIPTION_LEN,
                false,
                false,
            )?;
            if !ids.insert(row.id.as_str()) {
                return Err(InteractiveError::DuplicateRow {
                    id: row.id.chars().take(80).collect(),
                });
            }
        }
    }
    Ok(())
}

/// Check `message` against the limits: what the sender's library does
/// before sending, and the receiving client again on receipt.
pub fn validate(message: &Interactive) -> Result<(), InteractiveError> {
    match &message.kind {
        None => Err(InteractiveError::NoChoices),
        Some(interactive::Kind::Buttons(buttons)) => {
            check_text("body", &message.body, MAX_BUTTONS_BODY_LEN, true, true)?;
            validate_buttons(buttons)
        }
        Some(interactive::Kind::List(list)) => {
            check_text("body", &message.body, MAX_LIST_BODY_LEN, true, true)?;
            validate_list(list)
        }
    }
}

/// The title of `choice` in `message`.
pub fn choice_title<'a>(message: &'a Interactive, choice: &Choice) -> Result<&'a str, ChoiceError> {
    match (choice, &message.kind) {
        (Choice::Button(index), Some(interactive::Kind::Buttons(buttons))) => {
            usize::try_from(*index)
                .ok()
                .and_then(|i| buttons.titles.get(i))
                .map(String::as_str)
                .ok_or(ChoiceError::NoSuchButton { index: *index })
        }
        (Choice::Button(index), _) => Err(ChoiceError::NoSuchButton { index: *index }),
        (Choice::Row(id), Some(interactive::Kind::List(list))) => list
            .sections
            .iter()
            .flat_map(|s| &s.rows)
            .find(|row| row.id == *id)
            .map(|row| row.title.as_str())
            .ok_or_else(|| ChoiceError::NoSuchRow {
                id: id.chars().take(80).collect(),
            }),
        (Choice::Row(id), _) => Err(ChoiceError::NoSuchRow {
            id: id.chars().take(80).collect(),
        }),
    }
}

/// The customer's answer when it picks `choice` in the interactive message
/// `message_id` (a `Content.message_id`): the content body its client
/// sends back. A message that breaks the rules, or a choice it does not
/// offer, is refused.
pub fn choose(
    message: &Interactive,
    message_id: &[u8],
    choice: &Choice,
) -> Result<InteractiveReply, ChoiceError> {
    validate(message)?;
    let title = choice_title(message, choice)?.to_owned();
    Ok(InteractiveReply {
        message_id: message_id.to_vec(),
        choice: Some(match choice {
            Choice::Button(index) => interactive_reply::Choice::ButtonIndex(*index),
            Choice::Row(id) => interactive_reply::Choice::RowId(id.clone()),
        }),
        title,
    })
}

/// The business's check of a received [`InteractiveReply`] to `message`,
/// which it sent: the reply names one of its choices with that choice's
/// title. Returns the choice and its title. (Which message it answers,
/// `reply.message_id`, is for the caller to match against what it sent.)
pub fn check_reply<'a>(
    message: &'a Interactive,
    reply: &InteractiveReply,
) -> Result<(Choice, &'a str), ChoiceError> {
    let choice = match &reply.choice {
        Some(interactive_reply::Choice::ButtonIndex(index)) => Choice::Button(*index),
        Some(interactive_reply::Choice::RowId(id)) => Choice::Row(id.clone()),
        None => return Err(ChoiceError::NoChoice),
    };
    let title = choice_title(message, &choice)?;
    if reply.title != title {
        return Err(ChoiceError::TitleMismatch);
    }
    Ok((choice, title))
}

/// The text a history shows for `message`: its body, then each button as
/// `[title]`, or the list's button as `[label]` and each row as
/// `- title (id): description` under its section's title.
pub fn render_text(message: &Interactive) -> String {
    let mut text = message.body.clone();
    match &message.kind {
        Some(interactive::Kind::Buttons(buttons)) => {
            for title in &buttons.titles {
                text.push_str(&format!("\n[{title}]"));
            }
        }
        Some(interactive::Kind::List(list)) => {
            text.push_str(&format!("\n[{}]", list.button));
            for section in &list.sections {
                if !section.title.is_empty() {
                    text.push_str(&format!("\n{}:", section.title));
                }
                for row in &section.rows {
                    text.push_str(&format!("\n- {} ({})", row.title, row.id));
                    if !row.description.is_empty() {
                        text.push_str(&format!(": {}", row.description));
                    }
                }
            }
        }
        None => {}
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Reason: test code fails by panicking.
    use super::*;
    use crate::proto::content::{ListRow, ListSection};

    fn buttons(titles: &[&str]) -> Interactive {
        Interactive {
            body: "Keep your seat?".into(),
            kind: Some(interactive::Kind::Buttons(ReplyButtons {
                titles: titles.iter().map(|t| (*t).to_owned()).collect(),
            })),
        }
    }

    fn row(id: &str) -> ListRow {
        ListRow {
            id: id.into(),
            title: format!("Slot {id}"),
            description: String::new(),
        }
    }

    fn list(sections: Vec<(&str, Vec<ListRow>)>) -> Interactive {
        Interactive {
            body: "Pick a delivery slot".into(),
            kind: Some(interactive::Kind::List(ListMessage {
                button: "Slots".into(),
                sections: sections
                    .into_iter()
                    .map(|(title, rows)| ListSection {
                        title: title.into(),
                        rows,
                    })
                    .collect(),
            })),
        }
    }

    /// The encodings docs/PROTOCOL.md (10.4.1) shows, byte for byte.
    #[test]
    fn the_documented_bytes() {
        use prost::Message;
        let message = Interactive {
            body: "In?".into(),
            kind: Some(interactive::Kind::Buttons(ReplyButtons {
                titles: vec!["Yes".into(), "No".into()],
            })),
        };
        assert_eq!(
            hex::encode(message.encode_to_vec()),
            "0a03496e3f12090a035965730a024e6f"
        );
        let reply = choose(&message, &[0xab; 16], &Choice::Button(1)).unwrap();
        assert_eq!(
            hex::encode(reply.encode_to_vec()),
            "0a10abababababababababababababababab100122024e6f"
        );
    }

    #[test]
    fn limits_both_ways() {
        assert_eq!(validate(&buttons(&["Yes", "No", "Later"])), Ok(()));
        assert_eq!(
            validate(&buttons(&["1", "2", "3", "4"])),
            Err(InteractiveError::TooManyButtons { got: 4 })
        );
        assert_eq!(validate(&buttons(&[])), Err(InteractiveError::NoChoices));
        assert_eq!(
            validate(&buttons(&["Yes", "Yes"])),
            Err(InteractiveError::DuplicateButton {
                title: "Yes".into()
            })
        );
        assert!(matches!(
            validate(&buttons(&["a button title far too long"])),
            Err(InteractiveError::TooLong { limit: 20, .. })
        ));
        assert!(matches!(
            validate(&buttons(&["Yes\u{202E}"])),
            Err(InteractiveError::ForbiddenCharacter { .. })
        ));
        let ten: Vec<ListRow> = (0..10).map(|i| row(&i.to_string())).collect();
        assert_eq!(validate(&list(vec![("", ten.clone())])), Ok(()));
        let mut eleven = ten.clone();
        eleven.push(row("10"));
        assert_eq!(
            validate(&list(vec![("", eleven)])),
            Err(InteractiveError::TooManyRows { got: 11 })
        );
        assert_eq!(
            validate(&list(vec![
                ("Morning", vec![row("a")]),
                ("", vec![row("b")])
            ])),
            Err(InteractiveError::UntitledSection { index: 1 })
        );
        assert_eq!(
            validate(&list(vec![
                ("Morning", vec![row("a")]),
                ("Evening", vec![row("a")])
            ])),
            Err(InteractiveError::DuplicateRow { id: "a".into() })
        );
        assert_eq!(
            validate(&list(vec![("Morning", vec![])])),
            Err(InteractiveError::EmptySection { index: 0 })
        );
        assert_eq!(
            validate(&Interactive {
                body: "no choices".into(),
                kind: None
            }),
            Err(InteractiveError::NoChoices)
        );
    }

    #[test]
    fn a_pick_is_one_of_the_choices_and_checks_out() {
        let message = buttons(&["Yes", "No"]);
        let reply = choose(&message, &[7; 16], &Choice::Button(1)).unwrap();
        assert_eq!(reply.title, "No");
        assert_eq!(check_reply(&message, &reply), Ok((Choice::Button(1), "No")));
        assert_eq!(
            choose(&message, &[7; 16], &Choice::Button(2)),
            Err(ChoiceError::NoSuchButton { index: 2 })
        );
        assert_eq!(
            choose(&message, &[7; 16], &Choice::Row("0".into())),
            Err(ChoiceError::NoSuchRow { id: "0".into() })
        );
        let mut forged = reply.clone();
        forged.title = "Yes".into();
        assert_eq!(
            check_reply(&message, &forged),
            Err(ChoiceError::TitleMismatch)
        );
        forged.choice = None;
        assert_eq!(check_reply(&message, &forged), Err(ChoiceError::NoChoice));

        let slots = list(vec![
            ("Morning", vec![row("am")]),
            ("Evening", vec![row("pm")]),
        ]);
        let reply = choose(&slots, &[7; 16], &Choice::Row("pm".into())).unwrap();
        assert_eq!(
            check_reply(&slots, &reply),
            Ok((Choice::Row("pm".into()), "Slot pm"))
        );
        assert_eq!(
            choose(&slots, &[7; 16], &Choice::Row("noon".into())),
            Err(ChoiceError::NoSuchRow { id: "noon".into() })
        );
        assert_eq!(
            render_text(&slots),
            "Pick a delivery slot\n[Slots]\nMorning:\n- Slot am (am)\nEvening:\n- Slot pm (pm)"
        );
        assert_eq!(render_text(&message), "Keep your seat?\n[Yes]\n[No]");
    }
}
