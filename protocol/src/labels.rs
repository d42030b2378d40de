//! Bound labels (docs/PROTOCOL.md, "Bound labels"): the envelope fields the
//! relay acts on, committed to inside the encrypted [`Content`], and the
//! receiver's check that the two agree and that the category means what it
//! says.
//!
//! The relay decides from labels it can read; a relay (or a sender) that
//! relabels a message cannot re-encrypt it, so the receiving client
//! compares the [`Labels`] it decrypted with the envelope it was handed and
//! refuses the message on any difference. Pure functions: no I/O.

use std::fmt;

use thiserror::Error;

use crate::proto::content::{Content, Labels, content};
use crate::proto::wire::{Category, Envelope};

/// One label bound inside the content, in the order [`check`] compares
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Label {
    /// `message_id`: the id this copy was sent under.
    MessageId,
    /// `sender_account`.
    SenderAccount,
    /// `recipient_account`.
    RecipientAccount,
    /// `category`.
    Category,
    /// `template_id`.
    TemplateId,
    /// `franking_tag` (the franking commitment).
    FrankingCommitment,
}

impl Label {
    /// Every label, in the order they are compared.
    pub const ALL: [Label; 6] = [
        Label::MessageId,
        Label::SenderAccount,
        Label::RecipientAccount,
        Label::Category,
        Label::TemplateId,
        Label::FrankingCommitment,
    ];

    /// The envelope field's name.
    pub fn name(self) -> &'static str {
        match self {
            Label::MessageId => "message id",
            Label::SenderAccount => "sender account",
            Label::RecipientAccount => "recipient account",
            Label::Category => "category",
            Label::TemplateId => "template id",
            Label::FrankingCommitment => "franking commitment",
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a decrypted message is refused by its labels. The message was
/// authentically encrypted by the sender's device (the session is fine);
/// it is kept aside as evidence and never displayed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabelError {
    /// The envelope's label differs from the one bound inside the content:
    /// the sender or the relay relabelled the message.
    #[error(
        "label mismatch: the envelope's {label} is not the one bound inside the encrypted content; \
         the message was relabelled on the way and is kept as evidence"
    )]
    LabelMismatch {
        /// The first label that differs.
        label: Label,
    },
    /// The content carries no bound labels, which only person-to-person
    /// conversation may omit.
    #[error("a {category} message must bind its labels inside the encrypted content")]
    Unbound {
        /// The envelope's category name.
        category: &'static str,
    },
    /// Something the client would display arrived labelled control.
    #[error("visible content labelled as control traffic")]
    ControlVisible,
    /// The content carries a franking key but its franking commitment
    /// does not open over it (docs/PROTOCOL.md, "Message franking").
    #[error("{0}")]
    Franking(#[from] crate::franking::FrankingError),
    /// Control traffic (a receipt, a re-key request, a sync copy) arrived
    /// under a category that is not control.
    #[error("control traffic labelled {category}")]
    ControlMislabelled {
        /// The envelope's category name.
        category: &'static str,
    },
}

/// A category's name for messages (`"unknown"` for a number outside the
/// enum).
pub fn category_name(category: i32) -> &'static str {
    match Category::try_from(category) {
        Ok(Category::Unspecified) => "unspecified",
        Ok(Category::Conversation) => "conversation",
        Ok(Category::Service) => "service",
        Ok(Category::Utility) => "utility",
        Ok(Category::Authentication) => "authentication",
        Ok(Category::Marketing) => "marketing",
        Ok(Category::Control) => "control",
        Err(_) => "unknown",
    }
}

/// The labels a sender binds for one envelope: exactly the values it puts
/// in the `Send` (and the relay's authenticated sender account).
pub fn bind(
    message_id: &[u8],
    sender_account: &[u8],
    recipient_account: &[u8],
    category: Category,
    template_id: &str,
    franking_commitment: &[u8],
) -> Labels {
    Labels {
        message_id: message_id.to_vec(),
        sender_account: sender_account.to_vec(),
        recipient_account: recipient_account.to_vec(),
        category: category as i32,
        template_id: template_id.to_string(),
        franking_commitment: franking_commitment.to_vec(),
    }
}

/// Compare the labels bound in `content` with `envelope`, field by field
/// in [`Label::ALL`] order (byte equality; the category by its number),
/// then check that the body's kind fits the category (see
/// [`check_category`]). Content without labels passes only as
/// [`Category::Conversation`].
pub fn check(content: &Content, envelope: &Envelope) -> Result<(), LabelError> {
    match &content.labels {
        Some(labels) => {
            if let Some(label) = first_difference(labels, envelope) {
                return Err(LabelError::LabelMismatch { label });
            }
        }
        None if envelope.category == Category::Conversation as i32 => {}
        None => {
            return Err(LabelError::Unbound {
                category: category_name(envelope.category),
            });
        }
    }
    check_category(content.body.as_ref(), envelope.category)
}

/// The first label of `labels` that differs from `envelope`'s, if any.
pub fn first_difference(labels: &Labels, envelope: &Envelope) -> Option<Label> {
    Label::ALL.into_iter().find(|label| match label {
        Label::MessageId => labels.message_id != envelope.message_id,
        Label::SenderAccount => labels.sender_account != envelope.sender_account,
        Label::RecipientAccount => labels.recipient_account != envelope.recipient_account,
        Label::Category => labels.category != envelope.category,
        Label::TemplateId => labels.template_id != envelope.template_id,
        Label::FrankingCommitment => labels.franking_commitment != envelope.franking_tag,
    })
}

/// Whether the body is something a client displays (text, a template
/// instance, an attachment, an interactive message or a choice in one, a
/// pressed quick-reply button).
pub fn is_visible(body: &content::Body) -> bool {
    matches!(
        body,
        content::Body::Text(_)
            | content::Body::Template(_)
            | content::Body::Attachment(_)
            | content::Body::Interactive(_)
            | content::Body::InteractiveReply(_)
            | content::Body::ButtonReply(_)
    )
}

/// Whether the body is device-to-device protocol traffic (a read receipt,
/// a re-key request, a copy for the sender's other devices, the address
/// book asked for or sent between one account's devices, application
/// state synced between them).
pub fn is_control(body: &content::Body) -> bool {
    matches!(
        body,
        content::Body::ReadReceipt(_)
            | content::Body::RekeyRequest(_)
            | content::Body::SentTranscript(_)
            | content::Body::ContactsRequest(_)
            | content::Body::ContactsSync(_)
            | content::Body::AppSync(_)
    )
}

/// Category means what it says: visible content is never labelled
/// control, and control traffic is never labelled anything else.
pub fn check_category(body: Option<&content::Body>, category: i32) -> Result<(), LabelError> {
    let control = category == Category::Control as i32;
    match body {
        Some(body) if control && is_visible(body) => Err(LabelError::ControlVisible),
        Some(body) if !control && is_control(body) => Err(LabelError::ControlMislabelled {
            category: category_name(category),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::content::{ReadReceipt, Text};

    fn envelope(category: Category) -> Envelope {
        Envelope {
            message_id: vec![1; 16],
            sender_account: vec![2; 16],
            sender_device: 1,
            recipient_account: vec![3; 16],
            recipient_device: 1,
            category: category as i32,
            template_id: "order-shipped".into(),
            franking_tag: vec![4; 32],
            ..Envelope::default()
        }
    }

    fn content(envelope: &Envelope, body: content::Body) -> Content {
        Content {
            message_id: envelope.message_id.clone(),
            labels: Some(bind(
                &envelope.message_id,
                &envelope.sender_account,
                &envelope.recipient_account,
                Category::try_from(envelope.category).unwrap_or(Category::Unspecified),
                &envelope.template_id,
                &envelope.franking_tag,
            )),
            body: Some(body),
            ..Content::default()
        }
    }

    fn text() -> content::Body {
        content::Body::Text(Text { body: "hi".into() })
    }

    fn receipt() -> content::Body {
        content::Body::ReadReceipt(ReadReceipt::default())
    }

    /// Rewrite one label of the envelope.
    fn relabel(envelope: &mut Envelope, label: Label) {
        match label {
            Label::MessageId => envelope.message_id[0] ^= 1,
            Label::SenderAccount => envelope.sender_account[0] ^= 1,
            Label::RecipientAccount => envelope.recipient_account[0] ^= 1,
            Label::Category => envelope.category = Category::Utility as i32,
            Label::TemplateId => envelope.template_id = "promo".into(),
            Label::FrankingCommitment => envelope.franking_tag.clear(),
        }
    }

    #[test]
    fn table() {
        use Category::*;
        // (envelope category, body, labels bound?, expected)
        let cases: Vec<(Category, content::Body, bool, Result<(), LabelError>)> = vec![
            (Conversation, text(), true, Ok(())),
            (Conversation, text(), false, Ok(())),
            (Service, text(), true, Ok(())),
            (
                Service,
                text(),
                false,
                Err(LabelError::Unbound {
                    category: "service",
                }),
            ),
            (
                Marketing,
                text(),
                false,
                Err(LabelError::Unbound {
                    category: "marketing",
                }),
            ),
            (
                Control,
                receipt(),
                false,
                Err(LabelError::Unbound {
                    category: "control",
                }),
            ),
            (Control, receipt(), true, Ok(())),
            (Control, text(), true, Err(LabelError::ControlVisible)),
            (
                Conversation,
                receipt(),
                true,
                Err(LabelError::ControlMislabelled {
                    category: "conversation",
                }),
            ),
            (
                Conversation,
                receipt(),
                false,
                Err(LabelError::ControlMislabelled {
                    category: "conversation",
                }),
            ),
        ];
        for (category, body, bound, expected) in cases {
            let env = envelope(category);
            let mut c = content(&env, body.clone());
            if !bound {
                c.labels = None;
            }
            assert_eq!(check(&c, &env), expected, "{category:?} {body:?} {bound}");
        }
    }

    /// Every body the client library shows as a message (history and an
    /// event) is refused when labelled control; a pressed quick-reply
    /// button was not, and showed.
    #[test]
    fn every_body_a_client_shows_is_refused_labelled_control() {
        use crate::proto::content::{
            AttachmentPointer, ButtonReply, Interactive, InteractiveReply, TemplateInstance,
        };
        let shown = [
            text(),
            content::Body::Template(TemplateInstance::default()),
            content::Body::Attachment(AttachmentPointer::default()),
            content::Body::Interactive(Interactive::default()),
            content::Body::InteractiveReply(InteractiveReply::default()),
            content::Body::ButtonReply(ButtonReply::default()),
        ];
        for body in shown {
            let env = envelope(Category::Control);
            let c = content(&env, body.clone());
            assert_eq!(check(&c, &env), Err(LabelError::ControlVisible), "{body:?}");
        }
    }

    #[test]
    fn each_rewritten_label_is_named() {
        for label in Label::ALL {
            let mut env = envelope(Category::Utility);
            env.category = Category::Service as i32;
            let c = content(&env, text());
            assert_eq!(check(&c, &env), Ok(()));
            relabel(&mut env, label);
            assert_eq!(check(&c, &env), Err(LabelError::LabelMismatch { label }));
        }
    }
}
