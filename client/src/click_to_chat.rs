//! Click-to-chat links and their QR codes: a link names a business and,
//! optionally, text to prefill; a customer client opens it, resolves the
//! business through its own relay, shows it as [`crate::Client::business`]
//! decides (verified or by handle), and sends the text only when the
//! customer confirms. Shared by the agent daemon (`agent link`,
//! `GET /v1/link`) and the CLI (`comptoir business link`, `comptoir open`).
//!
//! The format (stable; docs/PROTOCOL.md):
//!
//! ```text
//! comptoir://chat/<handle>[?text=<percent-encoded UTF-8>]
//! ```
//!
//! - `handle`: the business's claimed name (`acme-air`; a-z, 0-9 and `-`,
//!   3 to 32 characters) or its account id (32 hex digits); the two never
//!   collide (a name may not look like an account id). Any case is read;
//!   links are written in lowercase.
//! - `text`: percent-encoded UTF-8 (RFC 3986; `+` also reads as a space, as
//!   in HTML forms), at most [`MAX_TEXT_LEN`] bytes decoded. Left out or
//!   empty: no prefilled text.
//! - Nothing else: another parameter, a fragment, a user or port, or a
//!   second `text` makes the link malformed, so a link means one thing.
//!
//! The link names no relay: the customer's client asks its own relay.
//! QR codes carry the link as it is written ([`ChatLink::to_string`]),
//! at error correction level M, with the 4-module quiet zone.

use std::fmt;

use comptoir_protocol::AccountId;
use comptoir_protocol::handle::normalize_business_name;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

/// What every link starts with (any case is read).
pub const LINK_PREFIX: &str = "comptoir://chat/";

/// The longest prefilled text, in bytes (a text message's limit).
pub const MAX_TEXT_LEN: usize = crate::client::MAX_TEXT_LEN;

/// PNG pixels per QR module: 8 makes a version-10 code about 500 pixels
/// wide, sharp when printed at 4 cm and small as a file.
pub const PNG_MODULE_PIXELS: u32 = 8;

/// The quiet zone around a code, in modules (the QR standard's minimum).
const QUIET_ZONE: usize = 4;

/// Characters kept as they are in `text`: RFC 3986's unreserved ones.
const TEXT_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Which business a link names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkHandle {
    /// A claimed business name, lowercased.
    Name(String),
    /// An account id.
    Account(AccountId),
}

impl fmt::Display for LinkHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Account(id) => write!(f, "{id}"),
        }
    }
}

/// A click-to-chat link: a business and the text to prefill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatLink {
    /// The business.
    pub handle: LinkHandle,
    /// The text to prefill (never empty when present).
    pub text: Option<String>,
}

/// Why a link cannot be read or made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// It does not start with `comptoir://chat/`.
    #[error("a chat link starts with {LINK_PREFIX}")]
    NotAChatLink,
    /// The handle is neither a business name nor an account id.
    #[error("the link's business is neither a business name nor an account id: {0}")]
    BadHandle(String),
    /// A parameter other than one `text`, or a fragment.
    #[error("the link has parts this client does not read (only ?text=… may follow the business)")]
    UnknownPart,
    /// `text` is not percent-encoded UTF-8.
    #[error("the link's text is not percent-encoded UTF-8")]
    BadText,
    /// `text` is longer than a message may be.
    #[error("the link's text is longer than {MAX_TEXT_LEN} bytes")]
    TextTooLong,
    /// The link does not fit in a QR code.
    #[error("the link is too long for a QR code: shorten the text")]
    TooLongForQr,
    /// The PNG could not be written.
    #[error("the PNG could not be written")]
    Png,
}

/// Whether every `%` in `value` starts an escape of two hex digits
/// (RFC 3986): the decoder would keep a stray `%` as it is.
fn percent_escapes_are_whole(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

impl ChatLink {
    /// A link to `handle` with optional text; empty text counts as none.
    pub fn new(handle: LinkHandle, text: Option<&str>) -> Result<Self, LinkError> {
        let text = text.filter(|t| !t.is_empty()).map(str::to_owned);
        if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT_LEN) {
            return Err(LinkError::TextTooLong);
        }
        Ok(Self { handle, text })
    }

    /// Read a link written in the format above.
    pub fn parse(link: &str) -> Result<Self, LinkError> {
        let link = link.trim();
        let prefix = link
            .get(..LINK_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(LINK_PREFIX))
            .ok_or(LinkError::NotAChatLink)?;
        let rest = &link[prefix.len()..];
        if rest.contains('#') {
            return Err(LinkError::UnknownPart);
        }
        let (handle, query) = match rest.split_once('?') {
            Some((handle, query)) => (handle, Some(query)),
            None => (rest, None),
        };
        let handle = parse_handle(handle.strip_suffix('/').unwrap_or(handle))?;
        let mut text = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("text", value)) if text.is_none() => {
                    if !percent_escapes_are_whole(value) {
                        return Err(LinkError::BadText);
                    }
                    let value = value.replace('+', " ");
                    let decoded = percent_decode_str(&value)
                        .decode_utf8()
                        .map_err(|_| LinkError::BadText)?;
                    text = Some(decoded.into_owned());
                }
                _ if pair.is_empty() => {}
                _ => return Err(LinkError::UnknownPart),
            }
        }
        Self::new(handle, text.as_deref())
    }

    /// The QR code of this link (level M).
    fn qr(&self) -> Result<QrCode, LinkError> {
        QrCode::with_error_correction_level(self.to_string(), EcLevel::M)
            .map_err(|_| LinkError::TooLongForQr)
    }

    /// The QR code as an SVG document (black on white, with its quiet zone).
    pub fn qr_svg(&self) -> Result<String, LinkError> {
        Ok(self
            .qr()?
            .render::<svg::Color<'_>>()
            .min_dimensions(256, 256)
            .build())
    }

    /// The QR code as a PNG: 8-bit grey, [`PNG_MODULE_PIXELS`] per module,
    /// with its quiet zone.
    pub fn qr_png(&self) -> Result<Vec<u8>, LinkError> {
        let pixels = self.qr_luma(PNG_MODULE_PIXELS as usize)?;
        let side = u32::try_from(pixels.side).map_err(|_| LinkError::TooLongForQr)?;
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|_| LinkError::Png)?;
        writer
            .write_image_data(&pixels.luma)
            .map_err(|_| LinkError::Png)?;
        writer.finish().map_err(|_| LinkError::Png)?;
        Ok(out)
    }

    /// The QR code as grey pixels (0 dark, 255 light), `scale` pixels per
    /// module, with its quiet zone.
    pub fn qr_luma(&self, scale: usize) -> Result<LumaImage, LinkError> {
        let code = self.qr()?;
        let width = code.width();
        let modules = code.to_colors();
        let side = (width + 2 * QUIET_ZONE) * scale;
        let mut luma = vec![255u8; side * side];
        for (i, color) in modules.iter().enumerate() {
            if *color != qrcode::Color::Dark {
                continue;
            }
            let (mx, my) = (i % width + QUIET_ZONE, i / width + QUIET_ZONE);
            for y in my * scale..(my + 1) * scale {
                luma[y * side + mx * scale..y * side + (mx + 1) * scale].fill(0);
            }
        }
        Ok(LumaImage { side, luma })
    }

    /// The QR code for a terminal, two modules per character (Unicode half
    /// blocks), drawn for light text on a dark background: the blocks are
    /// the light modules and the quiet zone, so a phone reads it off the
    /// screen.
    pub fn qr_terminal(&self) -> Result<String, LinkError> {
        Ok(self
            .qr()?
            .render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Light)
            .light_color(unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build())
    }
}

/// A square grey image, row by row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LumaImage {
    /// Width and height in pixels.
    pub side: usize,
    /// One byte per pixel, rows top to bottom.
    pub luma: Vec<u8>,
}

fn parse_handle(handle: &str) -> Result<LinkHandle, LinkError> {
    let bad = || LinkError::BadHandle(handle.chars().take(40).collect());
    if handle.len() == 32 && handle.bytes().all(|b| b.is_ascii_hexdigit()) {
        return AccountId::from_hex(&handle.to_ascii_lowercase())
            .map(LinkHandle::Account)
            .map_err(|_| bad());
    }
    normalize_business_name(handle)
        .map(LinkHandle::Name)
        .map_err(|_| bad())
}

impl std::str::FromStr for ChatLink {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        Self::parse(s)
    }
}

impl fmt::Display for ChatLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{LINK_PREFIX}{}", self.handle)?;
        if let Some(text) = &self.text {
            write!(f, "?text={}", utf8_percent_encode(text, TEXT_KEEP))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Reason: test code fails by panicking.
    use super::*;

    fn name(n: &str) -> LinkHandle {
        LinkHandle::Name(n.into())
    }

    #[test]
    fn links_read_back_as_written() {
        let id = AccountId::from_bytes(&[0xab; 16]).unwrap();
        for link in [
            ChatLink::new(name("acme-air"), None).unwrap(),
            ChatLink::new(name("acme-air"), Some("Hi! Où est mon colis #42? 100% + €")).unwrap(),
            ChatLink::new(LinkHandle::Account(id), Some("a&text=b?c=d\nline")).unwrap(),
        ] {
            let written = link.to_string();
            assert!(written.starts_with(LINK_PREFIX), "{written}");
            assert!(
                !written.contains(' ') && !written.contains('+'),
                "{written}"
            );
            assert_eq!(ChatLink::parse(&written).unwrap(), link);
        }
        assert_eq!(
            ChatLink::parse("COMPTOIR://chat/Acme-Air/?text=hello+there%21&").unwrap(),
            ChatLink::new(name("acme-air"), Some("hello there!")).unwrap()
        );
        assert_eq!(
            ChatLink::parse("comptoir://chat/acme-air?text=").unwrap(),
            ChatLink::new(name("acme-air"), None).unwrap()
        );
    }

    #[test]
    fn malformed_links_are_refused_with_their_reason() {
        let too_long = format!("comptoir://chat/acme?text={}", "a".repeat(MAX_TEXT_LEN + 1));
        for (link, error) in [
            ("https://chat/acme", LinkError::NotAChatLink),
            ("comptoir://cha", LinkError::NotAChatLink),
            ("comptoir://chat/", LinkError::BadHandle(String::new())),
            ("comptoir://chat/ac", LinkError::BadHandle("ac".into())),
            (
                "comptoir://chat/acme air",
                LinkError::BadHandle("acme air".into()),
            ),
            (
                "comptoir://chat/+447700900123",
                LinkError::BadHandle("+447700900123".into()),
            ),
            (
                "comptoir://chat/acme/x",
                LinkError::BadHandle("acme/x".into()),
            ),
            ("comptoir://chat/acme?text=a&text=b", LinkError::UnknownPart),
            ("comptoir://chat/acme?txt=a", LinkError::UnknownPart),
            ("comptoir://chat/acme?text=a#frag", LinkError::UnknownPart),
            ("comptoir://chat/acme?text=%ff", LinkError::BadText),
            ("comptoir://chat/acme?text=%ZZ", LinkError::BadText),
            ("comptoir://chat/acme?text=50%", LinkError::BadText),
            ("comptoir://chat/acme?text=%4", LinkError::BadText),
            (too_long.as_str(), LinkError::TextTooLong),
        ] {
            assert_eq!(ChatLink::parse(link), Err(error), "{link}");
        }
    }

    #[test]
    fn the_qr_code_decodes_to_the_link() {
        let link = ChatLink::new(name("acme-air"), Some("Where is order 42?")).unwrap();
        let image = link.qr_luma(4).unwrap();
        let mut prepared =
            rqrr::PreparedImage::prepare_from_greyscale(image.side, image.side, |x, y| {
                image.luma[y * image.side + x]
            });
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content, link.to_string());
        assert!(link.qr_svg().unwrap().starts_with("<?xml"));
        assert!(link.qr_png().unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
        let terminal = link.qr_terminal().unwrap();
        assert!(terminal.lines().count() > 10 && terminal.contains('\u{2588}'));
        let huge = ChatLink::new(name("acme-air"), Some(&"é".repeat(MAX_TEXT_LEN / 2))).unwrap();
        assert_eq!(huge.qr_svg(), Err(LinkError::TooLongForQr));
    }
}
