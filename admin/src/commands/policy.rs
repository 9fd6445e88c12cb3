//! Policy: a room's (official record, retention, encryption, allowed servers) and the
//! server's (federation allowlist, media limits, registration).

use serde_json::{Map, Value, json};

use super::room_path;
use crate::{
    cli::{Encryption, OnExpiry, RoomPolicyArgs, RoomPolicyCommand, ServerPolicyCommand},
    client::Client,
    error::{CliError, Result},
    output::{cell, print_fields, print_json},
};

pub(super) fn policy_summary(p: &Value) -> String {
    if p.is_null() {
        return "none".into();
    }
    let mut parts = Vec::new();
    if p["official"] == true {
        parts.push(format!(
            "official record, retention {}, on expiry {}, {}",
            cell(&p["retention"]),
            cell(&p["on_expiry"]),
            cell(&p["department"])
        ));
    } else {
        parts.push("not official".to_owned());
        if !p["department"].is_null() {
            parts.push(format!("department {}", cell(&p["department"])));
        }
    }
    if !p["encryption"].is_null() {
        parts.push(format!("encryption {}", cell(&p["encryption"])));
    }
    if !p["allowed_servers"].is_null() {
        parts.push(format!("servers {}", cell(&p["allowed_servers"])));
    }
    parts.join("; ")
}

pub(super) async fn room_policy(client: &Client, command: RoomPolicyCommand, json: bool) -> Result<()> {
    match command {
        RoomPolicyCommand::Show { room } => {
            let v = client.get(&format!("{}/policy", room_path(&room))).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            print_fields(&[
                ("room ID", cell(&v["room_id"])),
                ("policy", policy_summary(&v["policy"])),
                ("updated", format!("{} by {}", cell(&v["policy"]["updated"]), cell(&v["policy"]["updated_by"]))),
                ("published", if v["published"].is_null() { "no".into() } else { v["published"].to_string() }),
                ("encrypted", cell(&v["encrypted"])),
                ("server ACL", if v["server_acl"].is_null() { "-".into() } else { cell(&v["server_acl"]["allow"]) }),
                ("blocked", cell(&v["blocked"])),
            ]);
            Ok(())
        }
        RoomPolicyCommand::Set(a) => set_room_policy(client, a, json).await,
    }
}

async fn set_room_policy(client: &Client, a: RoomPolicyArgs, json: bool) -> Result<()> {
    let mut body = Map::new();
    if a.official {
        body.insert("official".into(), true.into());
    }
    if a.not_official {
        body.insert("official".into(), false.into());
    }
    if let Some(r) = a.retention {
        body.insert("retention".into(), r.into());
    }
    if let Some(e) = a.on_expiry {
        let e = match e {
            OnExpiry::Transfer => "transfer",
            OnExpiry::Dispose => "dispose",
        };
        body.insert("on_expiry".into(), e.into());
    }
    if let Some(d) = a.department {
        body.insert("department".into(), d.into());
    }
    if let Some(e) = a.encryption {
        let e = match e {
            Encryption::Required => "required",
            Encryption::Forbidden => "forbidden",
            Encryption::None => "none",
        };
        body.insert("encryption".into(), e.into());
    }
    if a.any_server {
        body.insert("allowed_servers".into(), json!(["*"]));
    } else if !a.allow_server.is_empty() {
        body.insert("allowed_servers".into(), json!(a.allow_server));
    }
    if body.is_empty() {
        return Err(CliError::usage(
            "nothing to change: give --official, --retention, --on-expiry, --department, --encryption or --allow-server",
        ));
    }
    let v = client.put(&format!("{}/policy", room_path(&a.room)), Value::Object(body)).await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    println!("{}: {}", cell(&v["room_id"]), policy_summary(&v["policy"]));
    for e in v["events"].as_array().into_iter().flatten() {
        println!("  sent {} {}", cell(&e["type"]), cell(&e["event_id"]));
    }
    if v["archive_invited"] == true {
        println!("  the archive account was invited");
    }
    Ok(())
}

/// `50M` → 52428800.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], t[i..].trim().to_ascii_uppercase()),
        None => (t, String::new()),
    };
    let mult: u64 = match unit.trim_end_matches(['B', 'I']).trim_end_matches('I') {
        "" => 1,
        "K" => 1024,
        "M" => 1024 * 1024,
        "G" => 1024 * 1024 * 1024,
        _ => return Err(CliError::usage(format!("{s:?} is not a size such as 52428800, 512K, 50M or 1G"))),
    };
    let n: u64 = digits.parse().map_err(|_| CliError::usage(format!("{s:?} is not a size such as 50M")))?;
    n.checked_mul(mult).filter(|n| *n > 0).ok_or_else(|| CliError::usage(format!("{s:?} is not a usable size")))
}

pub(super) async fn server_policy(client: &Client, command: ServerPolicyCommand, json: bool) -> Result<()> {
    let v = match command {
        ServerPolicyCommand::Show => client.get("/policy").await?,
        ServerPolicyCommand::SetFederation { servers, none } => {
            if servers.is_empty() && !none {
                return Err(CliError::usage("name the servers to allow, or give --none to allow no server"));
            }
            client.put("/policy/federation", json!({ "allowlist": servers })).await?
        }
        ServerPolicyCommand::SetMedia { max_upload, allow, refuse, refuse_none } => {
            let mut body = Map::new();
            if let Some(m) = max_upload {
                body.insert("max_upload_bytes".into(), parse_size(&m)?.into());
            }
            if !allow.is_empty() {
                body.insert("allowed_types".into(), json!(allow));
            }
            if !refuse.is_empty() || refuse_none {
                body.insert("refused_types".into(), json!(refuse));
            }
            if body.is_empty() {
                return Err(CliError::usage(
                    "nothing to change: give --max-upload, --allow, --refuse or --refuse-none",
                ));
            }
            client.put("/policy/media", Value::Object(body)).await?
        }
        ServerPolicyCommand::SetRegistration { mode } => {
            client.put("/policy/registration", json!({ "mode": mode })).await?
        }
    };
    if json {
        print_json(&v);
        return Ok(());
    }
    let allow = v["federation_allowlist"].as_array().cloned().unwrap_or_default();
    print_fields(&[
        (
            "federation allowlist",
            if allow.is_empty() { "(none: no other server)".into() } else { cell(&Value::Array(allow)) },
        ),
        ("registration", cell(&v["registration_mode"])),
        ("media max upload", format!("{} bytes", cell(&v["media"]["max_upload_bytes"]))),
        ("media allowed", cell(&v["media"]["allowed_types"])),
        ("media refused", cell(&v["media"]["refused_types"])),
    ]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50M").unwrap(), 50 * 1024 * 1024);
        assert_eq!(parse_size("512k").unwrap(), 512 * 1024);
        assert_eq!(parse_size("1GiB").unwrap(), 1024 * 1024 * 1024);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("0").is_err());
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5T").is_err());
    }
}
