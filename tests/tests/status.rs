//! 24-hour Status posts over a real relay on 127.0.0.1:0 (issue 17 item
//! 2): a business's post reaches the customers whose consent covers
//! Status and is refused by the relay for the others; a person's reaches
//! the accounts it has a conversation with only; the post, its blob and
//! its key envelopes are gone from the relay 24 hours after posting under
//! a moved clock, and from the clients; the poster deletes one early; a
//! view receipt goes only when the viewer asks; the poster's other
//! devices get a copy of its post; a video over 30 seconds
//! is refused before anything is uploaded; bad input gets typed errors
//! and stores nothing. A business's Status deliveries are billed by the
//! rate card's `status` line: once per subscriber when priced, never when
//! free.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use comptoir_client::status::{STATUS_TTL_MS, StatusError};
use comptoir_client::{Client, ClientError, Event, StatusInput};
use comptoir_protocol::proto::wire::{self, AccountKind, ErrorCode, client_frame, server_frame};
use comptoir_protocol::{AccountId, BillCategory, ConsentCategories};
use support::client::{linked, registered, registered_business, url, wait_for, wait_message};
use support::hostile::Hostile;
use support::{Account, TestRelay, start_relay_with};

const PASS: &str = "pw-long-enough";

async fn relay() -> TestRelay {
    start_relay_with(|config| config.gc_interval_ms = 20).await
}

fn relay_code(error: &ClientError) -> Option<ErrorCode> {
    match error {
        ClientError::Relay { code, .. } => Some(*code),
        _ => None,
    }
}

/// Files in `dir` (0 if it does not exist).
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// An MP4 video of `seconds` one-second frames, written with the `mp4`
/// crate's writer (a real container: ftyp, mdat, moov with one AVC track).
fn write_mp4(path: &Path, seconds: u32) {
    let file = std::fs::File::create(path).expect("create the video");
    let config = mp4::Mp4Config {
        major_brand: "isom".parse().expect("brand"),
        minor_version: 512,
        compatible_brands: vec![
            "isom".parse().expect("brand"),
            "mp41".parse().expect("brand"),
        ],
        timescale: 1000,
    };
    let mut writer =
        mp4::Mp4Writer::write_start(std::io::BufWriter::new(file), &config).expect("start");
    writer
        .add_track(&mp4::TrackConfig {
            track_type: mp4::TrackType::Video,
            timescale: 1000,
            language: "und".into(),
            media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                width: 16,
                height: 16,
                seq_param_set: vec![0x67, 0x42, 0x00, 0x0a, 0xf8, 0x41, 0xa2],
                pic_param_set: vec![0x68, 0xce, 0x38, 0x80],
            }),
        })
        .expect("track");
    for second in 0..seconds {
        writer
            .write_sample(
                1,
                &mp4::Mp4Sample {
                    start_time: u64::from(second) * 1000,
                    duration: 1000,
                    rendering_offset: 0,
                    is_sync: true,
                    bytes: bytes::Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
                },
            )
            .expect("sample");
    }
    writer.write_end().expect("end");
}

/// A small PNG-named image (its bytes need not be a real image).
fn write_image(dir: &Path) -> PathBuf {
    let path = dir.join("sunset.png");
    std::fs::write(&path, b"\x89PNG\r\n\x1a\nSUNSET PIXELS ".repeat(200)).expect("image");
    path
}

async fn status_posted(client: &mut Client, poster: AccountId) -> [u8; 16] {
    wait_for(client, |e| match e {
        Event::StatusPosted { from, post_id, .. } if *from == poster => Some(*post_id),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn a_business_status_reaches_subscribers_only_and_is_gone_after_24_hours() {
    let relay = relay().await;
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let files = tempfile::tempdir().unwrap();
    let mut shop = registered_business(&relay, dirs[0].path(), PASS).await;
    let mut subscriber = registered(&relay, dirs[1].path(), PASS).await;
    let mut marketing_only = registered(&relay, dirs[2].path(), PASS).await;
    let mut offline = registered(&relay, dirs[3].path(), PASS).await;
    let s = shop.account_id();
    let (sub, other, away) = (
        subscriber.account_id(),
        marketing_only.account_id(),
        offline.account_id(),
    );
    let month = Duration::from_secs(30 * 24 * 3600);
    subscriber
        .grant_consent(s, ConsentCategories::STATUS, month)
        .await
        .expect("subscribe");
    marketing_only
        .grant_consent(s, ConsentCategories::MARKETING, month)
        .await
        .expect("marketing consent");
    offline
        .grant_consent(s, ConsentCategories::STATUS, month)
        .await
        .expect("subscribe");
    offline.close().await.expect("go offline");

    let posted = shop
        .post_status(
            StatusInput::Text("Flash sale: 20% off today"),
            &[sub, other, away],
        )
        .await
        .expect("post");
    assert_eq!(posted.sent_to, vec![sub, away]);
    assert_eq!(posted.refused.len(), 1);
    assert_eq!(posted.refused[0].0, other);
    assert_eq!(
        relay_code(&posted.refused[0].1),
        Some(ErrorCode::NotASubscriber),
        "{}",
        posted.refused[0].1
    );
    assert_eq!(posted.expires_at_ms - posted.posted_at_ms, STATUS_TTL_MS);

    // The subscriber sees who posted and when, and opens it.
    let post_id = status_posted(&mut subscriber, s).await;
    assert_eq!(post_id, posted.post_id);
    let listed = subscriber.statuses().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].poster, s);
    assert_eq!(listed[0].posted_at_ms, posted.posted_at_ms);
    assert!(listed[0].is_text() && !listed[0].outgoing);
    let opened = files.path().join("status.txt");
    subscriber
        .view_status(&hex::encode(post_id), &opened, true)
        .await
        .expect("view");
    assert_eq!(
        std::fs::read_to_string(&opened).unwrap(),
        "Flash sale: 20% off today"
    );
    // The poster learns of the view from the receipt the viewer chose.
    let by = wait_for(&mut shop, |e| match e {
        Event::StatusViewed { by, post_id, .. } if *post_id == posted.post_id => Some(*by),
        _ => None,
    })
    .await;
    assert_eq!(by, sub);
    let mine = shop.statuses().await.expect("list mine");
    assert_eq!(mine.len(), 1);
    assert!(mine[0].outgoing);
    assert_eq!(mine[0].recipients, 2);
    assert_eq!(
        mine[0].viewers.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        [sub]
    );
    // The relay holds the post and its blob, and never the text.
    assert_eq!(count_files(&relay.data_dir.join("status")), 1);
    assert!(count_files(&relay.data_dir.join("blobs")) >= 1);
    for entry in std::fs::read_dir(relay.data_dir.join("blobs")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(10).any(|w| w == b"Flash sale"));
    }

    // 24 hours later: the relay deletes the post, its blob and the key
    // envelope still queued for the offline subscriber.
    relay.clock.shift(STATUS_TTL_MS as i64 + 1_000);
    relay
        .wait_metric("comptoir_status_posts_expired_total", 1.0)
        .await;
    relay.wait_metric("comptoir_blobs_expired_total", 1.0).await;
    relay
        .wait_metric("comptoir_envelopes_expired_total", 1.0)
        .await;
    assert_eq!(count_files(&relay.data_dir.join("status")), 0);
    assert_eq!(count_files(&relay.data_dir.join("blobs")), 0);
    let mut offline = Client::open(dirs[3].path(), PASS).expect("open");
    assert_eq!(offline.connect(&url(&relay)).await.expect("connect"), 0);
    // The clients hide and delete it at 24 hours too.
    let later = posted.posted_at_ms + STATUS_TTL_MS;
    assert!(subscriber.statuses_at(later).await.unwrap().is_empty());
    assert!(subscriber.statuses().await.unwrap().is_empty(), "deleted");
    assert!(shop.statuses_at(later).await.unwrap().is_empty());
    let gone = subscriber
        .view_status(
            &hex::encode(post_id),
            &files.path().join("again.txt"),
            false,
        )
        .await
        .expect_err("gone");
    assert!(matches!(
        gone,
        ClientError::Status(StatusError::NotFound(_))
    ));
}

/// A business's Status deliveries are priced by the rate card's `status`
/// line: priced, a post to two subscribers is billed one line per
/// subscriber, once (one of them has two devices, and both ack their
/// key), at that price, on the bill the business verifies and the one
/// the operator exports; free (the default), nothing is billed.
#[tokio::test]
async fn a_business_status_is_billed_once_per_subscriber_when_priced_and_never_when_free() {
    for price in [2_500_u64, 0] {
        let relay = start_relay_with(|config| {
            config.gc_interval_ms = 20;
            config.rates.status = price as i64;
        })
        .await;
        let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut shop = registered_business(&relay, dirs[0].path(), PASS).await;
        let mut ann = registered(&relay, dirs[1].path(), PASS).await;
        let mut ann_phone = linked(&relay, &mut ann, dirs[2].path()).await;
        let mut ben = registered(&relay, dirs[3].path(), PASS).await;
        let s = shop.account_id();
        let (a, b) = (ann.account_id(), ben.account_id());
        let month = Duration::from_secs(30 * 24 * 3600);
        for customer in [&mut ann, &mut ben] {
            customer
                .grant_consent(s, ConsentCategories::STATUS, month)
                .await
                .expect("subscribe");
        }
        // Ann's phone learns of the consent her first device gave.
        ann_phone.consents().await.expect("the consents");

        let posted = shop
            .post_status(StatusInput::Text("New menu today"), &[a, b])
            .await
            .expect("post");
        assert_eq!(posted.sent_to, vec![a, b]);
        for device in [&mut ann, &mut ann_phone, &mut ben] {
            assert_eq!(status_posted(device, s).await, posted.post_id);
        }
        // Every key copy acked: both of Ann's devices acked theirs.
        relay.wait_metric_at_most("comptoir_queue_depth", 0.0).await;
        let mut expected = vec![a, b];
        expected.sort_by_key(|id| id.to_string());
        if price > 0 {
            // The business holds each subscriber's signed proof, once.
            let mut proved = Vec::new();
            while proved.len() < 2 {
                proved.push(
                    wait_for(&mut shop, |e| match e {
                        Event::DeliveryProved { to, .. } => Some(*to),
                        _ => None,
                    })
                    .await,
                );
            }
            proved.sort_by_key(|id| id.to_string());
            assert_eq!(proved, expected);
        }
        let bill = shop.fetch_bill().await.expect("the bill");
        let totals = shop.verify_bill(&bill).await.expect("the bill checks");
        let lines = if price > 0 { 2 } else { 0 };
        assert_eq!(bill.lines.len(), lines, "at {price}");
        assert_eq!(totals.lines, lines as u64);
        assert_eq!(totals.total_millionths, lines as u64 * price);
        assert_eq!(totals.per_category[3], (lines as u64, lines as u64 * price));
        let mut billed: Vec<AccountId> = bill.lines.iter().map(|l| l.customer).collect();
        billed.sort_by_key(|id| id.to_string());
        for line in &bill.lines {
            assert_eq!(line.category, BillCategory::Status);
            assert_eq!(line.price_millionths, price);
            assert!(line.template_id.is_empty() && !line.inside_window);
            assert!(line.accepted_at_ms >= posted.posted_at_ms);
        }
        if price > 0 {
            assert_eq!(billed, expected);
        }
        // The operator's export says the same.
        let json: serde_json::Value = serde_json::from_str(
            &relay
                .admin_client()
                .export_bill(&s.to_string(), None, None, "json")
                .await
                .expect("export"),
        )
        .expect("json");
        assert_eq!(json["total_lines"], lines);
        assert_eq!(json["total_millionths"], lines as u64 * price);
        assert_eq!(json["totals"][3]["category"], "status");
        assert_eq!(json["totals"][3]["lines"], lines);
        for line in json["lines"].as_array().expect("lines") {
            assert_eq!(line["category"], "status");
        }
    }
}

/// The relay's half of Status billing, over raw frames: with a `status`
/// price, a business's key to a subscriber is deleted only by a signed
/// ack (none, or a forged one, is refused with `BAD_DELIVERY_SIGNATURE`,
/// nothing billed), and the signed one makes one bill line, of category
/// `CATEGORY_CONTROL` (status) at that price, on a rate card that has the
/// status row.
#[tokio::test]
async fn a_priced_status_key_is_billed_only_on_its_signed_ack() {
    use sha2::Digest;
    let relay = start_relay_with(|config| {
        config.gc_interval_ms = 20;
        config.rates.status = 1_500;
    })
    .await;
    let shop = Account::new(1);
    shop.register_as(relay.addr, AccountKind::Business).await;
    let subscriber = Account::new(1);
    subscriber.register(relay.addr).await;
    let (mut b, _) = shop.login(relay.addr, 1).await;
    let (mut c, _) = subscriber.login(relay.addr, 1).await;
    let consent = c
        .request(support::consent_body(
            &subscriber,
            1,
            &shop,
            ConsentCategories::STATUS,
            1,
            3_600_000,
        ))
        .await;
    assert!(
        !matches!(consent, server_frame::Body::Error(_)),
        "{consent:?}"
    );
    // The post: one uploaded blob.
    let post = b"an encrypted post".repeat(10);
    let blob_id = vec![5; 16];
    let begun = b
        .request(client_frame::Body::BeginUpload(wire::BeginUpload {
            blob_id: blob_id.clone(),
            kind: wire::BlobKind::Document as i32,
            size: post.len() as u64,
            digest: sha2::Sha256::digest(&post).to_vec(),
        }))
        .await;
    assert!(
        matches!(begun, server_frame::Body::UploadStatus(_)),
        "{begun:?}"
    );
    match b
        .request(client_frame::Body::UploadChunk(wire::UploadChunk {
            blob_id: blob_id.clone(),
            offset: 0,
            data: post,
        }))
        .await
    {
        server_frame::Body::UploadStatus(status) => assert!(status.complete),
        other => panic!("expected UploadStatus, got {other:?}"),
    }
    let posted = b
        .request(client_frame::Body::PostStatus(wire::PostStatus {
            post_id: vec![6; 16],
            blob_id,
        }))
        .await;
    assert!(
        matches!(posted, server_frame::Body::StatusPosted(_)),
        "{posted:?}"
    );
    let franking = vec![4; 32];
    let accepted = b
        .request(client_frame::Body::SendStatusKey(wire::SendStatusKey {
            post_id: vec![6; 16],
            send: Some(wire::Send {
                message_id: vec![9; 16],
                recipient_account: subscriber.id.to_vec(),
                client_timestamp_ms: 1,
                category: wire::Category::Control as i32,
                template_id: String::new(),
                franking_tag: franking.clone(),
                devices: vec![wire::DeviceCiphertext {
                    device_id: 1,
                    ciphertext: vec![7; 40],
                }],
                resend: false,
            }),
        }))
        .await;
    let accept_id = match accepted {
        server_frame::Body::Accepted(accepted) => accepted.accept_id,
        other => panic!("expected Accepted, got {other:?}"),
    };
    let envelope = c.next_envelope().await;
    assert_eq!(envelope.accept_id, accept_id);
    let ack = |delivery_signature: Vec<u8>, signed_at_ms: u64| {
        client_frame::Body::DeliveryAck(wire::DeliveryAck {
            message_id: envelope.message_id.clone(),
            sender_account: envelope.sender_account.clone(),
            accept_id,
            delivery_signature,
            signed_at_ms,
            rejected: false,
        })
    };
    let bill_lines = |reply: server_frame::Body| match reply {
        server_frame::Body::Bill(bill) => {
            let card = bill.rate_card.expect("the rate card");
            let status_row = card
                .rows
                .iter()
                .find(|r| r.category == wire::Category::Control as i32)
                .expect("the status row");
            assert_eq!(status_row.inside_window_millionths, 1_500);
            bill.lines
        }
        other => panic!("expected Bill, got {other:?}"),
    };
    let get_bill = || {
        client_frame::Body::GetBill(wire::GetBill {
            from_index: 0,
            limit: 0,
        })
    };
    // No signature, or a forged one: refused, nothing billed.
    for (signature, at) in [(Vec::new(), 0), (vec![3; 64], 1_000)] {
        assert_eq!(
            support::error_code(&c.request(ack(signature, at)).await),
            ErrorCode::BadDeliverySignature
        );
    }
    assert!(bill_lines(b.request(get_bill()).await).is_empty());
    // The subscriber's signed ack: one line.
    let fields = comptoir_protocol::DeliveryFields {
        accept_id,
        message_id: [9; 16],
        business: shop.id,
        customer: subscriber.id,
        customer_device: 1,
        franking_commitment: franking,
        time_ms: 1_000,
    };
    let signature = comptoir_protocol::sign_delivery(subscriber.identity(1), &fields).to_vec();
    let acked = c.request(ack(signature, 1_000)).await;
    assert!(matches!(acked, server_frame::Body::Ok(_)), "{acked:?}");
    let lines = bill_lines(b.request(get_bill()).await);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].category, wire::Category::Control as i32);
    assert_eq!(lines[0].price_millionths, 1_500);
    assert_eq!(lines[0].accept_id, accept_id);
    assert_eq!(lines[0].customer_account, subscriber.id.to_vec());
    assert!(lines[0].template_id.is_empty() && !lines[0].inside_window);
}

#[tokio::test]
async fn a_person_posts_to_its_conversations_and_deletes_early() {
    let relay = relay().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let files = tempfile::tempdir().unwrap();
    let mut alice = registered(&relay, dirs[0].path(), PASS).await;
    let mut bob = registered(&relay, dirs[1].path(), PASS).await;
    let mut carol = registered(&relay, dirs[2].path(), PASS).await;
    let (a, b, c) = (alice.account_id(), bob.account_id(), carol.account_id());
    // Bob wrote to Alice: they have a conversation. Carol never did.
    bob.send_text(a, "hello").await.expect("send");
    wait_message(&mut alice, b).await;

    let image = write_image(files.path());
    let posted = alice
        .post_status(StatusInput::File(&image), &[b, c])
        .await
        .expect("post");
    assert_eq!(posted.sent_to, vec![b]);
    assert_eq!(
        relay_code(&posted.refused[0].1),
        Some(ErrorCode::NotASubscriber)
    );
    let post_id = status_posted(&mut bob, a).await;
    let seen = files.path().join("seen.png");
    let view = bob
        .view_status(&hex::encode(post_id), &seen, false)
        .await
        .expect("view");
    assert_eq!(view.content_type, "image/png");
    assert_eq!(
        std::fs::read(&seen).unwrap(),
        std::fs::read(&image).unwrap()
    );
    assert!(carol.statuses().await.unwrap().is_empty());

    // Alice deletes it early: gone from the relay at once, and Bob is told.
    assert_eq!(
        alice
            .delete_status(&hex::encode(post_id))
            .await
            .expect("delete"),
        1
    );
    assert_eq!(count_files(&relay.data_dir.join("status")), 0);
    assert_eq!(count_files(&relay.data_dir.join("blobs")), 0);
    wait_for(&mut bob, |e| match e {
        Event::StatusDeleted { from, post_id: p } if *from == a && *p == post_id => Some(()),
        _ => None,
    })
    .await;
    assert!(bob.statuses().await.unwrap().is_empty());
    assert!(alice.statuses().await.unwrap().is_empty());
    // Bob viewed without a receipt: Alice never learnt who viewed.
    let deleted_again = alice
        .delete_status(&hex::encode(post_id))
        .await
        .expect_err("already deleted");
    assert!(matches!(
        deleted_again,
        ClientError::Status(StatusError::NotFound(_))
    ));
}

/// The poster's other devices get a copy of its post (as sync copies of
/// messages go to them), listed there as its own and opened there; and
/// they drop it when the post is deleted from the device that posted it.
#[tokio::test]
async fn the_posters_other_devices_get_its_post_and_its_deletion() {
    let relay = relay().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let files = tempfile::tempdir().unwrap();
    let mut alice = registered(&relay, dirs[0].path(), PASS).await;
    let mut alice_phone = linked(&relay, &mut alice, dirs[1].path()).await;
    let mut bob = registered(&relay, dirs[2].path(), PASS).await;
    let (a, b) = (alice.account_id(), bob.account_id());
    bob.send_text(a, "hello").await.expect("send");
    wait_message(&mut alice, b).await;

    let posted = alice
        .post_status(StatusInput::Text("Closed on Monday"), &[b])
        .await
        .expect("post");
    assert_eq!(posted.sent_to, vec![b]);
    assert_eq!(status_posted(&mut alice_phone, a).await, posted.post_id);
    assert_eq!(status_posted(&mut bob, a).await, posted.post_id);
    let mine = alice_phone.statuses().await.expect("list");
    assert_eq!(mine.len(), 1);
    assert!(mine[0].outgoing && mine[0].poster == a);
    assert_eq!(mine[0].posted_at_ms, posted.posted_at_ms);
    let opened = files.path().join("mine.txt");
    alice_phone
        .view_status(&hex::encode(posted.post_id), &opened, false)
        .await
        .expect("open the copy");
    assert_eq!(
        std::fs::read_to_string(&opened).unwrap(),
        "Closed on Monday"
    );

    assert_eq!(
        alice
            .delete_status(&hex::encode(posted.post_id))
            .await
            .expect("delete"),
        1
    );
    wait_for(&mut alice_phone, |e| match e {
        Event::StatusDeleted { from, post_id } if *from == a && *post_id == posted.post_id => {
            Some(())
        }
        _ => None,
    })
    .await;
    assert!(alice_phone.statuses().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_video_over_30_seconds_and_bad_input_are_refused_and_store_nothing() {
    let relay = relay().await;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let files = tempfile::tempdir().unwrap();
    let mut alice = registered(&relay, dirs[0].path(), PASS).await;
    let mut bob = registered(&relay, dirs[1].path(), PASS).await;
    let (a, b) = (alice.account_id(), bob.account_id());
    bob.send_text(a, "hi").await.expect("send");
    wait_message(&mut alice, b).await;

    let long = files.path().join("long.mp4");
    write_mp4(&long, 31);
    let refused = alice
        .post_status(StatusInput::File(&long), &[b])
        .await
        .expect_err("31 s");
    assert!(
        matches!(
            refused,
            ClientError::Status(StatusError::VideoTooLong {
                duration_ms: 31_000
            })
        ),
        "{refused}"
    );
    let pdf = files.path().join("menu.pdf");
    std::fs::write(&pdf, b"%PDF-1.7").unwrap();
    let not_media = alice
        .post_status(StatusInput::File(&pdf), &[b])
        .await
        .expect_err("pdf");
    assert!(matches!(
        not_media,
        ClientError::Status(StatusError::UnsupportedFile(_))
    ));
    for text in [String::new(), "x".repeat(701)] {
        let error = alice
            .post_status(StatusInput::Text(&text), &[b])
            .await
            .expect_err("bad text");
        assert!(matches!(
            error,
            ClientError::Status(StatusError::TextLength { .. })
        ));
    }
    // Nothing was uploaded or kept, here or at the relay.
    assert_eq!(count_files(&relay.data_dir.join("blobs")), 0);
    assert_eq!(count_files(&relay.data_dir.join("status")), 0);
    assert!(alice.statuses().await.unwrap().is_empty());

    // A 30-second video is fine.
    let short = files.path().join("short.mp4");
    write_mp4(&short, 30);
    let posted = alice
        .post_status(StatusInput::File(&short), &[b])
        .await
        .expect("30 s");
    assert_eq!(posted.sent_to, vec![b]);
    assert_eq!(status_posted(&mut bob, a).await, posted.post_id);
}

#[tokio::test]
async fn the_relay_refuses_malformed_and_foreign_status_frames_with_typed_errors() {
    let relay = relay().await;
    let poster = Account::new(1);
    poster.register(relay.addr).await;
    let stranger = Account::new(1);
    stranger.register(relay.addr).await;
    let (mut p, _) = poster.login(relay.addr, 1).await;
    let (mut s, _) = stranger.login(relay.addr, 1).await;
    let code = |body: server_frame::Body| match body {
        server_frame::Body::Error(e) => ErrorCode::try_from(e.code).unwrap(),
        other => panic!("expected an error, got {other:?}"),
    };
    // A post id of the wrong length, and a blob that was never uploaded.
    let short_id = p
        .request(client_frame::Body::PostStatus(wire::PostStatus {
            post_id: vec![1; 3],
            blob_id: vec![2; 16],
        }))
        .await;
    assert_eq!(code(short_id), ErrorCode::InvalidRequest);
    let no_blob = p
        .request(client_frame::Body::PostStatus(wire::PostStatus {
            post_id: vec![1; 16],
            blob_id: vec![2; 16],
        }))
        .await;
    assert_eq!(code(no_blob), ErrorCode::BlobNotFound);
    // A key for a post that does not exist, and one outside a control send.
    let key = |category: wire::Category| {
        client_frame::Body::SendStatusKey(wire::SendStatusKey {
            post_id: vec![1; 16],
            send: Some(wire::Send {
                message_id: vec![9; 16],
                recipient_account: stranger.id.to_vec(),
                client_timestamp_ms: 1,
                category: category as i32,
                template_id: String::new(),
                franking_tag: Vec::new(),
                devices: vec![wire::DeviceCiphertext {
                    device_id: 1,
                    ciphertext: vec![7; 40],
                }],
                resend: false,
            }),
        })
    };
    assert_eq!(
        code(p.request(key(wire::Category::Control)).await),
        ErrorCode::StatusNotFound
    );
    assert_eq!(
        code(p.request(key(wire::Category::Conversation)).await),
        ErrorCode::InvalidRequest
    );
    let no_send = p
        .request(client_frame::Body::SendStatusKey(wire::SendStatusKey {
            post_id: vec![1; 16],
            send: None,
        }))
        .await;
    assert_eq!(code(no_send), ErrorCode::InvalidRequest);
    // Deleting a post that is not one's own.
    let foreign = s
        .request(client_frame::Body::DeleteStatus(wire::DeleteStatus {
            post_id: vec![1; 16],
        }))
        .await;
    assert_eq!(code(foreign), ErrorCode::StatusNotFound);
    assert_eq!(count_files(&relay.data_dir.join("status")), 0);
    // Subscribers: a customer has none to list; a malformed cursor is
    // refused; a business nobody subscribed to gets an empty page.
    let subscribers = |after: Vec<u8>| {
        client_frame::Body::GetSubscribers(wire::GetSubscribers { after, limit: 0 })
    };
    assert_eq!(
        code(s.request(subscribers(Vec::new())).await),
        ErrorCode::AccountKind
    );
    let shop = Account::new(1);
    shop.register_as(relay.addr, AccountKind::Business).await;
    let (mut b, _) = shop.login(relay.addr, 1).await;
    assert_eq!(
        code(b.request(subscribers(vec![1; 5])).await),
        ErrorCode::InvalidRequest
    );
    match b.request(subscribers(Vec::new())).await {
        server_frame::Body::Subscribers(page) => {
            assert!(page.accounts.is_empty() && !page.more, "{page:?}");
        }
        other => panic!("expected Subscribers, got {other:?}"),
    }
}

/// Run `comptoir <args>` in-process with the data directory `dir`: (exit
/// code, stdout).
async fn comptoir(dir: &Path, relay: &TestRelay, args: &[&str]) -> (u8, String) {
    let pass = dir.with_extension("pass");
    std::fs::write(&pass, "status cli passphrase\n").expect("write");
    let mut argv = vec![
        "comptoir".to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--relay".into(),
        url(relay),
        "--passphrase-file".into(),
        pass.display().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut out = Vec::new();
    let code = comptoir_cli::run_args(argv, &mut out).await;
    (code, String::from_utf8(out).expect("utf-8 output"))
}

/// A new account made with `comptoir init` and `register`: its id.
async fn cli_account(dir: &Path, relay: &TestRelay) -> String {
    let (code, id) = comptoir(dir, relay, &["init"]).await;
    assert_eq!(code, 0);
    assert_eq!(comptoir(dir, relay, &["register"]).await.0, 0);
    id.trim().to_owned()
}

#[tokio::test]
async fn status_post_list_view_and_delete_on_the_command_line() {
    let relay = relay().await;
    let root = tempfile::tempdir().unwrap();
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    let alice_id = cli_account(&alice, &relay).await;
    cli_account(&bob, &relay).await;
    assert_eq!(
        comptoir(&bob, &relay, &["contacts", "add", "alice", &alice_id])
            .await
            .0,
        0
    );
    assert_eq!(comptoir(&bob, &relay, &["send", "alice", "hi"]).await.0, 0);
    let (code, heard) = comptoir(&alice, &relay, &["listen", "--count", "1"]).await;
    assert_eq!(code, 0);
    assert!(heard.contains("hi"), "{heard}");

    // Bad input: a command line error, or a typed refusal; nothing posted.
    assert_eq!(comptoir(&alice, &relay, &["status", "post"]).await.0, 2);
    let pdf = root.path().join("menu.pdf");
    std::fs::write(&pdf, b"%PDF-1.7").unwrap();
    let pdf_arg = pdf.display().to_string();
    let (code, out) = comptoir(&alice, &relay, &["status", "post", "--file", &pdf_arg]).await;
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(count_files(&relay.data_dir.join("status")), 0);

    let (code, out) = comptoir(&alice, &relay, &["status", "post", "--text", "Back at 5"]).await;
    assert_eq!(code, 0);
    let post_id = out.trim().to_owned();
    assert_eq!(post_id.len(), 32, "{out}");
    let (code, heard) = comptoir(&bob, &relay, &["listen", "--count", "1"]).await;
    assert_eq!(code, 0);
    assert!(
        heard.contains(&format!("alice posted a Status {post_id}")),
        "{heard}"
    );
    let (code, listed) = comptoir(&bob, &relay, &["status", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        listed.starts_with(&post_id) && listed.contains("alice") && listed.contains("text"),
        "{listed}"
    );
    let (code, viewed) = comptoir(&bob, &relay, &["status", "view", &post_id[..8]]).await;
    assert_eq!(code, 0);
    assert!(
        viewed.contains("alice at") && viewed.contains("Back at 5"),
        "{viewed}"
    );
    let (code, mine) = comptoir(&alice, &relay, &["status", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        mine.contains(" me ") && mine.contains("sent to 1"),
        "{mine}"
    );

    let (code, deleted) = comptoir(&alice, &relay, &["status", "delete", &post_id]).await;
    assert_eq!((code, deleted.trim()), (0, "deleted; 1 account(s) told"));
    assert_eq!(count_files(&relay.data_dir.join("status")), 0);
    assert_eq!(
        comptoir(&alice, &relay, &["status", "list"]).await,
        (0, String::new())
    );
    let (code, _) = comptoir(&alice, &relay, &["status", "delete", &post_id]).await;
    assert_eq!(code, 8, "no such Status any more");
}

/// A business posts to its subscribers, the customers whose consent
/// covers Status, though they never wrote to it: `status subscribers`
/// lists them (`--never-wrote`: only those), and `status post` reaches
/// them; a customer has no subscribers to list.
#[tokio::test]
async fn a_business_lists_its_subscribers_and_posts_to_those_who_never_wrote() {
    let relay = relay().await;
    let root = tempfile::tempdir().unwrap();
    let [shop, ann, ben, cat] = ["shop", "ann", "ben", "cat"].map(|n| root.path().join(n));
    let (code, shop_id) = comptoir(&shop, &relay, &["init"]).await;
    assert_eq!(code, 0);
    let shop_id = shop_id.trim().to_owned();
    assert_eq!(
        comptoir(&shop, &relay, &["register", "--business"]).await.0,
        0
    );
    let ann_id = cli_account(&ann, &relay).await;
    let ben_id = cli_account(&ben, &relay).await;
    cli_account(&cat, &relay).await;
    for (who, categories) in [
        (&ann, "status"),
        (&ben, "status,marketing"),
        (&cat, "marketing"),
    ] {
        let (code, out) = comptoir(
            who,
            &relay,
            &["consent", "grant", &shop_id, "--categories", categories],
        )
        .await;
        assert_eq!(code, 0, "{out}");
    }
    // Ben writes to the shop; Ann never does.
    assert_eq!(
        comptoir(&ben, &relay, &["contacts", "add", "shop", &shop_id])
            .await
            .0,
        0
    );
    assert_eq!(
        comptoir(&ben, &relay, &["send", "shop", "hello"]).await.0,
        0
    );
    assert_eq!(
        comptoir(&shop, &relay, &["listen", "--count", "1"]).await.0,
        0
    );

    let (code, listed) = comptoir(&shop, &relay, &["status", "subscribers"]).await;
    assert_eq!(code, 0);
    let mut expected = vec![
        format!("{ann_id}\t-\tnever wrote"),
        format!("{ben_id}\t-\twrote"),
    ];
    expected.sort();
    assert_eq!(listed.lines().collect::<Vec<_>>(), expected, "{listed}");
    let (code, out) = comptoir(
        &shop,
        &relay,
        &["--output", "json", "status", "subscribers", "--never-wrote"],
    )
    .await;
    assert_eq!(code, 0);
    let never: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(
        never,
        [serde_json::json!({
            "type": "status_subscriber",
            "account": ann_id,
            "name": null,
            "wrote": false
        })]
    );

    // The post reaches both subscribers, Ann too.
    let (code, out) = comptoir(
        &shop,
        &relay,
        &[
            "--output",
            "json",
            "status",
            "post",
            "--text",
            "Open late tonight",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let posted: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let mut sent_to: Vec<String> = posted["sent_to"]
        .as_array()
        .expect("sent_to")
        .iter()
        .map(|a| a.as_str().expect("id").to_owned())
        .collect();
    sent_to.sort();
    let mut subscribers = vec![ann_id.clone(), ben_id.clone()];
    subscribers.sort();
    assert_eq!(sent_to, subscribers);
    let post_id = posted["id"].as_str().expect("id").to_owned();
    let (code, heard) = comptoir(&ann, &relay, &["listen", "--count", "1"]).await;
    assert_eq!(code, 0);
    assert!(
        heard.contains(&format!("posted a Status {post_id}")),
        "{heard}"
    );

    // A customer has no subscribers.
    let (code, out) = comptoir(&cat, &relay, &["status", "subscribers"]).await;
    assert_ne!(code, 0, "{out}");
}

/// `--output json`: `status post`, `list`, `view` and `delete` print one
/// JSON object per line, with a `type`, like the other commands.
#[tokio::test]
async fn status_commands_print_one_json_object_per_line_with_output_json() {
    let relay = relay().await;
    let root = tempfile::tempdir().unwrap();
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    let alice_id = cli_account(&alice, &relay).await;
    let bob_id = cli_account(&bob, &relay).await;
    assert_eq!(
        comptoir(&bob, &relay, &["contacts", "add", "alice", &alice_id])
            .await
            .0,
        0
    );
    assert_eq!(comptoir(&bob, &relay, &["send", "alice", "hi"]).await.0, 0);
    assert_eq!(
        comptoir(&alice, &relay, &["listen", "--count", "1"])
            .await
            .0,
        0
    );
    let json = |out: &str| -> Vec<serde_json::Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let text = "Back at 5 \u{1b}[2J \"quoted\"";
    let (code, out) = comptoir(
        &alice,
        &relay,
        &["--output", "json", "status", "post", "--text", text],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let posted = json(&out);
    assert_eq!(posted.len(), 1, "{out}");
    let posted = &posted[0];
    assert_eq!(posted["type"], "status_posted");
    let post_id = posted["id"].as_str().expect("id").to_owned();
    assert_eq!(post_id.len(), 32);
    assert_eq!(posted["sent_to"], serde_json::json!([bob_id]));
    assert_eq!(posted["refused"], serde_json::json!([]));
    assert_eq!(
        posted["expires_ms"].as_u64().unwrap() - posted["time_ms"].as_u64().unwrap(),
        STATUS_TTL_MS
    );
    assert!(posted["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        comptoir(&bob, &relay, &["listen", "--count", "1"]).await.0,
        0
    );

    let (code, out) = comptoir(&bob, &relay, &["--output", "json", "status", "list"]).await;
    assert_eq!(code, 0);
    let listed = json(&out);
    assert_eq!(listed.len(), 1, "{out}");
    let post = &listed[0];
    assert_eq!(post["type"], "status_post");
    assert_eq!(post["id"], post_id.as_str());
    assert_eq!(post["poster"], alice_id.as_str());
    assert_eq!(post["poster_name"], "alice");
    assert_eq!(post["outgoing"], false);
    assert_eq!(post["kind"], "text");
    assert_eq!(post["content_type"], "text/plain; charset=utf-8");
    assert_eq!(post["size"], text.len());
    assert_eq!(post["time_ms"], posted["time_ms"]);
    assert_eq!(post["recipients"], serde_json::Value::Null);
    assert_eq!(post["viewers"], serde_json::json!([]));

    let (code, out) = comptoir(
        &bob,
        &relay,
        &["--output", "json", "status", "view", &post_id[..8]],
    )
    .await;
    assert_eq!(code, 0);
    let viewed = json(&out);
    assert_eq!(viewed.len(), 1, "{out}");
    assert_eq!(viewed[0]["type"], "status_view");
    assert_eq!(viewed[0]["id"], post_id.as_str());
    assert_eq!(viewed[0]["poster_name"], "alice");
    // The exact text, JSON-escaped (control characters included).
    assert_eq!(viewed[0]["text"], text);
    assert_eq!(viewed[0]["saved_to"], serde_json::Value::Null);

    let (code, out) = comptoir(&alice, &relay, &["--output", "json", "status", "list"]).await;
    assert_eq!(code, 0);
    let mine = json(&out);
    assert_eq!(mine.len(), 1, "{out}");
    assert_eq!(mine[0]["outgoing"], true);
    assert_eq!(mine[0]["poster"], alice_id.as_str());
    assert_eq!(mine[0]["recipients"], 1);

    let (code, out) = comptoir(
        &alice,
        &relay,
        &["--output", "json", "status", "delete", &post_id],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        json(&out),
        [serde_json::json!({"type": "status_deleted", "id": post_id, "told": 1})]
    );
    assert_eq!(
        comptoir(&alice, &relay, &["--output", "json", "status", "list"]).await,
        (0, String::new())
    );
}

/// The client's half of the audience rule: a Status key slipped into an
/// ordinary control message (the relay cannot see it is one) by a
/// stranger this account never talked with is ignored with a warning, and
/// shown nowhere.
#[tokio::test]
async fn a_status_key_from_a_stranger_outside_send_status_key_is_ignored() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let mut victim = registered(&relay, dir.path(), PASS).await;
    let v = victim.account_id();
    let mut mallory = Hostile::register(relay.addr).await;
    mallory.start_session(v, victim.device_id()).await;
    let id = [0x5a; 16];
    let content = comptoir_protocol::proto::content::Content {
        message_id: id.to_vec(),
        sent_at_ms: comptoir_client::client::now_ms(),
        body: Some(comptoir_protocol::proto::content::content::Body::StatusKey(
            comptoir_protocol::proto::content::StatusKey {
                post_id: vec![7; 16],
                pointer: Some(comptoir_protocol::proto::content::AttachmentPointer {
                    blob_id: hex::encode([8u8; 16]),
                    content_type: "text/plain; charset=utf-8".into(),
                    file_name: "status.txt".into(),
                    size: 4,
                    key: vec![9; 32],
                    digest: vec![1; 32],
                    plaintext_digest: vec![2; 32],
                    encrypted_size: 61,
                }),
                posted_at_ms: comptoir_client::client::now_ms(),
            },
        )),
        labels: Some(mallory.honest_labels(v, &id, wire::Category::Control)),
        franking_key: Vec::new(),
        padding: Vec::new(),
    };
    let reply = mallory
        .send_as_is(v, victim.device_id(), id, wire::Category::Control, &content)
        .await;
    assert!(
        matches!(reply, server_frame::Body::Accepted(_)),
        "{reply:?}"
    );
    let warning = wait_for(&mut victim, |e| match e {
        Event::Warning(text) if text.contains("did not subscribe") => Some(text.clone()),
        Event::StatusPosted { .. } => panic!("a stranger's Status was shown"),
        _ => None,
    })
    .await;
    assert!(warning.contains(&mallory.id().to_string()), "{warning}");
    assert!(victim.statuses().await.unwrap().is_empty());
}

/// A `PostStatus` the relay refuses (its id is another post's) changes
/// nothing stored: the blob it named keeps its own expiry (before, the
/// blob's expiry was brought forward to the post's 24 hours before the
/// post was refused).
#[tokio::test]
async fn a_refused_post_leaves_its_blob_as_it_was() {
    use sha2::Digest;
    let relay = relay().await;
    let poster = Account::new(1);
    poster.register(relay.addr).await;
    let (mut p, _) = poster.login(relay.addr, 1).await;
    let upload = |id: u8, data: &[u8]| {
        (
            client_frame::Body::BeginUpload(wire::BeginUpload {
                blob_id: vec![id; 16],
                kind: wire::BlobKind::Document as i32,
                size: data.len() as u64,
                digest: sha2::Sha256::digest(data).to_vec(),
            }),
            client_frame::Body::UploadChunk(wire::UploadChunk {
                blob_id: vec![id; 16],
                offset: 0,
                data: data.to_vec(),
            }),
        )
    };
    let mut expiry = Vec::new();
    for (id, data) in [(1u8, &b"first blob"[..]), (2, &b"second blob"[..])] {
        let (begin, chunk) = upload(id, data);
        p.request(begin).await;
        match p.request(chunk).await {
            server_frame::Body::UploadStatus(s) if s.complete => expiry.push(s.expires_at_ms),
            other => panic!("upload: {other:?}"),
        }
    }
    let post = |blob: u8| {
        client_frame::Body::PostStatus(wire::PostStatus {
            post_id: vec![7; 16],
            blob_id: vec![blob; 16],
        })
    };
    assert!(matches!(
        p.request(post(1)).await,
        server_frame::Body::StatusPosted(_)
    ));
    let refused = p.request(post(2)).await;
    assert_eq!(
        support::error_code(&refused),
        ErrorCode::InvalidRequest,
        "{refused:?}"
    );
    // Beginning the second upload again answers its status, expiry included.
    let (begin, _) = upload(2, b"second blob");
    match p.request(begin).await {
        server_frame::Body::UploadStatus(s) => {
            assert!(s.complete);
            assert_eq!(s.expires_at_ms, expiry[1], "the blob's expiry is unchanged");
        }
        other => panic!("status: {other:?}"),
    }
}

/// A relay that backdates a Status key's accept time by more than a day
/// has it ignored as expired by the customer's client; before, the key
/// was still acked with a signed delivery proof, which the relay bills
/// when the rate card prices Status. Only a key kept to be shown is
/// signed for now; an ignored one is acked rejected, unsigned, and the
/// relay deletes it unbilled.
#[tokio::test]
async fn a_status_key_the_client_ignores_is_acked_rejected_and_never_billed() {
    const PRICE: u64 = 2_500;
    let (relay, mitm, _data) = support::mitm::relay_behind_mitm_with(|config| {
        config.rates.status = PRICE as i64;
    })
    .await;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut shop = registered_business(&relay, dirs[0].path(), PASS).await;
    let mut ann = registered(&relay, dirs[1].path(), PASS).await;
    ann.connect(&mitm.url()).await.expect("through the proxy");
    let (s, a) = (shop.account_id(), ann.account_id());
    ann.grant_consent(
        s,
        ConsentCategories::STATUS,
        Duration::from_secs(30 * 24 * 3600),
    )
    .await
    .expect("subscribe");

    // A key as the relay accepted it: shown, its ack signed.
    let shown = shop
        .post_status(StatusInput::Text("Open today"), &[a])
        .await
        .expect("post");
    assert_eq!(status_posted(&mut ann, s).await, shown.post_id);
    let signed = mitm.nth_ack_from(&mut ann, s.as_bytes(), 0).await;
    assert!(!signed.delivery_signature.is_empty(), "{signed:?}");

    // The next, backdated by 25 hours on its way: ignored, acked unsigned.
    mitm.backdate(s.as_bytes(), 25 * 3600 * 1000);
    shop.post_status(StatusInput::Text("Closed tomorrow"), &[a])
        .await
        .expect("post");
    let ignored = mitm.nth_ack_from(&mut ann, s.as_bytes(), 1).await;
    assert!(ignored.delivery_signature.is_empty(), "{ignored:?}");
    assert_eq!(ignored.signed_at_ms, 0);
    assert!(ignored.rejected, "{ignored:?}");
    let listed = ann.statuses().await.expect("list");
    assert_eq!(listed.len(), 1, "only the key shown");
    assert_eq!(listed[0].post_id, shown.post_id);
    // Both copies are gone from the queue; only the shown one is billed.
    relay.wait_metric_at_most("comptoir_queue_depth", 0.0).await;
    let bill = shop.fetch_bill().await.expect("the bill");
    assert_eq!(bill.lines.len(), 1, "{:?}", bill.lines);
    assert_eq!(bill.lines[0].price_millionths, PRICE);
}
