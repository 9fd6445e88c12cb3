//! Configuration: embedded defaults, a TOML file, and `KAIRAN_*` environment overrides.
//!
//! Precedence is defaults < file < environment. An environment variable
//! `KAIRAN_SECTION__KEY=value` sets `[section] key = value`; the value is read as a TOML
//! value when it parses as one (numbers, booleans, arrays) and as a string otherwise.
//!
//! This module knows the options and checks what needs no domain: types, unknown keys,
//! names and offsets (`load.rs`). What needs one (a media type pattern, a TLS file, a room
//! version) is checked by the homeserver's `config_check`, through [`Config::load_with`].

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

mod load;

pub use self::load::{ConfigError, Problem};

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
    pub media: MediaConfig,
    pub push: PushConfig,
    pub user_directory: UserDirectoryConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub federation: FederationConfig,
}

/// How the server logs. Logs never contain tokens, passwords or message bodies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, or per module (`info,kairan_homeserver::sync=debug`).
    /// The `KAIRAN_LOG` environment variable, when set, replaces it.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Text }
    }
}

/// The administration API (`/_kairan/admin/v1`) and the `kairan-admin` CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The records bridge's account, invited to every room marked official
    /// (`@archive:server`). Empty: no one is invited.
    pub archive_user: String,
    /// The time zone of the admin API's dates and months (figures, audit, purge), as an
    /// offset from UTC: `"+09:00"` (Japan), `"+00:00"`.
    pub utc_offset: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { archive_user: String::new(), utc_offset: "+09:00".to_owned() }
    }
}

impl AdminConfig {
    /// The UTC offset in seconds; the configuration was validated at load.
    pub fn utc_offset_seconds(&self) -> i64 {
        crate::time::parse_utc_offset(&self.utc_offset).unwrap_or(0)
    }
}

/// Push notifications to phones go through push gateways the operator runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// The push gateways users may register HTTP pushers for, as origins
    /// (`https://push.pref.example`, `http://10.0.0.5:5000`). A pusher's URL must be one of
    /// them followed by `/_matrix/push/v1/notify`. Empty: no HTTP pushers, so a user
    /// cannot make the server send requests to an address of their choosing.
    pub gateways: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserDirectoryConfig {
    /// Let users find every local account, not only people they share a room with or
    /// who are in public rooms (Synapse's `search_all_users`). An organisation's staff
    /// directory usually wants this on.
    pub search_all_users: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Address of the Client-Server API listener.
    pub client: SocketAddr,
    /// Address of the TLS listener other servers connect to (it serves the whole API, as
    /// Synapse's federation port does). `None` (`""` in the file): no federation listener.
    #[serde(with = "optional_addr")]
    pub federation: Option<SocketAddr>,
    /// Address of the Prometheus metrics listener (`GET /metrics`), kept apart from the
    /// client port so that only the monitoring network reaches it. `None` (`""`): off.
    #[serde(with = "optional_addr")]
    pub metrics: Option<SocketAddr>,
}

/// `listen.federation` and `listen.metrics` are written `""` when off, so that they appear
/// in the generated configuration and `KAIRAN_LISTEN__FEDERATION` names a known option.
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&addr.map(|a| a.to_string()).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.trim().parse().map(Some).map_err(|e| {
            D::Error::custom(format!("{text:?} is not an address such as \"0.0.0.0:8448\" ({e}); \"\" turns it off"))
        })
    }
}

/// Federation: TLS of the federation listener, trust of other servers' certificates,
/// static routes, who may federate, and the keys this server used before.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// PEM certificate chain of the federation listener. With `tls_private_key` empty too,
    /// a self-signed certificate for the server name is generated into `data_dir`
    /// (for development: other servers only accept it with `verify_tls = false`).
    pub tls_certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_certificate`.
    pub tls_private_key: PathBuf,
    /// PEM file of extra trusted root certificates for outbound TLS (a prefecture's
    /// private CA), trusted beside the system's roots. Empty: system roots only.
    pub ca_bundle: PathBuf,
    /// Verify other servers' TLS certificates. `false` is for tests on a closed bench
    /// only, and is logged loudly.
    pub verify_tls: bool,
    /// Static routes: server name → `"host:port"` or `"ip:port"` (port 8448 when left out),
    /// used before any `.well-known` or SRV discovery. TLS still verifies the server name.
    pub host_overrides: BTreeMap<String, String>,
    /// Servers this one federates with: names, `"*"`, or `"*.suffix"`. Empty: none. An
    /// administrator's run-time setting (`kairan-admin policy server set-federation`) wins.
    pub allowlist: Vec<String>,
    /// Longest wait between retries of a destination that is down, in seconds.
    pub max_retry_interval_secs: u64,
    /// Keys this server signed with before a key rotation, published as `old_verify_keys`
    /// so others can still check old events: `"ed25519:ID" = { key = "BASE64", expired_ts = MS }`.
    pub old_verify_keys: BTreeMap<String, OldVerifyKey>,
}

/// A verify key this server no longer signs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldVerifyKey {
    /// Unpadded base64 of the ed25519 public key (as it was published in `verify_keys`).
    pub key: String,
    /// When it stopped being used, in milliseconds since the Unix epoch.
    pub expired_ts: u64,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            tls_certificate: PathBuf::new(),
            tls_private_key: PathBuf::new(),
            ca_bundle: PathBuf::new(),
            verify_tls: true,
            host_overrides: BTreeMap::new(),
            allowlist: Vec::new(),
            max_retry_interval_secs: 300,
            old_verify_keys: BTreeMap::new(),
        }
    }
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

/// The media repository: upload limit, content policy and where files live.
///
/// Types are MIME types of what the bytes are (magic numbers), never the declared
/// `Content-Type` or the file name. An entry is an exact type (`image/png`), a family
/// (`image/*`) or `*/*`. A type matching `refused_types` is refused; otherwise it must
/// match `allowed_types`; anything else is refused too (the allowlist decides).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Largest upload, in bytes.
    pub max_upload_bytes: u64,
    /// Types refused even when `allowed_types` matches them.
    pub refused_types: Vec<String>,
    /// Types accepted (unless refused).
    pub allowed_types: Vec<String>,
    /// Where content and thumbnails are stored. Empty means `DATA_DIR/media`.
    pub store_dir: PathBuf,
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
            media: MediaConfig::default(),
            push: PushConfig::default(),
            user_directory: UserDirectoryConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            federation: FederationConfig::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { client: SocketAddr::from(([127, 0, 0, 1], 8008)), federation: None, metrics: None }
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

/// Refused by default (the media types `media/detect.rs` names): Microsoft Office documents (with and without macros, legacy and
/// Open XML, RTF, and other OLE2 compound files such as MSI installers and
/// password-protected Office files) and programs (Windows PE, ELF, Mach-O, scripts
/// with `#!`, Java and Android archives and bytecode, Windows app packages).
pub const DEFAULT_REFUSED_TYPES: &[&str] = &[
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-word.document.macroEnabled.12",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.ms-excel.sheet.macroEnabled.12",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.ms-powerpoint.presentation.macroEnabled.12",
    "application/rtf",
    "application/x-ole-storage",
    "application/vnd.microsoft.portable-executable",
    "application/x-executable",
    "application/x-mach-binary",
    "text/x-shellscript",
    "application/java-archive",
    "application/vnd.android.package-archive",
    "application/java",
    "application/vnd.android.dex",
    "application/vnd.ms-appx",
];

/// Accepted by default: common images, PDF, plain text, and bytes no check recognises.
///
/// The last is what an attachment in an end-to-end encrypted room looks like (the
/// client uploads AES ciphertext, which no server can inspect): refusing it would make
/// files and images unsendable in encrypted rooms. Recognised Office documents and
/// programs are still refused, whatever they are declared or named. An administrator who
/// prefers no unreadable uploads at all removes it and forbids encryption in the rooms
/// concerned (docs/configuration.md, "Media policy").
pub const DEFAULT_ALLOWED_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
    "application/octet-stream",
];

impl Default for MediaConfig {
    fn default() -> Self {
        let types = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect();
        Self {
            max_upload_bytes: 50 * 1024 * 1024,
            refused_types: types(DEFAULT_REFUSED_TYPES),
            allowed_types: types(DEFAULT_ALLOWED_TYPES),
            store_dir: PathBuf::new(),
        }
    }
}

impl MediaConfig {
    /// The media directory, with the default under `data_dir` filled in.
    pub fn store_dir(&self, data_dir: &std::path::Path) -> PathBuf {
        if self.store_dir.as_os_str().is_empty() { data_dir.join("media") } else { self.store_dir.clone() }
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self { default_version: "12".to_owned() }
    }
}

impl Config {
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
        include_str!("../../kairan.example.toml")
    }
}
