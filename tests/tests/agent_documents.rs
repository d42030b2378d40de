//! Documents through the business agent's API (issue 17, item 3): the
//! seed's flow ends with the boarding pass as a PDF. A real relay, the
//! daemon in process with its API called over HTTP, a real customer on
//! the client library.
//!
//! - The backend uploads a PDF (`POST /v1/media`), the daemon encrypts
//!   it and uploads only ciphertext; after the customer writes, the
//!   backend sends the delivery-confirmation template with the document
//!   (a second message right after the template: a template cannot carry
//!   an attachment), and a service text with it too; the customer
//!   receives both, downloads the PDF, both digests checked by its
//!   client, the bytes and SHA-256 equal to what was uploaded.
//! - Refused, typed, nothing stored or sent: a document outside the
//!   window, an unknown media id, an upload past the relay's document
//!   limit and one past the daemon's limit for its kind, a bad name.

use crate::support;

use std::path::Path;

use comptoir_agent::clock::ManualClock;
use comptoir_client::{Client, Event, MessageId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::agent::{
    FULL_KEY, Fixture, READ_KEY, call, call_raw, customer_with_number, data_dir, fixture_on,
    request_utility_consent, serve,
};
use support::client::wait_for;
use support::*;

const CAROL: &str = "+447700900123";
/// The relay's document limit in this test: the boarding pass fits, the
/// "oversized" document does not.
const RELAY_DOCUMENT_LIMIT: u64 = 4096;

/// A minimal valid one-page PDF saying "BOARDING PASS BA117 seat 14C".
fn boarding_pass() -> Vec<u8> {
    let stream = "BT /F1 24 Tf 72 720 Td (BOARDING PASS BA117 seat 14C) Tj ET";
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

async fn upload(
    agent: &comptoir_agent::Running,
    name: &str,
    mime: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let headers = [
        ("content-type", mime.to_owned()),
        ("authorization", format!("Bearer {FULL_KEY}")),
    ];
    call_raw(
        agent,
        "POST",
        &format!("/v1/media?filename={name}"),
        &headers,
        body,
    )
    .await
}

/// Uploads waiting in the daemon's data directory (none once answered).
fn leftover_uploads(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".media-upload-") || n.starts_with(".comptoir-upload-"))
        .collect()
}

/// Every file under `dir` holds no `needle`.
fn nowhere_under(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                return false;
            }
        }
    }
    true
}

async fn receive_document(carol: &mut Client) -> (MessageId, String, String, u64) {
    wait_for(carol, |e| match e {
        Event::Attachment {
            id,
            file_name,
            content_type,
            size,
            ..
        } => Some((*id, file_name.clone(), content_type.clone(), *size)),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn the_boarding_pass_goes_with_a_template_and_the_customer_opens_it() {
    let Fixture {
        relay,
        root,
        receiver,
        config,
        business,
    } = fixture_on(
        start_relay_with(|config| {
            config.blobs.document_max_bytes = RELAY_DOCUMENT_LIMIT;
        })
        .await,
    )
    .await;
    let agent = serve(&config, ManualClock::at(comptoir_client::client::now_ms())).await;
    let mut carol = customer_with_number(&relay, &root.path().join("carol"), CAROL).await;

    // Consent, as in the seed's flow.
    let reference =
        request_utility_consent(&agent, CAROL, "boarding_pass_and_flight_updates").await;
    let asked = wait_for(&mut carol, |e| match e {
        Event::ConsentRequested(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    carol
        .answer_consent_request(&asked, true, std::time::Duration::from_secs(3600))
        .await
        .expect("allow");
    receiver
        .wait("consent", |h| h.event_id == format!("consent:{reference}"))
        .await;

    // The backend uploads the boarding pass.
    let pdf = boarding_pass();
    assert!((pdf.len() as u64) < RELAY_DOCUMENT_LIMIT);
    let (status, media) = upload(&agent, "boarding-pass.pdf", "application/pdf", pdf.clone()).await;
    assert_eq!(status, 200, "{media}");
    let media_id = media["id"].as_str().expect("media id").to_owned();
    assert_eq!(media["sha256"], hex::encode(Sha256::digest(&pdf)));
    assert_eq!(media["file_size"], pdf.len() as u64);
    assert_eq!(media["mime_type"], "application/pdf");
    assert_eq!(agent.db.media_count().expect("count"), 1);
    // Only ciphertext reached the relay; no plaintext waits in the daemon.
    assert!(nowhere_under(&relay.data_dir, b"BOARDING PASS BA117"));
    assert!(leftover_uploads(&data_dir(root.path())).is_empty());

    let template = json!({
        "name": "order_update",
        "language": { "code": "en_GB" },
        "components": [{
            "type": "body",
            "parameters": [{ "type": "text", "parameter_name": "order", "text": "BA117" }],
        }],
    });
    // Carol has not written: the relay would refuse the document after
    // the template, so the daemon refuses both before sending anything.
    let before = agent.db.message_count().expect("count");
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(json!({
            "to": CAROL, "type": "template", "template": template,
            "document": { "media_id": media_id },
        })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "window_closed");
    // An unknown media id.
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(json!({
            "to": CAROL, "type": "template", "template": template,
            "document": { "media_id": "00".repeat(16) },
        })),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_media");
    assert_eq!(agent.db.message_count().expect("count"), before);

    // Carol checks in: her message opens the window.
    let hello = carol
        .send_text(business, "Checking in for BA117")
        .await
        .expect("write");
    receiver
        .wait("message", |h| h.event_id == format!("message:{hello}"))
        .await;

    // The delivery confirmation with the boarding pass.
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(json!({
            "to": CAROL, "type": "template", "template": template,
            "document": { "media_id": media_id },
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = body["messages"].as_array().expect("messages");
    assert_eq!(sent.len(), 2, "{body}");
    let template_id = sent[0]["id"].as_str().expect("id").to_owned();
    let document_id = sent[1]["id"].as_str().expect("id").to_owned();
    let rendered = wait_for(&mut carol, |e| match e {
        Event::Template { id, rendered, .. } if id.to_string() == template_id => {
            Some(rendered.body.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(rendered, "Your order BA117 has shipped.");
    let (id, name, mime, size) = receive_document(&mut carol).await;
    assert_eq!(id.to_string(), document_id);
    assert_eq!(
        (name.as_str(), mime.as_str(), size),
        ("boarding-pass.pdf", "application/pdf", pdf.len() as u64)
    );
    // Carol opens it: her client checks the ciphertext's and the file's
    // digests while it decrypts; the bytes are the PDF uploaded.
    let files = tempfile::tempdir().expect("temp dir");
    let saved = files.path().join("boarding-pass.pdf");
    carol
        .download_attachment(business, id, &saved)
        .await
        .expect("download and check");
    let opened = std::fs::read(&saved).expect("saved");
    assert_eq!(opened, pdf);
    assert_eq!(hex::encode(Sha256::digest(&opened)), media["sha256"]);
    assert!(opened.starts_with(b"%PDF-1.4") && opened.ends_with(b"%%EOF\n"));

    // A service reply inside the window carries it too, under another name.
    let (status, body) = call(
        &agent,
        "POST",
        "/v1/messages",
        Some(FULL_KEY),
        Some(json!({
            "to": CAROL, "type": "text", "text": { "body": "Your boarding pass again:" },
            "document": { "media_id": media_id, "filename": "BA117.pdf" },
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(2));
    let (again, name, _, _) = receive_document(&mut carol).await;
    assert_eq!(name, "BA117.pdf");
    let copy = files.path().join("BA117.pdf");
    carol
        .download_attachment(business, again, &copy)
        .await
        .expect("download");
    assert_eq!(std::fs::read(&copy).expect("saved"), pdf);
    // The daemon's history lists the documents sent.
    let path = format!("/v1/conversations/{}/messages", carol.account_id());
    let (status, body) = call(&agent, "GET", &path, Some(FULL_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    let documents = body["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|m| m["type"] == "document")
        .count();
    assert_eq!(documents, 2, "{body}");

    // Past the relay's document limit: typed, nothing kept.
    let big: Vec<u8> = pdf.iter().copied().cycle().take(6000).collect();
    let (status, body) = upload(&agent, "big.pdf", "application/pdf", big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "media_too_large");
    // Past the daemon's own limit for an image (5 MB): refused before the
    // relay is asked.
    let image = vec![0u8; 5_000_001];
    let (status, body) = upload(&agent, "huge.png", "image/png", image).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "media_too_large");
    // A name with directories, a multipart body, no key.
    let (status, body) = upload(&agent, "..%2Fetc%2Fpasswd", "application/pdf", pdf.clone()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = upload(
        &agent,
        "a.pdf",
        "multipart/form-data; boundary=x",
        pdf.clone(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = call_raw(
        &agent,
        "POST",
        "/v1/media?filename=a.pdf",
        &[("content-type", "application/pdf".to_owned())],
        pdf.clone(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(agent.db.media_count().expect("count"), 1);
    assert!(leftover_uploads(&data_dir(root.path())).is_empty());
    agent.stop().await;
}

/// `GET path` on the daemon with `key`: status and raw body.
async fn get_bytes(
    agent: &comptoir_agent::Running,
    path: &str,
    key: Option<&str>,
) -> (u16, Vec<u8>) {
    let url = format!("http://{}{path}", agent.addr);
    let headers: Vec<(&str, String)> = key
        .map(|k| vec![("authorization", format!("Bearer {k}"))])
        .unwrap_or_default();
    let response = comptoir_agent::http_client::request("GET", &url, &headers, Vec::new())
        .await
        .expect("API answers");
    (response.status, response.body)
}

/// Carol sends `bytes` as the image `name` to the business: the message
/// id and the `document` webhook event that names it.
async fn carol_sends_a_file(
    acme: &Fixture,
    carol: &mut Client,
    name: &str,
    bytes: &[u8],
) -> (String, Value) {
    let path = acme.root.path().join(name);
    std::fs::write(&path, bytes).expect("write");
    let file = carol.encrypt_file(&path, "image/png").expect("encrypt");
    let id = carol
        .send_attachment(acme.business, &file)
        .await
        .expect("send")
        .to_string();
    let hit = acme
        .receiver
        .wait("document", |h| h.event_id == format!("message:{id}"))
        .await;
    (id, serde_json::from_slice(&hit.body).expect("JSON"))
}

#[tokio::test]
async fn a_customers_file_reaches_the_backend_as_a_document_it_downloads() {
    let acme = fixture_on(start_relay().await).await;
    let root = acme.root.path();
    let agent = serve(
        &acme.config,
        ManualClock::at(comptoir_client::client::now_ms()),
    )
    .await;
    let mut carol = customer_with_number(&acme.relay, &root.join("carol"), CAROL).await;

    // Carol sends her passport scan (any bytes: the daemon never reads
    // them); the webhook names it as a document, with where to fetch it.
    // 300 kB: three chunks from the relay, several reads as it is served.
    let scan: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (id, event) = carol_sends_a_file(&acme, &mut carol, "passport scan.png", &scan).await;
    let message = &event["value"]["messages"][0];
    let customer = carol.account_id().to_string();
    assert_eq!(message["type"], "document", "{event}");
    assert_eq!(message["from"], customer.as_str());
    let document = &message["document"];
    assert_eq!(document["id"], id.as_str());
    assert_eq!(document["filename"], "passport scan.png");
    assert_eq!(document["mime_type"], "image/png");
    assert_eq!(document["file_size"], scan.len() as u64);
    let fetch = document["path"].as_str().expect("path").to_owned();
    assert_eq!(fetch, format!("/v1/conversations/{customer}/files/{id}"));

    // The backend downloads it: the bytes Carol sent, as a download.
    let (status, body) = get_bytes(&agent, &fetch, Some(READ_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(body, scan);
    // Served from a file whose name was gone before the answer began.
    let left: Vec<_> = std::fs::read_dir(agent.db.dir())
        .expect("data dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("download-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Refused, typed: no key, an id no file came with, a malformed id.
    let (status, _) = get_bytes(&agent, &fetch, None).await;
    assert_eq!(status, 401);
    let other = format!("/v1/conversations/{customer}/files/{}", "ab".repeat(16));
    let (status, body) = call(&agent, "GET", &other, Some(READ_KEY), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_file");
    let (status, body) = call(
        &agent,
        "GET",
        &format!("/v1/conversations/{customer}/files/not-an-id"),
        Some(READ_KEY),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    // Another customer's path does not reach Carol's file.
    let stranger = format!("/v1/conversations/{}/files/{id}", "cd".repeat(16));
    let (status, body) = call(&agent, "GET", &stranger, Some(READ_KEY), None).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_stalled_download_holds_up_nothing_else_and_ends_with_its_caller() {
    let (relay, mitm, _data) = support::mitm::relay_behind_mitm().await;
    let mut acme = fixture_on(relay).await;
    acme.config.relay = mitm.url();
    let root = acme.root.path();
    let agent = serve(
        &acme.config,
        ManualClock::at(comptoir_client::client::now_ms()),
    )
    .await;
    let mut carol = customer_with_number(&acme.relay, &root.join("carol"), CAROL).await;
    let scan: Vec<u8> = (0..3000u32).map(|i| (i * 11 % 251) as u8).collect();
    let (_, event) = carol_sends_a_file(&acme, &mut carol, "scan.png", &scan).await;
    let fetch = event["value"]["messages"][0]["document"]["path"]
        .as_str()
        .expect("path")
        .to_owned();

    // The link to the relay stalls in the middle of downloads: as many as
    // the daemon runs at once.
    mitm.stall_blob_fetches(true);
    let url = format!("http://{}{fetch}", agent.addr);
    let stalled: Vec<_> = (0..comptoir_agent::received_files::DOWNLOADS_AT_ONCE)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let auth = vec![("authorization", format!("Bearer {READ_KEY}"))];
                comptoir_agent::http_client::request("GET", &url, &auth, Vec::new()).await
            })
        })
        .collect();
    mitm.blob_fetches_held(comptoir_agent::received_files::DOWNLOADS_AT_ONCE)
        .await;

    // Meanwhile the daemon still sends (and records) a reply: the download
    // does not hold up its device (before, the send waited for the
    // download's request to time out, 15 s).
    let (status, body) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        call(
            &agent,
            "POST",
            "/v1/messages",
            Some(FULL_KEY),
            Some(json!({
                "to": carol.account_id().to_string(),
                "type": "text",
                "text": { "body": "Scan received." },
            })),
        ),
    )
    .await
    .expect("a send is not held up by a stalled download");
    assert_eq!(status, 200, "{body}");

    // Their callers hang up, which ends them and frees their turns: once
    // the link moves again, a new download comes whole at once (had they
    // gone on, it would wait for their requests to time out, 15 s).
    for download in &stalled {
        download.abort();
    }
    mitm.stall_blob_fetches(false);
    let (status, bytes) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        get_bytes(&agent, &fetch, Some(READ_KEY)),
    )
    .await
    .expect("the stalled downloads' turns are free");
    assert_eq!(status, 200);
    assert_eq!(bytes, scan);
}
