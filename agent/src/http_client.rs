//! A small HTTP/1.1 client over hyper for webhook deliveries (and the
//! tests' API calls): `http://` to loopback, `https://` with Mozilla's
//! roots (rustls, ring backend). One connection per request: deliveries
//! are few and retried, so no pool is worth its state.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a response body read (a webhook receiver's answer is not used).
const MAX_RESPONSE: usize = 1024 * 1024;

/// Why a request did not get a response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The URL cannot be used.
    #[error("bad URL: {0}")]
    BadUrl(&'static str),
    /// No connection.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The exchange failed.
    #[error("the request failed: {0}")]
    Request(String),
    /// No answer in [`REQUEST_TIMEOUT`].
    #[error("no answer in time")]
    Timeout,
}

/// A parsed `http://` or `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://`.
    pub tls: bool,
    /// Host name or address (no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, from `/`.
    pub path: String,
}

impl Endpoint {
    /// Parse `http[s]://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let uri: hyper::Uri = url.parse().map_err(|_| HttpError::BadUrl("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(HttpError::BadUrl(
                    "a webhook URL starts with https:// or http://",
                ));
            }
        };
        let host = uri
            .host()
            .ok_or(HttpError::BadUrl("the URL names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(Self {
            tls,
            host,
            port,
            path,
        })
    }

    /// Whether the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The body (at most 1 MiB read).
    pub body: Vec<u8>,
}

/// Send one request and read the response, within [`REQUEST_TIMEOUT`].
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Response, HttpError> {
    tokio::time::timeout(REQUEST_TIMEOUT, request_inner(method, url, headers, body))
        .await
        .map_err(|_| HttpError::Timeout)?
}

async fn request_inner(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Response, HttpError> {
    let endpoint = Endpoint::parse(url)?;
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| HttpError::Connect(e.kind().to_string()))?;
    let authority =
        if (endpoint.tls && endpoint.port == 443) || (!endpoint.tls && endpoint.port == 80) {
            endpoint.host.clone()
        } else {
            format!("{}:{}", endpoint.host, endpoint.port)
        };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(endpoint.path.as_str())
        .header("host", authority);
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| HttpError::BadUrl("a header cannot be sent"))?;
    if endpoint.tls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::Connect(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
            .map_err(|_| HttpError::BadUrl("the host is not a valid TLS name"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| HttpError::Connect(e.to_string()))?;
        exchange(TokioIo::new(tls), request).await
    } else {
        exchange(TokioIo::new(tcp), request).await
    }
}

async fn exchange<T>(io: T, request: hyper::Request<Full<Bytes>>) -> Result<Response, HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| HttpError::Connect(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| HttpError::Request(e.to_string()))?;
    let status = response.status().as_u16();
    let limited = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE);
    let body = limited
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    driver.abort();
    Ok(Response { status, body })
}
