//! Where the TUI saves what it decrypts: a received attachment (`s` on a
//! picked message in the chat) and an image or video Status opened in the
//! Status pane go to the downloads directory, `DATA_DIR/downloads`
//! (created private to this user), under a name that is safe whatever the
//! sender wrote: its last path component only, every character other than
//! letters, digits and `.-_ ()+,` replaced by `_` (so no `/`, `\`, `..`
//! directory, control or format character reaches the file system), no
//! leading dot, at most [`MAX_NAME_CHARS`] characters, and ` (1)`, ` (2)`…
//! before the extension rather than replacing a file already there.

use std::path::{Path, PathBuf};

use comptoir_client::error::{ClientError, Result};
use comptoir_client::{Client, MessageId};
use comptoir_protocol::AccountId;

use crate::format::visible;

/// The longest name a saved file gets, in characters: long enough for any
/// real file name, short enough for every file system.
pub const MAX_NAME_CHARS: usize = 100;

/// How many numbered names (` (1)` to ` (999)`) are tried before giving up.
const MAX_NUMBERED: usize = 999;

/// The name used when nothing of the sender's is left.
const FALLBACK_NAME: &str = "attachment";

/// The downloads directory of the account in `data_dir`.
pub fn downloads_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("downloads")
}

/// A file name safe to create in a directory, from an untrusted `name`
/// (see the module's documentation).
pub fn safe_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ' | '(' | ')' | '+' | ',') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME_CHARS)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        FALLBACK_NAME.to_owned()
    } else {
        cleaned.to_owned()
    }
}

/// The first of `name`, `stem (1).ext`, `stem (2).ext`… that names nothing
/// in `dir` (not even a dangling link); `None` if all are taken.
pub fn free_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let (stem, extension) = match name.rfind('.') {
        Some(at) if at > 0 => name.split_at(at),
        _ => (name, ""),
    };
    (0..=MAX_NUMBERED)
        .map(|n| match n {
            0 => name.to_owned(),
            n => format!("{stem} ({n}){extension}"),
        })
        .map(|candidate| dir.join(candidate))
        .find(|path| std::fs::symlink_metadata(path).is_err())
}

/// The extension a Status of `content_type` is saved with (Status files
/// are images or MP4 videos, docs/PROTOCOL.md §13.4; an oversized text is
/// saved too).
pub fn status_extension(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "video/mp4" => "mp4",
        comptoir_client::status::TEXT_CONTENT_TYPE => "txt",
        _ => "bin",
    }
}

/// A free path in the downloads directory (created if missing) for a
/// file the sender named `name`.
pub fn destination(data_dir: &Path, name: &str) -> Result<PathBuf> {
    let dir = downloads_dir(data_dir);
    comptoir_client::store::create_private_dir(&dir)?;
    free_path(&dir, &safe_file_name(name)).ok_or_else(|| {
        ClientError::InvalidArgument(format!(
            "{} holds {MAX_NUMBERED} files of that name already; move some away",
            dir.display()
        ))
    })
}

/// Save the attachment of message `id` with `peer` to the downloads
/// directory (downloaded, both digests checked, decrypted); what to tell
/// the user.
pub async fn save_attachment(
    client: &mut Client,
    peer: AccountId,
    id: MessageId,
) -> Result<String> {
    let Some(file) = client.attachment_info(&peer, &id)? else {
        return Ok("that message carries no file to save".to_owned());
    };
    let path = destination(client.data_dir(), &file.file_name)?;
    client.download_attachment(peer, id, &path).await?;
    Ok(format!(
        "saved {} ({} bytes, digests checked) to {}",
        visible(&file.file_name),
        file.size,
        visible(&path.display().to_string())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_senders_name_never_leaves_the_directory_nor_hides_characters() {
        for (given, safe) in [
            ("boarding-pass.pdf", "boarding-pass.pdf"),
            ("../../.bashrc", "bashrc"),
            ("/etc/passwd", "passwd"),
            ("..\\..\\Windows\\system.ini", "system.ini"),
            ("..", FALLBACK_NAME),
            ("", FALLBACK_NAME),
            ("   ", FALLBACK_NAME),
            ("evil\u{1b}[31m.txt", "evil__31m.txt"),
            ("invoice\u{202e}fdp.exe", "invoice_fdp.exe"),
            ("a\nb\tc\0d", "a_b_c_d"),
            ("café menu (2).pdf", "café menu (2).pdf"),
            ("C:photo.jpg", "C_photo.jpg"),
        ] {
            assert_eq!(safe_file_name(given), safe, "{given:?}");
        }
        let long = "x".repeat(500) + ".pdf";
        assert_eq!(safe_file_name(&long).chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn a_saved_file_never_replaces_one_already_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = free_path(dir.path(), "pass.pdf").expect("free");
        assert_eq!(first, dir.path().join("pass.pdf"));
        std::fs::write(&first, b"kept").expect("write");
        let second = free_path(dir.path(), "pass.pdf").expect("free");
        assert_eq!(second, dir.path().join("pass (1).pdf"));
        std::fs::write(&second, b"kept too").expect("write");
        assert_eq!(
            free_path(dir.path(), "pass.pdf"),
            Some(dir.path().join("pass (2).pdf"))
        );
        assert_eq!(
            free_path(dir.path(), "README"),
            Some(dir.path().join("README"))
        );
        std::fs::write(dir.path().join("README"), b"").expect("write");
        assert_eq!(
            free_path(dir.path(), "README"),
            Some(dir.path().join("README (1)"))
        );
        assert_eq!(std::fs::read(&first).expect("read"), b"kept");
    }
}
