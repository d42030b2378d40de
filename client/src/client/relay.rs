//! The connection to the relay: register, connect and authenticate,
//! requests and their replies, pushes, acknowledgements and prekey top-ups.

use std::time::Duration;

use comptoir_protocol::proto::wire::{
    AccountKind, AuthResponse, ClientFrame, Delivered, DeliveryAck, Envelope, ErrorCode,
    ReceiptAck, Register, ServerFrame, client_frame, server_frame,
};
use comptoir_protocol::{
    AccountId, DeliveryFields, InMemoryPreKeyStore, auth_payload, is_billed, register_payload,
    sign_delivery, sign_prekey, verify_delivery,
};
use tokio::time::Instant;

use crate::connection::Connection;
use crate::error::{ClientError, Result};
use crate::event::{DeliveryProof, Event};
use crate::franked::RelayTag;
use crate::messages::{self, MessageId, Status};
use crate::operator_pin::PinOutcome;
use crate::peers;
use crate::tls::RelayUrl;

use super::{
    Client, PREKEY_BATCH, PREKEY_LOW_WATER, REQUEST_TIMEOUT, now_ms, relay_error, unexpected,
};

impl Client {
    /// Create the account on the relay at `url` as a customer, then
    /// connect to it.
    pub async fn register(&mut self, url: &str) -> Result<()> {
        self.register_as(url, AccountKind::Customer).await
    }

    /// Create the account on the relay at `url` as `kind` (customer or
    /// business: fixed for the account's life), then connect to it.
    pub async fn register_as(&mut self, url: &str, kind: AccountKind) -> Result<()> {
        let list = self.account.signed_device_list()?;
        let (conn, challenge) =
            Connection::connect_with_keepalive(url, &self.tls, self.keepalive).await?;
        self.conn = Some(conn);
        let id = self.account.id();
        let key = self
            .account
            .account_key()
            .ok_or(ClientError::NotPrimaryDevice)?;
        let register = Register {
            account_id: id.to_vec(),
            account_key: key.public().to_bytes().to_vec(),
            device_list: Some(list.clone()),
            signature: key
                .sign(&register_payload(&id, kind, &challenge.nonce))
                .to_vec(),
            kind: kind as i32,
        };
        let reply = self
            .request(client_frame::Body::Register(register), "the registration")
            .await;
        self.disconnect().await;
        match reply? {
            server_frame::Body::Registered(_) => {}
            other => return Err(unexpected("Registered", &other)),
        }
        self.account.set_registered();
        self.account.save(&self.store)?;
        self.set_kind(kind)?;
        peers::observe(&self.store, &id, &list)?;
        self.store.flush().await?;
        self.connect(url).await.map(|_| ())
    }

    /// Take the kind the relay told at a login: kept, so it is known away
    /// from the relay too. An `Unspecified` one (a relay from before kinds)
    /// changes nothing; one that differs from the kind known here is the
    /// relay's to enforce, and is warned of.
    fn learn_kind(&mut self, told: AccountKind) -> Result<()> {
        if told == AccountKind::Unspecified || told == self.kind {
            return Ok(());
        }
        if self.kind != AccountKind::Unspecified {
            self.events.push_back(Event::Warning(format!(
                "the relay says this account is a {}, but this device knew it as a {}; the \
                 relay decides what it accepts, so this device goes by its word",
                kind_name(told),
                kind_name(self.kind)
            )));
        }
        self.set_kind(told)
    }

    /// Keep `kind` as this account's (in the store, not flushed) and send
    /// by it from now on.
    pub(super) fn set_kind(&mut self, kind: AccountKind) -> Result<()> {
        crate::account::save_kind(&self.store, kind)?;
        self.kind = kind;
        self.refresh_me();
        Ok(())
    }

    /// Connect and authenticate to the relay at `url`, top up prekeys, and
    /// send the outbox. Returns how many envelopes the relay has queued
    /// (they arrive through [`Self::next_event`]).
    pub async fn connect(&mut self, url: &str) -> Result<u64> {
        if self.account.is_unlinked() {
            return Err(ClientError::NotLinked);
        }
        if !self.account.is_registered() {
            return Err(ClientError::NotRegistered);
        }
        self.disconnect().await;
        let (conn, challenge) =
            Connection::connect_with_keepalive(url, &self.tls, self.keepalive).await?;
        self.conn = Some(conn);
        let origin = RelayUrl::parse(url)?.origin();
        let id = self.account.id();
        let device = self.account.device_id();
        let response = AuthResponse {
            account_id: id.to_vec(),
            device_id: device,
            signature: self
                .account
                .identity()
                .sign(&auth_payload(&challenge.nonce, &id, device, &origin))
                .to_vec(),
        };
        let reply = self
            .request(client_frame::Body::AuthResponse(response), "authentication")
            .await;
        let ok = match reply {
            Ok(server_frame::Body::AuthOk(ok)) => ok,
            Ok(other) => {
                self.conn = None;
                return Err(unexpected("AuthOk", &other));
            }
            Err(ClientError::Relay {
                code: ErrorCode::UnknownDevice | ErrorCode::UnknownAccount,
                ..
            }) => {
                // Registered (or linked) here, so the relay knew it once.
                self.conn = None;
                return Err(ClientError::DeviceRemoved { device });
            }
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        };
        self.learn_kind(ok.kind())?;
        match crate::operator_pin::observe(&self.store, &ok.operator_key)? {
            PinOutcome::Changed { pinned, offered } => {
                self.events.push_back(Event::OperatorKeyChanged {
                    pinned: Box::new(pinned),
                    offered: Box::new(offered),
                })
            }
            PinOutcome::Malformed => self.events.push_back(Event::Warning(
                "the relay presented an operator key that is not a valid public key; \
                 verified marks use the key pinned before, if any"
                    .into(),
            )),
            PinOutcome::NoneOffered | PinOutcome::PinnedNow(_) | PinOutcome::Same => {}
        }
        self.refresh_me();
        self.share_requester();
        // Signed prekeys past their grace period go now.
        self.prekeys.prune_signed(&self.store, now_ms())?;
        let low = ok.one_time_prekeys < PREKEY_LOW_WATER;
        if low || !self.prekeys.has_signed() || self.prekeys.pending_signed().is_some() {
            let count = if low { PREKEY_BATCH } else { 0 };
            self.upload_prekeys(count, false).await?;
            // The relay's own "stock low" notice, sent with AuthOk, is
            // answered already (frames arrive in order, so it is queued).
            self.pushes
                .retain(|f| !matches!(f.body, Some(server_frame::Body::PrekeysLow(_))));
        }
        // Learn devices this account gained or lost elsewhere.
        self.refresh_peer(id).await?;
        // And consents granted elsewhere (checked against this account's
        // own device keys), before any template is judged by them. A
        // business account has none; an older relay does not list them.
        if self.kind != AccountKind::Business
            && let Err(e) = self.consents().await
        {
            if matches!(
                e,
                ClientError::ConnectionClosed(_) | ClientError::NotConnected
            ) {
                return Err(e);
            }
            self.events.push_back(Event::Warning(format!(
                "the consents this account granted could not be read from the relay: {e}"
            )));
        }
        self.flush_outbox().await?;
        Ok(ok.queued)
    }

    /// [`Self::connect`], retrying with exponential backoff (250 ms
    /// doubling to 30 s) up to `attempts` times while the relay is
    /// unreachable. Errors that retrying cannot fix return at once.
    pub async fn connect_with_backoff(&mut self, url: &str, attempts: u32) -> Result<u64> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.connect(url).await {
                Ok(queued) => return Ok(queued),
                Err(
                    e @ (ClientError::Connect { .. }
                    | ClientError::ConnectionClosed(_)
                    | ClientError::Timeout(_)),
                ) if attempt < attempts => {
                    tracing::info!(error = %e, ?delay, "relay unreachable, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Close the connection (the store stays open).
    pub async fn disconnect(&mut self) {
        self.share_requester_none();
        if let Some(mut conn) = self.conn.take() {
            conn.close().await;
        }
    }

    /// Upload `count` one-time prekeys, with a signed prekey when one is
    /// due (see [`crate::session_store::SIGNED_PREKEY_ROTATE_MS`]) or
    /// `rotate` asks for one: the one still waiting for the relay's
    /// confirmation if there is one, else a new one. Older signed prekeys
    /// are retired only once the relay confirmed the new one, and kept for
    /// [`crate::session_store::SIGNED_PREKEY_GRACE_MS`] after that.
    /// Returns the signed prekey id uploaded, if any.
    async fn upload_prekeys(&mut self, count: u32, rotate: bool) -> Result<Option<u32>> {
        let (signed_id, first_id) = self.account.reserve_prekey_ids(count);
        let (generated, mut upload) = InMemoryPreKeyStore::generate(
            self.account.identity(),
            signed_id,
            first_id,
            count,
            &mut rand::rng(),
        );
        let now = now_ms();
        upload.signed_prekey = match self.prekeys.pending_signed() {
            Some((pending, pair)) => Some(sign_prekey(self.account.identity(), pending, &pair)),
            None if rotate || self.prekeys.wants_rotation(now) => upload.signed_prekey,
            None => None,
        };
        let uploaded = upload.signed_prekey.as_ref().map(|spk| spk.key_id);
        self.prekeys
            .add_generated(&self.store, &generated, &upload)?;
        self.account.save(&self.store)?;
        self.store.flush().await?;
        match self
            .request(
                client_frame::Body::UploadPrekeys(upload),
                "the prekey upload",
            )
            .await?
        {
            server_frame::Body::Ok(_) => {}
            other => return Err(unexpected("Ok", &other)),
        }
        if let Some(id) = uploaded {
            self.prekeys.confirm_signed(&self.store, id, now_ms())?;
            self.store.flush().await?;
        }
        Ok(uploaded)
    }

    /// Give the relay a new signed prekey now (a device may do so on a
    /// schedule; uploads of one-time prekeys rotate it every
    /// [`crate::session_store::SIGNED_PREKEY_ROTATE_MS`] anyway). The old
    /// one stays usable for contacts that fetched it: it is kept for
    /// [`crate::session_store::SIGNED_PREKEY_GRACE_MS`] after the relay
    /// confirmed the new one. Returns the new key's id.
    pub async fn rotate_signed_prekey(&mut self) -> Result<u32> {
        self.upload_prekeys(0, true)
            .await?
            .ok_or_else(|| ClientError::UnexpectedFrame("no signed prekey was uploaded".into()))
    }

    /// Send one request and wait for its reply; pushes that arrive
    /// meanwhile are queued for [`Self::next_event`].
    pub(super) async fn request(
        &mut self,
        body: client_frame::Body,
        what: &'static str,
    ) -> Result<server_frame::Body> {
        let conn = self.conn.as_mut().ok_or(ClientError::NotConnected)?;
        let frame = match tokio::time::timeout(REQUEST_TIMEOUT, conn.request(body)).await {
            Err(_) => return Err(ClientError::Timeout(what)),
            Ok(Err(e)) => {
                self.conn = None;
                return Err(e);
            }
            Ok(Ok(frame)) => frame,
        };
        // Pushes sent before the reply are here already (one ordered
        // stream); past the bound of pushes waiting, the connection ends.
        for push in conn.arrived_pushes() {
            if let Err(e) = self.pushes.push_back(push) {
                self.drop_overflowing_connection();
                return Err(e);
            }
        }
        match frame.body {
            Some(server_frame::Body::Error(error)) => Err(relay_error(error)),
            Some(body) => Ok(body),
            None => Err(ClientError::UnexpectedFrame("an empty reply".into())),
        }
    }

    /// Wait up to `timeout` for the next event. Deliveries are decrypted,
    /// stored and acknowledged before their event is returned. `Ok(None)`
    /// when nothing happened in time.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        self.next_event_unless(timeout, std::future::pending())
            .await
    }

    /// [`Self::next_event`], also returning `Ok(None)` as soon as `wake`
    /// completes while it waits for the relay (a program that serves
    /// other requests between events wakes it when one arrives). `wake`
    /// only interrupts the wait: a delivery being decrypted and stored is
    /// finished first, so nothing is lost.
    pub async fn next_event_unless(
        &mut self,
        timeout: Duration,
        wake: impl std::future::Future<Output = ()>,
    ) -> Result<Option<Event>> {
        let deadline = Instant::now() + timeout;
        let mut wake = std::pin::pin!(wake);
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            if let Some(frame) = self.pushes.pop_front() {
                self.handle_push(frame).await?;
                continue;
            }
            let conn = self.conn.as_mut().ok_or(ClientError::NotConnected)?;
            // `next_push` is cancel-safe: a wake loses no frame.
            let push = tokio::select! {
                push = tokio::time::timeout_at(deadline, conn.next_push()) => push,
                () = &mut wake => return Ok(None),
            };
            match push {
                Err(_) => return Ok(None),
                Ok(Err(e)) => {
                    self.conn = None;
                    return Err(e);
                }
                Ok(Ok(frame)) => {
                    if let Err(e) = self.pushes.push_back(frame) {
                        self.drop_overflowing_connection();
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The relay pushed past the bound: the connection goes, and with it
    /// the pushes queued (the relay pushes again whatever was not acked),
    /// so the next connection starts with room.
    fn drop_overflowing_connection(&mut self) {
        self.conn = None;
        self.pushes = super::push_queue::PushQueue::default();
    }

    async fn handle_push(&mut self, frame: ServerFrame) -> Result<()> {
        match frame.body {
            Some(server_frame::Body::Deliver(deliver)) => match deliver.envelope {
                // Boxed: receiving (decrypt, labels, re-key, re-send) is
                // the deepest chain of futures here; inline, it made every
                // caller's future large enough to overflow a 2 MiB stack in
                // debug builds (the CLI tests).
                Some(envelope) => {
                    let relay_tag = RelayTag {
                        tag: deliver.relay_franking_tag,
                        key_id: deliver.relay_franking_key_id,
                    };
                    Box::pin(self.handle_deliver(envelope, relay_tag)).await
                }
                None => {
                    self.events
                        .push_back(Event::Warning("the relay pushed an empty delivery".into()));
                    Ok(())
                }
            },
            Some(server_frame::Body::Delivered(delivered)) => {
                let proof = match self.checked_proof(&delivered).await {
                    None => None,
                    Some(Ok(proof)) => Some(proof),
                    Some(Err(
                        e @ (ClientError::ConnectionClosed(_)
                        | ClientError::NotConnected
                        | ClientError::Database(_)),
                    )) => return Err(e),
                    Some(Err(e)) => {
                        self.events.push_back(Event::Warning(format!(
                            "a delivery receipt carried a proof that does not check out; \
                             not recorded as proved: {e}"
                        )));
                        None
                    }
                };
                if let (Ok(to), Some(id), Some(proof)) = (
                    AccountId::from_bytes(&delivered.recipient_account),
                    MessageId::from_bytes(&delivered.message_id),
                    proof,
                ) {
                    self.events
                        .push_back(Event::DeliveryProved { to, id, proof });
                }
                if let (Ok(to), Some(id)) = (
                    AccountId::from_bytes(&delivered.recipient_account),
                    MessageId::from_bytes(&delivered.message_id),
                ) && messages::advance(&self.store, &to, &id, Status::Delivered)?.is_some()
                {
                    self.store.flush().await?;
                    self.events.push_back(Event::Delivered {
                        to,
                        id,
                        accept_id: delivered.accept_id,
                    });
                }
                // Recorded (or nothing to record): the relay may forget it.
                // A failure above returned first, so the relay pushes the
                // receipt again on the next connection.
                self.ack_receipt(delivered).await
            }
            Some(server_frame::Body::ConsentRequests(list)) => {
                self.consent_requests_pushed(&list.requests);
                Ok(())
            }
            Some(server_frame::Body::PrekeysLow(low)) => {
                match self.upload_prekeys(PREKEY_BATCH, false).await {
                    Ok(_) => self.events.push_back(Event::PreKeysReplenished {
                        remaining: low.remaining,
                        uploaded: PREKEY_BATCH,
                    }),
                    Err(
                        e @ (ClientError::ConnectionClosed(_)
                        | ClientError::NotConnected
                        | ClientError::Database(_)),
                    ) => return Err(e),
                    Err(e) => self
                        .events
                        .push_back(Event::Warning(format!("could not upload new prekeys: {e}"))),
                }
                Ok(())
            }
            Some(server_frame::Body::Error(error)) => {
                self.events
                    .push_back(Event::Warning(relay_error(error).to_string()));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Tell the relay a `Delivered` receipt is recorded (no reply asked).
    async fn ack_receipt(&mut self, delivered: Delivered) -> Result<()> {
        let conn = self.conn.as_ref().ok_or(ClientError::NotConnected)?;
        let ack = ClientFrame {
            request_id: 0,
            body: Some(client_frame::Body::ReceiptAck(ReceiptAck {
                message_id: delivered.message_id,
                recipient_account: delivered.recipient_account,
                recipient_device: delivered.recipient_device,
            })),
        };
        if let Err(e) = conn.send(&ack).await {
            self.conn = None;
            return Err(e);
        }
        Ok(())
    }

    /// Ack a copy this device used (decrypted, labels checked, stored): a
    /// billed one with the signed delivery proof.
    pub(super) async fn ack(&mut self, envelope: &Envelope) -> Result<()> {
        self.ack_as(envelope, true, false).await
    }

    /// Ack a copy this device could not use (undecryptable, refused by its
    /// labels, put aside): `rejected`, never signed, so no one can present
    /// it as a proof of receipt.
    pub(super) async fn reject(&mut self, envelope: &Envelope) -> Result<()> {
        self.ack_as(envelope, false, false).await
    }

    async fn ack_as(&mut self, envelope: &Envelope, used: bool, status_key: bool) -> Result<()> {
        let ack = self.ack_frame(envelope, used, status_key);
        self.send_ack(&ack).await
    }

    /// The ack of `envelope`: of a copy this device `used` (decrypted,
    /// labels checked, stored), with the signed delivery proof if it is
    /// billed (with `status_key`, a Status key kept to be shown: signed
    /// like a billed template, since the relay bills a business's Status
    /// key to a customer when its rate card prices Status,
    /// docs/PROTOCOL.md §13.5, and refuses an unsigned ack of a billed
    /// copy); otherwise `rejected`, never signed, so no one can present
    /// it as a proof of receipt. A proof is remembered in the store
    /// (`signed_copies`): make the ack before the sync that makes the
    /// copy's use durable, so that both are.
    pub(super) fn ack_frame(
        &self,
        envelope: &Envelope,
        used: bool,
        status_key: bool,
    ) -> ClientFrame {
        let (delivery_signature, signed_at_ms) = if used {
            self.sign_delivery_if_billed(envelope, status_key)
        } else {
            (Vec::new(), 0)
        };
        ClientFrame {
            request_id: 0,
            body: Some(client_frame::Body::DeliveryAck(DeliveryAck {
                // Named by its accept id when the relay assigned one, with
                // the (message id, sender) this device saw: the relay
                // deletes the copy only if they match (older relays go by
                // the pair alone).
                message_id: envelope.message_id.clone(),
                sender_account: envelope.sender_account.clone(),
                accept_id: envelope.accept_id,
                delivery_signature,
                signed_at_ms,
                rejected: !used,
            })),
        }
    }

    /// Send an ack made by [`Self::ack_frame`].
    pub(super) async fn send_ack(&mut self, ack: &ClientFrame) -> Result<()> {
        let conn = self.conn.as_ref().ok_or(ClientError::NotConnected)?;
        if let Err(e) = conn.send(ack).await {
            self.conn = None;
            return Err(e);
        }
        Ok(())
    }

    /// The signed ack of an envelope the relay may bill (a template from a
    /// business to this customer account: [`is_billed`]; only a business
    /// may send template categories; or, with `status_key`, a Status key
    /// from another account to this customer account, billed when it
    /// comes from a business and the rate card prices Status), with the
    /// time signed; empty for any other envelope. Signed with this
    /// device's identity key over the delivery proof payload
    /// (docs/PROTOCOL.md, "Signed delivery").
    fn sign_delivery_if_billed(&self, envelope: &Envelope, status_key: bool) -> (Vec<u8>, u64) {
        let me = self.account.id();
        let status_billable = status_key
            && envelope.category() == comptoir_protocol::proto::wire::Category::Control
            && self.kind != AccountKind::Business;
        let billed = (is_billed(AccountKind::Business, self.kind, envelope.category())
            || status_billable)
            && envelope.sender_account != me.as_bytes();
        let (Ok(business), Ok(message_id)) = (
            AccountId::from_bytes(&envelope.sender_account),
            <[u8; 16]>::try_from(envelope.message_id.as_slice()),
        ) else {
            return (Vec::new(), 0);
        };
        if !billed || envelope.accept_id == 0 {
            return (Vec::new(), 0);
        }
        let fields = DeliveryFields {
            accept_id: envelope.accept_id,
            message_id,
            business,
            customer: me,
            customer_device: self.account.device_id(),
            franking_commitment: envelope.franking_tag.clone(),
            time_ms: now_ms(),
        };
        // This very copy signed before (delivered again, its ack lost):
        // the same proof again, not one of another time.
        match crate::signed_copies::proof_of(&self.store, envelope) {
            Ok(Some(proof)) => return proof,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "the signed copies could not be read"),
        }
        let signature = sign_delivery(self.account.identity(), &fields);
        // So that this copy, delivered again, is acked with this proof; a
        // failure only leaves such a redelivery unbilled.
        if let Err(e) =
            crate::signed_copies::remember(&self.store, envelope, fields.time_ms, &signature)
        {
            tracing::warn!(error = %e, "a signed copy could not be remembered");
        }
        (signature.to_vec(), fields.time_ms)
    }

    /// Check the delivery proof a `Delivered` carries (the recipient
    /// device's signed ack of a billed message this account sent) against
    /// that device's identity key in the recipient's signed device list
    /// (the pinned one, fetched again if it lacks the device). `None` if
    /// the receipt carries no proof.
    async fn checked_proof(&mut self, delivered: &Delivered) -> Option<Result<DeliveryProof>> {
        if delivered.delivery_signature.is_empty() {
            return None;
        }
        Some(self.check_proof(delivered).await)
    }

    async fn check_proof(&mut self, delivered: &Delivered) -> Result<DeliveryProof> {
        let bad = |why: &str| ClientError::UnexpectedFrame(format!("delivery proof: {why}"));
        let customer = AccountId::from_bytes(&delivered.recipient_account)
            .map_err(|_| bad("the recipient account is malformed"))?;
        let message_id = <[u8; 16]>::try_from(delivered.message_id.as_slice())
            .map_err(|_| bad("the message id is not 16 bytes"))?;
        let business = AccountId::from_bytes(&delivered.business_account)
            .map_err(|_| bad("the business account is malformed"))?;
        if business != self.account.id() {
            return Err(bad("it names another sender than this account"));
        }
        let device = delivered.recipient_device;
        let key_of = |client: &Self| -> Result<Option<comptoir_protocol::IdentityKey>> {
            Ok(peers::load(&client.store, &customer)?.and_then(|p| {
                p.devices
                    .devices
                    .iter()
                    .find(|(id, _)| *id == device)
                    .map(|(_, key)| *key)
            }))
        };
        let key = match key_of(self)? {
            Some(key) => key,
            None => {
                self.refresh_peer(customer).await?;
                key_of(self)?
                    .ok_or_else(|| bad("the device is not in the recipient's device list"))?
            }
        };
        let fields = DeliveryFields {
            accept_id: delivered.accept_id,
            message_id,
            business,
            customer,
            customer_device: device,
            franking_commitment: delivered.franking_commitment.clone(),
            time_ms: delivered.signed_at_ms,
        };
        verify_delivery(&key, &fields, &delivered.delivery_signature)
            .map_err(|_| bad("the signature does not verify against the device's identity key"))?;
        Ok(DeliveryProof {
            accept_id: delivered.accept_id,
            device,
            signed_at_ms: delivered.signed_at_ms,
            franking_commitment: delivered.franking_commitment.clone(),
            signature: delivered.delivery_signature.clone(),
        })
    }
}

/// How a message names an account kind.
fn kind_name(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::Business => "business",
        AccountKind::Customer => "customer",
        AccountKind::Unspecified => "account of unknown kind",
    }
}
