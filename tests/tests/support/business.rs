//! A business speaking raw frames with real sessions (X3DH + Double
//! Ratchet) to every device of one customer, its labels bound: sends
//! templates and service replies a real `Client` decrypts, and reads the
//! `Delivered` receipts (the business agent daemon is not built yet).

use comptoir_protocol::labels;
use comptoir_protocol::proto::content::{Content, Text, content};
use comptoir_protocol::proto::wire::{
    self, AccountKind, Category, client_frame, server_frame::Body,
};
use comptoir_protocol::session::SessionRecord;
use comptoir_protocol::{
    AccountId, DeliveryFields, IdentityKey, InMemoryPreKeyStore, VerifiedBundle, verify_delivery,
};
use prost::Message;

use super::{Account, Client, TestRelay};

/// The franking commitment it sends with templates.
pub const FRANKING: [u8; 32] = [7; 32];

/// A business speaking raw frames, with real sessions to every device of
/// one customer (the business agent daemon is not built yet).
pub struct Business {
    pub account: Account,
    pub conn: Client,
    pub customer: AccountId,
    /// The customer's devices with their identity keys, from its signed
    /// device list, and a session to each.
    pub devices: Vec<(u32, IdentityKey, SessionRecord)>,
}

impl Business {
    pub async fn start(relay: &TestRelay, customer: AccountId) -> Self {
        let account = Account::new(1);
        account.register_as(relay.addr, AccountKind::Business).await;
        let (mut conn, _) = account.login(relay.addr, 1).await;
        // Prekeys, so that the customer's client can write to it.
        let (_, upload) =
            InMemoryPreKeyStore::generate(account.identity(1), 1, 1, 20, &mut rand::rng());
        let reply = conn
            .request(client_frame::Body::UploadPrekeys(upload))
            .await;
        assert!(matches!(reply, Body::Ok(_)), "{reply:?}");
        relay.approve_support_templates(&mut conn).await;
        let mut business = Self {
            account,
            conn,
            customer,
            devices: Vec::new(),
        };
        business.fetch_sessions().await;
        business
    }

    pub async fn fetch_sessions(&mut self) {
        let fetch = wire::FetchPreKeys {
            account_id: self.customer.to_vec(),
            device_ids: Vec::new(),
        };
        let Body::PrekeyBundles(bundles) = self
            .conn
            .request(client_frame::Body::FetchPrekeys(fetch))
            .await
        else {
            panic!("bundles")
        };
        let list = bundles.device_list.as_ref().expect("device list");
        self.devices.clear();
        for bundle in &bundles.bundles {
            let listed = list
                .devices
                .iter()
                .find(|d| d.device_id == bundle.device_id)
                .expect("bundle of a listed device");
            let key = IdentityKey::from_bytes(&listed.identity_key).expect("identity key");
            let verified = VerifiedBundle::verify(bundle, Some(&key)).expect("bundle");
            let mut session = SessionRecord::new();
            session
                .initiate(self.account.identity(1), &verified, &mut rand::rng())
                .expect("x3dh");
            self.devices.push((bundle.device_id, key, session));
        }
    }

    /// Send `text` as `category`: a template (the approved support
    /// template of that category, [`FRANKING`])
    /// or a service reply, labels bound; returns (message id, accept id).
    pub async fn send(&mut self, text: &str, category: Category) -> ([u8; 16], u64) {
        let body = content::Body::Text(Text { body: text.into() });
        match self.request_content(body, category).await {
            (message_id, Body::Accepted(accepted)) => (message_id, accepted.accept_id),
            (_, other) => panic!("send: {other:?}"),
        }
    }

    /// Send an instance of the approved support template of `category`
    /// with `order` as its value (see
    /// [`super::templates::support_instance`]), labels bound; returns
    /// (message id, accept id).
    pub async fn send_template(&mut self, order: &str, category: Category) -> ([u8; 16], u64) {
        let instance = super::templates::support_instance(self.account.id, category, order);
        match self
            .request_content(content::Body::Template(instance), category)
            .await
        {
            (message_id, Body::Accepted(accepted)) => (message_id, accepted.accept_id),
            (_, other) => panic!("send: {other:?}"),
        }
    }

    /// Send `text` as a service reply franked as a client franks it
    /// (fresh key, commitment bound and in the envelope), or with the
    /// commitment altered (`tamper`) in both places, so that only opening
    /// it shows the difference. Returns (message id, relay's reply).
    pub async fn send_franked(&mut self, text: &str, tamper: bool) -> ([u8; 16], Body) {
        let message_id = comptoir_client::MessageId::generate().0;
        let mut content = Content {
            message_id: message_id.to_vec(),
            sent_at_ms: 1,
            body: Some(content::Body::Text(Text { body: text.into() })),
            labels: Some(labels::bind(
                &message_id,
                self.account.id.as_bytes(),
                self.customer.as_bytes(),
                Category::Service,
                "",
                &[],
            )),
            franking_key: Vec::new(),
            padding: Vec::new(),
        };
        let key = comptoir_protocol::FrankingKey::generate(&mut rand::rng());
        let mut commitment = comptoir_protocol::franking::frank(&mut content, &key);
        if tamper {
            commitment[0] ^= 1;
            if let Some(labels) = content.labels.as_mut() {
                labels.franking_commitment = commitment.to_vec();
            }
        }
        let plaintext = content.encode_to_vec();
        let devices = self
            .devices
            .iter_mut()
            .map(|(device_id, _, session)| wire::DeviceCiphertext {
                device_id: *device_id,
                ciphertext: session
                    .encrypt(&plaintext, &mut rand::rng())
                    .expect("encrypt"),
            })
            .collect();
        let send = wire::Send {
            message_id: message_id.to_vec(),
            recipient_account: self.customer.to_vec(),
            client_timestamp_ms: 1,
            category: Category::Service as i32,
            franking_tag: commitment.to_vec(),
            devices,
            ..Default::default()
        };
        let reply = self.conn.request(client_frame::Body::Send(send)).await;
        (message_id, reply)
    }

    /// Encrypt `body` to every device of the customer as `category` (a
    /// template category under the approved support template of that
    /// category and [`FRANKING`], any other
    /// with [`FRANKING`] only), labels bound, and send it; returns the message id
    /// and the relay's reply, whatever it is.
    pub async fn request_content(
        &mut self,
        body: content::Body,
        category: Category,
    ) -> ([u8; 16], Body) {
        let message_id = comptoir_client::MessageId::generate().0;
        let (template_id, franking) = match category {
            Category::Utility | Category::Authentication | Category::Marketing => (
                super::templates::id_for(self.account.id, category),
                &FRANKING[..],
            ),
            // The relay requires a 32-byte commitment of every business
            // send; with no franking key in the content, the customer
            // treats the message as unfranked.
            _ => (String::new(), &FRANKING[..]),
        };
        let content = Content {
            message_id: message_id.to_vec(),
            sent_at_ms: 1,
            body: Some(body),
            labels: Some(labels::bind(
                &message_id,
                self.account.id.as_bytes(),
                self.customer.as_bytes(),
                category,
                &template_id,
                franking,
            )),
            franking_key: Vec::new(),
            padding: Vec::new(),
        }
        .encode_to_vec();
        let devices = self
            .devices
            .iter_mut()
            .map(|(device_id, _, session)| wire::DeviceCiphertext {
                device_id: *device_id,
                ciphertext: session
                    .encrypt(&content, &mut rand::rng())
                    .expect("encrypt"),
            })
            .collect();
        let send = wire::Send {
            message_id: message_id.to_vec(),
            recipient_account: self.customer.to_vec(),
            client_timestamp_ms: 1,
            category: category as i32,
            template_id,
            franking_tag: franking.to_vec(),
            devices,
            ..Default::default()
        };
        let reply = self.conn.request(client_frame::Body::Send(send)).await;
        (message_id, reply)
    }

    /// The next `Delivered` receipt, acked to the relay.
    pub async fn delivered(&mut self) -> wire::Delivered {
        let delivered = self
            .conn
            .next_matching(|b| match b {
                Body::Delivered(d) => Some(d.clone()),
                _ => None,
            })
            .await;
        let ack = wire::ReceiptAck {
            message_id: delivered.message_id.clone(),
            recipient_account: delivered.recipient_account.clone(),
            recipient_device: delivered.recipient_device,
        };
        assert!(matches!(
            self.conn.request(client_frame::Body::ReceiptAck(ack)).await,
            Body::Ok(_)
        ));
        delivered
    }

    /// Check the proof a `Delivered` carries against the customer device's
    /// identity key, as a business would.
    pub fn check_proof(&self, d: &wire::Delivered) {
        let key = &self
            .devices
            .iter()
            .find(|(id, _, _)| *id == d.recipient_device)
            .expect("a device of the customer")
            .1;
        let fields = DeliveryFields {
            accept_id: d.accept_id,
            message_id: d.message_id.as_slice().try_into().expect("16 bytes"),
            business: AccountId::from_bytes(&d.business_account).expect("business"),
            customer: AccountId::from_bytes(&d.recipient_account).expect("customer"),
            customer_device: d.recipient_device,
            franking_commitment: d.franking_commitment.clone(),
            time_ms: d.signed_at_ms,
        };
        assert_eq!(fields.business, self.account.id);
        assert_eq!(fields.customer, self.customer);
        verify_delivery(key, &fields, &d.delivery_signature).expect("the proof checks out");
    }
}
