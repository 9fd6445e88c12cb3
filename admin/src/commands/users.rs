//! Accounts: one at a time (create, list, show, deactivate, passwords, admin, department,
//! devices), or many at once from a CSV file.

use std::path::Path;

use kairan_types::csv;
use serde_json::{Value, json};

use super::read_password;
use crate::{
    cli::UsersCommand,
    client::{Body, Client, PREFIX, enc, query},
    config,
    error::{CliError, Result},
    output::{Table, cell, csv_field, print_fields, print_json},
};

fn optional_password(file: Option<&Path>) -> Result<Option<String>> {
    file.map(|f| read_password(Some(f))).transpose()
}

fn user_path(user: &str) -> String {
    format!("/users/{}", enc(user))
}

fn show_password(v: &Value, what: &str) {
    if let Some(p) = v["password"].as_str() {
        println!("{what}: {p}");
    }
}

fn user_state(u: &Value) -> String {
    if u["deactivated"] == true { "deactivated".into() } else { "active".into() }
}

pub(super) async fn users(client: &Client, command: UsersCommand, json: bool) -> Result<()> {
    match command {
        UsersCommand::Create { user, name, department, admin, password_file } => {
            let mut body = json!({ "user_id": user, "admin": admin });
            if let Some(n) = name {
                body["displayname"] = n.into();
            }
            if let Some(d) = department {
                body["department"] = d.into();
            }
            if let Some(p) = optional_password(password_file.as_deref())? {
                body["password"] = p.into();
            }
            let v = client.post("/users", body).await?;
            if json {
                print_json(&v);
            } else {
                println!("created {}{}", cell(&v["user_id"]), if admin { " (server administrator)" } else { "" });
                show_password(&v, "initial password");
            }
            Ok(())
        }
        UsersCommand::Import { csv, passwords_out, batch_size } => {
            import(client, &csv, passwords_out.as_deref(), batch_size as usize, json).await
        }
        UsersCommand::List { search, department, admins, deactivated, active, limit, from, all, csv } => {
            let state = if deactivated {
                Some("true".to_owned())
            } else if active {
                Some("false".to_owned())
            } else {
                None
            };
            let mut from = from;
            let mut users = Vec::new();
            let (total, next) = loop {
                let q = query(&[
                    ("limit", Some(limit.to_string())),
                    ("from", from.clone()),
                    ("search", search.clone()),
                    ("department", department.clone()),
                    ("admin", admins.then(|| "true".to_owned())),
                    ("deactivated", state.clone()),
                ]);
                let page = client.get(&format!("/users{q}")).await?;
                users.extend(page["users"].as_array().cloned().unwrap_or_default());
                let next = page["next"].as_str().map(str::to_owned);
                if !all || next.is_none() {
                    break (page["total"].clone(), next);
                }
                from = next;
            };
            if json {
                print_json(&json!({ "users": users, "total": total, "next": next }));
                return Ok(());
            }
            let mut t = Table::new(&["USER ID", "NAME", "DEPARTMENT", "ADMIN", "STATE", "CREATED"]);
            for u in &users {
                t.row(vec![
                    cell(&u["user_id"]),
                    cell(&u["displayname"]),
                    cell(&u["department"]),
                    cell(&u["admin"]),
                    user_state(u),
                    cell(&u["created"]),
                ]);
            }
            if csv {
                print!("{}", t.csv());
            } else {
                print!("{}", t.render());
                eprintln!("{} of {} accounts", users.len(), cell(&total));
            }
            if let Some(n) = next {
                eprintln!("more: add --from {n} (or --all)");
            }
            Ok(())
        }
        UsersCommand::Show { user } => {
            let v = client.get(&user_path(&user)).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            print_fields(&[
                ("user ID", cell(&v["user_id"])),
                ("display name", cell(&v["displayname"])),
                ("department", cell(&v["department"])),
                ("administrator", cell(&v["admin"])),
                ("state", user_state(&v)),
                ("created", cell(&v["created"])),
                ("sessions", cell(&v["sessions"])),
                ("last sync day", cell(&v["last_active_day"])),
                ("joined rooms", v["joined_rooms"].as_array().map_or(0, Vec::len).to_string()),
            ]);
            Ok(())
        }
        UsersCommand::Deactivate { user } => {
            let v = client.post(&format!("{}/deactivate", user_path(&user)), json!({})).await?;
            if json {
                print_json(&v);
            } else {
                println!("deactivated {}; their sessions have ended", cell(&v["user_id"]));
            }
            Ok(())
        }
        UsersCommand::Reactivate { user, password_file } => {
            let mut body = json!({});
            if let Some(p) = optional_password(password_file.as_deref())? {
                body["password"] = p.into();
            }
            let v = client.post(&format!("{}/reactivate", user_path(&user)), body).await?;
            if json {
                print_json(&v);
            } else {
                println!("reactivated {}", cell(&v["user_id"]));
                show_password(&v, "new password");
            }
            Ok(())
        }
        UsersCommand::ResetPassword { user, password_file, keep_sessions } => {
            let mut body = json!({ "logout_devices": !keep_sessions });
            if let Some(p) = optional_password(password_file.as_deref())? {
                body["password"] = p.into();
            }
            let v = client.post(&format!("{}/password", user_path(&user)), body).await?;
            if json {
                print_json(&v);
            } else {
                let ended = if keep_sessions { "" } else { "; their sessions have ended" };
                println!("new password set for {}{ended}", cell(&v["user_id"]));
                show_password(&v, "new password");
            }
            Ok(())
        }
        UsersCommand::SetAdmin { user, revoke } => {
            let v = client.put(&format!("{}/admin", user_path(&user)), json!({ "admin": !revoke })).await?;
            if json {
                print_json(&v);
            } else if revoke {
                println!("{} is no longer a server administrator", cell(&v["user_id"]));
            } else {
                println!("{} is now a server administrator", cell(&v["user_id"]));
            }
            Ok(())
        }
        UsersCommand::SetDepartment { user, department } => {
            let v =
                client.put(&format!("{}/department", user_path(&user)), json!({ "department": department })).await?;
            if json {
                print_json(&v);
            } else {
                println!("{}: department {}", cell(&v["user_id"]), cell(&v["department"]));
            }
            Ok(())
        }
        UsersCommand::Devices { user } => {
            let v = client.get(&format!("{}/devices", user_path(&user))).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new(&["DEVICE", "NAME", "LAST SEEN", "IP"]);
            for d in v["devices"].as_array().into_iter().flatten() {
                t.row(vec![
                    cell(&d["device_id"]),
                    cell(&d["display_name"]),
                    cell(&d["last_seen"]),
                    cell(&d["last_seen_ip"]),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        UsersCommand::DeleteDevice { user, device } => {
            let v = client.delete(&format!("{}/devices/{}", user_path(&user), enc(&device))).await?;
            if json {
                print_json(&v);
            } else {
                println!("ended session {device} of {}", cell(&v["user_id"]));
            }
            Ok(())
        }
    }
}

/// One row to import, with the line it came from.
struct Row {
    line: usize,
    body: Value,
}

async fn import(client: &Client, file: &Path, passwords_out: Option<&Path>, batch: usize, json: bool) -> Result<()> {
    let name = file.display().to_string();
    let text = std::fs::read(file).map_err(|e| CliError::usage(format!("cannot read {name}: {e}")))?;
    let text = String::from_utf8(text)
        .map_err(|_| CliError::usage(format!("{name} is not UTF-8 text; save it as UTF-8 CSV")))?;
    let mut records = csv::parse(&text)
        .map_err(|(line, e)| CliError::usage(format!("{name} line {line}: {e}; nothing was imported")))?;
    if records.first().is_some_and(csv::is_header) {
        records.remove(0);
    }
    let total = records.len();
    if total == 0 {
        return Err(CliError::usage(format!("{name} has no rows to import")));
    }
    // (line, user, error)
    let mut failed: Vec<(usize, String, String)> = Vec::new();
    let mut rows = Vec::new();
    for r in records {
        let n = r.fields.len();
        let user = r.fields.first().map(|u| u.trim().to_owned()).unwrap_or_default();
        if !(3..=4).contains(&n) {
            failed.push((
                r.line,
                user,
                format!("expected 3 columns (user ID, display name, department) or 4 (with a password), found {n}"),
            ));
            continue;
        }
        if user.is_empty() {
            failed.push((r.line, user, "the user ID is empty".into()));
            continue;
        }
        let mut body =
            json!({ "line": r.line, "user_id": user, "displayname": r.fields[1], "department": r.fields[2] });
        if let Some(p) = r.fields.get(3).filter(|p| !p.is_empty()) {
            body["password"] = p.clone().into();
        }
        rows.push(Row { line: r.line, body });
    }
    let mut created: Vec<Value> = Vec::new();
    let mut done = failed.len();
    eprintln!("importing {total} rows from {name}");
    for chunk in rows.chunks(batch) {
        let body = json!({ "users": chunk.iter().map(|r| r.body.clone()).collect::<Vec<_>>() });
        let answer =
            client.call(reqwest::Method::POST, &format!("{PREFIX}/users/import"), Some(Body::Json(body))).await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let first = chunk.first().map_or(0, |r| r.line);
                return Err(CliError::new(
                    e.code,
                    format!("{e} (stopped at {name} line {first}; {} accounts were created before)", created.len()),
                ));
            }
        };
        for c in answer["created"].as_array().into_iter().flatten() {
            created.push(c.clone());
        }
        for f in answer["failed"].as_array().into_iter().flatten() {
            let line = f["line"].as_u64().unwrap_or(0) as usize;
            let user = f["user_id"].as_str().map(str::to_owned).unwrap_or_else(|| {
                chunk
                    .iter()
                    .find(|r| r.line == line)
                    .and_then(|r| r.body["user_id"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            });
            let code = f["errcode"].as_str().unwrap_or("");
            failed.push((line, user, format!("{} ({code})", f["error"].as_str().unwrap_or("failed"))));
        }
        done += chunk.len();
        eprintln!("  {done}/{total} rows: {} created, {} failed", created.len(), failed.len());
    }
    failed.sort_by_key(|f| f.0);

    // Generated initial passwords: to the file given, or to stdout as CSV.
    let generated: Vec<(String, String)> = created
        .iter()
        .filter_map(|c| Some((c["user_id"].as_str()?.to_owned(), c["password"].as_str()?.to_owned())))
        .collect();
    let mut passwords_csv = String::from("user_id,password\n");
    for (u, p) in &generated {
        passwords_csv.push_str(&format!("{},{}\n", csv_field(u), csv_field(p)));
    }
    if let Some(out) = passwords_out {
        config::write_private(out, &passwords_csv)?;
    }
    for (line, user, why) in &failed {
        let who = if user.is_empty() { String::new() } else { format!("{user}: ") };
        eprintln!("kairan-admin: {name} line {line}: {who}{why}");
    }
    let created_n = created.len();
    if json {
        let created: Vec<Value> = created
            .into_iter()
            .map(|mut c| {
                if passwords_out.is_some()
                    && let Some(o) = c.as_object_mut()
                {
                    o.remove("password");
                }
                c
            })
            .collect();
        let failed: Vec<Value> =
            failed.iter().map(|(line, user, error)| json!({ "line": line, "user_id": user, "error": error })).collect();
        print_json(&json!({ "created": created, "failed": failed }));
    } else if passwords_out.is_none() && !generated.is_empty() {
        print!("{passwords_csv}");
    }
    eprintln!(
        "created {} accounts; {} rows failed{}",
        created_n,
        failed.len(),
        match (passwords_out, generated.is_empty()) {
            (Some(out), false) => format!("; initial passwords written to {}", out.display()),
            _ => String::new(),
        }
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "{} of {total} rows failed (listed above); the other rows were imported",
            failed.len()
        )))
    }
}
