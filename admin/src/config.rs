//! The stored login: server URL and access token, in
//! `~/.config/kairan-admin/config.toml` (or `$XDG_CONFIG_HOME/kairan-admin/config.toml`,
//! or the file `KAIRAN_ADMIN_CONFIG` names), readable by its owner only (mode 0600).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result, exit};

/// What `login` stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The homeserver's base URL, e.g. `https://matrix.pref.example`.
    pub server: String,
    pub user_id: String,
    pub device_id: String,
    pub access_token: String,
}

/// Where the login is kept.
pub fn path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAIRAN_ADMIN_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => {
                return Err(CliError::usage(
                    "cannot find your config directory: set HOME, or KAIRAN_ADMIN_CONFIG to a file path",
                ));
            }
        },
    };
    Ok(base.join("kairan-admin").join("config.toml"))
}

/// The stored login, or how to make one.
pub fn load() -> Result<Login> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::new(
                exit::DENIED,
                "not logged in: run kairan-admin login --server URL --user NAME first",
            ));
        }
        Err(e) => return Err(CliError::failed(format!("cannot read {}: {e}", path.display()))),
    };
    toml::from_str(&text).map_err(|e| {
        CliError::failed(format!(
            "{} is not a kairan-admin login ({}); run kairan-admin login again",
            path.display(),
            e.message()
        ))
    })
}

/// Stores the login, readable by its owner only.
pub fn save(login: &Login) -> Result<PathBuf> {
    let path = path()?;
    write_private(&path, &toml::to_string(login).map_err(|e| CliError::failed(e.to_string()))?)?;
    Ok(path)
}

/// Removes the stored login; `false` if there was none.
pub fn remove() -> Result<bool> {
    let path = path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CliError::failed(format!("cannot remove {}: {e}", path.display()))),
    }
}

/// Writes a file that only its owner may read (0600; its directory 0700 when created),
/// through a temporary file and a rename, so that no one ever sees a partial or open copy.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    let cannot = |e: std::io::Error| CliError::failed(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(cannot)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let _ = std::fs::remove_file(&tmp);
    let mut file = options.open(&tmp).map_err(cannot)?;
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(cannot(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("config.toml");
        write_private(&p, "a = 1\n").unwrap();
        write_private(&p, "a = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a = 2\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(p.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        }
    }
}
