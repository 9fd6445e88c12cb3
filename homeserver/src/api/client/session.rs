//! Login, logout, whoami and registration.

use axum::{Json, Router};
use ruma::api::client::{
    account::{check_registration_token_validity, get_username_availability, register, whoami},
    session::{get_login_types, login, logout, logout_all},
    uiaa::{AuthData, UserIdentifier},
};
use serde_json::{Value, json};

use crate::{
    accounts::{UiaStage, validate_localpart},
    api::{Ruma, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::{
    config::RegistrationMode,
    error::{Error, Result},
    time::now_ms,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(login_types)
        .ruma(login)
        .ruma(logout)
        .ruma(logout_all)
        .ruma(whoami)
        .ruma(register)
        .ruma(available)
        .ruma(token_validity)
}

/// GET /_matrix/client/v3/login
async fn login_types(_: AppState, _req: Ruma<get_login_types::v3::Request>) -> Result<Json<Value>> {
    Ok(Json(json!({ "flows": [{ "type": "m.login.password" }] })))
}

/// POST /_matrix/client/v3/login
#[allow(deprecated)] // `user` is the pre-r0.4 form some clients still send
async fn login(services: AppState, req: Ruma<login::v3::Request>) -> Result<Json<Value>> {
    let body = req.body;
    let login::v3::LoginInfo::Password(password) = body.login_info else {
        return Err(Error::new(http::StatusCode::BAD_REQUEST, "M_UNKNOWN", "only m.login.password is supported"));
    };
    let user = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (None, Some(user)) => user.clone(),
        _ => return Err(Error::forbidden("only user identifiers are supported")),
    };
    let user_id = services.user_id_from(&user).map_err(|_| Error::forbidden("invalid username or password"))?;
    if !services.is_local(&user_id) {
        return Err(Error::forbidden("invalid username or password"));
    }
    services.check_password(&user_id, &password.password).await?;
    let session = services
        .open_session(&user_id, body.device_id.map(|d| d.to_string()), body.initial_device_display_name.as_deref())
        .await?;
    tracing::info!(user_id = %session.user_id, device = %session.device_id, "login");
    Ok(Json(json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": services.server_name(),
        "well_known": { "m.homeserver": { "base_url": format!("http://{}/", services.config.listen.client) } },
    })))
}

/// POST /_matrix/client/v3/logout
async fn logout(services: AppState, req: Ruma<logout::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    services.remove_devices(&auth.user, Some(std::slice::from_ref(&auth.device))).await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/logout/all
async fn logout_all(services: AppState, req: Ruma<logout_all::v3::Request>) -> Result<Json<Value>> {
    services.remove_devices(req.user()?, None).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/account/whoami
async fn whoami(_: AppState, req: Ruma<whoami::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    Ok(Json(json!({ "user_id": auth.user, "device_id": auth.device, "is_guest": false })))
}

/// GET /_matrix/client/v3/register/available
///
/// Refused while registration is closed (as Synapse does): no name is available then.
async fn available(services: AppState, req: Ruma<get_username_availability::v3::Request>) -> Result<Json<Value>> {
    if services.registration_mode() == RegistrationMode::Closed {
        return Err(Error::forbidden("registration is closed; ask an administrator for an account"));
    }
    validate_localpart(&req.body.username)?;
    let id = services.user_id_from(&req.body.username)?;
    if services.store.user(id.as_str()).await?.is_some() {
        return Err(Error::user_in_use(format!("{id} is taken")));
    }
    Ok(Json(json!({ "available": true })))
}

/// POST /_matrix/client/v3/register
///
/// Closed unless `registration.mode = "token"`; then one UIA stage,
/// `m.login.registration_token`.
async fn register(services: AppState, req: Ruma<register::v3::Request>) -> Result<Json<Value>> {
    let body = req.body;
    if services.registration_mode() == RegistrationMode::Closed {
        return Err(Error::forbidden("registration is closed; ask an administrator for an account"));
    }
    if body.kind == register::RegistrationKind::Guest {
        return Err(Error::forbidden("guest access is disabled"));
    }
    let localpart = match &body.username {
        Some(u) => u.to_lowercase(),
        None => kairan_core::ids::random_localpart(12).to_lowercase(),
    };
    // Check the name before asking for a token, as Synapse does.
    validate_localpart(&localpart)?;
    let user_id = services.user_id_from(&localpart)?;
    if services.store.user(user_id.as_str()).await?.is_some() {
        return Err(Error::user_in_use(format!("{user_id} is already taken")));
    }
    // Everything else is checked before the token stage counts, so a request that
    // fails later has not passed it.
    let stages = [UiaStage::RegistrationToken];
    // A first request without `auth` learns the flows (401), whatever else it lacks: the
    // spec's way in, which clients (matrix-rust-sdk's register({})) take.
    let Some(auth) = &body.auth else {
        return Err(services.uia().challenge(None, &stages, None));
    };
    let password = body.password.clone().ok_or_else(|| Error::missing_param("password is required"))?;
    let session = match auth {
        AuthData::RegistrationToken(t) => {
            if !services.registration_token_valid(&t.token).await? {
                return Err(services.uia().challenge(
                    t.session.as_deref(),
                    &stages,
                    Some(Error::unauthorized("invalid registration token")),
                ));
            }
            services.uia().complete_registration_token(t.session.as_deref(), &t.token)
        }
        other => match other.session() {
            Some(s) if services.uia().completed(s).contains(&UiaStage::RegistrationToken) => s.to_owned(),
            s => return Err(services.uia().challenge(s, &stages, None)),
        },
    };
    // One use of the token per account, whichever request completes the registration:
    // consumed before the account is made, so a token used up meanwhile makes none.
    let token = services.uia().registration_token(&session);
    let used = match &token {
        Some(t) if services.config.registration.tokens.contains(t) => true,
        Some(t) => services.store.use_registration_token(t, now_ms()).await?,
        None => false,
    };
    if !used {
        services.uia().finish(&session);
        return Err(services.uia().challenge(
            None,
            &stages,
            Some(Error::unauthorized("the registration token is used up or has expired")),
        ));
    }
    let user_id = services.create_account(&localpart, Some(password), false).await?;
    services.uia().finish(&session);
    if body.inhibit_login {
        return Ok(Json(json!({ "user_id": user_id })));
    }
    let s = services
        .open_session(&user_id, body.device_id.map(|d| d.to_string()), body.initial_device_display_name.as_deref())
        .await?;
    Ok(Json(json!({ "user_id": s.user_id, "access_token": s.access_token, "device_id": s.device_id })))
}

/// GET /_matrix/client/v1/register/m.login.registration_token/validity
async fn token_validity(
    services: AppState,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<Json<Value>> {
    if services.registration_mode() == RegistrationMode::Closed {
        return Err(Error::forbidden("registration is closed"));
    }
    Ok(Json(json!({ "valid": services.registration_token_valid(&req.body.token).await? })))
}
