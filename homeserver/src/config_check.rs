//! The configuration checks that need a domain: media type patterns, TLS files, host
//! overrides, room versions, push gateways. [`load`] is the one way the binary reads its
//! configuration (`run`, `check-config` and the other subcommands alike), so a value
//! `check-config` accepts is one the server starts with.

use kairan_core::config::{Config, ConfigError, Problem};

use crate::{federation, media::MediaPolicy, push, rooms};

/// The configuration from the file (if any) and the `KAIRAN_*` variables, with every check.
pub fn load(
    file: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    Config::load_with(file, env, check)
}

/// Every problem the domains find in a configuration whose values have the right types.
pub fn check(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut invalid = |path: &[&str], message: String| problems.push(Problem::new(path, message));
    if rooms::version_rules(&config.rooms.default_version).is_none() {
        invalid(
            &["rooms", "default_version"],
            format!("{:?} is not supported; use one of {:?}", config.rooms.default_version, rooms::SUPPORTED_VERSIONS),
        );
    }
    // Each pattern alone, so that every bad one is named; the policy's message starts
    // with the option, which the line already names.
    let media = &config.media;
    let mut media_problems = 0;
    for (option, list) in [("refused_types", &media.refused_types), ("allowed_types", &media.allowed_types)] {
        for pattern in list {
            let one = std::slice::from_ref(pattern);
            let (refused, allowed): (&[String], &[String]) =
                if option == "refused_types" { (one, &[]) } else { (&[], one) };
            if let Err(e) = MediaPolicy::new(media.max_upload_bytes, refused, allowed) {
                let prefix = format!("media.{option}: ");
                invalid(&["media", option], e.strip_prefix(&prefix).unwrap_or(&e).to_owned());
                media_problems += 1;
            }
        }
    }
    if media_problems == 0
        && let Err(e) = MediaPolicy::from_config(media)
    {
        invalid(&["media"], e);
    }
    for gateway in &config.push.gateways {
        if let Err(e) = push::gateway_origin(gateway) {
            invalid(&["push", "gateways"], e);
        }
    }
    // Files named must exist and hold what they should, so that a wrong path is reported
    // by `check-config`, not at the first connection.
    let fed = &config.federation;
    let set = |p: &std::path::PathBuf| !p.as_os_str().is_empty();
    if set(&fed.tls_certificate) && set(&fed.tls_private_key) {
        if let Err(m) = federation::tls::read_certificates(&fed.tls_certificate) {
            invalid(&["federation", "tls_certificate"], m);
        }
        if let Err(m) = federation::tls::read_private_key(&fed.tls_private_key) {
            invalid(&["federation", "tls_private_key"], m);
        }
    }
    if set(&fed.ca_bundle)
        && let Err(m) = federation::tls::read_certificates(&fed.ca_bundle)
    {
        invalid(&["federation", "ca_bundle"], m);
    }
    for (name, target) in &fed.host_overrides {
        if federation::discovery::parse_override(target).is_none() {
            invalid(
                &["federation", "host_overrides", name.as_str()],
                format!("{target:?} is not \"host:port\", \"ip:port\" or \"[ipv6]:port\""),
            );
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use kairan_core::config::OldVerifyKey;

    use super::*;

    #[test]
    fn federation_files_and_tables_are_checked_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        let write = |text: &str| std::fs::write(&f, text).unwrap();
        write(
            "[federation]\nverify_tls = true\ntls_certificate = \"/no/such/cert.pem\"\ntls_private_key = \"/no/key\"\n",
        );
        let err = load(Some(&f), []).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("federation.tls_certificate") && err.contains("/no/such/cert.pem"),
            "{err}"
        );
        write("[federation]\ntls_private_key = \"/no/key\"\n");
        let err = load(Some(&f), []).unwrap_err().to_string();
        assert!(err.contains("set both or neither"), "{err}");
        write("[federation.host_overrides]\n\"pref.example\" = \"10.0.0.1:http\"\n");
        let err = load(Some(&f), []).unwrap_err().to_string();
        // The entry's own line, not its section's.
        assert!(err.contains("line 2") && err.contains("pref.example"), "{err}");
        write(
            "[federation.host_overrides]\n\"pref.example\" = \"10.0.0.1\"\n\n[federation.old_verify_keys]\n\"ed25519:old\" = { key = \"AAAA\", expired_ts = 1 }\n",
        );
        let err = load(Some(&f), []).unwrap_err().to_string();
        assert!(err.contains("line 5") && err.contains("32-byte"), "{err}");
        let key = "Iz6VgsVIx8AyF27vsdNfFIdCbyyuAtO4HWUu1bLnjDU";
        write(&format!("[federation.old_verify_keys]\n\"ed25519:old\" = {{ key = \"{key}\", expired_ts = 1 }}\n"));
        let c = load(Some(&f), []).unwrap();
        assert_eq!(c.federation.old_verify_keys["ed25519:old"], OldVerifyKey { key: key.to_owned(), expired_ts: 1 });
        // Unknown keys are refused in the new section too.
        write("[federation]\nverify_tsl = false\n");
        let err = load(Some(&f), []).unwrap_err().to_string();
        assert!(err.contains("verify_tsl") && err.contains("line 2"), "{err}");
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
    fn every_invalid_value_is_reported() {
        let text = "\
[federation]
allowlist = [\"a b\", \"pref.example\", \"c d\"]

[federation.host_overrides]
\"a.example\" = \"10.0.0.1:http\"
\"b.example\" = 8448

[federation.old_verify_keys]
\"ed25519:old\" = { key = \"AAAA\", expired_ts = 1 }
\"ed25519:older\" = { key = \"AAAA\", expird_ts = 1 }

[media]
refused_types = [\"word\", \"excel\"]

[push]
gateways = [\"https://push.example/notify\"]
";
        let (f, err) = load_file(text, &[]);
        let problems = err.problems();
        let expected = [
            "line 2: federation.allowlist: \"a b\"",
            "line 2: federation.allowlist: \"c d\"",
            "line 5: federation.host_overrides.\"a.example\": \"10.0.0.1:http\" is not",
            "line 6: federation.host_overrides.\"b.example\": invalid type: integer",
            "line 9: federation.old_verify_keys.\"ed25519:old\": key is not",
            "line 10: federation.old_verify_keys.\"ed25519:older\": unknown field `expird_ts`",
            "line 13: media.refused_types: \"word\"",
            "line 13: media.refused_types: \"excel\"",
            "line 16: push.gateways: \"https://push.example/notify\" must be an origin only",
        ];
        assert_eq!(problems.len(), expected.len(), "{err}");
        for (problem, want) in problems.iter().zip(expected) {
            assert!(problem.starts_with(&format!("{f}: {want}")), "{problem:?} is not {want:?}\n{err}");
        }
    }

    #[test]
    fn media_policy_options() {
        let env = [
            ("KAIRAN_MEDIA__MAX_UPLOAD_BYTES".to_owned(), "1000".to_owned()),
            ("KAIRAN_MEDIA__ALLOWED_TYPES".to_owned(), "[\"image/*\"]".to_owned()),
            ("KAIRAN_MEDIA__STORE_DIR".to_owned(), "/srv/media".to_owned()),
        ];
        let c = load(None, env).unwrap();
        assert_eq!(c.media.max_upload_bytes, 1000);
        assert_eq!(c.media.allowed_types, ["image/*"]);
        assert_eq!(c.media.store_dir(&c.data_dir), PathBuf::from("/srv/media"));
        let d = load(None, []).unwrap();
        assert_eq!(d.media.store_dir(&d.data_dir), d.data_dir.join("media"));
        let bad = [("KAIRAN_MEDIA__REFUSED_TYPES".to_owned(), "[\"word\"]".to_owned())];
        let err = load(None, bad).unwrap_err().to_string();
        assert!(err.contains("media.refused_types") && err.contains("word"), "{err}");
    }
}
