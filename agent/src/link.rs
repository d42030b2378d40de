//! Click-to-chat links for this business: `agent link` (the link and its
//! QR code in the terminal, SVG and PNG files) and `GET /v1/link` (the link
//! and its SVG for the backend to put on a web page). The format and the
//! QR codes are the client library's
//! ([`comptoir_client::click_to_chat`]): customers open the link with
//! `comptoir open LINK`. A link by name is made only for a name the relay
//! says is this business's ([`claimed_name`]).

use std::path::Path;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use comptoir_client::ClientError;
use comptoir_client::click_to_chat::{ChatLink, LinkHandle};
use comptoir_client::hints::shell_word;
use comptoir_protocol::handle::normalize_business_name;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{AppState, authorize, query};
use crate::api_error::{ApiError, ErrorBody};
use crate::config::Config;
use crate::device::{self, DeviceError};
use crate::keys::Scope;

/// What `GET /v1/link` takes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LinkQuery {
    /// Text to prefill in the customer's composer (at most 8192 bytes).
    pub text: Option<String>,
}

/// A click-to-chat link and its QR code.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkBody {
    /// `comptoir://chat/<account id>[?text=…]` (format in docs/PROTOCOL.md).
    pub link: String,
    /// The link's QR code, an SVG document.
    pub svg: String,
}

/// This business's click-to-chat link (by account id) and its QR code.
#[utoipa::path(
    get, path = "/v1/link", tag = "messages",
    params(LinkQuery),
    responses(
        (status = 200, body = LinkBody),
        (status = 400, description = "The text is too long for a link or a QR code", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The key lacks `messages:send`", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn get_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Json<LinkBody>, ApiError> {
    authorize(&state, &headers, Scope::MessagesSend)?;
    let q: LinkQuery = query(&uri)?;
    let link = ChatLink::new(LinkHandle::Account(state.business), q.text.as_deref())
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let svg = link
        .qr_svg()
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    Ok(Json(LinkBody {
        link: link.to_string(),
        svg,
    }))
}

/// `agent link`: the link on the first line, then its QR code for a
/// terminal (light text on a dark background); the SVG and PNG written
/// where asked.
pub fn print(link: &ChatLink, svg: Option<&Path>, png: Option<&Path>) -> Result<String, String> {
    let terminal = link.qr_terminal().map_err(|e| e.to_string())?;
    if let Some(path) = svg {
        let svg = link.qr_svg().map_err(|e| e.to_string())?;
        std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = png {
        let png = link.qr_png().map_err(|e| e.to_string())?;
        std::fs::write(path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(format!("{link}\n{terminal}"))
}

/// Why `agent link --name` made no link.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// Not a name a business could claim.
    #[error("{0}")]
    Invalid(String),
    /// Nobody, or another account, holds the name: a link by it would
    /// reach whoever claims it.
    #[error(
        "the name {name} is not this business's: claim it first with \
         `comptoir --data-dir {device_dir} name claim {name}` (the daemon stopped)"
    )]
    NotClaimed {
        /// The name, normalized.
        name: String,
        /// The daemon's device store, as a shell word.
        device_dir: String,
    },
    /// The device store or the relay failed.
    #[error("{0}")]
    Device(#[from] DeviceError),
}

/// `agent link --name NAME`: the link's handle, once the relay says the
/// name is this business's (as `comptoir business link --name` checks).
/// Opens the device store, so the daemon must be stopped.
pub async fn claimed_name(
    config: &Config,
    passphrase: &str,
    name: &str,
) -> Result<LinkHandle, NameError> {
    let name = normalize_business_name(name).map_err(|e| NameError::Invalid(e.to_string()))?;
    let mut client = device::open(config, passphrase).await?;
    let own = client.account_id();
    client
        .connect(&config.relay)
        .await
        .map_err(DeviceError::from)?;
    let found = client.lookup(&name).await;
    client.close().await.map_err(DeviceError::from)?;
    match found {
        Ok(account) if account == own => Ok(LinkHandle::Name(name)),
        Ok(_) | Err(ClientError::NotFound(_)) => Err(NameError::NotClaimed {
            name,
            device_dir: shell_word(&config.device_dir()),
        }),
        Err(e) => Err(DeviceError::from(e).into()),
    }
}
