//! Verified businesses, from both sides: a business publishes its profile
//! (signed by its account key); anyone reads a business's profile and
//! learns whether to show it as verified. That decision is the protocol's
//! one function ([`comptoir_protocol::business::verified_name`]): the
//! operator's certificate must check against the operator key this client
//! pinned and name the account key this client pinned for the business.
//! Every screen shows [`BusinessView::shown_name`], never a self-chosen
//! name of an unverified business.

use comptoir_protocol::AccountId;
use comptoir_protocol::business::{
    BusinessProfile, NotVerified, Verification, sign_profile, verified_name, verify_profile,
    verify_revocation,
};
use comptoir_protocol::business_wire::{certificate_from_wire, revocation_from_wire};
use comptoir_protocol::proto::wire::{GetProfile, PublishProfile, client_frame, server_frame};

use crate::error::{ClientError, Result};
use crate::peers;

use super::{Client, now_ms, unexpected};

/// What this client knows of a business, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessView {
    /// The business's account.
    pub account: AccountId,
    /// Its published profile, if it published one signed by the account
    /// key this client pinned for it.
    pub profile: Option<BusinessProfile>,
    /// Whether to show the verified mark, and the certified name.
    pub verification: Verification,
}

impl BusinessView {
    /// The name to show: the certified display name when verified, the
    /// given handle (a contact name, a claimed business name, or the
    /// account id) otherwise.
    pub fn shown_name<'a>(&'a self, handle: &'a str) -> &'a str {
        self.verification.shown_name(handle)
    }
}

impl Client {
    /// Publish this business account's profile, signed with the account
    /// key (the first device holds it). The operator certifies it through
    /// its admin tool; publishing another profile later takes the verified
    /// mark away until the operator certifies the new one.
    pub async fn publish_profile(&mut self, profile: &BusinessProfile) -> Result<()> {
        if profile.account != self.account_id() {
            return Err(ClientError::InvalidArgument(
                "the profile's account must be this account".into(),
            ));
        }
        let key = self
            .account
            .account_key()
            .ok_or(ClientError::NotPrimaryDevice)?;
        let signature = sign_profile(key, profile)
            .map_err(|e| ClientError::InvalidArgument(format!("the profile breaks a rule: {e}")))?;
        let profile_json = serde_json::to_string(profile)
            .map_err(|e| ClientError::InvalidArgument(format!("the profile: {e}")))?;
        let reply = self
            .request(
                client_frame::Body::PublishProfile(PublishProfile {
                    profile_json,
                    signature: signature.to_vec(),
                }),
                "publishing the profile",
            )
            .await?;
        match reply {
            server_frame::Body::Ok(_) => Ok(()),
            other => Err(unexpected("Ok", &other)),
        }
    }

    /// A business's profile and whether to show it as verified, checked
    /// against the pinned operator key and the business's pinned account
    /// key (pinned now from its signed device list if this client never
    /// saw the account). The result is kept for [`Self::known_business`].
    pub async fn business(&mut self, account: AccountId) -> Result<BusinessView> {
        let (view, valid_until_ms) = self.check_business(account).await?;
        crate::business_views::save(&self.store, &view, valid_until_ms, now_ms())?;
        self.store.flush().await?;
        Ok(view)
    }

    /// The view of `account` as [`Self::business`] last checked it, read
    /// offline: `None` if it was never checked. A verified view reads as
    /// expired once its certificate has; a revocation since the last check
    /// is not known here.
    pub fn known_business(&self, account: &AccountId) -> Result<Option<BusinessView>> {
        crate::business_views::load(&self.store, account, now_ms())
    }

    /// The 24-hour window `customer` gave this business account, from the
    /// relay's accept time of the customer's last conversation message
    /// this device received (read offline).
    pub fn window(&self, customer: &AccountId) -> Result<crate::rule_checks::Window> {
        crate::rule_checks::window(&self.store, customer)
    }

    /// [`Self::business`] without keeping the result; also until when a
    /// verified result holds (its certificate's expiry; 0 otherwise).
    async fn check_business(&mut self, account: AccountId) -> Result<(BusinessView, u64)> {
        if peers::load(&self.store, &account)?.is_none() {
            self.refresh_peer(account).await?;
        }
        let pinned = peers::load(&self.store, &account)?
            .ok_or(ClientError::UnknownPeer(account))?
            .devices
            .account_key;
        let reply = self
            .request(
                client_frame::Body::GetProfile(GetProfile {
                    account: account.to_vec(),
                }),
                "the business profile",
            )
            .await?;
        let server_frame::Body::Profile(found) = reply else {
            return Err(unexpected("Profile", &reply));
        };
        let not = |reason| Verification::NotVerified(reason);
        if found.profile_json.is_empty() {
            return Ok((
                BusinessView {
                    account,
                    profile: None,
                    verification: not(NotVerified::NoCertificate),
                },
                0,
            ));
        }
        // A profile the business did not sign (the relay's, say) is not
        // shown at all.
        let profile = serde_json::from_str::<BusinessProfile>(&found.profile_json)
            .ok()
            .filter(|p| {
                p.account == account && verify_profile(&pinned, p, &found.signature).is_ok()
            });
        let Some(profile) = profile else {
            return Ok((
                BusinessView {
                    account,
                    profile: None,
                    verification: not(NotVerified::ProfileMismatch),
                },
                0,
            ));
        };
        let operator = self.operator_key()?;
        let mut valid_until_ms = 0;
        let verification = match (&found.certificate, operator) {
            (None, _) => not(NotVerified::NoCertificate),
            (Some(_), None) => not(NotVerified::NoOperatorKey),
            (Some(record), Some(operator)) => match certificate_from_wire(record) {
                Err(_) => not(NotVerified::BadSignature),
                Ok((certificate, signature)) => {
                    let revoked = found
                        .revocation
                        .as_ref()
                        .and_then(|r| revocation_from_wire(r).ok())
                        .is_some_and(|(revocation, signature)| {
                            verify_revocation(&operator, &revocation, &signature).is_ok()
                                && revocation.revokes(&certificate)
                        });
                    valid_until_ms = certificate.expires_at_ms;
                    verified_name(
                        &certificate,
                        &signature,
                        &operator,
                        &pinned,
                        &profile,
                        now_ms(),
                        revoked,
                    )
                }
            },
        };
        Ok((
            BusinessView {
                account,
                profile: Some(profile),
                verification,
            },
            valid_until_ms,
        ))
    }
}
