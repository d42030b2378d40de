//! The TUI's state and actions as JSON, between `comptoir daemon` (which
//! holds the account and runs them with the same code as the TUI without
//! a daemon) and `comptoir tui` through it ([`super::remote`]): the
//! daemon's methods `tui_state` and `tui_action` (docs/CLIENT-RPC.md).

use serde_json::{Value, json};

use comptoir_client::Client;
use comptoir_client::click_to_chat::ChatLink;
use comptoir_client::error::Result;
use comptoir_client::messages::MessageId;
use comptoir_client::rule_checks::Window;
use comptoir_protocol::AccountId;
use comptoir_protocol::interactive::Choice;
use comptoir_protocol::template::TemplateId;

use super::app::{
    Action, App, Choices, Conversation, IdentityReview, Mode, OpenedStatus, Pick, PickableTemplate,
    StatusEntry,
};

/// `tui_state` on the daemon's side: the conversations as the method
/// `conversations` gives them (with each one's choices and, for a
/// business, its customer's window), the Status pane's posts and, when
/// `templates`, a business's approved templates.
pub async fn state(client: &mut Client, conversations: Value, templates: bool) -> Result<Value> {
    let list = super::load_conversations(client)?;
    let mut conversations = match conversations {
        Value::Array(list) => list,
        _ => Vec::new(),
    };
    for (value, conversation) in conversations.iter_mut().zip(&list) {
        value["choices"] = conversation.choices.as_ref().map_or(Value::Null, choices);
        value["window"] = conversation
            .window
            .map_or(Value::Null, |w| json!({"opened_at_ms": w.opened_at_ms}));
    }
    let statuses = super::status_view::load(client).await?;
    let mut state = json!({
        "conversations": conversations,
        "statuses": statuses
            .iter()
            .map(|s| json!({"post_id": s.post_id, "line": s.line}))
            .collect::<Vec<_>>(),
    });
    if templates {
        let list = super::approved_templates(client).await?;
        state["templates"] = Value::Array(
            list.iter()
                .map(|t| json!({"id": t.id, "template": t.template}))
                .collect(),
        );
    }
    Ok(state)
}

/// Apply a `tui_state` result to `app` (its conversations kept where they
/// are when one is malformed: `None`).
pub fn apply_state(app: &mut App, state: &Value) -> Option<()> {
    let conversations = state
        .get("conversations")?
        .as_array()?
        .iter()
        .map(conversation)
        .collect::<Option<Vec<_>>>()?;
    app.set_conversations(conversations);
    app.statuses = state
        .get("statuses")?
        .as_array()?
        .iter()
        .map(|s| {
            Some(StatusEntry {
                post_id: s.get("post_id")?.as_str()?.to_owned(),
                line: s.get("line")?.as_str()?.to_owned(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    if let Some(templates) = state.get("templates").and_then(Value::as_array) {
        app.templates = templates
            .iter()
            .map(|t| {
                Some(PickableTemplate {
                    id: serde_json::from_value(t.get("id")?.clone()).ok()?,
                    template: serde_json::from_value(t.get("template")?.clone()).ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
    }
    Some(())
}

/// One conversation of the methods `conversations` and `tui_state`.
pub fn conversation(value: &Value) -> Option<Conversation> {
    let mut conversation = super::remote::conversation(value)?;
    conversation.choices = match value.get("choices") {
        None | Some(Value::Null) => None,
        Some(choices) => Some(parse_choices(choices)?),
    };
    conversation.window = match value.get("window") {
        None | Some(Value::Null) => None,
        Some(window) => Some(Window {
            opened_at_ms: window.get("opened_at_ms").and_then(Value::as_u64),
        }),
    };
    Some(conversation)
}

fn choices(choices: &Choices) -> Value {
    json!({
        "message": choices.message.to_string(),
        "options": choices
            .options
            .iter()
            .map(|(label, pick_of)| json!({"label": label, "pick": pick(pick_of)}))
            .collect::<Vec<_>>(),
    })
}

fn parse_choices(value: &Value) -> Option<Choices> {
    Some(Choices {
        message: MessageId::from_hex(value.get("message")?.as_str()?)?,
        options: value
            .get("options")?
            .as_array()?
            .iter()
            .map(|o| {
                Some((
                    o.get("label")?.as_str()?.to_owned(),
                    parse_pick(o.get("pick")?)?,
                ))
            })
            .collect::<Option<Vec<_>>>()?,
    })
}

fn pick(pick: &Pick) -> Value {
    match pick {
        Pick::QuickReply(index) => json!({"quick_reply": index}),
        Pick::Interactive(Choice::Button(index)) => json!({"button": index}),
        Pick::Interactive(Choice::Row(row)) => json!({"row": row}),
    }
}

fn parse_pick(value: &Value) -> Option<Pick> {
    let index = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    if let Some(index) = index("quick_reply") {
        return Some(Pick::QuickReply(index));
    }
    if let Some(index) = index("button") {
        return Some(Pick::Interactive(Choice::Button(index)));
    }
    let row = value.get("row")?.as_str()?;
    Some(Pick::Interactive(Choice::Row(row.to_owned())))
}

/// An action that needs the account's store, as the params of
/// `tui_action`; `None` for the actions with methods of their own (send,
/// mark read, block, unblock) and for none and quit.
pub fn action(action: &Action) -> Option<Value> {
    Some(match action {
        Action::Report { peer, id } => {
            json!({"action": "report", "peer": peer.to_string(), "id": id.to_string()})
        }
        Action::SaveAttachment { peer, id } => {
            json!({"action": "save_attachment", "peer": peer.to_string(), "id": id.to_string()})
        }
        Action::ReviewIdentity(peer) => {
            json!({"action": "review_identity", "peer": peer.to_string()})
        }
        Action::AcceptIdentity(peer) => {
            json!({"action": "accept_identity", "peer": peer.to_string()})
        }
        Action::OpenStatus(post_id) => json!({"action": "open_status", "post_id": post_id}),
        Action::Choose {
            peer,
            message,
            pick: chosen,
        } => json!({
            "action": "choose",
            "peer": peer.to_string(),
            "id": message.to_string(),
            "pick": pick(chosen),
        }),
        Action::SendTemplate { peer, id, params } => json!({
            "action": "send_template",
            "peer": peer.to_string(),
            "template": id,
            "params": params,
        }),
        Action::None
        | Action::Quit
        | Action::Send { .. }
        | Action::MarkRead(_)
        | Action::Block(_)
        | Action::Unblock(_) => return None,
    })
}

/// The action `params` of `tui_action` name; `None` if malformed.
pub fn parse_action(params: &Value) -> Option<Action> {
    let peer = || AccountId::from_hex(params.get("peer")?.as_str()?).ok();
    let id = || MessageId::from_hex(params.get("id")?.as_str()?);
    Some(match params.get("action")?.as_str()? {
        "report" => Action::Report {
            peer: peer()?,
            id: id()?,
        },
        "save_attachment" => Action::SaveAttachment {
            peer: peer()?,
            id: id()?,
        },
        "review_identity" => Action::ReviewIdentity(peer()?),
        "accept_identity" => Action::AcceptIdentity(peer()?),
        "open_status" => Action::OpenStatus(params.get("post_id")?.as_str()?.to_owned()),
        "choose" => Action::Choose {
            peer: peer()?,
            message: id()?,
            pick: parse_pick(params.get("pick")?)?,
        },
        "send_template" => Action::SendTemplate {
            peer: peer()?,
            id: TemplateId::from_hex(params.get("template")?.as_str()?)?,
            params: params
                .get("params")?
                .as_array()?
                .iter()
                .map(|p| p.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()?,
        },
        _ => return None,
    })
}

/// `tui_action` on the daemon's side: run `action` with the TUI's own
/// code on a state loaded as the TUI loads it; what it says and shows.
pub async fn perform(client: &mut Client, action: Action) -> Result<Value> {
    let mut app = App::new(super::load_conversations(client)?);
    if matches!(action, Action::SendTemplate { .. }) {
        app.templates = super::approved_templates(client).await?;
    }
    super::perform(client, &mut app, action).await?;
    Ok(json!({
        "status": app.status,
        "review": app.review.map(|r| json!({
            "peer": r.peer.to_string(),
            "name": r.name,
            "old": r.old,
            "new": r.new,
        })),
        "opened_status": app.opened_status.map(|s| json!({
            "post_id": s.post_id,
            "heading": s.heading,
            "body": s.body,
        })),
    }))
}

/// `tui_open_link` on the daemon's side: resolve a click-to-chat link as
/// `comptoir tui --open` does; the conversation it opens (`peer` null when
/// its business was not found), the prefilled text and the status line.
pub async fn open_link(client: &mut Client, link: &ChatLink) -> Result<Value> {
    let mut app = App::new(super::load_conversations(client)?);
    super::open_link::open(client, &mut app, link).await?;
    let opened = (app.mode == Mode::Chat)
        .then(|| app.current())
        .flatten()
        .map(|c| {
            json!({
                "peer": c.peer.to_string(),
                "name": c.name,
                "blocked": c.blocked,
                "verified_name": c.verified_name,
            })
        });
    Ok(json!({
        "conversation": opened,
        "text": link.text,
        "status": app.status,
    }))
}

/// Apply a `tui_open_link` result to `app`: open the conversation with
/// the text in the composer, or say why not.
pub fn apply_open_link(app: &mut App, opened: &Value) -> Option<()> {
    let status = opened.get("status")?.as_str()?.to_owned();
    let Some(c) = opened.get("conversation").filter(|c| !c.is_null()) else {
        app.status = status;
        return Some(());
    };
    let conversation = Conversation {
        peer: AccountId::from_hex(c.get("peer")?.as_str()?).ok()?,
        name: c.get("name")?.as_str()?.to_owned(),
        unread: 0,
        identity_changed: false,
        blocked: c.get("blocked")?.as_bool()?,
        request: false,
        verified_name: c
            .get("verified_name")
            .and_then(Value::as_str)
            .map(str::to_owned),
        messages: Vec::new(),
        window: None,
        choices: None,
    };
    let text = opened
        .get("text")
        .and_then(Value::as_str)
        .map(str::to_owned);
    app.open_chat(conversation, text, status);
    Some(())
}

/// Apply a `tui_action` result to `app`: its status line, the identity
/// review it opened, the Status post it opened.
pub fn apply_outcome(app: &mut App, outcome: &Value) -> Option<()> {
    app.status = outcome.get("status")?.as_str()?.to_owned();
    if let Some(review) = outcome.get("review").filter(|r| !r.is_null()) {
        let peer = AccountId::from_hex(review.get("peer")?.as_str()?).ok()?;
        app.review = Some(IdentityReview {
            peer,
            name: review.get("name")?.as_str()?.to_owned(),
            old: review.get("old")?.as_str()?.to_owned(),
            new: review.get("new")?.as_str()?.to_owned(),
            typed: String::new(),
        });
    }
    if let Some(opened) = outcome.get("opened_status").filter(|s| !s.is_null()) {
        app.opened_status = Some(OpenedStatus {
            post_id: opened.get("post_id")?.as_str()?.to_owned(),
            heading: opened.get("heading")?.as_str()?.to_owned(),
            body: opened.get("body")?.as_str()?.to_owned(),
        });
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actions_that_need_the_store_go_over_as_they_are() {
        let peer = AccountId::from_bytes(&[7; 16]).expect("16 bytes");
        let id = MessageId([9; 16]);
        let actions = [
            Action::Report { peer, id },
            Action::SaveAttachment { peer, id },
            Action::ReviewIdentity(peer),
            Action::AcceptIdentity(peer),
            Action::OpenStatus("00ff".repeat(8)),
            Action::Choose {
                peer,
                message: id,
                pick: Pick::QuickReply(2),
            },
            Action::Choose {
                peer,
                message: id,
                pick: Pick::Interactive(Choice::Button(1)),
            },
            Action::Choose {
                peer,
                message: id,
                pick: Pick::Interactive(Choice::Row("seat-12a".into())),
            },
            Action::SendTemplate {
                peer,
                id: TemplateId([3; 32]),
                params: vec!["name=Carol".into()],
            },
        ];
        for sent in actions {
            let params = action(&sent).expect("needs the store");
            assert_eq!(parse_action(&params), Some(sent));
        }
        for own_method in [
            Action::Send {
                peer,
                text: "hi".into(),
            },
            Action::MarkRead(peer),
            Action::Block(peer),
            Action::Unblock(peer),
            Action::None,
            Action::Quit,
        ] {
            assert_eq!(action(&own_method), None);
        }
        for bad in [
            json!({}),
            json!({"action": "format_disk"}),
            json!({"action": "report", "peer": "zz", "id": id.to_string()}),
            json!({"action": "choose", "peer": peer.to_string(), "id": id.to_string(), "pick": {}}),
        ] {
            assert_eq!(parse_action(&bad), None, "{bad}");
        }
    }

    #[test]
    fn choices_go_over_as_they_are() {
        let sent = Choices {
            message: MessageId([1; 16]),
            options: vec![
                ("[1] Yes".into(), Pick::QuickReply(0)),
                ("[2] Later".into(), Pick::Interactive(Choice::Button(1))),
                (
                    "[a] Aisle".into(),
                    Pick::Interactive(Choice::Row("a".into())),
                ),
            ],
        };
        assert_eq!(parse_choices(&choices(&sent)), Some(sent));
    }
}
