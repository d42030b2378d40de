//! The daemon's configuration: a TOML file, then environment variables
//! over it, parsed and checked into typed values before anything starts.
//! Secrets (the store passphrase, webhook secrets) may come from the
//! environment or files instead of the TOML file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::hours::OpeningHours;
use crate::keys::{ApiKey, Scope};

/// Environment variable: the path of the TOML file.
pub const ENV_CONFIG: &str = "COMPTOIR_AGENT_CONFIG";
/// Environment variable: the relay URL (over `relay`).
pub const ENV_RELAY: &str = "COMPTOIR_AGENT_RELAY";
/// Environment variable: the listen address (over `listen`).
pub const ENV_LISTEN: &str = "COMPTOIR_AGENT_LISTEN";
/// Environment variable: the data directory (over `data_dir`).
pub const ENV_DATA_DIR: &str = "COMPTOIR_AGENT_DATA_DIR";
/// Environment variable: the trusted operator key (over `operator_key`).
pub const ENV_OPERATOR_KEY: &str = "COMPTOIR_AGENT_OPERATOR_KEY";
/// Environment variable: the passphrase of the device store.
pub const ENV_PASSPHRASE: &str = "COMPTOIR_AGENT_PASSPHRASE";
/// Environment variable: a file whose first line is the passphrase.
pub const ENV_PASSPHRASE_FILE: &str = "COMPTOIR_AGENT_PASSPHRASE_FILE";

/// The shortest webhook secret accepted: 16 bytes of text, so the HMAC
/// key cannot be guessed.
pub const MIN_WEBHOOK_SECRET_LEN: usize = 16;
/// The shortest passphrase accepted for the device store.
pub const MIN_PASSPHRASE_LEN: usize = 12;
/// How often the daemon asks the relay which consent requests customers
/// allowed, unless configured (the relay pushes no answers to a business).
pub const DEFAULT_CONSENT_POLL: Duration = Duration::from_secs(10);
/// The default listen address: loopback, where plain HTTP is allowed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";

/// Why the configuration cannot be used; nothing was started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read the configuration file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The TOML does not parse or names an unknown setting.
    #[error("the configuration does not parse: {0}")]
    Parse(String),
    /// A required setting is missing.
    #[error("{0} is not set: set it in the configuration file or its environment variable")]
    Missing(&'static str),
    /// A setting has a value that cannot be used.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting.
        setting: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// The daemon would serve plain HTTP off loopback.
    #[error(
        "listen address {0} is not loopback: the API carries customer messages and API keys, so off loopback it is served only over TLS; set [tls] cert and key, or listen on 127.0.0.1"
    )]
    TlsRequired(SocketAddr),
    /// Opening hours that do not parse.
    #[error("opening hours {0}")]
    OpeningHours(String),
    /// No passphrase for the device store.
    #[error(
        "no passphrase for the device store: set {ENV_PASSPHRASE} or {ENV_PASSPHRASE_FILE} (a file whose first line is the passphrase)"
    )]
    NoPassphrase,
}

/// The file as written (private: checked into [`Config`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    relay: Option<String>,
    operator_key: Option<String>,
    relay_ca_file: Option<PathBuf>,
    listen: Option<String>,
    consent_poll_seconds: Option<f64>,
    lease_seconds: Option<f64>,
    keepalive_seconds: Option<f64>,
    tls: Option<RawTls>,
    #[serde(default)]
    api_keys: Vec<RawApiKey>,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    opening_hours: Option<RawHours>,
    #[serde(default)]
    inbox_hosts: Vec<String>,
    #[serde(default)]
    inbox_trusted_proxies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    name: String,
    sha256: String,
    scopes: Vec<Scope>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
}

impl fmt::Debug for RawWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawWebhook")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHours {
    utc_offset: String,
    periods: Vec<String>,
    away_message: Option<String>,
}

/// TLS for the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// One webhook endpoint and the secret its deliveries are signed with.
#[derive(Clone)]
pub struct Webhook {
    /// `http://` (loopback only) or `https://` URL.
    pub url: String,
    /// The HMAC-SHA256 key.
    pub secret: Zeroizing<String>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { url, secret: _ } = self;
        f.debug_struct("Webhook").field("url", url).finish()
    }
}

/// Opening hours and the message sent outside them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Away {
    /// When the business is open.
    pub hours: OpeningHours,
    /// Sent (once a day per customer) when a customer writes while closed.
    pub message: Option<String>,
}

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the device store (`device/`) and the database (`agent.sqlite3`) live.
    pub data_dir: PathBuf,
    /// The relay's `ws://` (loopback only) or `wss://` URL.
    pub relay: String,
    /// The operator key to trust (pinned at start); otherwise the first
    /// one the relay presents.
    pub operator_key: Option<comptoir_protocol::OperatorKey>,
    /// An extra CA certificate for a relay with a private CA.
    pub relay_ca_file: Option<PathBuf>,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// TLS for the HTTP API (required off loopback).
    pub tls: Option<TlsFiles>,
    /// The API keys, hashed.
    pub api_keys: Vec<ApiKey>,
    /// Where webhooks go.
    pub webhooks: Vec<Webhook>,
    /// Opening hours and the away message.
    pub away: Option<Away>,
    /// How often to read the consent answers from the relay.
    pub consent_poll: Duration,
    /// How long the lease deciding which daemon of the business acts
    /// (webhooks, the away message, automatic assignment) lasts: a
    /// daemon that vanishes without closing its connection is replaced
    /// after at most this long (see [`crate::lease`]).
    pub lease: Duration,
    /// How soon a dead link to the relay is noticed (`keepalive_seconds`:
    /// quiet this long, the device pings the relay, and connects again if
    /// still nothing came half as long later).
    pub keepalive: comptoir_client::Keepalive,
    /// `Host` values the agents' inbox accepts besides the listen address
    /// (the name agents type, with its port: `inbox.acme.example:8443`).
    pub inbox_hosts: Vec<String>,
    /// Addresses of reverse proxies in front of the inbox: a request from
    /// one of them is counted (login limits) under the address its
    /// `X-Forwarded-For` names, not the proxy's.
    pub inbox_trusted_proxies: Vec<std::net::IpAddr>,
}

impl Config {
    /// Read the TOML file at `path` (if any), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.display().to_string(),
                reason: e.kind().to_string(),
            })?,
            None => String::new(),
        };
        Self::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parse `toml_text`, with `env` read for the variables over it.
    pub fn parse(
        toml_text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(toml_text).map_err(|e| ConfigError::Parse(e.message().to_owned()))?;
        let invalid = |setting: &str, reason: &str| ConfigError::Invalid {
            setting: setting.to_owned(),
            reason: reason.to_owned(),
        };
        let data_dir = env(ENV_DATA_DIR)
            .map(PathBuf::from)
            .or(raw.data_dir)
            .ok_or(ConfigError::Missing("data_dir"))?;
        let relay = env(ENV_RELAY)
            .or(raw.relay)
            .ok_or(ConfigError::Missing("relay"))?;
        comptoir_client::tls::RelayUrl::parse(&relay).map_err(|_| {
            invalid(
                "relay",
                "a relay URL is wss://host:port (ws:// only to a loopback relay)",
            )
        })?;
        let operator_key = match env(ENV_OPERATOR_KEY).or(raw.operator_key) {
            None => None,
            Some(text) => Some(
                hex::decode(text.trim())
                    .ok()
                    .and_then(|b| comptoir_protocol::OperatorKey::from_bytes(&b).ok())
                    .ok_or_else(|| {
                        invalid(
                            "operator_key",
                            "the operator key is 64 hex digits (`relay admin operator-key`)",
                        )
                    })?,
            ),
        };
        let listen_text = env(ENV_LISTEN)
            .or(raw.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| invalid("listen", "an address and port, like 127.0.0.1:8480"))?;
        let tls = raw.tls.map(|t| TlsFiles {
            cert: t.cert,
            key: t.key,
        });
        if tls.is_none() && !listen.ip().is_loopback() {
            return Err(ConfigError::TlsRequired(listen));
        }
        let consent_poll = match raw.consent_poll_seconds {
            None => DEFAULT_CONSENT_POLL,
            Some(s) if s.is_finite() && (0.05..=3600.0).contains(&s) => Duration::from_secs_f64(s),
            Some(_) => {
                return Err(invalid(
                    "consent_poll_seconds",
                    "between 0.05 and 3600 seconds",
                ));
            }
        };
        let lease = match raw.lease_seconds {
            None => crate::lease::DEFAULT_LEASE,
            Some(s) if s.is_finite() && (1.0..=300.0).contains(&s) => Duration::from_secs_f64(s),
            Some(_) => return Err(invalid("lease_seconds", "between 1 and 300 seconds")),
        };
        let keepalive = match raw.keepalive_seconds {
            None => comptoir_client::Keepalive::default(),
            Some(s) => comptoir_client::Keepalive::from_idle_seconds(s)
                .ok_or_else(|| invalid("keepalive_seconds", "between 1 and 3600 seconds"))?,
        };
        let mut api_keys = Vec::new();
        for key in raw.api_keys {
            let sha256: [u8; 32] = hex::decode(key.sha256.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    invalid(
                        &format!("api_keys {:?}", key.name),
                        "sha256 is 64 hex digits (as `agent key new` prints it)",
                    )
                })?;
            if key.name.trim().is_empty() || key.scopes.is_empty() {
                return Err(invalid(
                    "api_keys",
                    "each key has a name and at least one scope",
                ));
            }
            if api_keys.iter().any(|k: &ApiKey| k.name == key.name) {
                return Err(invalid(
                    &format!("api_keys {:?}", key.name),
                    "names are unique",
                ));
            }
            api_keys.push(ApiKey {
                name: key.name,
                sha256,
                scopes: key.scopes,
            });
        }
        let mut webhooks = Vec::new();
        for hook in raw.webhooks {
            webhooks.push(webhook(hook, env)?);
        }
        let away = match raw.opening_hours {
            None => None,
            Some(h) => {
                if h.away_message.as_ref().is_some_and(|m| m.trim().is_empty()) {
                    return Err(invalid(
                        "opening_hours.away_message",
                        "leave it out or write a message",
                    ));
                }
                Some(Away {
                    hours: OpeningHours::parse(&h.utc_offset, &h.periods)?,
                    message: h.away_message,
                })
            }
        };
        for host in &raw.inbox_hosts {
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
            {
                return Err(invalid(
                    "inbox_hosts",
                    "each is a host name and port as a browser sends it: \"inbox.acme.example:8443\"",
                ));
            }
        }
        let inbox_trusted_proxies = raw
            .inbox_trusted_proxies
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                invalid(
                    "inbox_trusted_proxies",
                    "each is an IP address, as the proxy connects from: \"127.0.0.1\" or \"::1\"",
                )
            })?;
        Ok(Self {
            inbox_hosts: raw.inbox_hosts,
            inbox_trusted_proxies,
            data_dir,
            relay,
            operator_key,
            relay_ca_file: raw.relay_ca_file,
            listen,
            tls,
            api_keys,
            webhooks,
            away,
            consent_poll,
            lease,
            keepalive,
        })
    }

    /// The device store's directory.
    pub fn device_dir(&self) -> PathBuf {
        self.data_dir.join("device")
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("agent.sqlite3")
    }
}

fn webhook(hook: RawWebhook, env: &dyn Fn(&str) -> Option<String>) -> Result<Webhook, ConfigError> {
    let setting = format!("webhooks {:?}", hook.url);
    let invalid = |reason: &str| ConfigError::Invalid {
        setting: setting.clone(),
        reason: reason.to_owned(),
    };
    let url =
        crate::http_client::Endpoint::parse(&hook.url).map_err(|e| invalid(&e.to_string()))?;
    if !url.tls && !url.is_loopback() {
        return Err(invalid("webhooks leave the machine only over https://"));
    }
    let secret = match (hook.secret, hook.secret_env, hook.secret_file) {
        (Some(s), None, None) => Zeroizing::new(s),
        (None, Some(var), None) => Zeroizing::new(
            env(&var)
                .ok_or_else(|| invalid(&format!("the environment variable {var} is not set")))?,
        ),
        (None, None, Some(path)) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(&path)
                    .map_err(|e| invalid(&format!("cannot read the secret file: {}", e.kind())))?,
            );
            Zeroizing::new(text.lines().next().unwrap_or("").to_owned())
        }
        _ => {
            return Err(invalid(
                "give exactly one of secret, secret_env, secret_file",
            ));
        }
    };
    if secret.len() < MIN_WEBHOOK_SECRET_LEN {
        return Err(invalid(&format!(
            "the secret is shorter than {MIN_WEBHOOK_SECRET_LEN} characters"
        )));
    }
    Ok(Webhook {
        url: hook.url,
        secret,
    })
}

/// The device store's passphrase, from the environment or its file.
pub fn passphrase(env: &dyn Fn(&str) -> Option<String>) -> Result<Zeroizing<String>, ConfigError> {
    let passphrase = match (env(ENV_PASSPHRASE), env(ENV_PASSPHRASE_FILE)) {
        (Some(p), _) => Zeroizing::new(p),
        (None, Some(path)) => {
            let text =
                Zeroizing::new(
                    std::fs::read_to_string(&path).map_err(|e| ConfigError::Read {
                        path,
                        reason: e.kind().to_string(),
                    })?,
                );
            Zeroizing::new(text.lines().next().unwrap_or("").to_owned())
        }
        (None, None) => return Err(ConfigError::NoPassphrase),
    };
    if passphrase.chars().count() < MIN_PASSPHRASE_LEN {
        return Err(ConfigError::Invalid {
            setting: ENV_PASSPHRASE.into(),
            reason: format!("the passphrase is shorter than {MIN_PASSPHRASE_LEN} characters"),
        });
    }
    Ok(passphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const GOOD: &str = r#"
data_dir = "/var/lib/agent"
relay = "ws://127.0.0.1:9000"
listen = "127.0.0.1:0"
[[api_keys]]
name = "backend"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
scopes = ["messages:send", "consent:request"]
[[webhooks]]
url = "http://127.0.0.1:9999/hook"
secret_env = "HOOK_SECRET"
[opening_hours]
utc_offset = "+01:00"
periods = ["mon-fri 09:00-18:00"]
away_message = "We are closed; we answer from 9:00."
"#;

    #[test]
    fn a_full_file_with_environment_overrides() {
        let env = |name: &str| match name {
            "HOOK_SECRET" => Some("a-secret-long-enough".to_owned()),
            ENV_RELAY => Some("ws://127.0.0.1:9100".to_owned()),
            _ => None,
        };
        let config = Config::parse(GOOD, &env).expect("valid");
        assert_eq!(config.relay, "ws://127.0.0.1:9100");
        assert_eq!(
            config.api_keys[0].scopes,
            vec![Scope::MessagesSend, Scope::ConsentRequest]
        );
        assert_eq!(config.webhooks[0].secret.as_str(), "a-secret-long-enough");
        assert!(!format!("{config:?}").contains("a-secret-long-enough"));
        assert!(config.away.is_some());
    }

    #[test]
    fn bad_settings_are_typed() {
        let env = |name: &str| (name == "HOOK_SECRET").then(|| "short".to_owned());
        assert!(matches!(
            Config::parse(GOOD, &env),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            Config::parse(GOOD, &no_env),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            Config::parse("relay = \"ws://127.0.0.1:1\"", &no_env),
            Err(ConfigError::Missing("data_dir"))
        ));
        assert!(matches!(
            Config::parse(
                "data_dir = \"d\"\nrelay = \"ws://127.0.0.1:1\"\nlisten = \"0.0.0.0:8480\"",
                &no_env
            ),
            Err(ConfigError::TlsRequired(_))
        ));
        assert!(matches!(
            Config::parse(
                "data_dir = \"d\"\nrelay = \"ws://127.0.0.1:1\"\nunknown = 1",
                &no_env
            ),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            Config::parse(
                "data_dir = \"d\"\nrelay = \"ws://127.0.0.1:1\"\ninbox_hosts = [\"a b\"]",
                &no_env
            ),
            Err(ConfigError::Invalid { .. })
        ));
        let hosts = Config::parse(
            "data_dir = \"d\"\nrelay = \"ws://127.0.0.1:1\"\ninbox_hosts = [\"inbox.acme.example:8443\"]",
            &no_env,
        )
        .expect("inbox_hosts");
        assert_eq!(hosts.inbox_hosts, ["inbox.acme.example:8443"]);
        let proxies = Config::parse(
            "data_dir = \"d\"\nrelay = \"ws://127.0.0.1:1\"\ninbox_trusted_proxies = [\"127.0.0.1\", \"::1\"]",
            &no_env,
        )
        .expect("inbox_trusted_proxies");
        assert_eq!(proxies.inbox_trusted_proxies.len(), 2);
        assert!(matches!(
            Config::parse(
                "data_dir = \"d\"\nrelay = \"ws://127.0.0.1:1\"\ninbox_trusted_proxies = [\"proxy.local\"]",
                &no_env
            ),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            Config::parse("data_dir = \"d\"\nrelay = \"http://x\"", &no_env),
            Err(ConfigError::Invalid { .. })
        ));
        let plain_remote = "data_dir = \"d\"\nrelay = \"ws://127.0.0.1:1\"\n[[webhooks]]\nurl = \"http://example.com/h\"\nsecret = \"a-secret-long-enough\"";
        assert!(matches!(
            Config::parse(plain_remote, &no_env),
            Err(ConfigError::Invalid { .. })
        ));
        let bad_scope = "data_dir = \"d\"\nrelay = \"ws://127.0.0.1:1\"\n[[api_keys]]\nname = \"x\"\nsha256 = \"00\"\nscopes = [\"all\"]";
        assert!(matches!(
            Config::parse(bad_scope, &no_env),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn a_keepalive_is_taken_in_range_and_refused_outside_it() {
        let base = "data_dir = \"d\"\nrelay = \"ws://127.0.0.1:1\"\n";
        let default = Config::parse(base, &no_env).expect("no keepalive_seconds");
        assert_eq!(default.keepalive, comptoir_client::Keepalive::default());
        let quick = Config::parse(&format!("{base}keepalive_seconds = 4\n"), &no_env)
            .expect("keepalive_seconds 4");
        assert_eq!(
            quick.keepalive,
            comptoir_client::Keepalive {
                idle: Duration::from_secs(4),
                answer_within: Duration::from_secs(2),
            }
        );
        for bad in ["0", "0.2", "3601", "-1", "nan", "inf"] {
            let parsed = Config::parse(&format!("{base}keepalive_seconds = {bad}\n"), &no_env);
            assert!(
                matches!(
                    &parsed,
                    Err(ConfigError::Invalid { setting, .. }) if setting == "keepalive_seconds"
                ),
                "{bad}: {parsed:?}"
            );
        }
    }

    #[test]
    fn the_passphrase_comes_from_the_environment() {
        assert!(matches!(
            passphrase(&no_env),
            Err(ConfigError::NoPassphrase)
        ));
        let short = |n: &str| (n == ENV_PASSPHRASE).then(|| "short".to_owned());
        assert!(matches!(
            passphrase(&short),
            Err(ConfigError::Invalid { .. })
        ));
        let good = |n: &str| (n == ENV_PASSPHRASE).then(|| "long enough passphrase".to_owned());
        assert_eq!(
            passphrase(&good).expect("ok").as_str(),
            "long enough passphrase"
        );
    }
}
