//! The relay's directory and block list: phone numbers, business names,
//! lookups, blocks.

use comptoir_protocol::proto::wire::{
    Block, BlockReason, ClaimName, ErrorCode, Lookup, RequestCode, Unblock, VerifyCode,
    client_frame, server_frame,
};
use comptoir_protocol::{AccountId, normalize_business_name};

use crate::error::{ClientError, Result};
use crate::rule_checks;
use crate::store::Tree;

use super::{Client, unexpected};

impl Client {
    /// Ask the relay to send a verification code to `phone` (E.164, such
    /// as `+447700900123`).
    pub async fn request_phone_code(&mut self, phone: &str) -> Result<()> {
        let body = client_frame::Body::RequestCode(RequestCode {
            phone_number: phone.to_string(),
        });
        match self.request(body, "the code request").await? {
            server_frame::Body::Ok(_) => Ok(()),
            other => Err(unexpected("Ok", &other)),
        }
    }

    /// Prove the code sent to `phone` and bind the number to this account;
    /// `discoverable` lets others find the account by the number.
    pub async fn verify_phone(
        &mut self,
        phone: &str,
        code: &str,
        discoverable: bool,
    ) -> Result<()> {
        let body = client_frame::Body::VerifyCode(VerifyCode {
            phone_number: phone.to_string(),
            code: code.to_string(),
            discoverable,
        });
        match self.request(body, "the code check").await? {
            server_frame::Body::Ok(_) => Ok(()),
            other => Err(unexpected("Ok", &other)),
        }
    }

    /// Claim the business name `name` for this account (lowercased; 3 to
    /// 32 characters of a-z, 0-9 and '-'), so customers can find it with
    /// [`Client::lookup`]. First come, first served, one name per account;
    /// claiming the name this account already holds succeeds again.
    /// [`ClientError::InvalidArgument`] for a malformed name; a name held by
    /// another account (or a second name) is [`ClientError::Relay`] with
    /// [`ErrorCode::NameTaken`].
    pub async fn claim_name(&mut self, name: &str) -> Result<()> {
        let name = normalize_business_name(name)
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let body = client_frame::Body::ClaimName(ClaimName { name });
        match self.request(body, "the name claim").await? {
            server_frame::Body::Ok(_) => Ok(()),
            other => Err(unexpected("Ok", &other)),
        }
    }

    /// Find the account behind a discoverable phone number (`+` and
    /// digits) or a business name (any case).
    /// [`ClientError::NotFound`] if none (or not discoverable);
    /// [`ClientError::InvalidArgument`] if `handle` is neither.
    pub async fn lookup(&mut self, handle: &str) -> Result<AccountId> {
        let handle_sent = if handle.starts_with('+') {
            handle.to_string()
        } else {
            normalize_business_name(handle)
                .map_err(|e| ClientError::InvalidArgument(e.to_string()))?
        };
        let body = client_frame::Body::Lookup(Lookup {
            handle: handle_sent,
        });
        match self.request(body, "the lookup").await {
            Ok(server_frame::Body::LookupResult(found)) => {
                Ok(AccountId::from_bytes(&found.account_id)?)
            }
            Ok(other) => Err(unexpected("LookupResult", &other)),
            Err(ClientError::Relay {
                code: ErrorCode::UnknownAccount,
                ..
            }) => Err(ClientError::NotFound(handle.to_string())),
            Err(e) => Err(e),
        }
    }

    /// The business a click-to-chat link names, asked of the relay: by its
    /// claimed name ([`Self::lookup`]) or by its account id
    /// ([`Self::check_account`]). Check it with [`Self::business`] before
    /// showing it.
    pub async fn resolve_link(
        &mut self,
        link: &crate::click_to_chat::ChatLink,
    ) -> Result<AccountId> {
        match &link.handle {
            crate::click_to_chat::LinkHandle::Name(name) => self.lookup(name).await,
            crate::click_to_chat::LinkHandle::Account(id) => {
                self.check_account(*id).await?;
                Ok(*id)
            }
        }
    }

    /// Check with the relay that the account `id` exists (and pin its
    /// keys, as a first message would): [`ClientError::NoSuchAccount`] if
    /// the relay knows none, so nothing is ever queued for it.
    pub async fn check_account(&mut self, id: AccountId) -> Result<()> {
        match self.refresh_peer(id).await {
            Ok(_) => Ok(()),
            Err(ClientError::Relay {
                code: ErrorCode::UnknownAccount,
                ..
            }) => Err(ClientError::NoSuchAccount(id)),
            Err(e) => Err(e),
        }
    }

    /// Ask the relay to refuse every message from `peer` to this account.
    pub async fn block(&mut self, peer: AccountId) -> Result<()> {
        self.block_for(peer, BlockReason::Unspecified).await
    }

    /// [`Self::block`], saying why; a customer's reason for blocking a
    /// business counts towards the business's quality rating.
    pub async fn block_for(&mut self, peer: AccountId, reason: BlockReason) -> Result<()> {
        let body = client_frame::Body::Block(Block {
            account_id: peer.to_vec(),
            reason: reason as i32,
        });
        match self.request(body, "the block").await? {
            server_frame::Body::Ok(_) => {}
            other => return Err(unexpected("Ok", &other)),
        }
        self.store.put(Tree::Blocked, peer.as_bytes(), &[])?;
        crate::requests::forget(&self.store, &peer)?;
        // The relay revokes this account's consent for it (same counter).
        if let Some(known) = rule_checks::known_consent(&self.store, &peer)? {
            rule_checks::record_consent(
                &self.store,
                &peer,
                rule_checks::KnownConsent {
                    categories: comptoir_protocol::ConsentCategories::NONE,
                    ..known
                },
            )?;
        }
        self.store.flush().await
    }

    /// Lift a block.
    pub async fn unblock(&mut self, peer: AccountId) -> Result<()> {
        let body = client_frame::Body::Unblock(Unblock {
            account_id: peer.to_vec(),
        });
        match self.request(body, "the unblock").await? {
            server_frame::Body::Ok(_) => {}
            other => return Err(unexpected("Ok", &other)),
        }
        self.store.remove(Tree::Blocked, peer.as_bytes())?;
        self.store.flush().await
    }

    /// Whether this device blocked `peer` (as acknowledged by the relay).
    pub fn is_blocked(&self, peer: &AccountId) -> Result<bool> {
        self.store.contains(Tree::Blocked, peer.as_bytes())
    }
}
