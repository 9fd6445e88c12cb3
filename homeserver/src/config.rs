//! Configuration: embedded defaults, a TOML file, and `KAIRAN_*` environment overrides.
//!
//! Precedence is defaults < file < environment. An environment variable
//! `KAIRAN_SECTION__KEY=value` sets `[section] key = value`; the value is read as a TOML
//! value when it parses as one (numbers, booleans, arrays) and as a string otherwise.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration of one homeserver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The server name: the part after the colon in `@user:server_name`. Cannot change later.
    pub server_name: String,
    /// Where the signing key and, by default, the SQLite database live.
    pub data_dir: PathBuf,
    pub listen: ListenConfig,
    pub database: DatabaseConfig,
    pub registration: RegistrationConfig,
    pub rate_limits: RateLimitConfig,
    pub limits: LimitsConfig,
    pub rooms: RoomsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Address of the Client-Server API listener.
    pub client: SocketAddr,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`. Empty means `sqlite://DATA_DIR/kairan.db`.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
}

/// Who may create an account through the client API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// Only the operator creates accounts (`create-user`, admin API).
    #[default]
    Closed,
    /// Anyone holding a registration token may register.
    Token,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    pub mode: RegistrationMode,
    /// Tokens accepted by `m.login.registration_token` when `mode = "token"`.
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second per client for rate-limited endpoints (login, register, send).
    pub per_second: f64,
    /// Requests a client may make in a burst before the sustained rate applies.
    pub burst: u32,
    /// Sustained login and registration attempts per second per address.
    pub login_per_second: f64,
    /// Login and registration attempts an address may make in a burst.
    pub login_burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted by the client API, in bytes.
    pub max_request_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Room version for new rooms when the client names none.
    pub default_version: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".to_owned(),
            data_dir: PathBuf::from("./kairan-data"),
            listen: ListenConfig::default(),
            database: DatabaseConfig::default(),
            registration: RegistrationConfig::default(),
            rate_limits: RateLimitConfig::default(),
            limits: LimitsConfig::default(),
            rooms: RoomsConfig::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { client: SocketAddr::from(([127, 0, 0, 1], 8008)) }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { enabled: true, per_second: 10.0, burst: 50, login_per_second: 0.5, login_burst: 10 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_request_bytes: 1024 * 1024 }
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self { default_version: "10".to_owned() }
    }
}

/// A configuration that could not be read; the message names the file, key or variable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Reads the file (if any), then applies `KAIRAN_*` variables from `env`.
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
                text.parse::<toml::Table>().map_err(|e| ConfigError(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(path) = name.strip_prefix("KAIRAN_") else { continue };
            // Variables that configure the process rather than the server.
            if matches!(path, "CONFIG" | "LOG") {
                continue;
            }
            set_path(&mut table, path, &value);
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(format!("invalid configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        ruma::ServerName::parse(&self.server_name)
            .map_err(|e| ConfigError(format!("server_name {:?} is not a valid server name: {e}", self.server_name)))?;
        if crate::rooms::version_rules(&self.rooms.default_version).is_none() {
            return Err(ConfigError(format!(
                "rooms.default_version {:?} is not supported; use one of {:?}",
                self.rooms.default_version,
                crate::rooms::SUPPORTED_VERSIONS
            )));
        }
        if self.registration.mode == RegistrationMode::Token && self.registration.tokens.is_empty() {
            tracing::warn!("registration.mode is \"token\" but registration.tokens is empty");
        }
        Ok(())
    }

    /// The database URL, with the embedded default filled in.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("kairan.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// A commented configuration with every option at its default.
    pub fn commented_default() -> &'static str {
        include_str!("../kairan.example.toml")
    }
}

fn set_path(table: &mut toml::Table, path: &str, raw: &str) {
    let mut keys = path.split("__").map(|k| k.to_ascii_lowercase()).peekable();
    let mut current = table;
    while let Some(key) = keys.next() {
        if keys.peek().is_none() {
            let value = parse_env_value(raw);
            current.insert(key, value);
            return;
        }
        let entry = current.entry(key).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        current = entry.as_table_mut().expect("just made a table");
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.listen.client.port(), 8008);
        assert!(c.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn env_overrides_nested_keys_with_types() {
        let env = [
            ("KAIRAN_SERVER_NAME".to_owned(), "pref.example".to_owned()),
            ("KAIRAN_RATE_LIMITS__ENABLED".to_owned(), "false".to_owned()),
            ("KAIRAN_REGISTRATION__TOKENS".to_owned(), "[\"a\", \"b\"]".to_owned()),
            ("KAIRAN_LISTEN__CLIENT".to_owned(), "127.0.0.1:9000".to_owned()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.server_name, "pref.example");
        assert!(!c.rate_limits.enabled);
        assert_eq!(c.registration.tokens, ["a", "b"]);
        assert_eq!(c.listen.client.port(), 9000);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "server_nam = \"x\"\n").unwrap();
        let err = Config::load(Some(&f), []).unwrap_err().to_string();
        assert!(err.contains("server_nam"), "{err}");
    }

    #[test]
    fn the_example_config_parses() {
        let table: toml::Table = Config::commented_default().parse().unwrap();
        let _: Config = toml::Value::Table(table).try_into().unwrap();
    }
}
