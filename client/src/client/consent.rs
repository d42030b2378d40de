//! Consent, from the customer's side: let a business send this account
//! templates of named categories, revoke it, and list what the relay keeps
//! (docs/PROTOCOL.md, "Consent"). Each token is signed by this device and
//! counted per business: a grant or revocation takes the next counter
//! after the one the relay keeps.

use std::time::Duration;

use comptoir_protocol::proto::wire::{GetConsents, SetConsent, client_frame, server_frame};
use comptoir_protocol::{
    AccountId, ConsentCategories, ConsentFields, MAX_CONSENT_LIFETIME_MS, sign_consent,
    verify_consent,
};

use crate::error::{ClientError, Result};
use crate::rule_checks::{self, KnownConsent};

use super::{Client, now_ms, unexpected};

/// A consent of this account for one business, as the relay keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    /// The business.
    pub business: AccountId,
    /// What it may send (empty: revoked).
    pub categories: ConsentCategories,
    /// When it was issued, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// When it stops counting, ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// The pair's counter.
    pub counter: u64,
    /// The device of this account that signed it.
    pub device: u32,
    /// This account blocked the business: revoked by the relay.
    pub revoked_by_block: bool,
}

impl Consent {
    /// What it lets the business send at `now_ms`.
    pub fn covers_at(&self, now_ms: u64) -> ConsentCategories {
        if self.revoked_by_block || now_ms >= self.expires_at_ms {
            ConsentCategories::NONE
        } else {
            self.categories
        }
    }
}

impl Client {
    /// Let `business` send this account templates of `categories` for
    /// `lifetime` (at most two years), outside the 24-hour window (and
    /// marketing at all). Replaces any earlier consent for it.
    pub async fn grant_consent(
        &mut self,
        business: AccountId,
        categories: ConsentCategories,
        lifetime: Duration,
    ) -> Result<Consent> {
        if categories.is_empty() {
            return Err(ClientError::InvalidArgument(
                "name at least one category to consent to (utility, authentication, marketing)"
                    .into(),
            ));
        }
        let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        if lifetime_ms == 0 || lifetime_ms > MAX_CONSENT_LIFETIME_MS {
            return Err(ClientError::InvalidArgument(
                "a consent lasts from a moment to two years (730 days)".into(),
            ));
        }
        self.set_consent(business, categories, lifetime_ms).await
    }

    /// Stop `business` from sending this account templates outside the
    /// 24-hour window (a revocation: a consent with no category).
    pub async fn revoke_consent(&mut self, business: AccountId) -> Result<Consent> {
        self.set_consent(business, ConsentCategories::NONE, 0).await
    }

    /// The consents the relay keeps for this account, by business. Each
    /// one whose signature checks against this account's own device keys
    /// is also recorded for [`crate::rule_checks`] (so a device learns
    /// what another device of the account granted).
    pub async fn consents(&mut self) -> Result<Vec<Consent>> {
        let listed = self.listed_consents().await?;
        let own = self.live().own_devices()?;
        for (consent, signature) in &listed {
            let key = own
                .devices
                .iter()
                .find(|(id, _)| *id == consent.device)
                .map(|(_, key)| *key);
            let fields = ConsentFields {
                customer: self.account.id(),
                business: consent.business,
                device: consent.device,
                categories: consent.categories,
                issued_at_ms: consent.issued_at_ms,
                expires_at_ms: consent.expires_at_ms,
                counter: consent.counter,
            };
            if key.is_some_and(|key| verify_consent(&key, &fields, signature).is_ok()) {
                let categories = if consent.revoked_by_block {
                    ConsentCategories::NONE
                } else {
                    consent.categories
                };
                rule_checks::record_consent(
                    &self.store,
                    &consent.business,
                    KnownConsent {
                        categories,
                        expires_at_ms: consent.expires_at_ms,
                        counter: consent.counter,
                    },
                )?;
            }
        }
        Ok(listed.into_iter().map(|(c, _)| c).collect())
    }

    /// The consents the relay lists, each with its signature.
    async fn listed_consents(&mut self) -> Result<Vec<(Consent, Vec<u8>)>> {
        let body = client_frame::Body::GetConsents(GetConsents {});
        let reply = self.request(body, "the consents").await?;
        let server_frame::Body::Consents(list) = reply else {
            return Err(unexpected("Consents", &reply));
        };
        list.consents
            .into_iter()
            .map(|c| {
                Ok((
                    Consent {
                        business: AccountId::from_bytes(&c.business_account).map_err(|_| {
                            ClientError::UnexpectedFrame("a consent names no business".into())
                        })?,
                        categories: ConsentCategories::from_bits(c.categories).ok_or_else(
                            || {
                                ClientError::UnexpectedFrame(
                                    "a consent with unknown categories".into(),
                                )
                            },
                        )?,
                        issued_at_ms: c.issued_at_ms,
                        expires_at_ms: c.expires_at_ms,
                        counter: c.counter,
                        device: c.device_id,
                        revoked_by_block: c.revoked_by_block,
                    },
                    c.signature,
                ))
            })
            .collect()
    }

    async fn set_consent(
        &mut self,
        business: AccountId,
        categories: ConsentCategories,
        lifetime_ms: u64,
    ) -> Result<Consent> {
        let kept = self
            .listed_consents()
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect::<Vec<_>>()
            .into_iter()
            .find(|c| c.business == business)
            .map_or(0, |c| c.counter);
        let issued_at_ms = now_ms();
        let consent = Consent {
            business,
            categories,
            issued_at_ms,
            expires_at_ms: issued_at_ms.saturating_add(lifetime_ms),
            counter: kept.saturating_add(1),
            device: self.account.device_id(),
            revoked_by_block: false,
        };
        let fields = ConsentFields {
            customer: self.account.id(),
            business,
            device: consent.device,
            categories,
            issued_at_ms,
            expires_at_ms: consent.expires_at_ms,
            counter: consent.counter,
        };
        let signature = sign_consent(self.account.identity(), &fields);
        let body = client_frame::Body::SetConsent(SetConsent {
            business_account: business.to_vec(),
            categories: u32::from(categories.bits()),
            issued_at_ms,
            expires_at_ms: consent.expires_at_ms,
            counter: consent.counter,
            signature: signature.to_vec(),
        });
        match self.request(body, "the consent").await? {
            server_frame::Body::Ok(_) => {}
            other => return Err(unexpected("Ok", &other)),
        }
        rule_checks::record_consent(
            &self.store,
            &business,
            KnownConsent {
                categories,
                expires_at_ms: consent.expires_at_ms,
                counter: consent.counter,
            },
        )?;
        self.store.flush().await?;
        Ok(consent)
    }
}
