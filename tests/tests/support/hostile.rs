//! An adversarial sender: a registered account whose one device speaks the
//! protocol with the protocol crate directly, so it can send what an honest
//! client never would (floods of re-key requests, forged contents and
//! labels, bit flips, maximal envelopes), to a real
//! `comptoir_client::Client` as the victim.
//!
//! [`StoreSnapshot`] reads every record of the victim's store (closed), so
//! a test can say exactly which records an attack may change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use comptoir_client::store::{Store, Tree};
use comptoir_protocol::message::MAX_PLAINTEXT_LEN;

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
        let record = self.new_session(victim, device).await;
        self.sessions.insert((victim, device), record);
    }

    /// The first message of a new session with `victim`'s `device` (a
    /// fresh bundle, so it names one of the victim's unused one-time
    /// prekeys), carrying `content`; the session is then forgotten.
    pub async fn first_message_of_new_session(
        &mut self,
        victim: AccountId,
        device: u32,
        content: &Content,
    ) -> Vec<u8> {
        self.new_session(victim, device)
            .await
            .encrypt(&content.encode_to_vec(), &mut rand::rng())
            .expect("encrypt")
    }

    async fn new_session(&mut self, victim: AccountId, device: u32) -> SessionRecord {
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
        assert!(
            bundle.one_time_prekey.is_some(),
            "the victim has one-time prekeys left"
        );
        let mut record = SessionRecord::new();
        record
            .initiate(self.account.identity(DEVICE), &verified, &mut rand::rng())
            .expect("initiate");
        record
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

    /// Encrypt raw `plaintext` (not necessarily a valid content) for
    /// `victim`'s `device` over the session.
    pub fn encrypt_bytes(&mut self, victim: AccountId, device: u32, plaintext: &[u8]) -> Vec<u8> {
        self.sessions
            .get_mut(&(victim, device))
            .expect("a session with the victim's device")
            .encrypt(plaintext, &mut rand::rng())
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
            Some(
                content::Body::RekeyRequest(_)
                | content::Body::ReadReceipt(_)
                | content::Body::ContactsRequest(_)
                | content::Body::ContactsSync(_),
            ) => Category::Control,
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

    /// Encrypt `content` as it is (its labels, if any, are the test's
    /// forgery) and send it in an envelope with id `id` and `category`;
    /// returns the relay's reply.
    pub async fn send_as_is(
        &mut self,
        victim: AccountId,
        device: u32,
        id: [u8; 16],
        category: Category,
        content: &Content,
    ) -> server_frame::Body {
        let ciphertext = self.encrypt(victim, device, content);
        self.send_ciphertext_as(victim, device, id, category, &ciphertext)
            .await
    }

    /// Send `ciphertext` in an envelope with id `id` and `category`;
    /// returns the relay's reply.
    pub async fn send_ciphertext_as(
        &mut self,
        victim: AccountId,
        device: u32,
        id: [u8; 16],
        category: Category,
        ciphertext: &[u8],
    ) -> server_frame::Body {
        self.conn
            .request(send_body_as(&victim, &[device], id, ciphertext, category))
            .await
    }

    /// Honest labels for `content` sent to `victim` under envelope id `id`
    /// and `category` (a test then changes one of them).
    pub fn honest_labels(
        &self,
        victim: AccountId,
        id: &[u8; 16],
        category: Category,
    ) -> comptoir_protocol::proto::content::Labels {
        labels::bind(
            id,
            self.account.id.as_bytes(),
            victim.as_bytes(),
            category,
            "",
            &[],
        )
    }

    /// `content` with honest labels for envelope `id`, padded so that its
    /// encoding is exactly the largest plaintext a message may carry
    /// ([`MAX_PLAINTEXT_LEN`]): the largest envelope an honest relay accepts.
    pub fn maximal(&self, victim: AccountId, id: [u8; 16], mut content: Content) -> Content {
        content.labels = Some(self.honest_labels(victim, &id, Category::Conversation));
        content.padding = Vec::new();
        let mut fill = MAX_PLAINTEXT_LEN.saturating_sub(content.encoded_len());
        // The padding field's tag and length take bytes of their own.
        loop {
            content.padding = vec![0; fill];
            match content.encoded_len() {
                n if n > MAX_PLAINTEXT_LEN => fill -= n - MAX_PLAINTEXT_LEN,
                n if n < MAX_PLAINTEXT_LEN && fill == 0 => {
                    panic!("{n} bytes cannot be padded to the maximum")
                }
                _ => break,
            }
        }
        assert_eq!(content.encoded_len(), MAX_PLAINTEXT_LEN);
        content
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
            franking_key: Vec::new(),
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

/// Every tree of the client store that a snapshot reads.
const TREES: [(Tree, &str); 14] = [
    (Tree::Account, "account"),
    (Tree::Sessions, "sessions"),
    (Tree::PreKeys, "prekeys"),
    (Tree::Messages, "messages"),
    (Tree::MessageStatuses, "message_statuses"),
    (Tree::Outbox, "outbox"),
    // The address book (sealed records; the older plaintext-keyed tree
    // is emptied when a store is opened).
    (Tree::SealedContacts, "contacts"),
    (Tree::Contacts, "contacts_plaintext"),
    (Tree::DeviceNotes, "device_notes"),
    (Tree::Blocked, "blocked"),
    (Tree::Peers, "peers"),
    (Tree::Evidence, "evidence"),
    (Tree::Guards, "guards"),
    (Tree::Quarantine, "quarantine"),
];

/// Every record of a client store, opened: (tree, key) to plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSnapshot(pub BTreeMap<(&'static str, Vec<u8>), Vec<u8>>);

/// How one tree changed between two snapshots, by record key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeChange {
    pub added: BTreeSet<Vec<u8>>,
    pub removed: BTreeSet<Vec<u8>>,
    pub modified: BTreeSet<Vec<u8>>,
}

impl StoreSnapshot {
    /// Read the store in `dir` (the client must be closed).
    pub fn read(dir: &Path, passphrase: &str) -> Self {
        let store = Store::open(dir, passphrase).expect("open the victim's store");
        let mut records = BTreeMap::new();
        for (tree, name) in TREES {
            for (key, plain) in store.scan(tree, &[]).expect("scan a tree") {
                records.insert((name, key), plain.to_vec());
            }
        }
        store.close().expect("close the store");
        Self(records)
    }

    /// The trees that differ from `before`, and how.
    pub fn changes_since(&self, before: &Self) -> BTreeMap<&'static str, TreeChange> {
        let mut out: BTreeMap<&'static str, TreeChange> = BTreeMap::new();
        for ((tree, key), value) in &self.0 {
            match before.0.get(&(*tree, key.clone())) {
                None => {
                    out.entry(tree).or_default().added.insert(key.clone());
                }
                Some(old) if old != value => {
                    out.entry(tree).or_default().modified.insert(key.clone());
                }
                Some(_) => {}
            }
        }
        for (tree, key) in before.0.keys() {
            if !self.0.contains_key(&(*tree, key.clone())) {
                out.entry(tree).or_default().removed.insert(key.clone());
            }
        }
        out
    }

    /// Whether `tree` holds a record under `key`.
    pub fn contains(&self, tree: &'static str, key: &[u8]) -> bool {
        self.0.contains_key(&(tree, key.to_vec()))
    }

    /// The records of `tree`.
    pub fn tree(&self, tree: &str) -> Vec<(&Vec<u8>, &Vec<u8>)> {
        self.0
            .iter()
            .filter(|((t, _), _)| *t == tree)
            .map(|((_, k), v)| (k, v))
            .collect()
    }
}

/// The key of the victim's session record with `peer`'s `device`.
pub fn session_key(peer: AccountId, device: u32) -> Vec<u8> {
    let mut key = peer.to_vec();
    key.extend_from_slice(&device.to_be_bytes());
    key
}
