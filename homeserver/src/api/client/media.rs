//! Content repository (authenticated media, Matrix v1.11): upload, download, thumbnails,
//! config. URL previews are refused (the server has no internet access).
//!
//! Upload, download and thumbnail are plain axum handlers rather than `Ruma<T>`: an
//! upload body is large and binary, so it must stream past the JSON body limit, and
//! downloads stream a file back. They authenticate with the access token themselves.
//! The unauthenticated `/_matrix/media/{r0,v3}/download|thumbnail` endpoints answer
//! `M_NOT_FOUND`, as Synapse does with `enable_authenticated_media`.

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use http::{HeaderValue, header, request::Parts};
use ruma::{
    OwnedUserId, ServerName, UInt,
    api::client::{authenticated_media, media as legacy},
    http_headers::{ContentDisposition, ContentDispositionType},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::{
    api::{
        Ruma, RumaResponse,
        ruma_io::{RouterExt, access_token},
    },
    media::{Method, StoredMedia},
    services::AppState,
};
use kairan_core::{
    error::{Error, Result},
    ratelimit::LimitClass,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let mut r = r
        .route("/_matrix/media/v3/upload", post(upload))
        .route("/_matrix/media/r0/upload", post(upload))
        .route("/_matrix/client/v1/media/download/{server_name}/{media_id}", get(download))
        .route("/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}", get(download))
        .route("/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}", get(thumbnail));
    for version in ["r0", "v3"] {
        r = r
            .route(&format!("/_matrix/media/{version}/download/{{server_name}}/{{media_id}}"), get(unauthenticated))
            .route(
                &format!("/_matrix/media/{version}/download/{{server_name}}/{{media_id}}/{{file_name}}"),
                get(unauthenticated),
            )
            .route(&format!("/_matrix/media/{version}/thumbnail/{{server_name}}/{{media_id}}"), get(unauthenticated));
    }
    r.ruma(config).ruma(config_legacy).ruma(preview_url).ruma(preview_url_legacy)
}

/// Turns a handler's result into a response.
fn respond(result: Result<Response>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The caller, from `Authorization: Bearer` or `access_token`.
async fn caller(services: &AppState, parts: &Parts) -> Result<OwnedUserId> {
    let token = access_token(parts).ok_or_else(|| Error::missing_token("missing access token"))?;
    Ok(services.authenticate(&token).await?.0)
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

/// POST /_matrix/media/v3/upload
async fn upload(State(services): State<AppState>, req: Request) -> Response {
    respond(upload_inner(services, req).await)
}

async fn upload_inner(services: AppState, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let user = caller(&services, &parts).await?;
    services.limiter.check(LimitClass::Action, user.as_str())?;
    let query = Query::<UploadQuery>::try_from_uri(&parts.uri)
        .map_err(|e| Error::invalid_param(format!("invalid query: {e}")))?
        .0;
    let header = |name| parts.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let declared_type = header(header::CONTENT_TYPE);
    let length = header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let media_id = services
        .media
        .upload(user.as_str(), declared_type, query.filename.as_deref(), length, body.into_data_stream())
        .await?;
    let uri = format!("mxc://{}/{media_id}", services.server_name());
    Ok(Json(json!({ "content_uri": uri })).into_response())
}

/// A media of this server, or `M_NOT_FOUND` (remote media needs federation).
async fn local_media(services: &AppState, server_name: &str, media_id: &str) -> Result<StoredMedia> {
    if <&ServerName>::try_from(server_name).ok() != Some(services.server_name()) {
        return Err(Error::not_found("media not found"));
    }
    services.media.get(media_id).await
}

/// GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]
async fn download(State(services): State<AppState>, req: Request) -> Response {
    respond(download_inner(services, req).await)
}

async fn download_inner(services: AppState, req: Request) -> Result<Response> {
    let (mut parts, _) = req.into_parts();
    caller(&services, &parts).await?;
    let args = path_args(&mut parts, &services).await?;
    let media = local_media(&services, &args[0], &args[1]).await?;
    let file = tokio::fs::File::open(&media.path).await.map_err(|e| Error::internal("opening media", e))?;
    let len = file.metadata().await.map_err(|e| Error::internal("opening media", e))?.len();
    let content_type = media.row.content_type.as_str();
    let disposition = if content_type.starts_with("image/") {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    let name = args.get(2).cloned().or(media.row.upload_name.clone());
    let mut response = Response::new(Body::from_stream(file_stream(file)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    set_media_headers(headers, content_type, ContentDisposition::new(disposition).with_filename(name));
    Ok(response)
}

/// A file as a body stream, in chunks, ending at EOF or after the first error.
fn file_stream(file: tokio::fs::File) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = Vec::with_capacity(64 * 1024);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(Bytes::from(buf)), Some(file))),
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[derive(Debug, Deserialize)]
struct ThumbnailQuery {
    width: Option<String>,
    height: Option<String>,
    method: Option<String>,
}

/// GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
async fn thumbnail(State(services): State<AppState>, req: Request) -> Response {
    respond(thumbnail_inner(services, req).await)
}

async fn thumbnail_inner(services: AppState, req: Request) -> Result<Response> {
    let (mut parts, _) = req.into_parts();
    caller(&services, &parts).await?;
    let args = path_args(&mut parts, &services).await?;
    let q = Query::<ThumbnailQuery>::try_from_uri(&parts.uri)
        .map_err(|e| Error::invalid_param(format!("invalid query: {e}")))?
        .0;
    let dimension = |v: Option<String>, name: &str| {
        let v = v.ok_or_else(|| Error::missing_param(format!("{name} is required")))?;
        v.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Error::invalid_param(format!("{name} must be a positive integer")))
    };
    let (width, height) = (dimension(q.width, "width")?, dimension(q.height, "height")?);
    let method = match q.method.as_deref() {
        None | Some("scale") => Method::Scale,
        Some("crop") => Method::Crop,
        Some(other) => return Err(Error::invalid_param(format!("unknown thumbnail method {other:?}"))),
    };
    if <&ServerName>::try_from(args[0].as_str()).ok() != Some(services.server_name()) {
        return Err(Error::not_found("media not found"));
    }
    let (bytes, content_type) = services.media.thumbnail(&args[1], width, height, method).await?;
    let mut response = Response::new(Body::from(bytes));
    set_media_headers(response.headers_mut(), content_type, ContentDisposition::new(ContentDispositionType::Inline));
    Ok(response)
}

/// The path parameters, as strings (the router matched their number).
async fn path_args(parts: &mut Parts, services: &AppState) -> Result<Vec<String>> {
    use axum::extract::FromRequestParts;
    Path::<Vec<String>>::from_request_parts(parts, services)
        .await
        .map(|p| p.0)
        .map_err(|e| Error::invalid_param(format!("invalid path: {e}")))
}

/// The headers of served media: the detected type, and nothing a browser could run.
fn set_media_headers(headers: &mut http::HeaderMap, content_type: &str, disposition: ContentDisposition) {
    let content_type = if content_type == "text/plain" { "text/plain; charset=utf-8" } else { content_type };
    let value =
        |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, value(content_type));
    if let Ok(v) = HeaderValue::from_str(&disposition.to_string()) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    // As Synapse serves media: sandboxed, no scripts, never sniffed as something else.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
             style-src 'unsafe-inline'; media-src 'self'; object-src 'self';",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Private: only authenticated users may see it. Short: a quarantine should bite soon.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
}

/// GET /_matrix/media/{r0,v3}/download|thumbnail/...: authenticated media only.
async fn unauthenticated() -> Response {
    Error::not_found("media is only served by the authenticated /_matrix/client/v1/media endpoints").into_response()
}

fn config_response(state: &AppState) -> UInt {
    UInt::try_from(state.media.policy().max_upload_bytes).unwrap_or(UInt::MAX)
}

/// GET /_matrix/client/v1/media/config
async fn config(
    state: AppState,
    _req: Ruma<authenticated_media::get_media_config::v1::Request>,
) -> Result<RumaResponse<authenticated_media::get_media_config::v1::Response>> {
    Ok(RumaResponse(authenticated_media::get_media_config::v1::Response::new(config_response(&state))))
}

/// GET /_matrix/media/v3/config
#[allow(deprecated)] // Served on purpose: clients still read the legacy config.
async fn config_legacy(
    state: AppState,
    _req: Ruma<legacy::get_media_config::v3::Request>,
) -> Result<RumaResponse<legacy::get_media_config::v3::Response>> {
    Ok(RumaResponse(legacy::get_media_config::v3::Response::new(config_response(&state))))
}

fn previews_disabled() -> Error {
    Error::forbidden("URL previews are disabled on this server")
}

/// GET /_matrix/client/v1/media/preview_url
async fn preview_url(
    _: AppState,
    _req: Ruma<authenticated_media::get_media_preview::v1::Request>,
) -> Result<Json<Value>> {
    Err(previews_disabled())
}

/// GET /_matrix/media/v3/preview_url
#[allow(deprecated)]
async fn preview_url_legacy(_: AppState, _req: Ruma<legacy::get_media_preview::v3::Request>) -> Result<Json<Value>> {
    Err(previews_disabled())
}
