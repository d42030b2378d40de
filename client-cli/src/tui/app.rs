//! The terminal UI's state and key handling, free of I/O: a key press
//! changes the state and may return an [`Action`] for the client to run.

use comptoir_protocol::AccountId;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use comptoir_client::Event;
use comptoir_client::messages::StoredMessage;

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
}

impl App {
    /// A UI showing `conversations`.
    pub fn new(conversations: Vec<Conversation>) -> Self {
        Self {
            conversations,
            selected: 0,
            mode: Mode::List,
            input: String::new(),
            status: String::new(),
            review: None,
            picked: None,
            business_names: std::collections::HashMap::new(),
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
    pub fn set_conversations(&mut self, conversations: Vec<Conversation>) {
        let peer = self.current().map(|c| c.peer);
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
        }
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
                    Action::MarkRead(peer)
                }
                None => Action::None,
            },
            KeyCode::Char('b') => peer.map_or(Action::None, Action::Block),
            KeyCode::Char('u') => peer.map_or(Action::None, Action::Unblock),
            KeyCode::Char('t') => self.accept_identity(),
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
        let count = current.messages.len();
        let picked = self
            .picked
            .and_then(|i| current.messages.get(i))
            .map(|m| (m.id, m.outgoing));
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
            KeyCode::Char('b') if ctrl => Action::Block(peer),
            KeyCode::Char('t') if ctrl => self.accept_identity(),
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
