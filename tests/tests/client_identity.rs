//! A contact's identity changes (here: the relay's stored device list for
//! Bob is replaced by one signed with another account key, as a
//! compromised relay or a reinstall would present it). Alice's client
//! warns, holds her messages, and sends again only once she accepts.

use crate::support;

use std::sync::Arc;

use comptoir_client::{Client, ClientError, Event, KdfParams};
use comptoir_protocol::{AccountKeyPair, DeviceList, IdentityKeyPair};
use comptoir_relay::storage::ListUpdate;
use comptoir_relay::storage::StoredDeviceList;
use comptoir_relay::{Directory, Lifecycle, Metrics, SledStore};
use support::{TIMEOUT, start_relay};

const FAST_KDF: KdfParams = KdfParams {
    m_cost: 256,
    t_cost: 1,
    p_cost: 1,
};

#[tokio::test]
async fn a_changed_identity_is_warned_and_holds_sending_until_accepted() {
    let mut relay = start_relay().await;
    let url = format!("ws://{}", relay.addr);
    let root = tempfile::tempdir().expect("dir");
    let mut alice = Client::create_with_params(&root.path().join("a"), "pw-long-enough", FAST_KDF)
        .expect("create");
    alice.register(&url).await.expect("register");
    let mut bob = Client::create_with_params(&root.path().join("b"), "pw-long-enough", FAST_KDF)
        .expect("create");
    bob.register(&url).await.expect("register");
    let b = bob.account_id();
    alice.send_text(b, "hello").await.expect("send");
    let before = alice.safety_number(&b).expect("pinned on first use");
    alice.disconnect().await;
    bob.close().await.expect("close");

    // Bob's account now presents another account key and device.
    relay.stop().await;
    {
        let store = SledStore::open(&relay.data_dir, 1 << 20, Arc::new(Metrics::default()))
            .expect("open relay storage");
        let mut rng = rand::rng();
        let impostor = AccountKeyPair::generate(&mut rng);
        let device = *IdentityKeyPair::generate(&mut rng).public();
        let forged = DeviceList::sign(&impostor, b, 2, vec![(7, device)]).expect("sign");
        let forged = StoredDeviceList {
            signed: prost::Message::encode_to_vec(&forged),
            list: DeviceList::verify(&forged, None).expect("parse"),
        };
        assert_eq!(
            store.replace_device_list(b, &forged).await.expect("write"),
            ListUpdate::Stored
        );
        store.close().await.expect("close");
    }
    let relay = relay.restart().await;
    let url = format!("ws://{}", relay.addr);

    alice.connect(&url).await.expect("reconnect");
    match alice.send_text(b, "is this still you?").await {
        Err(ClientError::IdentityChanged { account }) => assert_eq!(account, b),
        other => panic!("expected IdentityChanged, got {other:?}"),
    }
    let warned = tokio::time::timeout(TIMEOUT, async {
        loop {
            match alice.next_event(TIMEOUT).await.expect("connected") {
                Some(Event::IdentityChanged { account }) => break account,
                Some(_) => continue,
                None => panic!("no identity warning"),
            }
        }
    })
    .await
    .expect("warned in time");
    assert_eq!(warned, b);
    assert!(alice.identity_changed(&b).expect("state"));

    // Held: a new message is refused before anything is encrypted or
    // queued, and the safety number still shows the identity Alice knew.
    let queued = alice.outbox_len().expect("outbox");
    assert!(matches!(
        alice.send_text(b, "again").await,
        Err(ClientError::IdentityChanged { .. })
    ));
    assert_eq!(alice.outbox_len().expect("outbox"), queued);
    assert_eq!(alice.safety_number(&b).expect("number"), before);

    // Both safety numbers can be seen before accepting.
    let (old, new) = alice
        .pending_safety_numbers(&b)
        .expect("numbers")
        .expect("a change is pending");
    assert_eq!(old, before);
    assert_ne!(new, before);

    // `comptoir trust` shows both and accepts only with the contact named.
    alice.add_contact("bob", b).expect("contact");
    alice.close().await.expect("close");
    let pass = root.path().join("pass");
    std::fs::write(&pass, "pw-long-enough\n").expect("write");
    let trust = |extra: &[&str]| {
        let mut args = vec![
            "comptoir".to_string(),
            "--data-dir".into(),
            root.path().join("a").display().to_string(),
            "--passphrase-file".into(),
            pass.display().to_string(),
            "trust".into(),
            "bob".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    for extra in [&[][..], &["--confirm", "alice"][..]] {
        let mut out = Vec::new();
        let code = comptoir_cli::run_args(trust(extra), &mut out).await;
        assert_eq!(code, 7, "no change without naming the contact");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains(&old.display()) && text.contains(&new.display()),
            "{text}"
        );
    }
    let alice = Client::open(&root.path().join("a"), "pw-long-enough").expect("open");
    assert!(alice.identity_changed(&b).expect("state"), "still pending");
    drop(alice);
    let mut out = Vec::new();
    let code = comptoir_cli::run_args(trust(&["--confirm", "bob"]), &mut out).await;
    assert_eq!(code, 0);
    let alice = Client::open(&root.path().join("a"), "pw-long-enough").expect("open");
    assert!(!alice.identity_changed(&b).expect("state"));
    assert_eq!(alice.safety_number(&b).expect("number"), new);
}
