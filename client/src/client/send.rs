//! Sending from the client's own task: text messages (through the same
//! logic as [`super::Sender`]), the outbox (messages, then read receipts
//! and copies for this account's other devices), and read receipts.

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{Content, ReadReceipt, content};

use crate::control_outbox;
use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::messages::{self, MessageId, Status};

use super::sender::is_connection_lost;
use super::{Client, now_ms};

impl Client {
    /// Write a text message to `peer`: it is stored (pending) and put in
    /// the outbox first, then sent if connected. Offline, it is sent by the
    /// next [`Self::connect`]. To send from several tasks at once, use
    /// [`Self::sender`].
    pub async fn send_text(&mut self, peer: AccountId, text: &str) -> Result<MessageId> {
        let sent = self.live().send_text(peer, text).await;
        self.note_connection(&sent);
        sent
    }

    /// [`Self::send_text`] for a caller that must name the message even
    /// when its send failed: once the message is stored, its id comes with
    /// the send's result. An error there after a lost connection
    /// ([`ClientError::ConnectionClosed`], [`ClientError::Timeout`]) means
    /// the message waits in the outbox, durably, and goes (once) at the
    /// next [`Self::connect`]; a refusal for good marks it failed. The
    /// outer error means the message was refused before it was stored (an
    /// identity change, a text too long) or the store failed.
    pub async fn send_text_naming(
        &mut self,
        peer: AccountId,
        text: &str,
    ) -> Result<(MessageId, Result<()>)> {
        messages::check_text(text)?;
        let (id, sent) = self.live().store_and_send(peer, text, None).await?;
        self.note_connection(&sent);
        Ok((id, sent))
    }

    /// Forget the connection if `result` says it ended.
    pub(super) fn note_connection<T>(&mut self, result: &Result<T>) {
        if matches!(result, Err(ClientError::ConnectionClosed(_))) {
            self.conn = None;
        }
    }

    /// Send everything in the outbox (oldest first), then the queued read
    /// receipts and copies for this account's other devices. A message
    /// refused for good (blocked) is marked failed; a lost connection stops
    /// the flush (what is left goes at the next connect).
    pub async fn flush_outbox(&mut self) -> Result<()> {
        let mut pending = messages::outbox(&self.store)?;
        let mut order = Vec::with_capacity(pending.len());
        for (peer, id, _) in &pending {
            let at = messages::get(&self.store, peer, id)?.map_or(0, |m| m.sequence);
            order.push(at);
        }
        let mut indexed: Vec<_> = order.into_iter().zip(pending.drain(..)).collect();
        indexed.sort_by_key(|(at, _)| *at);
        let live = self.live();
        for (_, (peer, id, frame)) in indexed {
            match live.send_from_outbox(peer, id, frame).await {
                Ok(()) => {}
                Err(e) if is_connection_lost(&e) => {
                    let failed = Err(e);
                    self.note_connection(&failed);
                    return failed;
                }
                Err(e) => self.events.push_back(Event::Warning(format!(
                    "message {id} to {peer} not sent: {e}"
                ))),
            }
        }
        self.send_queued_controls().await
    }

    /// Send the queued read receipts and copies for this account's other
    /// devices (see [`control_outbox`]), oldest first. A lost connection
    /// stops (what is left goes at the next connect); other refusals are
    /// reported as warnings.
    pub(super) async fn send_queued_controls(&mut self) -> Result<()> {
        let live = self.live();
        for queued in control_outbox::all(&self.store)? {
            let to = queued.recipient;
            match live.send_control(queued).await {
                Ok(()) => {}
                Err(e) if is_connection_lost(&e) => {
                    let failed = Err(e);
                    self.note_connection(&failed);
                    return failed;
                }
                Err(e) => self.events.push_back(Event::Warning(format!(
                    "a read receipt or copy for {to} not sent: {e}"
                ))),
            }
        }
        Ok(())
    }

    /// Mark `peer`'s messages read here and tell `peer` (end-to-end
    /// encrypted) and this account's other devices. The receipt and the
    /// copy go through the outbox like messages: offline, or if the
    /// connection drops, they wait there for the next connect. Returns how
    /// many were marked; an error means the receipt was refused (the
    /// messages stay read here).
    pub async fn mark_read(&mut self, peer: AccountId) -> Result<usize> {
        // A message request is not acknowledged as read until accepted.
        if matches!(
            crate::requests::standing(&self.store, &self.account.id(), &peer)?,
            crate::requests::Standing::Pending { .. }
        ) {
            return Ok(0);
        }
        let unread: Vec<MessageId> = messages::history(&self.store, &peer)?
            .into_iter()
            .filter(|m| !m.outgoing && m.status < Status::Read)
            .map(|m| m.id)
            .collect();
        if unread.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let id = MessageId::generate();
        let content = Content {
            message_id: id.0.to_vec(),
            sent_at_ms: now,
            body: Some(content::Body::ReadReceipt(ReadReceipt {
                message_ids: unread.iter().map(|m| m.0.to_vec()).collect(),
                read_at_ms: now,
            })),
            labels: None,
            franking_key: Vec::new(),
            padding: Vec::new(),
        };
        let live = self.live();
        // Read here, the receipt and the copy queued: one commit.
        for read in &unread {
            messages::advance(&self.store, &peer, read, Status::Read)?;
        }
        let receipt = control_outbox::put(&self.store, peer, id, content, now)?;
        let copy = live.queue_read_copy(peer, &unread, now)?;
        self.store.flush().await?;
        if live.requester.is_none() {
            return Ok(unread.len());
        }
        let sent = live.send_control(receipt).await;
        let copied = match copy {
            Some(copy) if !sent.as_ref().is_err_and(is_connection_lost) => {
                live.send_control(copy).await
            }
            _ => Ok(()),
        };
        match copied {
            Err(e) if is_connection_lost(&e) => self.note_connection(&Err::<(), _>(e)),
            Err(e) => self.events.push_back(Event::Warning(format!(
                "read state not copied to this account's other devices: {e}"
            ))),
            Ok(()) => {}
        }
        match sent {
            Ok(()) => Ok(unread.len()),
            Err(e) if is_connection_lost(&e) => {
                self.note_connection(&Err::<(), _>(e));
                Ok(unread.len())
            }
            Err(e) => Err(e),
        }
    }
}
