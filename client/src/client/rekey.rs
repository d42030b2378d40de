//! Recovery of a wedged session: ask for a fresh session naming the
//! message that failed, and send a message again when asked.

use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::messages::{self, MessageId, Status};
use comptoir_protocol::proto::content::{Content, RekeyRequest, Text, content};
use comptoir_protocol::proto::wire::{Category, client_frame, server_frame};
use comptoir_protocol::{AccountId, VerifiedBundle};

use crate::session_store::{load_session, save_session};

use super::rekey_guard::{Decision, RekeyGuard};
use super::{Client, now_ms, unexpected};

impl Client {
    /// A message from `peer`'s `device` could not be decrypted: start a
    /// fresh session with that device and ask it (over the new session) to
    /// send message `failed` again.
    pub(super) async fn request_rekey(
        &mut self,
        peer: AccountId,
        device: u32,
        failed: MessageId,
    ) -> Result<()> {
        // Counted before the fetch: the fetch is what uses up one of the
        // peer's one-time prekeys, whether or not the request gets out.
        let stranger = peer != self.account.id()
            && crate::rule_checks::last_wrote(&self.store, &peer)?.is_none();
        let mut guard = RekeyGuard::load(&self.store)?;
        let decision = guard.allow_rekey(&peer, device, &failed, stranger, now_ms());
        if decision != Decision::Allowed {
            self.events.push_back(Event::Warning(format!(
                "no fresh session asked of {peer} device {device} for message {failed}: {}",
                decision.reason()
            )));
            return Ok(());
        }
        guard.save(&self.store)?;
        self.store.flush().await?;
        // Only this device's bundle: the others keep their one-time keys.
        let live = self.live();
        let (bundles, state) = live.fetch_bundles(peer, &[device]).await?;
        let expected = state
            .devices
            .device(device)
            .ok_or(ClientError::UnknownPeer(peer))?;
        let bundle = bundles
            .iter()
            .find(|b| b.device_id == device && b.account_id == peer.to_vec())
            .ok_or_else(|| {
                ClientError::UnexpectedFrame(format!("no bundle for device {device}"))
            })?;
        let verified = VerifiedBundle::verify(bundle, Some(expected))?;
        {
            let _peer = live.locks.lock(peer).await;
            let mut record = load_session(&self.store, &peer, device)?;
            record.initiate(self.account.identity(), &verified, &mut rand::rng())?;
            save_session(&self.store, &peer, device, &record)?;
        }
        let id = MessageId::generate();
        let now_ms = now_ms();
        let content = Content {
            message_id: id.0.to_vec(),
            sent_at_ms: now_ms,
            body: Some(content::Body::RekeyRequest(RekeyRequest {
                failed_message_id: failed.0.to_vec(),
            })),
            labels: None,
            franking_key: Vec::new(),
            padding: Vec::new(),
        };
        let send = live
            .encrypt_for(peer, id, content, Category::Control, now_ms)
            .await?;
        self.store.flush().await?;
        match self
            .request(client_frame::Body::Send(send), "the re-key request")
            .await?
        {
            server_frame::Body::Accepted(_) => {
                self.events.push_back(Event::SessionReset {
                    peer,
                    device,
                    failed,
                });
                Ok(())
            }
            other => Err(unexpected("Accepted", &other)),
        }
    }

    /// Send message `failed` to `peer` again (over the session the peer's
    /// `device` just started), from this device's history. The envelope
    /// gets a new id (the relay already holds the old one); the content
    /// keeps the original, so devices that have it recognise the copy.
    /// Each message is re-sent at most once per asking device, within the
    /// limits of [`RekeyGuard`].
    pub(super) async fn resend(
        &mut self,
        peer: AccountId,
        device: u32,
        failed: MessageId,
    ) -> Result<()> {
        let Some(message) = messages::get(&self.store, &peer, &failed)? else {
            return Ok(());
        };
        if !message.outgoing {
            return Ok(());
        }
        let mut guard = RekeyGuard::load(&self.store)?;
        let decision = guard.allow_resend(&peer, device, &failed, now_ms());
        if decision != Decision::Allowed {
            self.events.push_back(Event::Warning(format!(
                "message {failed} not sent again to {peer} device {device}: {}",
                decision.reason()
            )));
            return Ok(());
        }
        guard.save(&self.store)?;
        let live = self.live();
        // A template instance or quick reply goes again as itself, under
        // its own labels.
        let (body, category, template_id) =
            match crate::outgoing_bodies::get(&self.store, &peer, &failed)? {
                Some(kept) => (kept.body, kept.category, kept.template_id),
                None => (
                    content::Body::Text(Text {
                        body: message.body.clone(),
                    }),
                    live.text_category(),
                    String::new(),
                ),
            };
        let content = Content {
            message_id: failed.0.to_vec(),
            sent_at_ms: message.sent_at_ms,
            body: Some(body),
            labels: None,
            franking_key: Vec::new(),
            padding: Vec::new(),
        };
        let envelope_id = MessageId::generate();
        let mut send = live
            .encrypt_for_then(
                peer,
                envelope_id,
                content,
                (category, &template_id),
                message.sent_at_ms,
                |_| Ok(()),
            )
            .await?;
        // Sent again, not written again: it does not open a window.
        send.resend = true;
        self.store.flush().await?;
        match self
            .request(client_frame::Body::Send(send), "the message")
            .await?
        {
            server_frame::Body::Accepted(_) => {
                messages::advance(&self.store, &peer, &failed, Status::Accepted)?;
                self.store.flush().await?;
                self.events.push_back(Event::Resent {
                    to: peer,
                    id: failed,
                });
                Ok(())
            }
            other => Err(unexpected("Accepted", &other)),
        }
    }
}
