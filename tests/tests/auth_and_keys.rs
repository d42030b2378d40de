//! Registration, challenge authentication, device lists and prekeys over a
//! real relay.

use crate::support;

use std::collections::BTreeSet;

use comptoir_protocol::proto::wire::{self, ErrorCode, client_frame, server_frame::Body};
use comptoir_protocol::session::InMemoryPreKeyStore;
use comptoir_protocol::{IdentityKeyPair, auth_payload};
use support::*;

#[tokio::test]
async fn replayed_auth_response_fails() {
    let relay = start_relay().await;
    let alice = Account::new(1);
    alice.register(relay.addr).await;
    let mut first = Client::connect(relay.addr).await;
    let response = alice.auth_body(1, &first.nonce.clone());
    assert!(matches!(
        first.request(response.clone()).await,
        Body::AuthOk(_)
    ));

    // The same signed response on a new connection (new nonce) fails.
    let mut second = Client::connect(relay.addr).await;
    assert_ne!(second.nonce, first.nonce, "fresh challenge per connection");
    let reply = second.request(response.clone()).await;
    assert_eq!(error_code(&reply), ErrorCode::AuthFailed);
    // A new challenge follows; answering it works.
    let Body::Challenge(ch) = second.next_push().await else {
        panic!("new challenge")
    };
    let reply = second.request(alice.auth_body(1, &ch.nonce)).await;
    assert!(matches!(reply, Body::AuthOk(_)), "{reply:?}");
}

#[tokio::test]
async fn too_many_failed_attempts_close_the_connection() {
    let relay = start_relay().await;
    let alice = Account::new(1);
    alice.register(relay.addr).await;
    let mut c = Client::connect(relay.addr).await;
    let stale = alice.auth_body(1, &[0u8; 32]);
    assert_eq!(
        error_code(&c.request(stale.clone()).await),
        ErrorCode::AuthFailed
    );
    assert_eq!(
        error_code(&c.request(stale.clone()).await),
        ErrorCode::AuthFailed
    );
    assert_eq!(
        error_code(&c.request(stale).await),
        ErrorCode::TooManyAttempts
    );
    assert_eq!(c.closed().await, Some(4001));
}

#[tokio::test]
async fn unknown_account_or_device_is_refused_with_a_close_code() {
    let relay = start_relay().await;
    let alice = Account::new(1);
    alice.register(relay.addr).await;
    let stranger = Account::new(1);
    let mut c = Client::connect(relay.addr).await;
    let reply = c.request(stranger.auth_body(1, &c.nonce.clone())).await;
    assert_eq!(error_code(&reply), ErrorCode::UnknownDevice);
    assert_eq!(c.closed().await, Some(4002));

    // A device id the account does not list.
    let mut c = Client::connect(relay.addr).await;
    let nonce = c.nonce.clone();
    let rogue = IdentityKeyPair::generate(&mut rand::rng());
    let body = client_frame::Body::AuthResponse(wire::AuthResponse {
        account_id: alice.id.to_vec(),
        device_id: 7,
        signature: rogue
            .sign(&auth_payload(&nonce, &alice.id, 7, &origin_of(relay.addr)))
            .to_vec(),
    });
    assert_eq!(error_code(&c.request(body).await), ErrorCode::UnknownDevice);
    assert_eq!(c.closed().await, Some(4002));
}

#[tokio::test]
async fn requests_before_authentication_are_refused() {
    let relay = start_relay().await;
    let bob = Account::new(1);
    bob.register(relay.addr).await;
    let mut c = Client::connect(relay.addr).await;
    let reply = c.request(send_body(&bob.id, &[1], id(1), b"x")).await;
    assert_eq!(error_code(&reply), ErrorCode::NotAuthenticated);
    let reply = c
        .request(client_frame::Body::FetchPrekeys(wire::FetchPreKeys {
            account_id: bob.id.to_vec(),
            device_ids: Vec::new(),
        }))
        .await;
    assert_eq!(error_code(&reply), ErrorCode::NotAuthenticated);
}

#[tokio::test]
async fn registration_checks_signatures_and_is_idempotent() {
    let relay = start_relay().await;
    let alice = Account::new(2);
    let mut c = Client::connect(relay.addr).await;
    // Signed over another nonce: refused.
    let reply = c.request(alice.register_body(&[9u8; 32])).await;
    assert_eq!(error_code(&reply), ErrorCode::BadSignature);
    // A list signed by another account key: refused.
    let mut forged = alice.register_body(&c.nonce.clone());
    if let client_frame::Body::Register(r) = &mut forged {
        let other = Account::new(1);
        r.device_list = Some(wire::SignedDeviceList {
            account_id: alice.id.to_vec(),
            ..other.signed_list()
        });
    }
    assert_eq!(
        error_code(&c.request(forged).await),
        ErrorCode::BadSignature
    );
    let nonce = c.nonce.clone();
    assert!(matches!(
        c.request(alice.register_body(&nonce)).await,
        Body::Registered(_)
    ));
    assert!(
        matches!(
            c.request(alice.register_body(&nonce)).await,
            Body::Registered(_)
        ),
        "retry"
    );
    // Someone else claiming the same id is refused.
    let mut squatter = Account::new(1);
    squatter.id = alice.id;
    let reply = c.request(squatter.register_body(&nonce)).await;
    assert_eq!(error_code(&reply), ErrorCode::InvalidRequest);
    // Register then authenticate on the same connection.
    alice.set_origin(&origin_of(relay.addr));
    assert!(matches!(
        c.request(alice.auth_body(2, &nonce)).await,
        Body::AuthOk(_)
    ));
}

#[tokio::test]
async fn device_lists_need_a_newer_version_and_removed_devices_are_cut_off() {
    let relay = start_relay().await;
    let mut alice = Account::new(2);
    alice.register(relay.addr).await;
    let (mut a1, _) = alice.login(relay.addr, 1).await;
    let (mut a2, _) = alice.login(relay.addr, 2).await;

    let same = client_frame::Body::PublishDeviceList(wire::PublishDeviceList {
        device_list: Some(alice.signed_list()),
    });
    assert_eq!(
        error_code(&a1.request(same).await),
        ErrorCode::StaleDeviceList
    );

    // Device 2 removed, device 3 added, version 2.
    alice.devices.retain(|(d, _)| *d == 1);
    alice
        .devices
        .push((3, IdentityKeyPair::generate(&mut rand::rng())));
    alice.version = 2;
    let newer = client_frame::Body::PublishDeviceList(wire::PublishDeviceList {
        device_list: Some(alice.signed_list()),
    });
    assert!(matches!(a1.request(newer).await, Body::Ok(_)));
    assert_eq!(a2.closed().await, Some(4006), "removed device disconnected");

    let get = client_frame::Body::GetDeviceList(wire::GetDeviceList {
        account_id: alice.id.to_vec(),
    });
    let Body::DeviceList(list) = a1.request(get).await else {
        panic!("list")
    };
    assert_eq!(list.version, 2);

    // The removed device can no longer authenticate; the new one can.
    let mut c = Client::connect(relay.addr).await;
    let nonce = c.nonce.clone();
    let old_key = IdentityKeyPair::generate(&mut rand::rng());
    let body = client_frame::Body::AuthResponse(wire::AuthResponse {
        account_id: alice.id.to_vec(),
        device_id: 2,
        signature: old_key
            .sign(&auth_payload(&nonce, &alice.id, 2, &origin_of(relay.addr)))
            .to_vec(),
    });
    assert_eq!(error_code(&c.request(body).await), ErrorCode::UnknownDevice);
    let (_, ok) = alice.login(relay.addr, 3).await;
    assert_eq!(ok.queued, 0);

    // Version 1 again is stale; a list signed by another key is refused.
    alice.version = 1;
    let older = client_frame::Body::PublishDeviceList(wire::PublishDeviceList {
        device_list: Some(alice.signed_list()),
    });
    assert_eq!(
        error_code(&a1.request(older).await),
        ErrorCode::StaleDeviceList
    );
    let mut impostor = Account::new(1);
    impostor.id = alice.id;
    impostor.version = 9;
    let forged = client_frame::Body::PublishDeviceList(wire::PublishDeviceList {
        device_list: Some(impostor.signed_list()),
    });
    assert_eq!(
        error_code(&a1.request(forged).await),
        ErrorCode::BadSignature
    );
}

#[tokio::test]
async fn one_time_prekeys_are_handed_out_once_even_to_concurrent_fetchers() {
    let relay = start_relay_with(|c| c.limits.prekeys_low_threshold = 3).await;
    let bob = Account::new(1);
    bob.register(relay.addr).await;
    let (mut b, ok) = bob.login(relay.addr, 1).await;
    assert_eq!(ok.one_time_prekeys, 0);
    assert!(
        matches!(b.next_push().await, Body::PrekeysLow(_)),
        "told at login"
    );

    let mut rng = rand::rng();
    let (_store, upload) = InMemoryPreKeyStore::generate(bob.identity(1), 1, 100, 8, &mut rng);
    assert!(matches!(
        b.request(client_frame::Body::UploadPrekeys(upload)).await,
        Body::Ok(_)
    ));

    // 12 fetchers at once for 8 keys.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let addr = relay.addr;
        let target = bob.id;
        tasks.push(tokio::spawn(async move {
            let fetcher = Account::new(1);
            fetcher.register(addr).await;
            let (mut f, _) = fetcher.login(addr, 1).await;
            let fetch = client_frame::Body::FetchPrekeys(wire::FetchPreKeys {
                account_id: target.to_vec(),
                device_ids: Vec::new(),
            });
            let Body::PrekeyBundles(bundles) = f.request(fetch).await else {
                panic!("bundles")
            };
            assert_eq!(bundles.bundles.len(), 1);
            let bundle = &bundles.bundles[0];
            comptoir_protocol::VerifiedBundle::verify(bundle, None).expect("bundle verifies");
            bundle.one_time_prekey.as_ref().map(|k| k.key_id)
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.expect("fetcher") {
            got.push(id);
        }
    }
    let distinct: BTreeSet<_> = got.iter().collect();
    assert_eq!(
        got.len(),
        8,
        "every key handed out, and only 8 of 12 fetches got one"
    );
    assert_eq!(distinct.len(), 8, "no key handed out twice");

    let low = b
        .next_matching(|f| match f {
            Body::PrekeysLow(l) => Some(l.remaining),
            _ => None,
        })
        .await;
    assert!(low < 3);
}

#[tokio::test]
async fn prekey_uploads_are_checked() {
    let relay = start_relay().await;
    let bob = Account::new(1);
    bob.register(relay.addr).await;
    let (mut b, _) = bob.login(relay.addr, 1).await;
    let mut rng = rand::rng();
    // Signed by another identity.
    let other = IdentityKeyPair::generate(&mut rng);
    let (_s, forged) = InMemoryPreKeyStore::generate(&other, 1, 1, 2, &mut rng);
    let reply = b.request(client_frame::Body::UploadPrekeys(forged)).await;
    assert_eq!(error_code(&reply), ErrorCode::BadSignature);
    // Too many one-time keys.
    let (_s, huge) = InMemoryPreKeyStore::generate(bob.identity(1), 1, 1, 501, &mut rng);
    assert_eq!(
        error_code(&b.request(client_frame::Body::UploadPrekeys(huge)).await),
        ErrorCode::InvalidRequest
    );
    let (_, ok) = bob.login(relay.addr, 1).await;
    assert_eq!(ok.one_time_prekeys, 0, "refused uploads stored nothing");
}

#[tokio::test]
async fn a_fetch_for_some_devices_takes_only_their_one_time_prekeys() {
    let relay = start_relay().await;
    let bob = Account::new(2);
    bob.register(relay.addr).await;
    let mut rng = rand::rng();
    for device in [1, 2] {
        let (mut b, _) = bob.login(relay.addr, device).await;
        let (_store, upload) =
            InMemoryPreKeyStore::generate(bob.identity(device), 1, 100, 5, &mut rng);
        assert!(matches!(
            b.request(client_frame::Body::UploadPrekeys(upload)).await,
            Body::Ok(_)
        ));
    }
    let alice = Account::new(1);
    alice.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let fetch = |device_ids: Vec<u32>| {
        client_frame::Body::FetchPrekeys(wire::FetchPreKeys {
            account_id: bob.id.to_vec(),
            device_ids,
        })
    };

    let Body::PrekeyBundles(only_two) = a.request(fetch(vec![2])).await else {
        panic!("bundles")
    };
    assert_eq!(only_two.bundles.len(), 1);
    assert_eq!(only_two.bundles[0].device_id, 2);
    assert!(only_two.bundles[0].one_time_prekey.is_some());
    assert!(only_two.device_list.is_some(), "the list says which exist");

    // An id the account does not have is skipped, not an error.
    let Body::PrekeyBundles(none) = a.request(fetch(vec![9])).await else {
        panic!("bundles")
    };
    assert!(none.bundles.is_empty());
    assert_eq!(none.device_list.expect("list").devices.len(), 2);

    // Too many ids: refused, and nothing taken.
    let too_many = fetch((1..=comptoir_protocol::MAX_DEVICES as u32 + 1).collect());
    assert_eq!(
        error_code(&a.request(too_many).await),
        ErrorCode::InvalidRequest
    );

    // Device 1 kept all five one-time prekeys, device 2 gave one.
    assert_eq!(bob.login(relay.addr, 1).await.1.one_time_prekeys, 5);
    assert_eq!(bob.login(relay.addr, 2).await.1.one_time_prekeys, 4);
    // And an empty selector still means every device.
    let Body::PrekeyBundles(all) = a.request(fetch(Vec::new())).await else {
        panic!("bundles")
    };
    assert_eq!(all.bundles.len(), 2);
}
