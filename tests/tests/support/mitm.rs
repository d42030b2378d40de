//! A WebSocket man in the middle between one client and the relay: it
//! forwards every frame, and rewrites one label (or the accept time) of
//! chosen `Deliver`ed envelopes on their way to the client (as a lying
//! relay would). An
//! acknowledgement naming a rewritten id or sender is mapped back, so the
//! relay deletes the envelope it really queued.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use comptoir_protocol::Label;
use comptoir_protocol::frame::{decode_client, decode_server, encode_client, encode_server};
use comptoir_protocol::proto::wire::{self, client_frame, server_frame};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// One rewrite to apply to the next envelope from `from`.
pub type Plan = (Vec<u8>, Label);
/// An envelope's (message id, sender account), as an ack names it.
type AckKey = (Vec<u8>, Vec<u8>);

#[derive(Default)]
struct Shared {
    /// Rewrites still to apply, in order, to envelopes from a sender.
    plans: VecDeque<Plan>,
    /// (rewritten id, rewritten sender) → (original id, original sender).
    rewritten: HashMap<AckKey, AckKey>,
    /// Acknowledgements forwarded to the relay, as the relay sees them.
    acked: Vec<AckKey>,
    /// Shifts still to apply, in order, to the accept time of envelopes
    /// from a sender (ms added to `server_timestamp_ms`, or taken off).
    delays: VecDeque<(Vec<u8>, i64)>,
    /// Every ack as the client sent it.
    raw_acks: Vec<wire::DeliveryAck>,
    /// Woken when an ack is added or a `FetchBlob` held back.
    acked_now: Arc<tokio::sync::Notify>,
    /// The account kind every `AuthOk` is rewritten to tell, if set.
    told_kind: Option<wire::AccountKind>,
    /// The category of every `Send` the client made, in order.
    sent_categories: Vec<i32>,
    /// Envelopes from a sender to deliver twice: the second time under
    /// this category and a fresh accept id (the original's plus
    /// [`REPLAY_ACCEPT_OFFSET`]).
    /// (`None`: delivered again as it was, as after a lost ack.)
    replays: VecDeque<(Vec<u8>, Option<wire::Category>)>,
    /// Hold back every `FetchBlob` from this offset on (the relay never
    /// hears it: the download waits as on a stalled link).
    stall_blob_fetches_from: Option<u64>,
    /// `FetchBlob` requests held back so far.
    blob_fetches_held: usize,
    /// The offset of each `FetchBlob` forwarded, in order.
    blob_fetch_offsets: Vec<u64>,
    /// The sender whose copies' acks are lost on the way (recorded, never
    /// forwarded), if any.
    lose_acks_from: Option<Vec<u8>>,
}

/// What a replayed envelope's accept id adds to the original's.
pub const REPLAY_ACCEPT_OFFSET: u64 = 1 << 40;

/// The proxy; dropping it stops accepting.
pub struct Mitm {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rewrite(envelope: &mut wire::Envelope, label: Label) {
    match label {
        Label::MessageId => envelope.message_id[0] ^= 0xff,
        Label::SenderAccount => envelope.sender_account[0] ^= 0xff,
        Label::RecipientAccount => envelope.recipient_account[0] ^= 0xff,
        Label::Category => envelope.category = wire::Category::Marketing as i32,
        Label::TemplateId => envelope.template_id = "summer-sale".into(),
        Label::FrankingCommitment => envelope.franking_tag = vec![0x5a; 32],
        _ => panic!("a label the proxy does not know"),
    }
}

/// A real relay that accepts logins made through a proxy as well as
/// directly, and the proxy in front of it. Keep the directory: it holds
/// the relay's data.
pub async fn relay_behind_mitm() -> (super::TestRelay, Mitm, tempfile::TempDir) {
    relay_behind_mitm_with(|_| {}).await
}

/// [`relay_behind_mitm`] with the relay's configuration adjusted first.
pub async fn relay_behind_mitm_with(
    adjust: impl FnOnce(&mut comptoir_relay::config::Config),
) -> (super::TestRelay, Mitm, tempfile::TempDir) {
    let (relay, proxy_listener, data) = super::relay_for_a_proxy(adjust).await;
    let mitm = Mitm::start_on(proxy_listener, relay.addr);
    (relay, mitm, data)
}

impl Mitm {
    /// Listen on 127.0.0.1:0 and relay each connection to `relay`.
    pub async fn start(relay: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, relay)
    }

    /// Relay each connection `listener` accepts to `relay` (bind first, so
    /// the relay can be told the proxy's origin before it starts).
    pub fn start_on(listener: TcpListener, relay: SocketAddr) -> Self {
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let Ok(client) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    let Ok((upstream, _)) =
                        tokio_tungstenite::connect_async(format!("ws://{relay}/")).await
                    else {
                        return;
                    };
                    let (mut to_client, mut from_client) = client.split();
                    let (mut to_relay, mut from_relay) = upstream.split();
                    let down_state = state.clone();
                    let down = async move {
                        while let Some(Ok(msg)) = from_relay.next().await {
                            let msg = match msg {
                                Message::Binary(bytes) => {
                                    let again = replayed(&down_state, &bytes);
                                    let first = tamper_down(&down_state, &bytes);
                                    if to_client.send(Message::Binary(first.into())).await.is_err()
                                    {
                                        break;
                                    }
                                    match again {
                                        Some(again) => Message::Binary(again.into()),
                                        None => continue,
                                    }
                                }
                                Message::Close(_) => break,
                                other => other,
                            };
                            if to_client.send(msg).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_client.close().await;
                    };
                    let up = async move {
                        while let Some(Ok(msg)) = from_client.next().await {
                            let msg = match msg {
                                Message::Binary(bytes) => match tamper_up(&state, &bytes) {
                                    Some(bytes) => Message::Binary(bytes.into()),
                                    None => continue,
                                },
                                Message::Close(_) => break,
                                other => other,
                            };
                            if to_relay.send(msg).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_relay.close().await;
                    };
                    tokio::join!(down, up);
                });
            }
        });
        Self { addr, shared, task }
    }

    /// Make every later `AuthOk` tell `kind` as the account's kind.
    pub fn tell_kind(&self, kind: wire::AccountKind) {
        self.shared.lock().expect("lock").told_kind = Some(kind);
    }

    /// The category of every `Send` the client made so far, in order.
    pub fn sent_categories(&self) -> Vec<wire::Category> {
        let shared = self.shared.lock().expect("lock");
        shared
            .sent_categories
            .iter()
            .map(|&c| wire::Category::try_from(c).expect("a known category"))
            .collect()
    }

    /// Deliver the next envelope from `from` twice, the second time as a
    /// lying relay replaying it to bill it again would: labelled
    /// `category`, under a fresh accept id (the first's plus
    /// [`REPLAY_ACCEPT_OFFSET`]).
    pub fn replay(&self, from: &[u8], category: wire::Category) {
        let mut shared = self.shared.lock().expect("lock");
        shared.replays.push_back((from.to_vec(), Some(category)));
    }

    /// Deliver the next envelope from `from` twice, unchanged (as a relay
    /// does when the first ack was lost).
    pub fn deliver_twice(&self, from: &[u8]) {
        let mut shared = self.shared.lock().expect("lock");
        shared.replays.push_back((from.to_vec(), None));
    }

    /// Every ack of the copy with `accept_id` the client sent so far.
    pub fn acks_of(&self, accept_id: u64) -> Vec<wire::DeliveryAck> {
        let shared = self.shared.lock().expect("lock");
        shared
            .raw_acks
            .iter()
            .filter(|a| a.accept_id == accept_id)
            .cloned()
            .collect()
    }

    /// Lose (record, never forward) every later ack of a copy from `from`;
    /// `None` forwards them all again.
    pub fn lose_acks_from(&self, from: Option<&[u8]>) {
        self.shared.lock().expect("lock").lose_acks_from = from.map(<[u8]>::to_vec);
    }

    /// Hold back every later `FetchBlob` (`true`) or forward them again.
    pub fn stall_blob_fetches(&self, stall: bool) {
        self.shared.lock().expect("lock").stall_blob_fetches_from = stall.then_some(0);
    }

    /// Hold back every later `FetchBlob` of a chunk at `offset` or past it.
    pub fn stall_blob_fetches_from(&self, offset: u64) {
        self.shared.lock().expect("lock").stall_blob_fetches_from = Some(offset);
    }

    /// The offset of each `FetchBlob` forwarded to the relay, in order.
    pub fn blob_fetch_offsets(&self) -> Vec<u64> {
        self.shared.lock().expect("lock").blob_fetch_offsets.clone()
    }

    /// Wait (bounded) until at least `n` `FetchBlob`s were held back.
    pub async fn blob_fetches_held(&self, n: usize) {
        self.wait_for(
            |shared| (shared.blob_fetches_held >= n).then_some(()),
            "a download asks the relay for its file",
        )
        .await;
    }

    /// Wait (bounded, failing as `what`) until `pick` finds something in
    /// what the proxy saw; woken by each ack or held-back fetch.
    async fn wait_for<T>(&self, pick: impl Fn(&Shared) -> Option<T>, what: &str) -> T {
        let notify = self.shared.lock().expect("lock").acked_now.clone();
        tokio::time::timeout(super::TIMEOUT, async {
            loop {
                let woken = notify.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if let Some(found) = pick(&self.shared.lock().expect("lock")) {
                    return found;
                }
                woken.await;
            }
        })
        .await
        .expect(what)
    }

    /// The `n`th ack (from 0) of a copy from `sender` the client sent,
    /// asking `client` for events meanwhile (it takes the relay's pushes
    /// only while asked), bounded.
    pub async fn nth_ack_from(
        &self,
        client: &mut comptoir_client::Client,
        sender: &[u8],
        n: usize,
    ) -> wire::DeliveryAck {
        self.acks_while_asking(client, |a| a.sender_account == sender, n)
            .await
    }

    /// The `n`th ack (from 0) of the copy with `accept_id`, asking
    /// `client` for events meanwhile, bounded.
    pub async fn nth_ack_of(
        &self,
        client: &mut comptoir_client::Client,
        accept_id: u64,
        n: usize,
    ) -> wire::DeliveryAck {
        self.acks_while_asking(client, |a| a.accept_id == accept_id, n)
            .await
    }

    async fn acks_while_asking(
        &self,
        client: &mut comptoir_client::Client,
        which: impl Fn(&wire::DeliveryAck) -> bool,
        n: usize,
    ) -> wire::DeliveryAck {
        let deadline = tokio::time::Instant::now() + super::TIMEOUT;
        loop {
            let found = self
                .shared
                .lock()
                .expect("lock")
                .raw_acks
                .iter()
                .filter(|a| which(a))
                .nth(n)
                .cloned();
            if let Some(ack) = found {
                return ack;
            }
            assert!(tokio::time::Instant::now() < deadline, "ack {n} never came");
            let _ = client
                .next_event(std::time::Duration::from_millis(100))
                .await;
        }
    }

    /// The proxy's WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Rewrite `label` in the next envelope delivered from `from`.
    pub fn plan(&self, from: &[u8], label: Label) {
        let mut shared = self.shared.lock().expect("lock");
        shared.plans.push_back((from.to_vec(), label));
    }

    /// Report the next envelope delivered from `from` as accepted `ms`
    /// later than it was (a relay lying about when it accepted it).
    pub fn delay(&self, from: &[u8], ms: u64) {
        let mut shared = self.shared.lock().expect("lock");
        let ms = i64::try_from(ms).expect("a shift in range");
        shared.delays.push_back((from.to_vec(), ms));
    }

    /// Report the next envelope delivered from `from` as accepted `ms`
    /// earlier than it was.
    pub fn backdate(&self, from: &[u8], ms: u64) {
        let mut shared = self.shared.lock().expect("lock");
        let ms = i64::try_from(ms).expect("a shift in range");
        shared.delays.push_back((from.to_vec(), -ms));
    }

    /// The client's ack of the copy with `accept_id`, as the client sent
    /// it (waits for it, bounded).
    pub async fn next_ack(&self, accept_id: u64) -> wire::DeliveryAck {
        self.wait_for(
            |shared| {
                shared
                    .raw_acks
                    .iter()
                    .find(|a| a.accept_id == accept_id)
                    .cloned()
            },
            "the client acks the copy",
        )
        .await
    }

    /// Whether the relay got an ack for (`message_id`, `sender`) as it
    /// queued them.
    pub fn relay_saw_ack(&self, message_id: &[u8], sender: &[u8]) -> bool {
        let shared = self.shared.lock().expect("lock");
        shared
            .acked
            .iter()
            .any(|(id, s)| id.as_slice() == message_id && s.as_slice() == sender)
    }
}

/// The replayed copy of `bytes`, if it is a `Deliver` from a sender
/// [`Mitm::replay`] named.
fn replayed(state: &Mutex<Shared>, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut frame = decode_server(bytes).ok()?;
    let Some(server_frame::Body::Deliver(deliver)) = frame.body.as_mut() else {
        return None;
    };
    let envelope = deliver.envelope.as_mut()?;
    let mut shared = state.lock().expect("lock");
    let pos = shared
        .replays
        .iter()
        .position(|(from, _)| *from == envelope.sender_account)?;
    let (_, category) = shared.replays.remove(pos)?;
    if let Some(category) = category {
        envelope.category = category as i32;
        envelope.accept_id += REPLAY_ACCEPT_OFFSET;
    }
    Some(encode_server(&frame))
}

fn tamper_down(state: &Mutex<Shared>, bytes: &[u8]) -> Vec<u8> {
    let Ok(mut frame) = decode_server(bytes) else {
        return bytes.to_vec();
    };
    if let Some(server_frame::Body::AuthOk(ok)) = frame.body.as_mut() {
        let Some(kind) = state.lock().expect("lock").told_kind else {
            return bytes.to_vec();
        };
        ok.kind = kind as i32;
        return encode_server(&frame);
    }
    let Some(server_frame::Body::Deliver(deliver)) = frame.body.as_mut() else {
        return bytes.to_vec();
    };
    let Some(envelope) = deliver.envelope.as_mut() else {
        return bytes.to_vec();
    };
    let mut shared = state.lock().expect("lock");
    if let Some(pos) = shared
        .delays
        .iter()
        .position(|(from, _)| *from == envelope.sender_account)
        && let Some((_, ms)) = shared.delays.remove(pos)
    {
        envelope.server_timestamp_ms = envelope.server_timestamp_ms.saturating_add_signed(ms);
        return encode_server(&frame);
    }
    let Some(pos) = shared
        .plans
        .iter()
        .position(|(from, _)| *from == envelope.sender_account)
    else {
        return bytes.to_vec();
    };
    let Some((_, label)) = shared.plans.remove(pos) else {
        return bytes.to_vec();
    };
    let original = (envelope.message_id.clone(), envelope.sender_account.clone());
    rewrite(envelope, label);
    shared.rewritten.insert(
        (envelope.message_id.clone(), envelope.sender_account.clone()),
        original,
    );
    encode_server(&frame)
}

/// The client's frame as the relay gets it (`None`: held back).
fn tamper_up(state: &Mutex<Shared>, bytes: &[u8]) -> Option<Vec<u8>> {
    let Ok(mut frame) = decode_client(bytes) else {
        return Some(bytes.to_vec());
    };
    if let Some(client_frame::Body::Send(send)) = &frame.body {
        let mut shared = state.lock().expect("lock");
        shared.sent_categories.push(send.category);
        return Some(bytes.to_vec());
    }
    if let Some(client_frame::Body::FetchBlob(fetch)) = &frame.body {
        let mut shared = state.lock().expect("lock");
        if shared
            .stall_blob_fetches_from
            .is_some_and(|from| fetch.offset >= from)
        {
            shared.blob_fetches_held += 1;
            shared.acked_now.notify_waiters();
            return None;
        }
        shared.blob_fetch_offsets.push(fetch.offset);
        return Some(bytes.to_vec());
    }
    let Some(client_frame::Body::DeliveryAck(ack)) = frame.body.as_mut() else {
        return Some(bytes.to_vec());
    };
    let mut shared = state.lock().expect("lock");
    shared.raw_acks.push(ack.clone());
    shared.acked_now.notify_waiters();
    if shared.lose_acks_from.as_ref() == Some(&ack.sender_account) {
        return None;
    }
    if let Some((id, sender)) = shared
        .rewritten
        .get(&(ack.message_id.clone(), ack.sender_account.clone()))
        .cloned()
    {
        ack.message_id = id;
        ack.sender_account = sender;
    }
    shared
        .acked
        .push((ack.message_id.clone(), ack.sender_account.clone()));
    Some(encode_client(&frame))
}
