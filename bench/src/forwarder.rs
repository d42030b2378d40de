//! A storage-free WebSocket forwarder: the baseline the relay is measured
//! against (`relay-load`). It speaks the same frames and builds the same
//! envelopes, with the same socket configuration, but checks no signature
//! (a signed ack of a billed template is answered `Ok` like any ack with a
//! request id), knows no account kinds or categories, stores nothing and
//! drops envelopes for devices that are not connected.
//! Never deploy it: it authenticates nobody.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use comptoir_protocol::AccountId;
use comptoir_protocol::frame::decode_client;
use comptoir_protocol::proto::wire::{self, client_frame::Body as C, server_frame::Body as S};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use comptoir_relay::connection::websocket_config;
use comptoir_relay::frame;

/// Frames queued for one forwarder connection, at most.
const OUTBOX: usize = 4096;

type RouteMap = HashMap<(AccountId, u32), mpsc::Sender<Vec<u8>>>;
type Routes = Arc<Mutex<RouteMap>>;

/// Serve until the task is dropped.
pub async fn run(listener: TcpListener) {
    let routes: Routes = Arc::default();
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let _ = socket.set_nodelay(true);
            serve(socket, routes).await;
        });
    }
}

async fn serve(socket: TcpStream, routes: Routes) {
    let config = websocket_config(4 * comptoir_protocol::MAX_FRAME_SIZE);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(socket, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUTBOX);
    let challenge = frame::server(
        0,
        S::Challenge(wire::AuthChallenge {
            nonce: rand::random::<[u8; 32]>().to_vec(),
            server_time_ms: now_ms(),
        }),
    );
    if tx.send(challenge).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if sink.feed(Message::Binary(bytes.into())).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::Binary(more.into())).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut me: Option<(AccountId, u32)> = None;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Binary(bytes) = msg else {
            continue;
        };
        let Ok(request) = decode_client(&bytes) else {
            continue;
        };
        let id = request.request_id;
        let reply = match request.body {
            Some(C::Register(r)) => Some(S::Registered(wire::Registered {
                account_id: r.account_id,
            })),
            Some(C::AuthResponse(r)) => {
                let Ok(account) = AccountId::from_bytes(&r.account_id) else {
                    continue;
                };
                me = Some((account, r.device_id));
                lock(&routes).insert((account, r.device_id), tx.clone());
                Some(S::AuthOk(wire::AuthOk::default()))
            }
            Some(C::Send(send)) => {
                let Some((sender, sender_device)) = me else {
                    continue;
                };
                let Ok(recipient) = AccountId::from_bytes(&send.recipient_account) else {
                    continue;
                };
                let server_timestamp_ms = now_ms();
                for d in send.devices {
                    let envelope = wire::Envelope {
                        message_id: send.message_id.clone(),
                        sender_account: sender.to_vec(),
                        sender_device,
                        recipient_account: recipient.to_vec(),
                        recipient_device: d.device_id,
                        client_timestamp_ms: send.client_timestamp_ms,
                        server_timestamp_ms,
                        category: send.category,
                        template_id: send.template_id.clone(),
                        franking_tag: send.franking_tag.clone(),
                        relay_franking_signature: Vec::new(),
                        ciphertext: d.ciphertext,
                        accept_id: 0,
                    };
                    let route = lock(&routes).get(&(recipient, d.device_id)).cloned();
                    if let Some(route) = route {
                        let _ = route.try_send(frame::deliver(&envelope.encode_to_vec()));
                    }
                }
                Some(S::Accepted(wire::Accepted {
                    message_id: send.message_id,
                    server_timestamp_ms,
                    accept_id: 0,
                }))
            }
            Some(C::DeliveryAck(ack)) => {
                if let (Some((account, device)), Ok(sender)) =
                    (me, AccountId::from_bytes(&ack.sender_account))
                {
                    let route = lock(&routes).get(&(sender, 1)).cloned();
                    if let Some(route) = route {
                        let _ = route.try_send(frame::server(
                            0,
                            S::Delivered(wire::Delivered {
                                message_id: ack.message_id,
                                recipient_account: account.to_vec(),
                                recipient_device: device,
                                accept_id: 0,
                                ..Default::default()
                            }),
                        ));
                    }
                }
                // Like the relay: an ack with a request id is answered (a
                // signed ack of a billed template asks to know).
                (id != 0).then_some(S::Ok(wire::Ok {}))
            }
            _ => Some(S::Ok(wire::Ok {})),
        };
        if let Some(body) = reply
            && tx.send(frame::server(id, body)).await.is_err()
        {
            break;
        }
    }
    if let Some(key) = me {
        lock(&routes).remove(&key);
    }
    drop(tx);
    let _ = writer.await;
}

fn lock(routes: &Routes) -> std::sync::MutexGuard<'_, RouteMap> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch (as the relay stamps them).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
