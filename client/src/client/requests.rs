//! Message requests, from the user's side (see [`crate::requests`]): list
//! them, accept one (its messages become an ordinary conversation, read
//! receipts included), or delete one (its history goes; a later message
//! is a request again). Blocking the sender also drops its request.

use comptoir_protocol::AccountId;

use crate::error::Result;
use crate::requests;

use super::Client;

impl Client {
    /// Accounts whose messages wait as requests, with when the first
    /// arrived (this device's clock), oldest first.
    pub fn message_requests(&self) -> Result<Vec<(AccountId, u64)>> {
        requests::pending(&self.store)
    }

    /// Accept `peer`'s request: from now on its messages are an ordinary
    /// conversation (and [`Client::mark_read`] tells it they were read).
    pub async fn accept_request(&mut self, peer: AccountId) -> Result<()> {
        requests::accept(&self.store, &peer)?;
        self.store.flush().await
    }

    /// Delete `peer`'s request and what it sent; a later message from it
    /// is a request again.
    pub async fn delete_request(&mut self, peer: AccountId) -> Result<()> {
        requests::delete(&self.store, &peer)?;
        self.store.flush().await
    }
}
