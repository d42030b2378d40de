//! The address book between one account's devices: a newly linked device
//! asks its account's other devices for it ([`Client::finish_link`] sends
//! a `ContactsRequest`), and a device that hears the request sends its
//! contacts back, end-to-end encrypted like every message, in parts of
//! [`CONTACTS_PER_MESSAGE`]. Both travel as control traffic through the
//! outbox of control messages ([`crate::control_outbox`]) and are honoured
//! only from this same account. A device that receives contacts adds the
//! names it lacks and never re-points a name it has.

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{
    ContactsRequest, ContactsSync, Content, SyncedContact, content,
};

use crate::contacts::{self, Added};
use crate::control_outbox::{self, QueuedControl};
use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::messages::MessageId;

use super::{Client, now_ms};

/// Most contacts one `ContactsSync` carries (a few kilobytes each way
/// below the plaintext limit); a longer book takes several messages.
pub const CONTACTS_PER_MESSAGE: usize = 200;

/// `body` as a control content to this account's other devices.
fn control_content(id: MessageId, at_ms: u64, body: content::Body) -> Content {
    Content {
        message_id: id.0.to_vec(),
        sent_at_ms: at_ms,
        body: Some(body),
        labels: None,
        franking_key: Vec::new(),
        padding: Vec::new(),
    }
}

impl Client {
    /// Queue a request for the address book to this account's other
    /// devices (not flushed; `None` when there are none).
    pub(super) fn queue_contacts_request(&self) -> Result<Option<QueuedControl>> {
        let live = self.live();
        let own = self.account.id();
        if live.target_devices(own, &live.own_devices()?).is_empty() {
            return Ok(None);
        }
        let (id, now) = (MessageId::generate(), now_ms());
        let content = control_content(id, now, content::Body::ContactsRequest(ContactsRequest {}));
        control_outbox::put(&self.store, own, id, content, now).map(Some)
    }

    /// Another device asked for the address book: queue it for this
    /// account's other devices (with the delivery's records; sent once it
    /// is acknowledged). Only this account's own devices are answered.
    pub(super) fn answer_contacts_request(
        &mut self,
        from: AccountId,
        device: u32,
    ) -> Result<Option<Event>> {
        if from != self.account.id() {
            return Ok(Some(Event::Warning(format!(
                "{from} asked for this account's contacts; ignored"
            ))));
        }
        if device == self.account.device_id() {
            return Ok(None);
        }
        let book = contacts::list(&self.store)?;
        if book.is_empty() {
            return Ok(None);
        }
        let own = self.account.id();
        let now = now_ms();
        for part in book.chunks(CONTACTS_PER_MESSAGE) {
            let id = MessageId::generate();
            let sync = ContactsSync {
                contacts: part
                    .iter()
                    .map(|c| SyncedContact {
                        name: c.name.clone(),
                        account: c.account.to_vec(),
                    })
                    .collect(),
            };
            let content = control_content(id, now, content::Body::ContactsSync(sync));
            control_outbox::put(&self.store, own, id, content, now)?;
        }
        Ok(Some(Event::ContactsShared { count: book.len() }))
    }

    /// Another device of this account sent contacts: add the names this
    /// device lacks. A malformed entry, or one past
    /// [`CONTACTS_PER_MESSAGE`], is skipped; a name that already names
    /// another account is kept as it is.
    pub(super) fn apply_contacts_sync(
        &mut self,
        from: AccountId,
        sync: &ContactsSync,
    ) -> Result<Option<Event>> {
        if from != self.account.id() {
            return Ok(Some(Event::Warning(format!(
                "{from} sent contacts for this account's address book; ignored"
            ))));
        }
        let (mut added, mut kept) = (0, 0);
        for entry in sync.contacts.iter().take(CONTACTS_PER_MESSAGE) {
            let Ok(account) = AccountId::from_bytes(&entry.account) else {
                continue;
            };
            match contacts::add(&self.store, &entry.name, account, false) {
                Ok(Added::New) => added += 1,
                Ok(Added::Unchanged | Added::Replaced { .. }) => {}
                Err(ClientError::ContactExists { .. }) => kept += 1,
                Err(ClientError::InvalidArgument(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(Event::ContactsSynced { added, kept }))
    }
}
