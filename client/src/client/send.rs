//! Sending: the outbox, sessions with every device of the recipient, one
//! ciphertext per device, and read receipts.

use comptoir_protocol::proto::content::{Content, ReadReceipt, Text, content};
use comptoir_protocol::proto::wire::{
    AccountKind, Category, DeviceCiphertext, ErrorCode, FetchPreKeys, PreKeyBundle, Send,
    client_frame, server_frame,
};
use comptoir_protocol::{AccountId, VerifiedBundle, labels};
use prost::Message;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::messages::{self, MessageId, Status, StoredMessage};
use crate::peers::{self, Observed};
use crate::session_store::{load_session, save_session};

use super::{Client, MAX_TEXT_LEN, now_ms, unexpected};

/// Plaintexts are padded to a multiple of this, hiding their exact length.
const PADDING_BLOCK: usize = 64;

/// Random-free padding up to the next multiple of [`PADDING_BLOCK`]: the
/// length is what is hidden, so the bytes can be zero.
fn padding(len: usize) -> Vec<u8> {
    let overhead = 3; // field tag and a short length prefix
    let total = len + overhead;
    vec![0u8; (PADDING_BLOCK - total % PADDING_BLOCK) % PADDING_BLOCK]
}

/// Refusals that sending the same message again cannot fix: the message
/// is marked failed instead of staying in the outbox.
fn is_permanent(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::UnknownAccount
            | ErrorCode::MalformedFrame
            | ErrorCode::FrameTooLarge
            | ErrorCode::BadSignature
            | ErrorCode::InvalidRequest
            | ErrorCode::NoConsent
            | ErrorCode::TemplateNotApproved
    )
}

impl Client {
    /// The category of free-form text from this account: a business
    /// replies as service (the relay refuses it person-to-person
    /// conversation), everyone else converses.
    pub(super) fn text_category(&self) -> Category {
        if self.kind == AccountKind::Business {
            Category::Service
        } else {
            Category::Conversation
        }
    }

    /// Write a text message to `peer`: it is stored (pending) and put in
    /// the outbox first, then sent if connected. Offline, it is sent by the
    /// next [`Self::connect`].
    pub async fn send_text(&mut self, peer: AccountId, text: &str) -> Result<MessageId> {
        if text.is_empty() || text.len() > MAX_TEXT_LEN {
            return Err(ClientError::InvalidArgument(format!(
                "a message is 1 to {MAX_TEXT_LEN} bytes"
            )));
        }
        if peers::load(&self.store, &peer)?.is_some_and(|p| p.identity_changed) {
            return Err(ClientError::IdentityChanged { account: peer });
        }
        let id = MessageId::generate();
        let message = StoredMessage {
            id,
            peer,
            outgoing: true,
            body: text.to_string(),
            sent_at_ms: now_ms(),
            stored_at_ms: now_ms(),
            status: Status::Pending,
            sequence: self.store.next_sequence()?,
        };
        messages::save(&self.store, &message)?;
        messages::outbox_put(&self.store, &peer, &id, &[])?;
        self.store.flush().await?;
        if self.conn.is_some() {
            self.send_from_outbox(peer, id, Vec::new()).await?;
        }
        Ok(id)
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
        for (_, (peer, id, frame)) in indexed {
            match self.send_from_outbox(peer, id, frame).await {
                Ok(()) => {}
                Err(
                    e @ (ClientError::ConnectionClosed(_)
                    | ClientError::NotConnected
                    | ClientError::Timeout(_)),
                ) => return Err(e),
                Err(e) => self.events.push_back(Event::Warning(format!(
                    "message {id} to {peer} not sent: {e}"
                ))),
            }
        }
        Ok(())
    }

    async fn send_from_outbox(
        &mut self,
        peer: AccountId,
        id: MessageId,
        cached: Vec<u8>,
    ) -> Result<()> {
        let mut cached = cached;
        for _attempt in 0..2 {
            let send = if cached.is_empty() {
                let Some(message) = messages::get(&self.store, &peer, &id)? else {
                    messages::outbox_remove(&self.store, &peer, &id)?;
                    return Ok(());
                };
                let content = Content {
                    message_id: id.0.to_vec(),
                    sent_at_ms: message.sent_at_ms,
                    body: Some(content::Body::Text(Text { body: message.body })),
                    labels: None,
                    padding: Vec::new(),
                };
                let category = self.text_category();
                let send = self
                    .encrypt_for(peer, id, content, category, message.sent_at_ms)
                    .await?;
                messages::outbox_put(&self.store, &peer, &id, &send.encode_to_vec())?;
                self.store.flush().await?;
                send
            } else {
                Send::decode(cached.as_slice())
                    .map_err(|e| ClientError::CorruptStore(format!("outbox entry: {e}")))?
            };
            match self
                .request(client_frame::Body::Send(send), "the message")
                .await
            {
                Ok(server_frame::Body::Accepted(_)) => {
                    let sent = messages::advance(&self.store, &peer, &id, Status::Accepted)?;
                    messages::outbox_remove(&self.store, &peer, &id)?;
                    self.store.flush().await?;
                    self.events.push_back(Event::Accepted { to: peer, id });
                    if let Some(sent) = sent
                        && let Err(e) = self.sync_sent(&sent).await
                    {
                        self.events.push_back(Event::Warning(format!(
                            "message {id} not copied to this account's other devices: {e}"
                        )));
                    }
                    return Ok(());
                }
                Ok(other) => return Err(unexpected("Accepted", &other)),
                Err(ClientError::Relay {
                    code: ErrorCode::Blocked,
                    ..
                }) => {
                    messages::advance(&self.store, &peer, &id, Status::Failed)?;
                    messages::outbox_remove(&self.store, &peer, &id)?;
                    self.store.flush().await?;
                    return Err(ClientError::Blocked { recipient: peer });
                }
                Err(ClientError::Relay { code, message }) if is_permanent(code) => {
                    messages::advance(&self.store, &peer, &id, Status::Failed)?;
                    messages::outbox_remove(&self.store, &peer, &id)?;
                    self.store.flush().await?;
                    return Err(ClientError::Relay { code, message });
                }
                Err(ClientError::DeviceListMismatch { current }) => {
                    // The peer added or removed a device: adopt the signed
                    // list (if it checks out) and encrypt again.
                    if self.observe(peer, &current)? == Observed::IdentityChanged {
                        return Err(ClientError::IdentityChanged { account: peer });
                    }
                    messages::outbox_put(&self.store, &peer, &id, &[])?;
                    cached = Vec::new();
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::UnexpectedFrame(
            "the relay refused the device list twice".into(),
        ))
    }

    /// The devices of `peer` this device has no sending session with, by
    /// the last verified list; `None` if the peer's list is not known yet.
    fn devices_without_session(&self, peer: AccountId) -> Result<Option<Vec<u32>>> {
        let Some(state) = peers::load(&self.store, &peer)? else {
            return Ok(None);
        };
        if state.identity_changed {
            return Err(ClientError::IdentityChanged { account: peer });
        }
        let mut missing = Vec::new();
        for device in self.target_devices(peer, &state.devices) {
            if !load_session(&self.store, &peer, device)?.can_send() {
                missing.push(device);
            }
        }
        Ok(Some(missing))
    }

    /// Make sure there is a sending session with every device of `peer`,
    /// fetching prekey bundles (and the signed device list) when needed:
    /// only for the devices without one, so the others keep their one-time
    /// prekeys. A second round covers devices the fetched list revealed.
    async fn ensure_sessions(&mut self, peer: AccountId) -> Result<()> {
        for _ in 0..2 {
            let wanted = match self.devices_without_session(peer)? {
                Some(missing) if missing.is_empty() => return Ok(()),
                Some(missing) => missing,
                None => Vec::new(),
            };
            self.start_sessions(peer, &wanted).await?;
        }
        Ok(())
    }

    /// Fetch bundles for `devices` of `peer` (every device if empty) and
    /// start a session with each device that has none.
    async fn start_sessions(&mut self, peer: AccountId, devices: &[u32]) -> Result<()> {
        let (bundles, state) = self.fetch_bundles(peer, devices).await?;
        for bundle in &bundles {
            if bundle.account_id != peer.to_vec() || self.is_self(peer, bundle.device_id) {
                continue;
            }
            let Some(expected) = state.devices.device(bundle.device_id) else {
                continue;
            };
            let mut record = load_session(&self.store, &peer, bundle.device_id)?;
            if record.can_send() {
                continue;
            }
            let verified = VerifiedBundle::verify(bundle, Some(expected))?;
            record.initiate(self.account.identity(), &verified, &mut rand::rng())?;
            save_session(&self.store, &peer, bundle.device_id, &record)?;
        }
        Ok(())
    }

    /// Encrypt `content` once per device of `peer`, saving each session.
    pub(super) async fn encrypt_for(
        &mut self,
        peer: AccountId,
        id: MessageId,
        mut content: Content,
        category: Category,
        sent_at_ms: u64,
    ) -> Result<Send> {
        self.ensure_sessions(peer).await?;
        let state = peers::load(&self.store, &peer)?.ok_or(ClientError::UnknownPeer(peer))?;
        // The envelope labels, bound inside the encryption: the receiver
        // refuses the message if the relay shows it under other ones.
        let (template_id, franking_tag) = (String::new(), Vec::new());
        content.labels = Some(labels::bind(
            &id.0,
            self.account.id().as_bytes(),
            peer.as_bytes(),
            category,
            &template_id,
            &franking_tag,
        ));
        content.padding = padding(content.encoded_len());
        let plaintext = Zeroizing::new(content.encode_to_vec());
        let targets = self.target_devices(peer, &state.devices);
        let mut devices = Vec::with_capacity(targets.len());
        for device in targets {
            let mut record = load_session(&self.store, &peer, device)?;
            let ciphertext = record.encrypt(&plaintext, &mut rand::rng())?;
            save_session(&self.store, &peer, device, &record)?;
            devices.push(DeviceCiphertext {
                device_id: device,
                ciphertext,
            });
        }
        Ok(Send {
            message_id: id.0.to_vec(),
            recipient_account: peer.to_vec(),
            client_timestamp_ms: sent_at_ms,
            category: category as i32,
            template_id,
            franking_tag,
            devices,
        })
    }

    /// Tell `peer` (end-to-end encrypted) that its messages were read, and
    /// mark them read here. Returns how many were marked.
    pub async fn mark_read(&mut self, peer: AccountId) -> Result<usize> {
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
            padding: Vec::new(),
        };
        let send = self
            .encrypt_for(peer, id, content, Category::Control, now)
            .await?;
        self.store.flush().await?;
        match self
            .request(client_frame::Body::Send(send), "the read receipt")
            .await?
        {
            server_frame::Body::Accepted(_) => {}
            other => return Err(unexpected("Accepted", &other)),
        }
        for read in &unread {
            messages::advance(&self.store, &peer, read, Status::Read)?;
        }
        self.store.flush().await?;
        if let Err(e) = self.sync_read(peer, &unread).await {
            self.events.push_back(Event::Warning(format!(
                "read state not copied to this account's other devices: {e}"
            )));
        }
        Ok(unread.len())
    }
}

impl Client {
    /// Fetch the prekey bundles of `devices` of `peer` (every device if
    /// empty), check the signed device list that comes with them (pinned
    /// account key, version), and return the bundles with the peer's
    /// updated state. An identity change is an error the user must
    /// acknowledge first.
    pub(super) async fn fetch_bundles(
        &mut self,
        peer: AccountId,
        devices: &[u32],
    ) -> Result<(Vec<PreKeyBundle>, peers::Peer)> {
        let reply = self
            .request(
                client_frame::Body::FetchPrekeys(FetchPreKeys {
                    account_id: peer.to_vec(),
                    device_ids: devices.to_vec(),
                }),
                "the prekey bundles",
            )
            .await?;
        let server_frame::Body::PrekeyBundles(bundles) = reply else {
            return Err(unexpected("PreKeyBundles", &reply));
        };
        let list = bundles.device_list.ok_or_else(|| {
            ClientError::UnexpectedFrame("prekey bundles without a signed device list".into())
        })?;
        if self.observe(peer, &list)? == Observed::IdentityChanged {
            return Err(ClientError::IdentityChanged { account: peer });
        }
        let state = peers::load(&self.store, &peer)?.ok_or(ClientError::UnknownPeer(peer))?;
        Ok((bundles.bundles, state))
    }
}
