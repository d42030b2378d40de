//! Receiving: decrypt a delivered envelope with the right session, store
//! what it says, and only then acknowledge it.

use comptoir_protocol::interactive;
use comptoir_protocol::proto::content::{
    ButtonReply, Content, SentTemplate, TemplateInstance, Text, content,
};
use comptoir_protocol::proto::wire::{
    self, Category, Envelope, GetDeviceList, client_frame, server_frame,
};
use comptoir_protocol::template::{TemplateId, check_quick_reply};
use comptoir_protocol::{AccountId, Error as ProtocolError, IdentityKey};
use prost::Message;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::evidence::{self, Evidence};
use crate::franked::{self, RelayTag};
use crate::interactive_messages;
use crate::messages::{self, MessageId, Status, StoredMessage};
use crate::peers::{self, Observed};
use crate::quarantine;
use crate::rule_checks::{self, Violation};
use crate::session_store::{load_session, save_session};
use crate::template_cache;

use super::{Client, now_ms, unexpected};

/// What the sender's device is to this device.
enum Expected {
    /// Listed in the trusted device list with this identity.
    Key(Box<IdentityKey>),
    /// The account's key changed; the user must accept it first.
    IdentityChanged,
    /// Not in the account's signed device list.
    NotListed,
}

/// Decryption failures that mean the session is out of step (not an attack
/// on the message itself, not a duplicate): a fresh session fixes them.
fn is_wedged(error: &ProtocolError) -> bool {
    matches!(
        error,
        ProtocolError::DecryptionFailed
            | ProtocolError::NoMatchingSession
            | ProtocolError::SessionNotReady
            | ProtocolError::UnknownSignedPreKey(_)
            | ProtocolError::UnknownOneTimePreKey(_)
            | ProtocolError::TooManySkippedMessages { .. }
            // Not in the history (checked before decrypting): really lost.
            | ProtocolError::MessageKeyEvicted { .. }
    )
}

/// Whether `category` is one only an approved template may use.
pub(super) fn is_template_category(category: Category) -> bool {
    matches!(
        category,
        Category::Utility | Category::Authentication | Category::Marketing
    )
}

/// Errors that retrying later can fix: the envelope stays unacked at the
/// relay. Any other error puts the envelope in quarantine and acks it.
fn is_transient(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::ConnectionClosed(_)
            | ClientError::NotConnected
            | ClientError::Timeout(_)
            | ClientError::Database(_)
            | ClientError::Io { .. }
    )
}

impl Client {
    /// Process one delivered envelope. Whatever it holds, it ends acked
    /// (used, a duplicate, or in quarantine) unless the connection or the
    /// store failed, so no envelope can stall the queue.
    pub(super) async fn handle_deliver(
        &mut self,
        envelope: Envelope,
        relay_tag: RelayTag,
    ) -> Result<()> {
        match self.deliver(&envelope, &relay_tag).await {
            Err(e) if !is_transient(&e) => {
                self.events.push_back(Event::Warning(format!(
                    "an envelope could not be processed and was put aside: {e}"
                )));
                self.quarantine_and_ack(&envelope, &e.to_string()).await
            }
            other => other,
        }
    }

    /// Keep `envelope` aside (durably), then acknowledge it.
    async fn quarantine_and_ack(&mut self, envelope: &Envelope, reason: &str) -> Result<()> {
        quarantine::put(&self.store, envelope, reason, now_ms())?;
        self.store.flush().await?;
        self.reject(envelope).await
    }

    async fn deliver(&mut self, envelope: &Envelope, relay_tag: &RelayTag) -> Result<()> {
        let envelope = envelope.clone();
        let (Ok(from), Some(id)) = (
            AccountId::from_bytes(&envelope.sender_account),
            MessageId::from_bytes(&envelope.message_id),
        ) else {
            self.events.push_back(Event::Warning(
                "put aside an envelope with a malformed sender or id".into(),
            ));
            return self
                .quarantine_and_ack(&envelope, "malformed sender or message id")
                .await;
        };
        // Taken already: not opened again. The very copy this device
        // signed for, delivered again because its ack was lost, is acked
        // signed again; any other (a relay replaying the message under a
        // new accept id or labels) is acked rejected, never signed.
        if messages::contains(&self.store, &from, &id)? {
            if crate::signed_copies::proof_of(&self.store, &envelope)?.is_some() {
                return self.ack(&envelope).await;
            }
            return self.reject(&envelope).await;
        }
        let device = envelope.sender_device;
        let expected = match self.expected_identity(from, device).await? {
            Expected::Key(key) => key,
            Expected::IdentityChanged => {
                // Left queued at the relay until the user accepts the change.
                self.events
                    .push_back(Event::IdentityChanged { account: from });
                return Ok(());
            }
            Expected::NotListed => {
                let reason = format!("device {device} is not in the account's signed device list");
                self.events.push_back(Event::Undecryptable {
                    from,
                    id: id.to_string(),
                    reason: reason.clone(),
                });
                return self.quarantine_and_ack(&envelope, &reason).await;
            }
        };
        // A template message: have its template in the cache (fetched when
        // unknown or stale) before decrypting, so that checking it needs no
        // request while the peer's lock is held.
        if is_template_category(envelope.category())
            && let Some(template) = TemplateId::from_hex(&envelope.template_id)
        {
            self.cached_template(from, &template).await?;
        }
        // Held from loading the session to writing it back: a sender task
        // must not encrypt from the state this decrypt replaces.
        let peer_lock = self.locks.lock(from).await;
        let mut record = load_session(&self.store, &from, device)?;
        let decrypted = match record.decrypt(
            self.account.identity(),
            &mut self.prekeys,
            Some(&*expected),
            &envelope.ciphertext,
        ) {
            Ok(decrypted) => decrypted,
            // A copy already decrypted: never a reason to re-key.
            Err(ProtocolError::DuplicateMessage { .. }) => {
                drop(peer_lock);
                return self.reject(&envelope).await;
            }
            Err(e) => {
                drop(peer_lock);
                let reason = e.to_string();
                self.events.push_back(Event::Undecryptable {
                    from,
                    id: id.to_string(),
                    reason: reason.clone(),
                });
                if is_wedged(&e) {
                    match self.request_rekey(from, device, id).await {
                        Ok(()) => {}
                        // Not acked: the relay sends it again on reconnect.
                        Err(e @ (ClientError::ConnectionClosed(_) | ClientError::NotConnected)) => {
                            return Err(e);
                        }
                        Err(e) => self.events.push_back(Event::Warning(format!(
                            "could not ask {from} for a fresh session: {e}"
                        ))),
                    }
                }
                return self.quarantine_and_ack(&envelope, &reason).await;
            }
        };
        let plaintext = Zeroizing::new(decrypted.plaintext);
        // The content's id is the message's identity; the envelope's may
        // differ when the sender re-sent it over a fresh session.
        let decoded = Content::decode(plaintext.as_slice());
        // A Status key's ack is signed when it is shown: the relay may bill
        // its delivery.
        let status_key = matches!(
            &decoded,
            Ok(Content {
                body: Some(content::Body::StatusKey(_)),
                ..
            })
        );
        // Bound labels first: a refused content is kept as evidence, never applied.
        let refused = match &decoded {
            Ok(content) => self.screen_labels(from, id, &envelope, content, &plaintext)?,
            Err(_) => None,
        };
        let labels_ok = refused.is_none();
        // Kept with the message if it is shown, so that it can be reported.
        let report_material = match &decoded {
            Ok(content) if labels_ok => franked::material(&envelope, relay_tag, content),
            _ => None,
        };
        let mut violations = Vec::new();
        let event = match decoded {
            _ if refused.is_some() => refused,
            Ok(content) => match MessageId::from_bytes(&content.message_id) {
                Some(canonical)
                    if canonical != id && messages::contains(&self.store, &from, &canonical)? =>
                {
                    None
                }
                Some(canonical) => self.apply_content(
                    from,
                    device,
                    canonical,
                    content,
                    &envelope,
                    &mut violations,
                )?,
                None => Some(Event::Undecryptable {
                    from,
                    id: id.to_string(),
                    reason: "the content carries a malformed message id".into(),
                }),
            },
            Err(e) => {
                let reason = format!("undecodable content: {e}");
                quarantine::put(&self.store, &envelope, &reason, now_ms())?;
                Some(Event::Undecryptable {
                    from,
                    id: id.to_string(),
                    reason,
                })
            }
        };
        // A message this account received from a business: check the window
        // and consent rules the relay should have enforced (besides what
        // checking its content found).
        let checked = match &event {
            Some(
                Event::Message { id, .. }
                | Event::Template { id, .. }
                | Event::Interactive { id, .. }
                | Event::Attachment { id, .. },
            ) => {
                if envelope.category() == Category::Conversation {
                    rule_checks::record_heard(&self.store, &from, envelope.server_timestamp_ms)?;
                }
                if let Some(material) = report_material {
                    franked::save(&self.store, &from, id, material)?;
                }
                violations.extend(self.rule_violation(from, &envelope)?);
                Some(*id)
            }
            // The peer wrote to this account: the window it opens, for a
            // business's screens (a conversation message only, as the
            // relay counts it).
            Some(Event::QuickReply { id, .. } | Event::InteractiveReply { id, .. }) => {
                if envelope.category() == Category::Conversation {
                    rule_checks::record_heard(&self.store, &from, envelope.server_timestamp_ms)?;
                }
                Some(*id)
            }
            // Another device of this account wrote: its window counts.
            Some(Event::SentElsewhere { to, .. }) => {
                rule_checks::record_wrote(&self.store, to, envelope.server_timestamp_ms)?;
                None
            }
            _ => MessageId::from_bytes(&envelope.message_id),
        };
        let violation_events: Vec<Event> = match checked {
            Some(id) if !violations.is_empty() => {
                self.keep_evidence(from, id, &envelope, &plaintext, &violations)?;
                violations
                    .into_iter()
                    .map(|violation| Event::Violation {
                        from,
                        id,
                        violation,
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        // Signed (if billed) only when the content was used: never for one
        // refused by its labels or that did not decode. A Status key is
        // signed for only when it is kept to be shown: one ignored
        // (expired, not subscribed to, malformed) was not used, and is
        // acked rejected (the relay deletes it unbilled).
        let used = labels_ok
            && !matches!(
                event,
                Some(Event::Undecryptable { .. } | Event::Refused { .. })
            );
        let status_shown = matches!(event, Some(Event::StatusPosted { .. }));
        let ack = match (used, status_key) {
            (true, false) => self.ack_frame(&envelope, true, false),
            (true, true) if status_shown => self.ack_frame(&envelope, true, true),
            _ => self.ack_frame(&envelope, false, false),
        };
        save_session(&self.store, &from, device, &record)?;
        self.prekeys.commit(&self.store)?;
        drop(peer_lock);
        // One sync for the copy's use and the proof its ack carries.
        self.store.flush().await?;
        self.send_ack(&ack).await?;
        // A copy of a template message another device sent: have its
        // template cached, to check the customer's quick replies to it.
        if let Some(Event::SentElsewhere { to, id, .. }) = &event
            && let Some(template) = template_cache::template_of_message(&self.store, to, id)?
            && let Err(e) = self.cached_template(self.account.id(), &template).await
        {
            self.events.push_back(Event::Warning(format!(
                "template {} of a message sent from another device could not be fetched: {e}",
                template.to_hex()
            )));
        }
        // The address book another device asked for: queued with this
        // delivery's records, sent now (or at the next connect).
        if matches!(event, Some(Event::ContactsShared { .. }))
            && let Err(e) = self.send_queued_controls().await
            && !super::sender::is_connection_lost(&e)
        {
            return Err(e);
        }
        self.events.extend(event);
        self.events.extend(violation_events);
        while let Some((peer, asking, failed)) = self.resends.pop_front() {
            if let Err(e) = self.resend(peer, asking, failed).await {
                self.events.push_back(Event::Warning(format!(
                    "could not send message {failed} to {peer} again: {e}"
                )));
            }
        }
        Ok(())
    }

    /// The window or consent rule a business's message breaks, if any
    /// ([`rule_checks`]).
    fn rule_violation(&self, from: AccountId, envelope: &Envelope) -> Result<Option<Violation>> {
        let category = envelope.category();
        if !matches!(
            category,
            Category::Service | Category::Utility | Category::Authentication | Category::Marketing
        ) {
            return Ok(None);
        }
        rule_checks::check(&self.store, &from, category, envelope.server_timestamp_ms)
    }

    /// Keep a message that breaks `violations` as evidence for a report.
    fn keep_evidence(
        &mut self,
        from: AccountId,
        id: MessageId,
        envelope: &Envelope,
        plaintext: &[u8],
        violations: &[Violation],
    ) -> Result<()> {
        let refusal = violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let saved = evidence::save(
            &self.store,
            &Evidence {
                from,
                envelope: envelope.clone(),
                plaintext: plaintext.to_vec().into(),
                refusal,
                label: None,
                stored_at_ms: now_ms(),
            },
        )?;
        if let Some(warning) = saved.warning(from, id, "breaks a rule") {
            self.events.push_back(Event::Warning(warning));
        }
        Ok(())
    }

    /// Store an incoming message shown as `text`.
    pub(super) fn store_incoming(
        &self,
        from: AccountId,
        id: MessageId,
        text: &str,
        sent_at_ms: u64,
    ) -> Result<()> {
        let message = StoredMessage {
            id,
            peer: from,
            outgoing: false,
            body: text.to_owned(),
            sent_at_ms,
            stored_at_ms: now_ms(),
            status: Status::Delivered,
            sequence: self.store.next_sequence()?,
        };
        messages::save(&self.store, &message)
    }

    /// A template instance from `from`: checked against the cached
    /// approved template with the pinned operator key. One that checks out
    /// is stored as its rendered text and reported as [`Event::Template`];
    /// one that does not is stored and reported as a message saying so,
    /// with the violation.
    fn apply_template(
        &self,
        from: AccountId,
        id: MessageId,
        sent_at_ms: u64,
        envelope: &Envelope,
        instance: &TemplateInstance,
        violations: &mut Vec<Violation>,
    ) -> Result<Option<Event>> {
        let operator = crate::operator_pin::pinned(&self.store)?;
        let cached = TemplateId::from_hex(&envelope.template_id)
            .map(|template| template_cache::get(&self.store, &template))
            .transpose()?
            .flatten();
        let checked = template_cache::check_instance(
            operator.as_ref(),
            cached.as_ref(),
            &from,
            envelope.category(),
            &envelope.template_id,
            instance,
        );
        match checked {
            Ok((template, rendered)) => {
                let template_id = template.template_id()?;
                self.store_incoming(
                    from,
                    id,
                    &template_cache::rendered_text(&rendered),
                    sent_at_ms,
                )?;
                template_cache::record_message(&self.store, &from, &id, &template_id)?;
                Ok(Some(Event::Template {
                    from,
                    id,
                    template_id,
                    rendered,
                    sent_at_ms,
                }))
            }
            Err(violation) => {
                let text = format!("[a template message that does not check out: {violation}]");
                violations.push(violation);
                self.store_incoming(from, id, &text, sent_at_ms)?;
                // Flagged as a violation already; a business's template is
                // never a message request (the relay holds it to consent or
                // the window, both of which make the business known).
                Ok(Some(Event::Message {
                    from,
                    id,
                    text,
                    sent_at_ms,
                    request: false,
                }))
            }
        }
    }

    /// A customer's quick reply to a template message this account sent:
    /// checked against that template, stored as the button's text and
    /// reported as [`Event::QuickReply`]; a forged one is only reported as
    /// a violation.
    fn apply_button_reply(
        &self,
        from: AccountId,
        id: MessageId,
        sent_at_ms: u64,
        reply: &ButtonReply,
        violations: &mut Vec<Violation>,
    ) -> Result<Option<Event>> {
        let Some(reply_to) = MessageId::from_bytes(&reply.message_id) else {
            violations.push(Violation::QuickReplyToUnknownMessage);
            return Ok(None);
        };
        let sent = messages::get(&self.store, &from, &reply_to)?.is_some_and(|m| m.outgoing);
        let template = match template_cache::template_of_message(&self.store, &from, &reply_to)? {
            Some(template_id) if sent => template_cache::get(&self.store, &template_id)?
                .and_then(|cached| cached.template())
                .map(|template| (template_id, template)),
            _ => None,
        };
        let Some((template_id, template)) = template else {
            violations.push(Violation::QuickReplyToUnknownMessage);
            return Ok(None);
        };
        match check_quick_reply(&template, reply) {
            Ok(text) => {
                self.store_incoming(from, id, text, sent_at_ms)?;
                Ok(Some(Event::QuickReply {
                    from,
                    id,
                    reply_to,
                    template_id,
                    button_index: reply.button_index,
                    text: text.to_owned(),
                }))
            }
            Err(reason) => {
                violations.push(Violation::QuickReplyInvalid { reason });
                Ok(None)
            }
        }
    }

    /// Store what a decrypted content says; returns the event to report.
    fn apply_content(
        &mut self,
        from: AccountId,
        device: u32,
        id: MessageId,
        content: Content,
        envelope: &Envelope,
        violations: &mut Vec<Violation>,
    ) -> Result<Option<Event>> {
        match content.body {
            Some(content::Body::Template(instance)) => self.apply_template(
                from,
                id,
                content.sent_at_ms,
                envelope,
                &instance,
                violations,
            ),
            Some(content::Body::ButtonReply(reply)) => {
                self.apply_button_reply(from, id, content.sent_at_ms, &reply, violations)
            }
            Some(content::Body::Interactive(message)) => {
                self.apply_interactive(from, id, content.sent_at_ms, envelope, message, violations)
            }
            Some(content::Body::InteractiveReply(reply)) => {
                self.apply_interactive_reply(from, id, content.sent_at_ms, &reply, violations)
            }
            Some(content::Body::Attachment(pointer)) => {
                let category = envelope.category();
                if is_template_category(category) {
                    violations.push(Violation::NotATemplate { category });
                }
                let text = crate::attachments::summary(&pointer);
                self.store_incoming(from, id, &text, content.sent_at_ms)?;
                crate::attachments::put(&self.store, &from, &id, &pointer)?;
                let request = crate::requests::note_incoming(
                    &self.store,
                    &self.account.id(),
                    &from,
                    now_ms(),
                )?;
                Ok(Some(Event::Attachment {
                    from,
                    id,
                    file_name: pointer.file_name,
                    content_type: pointer.content_type,
                    size: pointer.size,
                    sent_at_ms: content.sent_at_ms,
                    request,
                }))
            }
            Some(content::Body::Text(Text { body })) => {
                let category = envelope.category();
                if is_template_category(category) {
                    violations.push(Violation::NotATemplate { category });
                }
                self.store_incoming(from, id, &body, content.sent_at_ms)?;
                let request = crate::requests::note_incoming(
                    &self.store,
                    &self.account.id(),
                    &from,
                    now_ms(),
                )?;
                Ok(Some(Event::Message {
                    from,
                    id,
                    text: body,
                    sent_at_ms: content.sent_at_ms,
                    request,
                }))
            }
            Some(content::Body::SentTranscript(transcript)) if from == self.account.id() => {
                let (Ok(to), Some(inner)) = (
                    AccountId::from_bytes(&transcript.peer_account),
                    transcript.content,
                ) else {
                    return Ok(Some(Event::Warning(
                        "a malformed copy from another device of this account".into(),
                    )));
                };
                let body = match inner.body {
                    Some(content::Body::Text(Text { body })) => body,
                    // A template message: which template, so that this
                    // device checks the customer's quick replies too.
                    Some(content::Body::SentTemplate(SentTemplate {
                        instance: Some(instance),
                        text,
                    })) => {
                        if let Some(template) = TemplateId::from_hex(&instance.template_id) {
                            template_cache::record_message(&self.store, &to, &id, &template)?;
                        }
                        text
                    }
                    Some(content::Body::Interactive(message)) => {
                        if interactive::validate(&message).is_ok() {
                            interactive_messages::record(&self.store, &to, &id, &message)?;
                        }
                        interactive::render_text(&message)
                    }
                    Some(content::Body::ReadReceipt(receipt)) => {
                        let mut count = 0;
                        for raw in &receipt.message_ids {
                            if let Some(read) = MessageId::from_bytes(raw)
                                && messages::get(&self.store, &to, &read)?
                                    .is_some_and(|m| !m.outgoing)
                                && messages::advance(&self.store, &to, &read, Status::Read)?
                                    .is_some()
                            {
                                count += 1;
                            }
                        }
                        return Ok((count > 0).then_some(Event::ReadElsewhere { peer: to, count }));
                    }
                    _ => return Ok(None),
                };
                if messages::contains(&self.store, &to, &id)? {
                    return Ok(None);
                }
                let message = StoredMessage {
                    id,
                    peer: to,
                    outgoing: true,
                    body: body.clone(),
                    sent_at_ms: content.sent_at_ms,
                    stored_at_ms: now_ms(),
                    status: Status::Accepted,
                    sequence: self.store.next_sequence()?,
                };
                messages::save(&self.store, &message)?;
                Ok(Some(Event::SentElsewhere {
                    to,
                    id,
                    text: body,
                    sent_at_ms: content.sent_at_ms,
                }))
            }
            Some(content::Body::ContactsRequest(_)) => self.answer_contacts_request(from, device),
            Some(content::Body::ContactsSync(sync)) => self.apply_contacts_sync(from, &sync),
            Some(content::Body::AppSync(sync)) => Ok(self.accept_app_sync(from, device, sync)),
            Some(
                body @ (content::Body::StatusKey(_)
                | content::Body::StatusDeleted(_)
                | content::Body::StatusViewed(_)),
            ) => self.apply_status(from, envelope, body),
            Some(content::Body::RekeyRequest(request)) => {
                let failed = MessageId::from_bytes(&request.failed_message_id);
                if let Some(failed) = failed
                    && messages::get(&self.store, &from, &failed)?.is_some_and(|m| m.outgoing)
                {
                    self.resends.push_back((from, device, failed));
                }
                Ok(None)
            }
            Some(content::Body::ReadReceipt(receipt)) => {
                let mut ids = Vec::new();
                // Only messages this device sent to `from`: a peer must not
                // mark its own messages as read here.
                for raw in &receipt.message_ids {
                    if let Some(read) = MessageId::from_bytes(raw)
                        && messages::get(&self.store, &from, &read)?.is_some_and(|m| m.outgoing)
                        && messages::advance(&self.store, &from, &read, Status::Read)?.is_some()
                    {
                        ids.push(read);
                    }
                }
                Ok((!ids.is_empty()).then_some(Event::Read { by: from, ids }))
            }
            _ => Ok(Some(Event::Warning(format!(
                "{from} sent a kind of message this client does not handle yet"
            )))),
        }
    }

    /// The identity a sender's device must have, from the pinned signed
    /// device list (fetched from the relay if the device is not known).
    async fn expected_identity(&mut self, from: AccountId, device: u32) -> Result<Expected> {
        if let Some(peer) = peers::load(&self.store, &from)?
            && let Some(key) = peer.devices.device(device)
        {
            return Ok(Expected::Key(Box::new(*key)));
        }
        match self.refresh_peer(from).await? {
            Observed::IdentityChanged => Ok(Expected::IdentityChanged),
            Observed::Pinned | Observed::Current => {
                let peer = peers::load(&self.store, &from)?;
                Ok(match peer.as_ref().and_then(|p| p.devices.device(device)) {
                    Some(key) => Expected::Key(Box::new(*key)),
                    None => Expected::NotListed,
                })
            }
        }
    }

    /// Fetch a peer's signed device list from the relay and check it
    /// against the pinned account key.
    pub async fn refresh_peer(&mut self, peer: AccountId) -> Result<Observed> {
        let reply = self
            .request(
                client_frame::Body::GetDeviceList(GetDeviceList {
                    account_id: peer.to_vec(),
                }),
                "the device list",
            )
            .await?;
        let server_frame::Body::DeviceList(list) = reply else {
            return Err(unexpected("DeviceList", &reply));
        };
        self.observe(peer, &list)
    }

    pub(super) fn observe(
        &mut self,
        peer: AccountId,
        list: &wire::SignedDeviceList,
    ) -> Result<Observed> {
        self.live().observe(peer, list)
    }
}
