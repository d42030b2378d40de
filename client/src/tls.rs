//! The transport under the relay WebSocket: plain TCP for `ws://`, TLS
//! (rustls, ring backend) for `wss://`, trusting Mozilla's root
//! certificates (the `webpki-roots` crate) and any CA certificate given with
//! `--ca-cert`. Plain `ws://` is refused except to a loopback address
//! unless the user says `--insecure`.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::error::{ClientError, Result};

/// A byte stream to the relay: TCP or TLS over TCP.
pub trait RelayIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RelayIo for T {}

/// How to reach relays: which certificate authorities to trust for
/// `wss://`, and whether plain `ws://` to another machine is allowed.
#[derive(Clone, Default)]
pub struct TlsOptions {
    extra_roots: Vec<CertificateDer<'static>>,
    insecure: bool,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            extra_roots,
            insecure,
        } = self;
        f.debug_struct("TlsOptions")
            .field("extra_roots", &extra_roots.len())
            .field("insecure", insecure)
            .finish()
    }
}

/// What a relay URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayUrl {
    /// Whether it is `wss://`.
    pub tls: bool,
    /// The host, without IPv6 brackets.
    pub host: String,
    /// The port (the scheme's default when absent).
    pub port: u16,
}

impl RelayUrl {
    /// Parse a `ws://` or `wss://` URL.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| ClientError::InvalidArgument(format!("relay URL {url:?}: {why}"));
        let request = url
            .into_client_request()
            .map_err(|_| bad("not a WebSocket URL (ws://host:port or wss://host:port)"))?;
        let uri = request.uri();
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(bad("the scheme must be ws:// or wss://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self { tls, host, port })
    }

    /// The origin a device signs when it authenticates
    /// ([`comptoir_protocol::relay_origin`]).
    pub fn origin(&self) -> String {
        comptoir_protocol::relay_origin(self.tls, &self.host, self.port)
    }

    /// Whether the host is this machine.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl TlsOptions {
    /// Also trust the CA certificate(s) in this PEM file.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Self> {
        let bad = |reason: String| {
            ClientError::InvalidArgument(format!(
                "cannot use {} as a CA certificate: {reason}; give a PEM file",
                path.display()
            ))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<std::result::Result<_, _>>())
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate found".into()));
        }
        self.extra_roots.extend(certs);
        Ok(self)
    }

    /// Allow plain `ws://` to hosts other than this machine.
    pub fn allow_insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in &self.extra_roots {
            roots.add(cert.clone()).map_err(|e| {
                ClientError::InvalidArgument(format!("the CA certificate is not usable: {e}"))
            })?;
        }
        // The ring provider explicitly: no process-wide default needed.
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::InvalidArgument(format!("TLS setup: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// Open the byte stream for `url`: TCP, passed through `wrap` (which
    /// sees the raw bytes), then TLS for `wss://`.
    pub(crate) async fn open(
        &self,
        url: &str,
        wrap: impl FnOnce(TcpStream) -> Box<dyn RelayIo>,
    ) -> Result<(RelayUrl, Box<dyn RelayIo>)> {
        let target = RelayUrl::parse(url)?;
        if !target.tls && !target.is_loopback() && !self.insecure {
            return Err(ClientError::InvalidArgument(format!(
                "refusing plain ws:// to {}: anyone on the way could read and alter the \
                 traffic; use wss:// (or --insecure if you really mean it)",
                target.host
            )));
        }
        let connect_error = |reason: String| ClientError::Connect {
            url: url.to_string(),
            reason,
        };
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let tcp = wrap(tcp);
        if !target.tls {
            return Ok((target, tcp));
        }
        let name = ServerName::try_from(target.host.clone())
            .map_err(|_| connect_error("the host is not a valid TLS server name".into()))?;
        let tls = TlsConnector::from(self.client_config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                connect_error(format!(
                    "TLS handshake failed ({e}); if the relay's certificate is from a private \
                     CA, give it with --ca-cert"
                ))
            })?;
        Ok((target, Box::new(tls)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_loopback_is_recognised() -> Result<()> {
        let u = RelayUrl::parse("wss://relay.example:8443/")?;
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "relay.example", 8443)
        );
        assert!(!u.is_loopback());
        assert_eq!(RelayUrl::parse("wss://relay.example")?.port, 443);
        assert!(RelayUrl::parse("ws://127.0.0.1:7700")?.is_loopback());
        assert!(RelayUrl::parse("ws://[::1]:7700")?.is_loopback());
        assert!(RelayUrl::parse("ws://localhost:7700")?.is_loopback());
        assert!(RelayUrl::parse("http://relay.example").is_err());
        Ok(())
    }

    #[tokio::test]
    async fn plain_ws_to_another_machine_needs_insecure() {
        let as_is = |tcp: TcpStream| -> Box<dyn RelayIo> { Box::new(tcp) };
        let refused = TlsOptions::default()
            .open("ws://192.0.2.1:7700", as_is)
            .await;
        assert!(
            matches!(&refused, Err(ClientError::InvalidArgument(m)) if m.contains("wss://")),
            "{:?}",
            refused.err()
        );
    }
}
