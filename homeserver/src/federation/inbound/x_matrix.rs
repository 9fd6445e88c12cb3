//! The checks of every request another server makes: the `X-Matrix` header (destination,
//! allowlist) before the body is read, its signature over the whole request after.

use ruma::api::federation::authentication::XMatrix;

use crate::services::Services;
use kairan_core::error::{Error, Result};

impl Services {
    /// The first checks of an incoming federation request, before its body is read: an
    /// `X-Matrix` header that parses (401 otherwise), naming this server as destination
    /// (401), from a server the allowlist names (403).
    pub fn check_x_matrix_header(&self, header: Option<&http::HeaderValue>) -> Result<XMatrix> {
        let header = header.ok_or_else(|| {
            Error::unauthorized("missing X-Matrix authorization: federation requests must be signed by their origin")
        })?;
        let x = XMatrix::try_from(header)
            .map_err(|e| Error::unauthorized(format!("bad X-Matrix authorization header: {e}")))?;
        if let Some(destination) = &x.destination
            && destination != self.server_name()
        {
            return Err(Error::unauthorized(format!(
                "this request is signed for {destination}, but this server is {}",
                self.server_name()
            )));
        }
        if !self.federation_allowed(&x.origin) {
            return Err(Error::forbidden(format!("federation with {} is not allowed", x.origin)));
        }
        Ok(x)
    }

    /// Checks the `X-Matrix` signature over the whole request (method, path and query,
    /// body) with the origin's current keys, fetching them when needed.
    pub async fn verify_x_matrix(&self, x: &XMatrix, request: &http::Request<bytes::Bytes>) -> Result<()> {
        let keys = self.request_verify_keys(&x.origin, x.key.as_str()).await?;
        if keys.get(x.origin.as_str()).is_none_or(|set| !set.contains_key(x.key.as_str())) {
            return Err(Error::unauthorized(format!(
                "cannot verify the X-Matrix signature: no current key {} of {} is known or could be fetched",
                x.key, x.origin
            )));
        }
        x.verify_request(request, self.server_name(), &keys).map_err(|e| {
            tracing::info!(origin = %x.origin, key = %x.key, error = %e, "refused a federation request");
            Error::unauthorized(format!("the X-Matrix signature of {} does not verify: {e}", x.origin))
        })
    }
}
