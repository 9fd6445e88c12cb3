//! The bridge's configuration file (TOML). Every path is relative to the current directory.
//!
//! ```toml
//! homeserver = "http://127.0.0.1:8008"
//! user = "@archive:pref.example"
//! password_file = "/etc/kairan-bridge/password"   # read at login; never logged
//! data_dir = "/var/lib/kairan-bridge"              # Matrix client store and session
//! database = "sqlite:///var/lib/kairan-bridge/archive.db"   # or postgres://...
//! attachments_dir = "/var/lib/kairan-bridge/attachments"
//! signing_key = "/var/lib/kairan-bridge/bridge.key"        # created on first start
//! checkpoint_interval_secs = 300
//! sweep_interval_secs = 30
//! # Whose jp.kairan.room.policy events the bridge believes: those of the policy account
//! # (@_kairan_policy:SERVER) of these servers; default: the archive account's own server.
//! policy_servers = ["pref.example"]
//! # Prometheus metrics (`GET /metrics`) on this address; absent: no listener.
//! metrics_listen = "127.0.0.1:9109"
//! ```

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the homeserver's Client-Server API.
    #[serde(default)]
    pub homeserver: Option<String>,
    /// The archive account (`@archive:pref.example`).
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding the archive account's password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A file holding the passphrase of the Matrix client store (optional).
    #[serde(default)]
    pub store_passphrase_file: Option<PathBuf>,
    /// Where the Matrix client keeps its store and session.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The archive database URL; default `sqlite://<data_dir>/archive.db`.
    #[serde(default)]
    pub database: Option<String>,
    /// The content-addressed attachment folder; default `<data_dir>/attachments`.
    #[serde(default)]
    pub attachments_dir: Option<PathBuf>,
    /// The bridge's Ed25519 signing key (PKCS#8 PEM); default `<data_dir>/bridge.key`.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// How often the daemon signs a tree head when the log has grown.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_secs: u64,
    /// How often every official room is read through, whatever sync said.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval_secs: u64,
    /// Servers whose members' policy events the bridge believes.
    #[serde(default)]
    pub policy_servers: Option<Vec<String>>,
    /// Where `run` serves Prometheus metrics (`GET /metrics`); none when absent.
    #[serde(default, deserialize_with = "socket_addr")]
    pub metrics_listen: Option<SocketAddr>,
}

/// An `IP:port` string, with a message that names the key and shows the form expected
/// (serde's own says only "invalid socket address syntax").
fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "`metrics_listen` must be an IP address and a port, such as \"127.0.0.1:9109\" or \"[::1]:9109\"; got {text:?}"
        ))
    })
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("kairan-bridge-data")
}

fn default_checkpoint_interval() -> u64 {
    300
}

fn default_sweep_interval() -> u64 {
    30
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("the empty configuration is valid")
    }
}

impl Config {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).map_err(|e| match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                anyhow::anyhow!("{}: line {line}: {}", path.display(), e.message())
            }
            None => anyhow::anyhow!("{}: {}", path.display(), e.message()),
        })
    }

    pub fn database_url(&self) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("archive.db").to_string_lossy()))
    }

    pub fn attachments(&self) -> PathBuf {
        self.attachments_dir.clone().unwrap_or_else(|| self.data_dir.join("attachments"))
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key.clone().unwrap_or_else(|| self.data_dir.join("bridge.key"))
    }

    /// What the daemon needs, checked: homeserver, user and password.
    pub fn daemon(&self) -> anyhow::Result<(String, String, String)> {
        let Some(homeserver) = self.homeserver.clone() else { bail!("the configuration has no `homeserver`") };
        let Some(user) = self.user.clone() else { bail!("the configuration has no `user` (the archive account)") };
        let Some(file) = &self.password_file else { bail!("the configuration has no `password_file`") };
        let password = std::fs::read_to_string(file)
            .with_context(|| format!("reading the password file {}", file.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        if password.is_empty() {
            bail!("the password file {} is empty", file.display());
        }
        Ok((homeserver, user, password))
    }

    /// The servers whose policy events count.
    pub fn policy_servers(&self) -> Vec<String> {
        match &self.policy_servers {
            Some(s) => s.clone(),
            None => self
                .user
                .as_deref()
                .and_then(|u| u.split_once(':'))
                .map(|(_, s)| vec![s.to_owned()])
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bridge.toml");
        std::fs::write(&path, text)?;
        Config::load(&path)
    }

    #[test]
    fn metrics_listen_is_off_unless_set() {
        assert_eq!(Config::default().metrics_listen, None);
        let c = load("metrics_listen = \"127.0.0.1:9109\"\n").expect("valid");
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9109".parse().expect("an address")));
        let c = load("metrics_listen = \"[::1]:9109\"\n").expect("valid");
        assert_eq!(c.metrics_listen, Some("[::1]:9109".parse().expect("an address")));
    }

    #[test]
    fn a_bad_metrics_listen_is_named_with_its_line() {
        for (text, expected) in [
            ("user = \"@a:b\"\nmetrics_listen = \"localhost\"\n", "line 2: `metrics_listen` must be an IP address"),
            ("metrics_listen = \"127.0.0.1\"\n", "line 1: `metrics_listen` must be an IP address"),
            ("\nmetrics_listen = 9109\n", "line 2: invalid type: integer `9109`, expected a string"),
        ] {
            let e = load(text).expect_err(text).to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
