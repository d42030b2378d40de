//! A hostile contact (see `support::hostile`) sends a real `Client` what an
//! honest one never would: maximal envelopes, bit-flipped ciphertexts,
//! forged labels, and text full of control, bidirectional and zero-width
//! characters. Each test snapshots every record of the victim's store before
//! and after, and checks that only what the attack may change did change;
//! and that the victim keeps working.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use comptoir_client::client::REKEYS_PER_DEVICE;
use comptoir_client::{Client, Event, MessageId};
use comptoir_protocol::message::MAX_MESSAGE_LEN;
use comptoir_protocol::proto::content::{Content, Text, content};
use comptoir_protocol::proto::wire::{Category, ErrorCode, server_frame};
use comptoir_protocol::{AccountId, Label, LabelError};
use prost::Message;
use support::client::{registered, url, wait_for, wait_message};
use support::hostile::{Hostile, StoreSnapshot, TreeChange, session_key};
use support::{TestRelay, error_code, start_relay};

const PASSPHRASE: &str = "pw-long-enough";

fn new_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    rand::fill(&mut id);
    id
}

fn text(id: [u8; 16], body: &str) -> Content {
    Content {
        message_id: id.to_vec(),
        sent_at_ms: 1,
        body: Some(content::Body::Text(Text {
            body: body.to_owned(),
        })),
        padding: Vec::new(),
        labels: None,
        franking_key: Vec::new(),
    }
}

/// The key of a message in the victim's history (and outbox).
fn message_key(peer: AccountId, id: [u8; 16]) -> Vec<u8> {
    let mut key = peer.to_vec();
    key.extend_from_slice(&id);
    key
}

fn only_added(keys: impl IntoIterator<Item = Vec<u8>>) -> TreeChange {
    TreeChange {
        added: keys.into_iter().collect(),
        ..TreeChange::default()
    }
}

/// The guards-tree key of the quarantine's running totals, written (added
/// the first time, modified after) whenever an envelope is put aside.
const QUARANTINE_TOTALS: &[u8] = b"quarantine-stats";

/// The guards change when the only guard written is the quarantine's
/// totals: added if `before` had none yet, else modified.
fn quarantine_totals_written(before: &StoreSnapshot) -> TreeChange {
    if before.contains("guards", QUARANTINE_TOTALS) {
        only_modified([QUARANTINE_TOTALS.to_vec()])
    } else {
        only_added([QUARANTINE_TOTALS.to_vec()])
    }
}

fn only_modified(keys: impl IntoIterator<Item = Vec<u8>>) -> TreeChange {
    TreeChange {
        modified: keys.into_iter().collect(),
        ..TreeChange::default()
    }
}

/// A victim with a session with Mallory already set up (one honest message
/// decrypted, so the session, Mallory's pinned device list and the one-time
/// prekey it used are in the store before any snapshot), and Mallory saved
/// as a contact.
struct Scene {
    relay: TestRelay,
    _root: tempfile::TempDir,
    dir: std::path::PathBuf,
    victim: Option<Client>,
    mallory: Hostile,
}

impl Scene {
    async fn new() -> Self {
        let relay = start_relay().await;
        let root = tempfile::tempdir().expect("dir");
        let dir = root.path().join("victim");
        let mut victim = registered(&relay, &dir, PASSPHRASE).await;
        let mut mallory = Hostile::register(relay.addr).await;
        let (v, m) = (victim.account_id(), mallory.id());
        victim.add_contact("mallory", m).expect("add a contact");
        mallory.start_session(v, victim.device_id()).await;
        mallory
            .send_content(v, victim.device_id(), &text(new_id(), "hello"))
            .await;
        assert_eq!(wait_message(&mut victim, m).await.1, "hello");
        Self {
            relay,
            _root: root,
            dir,
            victim: Some(victim),
            mallory,
        }
    }

    fn v(&self) -> AccountId {
        self.victim.as_ref().expect("open").account_id()
    }

    fn m(&self) -> AccountId {
        self.mallory.id()
    }

    fn device(&self) -> u32 {
        self.victim.as_ref().expect("open").device_id()
    }

    /// Close the victim, read every record of its store, open it again and
    /// reconnect.
    async fn snapshot(&mut self) -> StoreSnapshot {
        let victim = self.victim.take().expect("the victim is open");
        victim.close().await.expect("close");
        let snapshot = StoreSnapshot::read(&self.dir, PASSPHRASE);
        let mut victim = Client::open(&self.dir, PASSPHRASE).expect("open again");
        victim.connect(&url(&self.relay)).await.expect("reconnect");
        self.victim = Some(victim);
        snapshot
    }

    fn victim(&mut self) -> &mut Client {
        self.victim.as_mut().expect("the victim is open")
    }

    /// Mallory sends an honest marker; returns every event the victim
    /// reports up to and including the marker (queues are delivered in
    /// order, so everything sent before it was processed).
    async fn events_until_marker(&mut self) -> Vec<Event> {
        let marker = format!("marker {}", hex::encode(new_id()));
        let (v, device) = (self.v(), self.device());
        self.mallory
            .send_content(v, device, &text(new_id(), &marker))
            .await;
        let mut seen = Vec::new();
        wait_for(self.victim(), |e| {
            seen.push(e.clone());
            matches!(e, Event::Message { text, .. } if *text == marker).then_some(())
        })
        .await;
        seen
    }

    /// The victim still works: a message to Mallory gets out, right after
    /// the `queued` envelopes the attack made it send (re-key requests).
    /// Returns the key of the victim's message: accepted, so its status
    /// record is written too.
    async fn victim_still_sends(&mut self, queued: usize) -> Vec<u8> {
        let m = self.m();
        let sent = self
            .victim()
            .send_text(m, "still here")
            .await
            .expect("send");
        let envelopes = self.mallory.drain_envelopes(queued + 1).await;
        assert_eq!(envelopes[queued].message_id, sent.0.to_vec());
        message_key(m, sent.0)
    }
}

/// The keys of the messages a snapshot's history gained whose text is
/// `marker`-like (the marker is the only message the tests do not name).
fn marker_keys(before: &StoreSnapshot, after: &StoreSnapshot) -> BTreeSet<Vec<u8>> {
    after
        .changes_since(before)
        .get("messages")
        .map(|c| c.added.clone())
        .unwrap_or_default()
}

fn resets(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::SessionReset { .. }))
        .count()
}

fn assert_changes(
    before: &StoreSnapshot,
    after: &StoreSnapshot,
    expected: BTreeMap<&'static str, TreeChange>,
) {
    assert_eq!(
        after.changes_since(before),
        expected,
        "the store changed where it should not"
    );
}

fn remove_key(set: &mut BTreeSet<Vec<u8>>, key: &[u8]) {
    assert!(
        set.remove(key),
        "expected {} in the change",
        hex::encode(key)
    );
}

#[tokio::test]
async fn a_maximal_envelope_is_read_and_the_queue_moves_on() {
    let mut scene = Scene::new().await;
    let (v, m, device) = (scene.v(), scene.m(), scene.device());
    let before = scene.snapshot().await;

    // The largest message there is: a content of exactly the largest
    // plaintext, as a prekey message (Mallory never read an answer).
    let body = "M".repeat(60_000);
    let mut big = Vec::new();
    for _ in 0..3 {
        let id = new_id();
        let content = scene.mallory.maximal(v, id, text(id, &body));
        let ciphertext = scene.mallory.encrypt(v, device, &content);
        assert_eq!(ciphertext.len(), MAX_MESSAGE_LEN);
        // One byte more and the relay refuses it with a typed error.
        let mut over = ciphertext.clone();
        over.push(0);
        let reply = scene
            .mallory
            .send_ciphertext_as(v, device, new_id(), Category::Conversation, &over)
            .await;
        assert_eq!(error_code(&reply), ErrorCode::InvalidRequest, "{reply:?}");
        let reply = scene
            .mallory
            .send_ciphertext_as(v, device, id, Category::Conversation, &ciphertext)
            .await;
        assert!(
            matches!(reply, server_frame::Body::Accepted(_)),
            "{reply:?}"
        );
        big.push(id);
    }
    let events = scene.events_until_marker().await;
    let got: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message { from, id, text, .. } if *from == m && *text == body => Some(id.0),
            _ => None,
        })
        .collect();
    assert_eq!(got, big, "each maximal message arrives once, in order");
    for id in &big {
        let stored = scene
            .victim()
            .message(&m, &MessageId(*id))
            .expect("read the history")
            .expect("stored");
        assert_eq!(stored.body, body);
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Undecryptable { .. } | Event::Warning(_))),
        "{events:?}"
    );
    let ours = scene.victim_still_sends(0).await;

    let after = scene.snapshot().await;
    let mut added = marker_keys(&before, &after);
    for id in &big {
        remove_key(&mut added, &message_key(m, *id));
    }
    // Besides the three: the marker and the victim's own message.
    assert_eq!(added.len(), 2);
    let messages = only_added(after.changes_since(&before)["messages"].added.clone());
    assert_changes(
        &before,
        &after,
        BTreeMap::from([
            ("messages", messages),
            ("message_statuses", only_added([ours])),
            ("sessions", only_modified([session_key(m, 1)])),
        ]),
    );
}

#[tokio::test]
async fn bit_flipped_ciphertexts_are_put_aside_with_a_bounded_number_of_rekeys() {
    const FLIPS: usize = 40;
    const FRESH_SESSIONS: usize = 4;
    let mut scene = Scene::new().await;
    let (v, m, device) = (scene.v(), scene.m(), scene.device());
    let before = scene.snapshot().await;

    // One flipped bit per message, spread over the whole message: prekey
    // prefix, ratchet header, ciphertext and tag. The first few are first
    // messages of new sessions, each naming an unused one-time prekey of
    // the victim, with the flip in the tag: X3DH succeeds, the message
    // does not, and the prekey must stay unused.
    let mut flipped = Vec::new();
    for i in 0..FLIPS {
        let id = new_id();
        let mut content = text(id, &format!("flipped {i}"));
        content.labels = Some(scene.mallory.honest_labels(v, &id, Category::Conversation));
        let mut ciphertext = if i < FRESH_SESSIONS {
            scene
                .mallory
                .first_message_of_new_session(v, device, &content)
                .await
        } else {
            scene.mallory.encrypt(v, device, &content)
        };
        let at = if i < FRESH_SESSIONS {
            ciphertext.len() - 1 - i
        } else {
            (i * 7919) % ciphertext.len()
        };
        ciphertext[at] ^= 1 << (i % 8);
        let reply = scene
            .mallory
            .send_ciphertext_as(v, device, id, Category::Conversation, &ciphertext)
            .await;
        assert!(
            matches!(reply, server_frame::Body::Accepted(_)),
            "{reply:?}"
        );
        flipped.push(id);
    }
    let events = scene.events_until_marker().await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Message { text, .. } if text.starts_with("flipped"))),
        "a flipped message was shown: {events:?}"
    );
    let undecryptable: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Undecryptable { from, id, .. } if *from == m => Some(id.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<_> = flipped
        .iter()
        .map(|id| MessageId(*id).to_string())
        .collect();
    assert_eq!(undecryptable, expected, "each flipped message is reported");
    let rekeys = resets(&events);
    assert!(
        rekeys <= REKEYS_PER_DEVICE,
        "{rekeys} re-keys for {FLIPS} flipped messages"
    );
    assert_eq!(scene.victim().quarantine_len().expect("count"), FLIPS);
    let ours = scene.victim_still_sends(rekeys).await;
    // Every flipped envelope was acknowledged: the relay holds nothing.
    scene
        .relay
        .wait_metric_at_most("comptoir_queue_depth", 0.0)
        .await;
    let after = scene.snapshot().await;

    // Allowed: each flipped envelope kept aside; the marker and the
    // victim's message in the history; the session with Mallory (a re-key
    // starts a new one, and the marker advanced it); the re-key counters.
    // Not allowed: the victim's own prekeys (a failed prekey message must
    // not use one up), contacts, pinned keys, evidence, outbox.
    let changes = after.changes_since(&before);
    let quarantine = &changes["quarantine"];
    assert_eq!(quarantine.added.len(), FLIPS);
    let mut expected = BTreeMap::from([
        ("quarantine", only_added(quarantine.added.clone())),
        ("messages", only_added(marker_keys(&before, &after))),
        ("message_statuses", only_added([ours])),
        ("sessions", only_modified([session_key(m, 1)])),
    ]);
    assert_eq!(expected["messages"].added.len(), 2);
    let guards = &changes["guards"];
    assert!(guards.removed.is_empty());
    assert!(
        guards.added.contains(QUARANTINE_TOTALS) || guards.modified.contains(QUARANTINE_TOTALS),
        "the quarantine's totals are kept: {guards:?}"
    );
    if rekeys > 0 {
        expected.insert("guards", guards.clone());
    } else {
        expected.insert("guards", quarantine_totals_written(&before));
    }
    assert_changes(&before, &after, expected);
}

#[tokio::test]
async fn forged_labels_are_refused_kept_as_evidence_and_never_rekey() {
    let mut scene = Scene::new().await;
    let (v, m, device) = (scene.v(), scene.m(), scene.device());
    let someone_else = AccountId::generate(&mut rand::rng());
    let before = scene.snapshot().await;

    // Each forgery binds one label that is not the envelope's.
    type Forge = fn(&mut comptoir_protocol::proto::content::Labels, AccountId);
    let forgeries: [(Label, Forge); 6] = [
        (Label::MessageId, |l, _| l.message_id = new_id().to_vec()),
        // Mallory claims the message came from someone else.
        (Label::SenderAccount, |l, other| {
            l.sender_account = other.to_vec()
        }),
        // A message meant for someone else, passed on to the victim.
        (Label::RecipientAccount, |l, other| {
            l.recipient_account = other.to_vec()
        }),
        (Label::Category, |l, _| {
            l.category = Category::Control as i32
        }),
        (Label::TemplateId, |l, _| l.template_id = "promo".into()),
        (Label::FrankingCommitment, |l, _| {
            l.franking_commitment = vec![1; 32]
        }),
    ];
    let mut forged = Vec::new();
    for (label, forge) in forgeries {
        let id = new_id();
        let mut content = text(id, &format!("forged {label:?}"));
        let mut labels = scene.mallory.honest_labels(v, &id, Category::Conversation);
        forge(&mut labels, someone_else);
        content.labels = Some(labels);
        let reply = scene
            .mallory
            .send_as_is(v, device, id, Category::Conversation, &content)
            .await;
        assert!(
            matches!(reply, server_frame::Body::Accepted(_)),
            "{reply:?}"
        );
        forged.push((id, label));
    }
    let events = scene.events_until_marker().await;
    let refused: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Refused {
                from,
                id,
                reason: LabelError::LabelMismatch { label },
            } if *from == m => Some((id.0, *label)),
            _ => None,
        })
        .collect();
    assert_eq!(refused, forged, "each forgery is refused, naming its label");
    assert_eq!(resets(&events), 0, "a forged label never re-keys");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Undecryptable { .. })
                || matches!(e, Event::Message { text, .. } if text.starts_with("forged"))),
        "{events:?}"
    );
    let evidence = scene.victim().evidence().expect("evidence").evidence;
    assert_eq!(evidence.len(), forged.len());
    for (id, label) in &forged {
        let kept = evidence
            .iter()
            .find(|e| e.envelope.message_id == id.to_vec())
            .expect("kept as evidence");
        assert_eq!(kept.label, Some(*label));
        assert_eq!(kept.from, m);
        let content = Content::decode(&kept.plaintext[..]).expect("the plaintext is kept");
        assert_eq!(content.message_id, id.to_vec());
    }
    let ours = scene.victim_still_sends(0).await;
    let after = scene.snapshot().await;

    let changes = after.changes_since(&before);
    let evidence_keys = changes["evidence"].added.clone();
    assert_eq!(evidence_keys.len(), forged.len());
    let messages = marker_keys(&before, &after);
    assert_eq!(
        messages.len(),
        2,
        "only the marker and the victim's message"
    );
    assert_changes(
        &before,
        &after,
        BTreeMap::from([
            ("evidence", only_added(evidence_keys)),
            ("messages", only_added(messages)),
            ("message_statuses", only_added([ours])),
            ("sessions", only_modified([session_key(m, 1)])),
        ]),
    );
}

/// Texts a terminal or a bidi-aware renderer would misread: C0 and C1
/// controls and escape sequences, bidirectional overrides and isolates,
/// zero-width characters, line separators, noncharacters.
const HOSTILE_TEXTS: &[&str] = &[
    "\u{0}\u{1}\u{7}\u{8}\u{1b}[2J\u{1b}]0;pwned\u{7}nul bell backspace clear title",
    "\r\nfake line\roverwrite\u{7f}\u{1b}[1A\u{1b}[K",
    "invoice_\u{202e}fdp.exe\u{202c} rlo",
    "\u{2066}\u{2067}\u{2068}isolates\u{2069}\u{200e}\u{200f}\u{61c}\u{202a}\u{202b}\u{202d}",
    "zero\u{200b}width\u{200c}joiner\u{200d}\u{2060}\u{feff}\u{180e}",
    "\u{85}\u{2028}\u{2029}\u{9b}31m\u{90}dcs\u{9c}",
    "\u{fffd}\u{e000}\u{fdd0}\u{fffe}\u{10ffff}",
    "",
];

#[tokio::test]
async fn control_bidi_and_zero_width_text_reaches_the_caller_unchanged() {
    let mut scene = Scene::new().await;
    let (v, m, device) = (scene.v(), scene.m(), scene.device());
    let before = scene.snapshot().await;

    let mut sent = Vec::new();
    for body in HOSTILE_TEXTS {
        let id = new_id();
        scene.mallory.send_content(v, device, &text(id, body)).await;
        sent.push((id, (*body).to_owned()));
    }
    // Not even UTF-8: the text field of a content holding invalid bytes.
    let bad_id = new_id();
    let mut content = text(bad_id, "\u{0}AAAA");
    content.labels = Some(
        scene
            .mallory
            .honest_labels(v, &bad_id, Category::Conversation),
    );
    let mut plaintext = content.encode_to_vec();
    let at = plaintext
        .windows(4)
        .position(|w| w == b"AAAA")
        .expect("the placeholder");
    plaintext[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
    let ciphertext = scene.mallory.encrypt_bytes(v, device, &plaintext);
    let reply = scene
        .mallory
        .send_ciphertext_as(v, device, bad_id, Category::Conversation, &ciphertext)
        .await;
    assert!(
        matches!(reply, server_frame::Body::Accepted(_)),
        "{reply:?}"
    );

    let events = scene.events_until_marker().await;
    let got: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message { from, id, text, .. } if *from == m && !text.starts_with("marker") => {
                Some((id.0, text.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(got, sent, "delivered to the caller byte for byte");
    for (id, body) in &sent {
        let stored = scene
            .victim()
            .message(&m, &MessageId(*id))
            .expect("read the history")
            .expect("stored");
        assert_eq!(&stored.body, body, "stored byte for byte");
    }
    let bad = MessageId(bad_id).to_string();
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Undecryptable { from, id, .. } if *from == m && *id == bad)
        ),
        "{events:?}"
    );
    assert_eq!(resets(&events), 0, "content that decrypted never re-keys");
    assert_eq!(
        scene.victim().contacts().expect("contacts").len(),
        1,
        "the address book is untouched"
    );
    let ours = scene.victim_still_sends(0).await;
    let after = scene.snapshot().await;

    let changes = after.changes_since(&before);
    let mut messages = marker_keys(&before, &after);
    for (id, _) in &sent {
        remove_key(&mut messages, &message_key(m, *id));
    }
    assert_eq!(messages.len(), 2, "besides the texts: the marker, ours");
    let quarantine = changes["quarantine"].added.clone();
    assert_eq!(quarantine.len(), 1, "the invalid UTF-8 is kept aside");
    assert_changes(
        &before,
        &after,
        BTreeMap::from([
            ("messages", only_added(changes["messages"].added.clone())),
            ("message_statuses", only_added([ours])),
            ("quarantine", only_added(quarantine)),
            ("sessions", only_modified([session_key(m, 1)])),
            ("guards", quarantine_totals_written(&before)),
        ]),
    );
}

/// The snapshot itself: a change in any one tree shows, and nothing else.
#[tokio::test]
async fn a_snapshot_sees_a_change_and_only_that() {
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("c");
    let client =
        Client::create_with_params(&dir, PASSPHRASE, support::client::FAST_KDF).expect("create");
    client.close().await.expect("close");
    let before = StoreSnapshot::read(&dir, PASSPHRASE);
    assert_eq!(StoreSnapshot::read(&dir, PASSPHRASE), before);
    let client = Client::open(&dir, PASSPHRASE).expect("open");
    let other = AccountId::generate(&mut rand::rng());
    client.add_contact("someone", other).expect("add");
    client.close().await.expect("close");
    let after = StoreSnapshot::read(&dir, PASSPHRASE);
    let changes = after.changes_since(&before);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes["contacts"].added.len(), 1);
}
