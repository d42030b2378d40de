//! The small operations listener: `GET /healthz` and `GET /metrics`
//! (Prometheus text), minimal HTTP/1.1 over tokio, one request per
//! connection. Kept apart from the WebSocket port so it can stay private.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// Largest request head read; anything longer is refused.
const MAX_REQUEST: usize = 8 * 1024;
/// Time allowed to send the request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve `/healthz` and `/metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &metrics).await {
                tracing::debug!(%error, "metrics request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if buf.len() > MAX_REQUEST {
                return Ok(false);
            }
        }
    })
    .await
    .unwrap_or(Ok(false))?;
    let line = buf
        .split(|&b| b == b'\r')
        .next()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (status, content_type, body) = match (head_complete, parts.next(), parts.next()) {
        (true, Some("GET"), Some("/healthz")) if metrics.storage_failed() => (
            "503 Service Unavailable",
            "text/plain",
            "storage fails to write; sends are refused until a retry succeeds: check the disk (space, file descriptors) and the log\n"
                .to_owned(),
        ),
        (true, Some("GET"), Some("/healthz")) => ("200 OK", "text/plain", "ok\n".to_owned()),
        (true, Some("GET"), Some("/metrics")) => {
            ("200 OK", "text/plain; version=0.0.4", metrics.render())
        }
        (true, Some("GET"), Some(_)) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => ("400 Bad Request", "text/plain", "bad request\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn healthz_turns_unavailable_once_storage_failed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let server = tokio::spawn(serve(listener, metrics.clone()));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200 OK"));
        assert!(
            get(addr, "/metrics")
                .await
                .contains("comptoir_storage_healthy 1")
        );
        metrics.set_storage_failed();
        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 503"), "{health}");
        assert!(health.contains("refused until a retry succeeds"));
        assert!(
            get(addr, "/metrics")
                .await
                .contains("comptoir_storage_healthy 0")
        );
        server.abort();
    }

    #[tokio::test]
    async fn healthz_is_ok_again_once_an_injected_fd_exhaustion_clears() {
        use crate::storage::mail_log::tests::faults;
        use crate::storage::mail_log::{LogOptions, MailLog};
        use crate::storage::{Enqueued, NewMessage};
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let server = tokio::spawn(serve(listener, metrics.clone()));
        let log = MailLog::open(dir.path(), LogOptions::default(), metrics.clone()).unwrap();
        let account = comptoir_protocol::AccountId::from_bytes(&[7; 16]).unwrap();
        let message = |id: u8| NewMessage {
            effects: Default::default(),
            sender: account,
            sender_device: 1,
            recipient: account,
            message_id: [id; 16],
            server_timestamp_ms: 1,
            expires_at_ms: crate::state::now_ms() + 600_000,
            copies: vec![(1, vec![id; 10])],
        };
        faults::no_fds(dir.path(), true);
        assert!(log.enqueue(message(1), 10).await.is_err());
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
        faults::no_fds(dir.path(), false);
        loop {
            let changed = metrics.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !metrics.storage_failed() {
                break;
            }
            changed.await;
        }
        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");
        assert!(matches!(
            log.enqueue(message(2), 10).await.unwrap(),
            Enqueued::Stored { .. }
        ));
        log.close().await.unwrap();
        server.abort();
    }

    /// Item 3: a full disk turns `/healthz` to 503 while sends are refused
    /// (acks still work), and back to 200 in the same process once space
    /// is freed.
    #[tokio::test]
    async fn healthz_is_ok_again_once_an_injected_full_disk_clears() {
        use crate::storage::mail_log::tests::faults;
        use crate::storage::mail_log::{LogOptions, MailLog};
        use crate::storage::{Enqueued, NewMessage, StorageError};
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let server = tokio::spawn(serve(listener, metrics.clone()));
        let log = MailLog::open(dir.path(), LogOptions::default(), metrics.clone()).unwrap();
        let account = comptoir_protocol::AccountId::from_bytes(&[7; 16]).unwrap();
        let message = |id: u8| NewMessage {
            effects: Default::default(),
            sender: account,
            sender_device: 1,
            recipient: account,
            message_id: [id; 16],
            server_timestamp_ms: 1,
            expires_at_ms: crate::state::now_ms() + 600_000,
            copies: vec![(1, vec![id; 10])],
        };
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200 OK"));
        faults::disk_full(dir.path(), true);
        // Written into the reserve; the next one is refused.
        assert!(matches!(
            log.enqueue(message(1), 10).await.unwrap(),
            Enqueued::Stored { .. }
        ));
        assert!(matches!(
            log.enqueue(message(2), 10).await,
            Err(StorageError::Full)
        ));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
        assert_eq!(
            log.acknowledge(
                account,
                1,
                crate::storage::AckOf::Message {
                    sender: account,
                    message_id: [1; 16],
                },
                u64::MAX,
            )
            .unwrap()
            .map(|(_, device, _durable)| device),
            Some(1)
        );
        log.flush().await.unwrap();
        faults::disk_full(dir.path(), false);
        loop {
            let changed = metrics.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !metrics.storage_failed() {
                break;
            }
            changed.await;
        }
        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");
        assert!(matches!(
            log.enqueue(message(2), 10).await.unwrap(),
            Enqueued::Stored { .. }
        ));
        log.close().await.unwrap();
        server.abort();
    }
}
