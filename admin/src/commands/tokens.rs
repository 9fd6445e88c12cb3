//! Registration tokens: create, list and revoke.

use serde_json::{Map, Value};

use crate::{
    cli::TokensCommand,
    client::{Client, enc},
    error::Result,
    output::{Table, cell, print_json},
};

pub(super) async fn tokens(client: &Client, command: TokensCommand, json: bool) -> Result<()> {
    match command {
        TokensCommand::Create { token, uses, expires } => {
            let mut body = Map::new();
            if let Some(t) = token {
                body.insert("token".into(), t.into());
            }
            if let Some(u) = uses {
                body.insert("uses_allowed".into(), u.into());
            }
            if let Some(e) = expires {
                body.insert("expiry".into(), e.into());
            }
            let v = client.post("/registration_tokens", Value::Object(body)).await?;
            if json {
                print_json(&v);
            } else {
                println!("{}", cell(&v["token"]));
                eprintln!(
                    "registration token created (uses: {}, expires: {})",
                    if v["uses_allowed"].is_null() { "unlimited".into() } else { cell(&v["uses_allowed"]) },
                    cell(&v["expiry"])
                );
            }
            Ok(())
        }
        TokensCommand::List => {
            let v = client.get("/registration_tokens").await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new(&["TOKEN", "USES ALLOWED", "USED", "EXPIRES", "VALID"]);
            for k in v["tokens"].as_array().into_iter().flatten() {
                let allowed = if k["uses_allowed"].is_null() { "unlimited".into() } else { cell(&k["uses_allowed"]) };
                t.row(vec![cell(&k["token"]), allowed, cell(&k["completed"]), cell(&k["expiry"]), cell(&k["valid"])]);
            }
            print!("{}", t.render());
            Ok(())
        }
        TokensCommand::Revoke { token } => {
            let v = client.delete(&format!("/registration_tokens/{}", enc(&token))).await?;
            if json {
                print_json(&v);
            } else {
                println!("revoked registration token {token}");
            }
            Ok(())
        }
    }
}
