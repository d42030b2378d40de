//! Files customers sent, served to logged-in agents as downloads
//! (fetched and served by [`crate::received_files`]).

use axum::extract::{Path, State};
use axum::response::Response;
use comptoir_client::MessageId;

use crate::received_files::{self, FetchError};

use super::session::Session;
use super::{InboxError, InboxState, Result};

/// The link the conversation page shows for a file.
pub fn href(customer: &str, message_id: &str) -> String {
    format!("/inbox/c/{customer}/file/{message_id}")
}

/// `GET /inbox/c/{customer}/file/{message}`: the file, decrypted, as a
/// download (logged-in agents only; the session extractor redirects
/// others to the login page).
pub async fn download(
    State(state): State<InboxState>,
    _session: Session,
    Path((customer, message)): Path<(String, String)>,
) -> Result<Response> {
    let account = super::pages::customer_id(&customer)?;
    let id = MessageId::from_hex(&message).ok_or(InboxError::NotFound)?;
    let row = state
        .db
        .attachment(&customer, &message)?
        .ok_or(InboxError::NotFound)?;
    match received_files::fetch(&state.downloads, state.db.dir(), account, id).await {
        Ok(file) => Ok(received_files::download_response(&row, file)),
        Err(e) => {
            match &e {
                FetchError::Io(_) => tracing::error!(error = %e, "a download's temporary file"),
                _ => tracing::warn!(error = %e, message = %message, "downloading an attachment"),
            }
            Err(InboxError::Unavailable)
        }
    }
}
