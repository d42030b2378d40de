//! Status posts (docs/PROTOCOL.md, "Status"; docs/OPERATIONS.md,
//! "Status posts"): which account posted which encrypted blob when, kept
//! until 24 hours after posting or until the poster deletes it, and the
//! pure rule saying who may be sent a post's key.
//!
//! A post is a small record, one file per post in `data_dir/status`
//! (`<post id hex>.post`, written to a temporary file, synced, renamed,
//! the directory synced), indexed in memory at start. The post's blob
//! lives in the blob store with its expiry brought forward to the post's;
//! its key envelopes live in the mailbox with the same expiry.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use comptoir_protocol::proto::wire::AccountKind;
use comptoir_protocol::{ACCOUNT_ID_LEN, AccountId, ConsentCategories};

use crate::blobs::{BLOB_ID_LEN, BlobId};
use crate::storage::StorageError;

/// How long a Status post lives: 24 hours after posting.
pub const STATUS_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Live posts one account may hold at once: enough for a busy day, few
/// enough that one account cannot fill the relay's index.
pub const MAX_LIVE_POSTS_PER_ACCOUNT: usize = 100;

/// Length of a post id (random, chosen by the poster).
pub const POST_ID_LEN: usize = 16;

/// A post id.
pub type PostId = [u8; POST_ID_LEN];

/// The record file's version tag.
const MAGIC: &[u8; 4] = b"CSP1";
/// magic (4) || poster (16) || blob (16) || posted_at (8) || expires_at (8).
const RECORD_LEN: usize = 4 + ACCOUNT_ID_LEN + BLOB_ID_LEN + 8 + 8;

/// One live Status post.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusPost {
    /// The posting account.
    pub poster: AccountId,
    /// The blob holding the encrypted post.
    pub blob_id: BlobId,
    /// The relay's clock at posting (ms since the epoch).
    pub posted_at_ms: u64,
    /// When the relay deletes it: [`STATUS_TTL_MS`] after posting.
    pub expires_at_ms: u64,
}

impl StatusPost {
    /// Whether the post is still live at `now_ms`.
    pub fn live_at(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }
}

/// Why [`StatusPosts::post_after`] recorded nothing.
#[derive(Debug)]
pub enum PostError<E> {
    /// The post itself was refused (`first` was not run).
    Refused(PostRefused),
    /// `first` failed.
    First(E),
}

/// Why a post was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum PostRefused {
    /// The id is taken by another post (another blob or poster).
    #[error("this post id is in use: pick another random id")]
    IdInUse,
    /// The account holds [`MAX_LIVE_POSTS_PER_ACCOUNT`] live posts.
    #[error(
        "this account has {MAX_LIVE_POSTS_PER_ACCOUNT} live Status posts; delete one or wait \
         for one to expire"
    )]
    TooMany,
    /// The disk failed; nothing was recorded.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What [`StatusPosts::post`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// Recorded now.
    New(StatusPost),
    /// The same post was recorded before (a retry): the record kept.
    Again(StatusPost),
}

/// The relay's Status posts.
#[derive(Debug)]
pub struct StatusPosts {
    dir: PathBuf,
    index: Mutex<HashMap<PostId, StatusPost>>,
    /// Serialises the writes (post, delete, expire) so the index and the
    /// files change in the same order.
    writes: tokio::sync::Mutex<()>,
}

fn io(what: &str, error: std::io::Error) -> StorageError {
    if error.kind() == std::io::ErrorKind::StorageFull {
        StorageError::Full
    } else {
        StorageError::Backend(format!("status posts: {what}: {error}"))
    }
}

fn record_path(dir: &Path, id: &PostId, suffix: &str) -> PathBuf {
    dir.join(format!("{}.{suffix}", hex::encode(id)))
}

fn encode(post: &StatusPost) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..4].copy_from_slice(MAGIC);
    out[4..20].copy_from_slice(post.poster.as_bytes());
    out[20..36].copy_from_slice(&post.blob_id);
    out[36..44].copy_from_slice(&post.posted_at_ms.to_be_bytes());
    out[44..52].copy_from_slice(&post.expires_at_ms.to_be_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<StatusPost> {
    if bytes.len() != RECORD_LEN || &bytes[..4] != MAGIC {
        return None;
    }
    let u64_at = |at: usize| {
        <[u8; 8]>::try_from(&bytes[at..at + 8])
            .ok()
            .map(u64::from_be_bytes)
    };
    Some(StatusPost {
        poster: AccountId::from_bytes(&bytes[4..20]).ok()?,
        blob_id: bytes[20..36].try_into().ok()?,
        posted_at_ms: u64_at(36)?,
        expires_at_ms: u64_at(44)?,
    })
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync the directory", e))
}

/// Run blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| StorageError::Backend("status posts: a file task stopped".to_owned()))?
}

impl StatusPosts {
    /// The posts in `dir` (created if missing). A damaged record stops the
    /// start with its name; a temporary file a crash left is deleted.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory", e))?;
        let mut index = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io("cannot list the directory", e))? {
            let entry = entry.map_err(|e| io("cannot list the directory", e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let path = dir.join(&name);
            if name.ends_with(".post.new") {
                std::fs::remove_file(&path)
                    .map_err(|e| io("cannot delete what a crash left", e))?;
                continue;
            }
            let Some(id) = name
                .strip_suffix(".post")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| PostId::try_from(b).ok())
            else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(|e| io("cannot read a post", e))?;
            let post = decode(&bytes).ok_or_else(|| {
                StorageError::Backend(format!(
                    "status posts: the record {} is damaged; move it aside to start",
                    path.display()
                ))
            })?;
            index.insert(id, post);
        }
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            index: Mutex::new(index),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<PostId, StatusPost>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Post `id` of `poster`, if it is live at `now_ms`.
    pub fn live(&self, id: &PostId, poster: AccountId, now_ms: u64) -> Option<StatusPost> {
        self.index()
            .get(id)
            .copied()
            .filter(|p| p.poster == poster && p.live_at(now_ms))
    }

    /// Posts held (live or waiting for the next expiry pass).
    pub fn count(&self) -> usize {
        self.index().len()
    }

    /// Record `post` under `id`, durably before returning (with nothing
    /// to run first: the unit tests' form of [`Self::post_after`]).
    #[cfg(test)]
    pub async fn post(&self, id: PostId, post: StatusPost) -> Result<Posted, PostRefused> {
        self.post_after(id, post, std::future::ready(Ok::<(), PostRefused>(())))
            .await
            .map_err(|e| match e {
                PostError::Refused(refused) | PostError::First(refused) => refused,
            })
    }

    /// Record `post` under `id`, durably before returning, running `first`
    /// (the post's other effects, e.g. its blob's expiry brought forward)
    /// once the post is known to be
    /// accepted and before it is written, under the same lock: a refused
    /// post never runs it, and a failed `first` records nothing. A post
    /// already recorded (`Posted::Again`) does not run it again.
    pub async fn post_after<E>(
        &self,
        id: PostId,
        post: StatusPost,
        first: impl Future<Output = Result<(), E>>,
    ) -> Result<Posted, PostError<E>> {
        let _writes = self.writes.lock().await;
        {
            let index = self.index();
            if let Some(kept) = index.get(&id) {
                return if kept.poster == post.poster && kept.blob_id == post.blob_id {
                    Ok(Posted::Again(*kept))
                } else {
                    Err(PostError::Refused(PostRefused::IdInUse))
                };
            }
            let held = index
                .values()
                .filter(|p| p.poster == post.poster && p.live_at(post.posted_at_ms))
                .count();
            if held >= MAX_LIVE_POSTS_PER_ACCOUNT {
                return Err(PostError::Refused(PostRefused::TooMany));
            }
        }
        first.await.map_err(PostError::First)?;
        let dir = self.dir.clone();
        blocking(move || {
            let temp = record_path(&dir, &id, "post.new");
            let mut file = File::create(&temp).map_err(|e| io("cannot write a post", e))?;
            file.write_all(&encode(&post))
                .and_then(|()| file.sync_all())
                .map_err(|e| io("cannot write a post", e))?;
            std::fs::rename(&temp, record_path(&dir, &id, "post"))
                .map_err(|e| io("cannot write a post", e))?;
            sync_dir(&dir)
        })
        .await
        .map_err(|e| PostError::Refused(e.into()))?;
        self.index().insert(id, post);
        Ok(Posted::New(post))
    }

    /// Delete post `id` (durably); returns it if it was held.
    pub async fn remove(&self, id: PostId) -> Result<Option<StatusPost>, StorageError> {
        let _writes = self.writes.lock().await;
        let Some(post) = self.index().get(&id).copied() else {
            return Ok(None);
        };
        let dir = self.dir.clone();
        blocking(move || {
            match std::fs::remove_file(record_path(&dir, &id, "post")) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot delete a post", e)),
            }
            sync_dir(&dir)
        })
        .await?;
        self.index().remove(&id);
        Ok(Some(post))
    }

    /// Delete every post whose time is up at `now_ms`; returns them.
    pub async fn expire(&self, now_ms: u64) -> Result<Vec<StatusPost>, StorageError> {
        let due: Vec<PostId> = self
            .index()
            .iter()
            .filter(|(_, p)| !p.live_at(now_ms))
            .map(|(id, _)| *id)
            .collect();
        let mut gone = Vec::with_capacity(due.len());
        for id in due {
            if let Some(post) = self.remove(id).await? {
                gone.push(post);
            }
        }
        Ok(gone)
    }
}

/// What the audience rule reads about one recipient of a Status key.
#[derive(Clone, Copy, Debug)]
pub struct AudienceInput {
    /// The poster's kind.
    pub poster: AccountKind,
    /// The recipient's kind.
    pub recipient: AccountKind,
    /// The recipient is the poster itself (its other devices).
    pub own_account: bool,
    /// For a business poster and a customer recipient: what the
    /// customer's kept consent for the business covers now.
    pub consent: ConsentCategories,
    /// The two accounts have exchanged a conversation message (either way
    /// round: the relay's first-contact record).
    pub talked: bool,
}

/// Why a recipient does not qualify for a Status key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotASubscriber {
    /// A business's Status, to a customer whose consent does not cover
    /// the status category.
    #[error(
        "this customer's consent does not cover Status: a business's Status goes only to \
         customers who consented to the status category; nothing was stored"
    )]
    NoStatusConsent,
    /// A business's Status, to another business.
    #[error("a business's Status goes only to its customers; nothing was stored")]
    BusinessRecipient,
    /// A person's Status, to an account it never exchanged a conversation
    /// message with.
    #[error(
        "a person's Status goes only to the accounts it has a conversation with (a message \
         written either way); nothing was stored"
    )]
    NoConversation,
}

/// Whether a recipient may be sent a Status key (pure: no I/O, no clock).
/// A business posts to its subscribers, the customers whose consent covers
/// [`ConsentCategories::STATUS`]; a person to the accounts it has
/// exchanged a conversation message with; anyone to its own devices.
pub fn qualifies(input: &AudienceInput) -> Result<(), NotASubscriber> {
    if input.own_account {
        return Ok(());
    }
    match input.poster {
        AccountKind::Business => match input.recipient {
            AccountKind::Business => Err(NotASubscriber::BusinessRecipient),
            _ if input.consent.contains(ConsentCategories::STATUS) => Ok(()),
            _ => Err(NotASubscriber::NoStatusConsent),
        },
        _ if input.talked => Ok(()),
        _ => Err(NotASubscriber::NoConversation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(poster: AccountKind, recipient: AccountKind) -> AudienceInput {
        AudienceInput {
            poster,
            recipient,
            own_account: false,
            consent: ConsentCategories::NONE,
            talked: false,
        }
    }

    #[test]
    fn the_audience_rule_as_a_table() {
        use AccountKind::{Business as B, Customer as C};
        let status = ConsentCategories::STATUS;
        let marketing = ConsentCategories::MARKETING;
        let cases: [(AudienceInput, Result<(), NotASubscriber>); 8] = [
            (
                AudienceInput {
                    consent: status,
                    ..input(B, C)
                },
                Ok(()),
            ),
            (
                AudienceInput {
                    consent: marketing.union(status),
                    ..input(B, C)
                },
                Ok(()),
            ),
            (
                AudienceInput {
                    consent: marketing,
                    talked: true,
                    ..input(B, C)
                },
                Err(NotASubscriber::NoStatusConsent),
            ),
            (input(B, C), Err(NotASubscriber::NoStatusConsent)),
            (
                AudienceInput {
                    consent: status,
                    talked: true,
                    ..input(B, B)
                },
                Err(NotASubscriber::BusinessRecipient),
            ),
            (
                AudienceInput {
                    talked: true,
                    ..input(C, B)
                },
                Ok(()),
            ),
            (input(C, C), Err(NotASubscriber::NoConversation)),
            (
                AudienceInput {
                    own_account: true,
                    ..input(B, B)
                },
                Ok(()),
            ),
        ];
        for (case, expected) in cases {
            assert_eq!(qualifies(&case), expected, "{case:?}");
        }
    }

    #[tokio::test]
    async fn posts_survive_a_restart_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let posts = StatusPosts::open(dir.path()).unwrap();
        let poster = AccountId::from_bytes(&[3; 16]).unwrap();
        let post = StatusPost {
            poster,
            blob_id: [5; 16],
            posted_at_ms: 1_000,
            expires_at_ms: 1_000 + STATUS_TTL_MS,
        };
        assert_eq!(posts.post([1; 16], post).await.unwrap(), Posted::New(post));
        assert_eq!(
            posts.post([1; 16], post).await.unwrap(),
            Posted::Again(post)
        );
        let other = StatusPost {
            blob_id: [6; 16],
            ..post
        };
        assert!(matches!(
            posts.post([1; 16], other).await,
            Err(PostRefused::IdInUse)
        ));
        drop(posts);
        let posts = StatusPosts::open(dir.path()).unwrap();
        assert_eq!(posts.live(&[1; 16], poster, 2_000), Some(post));
        assert_eq!(posts.live(&[1; 16], poster, post.expires_at_ms), None);
        assert!(
            posts
                .expire(post.expires_at_ms - 1)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(posts.expire(post.expires_at_ms).await.unwrap(), vec![post]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_damaged_record_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(format!("{}.post", "ab".repeat(16))),
            b"CSP1",
        )
        .unwrap();
        let error = StatusPosts::open(dir.path()).unwrap_err();
        assert!(error.to_string().contains("damaged"), "{error}");
    }
}
