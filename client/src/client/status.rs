//! Status posts (docs/PROTOCOL.md, "Status"): post one (encrypt once,
//! upload once, then the key to each recipient over its pairwise session,
//! through `SendStatusKey`), list, view (download, check both digests,
//! decrypt; a view receipt only if the viewer asks), delete early; and
//! what arrives: keys, deletions, view receipts.

use std::io::Write;
use std::path::Path;

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{
    Content, StatusDeleted, StatusKey, StatusRecord, StatusViewed, content,
};
use comptoir_protocol::proto::wire::{
    Category, DeleteStatus, Envelope, ErrorCode, GetSubscribers, PostStatus, SendStatusKey,
    client_frame, server_frame,
};
use rand::RngExt;

use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::messages::MessageId;
use crate::peers::Observed;
use crate::status::{self, POST_ID_LEN, STATUS_TTL_MS, StatusError, TEXT_CONTENT_TYPE};

use super::{Client, now_ms, unexpected};

/// What to post.
#[derive(Clone, Copy, Debug)]
pub enum StatusInput<'a> {
    /// A text (1 to [`status::MAX_STATUS_TEXT_BYTES`] bytes).
    Text(&'a str),
    /// An image or an MP4 video of at most 30 seconds.
    File(&'a Path),
}

/// What [`Client::post_status`] did.
#[derive(Debug)]
pub struct PostedStatus {
    /// The post id.
    pub post_id: [u8; POST_ID_LEN],
    /// The relay's posting time, and when the post goes (24 hours later).
    pub posted_at_ms: u64,
    /// See `posted_at_ms`.
    pub expires_at_ms: u64,
    /// The accounts the key went to.
    pub sent_to: Vec<AccountId>,
    /// The accounts it did not go to, with why (the relay's
    /// `NOT_A_SUBSCRIBER` for one that does not qualify).
    pub refused: Vec<(AccountId, ClientError)>,
}

/// A live Status post as this device shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusView {
    /// The post id.
    pub post_id: [u8; POST_ID_LEN],
    /// Who posted it.
    pub poster: AccountId,
    /// When (the relay's clock), ms since the epoch.
    pub posted_at_ms: u64,
    /// When it is hidden and deleted here.
    pub expires_at_ms: u64,
    /// What it holds (`text/plain; charset=utf-8`, `image/…`, `video/mp4`).
    pub content_type: String,
    /// Its length in bytes.
    pub size: u64,
    /// Posted by this account.
    pub outgoing: bool,
    /// For this account's posts: how many accounts were sent the key.
    pub recipients: usize,
    /// For this account's posts: who sent a view receipt, and when.
    pub viewers: Vec<(AccountId, u64)>,
}

impl StatusView {
    fn of(record: &StatusRecord) -> Result<Self> {
        let corrupt = || ClientError::CorruptStore("a Status post".into());
        let pointer = record.pointer.as_ref().ok_or_else(corrupt)?;
        Ok(Self {
            post_id: record
                .post_id
                .as_slice()
                .try_into()
                .map_err(|_| corrupt())?,
            poster: AccountId::from_bytes(&record.poster_account)?,
            posted_at_ms: record.posted_at_ms,
            expires_at_ms: record.expires_at_ms,
            content_type: pointer.content_type.clone(),
            size: pointer.size,
            outgoing: record.outgoing,
            recipients: record.recipients.len(),
            viewers: record
                .viewers
                .iter()
                .filter_map(|v| Some((AccountId::from_bytes(&v.account).ok()?, v.viewed_at_ms)))
                .collect(),
        })
    }

    /// A text post.
    pub fn is_text(&self) -> bool {
        self.content_type == TEXT_CONTENT_TYPE
    }
}

impl Client {
    /// Post a Status to `recipients`: checked first (a video over 30 s is
    /// refused before anything is encrypted or uploaded), encrypted once
    /// under a fresh key, uploaded once, posted to the relay, then its key
    /// sent to each recipient account over its pairwise sessions. A
    /// recipient the relay refuses (it does not qualify) is listed in
    /// [`PostedStatus::refused`]; the others still get it.
    pub async fn post_status(
        &mut self,
        input: StatusInput<'_>,
        recipients: &[AccountId],
    ) -> Result<PostedStatus> {
        let file = match input {
            StatusInput::Text(text) => {
                status::check_text(text)?;
                let mut temp = tempfile::Builder::new()
                    .prefix(".status")
                    .tempfile_in(self.store.dir())
                    .map_err(|e| ClientError::io("cannot write the Status text", e))?;
                temp.write_all(text.as_bytes())
                    .and_then(|()| temp.flush())
                    .map_err(|e| ClientError::io("cannot write the Status text", e))?;
                let mut file = self.encrypt_file(temp.path(), TEXT_CONTENT_TYPE)?;
                file.file_name = "status.txt".into();
                file
            }
            StatusInput::File(path) => {
                let content_type = status::check_file(path)?;
                self.encrypt_file(path, content_type)?
            }
        };
        if !self.upload(&file).await?.complete {
            return Err(ClientError::InvalidArgument(
                "the relay did not finish the upload; try again".into(),
            ));
        }
        let post_id: [u8; POST_ID_LEN] = rand::rng().random();
        let reply = self
            .request(
                client_frame::Body::PostStatus(PostStatus {
                    post_id: post_id.to_vec(),
                    blob_id: file.blob_id.to_vec(),
                }),
                "the Status",
            )
            .await?;
        let server_frame::Body::StatusPosted(posted) = reply else {
            return Err(unexpected("StatusPosted", &reply));
        };
        if posted.post_id != post_id
            || posted.expires_at_ms > posted.posted_at_ms.saturating_add(STATUS_TTL_MS)
        {
            return Err(ClientError::UnexpectedFrame(
                "a Status posted under another id, or kept longer than 24 hours".into(),
            ));
        }
        let me = self.account.id();
        let mut record = StatusRecord {
            post_id: post_id.to_vec(),
            poster_account: me.to_vec(),
            posted_at_ms: posted.posted_at_ms,
            expires_at_ms: posted.expires_at_ms,
            pointer: Some(file.pointer()),
            outgoing: true,
            recipients: Vec::new(),
            viewers: Vec::new(),
        };
        status::put(&self.store, &record)?;
        self.store.flush().await?;
        let mut sent_to = Vec::new();
        let mut refused = Vec::new();
        for &peer in recipients {
            if peer == me || sent_to.contains(&peer) {
                continue;
            }
            let key = content::Body::StatusKey(StatusKey {
                post_id: post_id.to_vec(),
                pointer: Some(file.pointer()),
                posted_at_ms: posted.posted_at_ms,
            });
            match self.send_status_content(peer, Some(post_id), key).await {
                Ok(()) => sent_to.push(peer),
                Err(error) => refused.push((peer, error)),
            }
        }
        record.recipients = sent_to.iter().map(|a| a.to_vec()).collect();
        status::put(&self.store, &record)?;
        self.store.flush().await?;
        // This account's other devices get the post too, as sync copies
        // of messages go to them (the relay lets any account send a post's
        // key to its own devices).
        if self.has_other_devices() {
            let key = content::Body::StatusKey(StatusKey {
                post_id: post_id.to_vec(),
                pointer: Some(file.pointer()),
                posted_at_ms: posted.posted_at_ms,
            });
            if let Err(error) = self.send_status_content(me, Some(post_id), key).await {
                self.events.push_back(Event::Warning(format!(
                    "this account's other devices did not get its Status: {error}"
                )));
            }
        }
        Ok(PostedStatus {
            post_id,
            posted_at_ms: posted.posted_at_ms,
            expires_at_ms: posted.expires_at_ms,
            sent_to,
            refused,
        })
    }

    /// This business's Status subscribers: the customers whose consent
    /// covers Status now, as the relay keeps them (docs/PROTOCOL.md
    /// §13.6), in account id order; a customer account is refused
    /// (`ACCOUNT_KIND`). Those who never wrote to the business are among
    /// them: post to them by naming them.
    pub async fn status_subscribers(&mut self) -> Result<Vec<AccountId>> {
        let mut all: Vec<AccountId> = Vec::new();
        loop {
            let after = all.last().map(|a| a.to_vec()).unwrap_or_default();
            let reply = self
                .request(
                    client_frame::Body::GetSubscribers(GetSubscribers { after, limit: 0 }),
                    "the Status subscribers",
                )
                .await?;
            let server_frame::Body::Subscribers(page) = reply else {
                return Err(unexpected("Subscribers", &reply));
            };
            let before = all.len();
            for raw in &page.accounts {
                let account = AccountId::from_bytes(raw).map_err(|_| {
                    ClientError::UnexpectedFrame("a subscriber that is not an account id".into())
                })?;
                if all
                    .last()
                    .is_some_and(|last| last.as_bytes() >= account.as_bytes())
                {
                    return Err(ClientError::UnexpectedFrame(
                        "subscribers out of order".into(),
                    ));
                }
                all.push(account);
            }
            if !page.more || all.len() == before {
                return Ok(all);
            }
        }
    }

    /// The live Status posts kept here, newest first; those whose 24
    /// hours are up are deleted first.
    pub async fn statuses(&mut self) -> Result<Vec<StatusView>> {
        self.statuses_at(now_ms()).await
    }

    /// [`Self::statuses`] as if the clock read `now_ms` (tests: the 24
    /// hours are up without waiting them).
    #[doc(hidden)]
    pub async fn statuses_at(&mut self, now_ms: u64) -> Result<Vec<StatusView>> {
        let live = status::live(&self.store, now_ms)?;
        self.store.flush().await?;
        live.iter().map(StatusView::of).collect()
    }

    /// Download the Status `id_hex` (its id, or a unique prefix of at least
    /// 8 hex digits), check both digests and decrypt it to `destination`
    /// (nothing is left there on a refusal). With `receipt`, tell its
    /// poster this account viewed it; without, the poster learns nothing.
    pub async fn view_status(
        &mut self,
        id_hex: &str,
        destination: &Path,
        receipt: bool,
    ) -> Result<StatusView> {
        let record = status::find(&self.store, id_hex, now_ms())?;
        let view = StatusView::of(&record)?;
        let pointer = record
            .pointer
            .ok_or_else(|| ClientError::CorruptStore("a Status post".into()))?;
        self.fetch_and_decrypt(&pointer, destination).await?;
        if receipt && !view.outgoing {
            let viewed = content::Body::StatusViewed(StatusViewed {
                post_id: view.post_id.to_vec(),
                viewed_at_ms: now_ms(),
            });
            self.send_status_content(view.poster, None, viewed).await?;
        }
        Ok(view)
    }

    /// Delete this account's Status `id_hex` before its time: at the relay
    /// (the post and its blob), then here, and tell each account its key
    /// went to. Returns how many were told.
    pub async fn delete_status(&mut self, id_hex: &str) -> Result<usize> {
        let record = status::find(&self.store, id_hex, now_ms())?;
        if !record.outgoing {
            return Err(StatusError::NotYours(hex::encode(&record.post_id)).into());
        }
        match self
            .request(
                client_frame::Body::DeleteStatus(DeleteStatus {
                    post_id: record.post_id.clone(),
                }),
                "the Status deletion",
            )
            .await
        {
            // Gone at the relay already (it expired meanwhile): delete here.
            Ok(server_frame::Body::Ok(_))
            | Err(ClientError::Relay {
                code: ErrorCode::StatusNotFound,
                ..
            }) => {}
            Ok(other) => return Err(unexpected("Ok", &other)),
            Err(error) => return Err(error),
        }
        let me = self.account.id();
        status::remove(&self.store, &me, &record.post_id)?;
        self.store.flush().await?;
        // This account's other devices delete their copy too.
        if self.has_other_devices() {
            let deleted = content::Body::StatusDeleted(StatusDeleted {
                post_id: record.post_id.clone(),
            });
            if let Err(error) = self.send_status_content(me, None, deleted).await {
                self.events.push_back(Event::Warning(format!(
                    "this account's other devices were not told of the deletion: {error}"
                )));
            }
        }
        let mut told = 0;
        for raw in &record.recipients {
            let Ok(peer) = AccountId::from_bytes(raw) else {
                continue;
            };
            let deleted = content::Body::StatusDeleted(StatusDeleted {
                post_id: record.post_id.clone(),
            });
            if self.send_status_content(peer, None, deleted).await.is_ok() {
                told += 1;
            }
        }
        Ok(told)
    }

    /// Whether this account has devices besides this one (as last
    /// verified).
    fn has_other_devices(&self) -> bool {
        let live = self.live();
        live.own_devices()
            .is_ok_and(|list| !live.target_devices(self.account.id(), &list).is_empty())
    }

    /// Send `body` to `peer` as a franked control message: a Status key
    /// for post `post_id` through `SendStatusKey`, anything else (a
    /// deletion, a view receipt) as an ordinary `Send`.
    async fn send_status_content(
        &mut self,
        peer: AccountId,
        post_id: Option<[u8; POST_ID_LEN]>,
        body: content::Body,
    ) -> Result<()> {
        let id = MessageId::generate();
        let now = now_ms();
        let content = Content {
            message_id: id.0.to_vec(),
            sent_at_ms: now,
            body: Some(body),
            labels: None,
            franking_key: Vec::new(),
            padding: Vec::new(),
        };
        let live = self.live();
        for _attempt in 0..2 {
            let send = live
                .encrypt_for(peer, id, content.clone(), Category::Control, now)
                .await?;
            self.store.flush().await?;
            let frame = match post_id {
                Some(post_id) => client_frame::Body::SendStatusKey(SendStatusKey {
                    post_id: post_id.to_vec(),
                    send: Some(send),
                }),
                None => client_frame::Body::Send(send),
            };
            match self.request(frame, "the Status").await {
                Ok(server_frame::Body::Accepted(_)) => return Ok(()),
                Ok(other) => return Err(unexpected("Accepted", &other)),
                Err(ClientError::DeviceListMismatch { current }) => {
                    if self.observe(peer, &current)? == Observed::IdentityChanged {
                        return Err(ClientError::IdentityChanged { account: peer });
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Err(ClientError::UnexpectedFrame(
            "the relay refused the device list twice".into(),
        ))
    }

    /// The client's half of the audience rule (docs/PROTOCOL.md §13.2):
    /// a business's Status only under this account's consent to Status at
    /// `at_ms`; anyone else's only from an account this one has messages
    /// with.
    fn status_expected_from(&self, from: AccountId, at_ms: u64) -> Result<bool> {
        if from == self.account.id() {
            return Ok(true);
        }
        Ok(
            match crate::rule_checks::known_consent(&self.store, &from)? {
                Some(consent) => {
                    consent
                        .categories
                        .contains(comptoir_protocol::ConsentCategories::STATUS)
                        && at_ms < consent.expires_at_ms
                }
                None => !self
                    .store
                    .scan(crate::store::Tree::Messages, from.as_bytes())?
                    .is_empty(),
            },
        )
    }

    /// A Status key, deletion or view receipt from `from` (decrypted from
    /// `envelope`); the event to report, if any.
    pub(super) fn apply_status(
        &mut self,
        from: AccountId,
        envelope: &Envelope,
        body: content::Body,
    ) -> Result<Option<Event>> {
        if envelope.category != Category::Control as i32 {
            return Ok(Some(Event::Warning(format!(
                "{from} sent Status traffic outside a control message; it was ignored"
            ))));
        }
        let malformed = || {
            Ok(Some(Event::Warning(format!(
                "{from} sent a malformed Status message; it was ignored"
            ))))
        };
        match body {
            content::Body::StatusKey(key) => {
                let (Ok(post_id), Some(pointer)) = (
                    <[u8; POST_ID_LEN]>::try_from(key.post_id.as_slice()),
                    key.pointer,
                ) else {
                    return malformed();
                };
                // Never shown past 24 hours after the earlier of the
                // poster's stated time and the relay's accept time.
                let posted_at_ms = key.posted_at_ms.min(envelope.server_timestamp_ms);
                let expires_at_ms = posted_at_ms.saturating_add(STATUS_TTL_MS);
                if now_ms() >= expires_at_ms {
                    return Ok(None);
                }
                if !self.status_expected_from(from, envelope.server_timestamp_ms)? {
                    return Ok(Some(Event::Warning(format!(
                        "{from} sent a Status this account did not subscribe to (no Status \
                         consent for a business, no conversation with a person); ignored"
                    ))));
                }
                // Another device of this account posted it: this
                // account's own post here too (whom it went to is known
                // on the posting device only).
                let outgoing = from == self.account.id();
                if outgoing && status::get(&self.store, &from, &post_id)?.is_some() {
                    return Ok(None);
                }
                status::put(
                    &self.store,
                    &StatusRecord {
                        post_id: post_id.to_vec(),
                        poster_account: from.to_vec(),
                        posted_at_ms,
                        expires_at_ms,
                        pointer: Some(pointer),
                        outgoing,
                        recipients: Vec::new(),
                        viewers: Vec::new(),
                    },
                )?;
                Ok(Some(Event::StatusPosted {
                    from,
                    post_id,
                    posted_at_ms,
                }))
            }
            content::Body::StatusDeleted(deleted) => {
                let Ok(post_id) = <[u8; POST_ID_LEN]>::try_from(deleted.post_id.as_slice()) else {
                    return malformed();
                };
                // Keyed by poster: a peer deletes only its own posts.
                if status::get(&self.store, &from, &post_id)?.is_none() {
                    return Ok(None);
                }
                status::remove(&self.store, &from, &post_id)?;
                Ok(Some(Event::StatusDeleted { from, post_id }))
            }
            content::Body::StatusViewed(viewed) => {
                let Ok(post_id) = <[u8; POST_ID_LEN]>::try_from(viewed.post_id.as_slice()) else {
                    return malformed();
                };
                let me = self.account.id();
                if !status::note_viewer(&self.store, &me, &post_id, from, viewed.viewed_at_ms)? {
                    return Ok(None);
                }
                Ok(Some(Event::StatusViewed {
                    by: from,
                    post_id,
                    viewed_at_ms: viewed.viewed_at_ms,
                }))
            }
            _ => Ok(None),
        }
    }
}
