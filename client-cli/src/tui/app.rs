//! The terminal UI's state and key handling, free of I/O: a key press
//! changes the state and may return an [`Action`] for the client to run.

use comptoir_protocol::AccountId;
use comptoir_protocol::interactive::Choice;
use comptoir_protocol::template::{Template, TemplateId};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use comptoir_client::Event;
use comptoir_client::messages::{MessageId, StoredMessage};
use comptoir_client::rule_checks::Window;

/// One conversation in the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// The other account.
    pub peer: AccountId,
    /// Its contact name, or its id.
    pub name: String,
    /// Incoming messages not read yet.
    pub unread: usize,
    /// Whether its identity changed and waits for acceptance.
    pub identity_changed: bool,
    /// Whether this session blocked it.
    pub blocked: bool,
    /// Whether its messages wait as a message request (not marked read
    /// until the user accepts it with `comptoir requests accept`).
    pub request: bool,
    /// The certified name of a business the operator verified (shown
    /// with ✓ instead of `name`); `None` for anyone else.
    pub verified_name: Option<String>,
    /// The history, oldest first.
    pub messages: Vec<StoredMessage>,
    /// For a business account: the 24-hour window this customer gave it
    /// (`None` on a customer's screen).
    pub window: Option<Window>,
    /// The choices of the last message received that offers some (a
    /// template's quick replies, an interactive message's buttons or rows).
    pub choices: Option<Choices>,
}

/// What the customer may pick in a message it received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choices {
    /// The message.
    pub message: MessageId,
    /// Each choice: its label and what picking it sends.
    pub options: Vec<(String, Pick)>,
}

/// A choice in a received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    /// A template's quick-reply button, by index among its buttons.
    QuickReply(u32),
    /// A button or row of an interactive message.
    Interactive(Choice),
}

/// An approved template of this business, offered by the picker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PickableTemplate {
    /// Its id.
    pub id: TemplateId,
    /// The template.
    pub template: Template,
}

/// The template picker: choosing a template, then filling its
/// placeholders one by one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplatePicker {
    /// The customer it is for.
    pub peer: AccountId,
    /// The highlighted template (an index into [`App::templates`]).
    pub selected: usize,
    /// Once a template is chosen: the values typed so far, one per
    /// placeholder in order (the last is being typed).
    pub values: Option<Vec<String>>,
}

/// Which pane has the keyboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Choosing a conversation.
    List,
    /// Reading and writing in the selected conversation.
    Chat,
    /// Comparing a contact's old and new safety numbers before accepting
    /// its new identity (see [`IdentityReview`]).
    ConfirmIdentity,
    /// Picking a button or row of the last message that offers some.
    Pick,
    /// A business choosing an approved template and filling it in (see
    /// [`TemplatePicker`]).
    PickTemplate,
    /// Asking before blocking (see [`App::blocking`]): y blocks, n or Esc
    /// cancels.
    ConfirmBlock,
    /// Reading the Status posts of the last 24 hours (see
    /// [`App::statuses`]).
    Status,
}

/// One live Status post in the Status pane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEntry {
    /// Its id (32 hex digits), for opening it.
    pub post_id: String,
    /// How the pane lists it (already made visible).
    pub line: String,
}

/// A Status post opened in the Status pane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedStatus {
    /// Its id (32 hex digits).
    pub post_id: String,
    /// Who posted it and when (already made visible).
    pub heading: String,
    /// A text post's text exactly as posted (drawn visibly, line by
    /// line), or where an image or video was saved.
    pub body: String,
}

/// What the chat pane looked like when last drawn, for the scroll keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drawn {
    /// How many wrapped rows the history can scroll back.
    pub max_scroll: usize,
    /// How many rows one PgUp/PgDn moves.
    pub page: usize,
}

/// A changed identity under review: accepted only once the user typed the
/// contact's name, as `comptoir trust NAME --confirm NAME` asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityReview {
    /// The contact.
    pub peer: AccountId,
    /// Its name, which the user must type to accept.
    pub name: String,
    /// The safety number with the pinned (old) identity.
    pub old: String,
    /// The safety number with the new identity.
    pub new: String,
    /// What the user typed so far.
    pub typed: String,
}

/// What the client should do after a key press.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Send a text message.
    Send {
        /// To whom.
        peer: AccountId,
        /// The text.
        text: String,
    },
    /// Mark the conversation read (sends a read receipt).
    MarkRead(AccountId),
    /// Block the account at the relay.
    Block(AccountId),
    /// Lift the block.
    Unblock(AccountId),
    /// Show the old and new safety numbers of the account's changed
    /// identity (the client looks them up, then calls
    /// [`App::begin_review`]).
    ReviewIdentity(AccountId),
    /// Accept the account's new identity (only after the user typed its
    /// name in the review).
    AcceptIdentity(AccountId),
    /// Answer a message with one of its choices.
    Choose {
        /// The business.
        peer: AccountId,
        /// The message answered.
        message: MessageId,
        /// The choice.
        pick: Pick,
    },
    /// Send an approved template, its placeholders filled in.
    SendTemplate {
        /// The customer.
        peer: AccountId,
        /// The template.
        id: TemplateId,
        /// `NAME=VALUE` for each placeholder, as `comptoir business
        /// template send` takes them.
        params: Vec<String>,
    },
    /// Save the file a message carries to the downloads directory.
    SaveAttachment {
        /// The conversation.
        peer: AccountId,
        /// The message.
        id: MessageId,
    },
    /// Open a Status post (its id, 32 hex digits): show a text, save an
    /// image or video to the downloads directory.
    OpenStatus(String),
    /// Report a received message to the operator.
    Report {
        /// Its sender.
        peer: AccountId,
        /// The message.
        id: comptoir_client::messages::MessageId,
    },
    /// Leave the UI.
    Quit,
}

/// The whole UI state.
#[derive(Clone, Debug)]
pub struct App {
    /// Conversations, in list order.
    pub conversations: Vec<Conversation>,
    /// Index of the selected conversation.
    pub selected: usize,
    /// Which pane has the keyboard.
    pub mode: Mode,
    /// The message being typed.
    pub input: String,
    /// A one-line status (last event or error); a warning starts with ⚠
    /// and is drawn in red.
    pub status: String,
    /// The identity change being reviewed, in [`Mode::ConfirmIdentity`].
    pub review: Option<IdentityReview>,
    /// In [`Mode::Chat`], the message picked with ↑/↓ (an index into the
    /// conversation's messages), which `r` reports; `None` while typing.
    pub picked: Option<usize>,
    /// Each peer looked up this session: its certified name if it is a
    /// business the operator verified, else `None`.
    pub business_names: std::collections::HashMap<AccountId, Option<String>>,
    /// This account's approved templates (a business account's picker).
    pub templates: Vec<PickableTemplate>,
    /// The template picker, in [`Mode::PickTemplate`].
    pub picker: Option<TemplatePicker>,
    /// The highlighted choice, in [`Mode::Pick`].
    pub pick: usize,
    /// The time the screen was last drawn for, ms since the Unix epoch
    /// (the window's time left is counted from it).
    pub now_ms: u64,
    /// How many wrapped rows the chat is scrolled back from the newest
    /// (0 follows the newest; clamped when drawn).
    pub scroll: usize,
    /// The chat pane's geometry, written by each draw.
    pub drawn: std::cell::Cell<Drawn>,
    /// In [`Mode::ConfirmBlock`]: the account to block, and the mode to
    /// return to.
    pub blocking: Option<(AccountId, Mode)>,
    /// The live Status posts, newest first (shown in [`Mode::Status`]).
    pub statuses: Vec<StatusEntry>,
    /// The highlighted post in [`Mode::Status`] (an index into
    /// [`App::statuses`]).
    pub status_selected: usize,
    /// The post opened in [`Mode::Status`], shown under the list.
    pub opened_status: Option<OpenedStatus>,
    /// A conversation opened from a click-to-chat link that has no
    /// messages yet: kept in the list across reloads until it has some.
    pub opened: Option<Conversation>,
}

/// Each conversation's messages in the order they were written (the
/// sender's time), then in the order this device stored them.
fn order_by_time(conversations: &mut [Conversation]) {
    for c in conversations {
        c.messages.sort_by_key(|m| (m.sent_at_ms, m.sequence));
    }
}

impl App {
    /// A UI showing `conversations`.
    pub fn new(mut conversations: Vec<Conversation>) -> Self {
        order_by_time(&mut conversations);
        Self {
            conversations,
            selected: 0,
            mode: Mode::List,
            input: String::new(),
            status: String::new(),
            review: None,
            picked: None,
            business_names: std::collections::HashMap::new(),
            templates: Vec::new(),
            picker: None,
            pick: 0,
            now_ms: 0,
            scroll: 0,
            drawn: std::cell::Cell::new(Drawn::default()),
            blocking: None,
            statuses: Vec::new(),
            status_selected: 0,
            opened_status: None,
            opened: None,
        }
    }

    /// Start reviewing `peer`'s changed identity with both safety numbers
    /// (as displayed): the next keys type the contact's name.
    pub fn begin_review(&mut self, peer: AccountId, old: String, new: String) {
        let name = self
            .conversations
            .iter()
            .find(|c| c.peer == peer)
            .map_or_else(|| peer.to_string(), |c| c.name.clone());
        self.status = format!(
            "⚠ compare the new safety number with {name} in person or by a call before accepting"
        );
        self.review = Some(IdentityReview {
            peer,
            name,
            old,
            new,
            typed: String::new(),
        });
        self.mode = Mode::ConfirmIdentity;
    }

    /// The selected conversation.
    pub fn current(&self) -> Option<&Conversation> {
        self.conversations.get(self.selected)
    }

    /// Replace the conversations, keeping the selection on the same peer.
    pub fn set_conversations(&mut self, mut conversations: Vec<Conversation>) {
        order_by_time(&mut conversations);
        let peer = self.current().map(|c| c.peer);
        if let Some(opened) = self.opened.take()
            && !conversations.iter().any(|c| c.peer == opened.peer)
        {
            conversations.push(opened.clone());
            self.opened = Some(opened);
        }
        self.conversations = conversations;
        self.selected = peer
            .and_then(|p| self.conversations.iter().position(|c| c.peer == p))
            .unwrap_or(0)
            .min(self.conversations.len().saturating_sub(1));
    }

    /// Record that a peer is (un)blocked.
    pub fn set_blocked(&mut self, peer: AccountId, blocked: bool) {
        if let Some(c) = self.conversations.iter_mut().find(|c| c.peer == peer) {
            c.blocked = blocked;
        }
    }

    /// Apply one key press.
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind != KeyEventKind::Press {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        match self.mode {
            Mode::List => self.list_key(key.code),
            Mode::Chat => self.chat_key(key.code, ctrl),
            Mode::ConfirmIdentity => self.review_key(key.code, ctrl),
            Mode::Pick => self.pick_key(key.code),
            Mode::PickTemplate => self.template_key(key.code, ctrl),
            Mode::ConfirmBlock => self.block_key(key.code),
            Mode::Status => self.status_key(key.code),
        }
    }

    /// The Status pane: ↑/↓ pick a post, Enter opens it, Esc closes the
    /// opened one (then leaves), q or s leaves.
    fn status_key(&mut self, code: KeyCode) -> Action {
        let count = self.statuses.len();
        self.status_selected = self.status_selected.min(count.saturating_sub(1));
        match code {
            KeyCode::Up | KeyCode::Char('k') => {
                self.status_selected = self.status_selected.saturating_sub(1);
                Action::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                if self.status_selected + 1 < count {
                    self.status_selected += 1;
                }
                Action::None
            }
            KeyCode::Enter => match self.statuses.get(self.status_selected) {
                Some(entry) => Action::OpenStatus(entry.post_id.clone()),
                None => Action::None,
            },
            KeyCode::Esc if self.opened_status.is_some() => {
                self.opened_status = None;
                Action::None
            }
            KeyCode::Esc | KeyCode::Char('q' | 's') => {
                self.opened_status = None;
                self.mode = Mode::List;
                Action::None
            }
            _ => Action::None,
        }
    }

    /// Ask before blocking `peer` (the question names it); y blocks.
    fn ask_block(&mut self, peer: AccountId) -> Action {
        self.blocking = Some((peer, self.mode));
        self.mode = Mode::ConfirmBlock;
        Action::None
    }

    fn block_key(&mut self, code: KeyCode) -> Action {
        let Some((peer, back)) = self.blocking else {
            self.mode = Mode::List;
            return Action::None;
        };
        match code {
            KeyCode::Char('y' | 'Y') => {
                self.blocking = None;
                self.mode = back;
                Action::Block(peer)
            }
            KeyCode::Char('n' | 'N') | KeyCode::Esc => {
                self.blocking = None;
                self.mode = back;
                self.status = "not blocked".into();
                Action::None
            }
            _ => Action::None,
        }
    }

    /// PgUp/PgDn/Home/End in the chat: scroll by wrapped rows. Returns
    /// false for any other key.
    fn scroll_key(&mut self, code: KeyCode) -> bool {
        let Drawn { max_scroll, page } = self.drawn.get();
        let page = page.max(1);
        let at = self.scroll.min(max_scroll);
        self.scroll = match code {
            KeyCode::PageUp => at.saturating_add(page).min(max_scroll),
            KeyCode::PageDown => at.saturating_sub(page),
            KeyCode::Home => usize::MAX,
            KeyCode::End => 0,
            _ => return false,
        };
        self.picked = None;
        true
    }

    fn pick_key(&mut self, code: KeyCode) -> Action {
        let Some((peer, choices)) = self
            .current()
            .and_then(|c| c.choices.clone().map(|choices| (c.peer, choices)))
        else {
            self.mode = Mode::Chat;
            return Action::None;
        };
        match code {
            KeyCode::Esc => {
                self.mode = Mode::Chat;
                Action::None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.pick = self.pick.saturating_sub(1);
                Action::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                if self.pick + 1 < choices.options.len() {
                    self.pick += 1;
                }
                Action::None
            }
            KeyCode::Enter => match choices.options.get(self.pick) {
                Some((_, pick)) => {
                    self.mode = Mode::Chat;
                    Action::Choose {
                        peer,
                        message: choices.message,
                        pick: pick.clone(),
                    }
                }
                None => Action::None,
            },
            _ => Action::None,
        }
    }

    fn template_key(&mut self, code: KeyCode, ctrl: bool) -> Action {
        let Some(picker) = self.picker.as_mut() else {
            self.mode = Mode::Chat;
            return Action::None;
        };
        let Some(chosen) = self.templates.get(picker.selected) else {
            self.picker = None;
            self.mode = Mode::Chat;
            return Action::None;
        };
        let placeholders = &chosen.template.placeholders;
        match (&mut picker.values, code) {
            (_, KeyCode::Esc) => {
                self.picker = None;
                self.mode = Mode::Chat;
                self.status = "no template sent".into();
                Action::None
            }
            (None, KeyCode::Up | KeyCode::Char('k')) => {
                picker.selected = picker.selected.saturating_sub(1);
                Action::None
            }
            (None, KeyCode::Down | KeyCode::Char('j')) => {
                if picker.selected + 1 < self.templates.len() {
                    picker.selected += 1;
                }
                Action::None
            }
            (values @ None, KeyCode::Enter) => {
                *values = Some(vec![String::new()]);
                self.finish_template_if_filled()
            }
            (Some(values), KeyCode::Enter) => {
                if values.len() < placeholders.len() {
                    values.push(String::new());
                    Action::None
                } else {
                    self.finish_template_if_filled()
                }
            }
            (Some(values), KeyCode::Backspace) => {
                if let Some(last) = values.last_mut() {
                    last.pop();
                }
                Action::None
            }
            (Some(values), KeyCode::Char(c)) if !ctrl => {
                if let Some(last) = values.last_mut() {
                    last.push(c);
                }
                Action::None
            }
            _ => Action::None,
        }
    }

    /// Once every placeholder of the chosen template has a value (at
    /// once for one without placeholders), the action that sends it.
    fn finish_template_if_filled(&mut self) -> Action {
        let Some(picker) = self.picker.as_ref() else {
            return Action::None;
        };
        let Some(chosen) = self.templates.get(picker.selected) else {
            return Action::None;
        };
        let values = picker.values.clone().unwrap_or_default();
        let placeholders = &chosen.template.placeholders;
        if !placeholders.is_empty() && values.len() < placeholders.len() {
            return Action::None;
        }
        let params = placeholders
            .iter()
            .zip(values)
            .map(|(p, value)| format!("{}={value}", p.name))
            .collect();
        let action = Action::SendTemplate {
            peer: picker.peer,
            id: chosen.id,
            params,
        };
        self.picker = None;
        self.mode = Mode::Chat;
        action
    }

    /// Open the template picker for the selected conversation (a business
    /// account with approved templates only).
    fn open_template_picker(&mut self) -> Action {
        let Some(current) = self.current() else {
            return Action::None;
        };
        if current.window.is_none() {
            return Action::None;
        }
        if self.templates.is_empty() {
            self.status = "no approved template: submit one with `comptoir business template \
                           submit` and wait for the operator"
                .into();
            return Action::None;
        }
        self.picker = Some(TemplatePicker {
            peer: current.peer,
            selected: 0,
            values: None,
        });
        self.mode = Mode::PickTemplate;
        Action::None
    }

    /// Whether the selected conversation is a customer whose window is
    /// closed (this account being a business).
    pub fn window_closed(&self) -> bool {
        self.current()
            .and_then(|c| c.window)
            .is_some_and(|w| w.time_left_ms(self.now_ms).is_none())
    }

    fn review_key(&mut self, code: KeyCode, ctrl: bool) -> Action {
        let Some(review) = self.review.as_mut() else {
            self.mode = Mode::List;
            return Action::None;
        };
        match code {
            KeyCode::Esc => {
                self.review = None;
                self.mode = Mode::List;
                self.status = "identity change not accepted".into();
                Action::None
            }
            KeyCode::Enter if review.typed == review.name => {
                let peer = review.peer;
                self.review = None;
                self.mode = Mode::List;
                Action::AcceptIdentity(peer)
            }
            KeyCode::Enter => {
                self.status = format!(
                    "⚠ not accepted: type {} exactly to accept, or Esc to cancel",
                    review.name
                );
                Action::None
            }
            KeyCode::Backspace => {
                review.typed.pop();
                Action::None
            }
            KeyCode::Char(c) if !ctrl => {
                review.typed.push(c);
                Action::None
            }
            _ => Action::None,
        }
    }

    fn list_key(&mut self, code: KeyCode) -> Action {
        let peer = self.current().map(|c| c.peer);
        match code {
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected = self.selected.saturating_sub(1);
                Action::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                if self.selected + 1 < self.conversations.len() {
                    self.selected += 1;
                }
                Action::None
            }
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => match peer {
                Some(peer) => {
                    self.mode = Mode::Chat;
                    self.picked = None;
                    self.scroll = 0;
                    Action::MarkRead(peer)
                }
                None => Action::None,
            },
            KeyCode::Char('b') => match peer {
                Some(peer) => self.ask_block(peer),
                None => Action::None,
            },
            KeyCode::Char('u') => peer.map_or(Action::None, Action::Unblock),
            KeyCode::Char('t') => self.accept_identity(),
            KeyCode::Char('s') => {
                self.mode = Mode::Status;
                self.opened_status = None;
                Action::None
            }
            KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
            _ => Action::None,
        }
    }

    fn chat_key(&mut self, code: KeyCode, ctrl: bool) -> Action {
        let Some(current) = self.current() else {
            self.mode = Mode::List;
            return Action::None;
        };
        let (peer, changed) = (current.peer, current.identity_changed);
        let has_choices = current.choices.is_some();
        let count = current.messages.len();
        let picked = self
            .picked
            .and_then(|i| current.messages.get(i))
            .map(|m| (m.id, m.outgoing));
        if self.scroll_key(code) {
            return Action::None;
        }
        match code {
            // ↑/↓ pick a message (from the newest); ↓ past the newest goes
            // back to typing.
            KeyCode::Up if count > 0 => {
                self.picked = Some(self.picked.map_or(count - 1, |i| i.saturating_sub(1)));
                Action::None
            }
            KeyCode::Down => {
                self.picked = self.picked.map(|i| i + 1).filter(|i| *i < count);
                Action::None
            }
            KeyCode::Char('r') if !ctrl && self.input.is_empty() && picked.is_some() => {
                match picked {
                    Some((id, false)) => Action::Report { peer, id },
                    _ => {
                        self.status = "only a message you received can be reported".into();
                        Action::None
                    }
                }
            }
            KeyCode::Char('s') if !ctrl && self.input.is_empty() && picked.is_some() => {
                match picked {
                    Some((id, _)) => Action::SaveAttachment { peer, id },
                    None => Action::None,
                }
            }
            KeyCode::Char('b') if ctrl => self.ask_block(peer),
            KeyCode::Char('t') if ctrl => self.accept_identity(),
            KeyCode::Char('p') if ctrl => self.open_template_picker(),
            KeyCode::Char('r') if ctrl && has_choices => {
                self.pick = 0;
                self.mode = Mode::Pick;
                Action::None
            }
            KeyCode::Esc if self.picked.is_some() => {
                self.picked = None;
                Action::None
            }
            KeyCode::Esc => {
                self.mode = Mode::List;
                Action::None
            }
            KeyCode::Enter => {
                if self.input.trim().is_empty() {
                    return Action::None;
                }
                if changed {
                    self.status = "not sent: this contact's identity changed; compare safety numbers, then press Ctrl-T".into();
                    return Action::None;
                }
                // The relay would refuse it: say so, and keep the draft.
                if self.window_closed() {
                    self.status = "⚠ not sent: the 24-hour window is closed; only an approved \
                                   template goes through (Ctrl-P picks one)"
                        .into();
                    return Action::None;
                }
                // Refused like `send` and `chat` refuse it; the draft stays.
                if let Err(e) = comptoir_client::messages::check_text(&self.input) {
                    self.status = format!("not sent: {e}");
                    return Action::None;
                }
                Action::Send {
                    peer,
                    text: std::mem::take(&mut self.input),
                }
            }
            KeyCode::Backspace => {
                self.input.pop();
                Action::None
            }
            KeyCode::Char(c) if !ctrl => {
                self.picked = None;
                self.input.push(c);
                Action::None
            }
            _ => Action::None,
        }
    }

    fn accept_identity(&mut self) -> Action {
        match self.current() {
            Some(c) if c.identity_changed => Action::ReviewIdentity(c.peer),
            _ => Action::None,
        }
    }
}

/// The status line for an event, if it changes it; `name` gives a
/// contact's display name. A refused message is a warning only: it never
/// enters the conversation.
pub fn event_status(event: &Event, name: &dyn Fn(&AccountId) -> String) -> Option<String> {
    Some(match event {
        Event::Message { from, .. } => format!("new message from {}", name(from)),
        Event::Template { from, rendered, .. }
            if rendered
                .buttons
                .iter()
                .any(|b| matches!(b, comptoir_protocol::template::Button::QuickReply { .. })) =>
        {
            format!("new message from {} (Ctrl-R to answer)", name(from))
        }
        Event::Template { from, .. } => format!("new message from {}", name(from)),
        Event::Interactive { from, .. } => {
            format!("new message from {} (Ctrl-R to answer)", name(from))
        }
        Event::QuickReply { from, text, .. }
        | Event::InteractiveReply {
            from, title: text, ..
        } => format!("{} chose \"{text}\"", name(from)),
        Event::IdentityChanged { account } => {
            format!("⚠ the identity of {} changed", name(account))
        }
        Event::Undecryptable { from, reason, .. } => format!(
            "⚠ a message from {} could not be decrypted: {reason}",
            name(from)
        ),
        Event::Refused { from, reason, .. } => format!(
            "⚠ refused a message from {}: {reason} (not shown; kept as evidence)",
            name(from)
        ),
        Event::Warning(text) => format!("⚠ {text}"),
        Event::StatusPosted { from, .. } => {
            format!("{} posted a Status (s in the list to see it)", name(from))
        }
        Event::StatusViewed { by, .. } => format!("{} viewed your Status", name(by)),
        Event::OperatorKeyChanged { .. } => "⚠ this relay presents another operator key than \
             the one pinned: verified marks still use the pinned key; ask the operator"
            .to_owned(),
        Event::Violation {
            from, violation, ..
        } => format!(
            "⚠ {} sent {violation}: the relay should have refused it (kept as evidence)",
            name(from)
        ),
        _ => return None,
    })
}
