//! Connections whose other end vanished without a word (a laptop put to
//! sleep, a network gone) end within [`UNACKED_LIMIT`] of the daemon's
//! next write to them, instead of when TCP gives up retransmitting (about
//! 15 minutes on Linux). What matters is the inbox's live updates: an
//! agent's presence lasts as long as her page's stream is open, and the
//! stream writes every 15 s, so a vanished page stops counting for
//! automatic assignment within about 45 s.
//!
//! The limit is TCP's user timeout (`TCP_USER_TIMEOUT`), set on the
//! listening socket: the connections it accepts inherit it. It applies
//! to every accepted connection: on Linux a client that keeps its receive
//! window shut (stops reading) for as long, with more to send to it, is
//! dropped too. On systems without it, nothing is set.

use std::time::Duration;

use tokio::net::TcpListener;

/// How long data the daemon sent may stay unacknowledged by the other end
/// before the connection is dropped.
pub const UNACKED_LIMIT: Duration = Duration::from_secs(30);

/// Make every connection `listener` accepts from now on end once data
/// sent on it stays unacknowledged for [`UNACKED_LIMIT`].
pub fn end_connections_to_vanished_peers(listener: &TcpListener) -> std::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket2::SockRef::from(listener).set_tcp_user_timeout(Some(UNACKED_LIMIT))?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = listener;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit set on the listener is the one its accepted connections
    /// have: what makes setting it once enough.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn accepted_connections_inherit_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        end_connections_to_vanished_peers(&listener).expect("set");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let _client = client.expect("connect");
        let (accepted, _) = accepted.expect("accept");
        let limit = socket2::SockRef::from(&accepted)
            .tcp_user_timeout()
            .expect("read the limit");
        assert_eq!(limit, Some(UNACKED_LIMIT));
    }
}
