//! An account without a verified phone number starts at most a configured
//! number of new conversations a day (`QUOTA_EXCEEDED` beyond, nothing
//! stored): writing again to an account it already talked with, or
//! answering one that wrote first, is not new; a verified number lifts the
//! cap; the count starts again the next UTC day.

use crate::support;

use comptoir_protocol::proto::wire::{ErrorCode, client_frame, server_frame::Body};
use support::*;

const NUMBER: &str = "+447700900123";

fn accepted(reply: &Body) {
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
}

async fn people(relay: &TestRelay, n: usize) -> Vec<(Account, Client)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let account = Account::new(1);
        account.register(relay.addr).await;
        let (conn, _) = account.login(relay.addr, 1).await;
        out.push((account, conn));
    }
    out
}

#[tokio::test]
async fn new_conversations_are_capped_per_day_without_a_verified_phone() {
    let relay = start_relay_with(|c| c.limits.new_conversations_per_day_without_phone = 2).await;
    let mut all = people(&relay, 5).await;
    let ids: Vec<_> = all.iter().map(|(a, _)| a.id).collect();
    let (_, alice) = &mut all[0];
    accepted(
        &alice
            .request(send_body(&ids[1], &[1], id(1), b"hi b"))
            .await,
    );
    accepted(
        &alice
            .request(send_body(&ids[2], &[1], id(2), b"hi c"))
            .await,
    );
    let refused = alice
        .request(send_body(&ids[3], &[1], id(3), b"hi d"))
        .await;
    assert_eq!(
        error_code(&refused),
        ErrorCode::QuotaExceeded,
        "{refused:?}"
    );
    if let Body::Error(e) = &refused {
        assert!(e.message.contains("verify a phone number"), "{}", e.message);
    }
    // Not new: an account it already wrote to.
    accepted(
        &alice
            .request(send_body(&ids[1], &[1], id(4), b"again"))
            .await,
    );
    // Not new either: answering one that wrote first.
    let (_, eve) = &mut all[4];
    accepted(
        &eve.request(send_body(&ids[0], &[1], id(5), b"hi alice"))
            .await,
    );
    let (_, alice) = &mut all[0];
    accepted(
        &alice
            .request(send_body(&ids[4], &[1], id(6), b"hi eve"))
            .await,
    );

    // Nothing was stored for the refused one: D's queue is empty, and the
    // next message D gets is one sent after the refusal.
    let (_, bob) = &mut all[1];
    accepted(
        &bob.request(send_body(&ids[3], &[1], id(7), b"from bob"))
            .await,
    );
    let (_, dave) = &mut all[3];
    assert_eq!(dave.next_envelope().await.message_id, id(7).to_vec());
    let _ = dave;

    // The next UTC day, the count starts again.
    relay.clock.shift(24 * 60 * 60 * 1000);
    let (_, alice) = &mut all[0];
    accepted(
        &alice
            .request(send_body(&ids[3], &[1], id(8), b"hi d"))
            .await,
    );
}

#[tokio::test]
async fn a_verified_phone_number_lifts_the_cap() {
    let relay = start_relay_with(|c| c.limits.new_conversations_per_day_without_phone = 1).await;
    let mut all = people(&relay, 3).await;
    let ids: Vec<_> = all.iter().map(|(a, _)| a.id).collect();
    let (_, alice) = &mut all[0];
    accepted(
        &alice
            .request(send_body(&ids[1], &[1], id(1), b"hi b"))
            .await,
    );
    let refused = alice
        .request(send_body(&ids[2], &[1], id(2), b"hi c"))
        .await;
    assert_eq!(error_code(&refused), ErrorCode::QuotaExceeded);
    let code = client_frame::Body::RequestCode(comptoir_protocol::proto::wire::RequestCode {
        phone_number: NUMBER.into(),
    });
    assert!(matches!(alice.request(code).await, Body::Ok(_)));
    let sent = relay.codes.last_for(NUMBER).expect("code");
    let verify = client_frame::Body::VerifyCode(comptoir_protocol::proto::wire::VerifyCode {
        phone_number: NUMBER.into(),
        code: sent,
        discoverable: false,
    });
    assert!(matches!(alice.request(verify).await, Body::Ok(_)));
    accepted(
        &alice
            .request(send_body(&ids[2], &[1], id(3), b"hi c"))
            .await,
    );
}

/// A send the store refuses (the recipient's queue is full) started no
/// conversation: it neither counts towards the day's cap nor marks the pair
/// as having talked (before, the count was taken before the write, so a
/// refused send used up the sender's quota).
#[tokio::test]
async fn a_send_the_store_refuses_does_not_count_as_a_new_conversation() {
    let relay = start_relay_with(|c| {
        c.limits.new_conversations_per_day_without_phone = 1;
        c.limits.max_queue_per_device = 1;
    })
    .await;
    let mut all = people(&relay, 4).await;
    let ids: Vec<_> = all.iter().map(|(a, _)| a.id).collect();
    // Carol fills Bob's one-envelope queue.
    let (_, carol) = &mut all[2];
    accepted(
        &carol
            .request(send_body(&ids[1], &[1], id(1), b"hi bob"))
            .await,
    );
    let (_, alice) = &mut all[0];
    let refused = alice
        .request(send_body(&ids[1], &[1], id(2), b"hi bob"))
        .await;
    assert_eq!(error_code(&refused), ErrorCode::QueueFull, "{refused:?}");
    // Alice's one new conversation of the day is still hers to start.
    accepted(
        &alice
            .request(send_body(&ids[3], &[1], id(3), b"hi dave"))
            .await,
    );
    // And the refused send did not make Alice and Bob a pair that talked.
    let again = alice
        .request(send_body(&ids[1], &[1], id(4), b"hi bob again"))
        .await;
    assert_eq!(error_code(&again), ErrorCode::QuotaExceeded, "{again:?}");
}

/// Sends pipelined on one connection (the relay keeps reading while
/// earlier sends are being stored) are held to the cap one after another:
/// with a cap of 1, one of forty first contacts sent at once is accepted.
#[tokio::test]
async fn pipelined_first_contacts_are_held_to_the_cap() {
    let relay = start_relay_with(|c| c.limits.new_conversations_per_day_without_phone = 1).await;
    let mut all = people(&relay, 41).await;
    let ids: Vec<_> = all.iter().map(|(a, _)| a.id).collect();
    let (_, alice) = &mut all[0];
    let bodies = ids
        .iter()
        .enumerate()
        .skip(1)
        .map(|(n, to)| send_body(to, &[1], id(n as u8), b"hello"))
        .collect();
    let requests = alice.send_burst(bodies).await;
    let mut accepted_count = 0;
    for request in requests {
        match alice.reply(request).await {
            Body::Accepted(_) => accepted_count += 1,
            refused => assert_eq!(
                error_code(&refused),
                ErrorCode::QuotaExceeded,
                "{refused:?}"
            ),
        }
    }
    assert_eq!(accepted_count, 1, "one new conversation a day");
}
