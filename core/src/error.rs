//! The one error type of the server, mapped to a Matrix `errcode` and HTTP status once.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde_json::json;

/// A failure that reaches a client as `{"errcode": ..., "error": ...}`.
#[derive(Debug, thiserror::Error)]
#[error("{errcode}: {message}")]
pub struct Error {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
    /// For `M_LIMIT_EXCEEDED`: when the client may try again.
    pub retry_after_ms: Option<u64>,
    /// Extra top-level fields for the body, e.g. the UIA flows of a 401.
    pub body: Option<serde_json::Value>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! constructors {
    ($($name:ident => $status:ident, $code:literal;)*) => {
        impl Error {
            $(
                #[doc = concat!("`", $code, "`")]
                pub fn $name(message: impl Into<String>) -> Self {
                    Self::new(StatusCode::$status, $code, message)
                }
            )*
        }
    };
}

constructors! {
    forbidden => FORBIDDEN, "M_FORBIDDEN";
    not_found => NOT_FOUND, "M_NOT_FOUND";
    bad_json => BAD_REQUEST, "M_BAD_JSON";
    not_json => BAD_REQUEST, "M_NOT_JSON";
    invalid_param => BAD_REQUEST, "M_INVALID_PARAM";
    missing_param => BAD_REQUEST, "M_MISSING_PARAM";
    unknown_token => UNAUTHORIZED, "M_UNKNOWN_TOKEN";
    missing_token => UNAUTHORIZED, "M_MISSING_TOKEN";
    user_in_use => BAD_REQUEST, "M_USER_IN_USE";
    invalid_username => BAD_REQUEST, "M_INVALID_USERNAME";
    unsupported_room_version => BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION";
    room_in_use => BAD_REQUEST, "M_ROOM_IN_USE";
    too_large => PAYLOAD_TOO_LARGE, "M_TOO_LARGE";
    unrecognized => NOT_FOUND, "M_UNRECOGNIZED";
    method_not_allowed => METHOD_NOT_ALLOWED, "M_UNRECOGNIZED";
    user_deactivated => FORBIDDEN, "M_USER_DEACTIVATED";
    unauthorized => UNAUTHORIZED, "M_UNAUTHORIZED";
    bad_state => BAD_REQUEST, "M_BAD_STATE";
    invalid_room_state => BAD_REQUEST, "M_INVALID_ROOM_STATE";
    unknown => INTERNAL_SERVER_ERROR, "M_UNKNOWN";
    bad_alias => BAD_REQUEST, "M_BAD_ALIAS";
    unavailable => BAD_GATEWAY, "M_UNKNOWN";
}

impl Error {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self { status, errcode, message: message.into(), retry_after_ms: None, body: None }
    }

    /// Adds top-level fields to the error body (e.g. `room_version`).
    pub fn with_body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", "too many requests")
        }
    }

    /// An internal failure: logged in full here, reported to the client without detail.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        Self::unknown(format!("internal error: {context}"))
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Self::internal("database error", err)
    }
}

impl From<ruma::api::error::FromHttpRequestError> for Error {
    fn from(err: ruma::api::error::FromHttpRequestError) -> Self {
        use ruma::api::error::{DeserializationError, FromHttpRequestError};
        match err {
            FromHttpRequestError::Deserialization(DeserializationError::Json(e)) if e.is_syntax() || e.is_eof() => {
                Self::not_json(format!("request body is not valid JSON: {e}"))
            }
            FromHttpRequestError::MethodMismatch { expected, received } => {
                Self::method_not_allowed(format!("expected {expected}, got {received}"))
            }
            other => Self::bad_json(format!("invalid request: {other}")),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut body = json!({ "errcode": self.errcode, "error": self.message });
        if let Some(ms) = self.retry_after_ms {
            body["retry_after_ms"] = ms.into();
        }
        if let Some(serde_json::Value::Object(extra)) = self.body {
            for (k, v) in extra {
                body[k] = v;
            }
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(ms) = self.retry_after_ms {
            let secs = ms.div_ceil(1000).to_string();
            if let Ok(v) = http::HeaderValue::from_str(&secs) {
                response.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        response
    }
}
