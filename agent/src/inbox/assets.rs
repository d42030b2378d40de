//! The inbox's script and style sheet, built into the binary (no CDN, no
//! files to deploy), served with their content types and cached briefly.

use axum::http::header;
use axum::response::IntoResponse;

/// The script: live updates and keyboard shortcuts (pages work without it).
pub const SCRIPT: &str = include_str!("../../assets/inbox.js");
/// The style sheet: readable from a phone to a desktop.
pub const STYLE: &str = include_str!("../../assets/inbox.css");

/// `GET /inbox/assets/inbox.js`.
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        SCRIPT,
    )
}

/// `GET /inbox/assets/inbox.css`.
pub async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLE,
    )
}
