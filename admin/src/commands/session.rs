//! Logging in, which saves the session in the config file, and logging out, which ends it.

use std::path::Path;

use serde_json::json;

use super::read_password;
use crate::{
    client::Client,
    config::{self, Login},
    error::{CliError, Result, exit},
    output::print_json,
};

pub(super) async fn login(server: &str, user: &str, password_file: Option<&Path>, json: bool) -> Result<()> {
    let password = read_password(password_file)?;
    let anonymous = Client::new(server, None)?;
    let (user_id, device_id, token) = anonymous.login(user, &password).await.map_err(|e| match e.code {
        exit::FAILED if e.message.contains("M_FORBIDDEN") => {
            CliError::new(exit::DENIED, format!("cannot log in as {user}: {}", e.message))
        }
        _ => e,
    })?;
    let client = Client::new(server, Some(token.clone()))?;
    if let Err(e) = client.get("/whoami").await {
        // Do not leave a session behind that nobody will use.
        let _ = client.logout().await;
        return Err(e);
    }
    let path = config::save(&Login {
        server: client.base().to_owned(),
        user_id: user_id.clone(),
        device_id,
        access_token: token,
    })?;
    if json {
        print_json(&json!({ "server": client.base(), "user_id": user_id, "config": path }));
    } else {
        println!("logged in to {} as {user_id}; session saved in {}", client.base(), path.display());
    }
    Ok(())
}

pub(super) async fn logout() -> Result<()> {
    let login = config::load()?;
    let client = Client::new(&login.server, Some(login.access_token.clone()))?;
    match client.logout().await {
        Ok(()) => {}
        // An ended session or an unreachable server must not keep the local login.
        Err(e) if e.code == exit::DENIED || e.code == exit::UNREACHABLE => {
            eprintln!("kairan-admin: warning: {e}");
        }
        Err(e) => return Err(e),
    }
    config::remove()?;
    println!("logged out of {}", login.server);
    Ok(())
}
