//! The media repository: uploads checked against the content policy by what the bytes
//! are, content-addressed files on disk, thumbnails, quarantine.
//!
//! An upload streams into a temporary file under `store_dir/tmp` while its SHA-256 and
//! type are computed; the policy then decides. A refused or oversized upload leaves
//! nothing behind. An accepted one is fsynced, renamed to `store_dir/ab/cd/<sha256>`
//! (the directory fsynced too), and only then is its metadata row committed, so a row
//! never points at content that a crash could lose. Thumbnails are cached under
//! `store_dir/thumbnails/ab/cd/<sha256>-<w>x<h>-<method>`.

pub mod detect;
pub mod thumbnail;

use std::{
    path::{Path, PathBuf},
    sync::RwLock,
    time::{Duration, SystemTime},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub use self::thumbnail::Method;
use crate::storage::{Store, media::MediaRow};
use kairan_core::{
    config::{Config, MediaConfig},
    error::{Error, Result},
    time::now_ms,
};

/// What may be uploaded. Replaceable at run time ([`MediaService::set_policy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPolicy {
    pub max_upload_bytes: u64,
    /// Patterns (`type/subtype`, `type/*`, `*/*`), lowercase.
    pub refused_types: Vec<String>,
    pub allowed_types: Vec<String>,
}

impl MediaPolicy {
    /// The policy of the configuration; the error names the option and the bad entry.
    pub fn from_config(c: &MediaConfig) -> Result<Self, String> {
        Self::new(c.max_upload_bytes, &c.refused_types, &c.allowed_types)
    }

    pub fn new(max_upload_bytes: u64, refused: &[String], allowed: &[String]) -> Result<Self, String> {
        let patterns = |list: &[String], option: &str| {
            list.iter()
                .map(|p| {
                    let p = p.trim().to_ascii_lowercase();
                    if valid_pattern(&p) {
                        Ok(p)
                    } else {
                        Err(format!("media.{option}: {p:?} is not a MIME type pattern (type/subtype, type/* or */*)"))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let policy = Self {
            max_upload_bytes,
            refused_types: patterns(refused, "refused_types")?,
            allowed_types: patterns(allowed, "allowed_types")?,
        };
        Ok(policy)
    }

    /// Whether content detected as `content_type` may be stored: not refused, and allowed.
    pub fn permits(&self, content_type: &str) -> bool {
        let t = content_type.to_ascii_lowercase();
        let matches = |p: &String| {
            p == "*/*" || *p == t || p.strip_suffix("/*").is_some_and(|family| t.split('/').next() == Some(family))
        };
        !self.refused_types.iter().any(matches) && self.allowed_types.iter().any(matches)
    }
}

fn valid_pattern(p: &str) -> bool {
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    match p.split_once('/') {
        Some(("*", "*")) => true,
        Some((family, "*")) => token(family),
        Some((family, sub)) => token(family) && token(sub),
        None => false,
    }
}

/// A stored media ready to be served.
#[derive(Debug)]
pub struct StoredMedia {
    pub row: MediaRow,
    pub path: PathBuf,
}

/// The media repository of one homeserver.
#[derive(Debug)]
pub struct MediaService {
    store: Store,
    dir: PathBuf,
    policy: RwLock<MediaPolicy>,
}

/// A temporary file, removed on drop unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl MediaService {
    /// Creates the media directories (and removes temporary files a crash left behind).
    pub fn new(config: &Config, store: Store) -> anyhow::Result<Self> {
        let policy = MediaPolicy::from_config(&config.media).map_err(|e| anyhow::anyhow!(e))?;
        for t in policy.allowed_types.iter().filter(|t| policy.refused_types.contains(t)) {
            tracing::warn!("media type {t} is both allowed and refused: it is refused");
        }
        let dir = config.media.store_dir(&config.data_dir);
        for d in [dir.clone(), dir.join("tmp"), dir.join("thumbnails")] {
            std::fs::create_dir_all(&d).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", d.display()))?;
        }
        // Only old ones: another process (a CLI command) may start while uploads run.
        if let Ok(entries) = std::fs::read_dir(dir.join("tmp")) {
            let old = SystemTime::now() - Duration::from_secs(24 * 3600);
            for e in entries.flatten() {
                if e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < old) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Self { store, dir, policy: RwLock::new(policy) })
    }

    pub fn policy(&self) -> MediaPolicy {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the policy; uploads that finish after this are judged by the new one.
    pub fn set_policy(&self, policy: MediaPolicy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// Where content with this hash lives.
    pub fn content_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(&sha256[..2]).join(&sha256[2..4]).join(sha256)
    }

    /// Stores an upload if the policy permits what its bytes are; the new media ID.
    /// `length` is the announced size, if any, checked before anything is read.
    pub async fn upload<S, E>(
        &self,
        uploader: &str,
        declared_type: Option<&str>,
        upload_name: Option<&str>,
        length: Option<u64>,
        mut body: S,
    ) -> Result<String>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let max = self.policy().max_upload_bytes;
        let too_large = || Error::too_large(format!("uploads are limited to {max} bytes"));
        if length.is_some_and(|n| n > max) {
            drain(&mut body, max).await;
            return Err(too_large());
        }
        let tmp_path = self.dir.join("tmp").join(format!("up-{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>())));
        let file = tokio::fs::File::create(&tmp_path).await.map_err(|e| Error::internal("creating upload file", e))?;
        let tmp = TempFile(Some(tmp_path));
        let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, file);
        let mut hasher = Sha256::new();
        let mut sniffer = detect::Sniffer::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                Error::new(http::StatusCode::BAD_REQUEST, "M_UNKNOWN", format!("could not read the upload: {e}"))
            })?;
            size += chunk.len() as u64;
            if size > max {
                drain(&mut body, max).await;
                return Err(too_large());
            }
            hasher.update(&chunk);
            sniffer.feed(&chunk);
            file.write_all(&chunk).await.map_err(|e| Error::internal("writing upload", e))?;
        }
        file.flush().await.map_err(|e| Error::internal("writing upload", e))?;
        file.get_ref().sync_all().await.map_err(|e| Error::internal("syncing upload", e))?;
        drop(file);
        let path = tmp.0.clone().expect("set above");
        let content_type = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&path)?;
            sniffer.finish(&mut f)
        })
        .await
        .map_err(|e| Error::internal("detecting upload type", e))?
        .map_err(|e| Error::internal("detecting upload type", e))?;
        if !self.policy().permits(content_type) {
            tracing::info!(
                uploader,
                content_type,
                declared_type,
                upload_name,
                size,
                "upload refused by the media policy"
            );
            return Err(Error::forbidden(format!("files of type {content_type} are not allowed")));
        }
        let sha256: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.put_content(tmp, &sha256).await.map_err(|e| Error::internal("storing upload", e))?;
        let media_id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>());
        let clip = |s: Option<&str>| s.map(|s| s.chars().take(255).collect::<String>());
        self.store
            .insert_media(&MediaRow {
                media_id: media_id.clone(),
                uploader: uploader.to_owned(),
                sha256,
                size: size as i64,
                content_type: content_type.to_owned(),
                declared_type: clip(declared_type),
                upload_name: clip(upload_name),
                created_ts: now_ms(),
                quarantined: false,
            })
            .await?;
        tracing::info!(uploader, media_id, content_type, size, "media uploaded");
        Ok(media_id)
    }

    /// Moves a synced temporary file to its content address (or drops it when the
    /// content is already there) and syncs the directories that changed.
    async fn put_content(&self, mut tmp: TempFile, sha256: &str) -> std::io::Result<()> {
        let target = self.content_path(sha256);
        let leaf = target.parent().expect("content paths have a parent").to_owned();
        if tokio::fs::try_exists(&target).await? {
            return Ok(());
        }
        tokio::fs::create_dir_all(&leaf).await?;
        let from = tmp.0.take().expect("temporary file");
        if let Err(e) = tokio::fs::rename(&from, &target).await {
            tmp.0 = Some(from);
            return Err(e);
        }
        for d in [leaf.as_path(), leaf.parent().unwrap_or(&self.dir), &self.dir] {
            sync_dir(d).await?;
        }
        Ok(())
    }

    /// A media that may be served: not quarantined, its content present.
    pub async fn get(&self, media_id: &str) -> Result<StoredMedia> {
        let not_found = || Error::not_found("media not found");
        let row = self.store.media(media_id).await?.ok_or_else(not_found)?;
        if row.quarantined {
            return Err(not_found());
        }
        let path = self.content_path(&row.sha256);
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            tracing::warn!(media_id, path = %path.display(), "media content is missing from the store");
            return Err(not_found());
        }
        Ok(StoredMedia { row, path })
    }

    /// A thumbnail of an image media: `(bytes, content type)`, from the cache when made before.
    pub async fn thumbnail(
        &self,
        media_id: &str,
        width: u32,
        height: u32,
        method: Method,
    ) -> Result<(Vec<u8>, &'static str)> {
        let media = self.get(media_id).await?;
        let content_type = media.row.content_type.clone();
        if !thumbnail::supported(&content_type) {
            return Err(Error::not_found(format!("no thumbnails are made of {content_type}")));
        }
        let out_type = thumbnail::output_type(&content_type);
        let (w, h) = thumbnail::standard_size(width, height);
        let sha = &media.row.sha256;
        let cached = self
            .dir
            .join("thumbnails")
            .join(&sha[..2])
            .join(&sha[2..4])
            .join(format!("{sha}-{w}x{h}-{}", method.as_str()));
        if let Ok(bytes) = tokio::fs::read(&cached).await {
            return Ok((bytes, out_type));
        }
        let source = media.path.clone();
        let made = tokio::task::spawn_blocking(move || thumbnail::render(&source, &content_type, w, h, method))
            .await
            .map_err(|e| Error::internal("making thumbnail", e))?;
        let bytes = match made {
            Ok(b) => b,
            Err(e) => {
                tracing::info!(media_id, error = %e, "no thumbnail could be made");
                return Err(Error::not_found("no thumbnail can be made of this media"));
            }
        };
        // The cache is an optimisation: failing to write it costs a later re-render.
        if let Err(e) = write_atomically(&cached, &bytes).await {
            tracing::warn!(error = %e, path = %cached.display(), "cannot cache thumbnail");
        }
        Ok((bytes, out_type))
    }

    /// Quarantines a media: downloads and thumbnails of it answer 404 from now on (the
    /// content stays on disk, for investigation and release).
    pub async fn quarantine(&self, media_id: &str) -> Result<()> {
        if !self.store.set_media_quarantined(media_id, true).await? {
            return Err(Error::not_found(format!("no media {media_id}")));
        }
        tracing::warn!(media_id, "media quarantined");
        Ok(())
    }
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("has a parent");
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(".tmp-{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 9]>())));
    tokio::fs::write(&tmp, bytes).await?;
    if let Err(e) = tokio::fs::rename(&tmp, path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    Ok(())
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    tokio::fs::File::open(dir).await?.sync_all().await?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Reads and discards what is left of a refused upload, up to about as much again as the
/// limit: a client still sending when the answer comes would see the connection closed
/// instead of the 413 (HTTP/1.1 cannot answer early and keep the connection). Beyond that
/// the connection is cut, so a huge upload costs no more than this.
async fn drain<S, E>(body: &mut S, max: u64)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let cap = max.saturating_add(DRAIN_SLACK);
    let mut read = 0u64;
    while read < cap {
        match body.next().await {
            Some(Ok(chunk)) => read += chunk.len() as u64,
            _ => break,
        }
    }
}

/// What a refused upload may still send, beyond the limit, to get its 413 delivered.
const DRAIN_SLACK: u64 = 8 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    struct Fixture {
        media: MediaService,
        dir: tempfile::TempDir,
    }

    impl Fixture {
        async fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let config = Config { data_dir: dir.path().to_owned(), ..Config::default() };
            let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display()), 2).await.unwrap();
            Self { media: MediaService::new(&config, store).unwrap(), dir }
        }

        /// Every file under the media directory (content, thumbnails, temporary files).
        fn files(&self) -> Vec<PathBuf> {
            fn walk(d: &Path, out: &mut Vec<PathBuf>) {
                for e in std::fs::read_dir(d).unwrap().flatten() {
                    if e.path().is_dir() { walk(&e.path(), out) } else { out.push(e.path()) }
                }
            }
            let mut out = Vec::new();
            walk(&self.dir.path().join("media"), &mut out);
            out
        }

        async fn upload(&self, bytes: &[u8], declared: &str, name: &str) -> Result<String> {
            // Small chunks, so detection and hashing see chunk boundaries everywhere.
            let chunks: Vec<Result<Bytes, Infallible>> =
                bytes.chunks(7).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            self.media.upload("@a:x", Some(declared), Some(name), None, futures::stream::iter(chunks)).await
        }
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbaImage::from_pixel(w, h, image::Rgba([0, 90, 200, 255]))
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    fn docx() -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        for (name, data) in [("[Content_Types].xml", "<Types/>"), ("word/document.xml", "<w:document/>")] {
            w.start_file(name, options).unwrap();
            w.write_all(data.as_bytes()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[tokio::test]
    async fn upload_serve_thumbnail_and_quarantine() {
        let f = Fixture::new().await;
        let bytes = png(400, 300);
        let id = f.upload(&bytes, "application/octet-stream", "photo.bin").await.unwrap();
        let got = f.media.get(&id).await.unwrap();
        assert_eq!(got.row.content_type, "image/png", "the detected type, not the declared one");
        assert_eq!(got.row.declared_type.as_deref(), Some("application/octet-stream"));
        assert_eq!(got.row.upload_name.as_deref(), Some("photo.bin"));
        assert_eq!(got.row.size, bytes.len() as i64);
        assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
        let sha = &got.row.sha256;
        assert!(got.path.ends_with(format!("{}/{}/{sha}", &sha[..2], &sha[2..4])));
        // The same content again: a new media ID, one file.
        let again = f.upload(&bytes, "image/png", "copy.png").await.unwrap();
        assert_ne!(again, id);
        assert_eq!(f.media.get(&again).await.unwrap().path, got.path);
        assert_eq!(f.files().len(), 1);

        let (thumb, ty) = f.media.thumbnail(&id, 90, 90, Method::Crop).await.unwrap();
        assert_eq!(ty, "image/png");
        let img = image::load_from_memory(&thumb).unwrap();
        assert_eq!((img.width(), img.height()), (96, 96));
        assert_eq!(f.files().len(), 2, "the thumbnail is cached");
        assert_eq!(f.media.thumbnail(&id, 96, 96, Method::Crop).await.unwrap().0, thumb);
        let (scaled, _) = f.media.thumbnail(&id, 320, 240, Method::Scale).await.unwrap();
        let img = image::load_from_memory(&scaled).unwrap();
        assert_eq!((img.width(), img.height()), (320, 240));

        let text = f.upload(b"hello", "text/plain", "a.txt").await.unwrap();
        assert_eq!(f.media.thumbnail(&text, 32, 32, Method::Scale).await.unwrap_err().errcode, "M_NOT_FOUND");

        f.media.quarantine(&id).await.unwrap();
        assert_eq!(f.media.get(&id).await.unwrap_err().status, http::StatusCode::NOT_FOUND);
        assert_eq!(f.media.thumbnail(&id, 32, 32, Method::Crop).await.unwrap_err().errcode, "M_NOT_FOUND");
        assert!(f.media.get(&again).await.is_ok(), "quarantine is per media ID");
        assert_eq!(f.media.quarantine("nope").await.unwrap_err().errcode, "M_NOT_FOUND");
        assert_eq!(f.media.get("nope").await.unwrap_err().errcode, "M_NOT_FOUND");
    }

    #[tokio::test]
    async fn refused_and_oversized_uploads_leave_nothing() {
        let f = Fixture::new().await;
        let err = f.upload(&docx(), "image/png", "photo.png").await.unwrap_err();
        assert_eq!((err.status, err.errcode), (http::StatusCode::FORBIDDEN, "M_FORBIDDEN"));
        assert_eq!(err.message, format!("files of type {} are not allowed", detect::DOCX));
        let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
        elf.resize(200, 0);
        assert_eq!(f.upload(&elf, "text/plain", "readme.txt").await.unwrap_err().errcode, "M_FORBIDDEN");
        assert_eq!(
            f.upload(b"<html><body>x</body></html>", "text/plain", "a.txt").await.unwrap_err().errcode,
            "M_FORBIDDEN"
        );
        assert!(f.files().is_empty(), "{:?}", f.files());

        let policy = MediaPolicy { max_upload_bytes: 10, ..f.media.policy() };
        f.media.set_policy(policy.clone());
        let err = f.upload(b"hello world", "text/plain", "a.txt").await.unwrap_err();
        assert_eq!((err.status, err.errcode), (http::StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"));
        let announced =
            f.media.upload("@a:x", None, None, Some(11), futures::stream::empty::<Result<Bytes, Infallible>>());
        assert_eq!(announced.await.unwrap_err().errcode, "M_TOO_LARGE");
        assert!(f.files().is_empty(), "{:?}", f.files());
        assert!(f.upload(b"0123456789", "text/plain", "a.txt").await.is_ok(), "exactly the limit is fine");

        // The policy can change at run time.
        f.media.set_policy(MediaPolicy::new(1 << 20, &[], &[detect::DOCX.to_owned()]).unwrap());
        assert!(f.upload(&docx(), "application/octet-stream", "a.docx").await.is_ok());
        assert_eq!(f.upload(b"hello", "text/plain", "a.txt").await.unwrap_err().errcode, "M_FORBIDDEN");
    }

    fn policy(refused: &[&str], allowed: &[&str]) -> MediaPolicy {
        let v = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        MediaPolicy::new(100, &v(refused), &v(allowed)).unwrap()
    }

    #[test]
    fn default_policy() {
        use kairan_core::config::{DEFAULT_ALLOWED_TYPES, DEFAULT_REFUSED_TYPES};
        let p = MediaPolicy::from_config(&MediaConfig::default()).unwrap();
        for t in DEFAULT_ALLOWED_TYPES {
            assert!(p.permits(t), "{t}");
        }
        for t in DEFAULT_REFUSED_TYPES {
            assert!(!p.permits(t), "{t}");
        }
        assert!(!p.permits("application/zip"), "what is not allowed is refused");
        assert!(!p.permits("text/html"));
        assert!(p.permits(detect::OCTET_STREAM), "ciphertext of encrypted attachments passes by default");
        // The configuration's defaults are written out as strings; they name what detect finds.
        use detect::*;
        for t in [DOC, DOCX, DOCM, XLS, XLSX, XLSM, PPT, PPTX, PPTM, OLE_STORAGE, JAR, APK, APPX] {
            assert!(DEFAULT_REFUSED_TYPES.contains(&t), "{t} is not refused by default");
        }
        assert!(DEFAULT_ALLOWED_TYPES.contains(&OCTET_STREAM));
    }

    #[test]
    fn patterns_and_precedence() {
        let p = policy(&["image/svg+xml", "application/*"], &["*/*"]);
        assert!(p.permits("image/png") && p.permits("text/plain"));
        assert!(!p.permits("image/svg+xml") && !p.permits("application/pdf"));
        let p = policy(&[detect::DOCX], &[detect::DOCX, "IMAGE/*"]);
        assert!(!p.permits(detect::DOCX), "refused beats allowed");
        assert!(p.permits("image/webp"));
        assert!(p.permits("Image/PNG"), "types compare case-insensitively");
        assert!(!p.permits("imagex/png"));
        let bad = MediaPolicy::new(1, &["word".to_owned()], &[]).unwrap_err();
        assert!(bad.contains("media.refused_types"), "{bad}");
        assert!(MediaPolicy::new(1, &[], &["*/png".to_owned()]).is_err());
    }
}
