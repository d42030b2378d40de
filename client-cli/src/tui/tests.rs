//! The UI rendered on ratatui's test backend, and driven with key events.

use comptoir_protocol::AccountId;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::app::{Action, App, Choices, Conversation, Mode, Pick, PickableTemplate, event_status};
use super::view;
use comptoir_client::Event;
use comptoir_client::messages::{MessageId, Status, StoredMessage};
use comptoir_client::rule_checks::Window;
use comptoir_protocol::interactive::Choice;
use comptoir_protocol::template::{Placeholder, PlaceholderKind, Template, TemplateCategory};
use comptoir_protocol::{Label, LabelError};

fn message(peer: AccountId, outgoing: bool, body: &str, status: Status, at: u64) -> StoredMessage {
    StoredMessage {
        id: MessageId([at as u8; 16]),
        peer,
        outgoing,
        body: body.to_string(),
        sent_at_ms: at * 1000 + 12 * 3_600_000,
        stored_at_ms: at,
        status,
        sequence: at,
    }
}

fn sample() -> App {
    let alice = AccountId::from_bytes(&[1; 16]).unwrap_or_else(|_| unreachable!());
    let bob = AccountId::from_bytes(&[2; 16]).unwrap_or_else(|_| unreachable!());
    App::new(vec![
        Conversation {
            peer: alice,
            name: "alice".into(),
            unread: 2,
            identity_changed: false,
            blocked: false,
            request: false,
            verified_name: None,
            window: None,
            choices: None,
            messages: vec![
                message(alice, true, "hello alice", Status::Read, 1),
                message(alice, true, "still there?", Status::Delivered, 2),
                message(alice, false, "hi!", Status::Delivered, 3),
            ],
        },
        Conversation {
            peer: bob,
            name: "bob".into(),
            unread: 0,
            identity_changed: true,
            blocked: false,
            request: false,
            verified_name: None,
            window: None,
            choices: None,
            messages: vec![message(bob, true, "pending one", Status::Pending, 4)],
        },
    ])
}

fn render(app: &App) -> String {
    let mut terminal = match Terminal::new(TestBackend::new(100, 16)) {
        Ok(terminal) => terminal,
        Err(e) => panic!("test backend: {e}"),
    };
    if let Err(e) = terminal.draw(|frame| view::draw(frame, app)) {
        panic!("draw: {e}");
    }
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

fn press(app: &mut App, code: KeyCode) -> Action {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(app: &mut App, c: char) -> Action {
    app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

#[test]
fn renders_unread_counts_ticks_timestamps_and_help() {
    let screen = render(&sample());
    assert!(screen.contains("alice (2)"), "{screen}");
    assert!(screen.contains("⚠ bob"), "{screen}");
    assert!(
        screen.contains("12:00:01 me: hello alice ✓✓ read"),
        "{screen}"
    );
    assert!(screen.contains("me: still there? ✓✓"), "{screen}");
    assert!(screen.contains("12:00:03 alice: hi!"), "{screen}");
    assert!(screen.contains("Enter open · b block"), "{screen}");
}

#[test]
fn renders_the_identity_warning_and_pending_tick() {
    let mut app = sample();
    press(&mut app, KeyCode::Down);
    let screen = render(&app);
    assert!(screen.contains("The identity of bob changed"), "{screen}");
    assert!(screen.contains("pending one …"), "{screen}");
}

#[test]
fn keys_select_open_type_send_and_go_back() {
    let mut app = sample();
    let alice = app.conversations[0].peer;
    assert_eq!(press(&mut app, KeyCode::Down), Action::None);
    assert_eq!(app.selected, 1);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.selected, 1, "stays on the last one");
    press(&mut app, KeyCode::Up);
    assert_eq!(press(&mut app, KeyCode::Enter), Action::MarkRead(alice));
    assert_eq!(app.mode, Mode::Chat);
    for c in "hi b".chars() {
        assert_eq!(press(&mut app, KeyCode::Char(c)), Action::None);
    }
    press(&mut app, KeyCode::Backspace);
    assert!(render(&app).contains("> hi "));
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        Action::Send {
            peer: alice,
            text: "hi ".into()
        }
    );
    assert!(app.input.is_empty());
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        Action::None,
        "nothing to send"
    );
    assert!(render(&app).contains("Enter send · Esc back"));
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.mode, Mode::List);
    assert_eq!(ctrl(&mut app, 'c'), Action::Quit);
}

#[test]
fn a_picked_received_message_is_reported_with_r() {
    let mut app = sample();
    let alice = app.conversations[0].peer;
    press(&mut app, KeyCode::Enter);
    // Nothing picked: r is typed.
    assert_eq!(press(&mut app, KeyCode::Char('r')), Action::None);
    assert_eq!(app.input, "r");
    press(&mut app, KeyCode::Backspace);
    // ↑ picks the newest message (alice's "hi!"), shown highlighted.
    assert_eq!(press(&mut app, KeyCode::Up), Action::None);
    assert_eq!(app.picked, Some(2));
    assert_eq!(
        press(&mut app, KeyCode::Char('r')),
        Action::Report {
            peer: alice,
            id: MessageId([3; 16])
        }
    );
    // One of mine cannot be reported.
    press(&mut app, KeyCode::Up);
    assert_eq!(press(&mut app, KeyCode::Char('r')), Action::None);
    assert!(app.status.contains("only a message you received"));
    // ↓ past the newest, or Esc, goes back to typing.
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.picked, None);
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Esc);
    assert_eq!((app.picked, app.mode), (None, Mode::Chat));
    assert!(render(&app).contains("r report"));
}

#[test]
fn block_is_confirmed_with_y_and_a_changed_identity_holds_sending() {
    let mut app = sample();
    let (alice, bob) = (app.conversations[0].peer, app.conversations[1].peer);
    press(&mut app, KeyCode::Char('b'));
    assert_eq!(press(&mut app, KeyCode::Char('y')), Action::Block(alice));
    assert_eq!(press(&mut app, KeyCode::Char('u')), Action::Unblock(alice));
    assert_eq!(
        press(&mut app, KeyCode::Char('t')),
        Action::None,
        "alice did not change"
    );
    app.set_blocked(alice, true);
    assert!(render(&app).contains("alice (2) [blocked]"));

    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    for c in "secret".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert_eq!(app.input, "secret", "kept for after the check");
    assert!(app.status.contains("identity changed"));
    ctrl(&mut app, 'b');
    assert_eq!(press(&mut app, KeyCode::Char('y')), Action::Block(bob));
    assert_eq!(ctrl(&mut app, 't'), Action::ReviewIdentity(bob));
    assert_eq!(
        press(&mut app, KeyCode::Char('q')),
        Action::None,
        "typed, not quit"
    );
    assert_eq!(app.input, "secretq");
}

#[test]
fn new_conversations_keep_the_selection() {
    let mut app = sample();
    press(&mut app, KeyCode::Down);
    let bob = app.conversations[1].peer;
    let mut reordered = sample().conversations;
    reordered.reverse();
    app.set_conversations(reordered);
    assert_eq!(app.current().map(|c| c.peer), Some(bob));
}

#[test]
fn trusting_a_new_identity_shows_both_numbers_and_needs_the_name_typed() {
    let mut app = sample();
    let bob = app.conversations[1].peer;
    press(&mut app, KeyCode::Down);
    // One key no longer accepts: it asks the client for the numbers.
    assert_eq!(
        press(&mut app, KeyCode::Char('t')),
        Action::ReviewIdentity(bob)
    );
    assert_eq!(app.mode, Mode::List);
    let (old, new) = (
        "11111 22222 33333".to_string(),
        "44444 55555 66666".to_string(),
    );
    app.begin_review(bob, old, new);
    assert_eq!(app.mode, Mode::ConfirmIdentity);
    let screen = render(&app);
    assert!(
        screen.contains("old safety number: 11111 22222 33333"),
        "{screen}"
    );
    assert!(
        screen.contains("new safety number: 44444 55555 66666"),
        "{screen}"
    );
    assert!(screen.contains("type bob below"), "{screen}");
    assert!(screen.contains("Enter accept · Esc cancel"), "{screen}");

    // Enter alone, or the wrong name, accepts nothing.
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert!(app.status.contains("type bob exactly"), "{}", app.status);
    for c in "bo".chars() {
        assert_eq!(press(&mut app, KeyCode::Char(c)), Action::None);
    }
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert_eq!(app.mode, Mode::ConfirmIdentity);
    // Keys that act elsewhere only type here.
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::None);
    press(&mut app, KeyCode::Backspace);
    assert_eq!(press(&mut app, KeyCode::Char('b')), Action::None);
    assert!(render(&app).contains("> bob"));
    assert_eq!(press(&mut app, KeyCode::Enter), Action::AcceptIdentity(bob));
    assert_eq!(app.mode, Mode::List);
    assert!(app.review.is_none());

    // Esc leaves the review with nothing accepted.
    app.begin_review(bob, "1".into(), "2".into());
    for c in "bob".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    assert_eq!(press(&mut app, KeyCode::Esc), Action::None);
    assert_eq!(app.mode, Mode::List);
    assert!(app.status.contains("not accepted"));
}

#[test]
fn a_refused_message_is_a_warning_line_never_a_message() {
    let mut app = sample();
    let alice = app.conversations[0].peer;
    let before = app.conversations[0].messages.len();
    let refused = Event::Refused {
        from: alice,
        id: MessageId([9; 16]),
        reason: LabelError::LabelMismatch {
            label: Label::Category,
        },
    };
    let name = |_: &AccountId| "alice".to_string();
    let status = event_status(&refused, &name).expect("a refusal is shown");
    assert!(status.starts_with('⚠'), "{status}");
    assert!(status.contains("refused a message from alice"), "{status}");
    assert!(status.contains("label mismatch"), "{status}");
    app.status = status;
    let screen = render(&app);
    assert!(
        screen.contains("⚠ refused a message from alice"),
        "{screen}"
    );
    assert_eq!(app.conversations[0].messages.len(), before);
    assert_eq!(
        screen.matches("label mismatch").count(),
        1,
        "on the status line only, not in the chat: {screen}"
    );
}

#[test]
fn escape_sequences_and_bidi_overrides_are_drawn_visibly_never_raw() {
    let mut app = sample();
    let alice = app.conversations[0].peer;
    app.conversations[0].messages.push(message(
        alice,
        false,
        "\u{1b}[2K\u{1b}[1Gwire 500 EUR \u{202e}gnp.exe",
        Status::Delivered,
        5,
    ));
    app.status = "⚠ relay says \u{1b}[31mred".into();
    let screen = render(&app);
    assert!(
        !screen.contains(['\u{1b}', '\u{202e}']),
        "a raw control reached the terminal: {screen:?}"
    );
    assert!(
        screen.contains("alice: \\u{1b}[2K\\u{1b}[1Gwire 500 EUR"),
        "{screen}"
    );
    assert!(screen.contains("relay says \\u{1b}[31mred"), "{screen}");
}

/// Text longer than a message may be is refused on Enter with the same
/// words as `send` and `chat`, and the draft stays to be shortened
/// (issue 18 item 5).
#[test]
fn too_long_a_draft_is_refused_and_kept() {
    let mut app = sample();
    press(&mut app, KeyCode::Enter);
    let long = "x".repeat(comptoir_client::client::MAX_TEXT_LEN + 1);
    for c in long.chars() {
        press(&mut app, KeyCode::Char(c));
    }
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None, "not sent");
    assert_eq!(app.input, long, "the draft stays");
    assert!(
        app.status
            .starts_with("not sent: the text is 8193 bytes and a message holds at most 8192"),
        "{}",
        app.status
    );
    assert!(render(&app).contains("not sent: the text is 8193 bytes"));
}

#[test]
fn a_verified_business_shows_its_mark_and_a_request_is_marked() {
    let mut app = sample();
    app.conversations[0].verified_name = Some("Acme Air".into());
    app.conversations[1].request = true;
    let screen = render(&app);
    assert!(screen.contains("✓ Acme Air (2)"), "{screen}");
    assert!(!screen.contains("alice (2)"), "{screen}");
    assert!(screen.contains("⚠ bob [request]"), "{screen}");
    // Not verified: the handle, without a mark.
    app.conversations[0].verified_name = None;
    let screen = render(&app);
    assert!(screen.contains("alice (2)"), "{screen}");
    assert!(!screen.contains("Acme Air"), "{screen}");
}

const HOUR: u64 = 3_600_000;

fn boarding_pass(business: AccountId) -> Template {
    Template {
        business,
        name: "boarding_pass".into(),
        language: "en_GB".into(),
        category: TemplateCategory::Utility,
        header: None,
        body: "Flight {{flight}} boards at gate {{gate}}.".into(),
        footer: None,
        placeholders: vec![
            Placeholder {
                name: "flight".into(),
                kind: PlaceholderKind::Text,
            },
            Placeholder {
                name: "gate".into(),
                kind: PlaceholderKind::Number,
            },
        ],
        buttons: Vec::new(),
    }
}

/// A business's screen: the window and time left per conversation; a
/// free-form reply refused while it is closed (the draft kept); the
/// template picker chooses an approved template and fills its
/// placeholders, then sends (issue 13 item 10).
#[test]
fn a_business_sees_the_window_and_sends_a_template_when_it_is_closed() {
    let mut app = sample();
    let alice = app.conversations[0].peer;
    let now = 1_800_000_000_000;
    app.now_ms = now;
    app.conversations[0].window = Some(Window {
        opened_at_ms: Some(now - 20 * HOUR - 30 * 60_000),
    });
    app.conversations[1].window = Some(Window { opened_at_ms: None });
    let shop = AccountId::from_bytes(&[9; 16]).unwrap_or_else(|_| unreachable!());
    let template = boarding_pass(shop);
    let id = template.template_id().unwrap_or_else(|_| unreachable!());
    app.templates = vec![PickableTemplate { id, template }];

    press(&mut app, KeyCode::Enter);
    let screen = render(&app);
    assert!(
        screen.contains("24-hour window open: 3h 30m left"),
        "{screen}"
    );
    assert!(screen.contains("alice (2) [3h30m]"), "{screen}");
    assert!(screen.contains("⚠ bob [closed]"), "{screen}");
    // Open: free-form text goes.
    press(&mut app, KeyCode::Char('o'));
    press(&mut app, KeyCode::Char('k'));
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        Action::Send {
            peer: alice,
            text: "ok".into()
        }
    );
    // Four hours later it is closed: refused here, the draft stays.
    app.now_ms = now + 4 * HOUR;
    let screen = render(&app);
    assert!(
        screen.contains("24-hour window closed: only an approved template"),
        "{screen}"
    );
    assert!(screen.contains("alice (2) [closed]"), "{screen}");
    press(&mut app, KeyCode::Char('h'));
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert_eq!(app.input, "h");
    assert!(app.status.contains("window is closed"), "{}", app.status);

    // The picker: choose the template, fill both placeholders, send.
    assert_eq!(ctrl(&mut app, 'p'), Action::None);
    assert_eq!(app.mode, Mode::PickTemplate);
    assert!(render(&app).contains("> boarding_pass (utility, en_GB)"));
    press(&mut app, KeyCode::Enter);
    for c in "AC 123".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    press(&mut app, KeyCode::Char('9'));
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Char('1'));
    press(&mut app, KeyCode::Char('2'));
    let screen = render(&app);
    assert!(screen.contains("flight (text): AC 123"), "{screen}");
    assert!(screen.contains("gate (number): 12"), "{screen}");
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        Action::SendTemplate {
            peer: alice,
            id,
            params: vec!["flight=AC 123".into(), "gate=12".into()],
        }
    );
    assert_eq!(app.mode, Mode::Chat);
    // Esc leaves the picker without sending.
    ctrl(&mut app, 'p');
    assert_eq!(press(&mut app, KeyCode::Esc), Action::None);
    assert_eq!((app.mode, app.picker.clone()), (Mode::Chat, None));

    // A customer who never wrote.
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Down);
    assert!(render(&app).contains("closed (the customer never wrote)"));
    // A customer's screen has no window line and no picker.
    app.conversations[1].window = None;
    press(&mut app, KeyCode::Enter);
    assert!(!render(&app).contains("24-hour window"));
    assert_eq!(ctrl(&mut app, 'p'), Action::None);
    assert_eq!(app.mode, Mode::Chat);
}

/// A customer answers the last message that offers choices: Ctrl-R lists
/// them, Enter sends the highlighted one (issue 13 item 9).
#[test]
fn a_customer_picks_a_button_or_row() {
    let mut app = sample();
    let alice = app.conversations[0].peer;
    let message_id = MessageId([3; 16]);
    assert_eq!(press(&mut app, KeyCode::Enter), Action::MarkRead(alice));
    // Nothing to choose from: Ctrl-R does nothing.
    assert_eq!(ctrl(&mut app, 'r'), Action::None);
    assert_eq!(app.mode, Mode::Chat);
    app.conversations[0].choices = Some(Choices {
        message: message_id,
        options: vec![
            (
                "[am] Morning".into(),
                Pick::Interactive(Choice::Row("am".into())),
            ),
            (
                "[pm] Evening".into(),
                Pick::Interactive(Choice::Row("pm".into())),
            ),
        ],
    });
    ctrl(&mut app, 'r');
    assert_eq!(app.mode, Mode::Pick);
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    let screen = render(&app);
    assert!(screen.contains("> [pm] Evening"), "{screen}");
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        Action::Choose {
            peer: alice,
            message: message_id,
            pick: Pick::Interactive(Choice::Row("pm".into())),
        }
    );
    assert_eq!(app.mode, Mode::Chat);
}

/// Alice's conversation made of `bodies`, one message a second.
fn conversation_of(bodies: &[String]) -> App {
    let alice = AccountId::from_bytes(&[1; 16]).unwrap_or_else(|_| unreachable!());
    let messages = bodies
        .iter()
        .zip(1u64..)
        .map(|(body, at)| message(alice, at % 2 == 0, body, Status::Delivered, at))
        .collect();
    let mut app = App::new(vec![Conversation {
        peer: alice,
        name: "alice".into(),
        unread: 0,
        identity_changed: false,
        blocked: false,
        request: false,
        verified_name: None,
        window: None,
        choices: None,
        messages,
    }]);
    press(&mut app, KeyCode::Enter);
    app
}

/// Issue 18 item 9: the chat scrolls by wrapped rows (PgUp/PgDn/Home/End),
/// and long messages that wrap never push the newest one out of reach.
#[test]
fn a_long_conversation_scrolls_by_wrapped_rows_and_the_newest_is_always_reachable() {
    let mut bodies: Vec<String> = (0..20).map(|i| format!("message number {i}")).collect();
    // Three long messages last: each wraps over several rows.
    for i in 0..3 {
        bodies.push(format!("long {i} ") + &"words that wrap ".repeat(20));
    }
    bodies.push("the newest one".into());
    let mut app = conversation_of(&bodies);
    let screen = render(&app);
    assert!(screen.contains("the newest one"), "{screen}");
    assert!(!screen.contains("message number 19"), "{screen}");

    // PgUp goes back by a screen of rows; the title says how to return.
    assert_eq!(press(&mut app, KeyCode::PageUp), Action::None);
    let screen = render(&app);
    assert!(!screen.contains("the newest one"), "{screen}");
    assert!(screen.contains("End: newest"), "{screen}");
    // Home shows the oldest, PgDn moves down from there.
    press(&mut app, KeyCode::Home);
    let screen = render(&app);
    assert!(screen.contains("message number 0 "), "{screen}");
    press(&mut app, KeyCode::PageDown);
    let screen = render(&app);
    assert!(!screen.contains("message number 0 "), "{screen}");
    assert!(screen.contains("message number 9"), "{screen}");
    // End (or PgDn down to the bottom) follows the newest again.
    press(&mut app, KeyCode::End);
    let screen = render(&app);
    assert!(screen.contains("the newest one"), "{screen}");
    assert!(!screen.contains("End: newest"), "{screen}");
    press(&mut app, KeyCode::Home);
    for _ in 0..20 {
        press(&mut app, KeyCode::PageDown);
    }
    assert!(render(&app).contains("the newest one"));
    // Typing still works while scrolled back.
    press(&mut app, KeyCode::PageUp);
    press(&mut app, KeyCode::Char('x'));
    assert_eq!(app.input, "x");
}

/// Issue 18 item 9: a message picked with ↑ is scrolled into view.
#[test]
fn a_picked_message_is_scrolled_into_view() {
    let bodies: Vec<String> = (0..40).map(|i| format!("message number {i}")).collect();
    let mut app = conversation_of(&bodies);
    for _ in 0..30 {
        press(&mut app, KeyCode::Up);
    }
    assert_eq!(app.picked, Some(10));
    let screen = render(&app);
    assert!(screen.contains("message number 10"), "{screen}");
    assert!(!screen.contains("message number 39"), "{screen}");
}

/// Issue 18 item 9: blocking asks first, naming who; only y blocks.
#[test]
fn blocking_asks_first_and_names_who() {
    let mut app = sample();
    let alice = app.conversations[0].peer;
    assert_eq!(press(&mut app, KeyCode::Char('b')), Action::None);
    let screen = render(&app);
    assert!(screen.contains("Block alice?"), "{screen}");
    assert!(screen.contains("y block · n cancel"), "{screen}");
    assert_eq!(press(&mut app, KeyCode::Char('n')), Action::None);
    assert_eq!(app.mode, Mode::List);
    assert!(!render(&app).contains("Block alice?"));
    press(&mut app, KeyCode::Char('b'));
    assert_eq!(press(&mut app, KeyCode::Char('y')), Action::Block(alice));
    assert_eq!(app.mode, Mode::List);
    // From the chat, Ctrl-B asks too, and Esc cancels back to the chat.
    press(&mut app, KeyCode::Enter);
    assert_eq!(ctrl(&mut app, 'b'), Action::None);
    assert!(render(&app).contains("Block alice?"));
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.mode, Mode::Chat);
    ctrl(&mut app, 'b');
    assert_eq!(press(&mut app, KeyCode::Char('y')), Action::Block(alice));
    assert_eq!(app.mode, Mode::Chat);
}

/// Issue 18 item 9: messages show in the order they were written, not
/// the order this device stored them (a message that arrived late, a copy
/// from another device).
#[test]
fn messages_are_ordered_by_time() {
    let alice = AccountId::from_bytes(&[1; 16]).unwrap_or_else(|_| unreachable!());
    let mut late = message(
        alice,
        false,
        "written first, stored last",
        Status::Delivered,
        9,
    );
    late.sent_at_ms = 1_000 + 12 * 3_600_000;
    let app = App::new(vec![Conversation {
        peer: alice,
        name: "alice".into(),
        unread: 0,
        identity_changed: false,
        blocked: false,
        request: false,
        verified_name: None,
        window: None,
        choices: None,
        messages: vec![
            message(alice, true, "written second", Status::Read, 2),
            message(alice, true, "written third", Status::Read, 3),
            late,
        ],
    }]);
    let screen = render(&app);
    let at = |text: &str| {
        screen
            .find(text)
            .unwrap_or_else(|| panic!("{text}: {screen}"))
    };
    assert!(at("written first") < at("written second"), "{screen}");
    assert!(at("written second") < at("written third"), "{screen}");
}

fn opened_business(verified_name: Option<&str>) -> Conversation {
    Conversation {
        peer: AccountId::from_bytes(&[9; 16]).unwrap_or_else(|_| unreachable!()),
        name: "acme-air".into(),
        unread: 0,
        identity_changed: false,
        blocked: false,
        request: false,
        verified_name: verified_name.map(str::to_owned),
        window: None,
        choices: None,
        messages: Vec::new(),
    }
}

#[test]
fn a_chat_link_opens_its_business_with_the_composer_prefilled() {
    // Unverified: shown by the link's handle, never a self-chosen name.
    let mut app = sample();
    let acme = opened_business(None);
    let peer = acme.peer;
    app.open_chat(acme, Some("Where is order 42?".into()), "chat link".into());
    assert_eq!(app.mode, Mode::Chat);
    let screen = render(&app);
    assert!(screen.contains("acme-air"), "{screen}");
    assert!(screen.contains("> Where is order 42?"), "{screen}");
    assert!(!screen.contains('✓'), "{screen}");
    // It stays in the list across reloads until it has messages.
    let others = app.conversations[..2].to_vec();
    app.set_conversations(others);
    assert_eq!(app.current().map(|c| c.peer), Some(peer));
    // Enter sends the prefilled text to the business.
    assert_eq!(
        app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
        Action::Send {
            peer,
            text: "Where is order 42?".into()
        }
    );

    // Verified: its certified name with the mark.
    let mut app = sample();
    app.open_chat(opened_business(Some("Acme Air")), None, String::new());
    let screen = render(&app);
    assert!(screen.contains("✓ Acme Air"), "{screen}");
    assert!(app.input.is_empty());
}

/// The TUI through a daemon: a conversation as the method `conversations`
/// gives it renders as one loaded from the store; a malformed one is left
/// out (issue 18 item 6).
#[test]
fn a_conversation_from_the_daemon_renders_as_a_local_one() {
    let alice = "ab".repeat(16);
    let mut value = serde_json::json!({
        "peer": alice,
        "name": "alice",
        "unread": 1,
        "identity_changed": false,
        "blocked": false,
        "request": false,
        "verified_name": null,
        "messages": [
            {"id": "01".repeat(16), "outgoing": true, "text": "hello alice",
             "time_ms": 43_201_000, "stored_ms": 43_201_000, "status": "read", "sequence": 1},
            {"id": "02".repeat(16), "outgoing": false, "text": "hi!",
             "time_ms": 43_203_000, "stored_ms": 43_203_500, "status": "delivered", "sequence": 2},
        ],
    });
    let Some(conversation) = super::remote::conversation(&value) else {
        panic!("a well-formed conversation is read: {value}");
    };
    assert_eq!(conversation.peer.to_string(), alice);
    assert_eq!(conversation.messages[1].status, Status::Delivered);
    let screen = render(&App::new(vec![conversation]));
    assert!(screen.contains("alice (1)"), "{screen}");
    assert!(
        screen.contains("12:00:01 me: hello alice ✓✓ read"),
        "{screen}"
    );
    assert!(screen.contains("12:00:03 alice: hi!"), "{screen}");

    value["messages"][0]["status"] = "teleported".into();
    assert!(super::remote::conversation(&value).is_none());
    value["messages"][0]["status"] = "read".into();
    value["peer"] = "not an id".into();
    assert!(super::remote::conversation(&value).is_none());
}

#[test]
fn s_on_a_picked_message_saves_its_file_and_a_hostile_file_name_is_drawn_visibly() {
    let alice = AccountId::from_bytes(&[1; 16]).unwrap_or_else(|_| unreachable!());
    let mut app = App::new(vec![Conversation {
        peer: alice,
        name: "alice".into(),
        unread: 0,
        identity_changed: false,
        blocked: false,
        request: false,
        verified_name: None,
        window: None,
        choices: None,
        messages: vec![
            message(
                alice,
                false,
                "[attachment: ../../\u{1b}[31mpass\u{202e}fdp.exe (application/pdf, 12 bytes)]",
                Status::Delivered,
                1,
            ),
            message(alice, true, "thanks", Status::Read, 2),
        ],
    }]);
    press(&mut app, KeyCode::Enter);
    // Nothing picked: s is typed.
    assert_eq!(press(&mut app, KeyCode::Char('s')), Action::None);
    assert_eq!(app.input, "s");
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Up);
    assert_eq!(app.picked, Some(0));
    assert_eq!(
        press(&mut app, KeyCode::Char('s')),
        Action::SaveAttachment {
            peer: alice,
            id: MessageId([1; 16])
        }
    );
    let screen = render(&app);
    assert!(
        screen.contains("../../\\u{1b}[31mpass\\u{202e}fdp.exe"),
        "{screen}"
    );
    assert!(!screen.contains('\u{1b}') && !screen.contains('\u{202e}'));
    assert!(screen.contains("s save its file"), "{screen}");
}
