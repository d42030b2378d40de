//! Helpers shared by the tests that drive the real `relay` binary over
//! WebSocket: a test account and frame send/receive.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::time::Duration;

use comptoir_protocol::frame::{decode_server, encode_client};
use comptoir_protocol::proto::wire::{self, client_frame};
use comptoir_protocol::{AccountId, AccountKeyPair, IdentityKeyPair};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Account {
    pub id: AccountId,
    pub key: AccountKeyPair,
    pub device: IdentityKeyPair,
}

impl Account {
    pub fn new() -> Self {
        let mut rng = rand::rng();
        Self {
            id: AccountId::generate(&mut rng),
            key: AccountKeyPair::generate(&mut rng),
            device: IdentityKeyPair::generate(&mut rng),
        }
    }
}

pub async fn next(ws: &mut Ws) -> wire::ServerFrame {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("frame in time")
            .expect("open")
            .expect("ok");
        if let Message::Binary(b) = msg {
            return decode_server(&b).expect("frame");
        }
    }
}

pub async fn send(ws: &mut Ws, request_id: u64, body: client_frame::Body) {
    let bytes = encode_client(&wire::ClientFrame {
        request_id,
        body: Some(body),
    });
    ws.send(Message::Binary(bytes.into())).await.expect("send");
}
