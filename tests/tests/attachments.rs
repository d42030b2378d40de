//! Encrypted attachments over a real relay on 127.0.0.1:0 (issue 17 item
//! 1): a file encrypted under a fresh key, uploaded in chunks, sent in an
//! end-to-end encrypted message, downloaded and decrypted with both digests
//! checked; an upload cut short resumes with only the missing chunks, also
//! across a relay restart; the relay's size limits and quota refuse with
//! typed errors and keep nothing; a blob altered at rest is refused at
//! decrypt and nothing is written; the relay's data directory holds no
//! plaintext of the file.

use crate::support;

use std::path::Path;

use comptoir_client::{Client, ClientError, Event, TRANSFER_CHUNK};
use comptoir_protocol::proto::wire::{self, ErrorCode};
use support::client::{registered, url, wait_for};
use support::{start_relay, start_relay_with};

/// A file of `len` bytes that is easy to find again (a repeated phrase).
fn write_file(dir: &Path, name: &str, len: usize) -> std::path::PathBuf {
    let phrase = b"BOARDING PASS gate 12 seat 14C passenger DUPONT ";
    let body: Vec<u8> = phrase.iter().copied().cycle().take(len).collect();
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write the file");
    path
}

/// Every file under `dir`, read whole.
fn all_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

/// Two registered customers and a directory for files.
struct Pair {
    alice: Client,
    bob: Client,
    files: tempfile::TempDir,
    _dirs: [tempfile::TempDir; 2],
}

async fn pair(relay: &support::TestRelay) -> Pair {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    Pair {
        alice: registered(relay, dirs[0].path(), "alice pass").await,
        bob: registered(relay, dirs[1].path(), "bob pass").await,
        files: tempfile::tempdir().unwrap(),
        _dirs: dirs,
    }
}

async fn receive_attachment(client: &mut Client) -> (comptoir_client::MessageId, String, u64) {
    wait_for(client, |e| match e {
        Event::Attachment {
            id,
            file_name,
            size,
            ..
        } => Some((*id, file_name.clone(), *size)),
        _ => None,
    })
    .await
}

fn relay_code(error: &ClientError) -> Option<ErrorCode> {
    match error {
        ClientError::Relay { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn a_document_travels_encrypted_and_opens_with_both_digests_checked() {
    let relay = start_relay().await;
    let Pair {
        mut alice,
        mut bob,
        files,
        _dirs,
    } = pair(&relay).await;
    let b = bob.account_id();
    let a = alice.account_id();
    // Several transfer chunks and several encryption chunks, not a
    // multiple of either.
    let len = 3 * TRANSFER_CHUNK + 12_345;
    let original = write_file(files.path(), "pass.pdf", len);
    let file = alice
        .encrypt_file(&original, "application/pdf")
        .expect("encrypt");
    alice.send_attachment(b, &file).await.expect("send");

    let (id, name, size) = receive_attachment(&mut bob).await;
    assert_eq!((name.as_str(), size), ("pass.pdf", len as u64));
    let saved = files.path().join("received.pdf");
    bob.download_attachment(a, id, &saved)
        .await
        .expect("download");
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        std::fs::read(&original).unwrap()
    );
    // The history shows it, and the relay never saw the text.
    let history = bob.history(&a).expect("history");
    assert!(history.iter().any(|m| m.body.contains("pass.pdf")));
    for (path, bytes) in all_files(&relay.data_dir) {
        assert!(
            !bytes.windows(13).any(|w| w == b"BOARDING PASS"),
            "plaintext found in {}",
            path.display()
        );
    }
}

#[tokio::test]
async fn an_upload_cut_short_resumes_with_only_the_missing_chunks_even_across_a_restart() {
    let relay = start_relay().await;
    let Pair {
        mut alice,
        mut bob,
        files,
        _dirs,
    } = pair(&relay).await;
    let (a, b) = (alice.account_id(), bob.account_id());
    let len = 5 * TRANSFER_CHUNK;
    let original = write_file(files.path(), "photo.jpg", len);
    let file = alice
        .encrypt_file(&original, "image/jpeg")
        .expect("encrypt");
    let total_chunks = file.encrypted_size.div_ceil(TRANSFER_CHUNK as u64) as usize;

    let first = alice.upload_at_most(&file, 2).await.expect("first part");
    assert_eq!(
        (first.resumed_from, first.chunks_sent, first.complete),
        (0, 2, false)
    );
    alice.disconnect().await;
    bob.disconnect().await;
    let relay = relay.restart().await;
    alice.connect(&url(&relay)).await.expect("reconnect");
    bob.connect(&url(&relay)).await.expect("reconnect");

    let rest = alice.upload(&file).await.expect("the rest");
    assert_eq!(rest.resumed_from, 2 * TRANSFER_CHUNK as u64);
    assert_eq!(rest.chunks_sent, total_chunks - 2);
    assert!(rest.complete);
    // Sending it uploads nothing more.
    assert_eq!(alice.upload(&file).await.expect("again").chunks_sent, 0);
    alice.send_attachment(b, &file).await.expect("send");
    let (id, _, _) = receive_attachment(&mut bob).await;
    let saved = files.path().join("got.jpg");
    bob.download_attachment(a, id, &saved)
        .await
        .expect("download");
    assert_eq!(std::fs::read(&saved).unwrap().len(), len);
}

#[tokio::test]
async fn oversized_uploads_and_uploads_past_the_quota_are_refused_and_nothing_is_kept() {
    let relay = start_relay_with(|config| {
        config.blobs.image_max_bytes = 100_000;
        config.blobs.account_quota_bytes = 300_000;
    })
    .await;
    let (dir_a, files) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = registered(&relay, dir_a.path(), "alice pass").await;
    let big = write_file(files.path(), "big.png", 150_000);
    let file = alice.encrypt_file(&big, "image/png").expect("encrypt");
    let refused = alice.upload(&file).await.expect_err("too large");
    assert_eq!(relay_code(&refused), Some(ErrorCode::BlobTooLarge));
    // Two documents of 200 kB: the second goes past the quota.
    let doc = write_file(files.path(), "a.pdf", 200_000);
    let one = alice
        .encrypt_file(&doc, "application/pdf")
        .expect("encrypt");
    let two = alice
        .encrypt_file(&doc, "application/pdf")
        .expect("encrypt");
    assert!(alice.upload(&one).await.expect("first").complete);
    let refused = alice.upload(&two).await.expect_err("past the quota");
    assert_eq!(relay_code(&refused), Some(ErrorCode::BlobTooLarge));
    let blobs: Vec<_> = std::fs::read_dir(relay.data_dir.join("blobs"))
        .expect("blobs dir")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(blobs.len(), 3, "only the first document's files: {blobs:?}");

    // Bad requests: typed refusals, nothing stored.
    let account = support::Account::new(1);
    account.register(relay.addr).await;
    let (mut raw, _) = account.login(relay.addr, 1).await;
    let bad = [
        wire::client_frame::Body::BeginUpload(wire::BeginUpload {
            blob_id: vec![1; 3],
            kind: 4,
            size: 10,
            digest: vec![0; 32],
        }),
        wire::client_frame::Body::BeginUpload(wire::BeginUpload {
            blob_id: vec![1; 16],
            kind: 9,
            size: 10,
            digest: vec![0; 32],
        }),
        wire::client_frame::Body::UploadChunk(wire::UploadChunk {
            blob_id: vec![2; 16],
            offset: 0,
            data: vec![0; 10],
        }),
        wire::client_frame::Body::FetchBlob(wire::FetchBlob {
            blob_id: vec![3; 16],
            offset: 0,
            max_len: 10,
        }),
    ];
    let expected = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidRequest,
        ErrorCode::BlobNotFound,
        ErrorCode::BlobNotFound,
    ];
    for (body, code) in bad.into_iter().zip(expected) {
        let reply = raw.request(body).await;
        assert_eq!(support::error_code(&reply), code);
    }
    assert_eq!(
        std::fs::read_dir(relay.data_dir.join("blobs"))
            .unwrap()
            .count(),
        3
    );
}

#[tokio::test]
async fn a_blob_altered_at_rest_is_refused_at_decrypt_and_nothing_is_written() {
    let relay = start_relay().await;
    let Pair {
        mut alice,
        mut bob,
        files,
        _dirs,
    } = pair(&relay).await;
    let (a, b) = (alice.account_id(), bob.account_id());
    let original = write_file(files.path(), "ticket.pdf", 200_000);
    let file = alice
        .encrypt_file(&original, "application/pdf")
        .expect("encrypt");
    alice.send_attachment(b, &file).await.expect("send");
    let (id, _, _) = receive_attachment(&mut bob).await;
    // Flip one bit of the stored ciphertext, in the middle.
    let data = std::fs::read_dir(relay.data_dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "data"))
        .expect("the blob's data file");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&data, bytes).unwrap();

    let saved = files.path().join("out.pdf");
    let refused = bob
        .download_attachment(a, id, &saved)
        .await
        .expect_err("altered");
    assert!(refused.to_string().contains("refused"), "{refused}");
    assert!(!saved.exists());
    assert_eq!(
        std::fs::read_dir(files.path()).unwrap().count(),
        1,
        "no temporary file left next to the destination"
    );
}

#[tokio::test]
async fn attachments_are_kept_until_their_time_is_up_not_until_first_fetch() {
    let relay = start_relay_with(|config| {
        config.gc_interval_ms = 20;
        config.blobs.ttl_ms = 3_600_000;
        config.blobs.upload_ttl_ms = 600_000;
    })
    .await;
    let Pair {
        mut alice,
        mut bob,
        files,
        _dirs,
    } = pair(&relay).await;
    let (a, b) = (alice.account_id(), bob.account_id());
    let original = write_file(files.path(), "menu.pdf", 70_000);
    let sent = alice
        .encrypt_file(&original, "application/pdf")
        .expect("encrypt");
    alice.send_attachment(b, &sent).await.expect("send");
    // An upload left unfinished.
    let unfinished = alice
        .encrypt_file(&original, "application/pdf")
        .expect("encrypt");
    alice
        .upload_at_most(&unfinished, 0)
        .await
        .expect("begin only");
    let (id, _, _) = receive_attachment(&mut bob).await;
    // Fetched twice: still there (the sender's other devices and a report
    // need it too).
    for name in ["one.pdf", "two.pdf"] {
        bob.download_attachment(a, id, &files.path().join(name))
            .await
            .expect("download");
    }
    // The unfinished upload goes after its 10 minutes; the blob stays.
    relay.clock.shift(600_001);
    relay.wait_metric("comptoir_blobs_expired_total", 1.0).await;
    bob.download_attachment(a, id, &files.path().join("three.pdf"))
        .await
        .expect("still there");
    // An hour after the upload began, it is gone, file and all.
    relay.clock.shift(3_000_000);
    relay.wait_metric("comptoir_blobs_expired_total", 2.0).await;
    let refused = bob
        .download_attachment(a, id, &files.path().join("four.pdf"))
        .await
        .expect_err("expired");
    assert_eq!(relay_code(&refused), Some(ErrorCode::BlobNotFound));
    assert_eq!(
        std::fs::read_dir(relay.data_dir.join("blobs"))
            .unwrap()
            .count(),
        0
    );
}

/// Alice sends Bob a three-chunk file; Bob connected through the proxy,
/// with the file's message received. Returns the relay (keep it), the
/// proxy, the pair, and the file's account, message id and original.
async fn a_file_for_bob_behind_the_proxy() -> (
    support::TestRelay,
    support::mitm::Mitm,
    tempfile::TempDir,
    Pair,
    comptoir_protocol::AccountId,
    comptoir_client::MessageId,
    std::path::PathBuf,
) {
    let (relay, mitm, data) = support::mitm::relay_behind_mitm().await;
    let mut pair = pair(&relay).await;
    let b = pair.bob.account_id();
    let original = write_file(
        pair.files.path(),
        "boarding.pdf",
        2 * TRANSFER_CHUNK + 5_000,
    );
    let file = pair
        .alice
        .encrypt_file(&original, "application/pdf")
        .expect("encrypt");
    pair.alice.send_attachment(b, &file).await.expect("send");
    pair.bob.disconnect().await;
    pair.bob
        .connect(&mitm.url())
        .await
        .expect("bob through the proxy");
    let (id, _, _) = receive_attachment(&mut pair.bob).await;
    let a = pair.alice.account_id();
    (relay, mitm, data, pair, a, id, original)
}

/// A download on a handle (as the agent daemon runs them) whose
/// connection is lost half-way goes on from where it was over the
/// client's next connection, and the file comes whole (before, it failed
/// with the lost connection and had to start over).
#[tokio::test]
async fn a_download_cut_by_a_lost_connection_goes_on_over_the_next_one() {
    let (_relay, mitm, _data, mut pair, a, id, original) = a_file_for_bob_behind_the_proxy().await;
    // The first chunk comes; the second one's request is held on the way,
    // and the connection is lost under it.
    mitm.stall_blob_fetches_from(TRANSFER_CHUNK as u64);
    let saved = pair.files.path().join("out.pdf");
    let download = {
        let (sender, saved) = (pair.bob.sender(), saved.clone());
        tokio::spawn(async move { sender.download_attachment(a, id, &saved).await })
    };
    mitm.blob_fetches_held(1).await;
    mitm.stall_blob_fetches(false);
    pair.bob.disconnect().await;
    pair.bob
        .connect(&mitm.url())
        .await
        .expect("connected again");
    tokio::time::timeout(support::TIMEOUT, download)
        .await
        .expect("the download ends")
        .expect("the download's task")
        .expect("the download goes on over the next connection");
    assert_eq!(
        std::fs::read(&saved).expect("the file"),
        std::fs::read(&original).expect("the original")
    );
    // The first chunk was not fetched again.
    let chunk = TRANSFER_CHUNK as u64;
    assert_eq!(mitm.blob_fetch_offsets(), vec![0, chunk, 2 * chunk]);
}

/// A download waiting for the next connection ends as soon as its client
/// is closed, not when its wait is up (15 s): a daemon stopping is not
/// held up by it.
#[tokio::test]
async fn a_download_waiting_for_a_connection_ends_when_its_client_closes() {
    let (_relay, mitm, _data, pair, a, id, _original) = a_file_for_bob_behind_the_proxy().await;
    mitm.stall_blob_fetches(true);
    let saved = pair.files.path().join("out.pdf");
    let download = {
        let (sender, saved) = (pair.bob.sender(), saved.clone());
        tokio::spawn(async move { sender.download_attachment(a, id, &saved).await })
    };
    mitm.blob_fetches_held(1).await;
    pair.bob.close().await.expect("close");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), download)
        .await
        .expect("the download ends well before its 15 s wait")
        .expect("the download's task");
    assert!(matches!(ended, Err(ClientError::Closed)), "{ended:?}");
    assert!(!saved.exists());
}
