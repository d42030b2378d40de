//! One connection's life: challenge, authentication, then requests,
//! pushes of queued mail (a bounded window of unacked envelopes) and of
//! the `Delivered` receipts kept for the device (a window of its own, so
//! receipts a device does not ack never hold up its mail), frames posted
//! by other connections, timeouts and shutdown.
//!
//! Mail and receipts are always pulled from storage after a cursor,
//! whether the device just connected (drain) or was woken (new mail, a
//! receipt made durable), so order holds and nothing is pushed twice on one
//! connection. What a connection pushed and was not acked is pushed again
//! on the device's next connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use comptoir_protocol::proto::wire::{self, client_frame, server_frame::Body};
use comptoir_protocol::{AUTH_NONCE_LEN, AccountId, IdentityKey};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::cmd;
use crate::connection::{Connection, Inbound, WriteError, close};
use crate::error::RelayError;
use crate::frame;
use crate::hub::{Posted, Presence};
use crate::shutdown::Shutdown;
use crate::state::Relay;
use crate::storage::{Backend, Cursor};

/// The authenticated device of a connection.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) account: AccountId,
    pub(crate) device: u32,
    pub(crate) identity: IdentityKey,
    pub(crate) presence: Arc<Presence>,
    /// Last queue position pushed on this connection.
    pub(crate) cursor: Option<Cursor>,
    /// Envelopes pushed and not yet acked.
    pub(crate) in_flight: usize,
    /// Last receipt queue position pushed on this connection.
    pub(crate) receipt_cursor: Option<Cursor>,
    /// Receipts pushed and not yet acked.
    pub(crate) receipts_in_flight: usize,
    /// Acks freed room in a full delivery window: mail may be waiting to
    /// be pushed (see [`refill_batch`]).
    pub(crate) mail_held: bool,
    /// Likewise for the receipt window.
    pub(crate) receipts_held: bool,
}

/// A storage write in progress (a send waiting for its group commit, an
/// ack being applied), so the connection keeps reading meanwhile.
pub(crate) type PendingSend = BoxFuture<'static, Completion>;

/// What a finished [`PendingSend`] asks of the connection.
#[derive(Debug, Default)]
pub(crate) struct Completion {
    /// A frame to send (the reply).
    pub(crate) frame: Option<Vec<u8>>,
    /// An envelope pushed here was acked: the delivery window has room.
    pub(crate) acked: bool,
    /// A receipt pushed here was acked: the receipt window has room.
    pub(crate) receipt_acked: bool,
    /// An ack kept a receipt: its sender's device is to be woken once the
    /// receipt is durable.
    pub(crate) receipt_kept: Option<ReceiptKept>,
}

/// A `Delivered` receipt an ack kept, and the wait for it to be durable
/// (see [`wake_senders`]).
pub(crate) struct ReceiptKept {
    /// The sending account.
    pub(crate) sender: AccountId,
    /// Its device, whose receipt queue holds the receipt.
    pub(crate) sender_device: u32,
    /// Resolves once the receipt can be read.
    pub(crate) durable: crate::storage::ReceiptKeptFuture,
}

impl std::fmt::Debug for ReceiptKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptKept")
            .field("sender_device", &self.sender_device)
            .finish_non_exhaustive()
    }
}

/// Wake the sending devices of `kept` once their receipts are durable
/// (then they read them; a device not connected then gets them at its next
/// authentication). One task for a whole batch of acks, each sender woken
/// once, rather than a task and a wake per ack.
pub(crate) fn wake_senders<S: Send + Sync + 'static>(
    relay: &Arc<Relay<S>>,
    kept: Vec<ReceiptKept>,
) {
    if kept.is_empty() {
        return;
    }
    let relay = relay.clone();
    tokio::spawn(async move {
        let mut woken: Vec<(AccountId, u32)> = Vec::new();
        for receipt in kept {
            // Groups become durable in order: by the last one, all are.
            let device = (receipt.sender, receipt.sender_device);
            if receipt.durable.await.is_ok() && !woken.contains(&device) {
                woken.push(device);
            }
        }
        for (account, device) in woken {
            relay.hub.wake(account, device);
        }
    });
}

/// Receipts kept by acks after which their senders are woken even though
/// more frames are waiting to be read (else: once nothing is).
const WAKE_BATCH: usize = 64;

/// Room the acks must free in a delivery (or receipt) window of `window`
/// before it is refilled while more frames are waiting to be read: the
/// window is topped up in batches (one read of the queue, one write to the
/// socket for many envelopes) instead of one envelope per ack. Whenever the
/// connection has nothing else to do, it is refilled whatever the room, so
/// a device keeping envelopes unacked is never stalled.
pub(crate) fn refill_batch(window: usize) -> usize {
    (window / 4).max(1)
}

/// What a request handler wants done after it ran.
pub(crate) enum Reply {
    /// Send this frame.
    Frame(Vec<u8>),
    /// Send these frames.
    Frames(Vec<Vec<u8>>),
    /// Wait for a durable write; its result is the reply.
    Later(PendingSend),
    /// Send a frame, then close with this code.
    Close(Vec<u8>, u16, &'static str),
}

/// One connection's state.
pub(crate) struct Session<S> {
    pub(crate) relay: Arc<Relay<S>>,
    pub(crate) id: u64,
    pub(crate) peer: IpAddr,
    pub(crate) nonce: [u8; AUTH_NONCE_LEN],
    pub(crate) auth_failures: u32,
    pub(crate) device: Option<Device>,
    /// Receipts acks kept whose senders are still to be woken: gathered
    /// over the acks read together (see [`wake_senders`]).
    pub(crate) receipts_kept: Vec<ReceiptKept>,
}

impl<S> std::fmt::Debug for Session<S> {
    /// The connection, its peer and device; not the relay's state (pending
    /// codes) nor the challenge nonce.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("auth_failures", &self.auth_failures)
            .field(
                "device",
                &self.device.as_ref().map(|d| (d.account, d.device)),
            )
            .finish_non_exhaustive()
    }
}

enum Event {
    Shutdown,
    Inbound(Inbound),
    Written(Completion),
    Wake,
    Timeout,
    /// Nothing else is ready: wake the senders of the receipts kept, top
    /// up the windows acks made room in.
    Idle,
}

enum Flow {
    Continue,
    Stop,
}

impl<S> Session<S> {
    pub(crate) fn new(relay: Arc<Relay<S>>, peer: IpAddr) -> Self {
        let id = relay.next_connection.fetch_add(1, Relaxed);
        Self {
            relay,
            id,
            peer,
            nonce: rand::random(),
            auth_failures: 0,
            device: None,
            receipts_kept: Vec::new(),
        }
    }

    /// The challenge frame for the current nonce.
    pub(crate) fn challenge(&self) -> Vec<u8> {
        frame::server(
            0,
            Body::Challenge(wire::AuthChallenge {
                nonce: self.nonce.to_vec(),
                server_time_ms: self.relay.clock.now_ms(),
            }),
        )
    }
}

impl<S: Backend> Session<S> {
    /// Drive the connection until it ends.
    ///
    /// A plain function returning an `async move` block rather than an
    /// `async fn`: an `async fn` keeps its arguments twice in its future
    /// (as captured and as moved-into locals), and this future is most of
    /// what an idle connection costs.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep its arguments twice in the future"
    )]
    pub(crate) fn run<IO: AsyncRead + AsyncWrite + Unpin + Send>(
        mut self,
        mut conn: Connection<IO>,
        mut shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send {
        async move {
            let limits = &self.relay.config.limits;
            let max_pending_sends = limits.max_pending_sends;
            let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
            let auth_timeout = Duration::from_millis(limits.auth_timeout_ms);
            if Box::pin(conn.send(self.challenge())).await.is_err() {
                return;
            }
            let mut deadline = Instant::now() + auth_timeout;
            // One timer for the connection's life, moved on only when it
            // fires early (each frame pushes the deadline back: resetting
            // the timer for each would cost a timer-wheel update per frame).
            // Boxed: it lives as long as the connection, and inline it
            // would grow every idle connection's future.
            let mut timer = Box::pin(tokio::time::sleep_until(deadline));
            let mut pending: FuturesUnordered<PendingSend> = FuturesUnordered::new();
            loop {
                let presence = self.device.as_ref().map(|d| d.presence.clone());
                let can_read = pending.len() < max_pending_sends;
                let idle_work = !self.receipts_kept.is_empty()
                    || self
                        .device
                        .as_ref()
                        .is_some_and(|d| d.mail_held || d.receipts_held);
                // In this order: finished writes free window room, then
                // wakes, then new frames; a refill, and the wake of the
                // senders whose receipts acks kept, only once nothing else
                // is ready (so acks read together are answered with one
                // batch of mail, and their senders woken once).
                let event = tokio::select! {
                    biased;
                    _ = shutdown.recv() => Event::Shutdown,
                    Some(done) = pending.next(), if !pending.is_empty() => Event::Written(done),
                    _ = wait_presence(presence.as_deref()) => Event::Wake,
                    inbound = conn.read(), if can_read => Event::Inbound(inbound),
                    () = &mut timer => Event::Timeout,
                    () = std::future::ready(()), if idle_work => Event::Idle,
                };
                drop(presence);
                // Every handler is boxed: an idle connection keeps only this
                // loop's small state, not the largest handler's.
                let flow = match event {
                    Event::Shutdown => {
                        Box::pin(shut_down(&self.relay, &mut pending, &mut conn)).await
                    }
                    Event::Written(done) => {
                        Box::pin(self.on_completion(done, &mut pending, &mut conn)).await
                    }
                    Event::Wake => Box::pin(self.on_wake(&mut conn)).await,
                    Event::Idle => Box::pin(self.on_idle(&mut conn)).await,
                    Event::Timeout if Instant::now() < deadline => {
                        // Frames came since the timer was set.
                        timer.as_mut().reset(deadline);
                        Ok(Flow::Continue)
                    }
                    Event::Timeout => {
                        let (code, reason) = if self.device.is_some() {
                            (close::IDLE, "idle timeout")
                        } else {
                            (close::AUTH_TIMEOUT, "authentication timeout")
                        };
                        Box::pin(conn.close(code, reason)).await;
                        Ok(Flow::Stop)
                    }
                    Event::Inbound(inbound) => {
                        let was_authenticated = self.device.is_some();
                        let flow =
                            Box::pin(self.on_inbound(inbound, &mut conn, &mut pending)).await;
                        if self.device.is_some() {
                            deadline = Instant::now() + idle_timeout;
                            if deadline < timer.deadline() {
                                // Sooner than the timer (an idle timeout
                                // shorter than the authentication's).
                                timer.as_mut().reset(deadline);
                            }
                            if !was_authenticated {
                                // Freshly authenticated: drain the queue and the
                                // receipts kept while this device was away.
                                match Box::pin(self.on_authenticated(&mut conn)).await {
                                    Ok(()) => flow,
                                    Err(e) => Err(e),
                                }
                            } else {
                                flow
                            }
                        } else {
                            flow
                        }
                    }
                };
                match flow {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => break,
                    Err(error) => {
                        tracing::debug!(connection = self.id, %error, "connection write failed");
                        break;
                    }
                }
            }
            // Finish storage work already started (acks, sends): an ack read
            // before the peer hung up still deletes its envelope.
            while let Some(done) = pending.next().await {
                self.receipts_kept.extend(done.receipt_kept);
            }
            wake_senders(&self.relay, std::mem::take(&mut self.receipts_kept));
            if let Some(device) = &self.device {
                self.relay.hub.leave(device.account, device.device, self.id);
                self.relay
                    .leases
                    .release_connection(device.account, self.id);
                self.relay.metrics.authenticated_open.fetch_sub(1, Relaxed);
                self.relay.metrics.notify_change();
            }
        }
    }

    /// Push the mail and receipts kept while the device was away.
    async fn on_authenticated<IO: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Connection<IO>,
    ) -> Result<(), WriteError> {
        self.push_mail(conn).await?;
        self.push_receipts(conn).await
    }

    async fn on_inbound<IO: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        inbound: Inbound,
        conn: &mut Connection<IO>,
        pending: &mut FuturesUnordered<PendingSend>,
    ) -> Result<Flow, WriteError> {
        let bytes = match inbound {
            Inbound::Frame(bytes) => bytes,
            Inbound::Control => return Ok(Flow::Continue),
            Inbound::Closed => return Ok(Flow::Stop),
            Inbound::CloseRequested => {
                conn.answer_close().await;
                return Ok(Flow::Stop);
            }
            Inbound::ProtocolError(code) => {
                conn.close(code, "websocket protocol error").await;
                return Ok(Flow::Stop);
            }
            Inbound::Text => {
                let error = RelayError::MalformedFrame("text message".into());
                self.refuse(conn, &error, 0).await?;
                return Ok(Flow::Continue);
            }
            Inbound::TooLarge(size) => {
                let error = RelayError::FrameTooLarge {
                    limit: comptoir_protocol::MAX_FRAME_SIZE,
                    got: size,
                };
                self.refuse(conn, &error, 0).await?;
                conn.close(close::TOO_BIG, "frame too large").await;
                return Ok(Flow::Stop);
            }
        };
        let request = match comptoir_protocol::frame::decode_client(&bytes) {
            Ok(request) => request,
            Err(error) => {
                let error = match error {
                    comptoir_protocol::DecodeError::UnsupportedVersion { got, .. } => {
                        RelayError::UnsupportedVersion { got }
                    }
                    comptoir_protocol::DecodeError::TooLarge { limit, got } => {
                        RelayError::FrameTooLarge { limit, got }
                    }
                    other => RelayError::MalformedFrame(other.to_string()),
                };
                self.refuse(conn, &error, 0).await?;
                return Ok(Flow::Continue);
            }
        };
        drop(bytes);
        // Asked to close (the device was removed, or reconnected): serve
        // nothing more, even a frame read before the wake is handled.
        if self
            .device
            .as_ref()
            .is_some_and(|d| d.presence.closing().is_some())
        {
            return self.on_wake(conn).await;
        }
        let request_id = request.request_id;
        let Some(body) = request.body else {
            let error = RelayError::MalformedFrame("empty frame body".into());
            self.refuse(conn, &error, request_id).await?;
            return Ok(Flow::Continue);
        };
        let reply = match self.dispatch(request_id, body).await {
            Ok(reply) => reply,
            Err(error) => {
                let close = match &error {
                    RelayError::UnknownDevice => Some((close::UNKNOWN_DEVICE, "unknown device")),
                    RelayError::TooManyAuthAttempts => {
                        Some((close::AUTH_FAILED, "too many failed authentications"))
                    }
                    _ => None,
                };
                self.relay.metrics.refused(error.code());
                error.log_detail();
                let frame = error.to_frame(request_id).encode_frame();
                match close {
                    Some((code, reason)) => Reply::Close(frame, code, reason),
                    None => Reply::Frame(frame),
                }
            }
        };
        match reply {
            Reply::Frame(bytes) => conn.send(bytes).await?,
            Reply::Frames(frames) => {
                for bytes in frames {
                    conn.feed(bytes).await?;
                }
                conn.flush().await?;
            }
            Reply::Later(mut future) => match (&mut future).now_or_never() {
                // Done at once (an ack on the embedded store): handled now
                // rather than on the loop's next turn.
                Some(done) => return self.on_completion(done, pending, conn).await,
                None => pending.push(future),
            },
            Reply::Close(bytes, code, reason) => {
                conn.send(bytes).await?;
                conn.close(code, reason).await;
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// Send the replies of every finished storage write (one group commit
    /// finishes many at once) with a single flush.
    async fn on_completion<IO: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        first: Completion,
        pending: &mut FuturesUnordered<PendingSend>,
        conn: &mut Connection<IO>,
    ) -> Result<Flow, WriteError> {
        let mut next = Some(first);
        let (mut wrote, mut acked, mut receipts_acked) = (false, 0usize, 0usize);
        while let Some(done) = next.take() {
            if let Some(bytes) = done.frame {
                conn.feed(bytes).await?;
                wrote = true;
            }
            acked += usize::from(done.acked);
            receipts_acked += usize::from(done.receipt_acked);
            self.receipts_kept.extend(done.receipt_kept);
            next = pending.next().now_or_never().flatten();
        }
        if self.receipts_kept.len() >= WAKE_BATCH {
            wake_senders(&self.relay, std::mem::take(&mut self.receipts_kept));
        }
        if wrote {
            conn.flush().await?;
        }
        // New mail (or a new receipt) wakes the connection anyway; only a
        // full window may have left some unpushed. Such a window is topped
        // up once the acks made a batch's room, or once nothing else is
        // ready (`Event::Idle`), whichever comes first. (Refilling only
        // at half the window, and never otherwise, was tried and stalls a
        // device that keeps more than half its window unacked, e.g.
        // envelopes held for an identity change.)
        let window = self.relay.config.limits.delivery_window;
        let (mut refill_mail, mut refill_receipts) = (false, false);
        if let Some(device) = self.device.as_mut() {
            if acked > 0 {
                let before = device.in_flight;
                device.in_flight = before.saturating_sub(acked);
                device.mail_held |= window_was_full(before, window);
                refill_mail = device.mail_held
                    && window.saturating_sub(device.in_flight) >= refill_batch(window);
            }
            if receipts_acked > 0 {
                let before = device.receipts_in_flight;
                device.receipts_in_flight = before.saturating_sub(receipts_acked);
                device.receipts_held |= window_was_full(before, window);
                refill_receipts = device.receipts_held
                    && window.saturating_sub(device.receipts_in_flight) >= refill_batch(window);
            }
        }
        if refill_mail {
            self.push_mail(conn).await?;
        }
        if refill_receipts {
            self.push_receipts(conn).await?;
        }
        Ok(Flow::Continue)
    }

    /// Nothing else was ready: wake the senders of the receipts kept, and
    /// top up the windows acks made room in.
    async fn on_idle<IO: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Connection<IO>,
    ) -> Result<Flow, WriteError> {
        wake_senders(&self.relay, std::mem::take(&mut self.receipts_kept));
        let Some(device) = &self.device else {
            return Ok(Flow::Continue);
        };
        let (mail, receipts) = (device.mail_held, device.receipts_held);
        if mail {
            self.push_mail(conn).await?;
        }
        if receipts {
            self.push_receipts(conn).await?;
        }
        Ok(Flow::Continue)
    }

    async fn refuse<IO: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        conn: &mut Connection<IO>,
        error: &RelayError,
        request_id: u64,
    ) -> Result<(), WriteError> {
        self.relay.metrics.refused(error.code());
        conn.send(error.to_frame(request_id).encode_frame()).await
    }

    async fn dispatch(
        &mut self,
        request_id: u64,
        body: client_frame::Body,
    ) -> Result<Reply, RelayError> {
        use client_frame::Body as B;
        if self.device.is_none() {
            if let Err(retry_after_ms) = self.relay.address_limiter.check(&self.peer) {
                return Err(RelayError::RateLimited {
                    scope: "address",
                    retry_after_ms,
                });
            }
            return match body {
                B::AuthResponse(r) => cmd::auth::authenticate(self, request_id, r).await,
                B::Register(r) => cmd::auth::register(self, request_id, r).await,
                _ => Err(RelayError::NotAuthenticated),
            };
        }
        // A send's rate is one of the policy's inputs (cmd::send).
        // Attachment chunks have their own limiter (cmd::blob): a 100 MB
        // document is 763 of them.
        if !matches!(
            body,
            B::DeliveryAck(_)
                | B::ReceiptAck(_)
                | B::Send(_)
                | B::SendStatusKey(_)
                | B::UploadChunk(_)
                | B::FetchBlob(_)
        ) && let Some(device) = &self.device
            && let Err(retry_after_ms) = self.relay.account_limiter.check(&device.account)
        {
            return Err(RelayError::RateLimited {
                scope: "account",
                retry_after_ms,
            });
        }
        match body {
            B::AuthResponse(_) | B::Register(_) => Err(RelayError::AlreadyAuthenticated),
            B::Send(r) => cmd::send::send(self, request_id, r).await,
            B::DeliveryAck(r) => cmd::ack::ack(self, request_id, r).await,
            B::ReceiptAck(r) => cmd::ack::receipt_ack(self, request_id, r).await,
            B::UploadPrekeys(r) => cmd::prekeys::upload(self, request_id, r).await,
            B::FetchPrekeys(r) => cmd::prekeys::fetch(self, request_id, r).await,
            B::PublishDeviceList(r) => cmd::device_list::publish(self, request_id, r).await,
            B::GetDeviceList(r) => cmd::device_list::get(self, request_id, r).await,
            B::RequestCode(r) => cmd::phone::request_code(self, request_id, r).await,
            B::VerifyCode(r) => cmd::phone::verify_code(self, request_id, r).await,
            B::Lookup(r) => cmd::phone::lookup(self, request_id, r).await,
            B::Block(r) => cmd::block::set(self, request_id, r.account_id, true, r.reason).await,
            B::Unblock(r) => cmd::block::set(self, request_id, r.account_id, false, 0).await,
            B::ClaimName(r) => cmd::name::claim(self, request_id, r).await,
            B::SetConsent(r) => cmd::consent::set(self, request_id, r).await,
            B::GetConsents(_) => cmd::consent::list(self, request_id).await,
            B::SubmitTemplate(r) => cmd::template::submit(self, request_id, r).await,
            B::GetTemplates(r) => cmd::template::get(self, request_id, r).await,
            B::PublishProfile(r) => cmd::business::publish(self, request_id, r).await,
            B::GetProfile(r) => cmd::business::get(self, request_id, r).await,
            B::RequestConsent(r) => cmd::consent_request::request(self, request_id, r).await,
            B::GetConsentRequests(_) => cmd::consent_request::pending(self, request_id).await,
            B::AnswerConsentRequest(r) => cmd::consent_request::answer(self, request_id, r).await,
            B::GetConsentAnswers(_) => cmd::consent_request::answers(self, request_id).await,
            B::GetBill(r) => cmd::bill::bill(self, request_id, r).await,
            B::GetStanding(_) => cmd::bill::standing(self, request_id).await,
            B::BeginUpload(r) => cmd::blob::begin(self, request_id, r).await,
            B::UploadChunk(r) => cmd::blob::chunk(self, request_id, r).await,
            B::FetchBlob(r) => cmd::blob::fetch(self, request_id, r).await,
            B::FileReport(r) => cmd::report::file(self, request_id, r).await,
            B::PostStatus(r) => cmd::status::post(self, request_id, r).await,
            B::SendStatusKey(r) => cmd::status::send_key(self, request_id, r).await,
            B::DeleteStatus(r) => cmd::status::delete(self, request_id, r).await,
            B::GetSubscribers(r) => cmd::status::subscribers(self, request_id, r).await,
            B::AcquireLease(r) => cmd::lease::acquire(self, request_id, r).await,
        }
    }

    async fn on_wake<IO: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Connection<IO>,
    ) -> Result<Flow, WriteError> {
        let Some(device) = &self.device else {
            return Ok(Flow::Continue);
        };
        let posted = device.presence.take_posted();
        let any = !posted.is_empty();
        for item in posted {
            match item {
                Posted::Frame(bytes) => conn.feed(bytes).await?,
                // Kept apart by the presence (read below), never queued.
                Posted::Close(..) => {}
            }
        }
        if any {
            conn.flush().await?;
        }
        if let Some((code, reason)) = device.presence.closing() {
            conn.close(code, reason).await;
            return Ok(Flow::Stop);
        }
        self.push_mail(conn).await?;
        self.push_receipts(conn).await?;
        Ok(Flow::Continue)
    }

    /// Push the `Delivered` receipts kept for this device after the
    /// receipt cursor, up to the delivery window (receipts pushed and not
    /// acked count against it, as envelopes do against theirs).
    pub(crate) async fn push_receipts<IO: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Connection<IO>,
    ) -> Result<(), WriteError> {
        let window = self.relay.config.limits.delivery_window;
        let Some(device) = self.device.as_mut() else {
            return Ok(());
        };
        // Filled up to the window below: if it fills, the acks that make
        // room again find it was full.
        device.receipts_held = false;
        if device.presence.closing().is_some() {
            return Ok(());
        }
        loop {
            let room = window.saturating_sub(device.receipts_in_flight);
            if room == 0 {
                return Ok(());
            }
            let batch = match self
                .relay
                .store
                .pending_receipts(
                    device.account,
                    device.device,
                    device.receipt_cursor,
                    room,
                    self.relay.clock.now_ms(),
                )
                .await
            {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(connection = self.id, %error, "reading receipts failed");
                    return Ok(());
                }
            };
            if batch.is_empty() {
                return Ok(());
            }
            let full = batch.len() == room;
            for receipt in batch {
                device.receipt_cursor = Some(receipt.cursor);
                device.receipts_in_flight += 1;
                let mut delivered = wire::Delivered {
                    message_id: receipt.message_id.to_vec(),
                    recipient_account: receipt.recipient.to_vec(),
                    recipient_device: receipt.recipient_device,
                    accept_id: receipt.accept_id,
                    ..Default::default()
                };
                // The first delivery of a billed send carries the device's
                // signed ack (kept in the same group as this receipt).
                if receipt.accept_id != 0 {
                    match self.relay.store.delivered_entry(receipt.accept_id).await {
                        Ok(Some((entry, signed)))
                            if signed.customer_device == receipt.recipient_device
                                && entry.customer == receipt.recipient =>
                        {
                            delivered.delivery_signature = signed.signature.to_vec();
                            delivered.signed_at_ms = signed.signed_at_ms;
                            delivered.business_account = entry.business.to_vec();
                            delivered.franking_commitment = entry.franking_tag;
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::error!(connection = self.id, %error, "reading a delivery proof failed");
                        }
                    }
                }
                conn.feed(frame::server(0, Body::Delivered(delivered)))
                    .await?;
            }
            conn.flush().await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// Push queued envelopes after the cursor, up to the delivery window.
    pub(crate) async fn push_mail<IO: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Connection<IO>,
    ) -> Result<(), WriteError> {
        let window = self.relay.config.limits.delivery_window;
        let Some(device) = self.device.as_mut() else {
            return Ok(());
        };
        // As for receipts (see `push_receipts`).
        device.mail_held = false;
        if device.presence.closing().is_some() {
            return Ok(());
        }
        loop {
            let room = window.saturating_sub(device.in_flight);
            if room == 0 {
                return Ok(());
            }
            let batch = match self
                .relay
                .store
                .pending(
                    device.account,
                    device.device,
                    device.cursor,
                    room,
                    self.relay.clock.now_ms(),
                )
                .await
            {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(connection = self.id, %error, "reading queue failed");
                    return Ok(());
                }
            };
            if batch.is_empty() {
                return Ok(());
            }
            let full = batch.len() == room;
            for queued in batch {
                device.cursor = Some(queued.cursor);
                device.in_flight += 1;
                let tag = self
                    .relay
                    .franking
                    .tag_stored(&queued.envelope, queued.accept_id);
                conn.feed(frame::deliver_stored(
                    &queued.envelope,
                    queued.accept_id,
                    tag.as_ref(),
                ))
                .await?;
            }
            conn.flush().await?;
            if !full {
                return Ok(());
            }
        }
    }
}

/// The relay is shutting down: send the replies of storage writes already
/// started, then an error frame and a close.
async fn shut_down<S: Send + Sync + 'static, IO: AsyncRead + AsyncWrite + Unpin + Send>(
    relay: &Arc<Relay<S>>,
    pending: &mut FuturesUnordered<PendingSend>,
    conn: &mut Connection<IO>,
) -> Result<Flow, WriteError> {
    while let Some(done) = pending.next().await {
        wake_senders(relay, done.receipt_kept.into_iter().collect());
        if let Some(bytes) = done.frame
            && conn.send(bytes).await.is_err()
        {
            break;
        }
    }
    let bytes = RelayError::ShuttingDown.to_frame(0).encode_frame();
    let _ = conn.send(bytes).await;
    conn.close(close::GOING_AWAY, "relay shutting down").await;
    Ok(Flow::Stop)
}

/// Whether acks freed room in a delivery window of `window` that was full
/// (only then may envelopes or receipts have been left unpushed).
fn window_was_full(before: usize, window: usize) -> bool {
    before >= window
}

async fn wait_presence(presence: Option<&Presence>) {
    match presence {
        Some(p) => p.notify.notified().await,
        None => std::future::pending().await,
    }
}

/// Encode a server frame.
pub(crate) trait EncodeFrame {
    /// The version byte and protobuf.
    fn encode_frame(&self) -> Vec<u8>;
}

impl EncodeFrame for wire::ServerFrame {
    fn encode_frame(&self) -> Vec<u8> {
        comptoir_protocol::frame::encode_server(self)
    }
}
