//! Loading: the file and the variables merged, every problem found and reported with the
//! line or the variable it came from.

use super::{Config, RegistrationMode};

/// A configuration that cannot be used: every problem found in it, one line each
/// (`FILE: line N: key: message`, or `KAIRAN_VAR: key: message` for a variable), so that
/// an operator fixes them all in one round rather than one per start.
#[derive(Debug)]
pub struct ConfigError {
    problems: Vec<String>,
    /// What was read: the file, and/or the `KAIRAN_*` variables.
    source: String,
}

impl ConfigError {
    pub(super) fn one(message: String, source: String) -> Self {
        Self { problems: vec![message], source }
    }

    /// One line per problem, in the order of the file's lines (variables last).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// `3 problems in kairan.toml`.
    pub fn summary(&self) -> String {
        let n = self.problems.len();
        format!("{n} problem{} in {}", if n == 1 { "" } else { "s" }, self.source)
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        f.write_str(&self.summary())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the file (if any), then applies `KAIRAN_*` variables from `env`, then runs this
    /// module's checks and `checks` (the domains', from the homeserver's `config_check`). An
    /// error lists every problem, not only the first, each with its line or variable.
    pub fn load_with(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        checks: impl Fn(&Config) -> Vec<Problem>,
    ) -> Result<Self, ConfigError> {
        let mut source = None;
        let mut table = match file {
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::one(format!("cannot read config file {name}: {e}"), name.clone()))?;
                // TOML syntax has no recovery: after a syntax error there is nothing to
                // check further. The message carries the line and column.
                let table =
                    text.parse::<toml::Table>().map_err(|e| ConfigError::one(format!("{name}: {e}"), name.clone()))?;
                // The same text again through toml's own parser, for where each key was
                // written: the serde tree (`toml::Table`) keeps no positions.
                let doc = toml_edit::ImDocument::parse(text.clone()).ok();
                source = Some(FileSource { name, text, doc });
                table
            }
            None => toml::Table::new(),
        };
        let mut from_env = Vec::new();
        // Only variables that name an option apply: other KAIRAN_* variables (a test
        // harness's, another kairan tool's) are no business of the server's.
        let known = toml::Value::try_from(Config::default()).unwrap_or(toml::Value::Table(toml::Table::new()));
        for (name, value) in env {
            let Some(path) = name.strip_prefix("KAIRAN_") else { continue };
            if is_option(&known, path) {
                set_path(&mut table, path, &value);
                from_env.push((path.split("__").map(|k| k.to_ascii_lowercase()).collect::<Vec<_>>(), name.clone()));
            }
        }

        let mut problems = Vec::new();
        check_shape(&table, known.as_table(), &mut Vec::new(), &mut problems);
        // Without its bad values (back to their defaults) the rest still makes a `Config`,
        // whose values are then checked too.
        let bad_shapes: Vec<Vec<String>> = problems.iter().map(|p: &Problem| p.path.clone()).collect();
        for path in &bad_shapes {
            remove_path(&mut table, path);
        }
        match toml::Value::Table(table).try_into::<Config>() {
            Ok(config) => {
                for problem in config.validate().into_iter().chain(checks(&config)) {
                    // A value already refused for its type was replaced by its default;
                    // what the checks say about that default is no news.
                    if !bad_shapes.iter().any(|bad| problem.path.starts_with(bad)) {
                        problems.push(problem);
                    }
                }
                if problems.is_empty() {
                    return Ok(config);
                }
            }
            // Each value deserialised alone, so this is a combination the per-value check
            // cannot see; reported as it is rather than lost.
            Err(e) => problems.push(Problem { path: Vec::new(), message: e.message().to_owned() }),
        }
        Err(report(problems, source.as_ref(), &from_env))
    }

    /// The checks of values that have the right type but are wrong, every one this module
    /// can make without a domain.
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut invalid = |path: &[&str], message: String| problems.push(Problem::new(path, message));
        if let Err(e) = ruma::ServerName::parse(&self.server_name) {
            invalid(&["server_name"], format!("{:?} is not a valid server name: {e}", self.server_name));
        }
        if crate::time::parse_utc_offset(&self.admin.utc_offset).is_none() {
            invalid(
                &["admin", "utc_offset"],
                format!("{:?} is not an offset from UTC such as \"+09:00\"", self.admin.utc_offset),
            );
        }
        if !self.admin.archive_user.is_empty() && ruma::UserId::parse(&self.admin.archive_user).is_err() {
            invalid(
                &["admin", "archive_user"],
                format!("{:?} is not a user ID such as \"@archive:{}\"", self.admin.archive_user, self.server_name),
            );
        }
        if self.registration.mode == RegistrationMode::Token && self.registration.tokens.is_empty() {
            tracing::warn!("registration.mode is \"token\" but registration.tokens is empty");
        }
        let fed = &self.federation;
        let set = |p: &std::path::PathBuf| !p.as_os_str().is_empty();
        match (set(&fed.tls_certificate), set(&fed.tls_private_key)) {
            (true, false) => invalid(
                &["federation", "tls_private_key"],
                "is empty but tls_certificate is set; set both or neither".into(),
            ),
            (false, true) => invalid(
                &["federation", "tls_certificate"],
                "is empty but tls_private_key is set; set both or neither".into(),
            ),
            _ => {}
        }
        for entry in &fed.allowlist {
            let name = entry.strip_prefix("*.").unwrap_or(entry);
            if entry != "*" && ruma::ServerName::parse(name).is_err() {
                invalid(&["federation", "allowlist"], format!("{entry:?} is not a server name, \"*\" or \"*.suffix\""));
            }
        }
        for name in fed.host_overrides.keys() {
            if ruma::ServerName::parse(name).is_err() {
                invalid(&["federation", "host_overrides", name.as_str()], format!("{name:?} is not a server name"));
            }
        }
        for (key_id, old) in &fed.old_verify_keys {
            let entry = ["federation", "old_verify_keys", key_id.as_str()];
            if !key_id.starts_with("ed25519:") || key_id.len() <= "ed25519:".len() {
                invalid(&entry, format!("{key_id:?} is not a key ID such as \"ed25519:abc\""));
            }
            let bytes =
                ruma::serde::Base64::<ruma::serde::base64::Standard>::parse(&old.key).map(|b| b.as_bytes().len()).ok();
            if bytes != Some(32) {
                invalid(&entry, "key is not the unpadded base64 of a 32-byte ed25519 public key".to_owned());
            }
        }
        problems
    }
}

/// One problem with the configuration. `path` is the keys from the top
/// (`["federation", "host_overrides", "pref.example"]`; keys may hold dots), so that the
/// message can point at its line in the file or at the variable that set it.
pub struct Problem {
    path: Vec<String>,
    message: String,
}

impl Problem {
    pub fn new(path: &[&str], message: String) -> Self {
        Self { path: path.iter().map(|k| (*k).to_owned()).collect(), message }
    }
}

/// The configuration file as read, to find the line of a key.
struct FileSource {
    name: String,
    text: String,
    /// `None` only if toml_edit refused what toml accepted (the same parser, so never).
    doc: Option<toml_edit::ImDocument<String>>,
}

/// Finds the keys the configuration does not know and the values it cannot take. Each
/// value is deserialised alone into a `Config` (every section has defaults), so serde
/// words the problem as a whole-file parse would (unknown field and the known ones,
/// expected type, unknown variant, an address that does not parse), and one problem does
/// not hide the next. Sections are entered key by key; a map section such as
/// `federation.host_overrides` has an empty default, so each of its entries is checked
/// whole, whatever its key.
fn check_shape(table: &toml::Table, known: Option<&toml::Table>, path: &mut Vec<String>, problems: &mut Vec<Problem>) {
    for (key, value) in table {
        path.push(key.clone());
        match (value, known.and_then(|k| k.get(key))) {
            (toml::Value::Table(inner), Some(toml::Value::Table(default))) => {
                check_shape(inner, Some(default), path, problems);
            }
            _ => {
                let alone = path
                    .iter()
                    .rev()
                    .fold(value.clone(), |v, k| toml::Value::Table(toml::Table::from_iter([(k.clone(), v)])));
                if let Err(e) = alone.try_into::<Config>() {
                    problems.push(Problem { path: path.clone(), message: e.message().to_owned() });
                }
            }
        }
        path.pop();
    }
}

/// Removes the value at `path`, if it is there.
fn remove_path(table: &mut toml::Table, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut current = table;
    for key in parents {
        match current.get_mut(key).and_then(toml::Value::as_table_mut) {
            Some(next) => current = next,
            None => return,
        }
    }
    current.remove(last);
}

/// The problems as lines naming where each value came from: the variable that set it,
/// else its line in the file. Sorted by line, so they read in the file's order.
fn report(problems: Vec<Problem>, file: Option<&FileSource>, from_env: &[(Vec<String>, String)]) -> ConfigError {
    let mut any_env = false;
    let mut lines: Vec<(usize, String)> = problems
        .into_iter()
        .map(|p| {
            let key = display_path(&p.path);
            let what = if key.is_empty() { p.message } else { format!("{key}: {}", p.message) };
            if let Some((_, var)) = from_env.iter().find(|(path, _)| *path == p.path) {
                any_env = true;
                return (usize::MAX, format!("{var}: {what}"));
            }
            match file {
                Some(f) => match f.doc.as_ref().and_then(|doc| line_in(doc, &f.text, &p.path)) {
                    Some(n) => (n, format!("{}: line {n}: {what}", f.name)),
                    None => (usize::MAX, format!("{}: {what}", f.name)),
                },
                None => (usize::MAX, what),
            }
        })
        .collect();
    lines.sort_by_key(|(line, _)| *line);
    let source = match (file, any_env) {
        (Some(f), false) => f.name.clone(),
        (Some(f), true) => format!("{} and the KAIRAN_* variables", f.name),
        (None, _) => "the KAIRAN_* variables".to_owned(),
    };
    ConfigError { problems: lines.into_iter().map(|(_, l)| l).collect(), source }
}

/// `federation.host_overrides."pref.example"`: keys joined with dots, quoted where TOML
/// would need quotes.
fn display_path(path: &[String]) -> String {
    let bare = |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    path.iter().map(|k| if bare(k) { k.clone() } else { format!("{k:?}") }).collect::<Vec<_>>().join(".")
}

/// The line (1-based) where the value at `path` is written: its key's line, or, when the
/// key itself is not in the file (a default), the deepest of its sections that is.
fn line_in(doc: &toml_edit::ImDocument<String>, text: &str, path: &[String]) -> Option<usize> {
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut span = None;
    for key in path {
        let Some((k, item)) = table.get_key_value(key) else { break };
        span = k.span().or_else(|| item.span()).or(span);
        match item.as_table_like() {
            Some(inner) => table = inner,
            None => break,
        }
    }
    span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
}

/// Whether `SECTION__KEY` names an option of the configuration (a value, not a section:
/// `KAIRAN_LOG` is the log filter, not the `[log]` section).
fn is_option(known: &toml::Value, path: &str) -> bool {
    let mut node = known;
    for key in path.split("__") {
        match node.get(key.to_ascii_lowercase()) {
            Some(next) => node = next,
            None => return false,
        }
    }
    !node.is_table()
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
    use crate::config::MediaConfig;

    /// The configuration with this module's checks only.
    fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::load_with(file, env, |_| Vec::new())
    }

    #[test]
    fn defaults_are_valid() {
        let c = load(None, []).unwrap();
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
        let c = load(None, env).unwrap();
        assert_eq!(c.server_name, "pref.example");
        assert!(!c.rate_limits.enabled);
        assert_eq!(c.registration.tokens, ["a", "b"]);
        assert_eq!(c.listen.client.port(), 9000);
    }

    #[test]
    fn unrelated_kairan_variables_are_ignored() {
        let env = [
            ("KAIRAN_TEST_PG_URL".to_owned(), "postgres://x".to_owned()),
            ("KAIRAN_LOG".to_owned(), "debug".to_owned()),
            ("KAIRAN_DATABASE__NOPE".to_owned(), "1".to_owned()),
        ];
        assert_eq!(load(None, env).unwrap().server_name, "localhost");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "server_nam = \"x\"\n").unwrap();
        let err = load(Some(&f), []).unwrap_err().to_string();
        assert!(err.contains("server_nam"), "{err}");
    }

    #[test]
    fn file_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "server_name = \"x\"\n\n[rate_limits]\nburst = \"many\"\n").unwrap();
        let err = load(Some(&f), []).unwrap_err().to_string();
        assert!(err.contains("line 4") && err.contains("burst"), "{err}");
        std::fs::write(&f, "[listen]\nclient = \"127.0.0.1:1\"\nclinet = 1\n").unwrap();
        let err = load(Some(&f), []).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("clinet"), "{err}");
    }

    #[test]
    fn the_example_config_parses() {
        let table: toml::Table = Config::commented_default().parse().unwrap();
        let _: Config = toml::Value::Table(table).try_into().unwrap();
    }

    #[test]
    fn the_example_config_shows_the_media_defaults() {
        let table: toml::Table = Config::commented_default().parse().unwrap();
        let example: Config = toml::Value::Table(table).try_into().unwrap();
        let default = MediaConfig::default();
        assert_eq!(example.media.max_upload_bytes, default.max_upload_bytes);
        assert_eq!(example.media.refused_types, default.refused_types);
        assert_eq!(example.media.allowed_types, default.allowed_types);
        assert_eq!(example.media.store_dir, default.store_dir);
    }

    #[test]
    fn admin_options() {
        let d = load(None, []).unwrap();
        assert_eq!(d.admin.archive_user, "");
        assert_eq!(d.admin.utc_offset_seconds(), 9 * 3600);
        let env = [
            ("KAIRAN_ADMIN__ARCHIVE_USER".to_owned(), "@archive:pref.example".to_owned()),
            ("KAIRAN_ADMIN__UTC_OFFSET".to_owned(), "-03:30".to_owned()),
        ];
        let c = load(None, env).unwrap();
        assert_eq!(c.admin.archive_user, "@archive:pref.example");
        assert_eq!(c.admin.utc_offset_seconds(), -(3 * 3600 + 30 * 60));
        let bad = [("KAIRAN_ADMIN__UTC_OFFSET".to_owned(), "JST".to_owned())];
        assert!(load(None, bad).unwrap_err().to_string().contains("admin.utc_offset"));
        let bad = [("KAIRAN_ADMIN__ARCHIVE_USER".to_owned(), "archive".to_owned())];
        assert!(load(None, bad).unwrap_err().to_string().contains("admin.archive_user"));
        // The CLI's own variable is not an option of the server's.
        let other = [("KAIRAN_ADMIN_CONFIG".to_owned(), "/tmp/x.toml".to_owned())];
        assert_eq!(load(None, other).unwrap().admin.archive_user, "");
    }

    #[test]
    fn metrics_listener_option() {
        assert_eq!(load(None, []).unwrap().listen.metrics, None);
        let on = [("KAIRAN_LISTEN__METRICS".to_owned(), "127.0.0.1:9108".to_owned())];
        assert_eq!(load(None, on).unwrap().listen.metrics, Some("127.0.0.1:9108".parse().unwrap()));
        for value in ["9108", "metrics.lg.example"] {
            let bad = [("KAIRAN_LISTEN__METRICS".to_owned(), value.to_owned())];
            let err = load(None, bad).unwrap_err().to_string();
            assert!(err.contains("metrics") && err.contains(value), "{err}");
        }
    }

    #[test]
    fn federation_options() {
        let d = load(None, []).unwrap();
        assert_eq!(d.listen.federation, None);
        assert!(d.federation.verify_tls && d.federation.allowlist.is_empty());
        assert_eq!(d.federation.max_retry_interval_secs, 300);
        let env = [
            ("KAIRAN_LISTEN__FEDERATION".to_owned(), "0.0.0.0:8448".to_owned()),
            ("KAIRAN_FEDERATION__ALLOWLIST".to_owned(), "[\"*.lg.example\", \"pref.example\"]".to_owned()),
            ("KAIRAN_FEDERATION__VERIFY_TLS".to_owned(), "false".to_owned()),
        ];
        let c = load(None, env).unwrap();
        assert_eq!(c.listen.federation, Some("0.0.0.0:8448".parse().unwrap()));
        assert_eq!(c.federation.allowlist, ["*.lg.example", "pref.example"]);
        assert!(!c.federation.verify_tls);
        let off = [("KAIRAN_LISTEN__FEDERATION".to_owned(), "".to_owned())];
        assert_eq!(load(None, off).unwrap().listen.federation, None);
        let bad = [("KAIRAN_LISTEN__FEDERATION".to_owned(), "8448".to_owned())];
        assert!(load(None, bad).unwrap_err().to_string().contains("8448"));
        let bad = [("KAIRAN_FEDERATION__ALLOWLIST".to_owned(), "[\"a b\"]".to_owned())];
        let err = load(None, bad).unwrap_err().to_string();
        assert!(err.starts_with("KAIRAN_FEDERATION__ALLOWLIST:"), "{err}");
    }

    #[test]
    fn line_in_finds_sections_tables_dotted_and_inline_keys() {
        let text = "a = 1\n[federation]\n tls_certificate = \"x\"\n[federation.host_overrides]\n\"p.example\" = \"y\"\n\n[listen]\nclient = { x = 1, y = 2 }\n";
        let doc = toml_edit::ImDocument::parse(text.to_owned()).unwrap();
        let line = |path: &[&str]| line_in(&doc, text, &path.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>());
        assert_eq!(line(&["federation", "tls_certificate"]), Some(3));
        assert_eq!(line(&["federation", "host_overrides"]), Some(4));
        assert_eq!(line(&["federation", "host_overrides", "p.example"]), Some(5));
        assert_eq!(line(&["listen", "client", "y"]), Some(8));
        // Not in the file: the deepest section that is.
        assert_eq!(line(&["federation", "ca_bundle"]), Some(2));
        assert_eq!(line(&["rooms", "default_version"]), None);
        let text = "federation.ca_bundle = \"x\"\n";
        let doc = toml_edit::ImDocument::parse(text.to_owned()).unwrap();
        assert_eq!(line_in(&doc, text, &["federation".to_owned(), "ca_bundle".to_owned()]), Some(1));
    }

    fn load_file(text: &str, env: &[(&str, &str)]) -> (String, ConfigError) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, text).unwrap();
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        let err = load(Some(&f), env).unwrap_err();
        (f.display().to_string(), err)
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "\
server_name = \"pref.example\"
servername = \"x\"

[listen]
client = \"127.0.0.1:8008\"
clinet = \"127.0.0.1:1\"

[rate_limits]
burst = \"many\"

[admin]
utc_offset = \"JST\"
";
        let (f, err) = load_file(text, &[]);
        let problems = err.problems();
        assert_eq!(problems.len(), 4, "{err}");
        assert!(problems[0].starts_with(&format!("{f}: line 2: servername: unknown field `servername`")), "{err}");
        assert!(problems[1].starts_with(&format!("{f}: line 6: listen.clinet: unknown field `clinet`")), "{err}");
        assert!(
            problems[2].starts_with(&format!("{f}: line 9: rate_limits.burst: invalid type: string \"many\"")),
            "{err}"
        );
        assert!(problems[3].starts_with(&format!("{f}: line 12: admin.utc_offset: \"JST\" is not an offset")), "{err}");
        assert_eq!(err.summary(), format!("4 problems in {f}"));
        assert!(err.to_string().ends_with(&format!("\n4 problems in {f}")), "{err}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_not_also_reported_as_invalid() {
        // Without it, tls_certificate alone would be "set both or neither".
        let (f, err) = load_file("[federation]\ntls_certificate = \"/no/cert.pem\"\ntls_private_key = 5\n", &[]);
        let problems = err.problems();
        assert_eq!(problems.len(), 1, "{err}");
        assert!(problems[0].starts_with(&format!("{f}: line 3: federation.tls_private_key: invalid type")), "{err}");
        // A whole section of the wrong type is one problem.
        let (f, err) = load_file("listen = \"127.0.0.1:8008\"\nrooms.default_version = [12]\n", &[]);
        assert_eq!(err.problems().len(), 2, "{err}");
        assert!(err.problems()[0].starts_with(&format!("{f}: line 1: listen: invalid type: string")), "{err}");
        assert!(err.problems()[1].starts_with(&format!("{f}: line 2: rooms.default_version: invalid type")), "{err}");
    }

    #[test]
    fn problems_from_variables_name_the_variable() {
        let env = [
            ("KAIRAN_RATE_LIMITS__BURST", "many"),
            ("KAIRAN_LOG__FORMAT", "xml"),
            ("KAIRAN_SERVER_NAME", "not a name"),
        ];
        let (f, err) = load_file("[listen]\nclinet = 1\n", &env);
        let problems = err.problems();
        assert_eq!(problems.len(), 4, "{err}");
        assert!(problems[0].starts_with(&format!("{f}: line 2: listen.clinet: unknown field")), "{err}");
        for var in [
            "KAIRAN_RATE_LIMITS__BURST: rate_limits.burst: invalid type",
            "KAIRAN_LOG__FORMAT: log.format: unknown variant `xml`",
            "KAIRAN_SERVER_NAME: server_name: \"not a name\"",
        ] {
            assert!(problems.iter().any(|p| p.starts_with(var)), "{var}\n{err}");
        }
        assert_eq!(err.summary(), format!("4 problems in {f} and the KAIRAN_* variables"));
        let err = load(None, [("KAIRAN_RATE_LIMITS__BURST".to_owned(), "-1".to_owned())]).unwrap_err();
        assert_eq!(err.summary(), "1 problem in the KAIRAN_* variables");
        // A variable's value wins over the file's, and is the one reported.
        let (_, err) =
            load_file("[rate_limits]\nburst = 5\nper_second = \"x\"\n", &[("KAIRAN_RATE_LIMITS__BURST", "x")]);
        assert_eq!(err.problems().len(), 2, "{err}");
        assert!(err.problems()[0].contains("line 3: rate_limits.per_second"), "{err}");
        assert!(err.problems()[1].starts_with("KAIRAN_RATE_LIMITS__BURST: "), "{err}");
    }

    #[test]
    fn a_syntax_error_is_one_problem() {
        let (f, err) = load_file("[listen]\nclient = \n", &[]);
        assert_eq!(err.problems().len(), 1, "{err}");
        assert!(err.problems()[0].starts_with(&format!("{f}: ")) && err.problems()[0].contains("line 2"), "{err}");
    }

    #[test]
    fn floats_accept_integers() {
        let (_, err) = load_file("[rate_limits]\nper_second = 10\nburst = 1.5\n", &[]);
        assert_eq!(err.problems().len(), 1, "{err}");
        assert!(err.problems()[0].contains("rate_limits.burst"), "{err}");
    }
}
