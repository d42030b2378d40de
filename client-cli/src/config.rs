//! Where `comptoir` keeps its data and reads its settings: the per-user
//! data directory (`$XDG_DATA_HOME/comptoir`, usually
//! `~/.local/share/comptoir`) unless `--data-dir` says otherwise, and an
//! optional config file (`$XDG_CONFIG_HOME/comptoir/config.toml`, usually
//! `~/.config/comptoir/config.toml`, or `--config FILE`) giving defaults
//! for the relay address, its CA certificate, the output format, the
//! phone region and the connection's keepalive. The command line and the
//! environment win over the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::args::OutputFormat;

/// The config file's name inside the per-user config directory.
pub const CONFIG_FILE: &str = "config.toml";
/// This program's directory name inside the per-user directories.
const APP_DIR: &str = "comptoir";

/// The settings a config file may give (every one optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Relay address, as `--relay`.
    pub relay: Option<String>,
    /// CA certificate (PEM) for wss://, as `--ca-cert`; a relative path
    /// is taken from the config file's directory.
    pub ca_cert: Option<PathBuf>,
    /// Output format, as `--output`.
    pub output: Option<OutputFormat>,
    /// Region of national phone numbers, as `--region`.
    pub region: Option<String>,
    /// Seconds without a sign of the relay before the connection pings it
    /// (then gives up half as long again later, and connects again); 1 to
    /// 3600, 20 when not given.
    pub keepalive_seconds: Option<f64>,
}

/// The default data directory: `comptoir` in the per-user data directory.
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join(APP_DIR))
}

/// The default config file, if the per-user config directory is known.
pub fn default_config_file() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join(APP_DIR).join(CONFIG_FILE))
}

/// Read the config file at `path`. A missing file is no settings unless
/// `required` (it was named on the command line); a file that does not
/// parse, or names a `ca_cert` that is not a file, is an error naming the
/// file and what is wrong.
pub fn load(path: &Path, required: bool) -> Result<Config, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(Config::default());
        }
        Err(e) => {
            return Err(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ));
        }
    };
    let mut config: Config = toml::from_str(&text).map_err(|e| {
        format!(
            "the config file {} is not valid: {} (it may set relay, ca_cert, output, region \
             and keepalive_seconds)",
            path.display(),
            e.message()
        )
    })?;
    if let (Some(ca), Some(base)) = (&config.ca_cert, path.parent())
        && ca.is_relative()
    {
        config.ca_cert = Some(base.join(ca));
    }
    if let Some(seconds) = config.keepalive_seconds
        && comptoir_client::Keepalive::from_idle_seconds(seconds).is_none()
    {
        return Err(format!(
            "the config file {} is not valid: keepalive_seconds is {seconds}; give a number \
             of seconds from 1 to 3600, or remove the key (20 by default)",
            path.display()
        ));
    }
    if let Some(ca) = &config.ca_cert
        && !ca.is_file()
    {
        return Err(format!(
            "the config file {} is not valid: its ca_cert {} is not a file (give the relay's \
             CA certificate in PEM, relative to the config file, or remove the key)",
            path.display(),
            ca.display()
        ));
    }
    Ok(config)
}

/// `path` as a shell word, for the hints this program prints.
pub use comptoir_client::hints::shell_word;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_gives_defaults_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(CONFIG_FILE);
        assert!(load(&path, false).is_ok_and(|c| c.relay.is_none()));
        assert!(load(&path, true).is_err(), "named but missing");
        std::fs::write(
            &path,
            "relay = \"wss://relay.example\"\nca_cert = \"ca.pem\"\noutput = \"json\"\n",
        )
        .expect("write");
        // A certificate file that is not there is refused, naming both.
        let error = load(&path, false).expect_err("no ca.pem");
        assert!(
            error.contains(&path.display().to_string()) && error.contains("ca.pem"),
            "{error}"
        );
        std::fs::write(dir.path().join("ca.pem"), "PEM").expect("write");
        let config = load(&path, false).expect("loads");
        assert_eq!(config.relay.as_deref(), Some("wss://relay.example"));
        assert_eq!(config.ca_cert, Some(dir.path().join("ca.pem")));
        assert_eq!(config.output, Some(OutputFormat::Json));
        std::fs::write(&path, "relays = \"wss://relay.example\"\n").expect("write");
        let error = load(&path, false).expect_err("unknown key");
        assert!(error.contains("relays"), "{error}");
    }

    #[test]
    fn a_keepalive_is_taken_in_range_and_refused_outside_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, "keepalive_seconds = 5\n").expect("write");
        let config = load(&path, true).expect("loads");
        assert_eq!(config.keepalive_seconds, Some(5.0));
        for bad in ["0", "0.5", "3601", "-3", "nan", "inf"] {
            std::fs::write(&path, format!("keepalive_seconds = {bad}\n")).expect("write");
            let error = load(&path, true).expect_err(bad);
            assert!(
                error.contains("keepalive_seconds") && error.contains("from 1 to 3600"),
                "{bad}: {error}"
            );
        }
    }
}
