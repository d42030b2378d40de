//! The mode behind `relay-load attachment`: one file through the whole
//! attachment path against a real relay, timed in its steps, beside the
//! floor it cannot beat: copying the same file on the same disk.
//!
//! - encrypt: the sender's client encrypts the file to a temporary file
//!   (read, chunked ChaCha20-Poly1305, both SHA-256 digests, write);
//! - upload: `BeginUpload` and 128 KiB `UploadChunk`s, each synced by the
//!   relay before it answers, and the relay's digest check at the end;
//! - download: the recipient's `FetchBlob`s, decrypted while streaming into
//!   a temporary file beside the destination, both digests checked, synced
//!   and moved into place.
//!
//! The copy is `std::fs::copy` of the original plus an `fsync` of the copy,
//! from and to the same temporary directory.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use comptoir_client::{Client, Event, KdfParams};

use crate::mux::MuxError;

/// Cheap Argon2id costs: the store key is derived outside the timed part.
const BENCH_KDF: KdfParams = KdfParams {
    m_cost: 256,
    t_cost: 1,
    p_cost: 1,
};
const PASSPHRASE: &str = "bench passphrase";

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub struct AttachmentReport {
    /// The file's length.
    pub bytes: u64,
    /// Copying the file (and syncing the copy).
    pub copy: Duration,
    /// Encrypting it to a temporary file.
    pub encrypt: Duration,
    /// Uploading the encrypted stream.
    pub upload: Duration,
    /// Downloading, decrypting and checking it.
    pub download: Duration,
}

fn io(what: &str, error: std::io::Error) -> MuxError {
    MuxError::Unexpected(format!("{what}: {error}"))
}

/// Write `bytes` of incompressible data to `path`.
fn write_file(path: &Path, bytes: u64) -> Result<(), MuxError> {
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| io("create the file", e))?);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..bytes / 8 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        file.write_all(&state.to_le_bytes())
            .map_err(|e| io("write the file", e))?;
    }
    file.flush().map_err(|e| io("write the file", e))
}

/// One run: a file of `bytes` from a new account to another over the relay
/// at `addr`.
pub async fn run(addr: SocketAddr, bytes: u64) -> Result<AttachmentReport, MuxError> {
    let url = format!("ws://{addr}");
    let work = tempfile::tempdir().map_err(|e| io("temp dir", e))?;
    let (dir_a, dir_b) = (work.path().join("a"), work.path().join("b"));
    let mut alice = Client::create_with_params(&dir_a, PASSPHRASE, BENCH_KDF)?;
    alice.register(&url).await?;
    let mut bob = Client::create_with_params(&dir_b, PASSPHRASE, BENCH_KDF)?;
    bob.register(&url).await?;
    let original = work.path().join("file.bin");
    write_file(&original, bytes)?;

    let start = Instant::now();
    let copy_path = work.path().join("copy.bin");
    std::fs::copy(&original, &copy_path).map_err(|e| io("copy", e))?;
    std::fs::File::open(&copy_path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("sync the copy", e))?;
    let copy = start.elapsed();

    let start = Instant::now();
    let file = alice.encrypt_file(&original, "application/octet-stream")?;
    let encrypt = start.elapsed();
    let start = Instant::now();
    let report = alice.upload(&file).await?;
    let upload = start.elapsed();
    if !report.complete {
        return Err(MuxError::Unexpected("the upload did not complete".into()));
    }
    alice.send_attachment(bob.account_id(), &file).await?;
    let from = alice.account_id();
    let id = loop {
        match bob.next_event(Duration::from_secs(30)).await? {
            Some(Event::Attachment { id, .. }) => break id,
            Some(_) => {}
            None => return Err(MuxError::Timeout(Duration::from_secs(30))),
        }
    };
    let saved = work.path().join("saved.bin");
    let start = Instant::now();
    bob.download_attachment(from, id, &saved).await?;
    let download = start.elapsed();
    let same = std::fs::metadata(&saved)
        .map_err(|e| io("saved file", e))?
        .len()
        == bytes;
    if !same {
        return Err(MuxError::Unexpected(
            "the saved file has another length".into(),
        ));
    }
    alice.close().await?;
    bob.close().await?;
    Ok(AttachmentReport {
        bytes,
        copy,
        encrypt,
        upload,
        download,
    })
}
