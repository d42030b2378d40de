//! Consent requests (docs/PROTOCOL.md, "Consent requests"): a verified
//! business that was given this customer's phone number asks, through the
//! relay, to send templates of named categories for a purpose from a
//! fixed list. The customer lists them ([`Client::consent_requests`]; new
//! ones also arrive as [`Event::ConsentRequested`]) and allows (a signed
//! consent token, then the answer) or refuses (told to the relay only).
//! The business side asks ([`Client::request_consent`]) and reads which
//! requests were allowed, and by which account
//! ([`Client::consent_answers`]).

use std::time::Duration;

use comptoir_protocol::proto::wire::{
    AnswerConsentRequest, ConsentPurpose, ConsentRequestEntry, GetConsentAnswers,
    GetConsentRequests, RequestConsent, client_frame, server_frame,
};
use comptoir_protocol::{AccountId, ConsentCategories};

use crate::error::{ClientError, Result};
use crate::event::Event;

use super::{Client, unexpected};

/// A business's request for this customer's consent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentRequest {
    /// The relay's id for it.
    pub id: [u8; 16],
    /// The business asking (show it with [`Client::business`]).
    pub business: AccountId,
    /// What it asks to send.
    pub categories: ConsentCategories,
    /// Why, from the fixed list.
    pub purpose: ConsentPurpose,
    /// When it asked (the relay's clock).
    pub requested_at_ms: u64,
}

/// A consent request a customer allowed, as its business reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentAnswer {
    /// The business's reference from [`Client::request_consent`].
    pub reference: [u8; 16],
    /// The customer's account: the business may now write to it.
    pub customer: AccountId,
    /// When the customer allowed.
    pub answered_at_ms: u64,
}

/// How a purpose reads in a sentence ("… asks to send you: boarding
/// passes and flight updates").
pub fn purpose_text(purpose: ConsentPurpose) -> &'static str {
    match purpose {
        ConsentPurpose::OrderUpdates => "order updates",
        ConsentPurpose::DeliveryUpdates => "delivery updates",
        ConsentPurpose::BoardingPassAndFlightUpdates => "boarding passes and flight updates",
        ConsentPurpose::AppointmentReminders => "appointment reminders",
        ConsentPurpose::AccountSecurityCodes => "account security codes",
        ConsentPurpose::Unspecified => "unspecified updates",
    }
}

/// A listed request, or `None` if the relay sent something malformed.
pub(super) fn request_from(entry: &ConsentRequestEntry) -> Option<ConsentRequest> {
    Some(ConsentRequest {
        id: entry.request_id.as_slice().try_into().ok()?,
        business: AccountId::from_bytes(&entry.business_account).ok()?,
        categories: ConsentCategories::from_bits(entry.categories).filter(|c| !c.is_empty())?,
        purpose: ConsentPurpose::try_from(entry.purpose)
            .ok()
            .filter(|p| *p != ConsentPurpose::Unspecified)?,
        requested_at_ms: entry.requested_at_ms,
    })
}

impl Client {
    /// This customer's pending consent requests.
    pub async fn consent_requests(&mut self) -> Result<Vec<ConsentRequest>> {
        let reply = self
            .request(
                client_frame::Body::GetConsentRequests(GetConsentRequests {}),
                "the consent requests",
            )
            .await?;
        let server_frame::Body::ConsentRequests(list) = reply else {
            return Err(unexpected("ConsentRequests", &reply));
        };
        Ok(list.requests.iter().filter_map(request_from).collect())
    }

    /// Answer a consent request. Allowing grants the business a consent
    /// for the categories it asked, for `lifetime` (a token signed by this
    /// device, as [`Client::grant_consent`]), then tells the relay, which
    /// shows the business this account. Refusing tells the relay only:
    /// the business cannot ask again for 30 days.
    pub async fn answer_consent_request(
        &mut self,
        request: &ConsentRequest,
        allow: bool,
        lifetime: Duration,
    ) -> Result<()> {
        if allow {
            self.grant_consent(request.business, request.categories, lifetime)
                .await?;
        }
        let reply = self
            .request(
                client_frame::Body::AnswerConsentRequest(AnswerConsentRequest {
                    request_id: request.id.to_vec(),
                    allow,
                }),
                "answering the consent request",
            )
            .await?;
        match reply {
            server_frame::Body::Ok(_) => Ok(()),
            other => Err(unexpected("Ok", &other)),
        }
    }

    /// Ask, as a verified business, for the consent of whoever holds
    /// `phone_number` (E.164). The relay answers the same way whether or
    /// not the number is known; an allowance shows up in
    /// [`Self::consent_answers`] under `reference`.
    pub async fn request_consent(
        &mut self,
        phone_number: &str,
        categories: ConsentCategories,
        purpose: ConsentPurpose,
        reference: [u8; 16],
    ) -> Result<()> {
        if categories.is_empty() || purpose == ConsentPurpose::Unspecified {
            return Err(ClientError::InvalidArgument(
                "name at least one category and a purpose".into(),
            ));
        }
        let reply = self
            .request(
                client_frame::Body::RequestConsent(RequestConsent {
                    phone_number: phone_number.to_owned(),
                    categories: u32::from(categories.bits()),
                    purpose: purpose as i32,
                    reference: reference.to_vec(),
                }),
                "the consent request",
            )
            .await?;
        match reply {
            server_frame::Body::Ok(_) => Ok(()),
            other => Err(unexpected("Ok", &other)),
        }
    }

    /// The consent requests of this business that customers allowed.
    pub async fn consent_answers(&mut self) -> Result<Vec<ConsentAnswer>> {
        let reply = self
            .request(
                client_frame::Body::GetConsentAnswers(GetConsentAnswers {}),
                "the consent answers",
            )
            .await?;
        let server_frame::Body::ConsentAnswers(list) = reply else {
            return Err(unexpected("ConsentAnswers", &reply));
        };
        Ok(list
            .answers
            .iter()
            .filter_map(|a| {
                Some(ConsentAnswer {
                    reference: a.reference.as_slice().try_into().ok()?,
                    customer: AccountId::from_bytes(&a.customer_account).ok()?,
                    answered_at_ms: a.answered_at_ms,
                })
            })
            .collect())
    }

    /// A pushed consent request, as an event.
    pub(super) fn consent_requests_pushed(&mut self, entries: &[ConsentRequestEntry]) {
        for entry in entries {
            match request_from(entry) {
                Some(request) => self.events.push_back(Event::ConsentRequested(request)),
                None => self.events.push_back(Event::Warning(
                    "the relay pushed a consent request this client cannot read".into(),
                )),
            }
        }
    }
}
