//! Authenticated media (Matrix v1.11): upload, download and thumbnails over raw HTTP, the
//! content policy (what is accepted or refused is decided by the bytes, not by the declared
//! type or the file name), the upload size limit, quarantine through the admin CLI, and a
//! matrix-sdk client sending and fetching an image attachment.

use std::io::{Cursor, Write as _};

use anyhow::{Context as _, ensure};
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use kairan_tests::{Api, Backend, PASSWORD, Response, ServerOptions, TestServer, assert_matrix_error, enc};
use matrix_sdk::{
    RoomState,
    attachment::AttachmentConfig,
    media::{MediaFormat, MediaRequestParameters, MediaThumbnailSettings},
    ruma::{
        OwnedMxcUri, UInt,
        api::client::room::create_room::v3::{Request as CreateRoomRequest, RoomPreset},
        events::room::MediaSource,
        media::Method,
    },
};

use crate::support::{room_state, sync_until, sync_until_event, user_id};

both_backends!(scenario);

/// The upload limit of the test server: small enough to exceed cheaply.
const MAX_UPLOAD: u64 = 256 * 1024;
const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// A `width` x `height` PNG with a gradient (so that it is not trivially compressible to
/// nothing and a crop is visible).
fn png(width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    encode(&gradient(width, height), ImageFormat::Png)
}

fn gradient(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, y| {
        Rgba([(x * 255 / width) as u8, (y * 255 / height) as u8, ((x + y) % 256) as u8, 255])
    }))
}

fn encode(image: &DynamicImage, format: ImageFormat) -> anyhow::Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    match format {
        // JPEG has no alpha channel.
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(image.to_rgb8()).write_to(&mut out, format)?,
        _ => image.write_to(&mut out, format)?,
    }
    Ok(out.into_inner())
}

/// A minimal Word document: `[Content_Types].xml`, the package relationships and
/// `word/document.xml`, deflated as Word writes them.
fn docx() -> anyhow::Result<Vec<u8>> {
    let files = [
        (
            "[Content_Types].xml",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#,
        ),
        (
            "_rels/.rels",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#,
        ),
        (
            "word/document.xml",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Quarterly report</w:t></w:r></w:p></w:body></w:document>"#,
        ),
    ];
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in files {
        zip.start_file(name, options)?;
        zip.write_all(content.as_bytes())?;
    }
    Ok(zip.finish()?.into_inner())
}

/// A 64-bit ELF header (all a Linux loader needs to recognise a program), zero-padded.
fn elf() -> Vec<u8> {
    let mut bytes = vec![0x7F, b'E', b'L', b'F', 2, 1, 1, 0];
    bytes.resize(16, 0);
    bytes.extend_from_slice(&[2, 0, 0x3E, 0, 1, 0, 0, 0]); // ET_EXEC, x86-64, version 1
    bytes.resize(128, 0);
    bytes
}

/// `(server name, media ID)` of an `mxc://` URI.
fn mxc_parts(uri: &str) -> anyhow::Result<(String, String)> {
    let rest = uri.strip_prefix("mxc://").with_context(|| format!("not an mxc URI: {uri}"))?;
    let (server, id) = rest.split_once('/').with_context(|| format!("no media ID in {uri}"))?;
    ensure!(!server.is_empty() && !id.is_empty() && !id.contains('/'), "malformed mxc URI {uri}");
    Ok((server.to_owned(), id.to_owned()))
}

/// Uploads, requiring 200; returns the `content_uri`.
async fn upload_ok(api: &Api, bytes: &[u8], content_type: &str, filename: Option<&str>) -> anyhow::Result<String> {
    let body = api
        .upload(bytes.to_vec(), content_type, filename)
        .await?
        .ok()
        .with_context(|| format!("uploading {filename:?} as {content_type}"))?;
    Ok(body["content_uri"].as_str().with_context(|| format!("upload response without content_uri: {body}"))?.to_owned())
}

fn download_path(uri: &str) -> anyhow::Result<String> {
    let (server, id) = mxc_parts(uri)?;
    Ok(format!("/_matrix/client/v1/media/download/{}/{}", enc(&server), enc(&id)))
}

fn thumbnail_path(uri: &str, width: u32, height: u32, method: &str) -> anyhow::Result<String> {
    let (server, id) = mxc_parts(uri)?;
    Ok(format!(
        "/_matrix/client/v1/media/thumbnail/{}/{}?width={width}&height={height}&method={method}",
        enc(&server),
        enc(&id)
    ))
}

/// A served file: 200, the expected bytes and a Content-Type starting with `content_type`.
fn ensure_served(response: &Response, bytes: &[u8], content_type: &str, what: &str) -> anyhow::Result<()> {
    ensure!(response.status == 200, "{what}: expected 200, got {}: {}", response.status, response.text);
    let served_type = response.header("content-type").unwrap_or("<none>");
    ensure!(served_type.starts_with(content_type), "{what}: Content-Type {served_type}, expected {content_type}");
    ensure!(
        response.bytes == bytes,
        "{what}: served {} bytes that differ from the {} uploaded",
        response.bytes.len(),
        bytes.len()
    );
    Ok(())
}

/// A thumbnail response: 200, PNG or JPEG as its Content-Type says; its dimensions.
fn thumbnail_dimensions(response: &Response, what: &str) -> anyhow::Result<(u32, u32)> {
    ensure!(response.status == 200, "{what}: expected 200, got {}: {}", response.status, response.text);
    let content_type = response.header("content-type").unwrap_or("<none>");
    let format = match content_type {
        "image/png" => ImageFormat::Png,
        "image/jpeg" => ImageFormat::Jpeg,
        other => anyhow::bail!("{what}: thumbnail Content-Type {other}, expected image/png or image/jpeg"),
    };
    let guessed = image::guess_format(&response.bytes).with_context(|| format!("{what}: not an image"))?;
    ensure!(guessed == format, "{what}: Content-Type {content_type} but the bytes are {guessed:?}");
    let image = image::load_from_memory_with_format(&response.bytes, format)
        .with_context(|| format!("{what}: thumbnail does not decode"))?;
    Ok((image.width(), image.height()))
}

/// A refused upload: 403 `M_FORBIDDEN` whose message names the type detected in the bytes.
fn ensure_refused_as(response: &Response, detected: &str, what: &str) -> anyhow::Result<()> {
    assert_matrix_error(response, 403, "M_FORBIDDEN").with_context(|| what.to_owned())?;
    let message = response.body["error"].as_str().unwrap_or_default();
    ensure!(message.contains(detected), "{what}: the error does not name the detected type {detected}: {message:?}");
    Ok(())
}

async fn scenario(backend: Backend) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().backend(backend).max_upload_bytes(MAX_UPLOAD)).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;

    // The configured limit is advertised.
    let config = bob.get("/_matrix/client/v1/media/config").await?.ok().context("media config")?;
    ensure!(config["m.upload.size"] == MAX_UPLOAD, "media config: {config}");

    // A PNG: stored under this server's name, served back byte for byte as image/png.
    let picture = png(400, 200)?;
    ensure!((picture.len() as u64) < MAX_UPLOAD, "test PNG of {} bytes exceeds the limit", picture.len());
    let png_uri = upload_ok(&alice, &picture, "image/png", Some("garden.png")).await?;
    let (media_server, _) = mxc_parts(&png_uri)?;
    ensure!(media_server == server.server_name(), "content_uri {png_uri} is not on {}", server.server_name());
    let served = bob.get(&download_path(&png_uri)?).await?;
    ensure_served(&served, &picture, "image/png", "PNG download")?;
    let with_name = bob.get(&format!("{}/holiday.png", download_path(&png_uri)?)).await?;
    ensure_served(&with_name, &picture, "image/png", "PNG download with a file name")?;
    let disposition = with_name.header("content-disposition").unwrap_or_default();
    ensure!(disposition.contains("holiday.png"), "Content-Disposition with the requested file name: {disposition:?}");

    // Thumbnails: crop gives the requested box (a standard size) in PNG or JPEG.
    let crop = bob.get(&thumbnail_path(&png_uri, 96, 96, "crop")?).await?;
    ensure!(thumbnail_dimensions(&crop, "96x96 crop")? == (96, 96), "96x96 crop");
    let crop = bob.get(&thumbnail_path(&png_uri, 32, 32, "crop")?).await?;
    ensure!(thumbnail_dimensions(&crop, "32x32 crop")? == (32, 32), "32x32 crop");
    // Never smaller than asked (the spec's MUST), with the box's aspect ratio.
    let (w, h) = thumbnail_dimensions(&bob.get(&thumbnail_path(&png_uri, 50, 50, "crop")?).await?, "50x50 crop")?;
    ensure!(w >= 50 && h >= 50 && w == h, "50x50 crop gave {w}x{h}");
    // Scale keeps the 2:1 aspect ratio and covers the box's width.
    let (w, h) = thumbnail_dimensions(&bob.get(&thumbnail_path(&png_uri, 96, 96, "scale")?).await?, "96x96 scale")?;
    ensure!(w >= 96 && w == 2 * h, "96x96 scale of a 400x200 image gave {w}x{h}");
    // An image smaller than the box is not enlarged.
    let (w, h) = thumbnail_dimensions(&bob.get(&thumbnail_path(&png_uri, 640, 480, "scale")?).await?, "640x480 scale")?;
    ensure!((w, h) == (400, 200), "640x480 scale of a 400x200 image gave {w}x{h}");

    // The other accepted types, each served back with its own type.
    let jpeg = encode(&gradient(120, 80), ImageFormat::Jpeg)?;
    let gif = encode(&gradient(40, 40), ImageFormat::Gif)?;
    let webp = encode(&gradient(40, 40), ImageFormat::WebP)?;
    let pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n".to_vec();
    let text = "Shopping list: tomatoes, beans\n".as_bytes().to_vec();
    let mut accepted = Vec::new();
    for (bytes, content_type, name) in [
        (&jpeg, "image/jpeg", "photo.jpg"),
        (&gif, "image/gif", "anim.gif"),
        (&webp, "image/webp", "sticker.webp"),
        (&pdf, "application/pdf", "minutes.pdf"),
        (&text, "text/plain", "list.txt"),
    ] {
        let uri = upload_ok(&alice, bytes, content_type, Some(name)).await?;
        let served = bob.get(&download_path(&uri)?).await?;
        ensure_served(&served, bytes, content_type, name)?;
        accepted.push(uri);
    }
    let jpeg_uri = &accepted[0];
    let jpeg_thumb = bob.get(&thumbnail_path(jpeg_uri, 32, 32, "crop")?).await?;
    ensure!(thumbnail_dimensions(&jpeg_thumb, "JPEG 32x32 crop")? == (32, 32), "JPEG 32x32 crop");

    // Office documents are refused whatever they are called or declared as; the message
    // names what the bytes are.
    let document = docx()?;
    for (declared, name) in
        [(DOCX, Some("report.docx")), ("image/png", Some("holiday.png")), ("application/octet-stream", None)]
    {
        let response = alice.upload(document.clone(), declared, name).await?;
        ensure_refused_as(&response, DOCX, &format!("a .docx uploaded as {declared} {name:?}"))?;
    }
    // So are programs.
    let response = alice.upload(elf(), "image/png", Some("cat.png")).await?;
    ensure_refused_as(&response, "application/x-executable", "an ELF program uploaded as image/png")?;

    // The size limit: exactly the limit is fine, one byte more is 413 M_TOO_LARGE.
    let at_limit = vec![b'a'; MAX_UPLOAD as usize];
    upload_ok(&alice, &at_limit, "text/plain", Some("limit.txt")).await.context("an upload of exactly the limit")?;
    let over = alice.upload(vec![b'a'; MAX_UPLOAD as usize + 1], "text/plain", Some("over.txt")).await?;
    assert_matrix_error(&over, 413, "M_TOO_LARGE").context("an upload one byte over the limit")?;
    let big_png = alice.upload(vec![0u8; 2 * MAX_UPLOAD as usize], "image/png", Some("big.png")).await?;
    assert_matrix_error(&big_png, 413, "M_TOO_LARGE").context("an upload of twice the limit")?;

    // Media is authenticated: no token, 401 M_MISSING_TOKEN; a bad one, M_UNKNOWN_TOKEN.
    let anonymous = server.anonymous();
    for path in [download_path(&png_uri)?, thumbnail_path(&png_uri, 96, 96, "crop")?] {
        assert_matrix_error(&anonymous.get(&path).await?, 401, "M_MISSING_TOKEN")
            .with_context(|| format!("GET {path} without a token"))?;
        assert_matrix_error(&bob.with_token(Some("not-a-token")).get(&path).await?, 401, "M_UNKNOWN_TOKEN")
            .with_context(|| format!("GET {path} with an unknown token"))?;
    }
    assert_matrix_error(&anonymous.upload(picture.clone(), "image/png", None).await?, 401, "M_MISSING_TOKEN")
        .context("upload without a token")?;
    // The unauthenticated endpoints are frozen (spec 1.11): 404 M_NOT_FOUND.
    let (_, png_id) = mxc_parts(&png_uri)?;
    let legacy = format!("/_matrix/media/v3/download/{}/{}", enc(server.server_name()), enc(&png_id));
    assert_matrix_error(&bob.get(&legacy).await?, 404, "M_NOT_FOUND").context("legacy unauthenticated download")?;
    let unknown = format!("/_matrix/client/v1/media/download/{}/doesNotExist", enc(server.server_name()));
    assert_matrix_error(&bob.get(&unknown).await?, 404, "M_NOT_FOUND").context("unknown media ID")?;

    // Quarantine through the CLI: the PNG is no longer served, not even its thumbnails
    // (which are cached by now); other media are unaffected.
    server.quarantine_media(&png_uri).await?;
    assert_matrix_error(&bob.get(&download_path(&png_uri)?).await?, 404, "M_NOT_FOUND")
        .context("download of quarantined media")?;
    assert_matrix_error(&alice.get(&download_path(&png_uri)?).await?, 404, "M_NOT_FOUND")
        .context("the uploader's download of quarantined media")?;
    assert_matrix_error(&bob.get(&thumbnail_path(&png_uri, 96, 96, "crop")?).await?, 404, "M_NOT_FOUND")
        .context("thumbnail of quarantined media")?;
    ensure_served(&bob.get(&download_path(jpeg_uri)?).await?, &jpeg, "image/jpeg", "JPEG after the quarantine")?;
    let missing = format!("mxc://{}/doesNotExist", server.server_name());
    let output = server.cli(["quarantine-media", missing.as_str()]).await?;
    ensure!(!output.status.success(), "quarantining unknown media succeeded: {output:?}");
    Ok(())
}

/// matrix-sdk sends a PNG with `send_attachment`; the other member fetches it (and a
/// thumbnail) through `Media::get_media_content`, which uses the authenticated endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_attachment() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.client("alice", PASSWORD).await?;
    let bob = server.client("bob", PASSWORD).await?;
    let bob_id = server.user_id("bob");

    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PrivateChat);
    request.invite = vec![user_id(&bob_id)?];
    let room = alice.create_room(request).await.context("alice creates the room")?;
    let room_id = room.room_id().to_owned();
    sync_until(&bob, "bob's invite", |c| room_state(c, &room_id) == Some(RoomState::Invited)).await?;
    bob.get_room(&room_id).context("invited room")?.join().await.context("bob joins")?;

    let picture = png(300, 150)?;
    let sent = room
        .send_attachment("garden.png", &mime::IMAGE_PNG, picture.clone(), AttachmentConfig::new())
        .await
        .context("alice sends the PNG")?;
    let event =
        sync_until_event(&bob, &room_id, "the image on bob's side", |e| e["event_id"] == sent.event_id.as_str())
            .await?;
    let content = &event["content"];
    ensure!(content["msgtype"] == "m.image" && content["body"] == "garden.png", "image event: {event}");
    ensure!(content["info"]["mimetype"] == "image/png", "image info: {event}");
    let url = content["url"].as_str().with_context(|| format!("unencrypted image without url: {event}"))?;
    let uri = OwnedMxcUri::from(url);

    let file = MediaRequestParameters { source: MediaSource::Plain(uri.clone()), format: MediaFormat::File };
    let fetched = bob.media().get_media_content(&file, false).await.context("bob fetches the image")?;
    ensure!(fetched == picture, "bob fetched {} bytes that differ from the {} sent", fetched.len(), picture.len());

    let settings = MediaThumbnailSettings::with_method(Method::Crop, UInt::from(96u32), UInt::from(96u32));
    let thumbnail =
        MediaRequestParameters { source: MediaSource::Plain(uri), format: MediaFormat::Thumbnail(settings) };
    let bytes = bob.media().get_media_content(&thumbnail, false).await.context("bob fetches a thumbnail")?;
    let image = image::load_from_memory(&bytes).context("the thumbnail does not decode")?;
    ensure!((image.width(), image.height()) == (96, 96), "thumbnail {}x{}", image.width(), image.height());
    Ok(())
}
