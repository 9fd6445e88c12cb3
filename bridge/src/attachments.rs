//! The attachment folder: each file stored once, under its SHA-256, at `<dir>/<sha[0..2]>/<sha>`.
//! The daemon writes it; verify, the office's tools and export read it.

use std::path::{Path, PathBuf};

/// Writes an attachment at `<dir>/<sha[0..2]>/<sha>` (atomically; idempotent).
pub fn store_attachment(dir: &Path, sha: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let path = attachment_path(dir, sha);
    if path.exists() {
        return Ok(path);
    }
    let parent = path.parent().expect("has a parent");
    std::fs::create_dir_all(parent)?;
    // A dot name, so a reader walking the folder skips a write in progress.
    let tmp = parent.join(format!(".{sha}.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Where an attachment with this SHA-256 lives.
pub fn attachment_path(dir: &Path, sha: &str) -> PathBuf {
    dir.join(sha.get(..2).unwrap_or("xx")).join(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_attachment_is_found_at_its_path_and_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let sha = crate::record::sha256_hex(b"minutes");
        let path = store_attachment(dir.path(), &sha, b"minutes").unwrap();
        assert_eq!(path, dir.path().join(&sha[..2]).join(&sha));
        assert_eq!(path, attachment_path(dir.path(), &sha));
        assert_eq!(std::fs::read(&path).unwrap(), b"minutes");
        // Content-addressed: a second store of the same hash leaves the file as it was.
        store_attachment(dir.path(), &sha, b"other").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"minutes");
    }
}
