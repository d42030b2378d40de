//! `PostStatus` / `SendStatusKey` / `DeleteStatus` / `GetSubscribers`:
//! 24-hour Status posts
//! (docs/PROTOCOL.md, "Status"). A post is one encrypted blob the poster
//! uploaded; its key goes to each recipient account in an ordinary
//! franked `Send` wrapped in `SendStatusKey`, which the relay accepts only
//! for a live post of the sender and a recipient the audience rule
//! ([`crate::status_posts::qualifies`]) lets through. The post, its blob
//! and the key envelopes all expire 24 hours after posting. A business
//! reads who subscribes (its customers whose consent covers Status) with
//! `GetSubscribers`, so it can post to those who never wrote to it.

use comptoir_protocol::proto::wire::{self, server_frame::Body};
use comptoir_protocol::{AccountId, ConsentCategories};

use super::{account_field, device};
use crate::blobs::BlobId;
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::policy;
use crate::session::{Reply, Session};
use crate::status_posts::{
    AudienceInput, POST_ID_LEN, PostError, PostId, PostRefused, Posted, STATUS_TTL_MS, StatusPost,
    qualifies,
};
use crate::storage::{Directory, FirstContacts, Mailbox, Quality, Reports, Templates};

fn post_id(bytes: &[u8]) -> Result<PostId, RelayError> {
    PostId::try_from(bytes).map_err(|_| {
        invalid(format!(
            "post_id must be {POST_ID_LEN} bytes, got {}",
            bytes.len()
        ))
    })
}

fn blob_id(bytes: &[u8]) -> Result<BlobId, RelayError> {
    BlobId::try_from(bytes).map_err(|_| invalid("blob_id must be the 16-byte id of an upload"))
}

/// Record a post of the sender's complete blob; its blob now expires with it.
pub(crate) async fn post<S>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::PostStatus,
) -> Result<Reply, RelayError> {
    let poster = device(session)?.account;
    let id = post_id(&request.post_id)?;
    let blob = blob_id(&request.blob_id)?;
    let relay = &session.relay;
    let now = relay.clock.now_ms();
    let posted_at_ms = now;
    let expires_at_ms = now.saturating_add(STATUS_TTL_MS);
    // The blob's expiry is brought forward before the post is written (a
    // post never names a blob that outlives it), and only once the post
    // is known to be accepted (a refused post leaves the blob as it was).
    let recorded = relay
        .status_posts
        .post_after(
            id,
            StatusPost {
                poster,
                blob_id: blob,
                posted_at_ms,
                expires_at_ms,
            },
            relay.blobs.expire_by(blob, poster, expires_at_ms),
        )
        .await
        .map_err(|error| match error {
            PostError::First(error) => RelayError::from(error),
            PostError::Refused(refused) => match refused {
                PostRefused::Storage(error) => RelayError::Storage(error),
                PostRefused::TooMany => RelayError::QuotaExceeded(refused.to_string()),
                PostRefused::IdInUse => invalid(refused.to_string()),
            },
        })?;
    let (Posted::New(kept) | Posted::Again(kept)) = recorded;
    if !kept.live_at(now) {
        return Err(RelayError::StatusNotFound);
    }
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::StatusPosted(wire::StatusPosted {
            post_id: id.to_vec(),
            posted_at_ms: kept.posted_at_ms,
            expires_at_ms: kept.expires_at_ms,
        }),
    )))
}

/// Accept a Status key for one recipient account: a live post of the
/// sender, a control send, a qualifying recipient; then an ordinary send
/// whose copies expire with the post, billed (a business's to a customer,
/// when the rate card prices Status) on its first signed delivery.
pub(crate) async fn send_key<
    S: Directory + Mailbox + Templates + FirstContacts + Quality + Reports,
>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::SendStatusKey,
) -> Result<Reply, RelayError> {
    let poster = device(session)?.account;
    let id = post_id(&request.post_id)?;
    let send = request
        .send
        .ok_or_else(|| invalid("send is missing: the Status key's envelope"))?;
    if send.category != wire::Category::Control as i32 {
        return Err(invalid(
            "a Status key travels as CATEGORY_CONTROL (docs/PROTOCOL.md, Status)",
        ));
    }
    let recipient = account_field("recipient_account", &send.recipient_account)?;
    let relay = session.relay.clone();
    let now = relay.clock.now_ms();
    let post = relay
        .status_posts
        .live(&id, poster, now)
        .ok_or(RelayError::StatusNotFound)?;
    let input = audience(&relay.store, poster, recipient, now).await?;
    qualifies(&input).map_err(|refusal| RelayError::NotASubscriber(refusal.to_string()))?;
    let status_key = super::send::StatusKeySend {
        expires_by_ms: post.expires_at_ms,
    };
    super::send::send_checked(session, request_id, send, Some(status_key)).await
}

/// What the audience rule reads about `recipient` of `poster`'s Status.
async fn audience<S: Directory + Mailbox + FirstContacts>(
    store: &S,
    poster: AccountId,
    recipient: AccountId,
    now_ms: u64,
) -> Result<AudienceInput, RelayError> {
    let poster_record = store.account_record(poster).await?.unwrap_or_default();
    let recipient_record = store
        .account_record(recipient)
        .await?
        .ok_or(RelayError::UnknownAccount)?;
    let poster_kind = policy::kind_of(&poster_record);
    let recipient_kind = policy::kind_of(&recipient_record);
    let consent = if poster_kind == wire::AccountKind::Business {
        store
            .consent(recipient, poster)
            .await?
            .map_or(ConsentCategories::NONE, |c| c.covers_at(now_ms))
    } else {
        ConsentCategories::NONE
    };
    let talked = poster_kind != wire::AccountKind::Business
        && poster != recipient
        && store.have_talked(poster, recipient).await?;
    Ok(AudienceInput {
        poster: poster_kind,
        recipient: recipient_kind,
        own_account: poster == recipient,
        consent,
        talked,
    })
}

/// Delete a post of the sender's, and its blob, before its time.
pub(crate) async fn delete<S>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::DeleteStatus,
) -> Result<Reply, RelayError> {
    let poster = device(session)?.account;
    let id = post_id(&request.post_id)?;
    let relay = &session.relay;
    let now = relay.clock.now_ms();
    let post = relay
        .status_posts
        .live(&id, poster, now)
        .ok_or(RelayError::StatusNotFound)?;
    relay.status_posts.remove(id).await?;
    // The blob goes now too: its expiry brought to now, then collected.
    match relay.blobs.expire_by(post.blob_id, poster, now).await {
        Ok(()) | Err(crate::blobs::BlobError::NotFound(_)) => {}
        Err(error) => return Err(error.into()),
    }
    relay.blobs.expire(now).await?;
    Ok(Reply::Frame(frame::ok(request_id)))
}

/// Most subscribers in one `Subscribers` page (18 bytes each on the
/// wire: 90 KB, well inside a frame).
pub(crate) const MAX_SUBSCRIBERS_PAGE: usize = 5_000;

/// The business's Status subscribers: the customers whose kept consent
/// for it covers the status category now, by account id, one page.
pub(crate) async fn subscribers<S: Directory + Mailbox>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::GetSubscribers,
) -> Result<Reply, RelayError> {
    let business = device(session)?.account;
    let after = match request.after.as_slice() {
        [] => None,
        bytes => Some(account_field("after", bytes)?),
    };
    let limit = match request.limit {
        0 => MAX_SUBSCRIBERS_PAGE,
        n => (n as usize).min(MAX_SUBSCRIBERS_PAGE),
    };
    let relay = &session.relay;
    super::require_business(
        &relay.store,
        business,
        "has Status subscribers; a person's Status goes to the accounts it has a \
         conversation with",
    )
    .await?;
    let now = relay.clock.now_ms();
    let mut subscribed = relay
        .store
        .consents_for(business)
        .await?
        .into_iter()
        .filter(|c| c.covers_at(now).contains(ConsentCategories::STATUS))
        .map(|c| c.customer)
        .filter(|c| after.is_none_or(|after| c.as_bytes() > after.as_bytes()));
    let accounts: Vec<Vec<u8>> = subscribed
        .by_ref()
        .take(limit)
        .map(|a| a.to_vec())
        .collect();
    let more = subscribed.next().is_some();
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::Subscribers(wire::Subscribers { accounts, more }),
    )))
}
