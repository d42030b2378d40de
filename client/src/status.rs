//! Status posts on this device (docs/PROTOCOL.md, "Status"): what may be
//! posted (text, an image, an MP4 video of at most [`MAX_VIDEO_MS`], read
//! from its container before anything is uploaded), and the posts kept in
//! the store, sealed, until 24 hours after posting: those received (with
//! their key) and those this account posted (with who was sent the key
//! and who chose to send a view receipt).

use std::io::BufReader;
use std::path::Path;

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{StatusRecord, StatusViewer};
use prost::Message;

use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

/// How long a Status post is shown: 24 hours after posting (the relay
/// deletes it then too).
pub const STATUS_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// The longest Status video: 30 seconds.
pub const MAX_VIDEO_MS: u64 = 30_000;

/// The longest Status text, in bytes (UTF-8).
pub const MAX_STATUS_TEXT_BYTES: usize = 700;

/// The content type of a text post.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Length of a post id.
pub const POST_ID_LEN: usize = 16;

/// Why a Status cannot be posted, viewed or deleted. Nothing was uploaded
/// or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The video lasts longer than [`MAX_VIDEO_MS`].
    #[error(
        "the video lasts {}.{:03} s; a Status video lasts at most 30 s: trim it, then post it again",
        .duration_ms / 1000,
        .duration_ms % 1000
    )]
    VideoTooLong {
        /// Its duration as its container states it.
        duration_ms: u64,
    },
    /// The video's container does not tell its duration.
    #[error("cannot read the video's duration from its MP4 container ({0}); post an MP4 video")]
    UnreadableVideo(String),
    /// A file that is neither an image nor an MP4 video.
    #[error(
        "a Status is text, an image (.png, .jpg, .jpeg, .gif, .webp) or an MP4 video (.mp4, .m4v); \
         {0} is none of these"
    )]
    UnsupportedFile(String),
    /// An empty text, or one too long.
    #[error("a Status text has 1 to {MAX_STATUS_TEXT_BYTES} bytes, got {got}")]
    TextLength {
        /// Its length in bytes.
        got: usize,
    },
    /// No Status with this id is kept here.
    #[error(
        "no Status {0} here: it expired (24 hours after posting) or was deleted; list them with \
         `comptoir status list`"
    )]
    NotFound(String),
    /// Only its poster deletes a post.
    #[error("Status {0} was posted by another account: only its poster can delete it")]
    NotYours(String),
}

/// What a Status file holds, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusMedia {
    /// An image, with its content type.
    Image(&'static str),
    /// An MP4 video.
    Video,
}

impl StatusMedia {
    /// The media of the file at `path`, from its extension.
    pub fn of(path: &Path) -> Result<Self> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        Ok(match extension.as_str() {
            "png" => Self::Image("image/png"),
            "jpg" | "jpeg" => Self::Image("image/jpeg"),
            "gif" => Self::Image("image/gif"),
            "webp" => Self::Image("image/webp"),
            "mp4" | "m4v" => Self::Video,
            _ => return Err(StatusError::UnsupportedFile(file_label(path)).into()),
        })
    }

    /// Its content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Image(content_type) => content_type,
            Self::Video => "video/mp4",
        }
    }
}

/// The file's name only (no directories: never shown back in errors).
fn file_label(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("the file")
        .to_owned()
}

/// The duration of the MP4 video at `path` in ms, as its container
/// (`moov/mvhd`, or `mvex/mehd` for a fragmented file) states it.
pub fn mp4_duration_ms(path: &Path) -> Result<u64> {
    let file =
        std::fs::File::open(path).map_err(|e| ClientError::io("cannot read the video", e))?;
    let size = file
        .metadata()
        .map_err(|e| ClientError::io("cannot read the video", e))?
        .len();
    let unreadable = |what: String| ClientError::from(StatusError::UnreadableVideo(what));
    // The parser is not hardened against every malformed file: a panic
    // in it is a refusal of this file, not a crash.
    let parsed = std::panic::catch_unwind(move || {
        mp4::Mp4Reader::read_header(BufReader::new(file), size).map(|reader| {
            let mvhd = &reader.moov.mvhd;
            let fragmented = reader
                .moov
                .mvex
                .as_ref()
                .and_then(|mvex| mvex.mehd.as_ref())
                .map(|mehd| mehd.fragment_duration);
            (mvhd.duration, fragmented, mvhd.timescale)
        })
    })
    .map_err(|_| unreadable("a malformed container".into()))?
    .map_err(|e| unreadable(e.to_string()))?;
    let (duration, fragmented, timescale) = parsed;
    let units = if duration == 0 {
        fragmented.unwrap_or(0)
    } else {
        duration
    };
    if timescale == 0 || units == 0 {
        return Err(unreadable("no duration stated".into()));
    }
    let ms = u128::from(units) * 1000 / u128::from(timescale);
    Ok(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Check that the file at `path` may be posted; returns its content type.
/// A video longer than [`MAX_VIDEO_MS`] is refused here, before anything
/// is encrypted or uploaded.
pub fn check_file(path: &Path) -> Result<&'static str> {
    let media = StatusMedia::of(path)?;
    if media == StatusMedia::Video {
        let duration_ms = mp4_duration_ms(path)?;
        if duration_ms > MAX_VIDEO_MS {
            return Err(StatusError::VideoTooLong { duration_ms }.into());
        }
    }
    Ok(media.content_type())
}

/// Check a text post's length.
pub fn check_text(text: &str) -> Result<()> {
    if text.is_empty() || text.len() > MAX_STATUS_TEXT_BYTES {
        return Err(StatusError::TextLength { got: text.len() }.into());
    }
    Ok(())
}

fn key(poster: &AccountId, post_id: &[u8]) -> Vec<u8> {
    let mut key = poster.to_vec();
    key.extend_from_slice(post_id);
    key
}

/// Keep `record` (not flushed).
pub fn put(store: &Store, record: &StatusRecord) -> Result<()> {
    let poster = AccountId::from_bytes(&record.poster_account)?;
    store.put(
        Tree::StatusPosts,
        &key(&poster, &record.post_id),
        &record.encode_to_vec(),
    )
}

/// Forget post `post_id` of `poster` (not flushed).
pub fn remove(store: &Store, poster: &AccountId, post_id: &[u8]) -> Result<()> {
    store.remove(Tree::StatusPosts, &key(poster, post_id))
}

/// Post `post_id` of `poster`, if kept.
pub fn get(store: &Store, poster: &AccountId, post_id: &[u8]) -> Result<Option<StatusRecord>> {
    let Some(bytes) = store.get(Tree::StatusPosts, &key(poster, post_id))? else {
        return Ok(None);
    };
    StatusRecord::decode(bytes.as_slice())
        .map(Some)
        .map_err(|_| ClientError::CorruptStore("a Status post".into()))
}

/// Delete every post whose 24 hours are up at `now_ms`; returns the
/// live ones, newest first.
pub fn live(store: &Store, now_ms: u64) -> Result<Vec<StatusRecord>> {
    let mut out = Vec::new();
    for (k, bytes) in store.scan(Tree::StatusPosts, &[])? {
        let record = StatusRecord::decode(bytes.as_slice())
            .map_err(|_| ClientError::CorruptStore("a Status post".into()))?;
        if now_ms >= record.expires_at_ms {
            store.remove(Tree::StatusPosts, &k)?;
        } else {
            out.push(record);
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.posted_at_ms));
    Ok(out)
}

/// The live post whose id is `id_hex` (32 hex digits, or a unique prefix
/// of at least 8).
pub fn find(store: &Store, id_hex: &str, now_ms: u64) -> Result<StatusRecord> {
    let wanted = id_hex.trim().to_ascii_lowercase();
    let mut found: Vec<StatusRecord> = if wanted.len() >= 8 {
        live(store, now_ms)?
            .into_iter()
            .filter(|r| hex::encode(&r.post_id).starts_with(&wanted))
            .collect()
    } else {
        Vec::new()
    };
    match found.len() {
        1 => Ok(found.remove(0)),
        _ => Err(StatusError::NotFound(id_hex.trim().to_owned()).into()),
    }
}

/// Note that `viewer` sent a view receipt for this account's post
/// `post_id`; `false` if no such post is kept (or it was noted already).
pub fn note_viewer(
    store: &Store,
    me: &AccountId,
    post_id: &[u8],
    viewer: AccountId,
    viewed_at_ms: u64,
) -> Result<bool> {
    let Some(mut record) = get(store, me, post_id)? else {
        return Ok(false);
    };
    if !record.outgoing
        || !record.recipients.iter().any(|r| r == viewer.as_bytes())
        || record
            .viewers
            .iter()
            .any(|v| v.account == viewer.as_bytes())
    {
        return Ok(false);
    }
    record.viewers.push(StatusViewer {
        account: viewer.to_vec(),
        viewed_at_ms,
    });
    put(store, &record)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_told_apart_by_extension() {
        assert_eq!(
            StatusMedia::of(Path::new("a/b.JPG")).unwrap(),
            StatusMedia::Image("image/jpeg")
        );
        assert_eq!(
            StatusMedia::of(Path::new("clip.mp4")).unwrap(),
            StatusMedia::Video
        );
        let error = StatusMedia::of(Path::new("/secret/dir/notes.pdf")).unwrap_err();
        assert!(matches!(
            error,
            ClientError::Status(StatusError::UnsupportedFile(_))
        ));
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn a_file_that_is_not_an_mp4_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.mp4");
        std::fs::write(&path, b"not a video at all").unwrap();
        assert!(matches!(
            check_file(&path),
            Err(ClientError::Status(StatusError::UnreadableVideo(_)))
        ));
    }

    #[test]
    fn text_length_is_checked() {
        assert!(check_text("hello").is_ok());
        assert!(check_text("").is_err());
        assert!(check_text(&"x".repeat(MAX_STATUS_TEXT_BYTES + 1)).is_err());
    }
}
