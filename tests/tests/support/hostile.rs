//! An adversarial sender: a registered account whose one device speaks the
//! protocol with the protocol crate directly, so it can send what an honest
//! client never would (floods of re-key requests, forged contents, bit
//! flips), to a real `comptoir_client::Client` as the victim.

use std::collections::HashMap;
use std::net::SocketAddr;

use comptoir_protocol::labels;
use comptoir_protocol::proto::content::{Content, RekeyRequest, content};
use comptoir_protocol::proto::wire::{self, Category, client_frame, server_frame};
use comptoir_protocol::{AccountId, InMemoryPreKeyStore, SessionRecord, VerifiedBundle};
use prost::Message;

use super::{Account, Client, send_body, send_body_as};

/// The adversary's only device.
pub const DEVICE: u32 = 1;

/// A registered, logged-in adversarial account.
pub struct Hostile {
    pub account: Account,
    pub conn: Client,
    pub prekeys: InMemoryPreKeyStore,
    sessions: HashMap<(AccountId, u32), SessionRecord>,
}

impl Hostile {
    /// Register a new account on the relay at `addr`, log its device in and
    /// upload prekeys, so that honest clients can start sessions with it.
    pub async fn register(addr: SocketAddr) -> Self {
        let account = Account::new(1);
        account.register(addr).await;
        let (mut conn, _) = account.login(addr, DEVICE).await;
        let (prekeys, upload) =
            InMemoryPreKeyStore::generate(account.identity(DEVICE), 1, 1, 20, &mut rand::rng());
        let reply = conn
            .request(client_frame::Body::UploadPrekeys(upload))
            .await;
        assert!(matches!(reply, server_frame::Body::Ok(_)), "{reply:?}");
        Self {
            account,
            conn,
            prekeys,
            sessions: HashMap::new(),
        }
    }

    /// This account's id.
    pub fn id(&self) -> AccountId {
        self.account.id
    }

    /// Start a session with `victim`'s `device` from a fetched bundle.
    pub async fn start_session(&mut self, victim: AccountId, device: u32) {
        let reply = self
            .conn
            .request(client_frame::Body::FetchPrekeys(wire::FetchPreKeys {
                account_id: victim.to_vec(),
                device_ids: vec![device],
            }))
            .await;
        let server_frame::Body::PrekeyBundles(bundles) = reply else {
            panic!("expected bundles, got {reply:?}");
        };
        let bundle = bundles
            .bundles
            .iter()
            .find(|b| b.device_id == device)
            .expect("the device's bundle");
        let verified = VerifiedBundle::verify(bundle, None).expect("bundle verifies");
        let mut record = SessionRecord::new();
        record
            .initiate(self.account.identity(DEVICE), &verified, &mut rand::rng())
            .expect("initiate");
        self.sessions.insert((victim, device), record);
    }

    /// Encrypt `content` for `victim`'s `device` over the session, without
    /// padding or any check an honest client makes.
    pub fn encrypt(&mut self, victim: AccountId, device: u32, content: &Content) -> Vec<u8> {
        self.sessions
            .get_mut(&(victim, device))
            .expect("a session with the victim's device")
            .encrypt(&content.encode_to_vec(), &mut rand::rng())
            .expect("encrypt")
    }

    /// Send `ciphertext` as a new envelope to `victim`'s `device`; returns
    /// the relay's reply.
    pub async fn send_ciphertext(
        &mut self,
        victim: AccountId,
        device: u32,
        ciphertext: &[u8],
    ) -> server_frame::Body {
        let mut id = [0u8; 16];
        rand::fill(&mut id);
        self.conn
            .request(send_body(&victim, &[device], id, ciphertext))
            .await
    }

    /// The envelope id, category and bound labels an honest client would
    /// give `content` (control for receipts and re-key requests), so that
    /// only what a test forges differs from honest traffic.
    fn labelled(&self, victim: AccountId, content: &Content) -> ([u8; 16], Category, Content) {
        let id: [u8; 16] = content
            .message_id
            .as_slice()
            .try_into()
            .unwrap_or_else(|_| {
                let mut id = [0u8; 16];
                rand::fill(&mut id);
                id
            });
        let category = match content.body {
            Some(content::Body::RekeyRequest(_) | content::Body::ReadReceipt(_)) => {
                Category::Control
            }
            _ => Category::Conversation,
        };
        let mut content = content.clone();
        content.labels = Some(labels::bind(
            &id,
            self.account.id.as_bytes(),
            victim.as_bytes(),
            category,
            "",
            &[],
        ));
        (id, category, content)
    }

    /// Encrypt and send `content` with honest labels, expecting the relay
    /// to accept it.
    pub async fn send_content(&mut self, victim: AccountId, device: u32, content: &Content) {
        let (id, category, content) = self.labelled(victim, content);
        let ciphertext = self.encrypt(victim, device, &content);
        let reply = self
            .conn
            .request(send_body_as(&victim, &[device], id, &ciphertext, category))
            .await;
        assert!(
            matches!(reply, server_frame::Body::Accepted(_)),
            "{reply:?}"
        );
    }

    /// Encrypt and send every content in `contents` with honest labels, all
    /// at once (the replies are collected after), expecting the relay to
    /// accept each.
    pub async fn send_contents(&mut self, victim: AccountId, device: u32, contents: &[Content]) {
        let mut requests = Vec::with_capacity(contents.len());
        for content in contents {
            let (id, category, content) = self.labelled(victim, content);
            let ciphertext = self.encrypt(victim, device, &content);
            requests.push(
                self.conn
                    .send(send_body_as(&victim, &[device], id, &ciphertext, category))
                    .await,
            );
        }
        for request in requests {
            let reply = self.conn.reply(request).await;
            assert!(
                matches!(reply, server_frame::Body::Accepted(_)),
                "{reply:?}"
            );
        }
    }

    /// A re-key request naming `failed` (as a victim's outgoing message id).
    pub fn rekey_request(failed: &[u8]) -> Content {
        let mut id = [0u8; 16];
        rand::fill(&mut id);
        Content {
            message_id: id.to_vec(),
            sent_at_ms: 1,
            body: Some(content::Body::RekeyRequest(RekeyRequest {
                failed_message_id: failed.to_vec(),
            })),
            padding: Vec::new(),
            labels: None,
        }
    }

    /// Envelopes delivered to this account so far, each acked (contents
    /// are not decrypted: counting them is enough for a flood test).
    pub async fn drain_envelopes(&mut self, at_least: usize) -> Vec<wire::Envelope> {
        let mut out = Vec::new();
        while out.len() < at_least {
            let envelope = self.conn.next_envelope().await;
            self.conn.ack(&envelope).await;
            out.push(envelope);
        }
        out
    }
}
