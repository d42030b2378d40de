//! Click-to-chat (issue 15 item 5), through `comptoir` run in process
//! against a real relay: a business prints its link and QR code; the PNG
//! decodes back to the same link; a customer opens the link, sees the
//! business as the operator verified it (✓ and the certified name) or, for
//! an unverified one, by the link's handle and never by its self-chosen
//! name, and sends the prefilled text; the business receives it and may
//! answer inside the window it opened. A malformed link is a usage error
//! (exit 2) that stores nothing.

use crate::support;

use support::cli::{account, comptoir, ok};
use support::*;

const TEXT: &str = "Where is my order #42? Ça presse & merci";

/// Every file under `dir` and its bytes.
fn files(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

/// Decode the QR code in a PNG file.
fn decode_png(path: &std::path::Path) -> String {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("open png"),
    ));
    let mut reader = decoder.read_info().expect("png header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut pixels).expect("png frame");
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let (width, height) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
        pixels[y * info.line_size + x]
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the PNG");
    grids[0].decode().expect("QR decodes").1
}

#[tokio::test]
async fn a_customer_opens_a_verified_business_link_and_the_window_opens() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (acme, carol) = (root.path().join("acme"), root.path().join("carol"));
    let acme_id = account(&acme, &relay, true).await;
    let carol_id = account(&carol, &relay, false).await;
    ok(&acme, &relay, &["name", "claim", "acme-air"]).await;
    ok(
        &acme,
        &relay,
        &["business", "profile", "--name", "Acme Air"],
    )
    .await;
    relay
        .admin_client()
        .verify_business(&acme_id, None)
        .await
        .expect("verify");

    // The business's link and QR code: the PNG decodes to the printed link.
    let (png, svg) = (root.path().join("acme.png"), root.path().join("acme.svg"));
    let printed = ok(
        &acme,
        &relay,
        &[
            "business",
            "link",
            "--name",
            "acme-air",
            "--text",
            TEXT,
            "--png",
            &png.display().to_string(),
            "--svg",
            &svg.display().to_string(),
        ],
    )
    .await;
    let link = printed.lines().next().expect("the link").to_string();
    assert!(link.starts_with("comptoir://chat/acme-air?text="), "{link}");
    assert!(
        printed.contains('\u{2588}'),
        "a terminal QR code: {printed}"
    );
    assert_eq!(decode_png(&png), link);
    let svg = std::fs::read_to_string(&svg).expect("svg");
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    // A name that is not this account's makes no link.
    let (code, _) = comptoir(
        &acme,
        &relay,
        &["business", "link", "--name", "nobody-here"],
    )
    .await;
    assert_eq!(code, 1);

    // No window yet: a free-form reply from the business is refused.
    let (code, _) = comptoir(&acme, &relay, &["send", &carol_id, "early"]).await;
    assert_eq!(code, 6, "refused by the relay: no window yet");
    ok(&acme, &relay, &["outbox", "list"]).await;

    // The customer opens the link: verified, the text shown, then sent.
    let opened = ok(&carol, &relay, &["open", &link, "--yes"]).await;
    assert!(opened.starts_with("business\t✓ Acme Air\n"), "{opened}");
    assert!(
        opened.contains("verified\tyes, by the operator\n"),
        "{opened}"
    );
    assert!(
        opened.contains(&format!("account\t{acme_id}\n")),
        "{opened}"
    );
    assert!(opened.contains(&format!("text\t{TEXT}\n")), "{opened}");
    assert!(opened.contains("\nsent\t"), "{opened}");

    // The business receives the prefilled text, and may answer for free.
    let heard = ok(
        &acme,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;
    assert!(heard.contains(TEXT), "{heard}");
    ok(
        &acme,
        &relay,
        &["send", &carol_id, "On its way, arriving today"],
    )
    .await;
    let reply = ok(
        &carol,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;
    assert!(reply.contains("On its way, arriving today"), "{reply}");

    // The same link by account id names the same business.
    let by_id = format!("comptoir://chat/{}", acme_id.to_uppercase());
    let opened = ok(&carol, &relay, &["open", &by_id]).await;
    assert!(opened.starts_with("business\t✓ Acme Air\n"), "{opened}");
    assert!(opened.contains("text\tnone\n"), "{opened}");
}

#[tokio::test]
async fn an_unverified_business_is_shown_by_its_handle_and_bad_links_store_nothing() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (beta, dave) = (root.path().join("beta"), root.path().join("dave"));
    let beta_id = account(&beta, &relay, true).await;
    account(&dave, &relay, false).await;
    ok(&beta, &relay, &["name", "claim", "beta-shop"]).await;
    ok(
        &beta,
        &relay,
        &["business", "profile", "--name", "Beta Bank"],
    )
    .await;

    // Not verified: its handle from the link, never its self-chosen name.
    let link = "comptoir://chat/Beta-Shop?text=hello+there";
    let opened = ok(&dave, &relay, &["open", link, "--yes"]).await;
    assert!(opened.starts_with("business\tbeta-shop\n"), "{opened}");
    assert!(opened.contains("verified\tno: "), "{opened}");
    assert!(!opened.contains("Beta Bank"), "{opened}");
    assert!(opened.contains("text\thello there\n"), "{opened}");
    let heard = ok(
        &beta,
        &relay,
        &["listen", "--count", "1", "--timeout", "30"],
    )
    .await;
    assert!(heard.contains("hello there"), "{heard}");
    // By account id: shown by the id.
    let opened = ok(
        &dave,
        &relay,
        &["open", &format!("comptoir://chat/{beta_id}")],
    )
    .await;
    assert!(
        opened.starts_with(&format!("business\t{beta_id}\n")),
        "{opened}"
    );

    // Malformed links: a usage error, and nothing stored.
    let before = files(&dave);
    for bad in [
        "https://example.com/c/beta-shop",
        "comptoir://chat/beta-shop?txt=hi",
        "comptoir://chat/beta-shop?text=%ff",
        "comptoir://chat/b?text=hi",
        "comptoir://chat/beta-shop?text=a&text=b",
    ] {
        let (code, out) = comptoir(&dave, &relay, &["open", bad, "--yes"]).await;
        assert_eq!((code, out.as_str()), (2, ""), "{bad}");
        let (code, _) = comptoir(&dave, &relay, &["tui", "--open", bad]).await;
        assert_eq!(code, 2, "tui --open {bad}");
    }
    assert_eq!(files(&dave), before, "a malformed link stores nothing");
    // A well-formed link to no business: not found (exit 8), nothing sent.
    let (code, out) = comptoir(
        &dave,
        &relay,
        &["open", "comptoir://chat/no-such-shop?text=x", "--yes"],
    )
    .await;
    assert_eq!(code, 8, "{out}");
    assert!(!out.contains("sent"), "{out}");
}
