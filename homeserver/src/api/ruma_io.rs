//! One extractor for every Matrix endpoint: it authenticates the caller as the
//! endpoint's ruma metadata demands, applies the body limit and rate limit, and parses
//! the request with ruma. A handler's argument type says who may call it.

use std::{future::Future, net::SocketAddr};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::BytesMut;
use http::request::Parts;
use ruma::{
    OwnedServerName, OwnedUserId, ServerName, UserId,
    api::{
        IncomingRequest, OutgoingResponse,
        auth_scheme::{
            AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken, NoAuthentication,
        },
        path_builder::PathBuilder,
    },
};

use crate::services::AppState;
use kairan_core::{
    error::{Error, Result},
    ratelimit::LimitClass,
};

/// The body limit of federation requests, when `limits.max_request_bytes` is lower.
const FEDERATION_MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// Who must be authenticated for an endpoint, derived from ruma's auth scheme type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    None,
    Optional,
    Required,
    /// Another homeserver, authenticated by an X-Matrix signature.
    Server,
}

pub trait AuthRequirement {
    const REQUIREMENT: Requirement;
}

macro_rules! requirement {
    ($($t:ty => $r:ident),*) => { $(impl AuthRequirement for $t { const REQUIREMENT: Requirement = Requirement::$r; })* };
}
// `NoAccessToken` endpoints (profiles, the public room list, aliases, media) need no token,
// but one that is sent must be valid, as for every optional one: a client whose session
// ended learns so (`M_UNKNOWN_TOKEN`) wherever it next calls.
requirement!(NoAuthentication => None, NoAccessToken => Optional, AccessToken => Required,
    AccessTokenOptional => Optional, AppserviceToken => Required, AppserviceTokenOptional => Optional,
    ruma::api::federation::authentication::ServerSignatures => Server);

/// The authenticated caller of a client endpoint.
#[derive(Debug, Clone)]
pub struct Auth {
    pub user: OwnedUserId,
    pub device: String,
    pub token: String,
}

/// A parsed Matrix request and its caller.
pub struct Ruma<T> {
    pub body: T,
    pub auth: Option<Auth>,
    /// The server that signed a federation request (verified before the handler runs).
    pub origin: Option<OwnedServerName>,
    pub client_ip: String,
}

impl<T> Ruma<T> {
    /// The caller; endpoints that require a token always have one.
    pub fn auth(&self) -> Result<&Auth> {
        self.auth.as_ref().ok_or_else(|| Error::missing_token("missing access token"))
    }

    pub fn user(&self) -> Result<&UserId> {
        Ok(&self.auth()?.user)
    }

    /// The requesting server of a federation endpoint.
    pub fn origin(&self) -> Result<&ServerName> {
        self.origin.as_deref().ok_or_else(|| Error::unauthorized("missing X-Matrix authorization"))
    }
}

pub(crate) fn access_token(parts: &Parts) -> Option<String> {
    if let Some(h) = parts.headers.get(http::header::AUTHORIZATION) {
        return h.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(|t| t.trim().to_owned());
    }
    parts.uri.query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")).map(|t| t.to_owned()))
}

/// Refuses bodies that ruma's parser panics on instead of rejecting, before ruma sees them.
///
/// ruma-client-api 0.24's `LoginInfo` deserializer reads `data["type"]` from the JSON
/// object, and indexing a `serde_json::Map` by a missing key panics ("no entry found for
/// key"), so `POST /login` with `{}` panics, and so does an empty body, which ruma reads as
/// `{}`. The panic would be caught below, but a panic still means a defect: the answer must
/// not depend on the unwinding of a library.
fn refuse_what_ruma_panics_on<T: 'static>(body: &[u8]) -> Result<()> {
    use std::any::TypeId;
    if TypeId::of::<T>() == TypeId::of::<ruma::api::client::session::login::v3::Request>() {
        // The first JSON value, as serde_json hands it to ruma before it looks at what
        // follows: `{}x` is refused for its trailing bytes only after ruma has read `{}`.
        let first = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>().next();
        let without_type = body.is_empty()
            || matches!(first, Some(Ok(serde_json::Value::Object(ref object))) if !object.contains_key("type"));
        if without_type {
            return Err(Error::bad_json("invalid request: missing field `type`"));
        }
    }
    Ok(())
}

impl<T> FromRequest<AppState> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: AuthRequirement,
{
    type Rejection = Error;

    async fn from_request(req: Request, services: &AppState) -> Result<Self> {
        let (mut parts, body) = req.into_parts();
        let mut path_args: Vec<String> =
            Path::<Vec<String>>::from_request_parts(&mut parts, services).await.map(|p| p.0).unwrap_or_default();
        // `/state/{type}/` and `/state/{type}` address the empty state key; the router
        // matched them without the last parameter.
        let expected = T::PATH_BUILDER.all_paths().next().map_or(0, |p| p.matches('{').count());
        if path_args.len() + 1 == expected {
            path_args.push(String::new());
        }
        let client_ip = ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, services)
            .await
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default();
        let token = access_token(&parts);
        // A federation request: the header is checked (destination, allowlist) before the
        // body is read, and the signature over method, URI and body before anything runs.
        let x_matrix = match T::Authentication::REQUIREMENT {
            Requirement::Server => {
                Some(services.check_x_matrix_header(parts.headers.get(http::header::AUTHORIZATION))?)
            }
            _ => None,
        };
        let auth = match (T::Authentication::REQUIREMENT, token) {
            (Requirement::Server, _) => None,
            (Requirement::None, _) | (Requirement::Optional, None) => None,
            (Requirement::Required, None) => return Err(Error::missing_token("missing access token")),
            (_, Some(token)) => {
                let (user, device) = services.authenticate(&token).await?;
                services.device_seen(&user, &device, &client_ip);
                Some(Auth { user, device, token })
            }
        };
        if T::RATE_LIMITED {
            match (&auth, &x_matrix) {
                (Some(a), _) => services.limiter.check(LimitClass::Action, a.user.as_str())?,
                (None, Some(x)) => services.limiter.check(LimitClass::Action, x.origin.as_str())?,
                (None, None) => services.limiter.check(LimitClass::Login, &client_ip)?,
            }
        }
        let limit = match x_matrix {
            // A transaction carries up to 50 PDUs of up to 64 KiB each, plus EDUs.
            Some(_) => services.config.limits.max_request_bytes.max(FEDERATION_MAX_REQUEST_BYTES),
            None => services.config.limits.max_request_bytes,
        };
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| Error::too_large(format!("request body is larger than {limit} bytes")))?;
        refuse_what_ruma_panics_on::<T>(&bytes)?;
        let request = http::Request::from_parts(parts, bytes);
        let origin = match &x_matrix {
            Some(x) => {
                services.verify_x_matrix(x, &request).await?;
                Some(x.origin.clone())
            }
            None => None,
        };
        // Parsing is pure, so a panic inside it (a ruma bug on input not yet refused above)
        // can be caught safely and reported as the client's mistake; the panic message is
        // still logged, and the bad-input runs (scripts/schemathesis.sh) fail on it.
        let parsed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::try_from_http_request(request, &path_args)));
        let body = match parsed {
            Ok(result) => result?,
            Err(_) => return Err(Error::bad_json("the request body does not have the shape this endpoint expects")),
        };
        Ok(Self { body, auth, origin, client_ip })
    }
}

/// A ruma response as an HTTP response.
pub struct RumaResponse<R>(pub R);

impl<R: OutgoingResponse> IntoResponse for RumaResponse<R> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(res) => res.map(|b| Body::from(b.freeze())),
            Err(e) => Error::internal("serialising response", e).into_response(),
        }
    }
}

/// Registers a handler on every path (stable and legacy) of a ruma endpoint.
pub trait RouterExt {
    fn ruma<T, F, Fut, R>(self, handler: F) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: AuthRequirement,
        F: Fn(AppState, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: IntoResponse + 'static;
}

impl RouterExt for Router<AppState> {
    fn ruma<T, F, Fut, R>(mut self, handler: F) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: AuthRequirement,
        F: Fn(AppState, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: IntoResponse + 'static,
    {
        let Ok(method) = MethodFilter::try_from(T::METHOD) else { return self };
        for path in T::PATH_BUILDER.all_paths() {
            let mut paths = vec![path.to_owned()];
            // A trailing state key may be empty, which the router cannot match as a parameter.
            if let Some(prefix) = path.strip_suffix("/{state_key}") {
                paths.push(format!("{prefix}/"));
                paths.push(prefix.to_owned());
            }
            for p in paths {
                let h = handler.clone();
                self = self.route(
                    &p,
                    on(method, move |State(services): State<AppState>, req: Ruma<T>| async move {
                        h(services, req)
                            .await
                            .map(IntoResponse::into_response)
                            .unwrap_or_else(IntoResponse::into_response)
                    }),
                );
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use ruma::api::client::session::login::v3::Request as Login;

    /// Bodies ruma's `LoginInfo` would panic on are refused first, trailing bytes included
    /// (found by the `request` fuzz target: `{}x`).
    #[test]
    fn login_bodies_without_type_are_refused_before_ruma() {
        for body in [&b""[..], b"{}", b"{}x", b"{\"password\":\"p\"} trailing", b"  {\"identifier\":{}}]"] {
            assert!(super::refuse_what_ruma_panics_on::<Login>(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
        assert!(super::refuse_what_ruma_panics_on::<Login>(br#"{"type":"m.login.password"}"#).is_ok());
        // Other endpoints are not looked at.
        assert!(super::refuse_what_ruma_panics_on::<ruma::api::client::account::whoami::v3::Request>(b"{}").is_ok());
    }
}
