//! Approved templates (docs/PROTOCOL.md, "Templates"): the business submits
//! templates, lists its own with their status, and sends instances of the
//! approved ones; the customer fetches and caches the templates its
//! template messages name (checked in `receive` with
//! [`crate::template_cache::check_instance`]) and answers with a quick
//! reply.

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{TemplateParameter, content};
use comptoir_protocol::proto::wire::{
    Category, GetTemplates, SubmitTemplate, TemplateEntry, TemplateStatus, client_frame,
    server_frame,
};
use comptoir_protocol::template::{Template, TemplateId, build_instance, quick_reply};

use crate::error::{ClientError, Result};
use crate::messages::{self, MessageId};
use crate::outgoing_bodies::OutgoingBody;
use crate::template_cache::{self, CachedTemplate};

use super::{Client, now_ms, unexpected};

/// A template of a business as the relay lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateInfo {
    /// Its id.
    pub template_id: TemplateId,
    /// The template as submitted.
    pub template: Template,
    /// Where it stands with the operator (pending and rejected ones are
    /// listed to the business itself only).
    pub status: TemplateStatus,
    /// Why the operator rejected it (rejected templates only).
    pub reason: String,
}

impl Client {
    /// Submit `template` (its `business` must be this account) for the
    /// operator's review: its id and status. Checked here first; an
    /// invalid template is [`ClientError::InvalidTemplate`] and nothing is
    /// sent. Submitting the same template again changes nothing.
    pub async fn submit_template(
        &mut self,
        template: &Template,
    ) -> Result<(TemplateId, TemplateStatus)> {
        if template.business != self.account_id() {
            return Err(ClientError::InvalidArgument(
                "the template's business must be this account".into(),
            ));
        }
        let id = template.template_id()?;
        let template_json = serde_json::to_string(template).map_err(|_| {
            ClientError::InvalidArgument("the template cannot be written as JSON".into())
        })?;
        let reply = self
            .request(
                client_frame::Body::SubmitTemplate(SubmitTemplate { template_json }),
                "the template submission",
            )
            .await?;
        let server_frame::Body::TemplateSubmitted(submitted) = reply else {
            return Err(unexpected("TemplateSubmitted", &reply));
        };
        if submitted.template_id != id.to_hex() {
            return Err(ClientError::UnexpectedFrame(
                "the relay answered with another template id".into(),
            ));
        }
        Ok((id, submitted.status()))
    }

    /// The templates of `business` the relay lists: approved and revoked
    /// ones for anyone, also pending and rejected ones (with the reason)
    /// when `business` is this account. Entries whose JSON does not parse
    /// or whose id is not their template's are left out.
    pub async fn templates_of(&mut self, business: AccountId) -> Result<Vec<TemplateInfo>> {
        let entries = self.get_templates(business, "").await?;
        Ok(entries
            .into_iter()
            .filter_map(|entry| {
                let template: Template = serde_json::from_str(&entry.template_json).ok()?;
                let template_id = template.template_id().ok()?;
                (template_id.to_hex() == entry.template_id).then(|| TemplateInfo {
                    template_id,
                    template,
                    status: entry.status(),
                    reason: entry.reason,
                })
            })
            .collect())
    }

    /// This account's own templates with their status and rejection
    /// reasons ([`Self::templates_of`] this account).
    pub async fn own_templates(&mut self) -> Result<Vec<TemplateInfo>> {
        self.templates_of(self.account_id()).await
    }

    /// Send `customer` an instance of this account's approved template
    /// `template_id` with `parameters`: checked here against the approved
    /// template (an invalid instance is [`ClientError::InvalidInstance`]
    /// and nothing is sent), then sent under the approved category and the
    /// template id, labels bound, through the outbox like any message (the
    /// history keeps the rendered text). A template the relay does not list
    /// as approved is [`ClientError::TemplateNotApproved`].
    pub async fn send_template(
        &mut self,
        customer: AccountId,
        template_id: &TemplateId,
        parameters: Vec<TemplateParameter>,
    ) -> Result<MessageId> {
        let me = self.account_id();
        let mut cached = template_cache::get(&self.store, template_id)?;
        let usable = |c: &Option<CachedTemplate>| {
            c.as_ref().is_some_and(|c| {
                !c.is_stale(now_ms()) && c.entry.status() == TemplateStatus::Approved
            })
        };
        if !usable(&cached) && self.is_connected() {
            self.refresh_template(me, template_id).await?;
            cached = template_cache::get(&self.store, template_id)?;
        }
        let not_approved = || ClientError::TemplateNotApproved(template_id.to_hex());
        let Some(cached) = cached else {
            return Err(not_approved());
        };
        let template = cached.template().ok_or_else(not_approved)?;
        if cached.entry.status() != TemplateStatus::Approved
            || template.business != me
            || template.template_id()? != *template_id
        {
            return Err(not_approved());
        }
        let instance = build_instance(&template, parameters)?;
        let category: Category = template.category.into();
        let rendered =
            comptoir_protocol::template::render_instance(&template, category, &instance)?;
        let text = template_cache::rendered_text(&rendered);
        let body = OutgoingBody {
            body: content::Body::Template(instance),
            category,
            template_id: template_id.to_hex(),
        };
        let sent = self.live().send_message(customer, &text, Some(body)).await;
        self.note_connection(&sent);
        sent
    }

    /// Answer the template message `message_id` from `business` with its
    /// quick-reply button `button_index` (from 0, among all its buttons):
    /// the business receives which button, as a conversation message. The
    /// message must be one this client received and checked
    /// ([`crate::Event::Template`]); otherwise
    /// [`ClientError::NotATemplateMessage`]; a button that is not a quick
    /// reply is [`ClientError::InvalidReply`]. Nothing is sent on error.
    pub async fn reply_button(
        &mut self,
        business: AccountId,
        message_id: MessageId,
        button_index: u32,
    ) -> Result<MessageId> {
        let not_template = || ClientError::NotATemplateMessage(message_id.to_string());
        let incoming =
            messages::get(&self.store, &business, &message_id)?.is_some_and(|m| !m.outgoing);
        let template_id = template_cache::template_of_message(&self.store, &business, &message_id)?
            .filter(|_| incoming)
            .ok_or_else(not_template)?;
        let template = template_cache::get(&self.store, &template_id)?
            .and_then(|cached| cached.template())
            .ok_or_else(not_template)?;
        let reply = quick_reply(&template, &message_id.0, button_index)?;
        let text = reply.text.clone();
        let body = OutgoingBody {
            body: content::Body::ButtonReply(reply),
            category: Category::Conversation,
            template_id: String::new(),
        };
        let sent = self.live().send_message(business, &text, Some(body)).await;
        self.note_connection(&sent);
        sent
    }

    /// The approved template of the message `id` received from `peer`, if
    /// it was a template message this client checked (from the cache, so
    /// `history` can show its buttons numbered as [`Event::Template`] did).
    ///
    /// [`Event::Template`]: crate::Event::Template
    pub fn template_of_message(
        &self,
        peer: &AccountId,
        id: &MessageId,
    ) -> Result<Option<Template>> {
        let Some(template_id) = template_cache::template_of_message(&self.store, peer, id)? else {
            return Ok(None);
        };
        Ok(template_cache::get(&self.store, &template_id)?.and_then(|cached| cached.template()))
    }

    /// The entry of `business`'s template `id`, from the cache while it is
    /// fresh, otherwise fetched (when connected) and cached.
    pub(super) async fn cached_template(
        &mut self,
        business: AccountId,
        id: &TemplateId,
    ) -> Result<Option<CachedTemplate>> {
        let cached = template_cache::get(&self.store, id)?;
        if cached.as_ref().is_some_and(|c| !c.is_stale(now_ms())) || !self.is_connected() {
            return Ok(cached);
        }
        self.refresh_template(business, id).await?;
        template_cache::get(&self.store, id)
    }

    /// Fetch `business`'s template `id` from the relay and record the
    /// answer in the cache (a refusal counts as "no such template").
    pub(super) async fn refresh_template(
        &mut self,
        business: AccountId,
        id: &TemplateId,
    ) -> Result<()> {
        let hex = id.to_hex();
        let fetched = match self.get_templates(business, &hex).await {
            Ok(entries) => entries.into_iter().find(|e| e.template_id == hex),
            Err(ClientError::Relay { .. }) => None,
            Err(e) => return Err(e),
        };
        let operator = crate::operator_pin::pinned(&self.store)?;
        template_cache::update(&self.store, id, fetched, operator.as_ref(), now_ms())?;
        self.store.flush().await
    }

    async fn get_templates(
        &mut self,
        business: AccountId,
        template_id: &str,
    ) -> Result<Vec<TemplateEntry>> {
        let reply = self
            .request(
                client_frame::Body::GetTemplates(GetTemplates {
                    business_account: business.to_vec(),
                    template_id: template_id.to_owned(),
                }),
                "the templates",
            )
            .await?;
        let server_frame::Body::Templates(templates) = reply else {
            return Err(unexpected("Templates", &reply));
        };
        Ok(templates.templates)
    }
}
