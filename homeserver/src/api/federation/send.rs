//! Incoming transactions (`/send/{txnId}`); `Services::receive_transaction` does the work.

use axum::{Json, Router};
use ruma::api::federation::transactions::send_transaction_message;
use serde_json::Value;

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new().ruma(send_transaction)
}

/// PUT /_matrix/federation/v1/send/{txnId}
async fn send_transaction(services: AppState, req: Ruma<send_transaction_message::v1::Request>) -> Result<Json<Value>> {
    let origin = req.origin()?.to_owned();
    Ok(Json(services.receive_transaction(&origin, req.body).await?))
}
