//! Sending from the client's own task: text messages (through the same
//! logic as [`super::Sender`]), the outbox, and read receipts.

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{Content, ReadReceipt, content};
use comptoir_protocol::proto::wire::{Category, client_frame, server_frame};

use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::messages::{self, MessageId, Status};
use crate::peers::Observed;

use super::{Client, now_ms, unexpected};

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

    /// Forget the connection if `result` says it ended.
    pub(super) fn note_connection<T>(&mut self, result: &Result<T>) {
        if matches!(result, Err(ClientError::ConnectionClosed(_))) {
            self.conn = None;
        }
    }

    /// Send everything in the outbox (oldest first). A message refused for
    /// good (blocked) is marked failed; a lost connection stops the flush.
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
                Err(
                    e @ (ClientError::ConnectionClosed(_)
                    | ClientError::NotConnected
                    | ClientError::Timeout(_)),
                ) => {
                    let failed = Err(e);
                    self.note_connection(&failed);
                    return failed;
                }
                Err(e) => self.events.push_back(Event::Warning(format!(
                    "message {id} to {peer} not sent: {e}"
                ))),
            }
        }
        Ok(())
    }

    /// Tell `peer` (end-to-end encrypted) that its messages were read, and
    /// mark them read here. Returns how many were marked.
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
        let id = MessageId::generate();
        let now = now_ms();
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
        // Like every send: if the peer added or removed a device, adopt the
        // signed list the refusal carries (if it checks out) and encrypt
        // again.
        let mut sent = false;
        for _attempt in 0..2 {
            let send = live
                .encrypt_for(peer, id, content.clone(), Category::Control, now)
                .await?;
            self.store.flush().await?;
            match self
                .request(client_frame::Body::Send(send), "the read receipt")
                .await
            {
                Ok(server_frame::Body::Accepted(_)) => {
                    sent = true;
                    break;
                }
                Ok(other) => return Err(unexpected("Accepted", &other)),
                Err(ClientError::DeviceListMismatch { current }) => {
                    if live.observe(peer, &current)? == Observed::IdentityChanged {
                        return Err(ClientError::IdentityChanged { account: peer });
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if !sent {
            return Err(ClientError::UnexpectedFrame(
                "the relay refused the device list twice".into(),
            ));
        }
        for read in &unread {
            messages::advance(&self.store, &peer, read, Status::Read)?;
        }
        self.store.flush().await?;
        if let Err(e) = live.sync_read(peer, &unread).await {
            self.events.push_back(Event::Warning(format!(
                "read state not copied to this account's other devices: {e}"
            )));
        }
        Ok(unread.len())
    }
}
