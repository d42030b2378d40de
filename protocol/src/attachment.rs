//! Attachment encryption: a file encrypted under a fresh random key as a
//! stream of authenticated chunks, in a construction that commits to its
//! key (docs/PROTOCOL.md, "Attachments").
//!
//! ChaCha20-Poly1305 on its own is not key-committing: a ciphertext can be
//! built that opens under two keys to two different contents (the
//! "invisible salamanders" attack on reported attachments). Here the key
//! `K` is expanded with HKDF-SHA256 into an encryption key and a 32-byte
//! commitment; the commitment is written in the stream's header and checked
//! before any chunk is opened, so a stream opens under one key only.
//!
//! The stream is a header followed by chunks. Every chunk but the last
//! holds exactly `chunk_len` plaintext bytes; the last holds from 1 to
//! `chunk_len` (none only when the whole plaintext is empty), and is sealed under a nonce that marks it last, so a
//! truncated stream (ending on a chunk not marked last), a reordered one
//! (each nonce carries the chunk's index) and an extended one (bytes after
//! the last chunk) are all refused. Memory is bounded by one chunk.
//!
//! This module holds the byte layout and the per-chunk state machines
//! ([`AttachmentSealer`], [`AttachmentOpener`]); reading and writing files
//! is the client's (no I/O here).

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of an attachment key.
pub const ATTACHMENT_KEY_LEN: usize = 32;
/// The header's first four bytes.
pub const MAGIC: [u8; 4] = *b"CMPA";
/// The stream format this module writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the key commitment in the header.
pub const COMMITMENT_LEN: usize = 32;
/// Length of the header: magic, version, chunk length (u32 big-endian),
/// key commitment.
pub const HEADER_LEN: usize = 4 + 1 + 4 + COMMITMENT_LEN;
/// Bytes each chunk adds to its plaintext (the Poly1305 tag).
pub const TAG_LEN: usize = 16;
/// The plaintext bytes per chunk this module writes.
pub const DEFAULT_CHUNK_LEN: u32 = 64 * 1024;
/// The smallest chunk length a reader accepts.
pub const MIN_CHUNK_LEN: u32 = 1024;
/// The largest chunk length a reader accepts (bounds a reader's memory).
pub const MAX_CHUNK_LEN: u32 = 1024 * 1024;
/// HKDF info for the key schedule.
const KDF_INFO: &[u8] = b"Comptoir attachment v1";

/// Why an attachment stream was refused. The caller must discard whatever
/// it has written of the plaintext so far.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AttachmentError {
    /// The stream does not start with a header this client can read.
    #[error("not an attachment this client can open: {0}")]
    BadHeader(&'static str),
    /// The header commits to another key: the stream was made for another
    /// key, or the message carried a wrong one.
    #[error("the attachment was encrypted under another key")]
    WrongKey,
    /// A chunk did not authenticate: its bytes were altered or moved.
    #[error("chunk {index} of the attachment was altered or moved")]
    Tampered {
        /// The chunk's index (from 0).
        index: u64,
    },
    /// The stream ends before its last chunk.
    #[error("the attachment is truncated (ends after chunk {index})")]
    Truncated {
        /// The index of the last chunk present.
        index: u64,
    },
    /// Bytes follow the chunk marked last.
    #[error("the attachment has bytes after its last chunk")]
    Extended,
    /// A chunk is longer than the header allows, or a chunk other than the
    /// last is shorter.
    #[error("chunk {index} has a wrong length")]
    ChunkLength {
        /// The chunk's index (from 0).
        index: u64,
    },
    /// More than 2^64 chunks (cannot happen with a real file).
    #[error("the attachment has too many chunks")]
    TooManyChunks,
}

/// A fresh attachment key. Zeroized on drop; `Debug` shows no key bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AttachmentKey([u8; ATTACHMENT_KEY_LEN]);

impl std::fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachmentKey(..)")
    }
}

impl AttachmentKey {
    /// A fresh random key from `rng`.
    pub fn generate(rng: &mut impl rand_core::CryptoRng) -> Self {
        let mut key = [0u8; ATTACHMENT_KEY_LEN];
        rng.fill_bytes(&mut key);
        Self(key)
    }

    /// The key as received inside a message (its `AttachmentPointer.key`).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    /// Its bytes, to send inside the end-to-end encrypted message.
    pub fn as_bytes(&self) -> &[u8; ATTACHMENT_KEY_LEN] {
        &self.0
    }

    /// The encryption key and the commitment (the key schedule).
    fn schedule(&self) -> (Zeroizing<[u8; 32]>, [u8; COMMITMENT_LEN]) {
        let mut okm = Zeroizing::new([0u8; 64]);
        Hkdf::<Sha256>::new(None, &self.0)
            .expand(KDF_INFO, okm.as_mut())
            .unwrap_or_else(|_| unreachable!("64 bytes is a valid HKDF-SHA256 length"));
        let mut encryption = Zeroizing::new([0u8; 32]);
        encryption.copy_from_slice(&okm[..32]);
        let mut commitment = [0u8; COMMITMENT_LEN];
        commitment.copy_from_slice(&okm[32..]);
        (encryption, commitment)
    }
}

/// The nonce of chunk `index`: the index (8 bytes, big-endian), three zero
/// bytes, and 1 for the last chunk (0 otherwise).
fn nonce(index: u64, last: bool) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&index.to_be_bytes());
    nonce[11] = u8::from(last);
    nonce
}

/// The length of the whole stream for `plaintext_len` bytes in chunks of
/// `chunk_len` (`None` on overflow or a chunk length of 0).
pub fn ciphertext_len(plaintext_len: u64, chunk_len: u32) -> Option<u64> {
    let chunk = u64::from(chunk_len);
    if chunk == 0 {
        return None;
    }
    // Full chunks, the last one holding the rest (an empty plaintext is
    // one empty last chunk).
    let chunks = plaintext_len.div_ceil(chunk).max(1);
    (HEADER_LEN as u64)
        .checked_add(plaintext_len)?
        .checked_add(chunks.checked_mul(TAG_LEN as u64)?)
}

/// Seals one attachment, chunk by chunk.
pub struct AttachmentSealer {
    cipher: ChaCha20Poly1305,
    header: [u8; HEADER_LEN],
    chunk_len: u32,
    next: u64,
    done: bool,
}

impl std::fmt::Debug for AttachmentSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentSealer")
            .field("chunk_len", &self.chunk_len)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl AttachmentSealer {
    /// A sealer for `key` writing chunks of [`DEFAULT_CHUNK_LEN`].
    pub fn new(key: &AttachmentKey) -> Self {
        Self::with_chunk_len(key, DEFAULT_CHUNK_LEN)
    }

    /// A sealer with another chunk length (tests and vectors), clamped to
    /// what readers accept.
    pub fn with_chunk_len(key: &AttachmentKey, chunk_len: u32) -> Self {
        let chunk_len = chunk_len.clamp(MIN_CHUNK_LEN, MAX_CHUNK_LEN);
        let (encryption, commitment) = key.schedule();
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4] = FORMAT_VERSION;
        header[5..9].copy_from_slice(&chunk_len.to_be_bytes());
        header[9..].copy_from_slice(&commitment);
        Self {
            cipher: ChaCha20Poly1305::new(&(*encryption).into()),
            header,
            chunk_len,
            next: 0,
            done: false,
        }
    }

    /// The header, written before the first chunk.
    pub fn header(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// The plaintext bytes each chunk but the last must hold.
    pub fn chunk_len(&self) -> usize {
        self.chunk_len as usize
    }

    /// Seal the next chunk: exactly [`chunk_len`](Self::chunk_len) bytes,
    /// or at most that for the `last` one. Returns the chunk's bytes
    /// (plaintext length + [`TAG_LEN`]).
    pub fn seal(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, AttachmentError> {
        let index = self.next;
        let fits = if last {
            plaintext.len() <= self.chunk_len()
        } else {
            plaintext.len() == self.chunk_len()
        };
        if self.done || !fits {
            return Err(AttachmentError::ChunkLength { index });
        }
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &nonce(index, last).into(),
                &self.header,
                out.as_mut_slice().into(),
            )
            .map_err(|_| AttachmentError::ChunkLength { index })?;
        out.extend_from_slice(&tag);
        self.next = index.checked_add(1).ok_or(AttachmentError::TooManyChunks)?;
        self.done = last;
        Ok(out)
    }
}

/// Opens one attachment, chunk by chunk, after checking its header
/// against the key.
pub struct AttachmentOpener {
    cipher: ChaCha20Poly1305,
    header: [u8; HEADER_LEN],
    chunk_len: u32,
    next: u64,
    done: bool,
}

impl std::fmt::Debug for AttachmentOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentOpener")
            .field("chunk_len", &self.chunk_len)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl AttachmentOpener {
    /// Check `header` (the stream's first [`HEADER_LEN`] bytes) against
    /// `key`: [`AttachmentError::WrongKey`] if it commits to another key.
    pub fn new(key: &AttachmentKey, header: &[u8]) -> Result<Self, AttachmentError> {
        let header: [u8; HEADER_LEN] = header
            .try_into()
            .map_err(|_| AttachmentError::BadHeader("the header is too short"))?;
        if header[..4] != MAGIC {
            return Err(AttachmentError::BadHeader(
                "it does not start as an attachment",
            ));
        }
        if header[4] != FORMAT_VERSION {
            return Err(AttachmentError::BadHeader("unknown format version"));
        }
        let chunk_len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
        if !(MIN_CHUNK_LEN..=MAX_CHUNK_LEN).contains(&chunk_len) {
            return Err(AttachmentError::BadHeader("chunk length out of range"));
        }
        let (encryption, commitment) = key.schedule();
        if !bool::from(commitment.ct_eq(&header[9..])) {
            return Err(AttachmentError::WrongKey);
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new(&(*encryption).into()),
            header,
            chunk_len,
            next: 0,
            done: false,
        })
    }

    /// The length of a full sealed chunk (every chunk but the last).
    pub fn sealed_chunk_len(&self) -> usize {
        self.chunk_len as usize + TAG_LEN
    }

    /// Whether the chunk marked last was opened.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Open the next sealed chunk. `last` says whether the stream ends
    /// after it (the reader knows: nothing follows). A chunk that opens
    /// only as not-last when the stream ends is a truncation.
    pub fn open(
        &mut self,
        sealed: &[u8],
        last: bool,
    ) -> Result<Zeroizing<Vec<u8>>, AttachmentError> {
        let index = self.next;
        if self.done {
            return Err(AttachmentError::Extended);
        }
        if sealed.len() < TAG_LEN
            || sealed.len() > self.sealed_chunk_len()
            || (!last && sealed.len() != self.sealed_chunk_len())
        {
            return Err(AttachmentError::ChunkLength { index });
        }
        let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let tag = Tag::try_from(tag).map_err(|_| AttachmentError::Tampered { index })?;
        let attempt = |as_last: bool| {
            let mut plaintext = Zeroizing::new(body.to_vec());
            self.cipher
                .decrypt_inout_detached(
                    &nonce(index, as_last).into(),
                    &self.header,
                    plaintext.as_mut_slice().into(),
                    &tag,
                )
                .ok()
                .map(|()| plaintext)
        };
        match attempt(last) {
            Some(plaintext) => {
                self.next = index.checked_add(1).ok_or(AttachmentError::TooManyChunks)?;
                self.done = last;
                Ok(plaintext)
            }
            // The stream ends here but this chunk was sealed as one that
            // has more after it: the rest was cut off.
            None if last && sealed.len() == self.sealed_chunk_len() && attempt(false).is_some() => {
                Err(AttachmentError::Truncated { index })
            }
            // More follows, but this chunk was sealed as the last one.
            None if !last && attempt(true).is_some() => Err(AttachmentError::Extended),
            None => Err(AttachmentError::Tampered { index }),
        }
    }
}

/// Seal a whole plaintext held in memory (small attachments, vectors).
pub fn seal_all(key: &AttachmentKey, plaintext: &[u8], chunk_len: u32) -> Vec<u8> {
    let mut sealer = AttachmentSealer::with_chunk_len(key, chunk_len);
    let chunk = sealer.chunk_len();
    let mut out = sealer.header().to_vec();
    let mut rest = plaintext;
    loop {
        let last = rest.len() <= chunk;
        let (this, next) = rest.split_at(if last { rest.len() } else { chunk });
        // Lengths are right by construction; an error cannot happen.
        match sealer.seal(this, last) {
            Ok(sealed) => out.extend_from_slice(&sealed),
            Err(_) => unreachable!("chunk lengths are chosen to fit"),
        }
        if last {
            return out;
        }
        rest = next;
    }
}

/// Open a whole stream held in memory.
pub fn open_all(key: &AttachmentKey, stream: &[u8]) -> Result<Zeroizing<Vec<u8>>, AttachmentError> {
    if stream.len() < HEADER_LEN {
        return Err(AttachmentError::BadHeader("the header is too short"));
    }
    let (header, mut rest) = stream.split_at(HEADER_LEN);
    let mut opener = AttachmentOpener::new(key, header)?;
    let full = opener.sealed_chunk_len();
    let mut out = Zeroizing::new(Vec::with_capacity(rest.len()));
    loop {
        let last = rest.len() <= full;
        let (this, next) = rest.split_at(if last { rest.len() } else { full });
        out.extend_from_slice(&opener.open(this, last)?);
        if last {
            return Ok(out);
        }
        rest = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> AttachmentKey {
        AttachmentKey([byte; 32])
    }

    fn text(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_every_chunk_edge() {
        for len in [0, 1, 1023, 1024, 1025, 2048, 5000] {
            let plain = text(len);
            let stream = seal_all(&key(1), &plain, 1024);
            assert_eq!(
                stream.len() as u64,
                ciphertext_len(len as u64, 1024).unwrap()
            );
            assert_eq!(*open_all(&key(1), &stream).unwrap(), plain, "length {len}");
        }
    }

    #[test]
    fn another_key_is_refused_before_any_chunk() {
        let stream = seal_all(&key(1), &text(3000), 1024);
        assert_eq!(open_all(&key(2), &stream), Err(AttachmentError::WrongKey));
    }

    #[test]
    fn truncated_reordered_extended_and_flipped_streams_are_refused() {
        let stream = seal_all(&key(1), &text(3000), 1024);
        let full = 1024 + TAG_LEN;
        // Cut after the first full chunk: it opens only as not-last.
        let cut = &stream[..HEADER_LEN + full];
        assert_eq!(
            open_all(&key(1), cut),
            Err(AttachmentError::Truncated { index: 0 })
        );
        // Cut inside a chunk.
        assert!(open_all(&key(1), &stream[..stream.len() - 1]).is_err());
        // Swap chunks 0 and 1.
        let mut swapped = stream.clone();
        let (a, b) = (HEADER_LEN, HEADER_LEN + full);
        let first = stream[a..b].to_vec();
        swapped[a..b].copy_from_slice(&stream[b..b + full]);
        swapped[b..b + full].copy_from_slice(&first);
        assert_eq!(
            open_all(&key(1), &swapped),
            Err(AttachmentError::Tampered { index: 0 })
        );
        // Bytes after the last chunk.
        let mut longer = stream.clone();
        longer.push(0);
        assert!(open_all(&key(1), &longer).is_err());
        // A flipped bit in the last chunk.
        let mut flipped = stream.clone();
        let end = flipped.len() - 1;
        flipped[end] ^= 1;
        assert_eq!(
            open_all(&key(1), &flipped),
            Err(AttachmentError::Tampered { index: 2 })
        );
        // A changed chunk length in the header no longer matches the
        // authenticated header.
        let mut header = stream.clone();
        header[8] ^= 1;
        assert!(open_all(&key(1), &header).is_err());
    }

    #[test]
    fn a_stream_extended_by_a_whole_chunk_is_refused() {
        let key = key(1);
        let mut sealer = AttachmentSealer::with_chunk_len(&key, 1024);
        let mut stream = sealer.header().to_vec();
        stream.extend(sealer.seal(&text(1024), false).unwrap());
        stream.extend(sealer.seal(&text(10), true).unwrap());
        let mut opener = AttachmentOpener::new(&key, &stream[..HEADER_LEN]).unwrap();
        let full = opener.sealed_chunk_len();
        opener
            .open(&stream[HEADER_LEN..HEADER_LEN + full], false)
            .unwrap();
        opener.open(&stream[HEADER_LEN + full..], true).unwrap();
        assert!(opener.is_done());
        assert_eq!(opener.open(&[0; 20], true), Err(AttachmentError::Extended));
    }

    #[test]
    fn the_sealer_refuses_wrong_chunk_lengths_and_chunks_after_the_last() {
        let mut sealer = AttachmentSealer::with_chunk_len(&key(1), 1024);
        assert_eq!(
            sealer.seal(&text(10), false),
            Err(AttachmentError::ChunkLength { index: 0 })
        );
        assert_eq!(
            sealer.seal(&text(1025), true),
            Err(AttachmentError::ChunkLength { index: 0 })
        );
        sealer.seal(&text(5), true).unwrap();
        assert!(sealer.seal(&text(5), true).is_err());
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        assert_eq!(format!("{:?}", key(0xab)), "AttachmentKey(..)");
    }
}
