//! What each command does: one or a few admin API calls, and their answer printed.

use std::{io::Read as _, path::Path};

use kairan_types::csv;
use serde_json::{Map, Value, json};

use crate::{
    cli::{
        AuditArgs, Cli, Command, Encryption, OnExpiry, PolicyCommand, RoomPolicyArgs, RoomPolicyCommand, RoomsCommand,
        ServerPolicyCommand, TokensCommand, UsersCommand,
    },
    client::{Body, Client, PREFIX, enc, query},
    config::{self, Login},
    error::{CliError, Result, exit},
    output::{Table, cell, csv_field, growth, percent, print_fields, print_json},
};

pub async fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Login { server, user, password_file } => login(&server, &user, password_file.as_deref(), json).await,
        Command::Logout => logout().await,
        command => {
            if let Command::Figures { month, .. } = &command {
                check_month(month)?;
            }
            let login = config::load()?;
            let client = Client::new(&login.server, Some(login.access_token.clone()))?;
            match command {
                Command::Users(c) => users(&client, c, json).await,
                Command::Tokens(c) => tokens(&client, c, json).await,
                Command::Rooms(c) => rooms(&client, c, json).await,
                Command::Policy(PolicyCommand::Room(c)) => room_policy(&client, c, json).await,
                Command::Policy(PolicyCommand::Server(c)) => server_policy(&client, c, json).await,
                Command::Figures { month, csv } => figures(&client, &month, csv, json).await,
                Command::Audit(a) => audit(&client, a, json).await,
                Command::Login { .. } | Command::Logout => unreachable!("handled above"),
            }
        }
    }
}

/// A password from the first line of a file, or of stdin.
fn read_password(file: Option<&Path>) -> Result<String> {
    let text = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| CliError::usage(format!("cannot read the password file {}: {e}", f.display())))?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CliError::usage(format!("cannot read the password from stdin: {e}")))?;
            s
        }
    };
    let password = text.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        return Err(CliError::usage(match file {
            Some(f) => format!("the password file {} is empty", f.display()),
            None => "no password on stdin; pipe it in or give --password-file FILE".to_owned(),
        }));
    }
    Ok(password)
}

fn optional_password(file: Option<&Path>) -> Result<Option<String>> {
    file.map(|f| read_password(Some(f))).transpose()
}

async fn login(server: &str, user: &str, password_file: Option<&Path>, json: bool) -> Result<()> {
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

async fn logout() -> Result<()> {
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

fn user_path(user: &str) -> String {
    format!("/users/{}", enc(user))
}

fn room_path(room: &str) -> String {
    format!("/rooms/{}", enc(room))
}

fn show_password(v: &Value, what: &str) {
    if let Some(p) = v["password"].as_str() {
        println!("{what}: {p}");
    }
}

fn user_state(u: &Value) -> String {
    if u["deactivated"] == true { "deactivated".into() } else { "active".into() }
}

async fn users(client: &Client, command: UsersCommand, json: bool) -> Result<()> {
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

async fn tokens(client: &Client, command: TokensCommand, json: bool) -> Result<()> {
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

async fn rooms(client: &Client, command: RoomsCommand, json: bool) -> Result<()> {
    match command {
        RoomsCommand::List { search, limit, from, all, csv } => {
            let mut from = from;
            let mut rooms = Vec::new();
            let (total, next) = loop {
                let q =
                    query(&[("limit", Some(limit.to_string())), ("from", from.clone()), ("search", search.clone())]);
                let page = client.get(&format!("/rooms{q}")).await?;
                rooms.extend(page["rooms"].as_array().cloned().unwrap_or_default());
                let next = page["next"].as_str().map(str::to_owned);
                if !all || next.is_none() {
                    break (page["total"].clone(), next);
                }
                from = next;
            };
            if json {
                print_json(&json!({ "rooms": rooms, "total": total, "next": next }));
                return Ok(());
            }
            let mut t = Table::new(&["ROOM ID", "NAME", "MEMBERS", "OFFICIAL", "BLOCKED", "PUBLIC", "VERSION"]);
            for r in &rooms {
                t.row(vec![
                    cell(&r["room_id"]),
                    cell(&r["name"]),
                    cell(&r["joined_members"]),
                    cell(&r["official"]),
                    cell(&r["blocked"]),
                    cell(&r["public"]),
                    cell(&r["room_version"]),
                ]);
            }
            if csv {
                print!("{}", t.csv());
            } else {
                print!("{}", t.render());
                eprintln!("{} of {} rooms", rooms.len(), cell(&total));
            }
            if let Some(n) = next {
                eprintln!("more: add --from {n} (or --all)");
            }
            Ok(())
        }
        RoomsCommand::Show { room } => {
            let v = client.get(&room_path(&room)).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            print_fields(&[
                ("room ID", cell(&v["room_id"])),
                ("name", cell(&v["name"])),
                ("topic", cell(&v["topic"])),
                ("aliases", cell(&v["aliases"])),
                ("version", cell(&v["room_version"])),
                ("creator", cell(&v["creator"])),
                ("public", cell(&v["public"])),
                ("encrypted", cell(&v["encrypted"])),
                ("blocked", cell(&v["blocked"])),
                ("joined members", cell(&v["joined_members"])),
                ("servers", cell(&v["servers"])),
                ("policy", policy_summary(&v["policy"])),
                ("state events", v["state"].as_array().map_or(0, Vec::len).to_string()),
            ]);
            let mut t = Table::new(&["MEMBER", "MEMBERSHIP"]);
            for m in v["members"].as_array().into_iter().flatten() {
                t.row(vec![cell(&m["user_id"]), cell(&m["membership"])]);
            }
            println!();
            print!("{}", t.render());
            Ok(())
        }
        RoomsCommand::Shutdown { room, no_evacuate, no_block, reason } => {
            let mut body = json!({ "evacuate": !no_evacuate, "block": !no_block });
            if let Some(r) = reason {
                body["reason"] = r.into();
            }
            let v = client.post(&format!("{}/shutdown", room_path(&room)), body).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let evacuated = v["evacuated"].as_array().map_or(0, Vec::len);
            println!(
                "shut down {}: {evacuated} local members removed{}",
                cell(&v["room_id"]),
                if v["blocked"] == true { "; joins are refused from now on" } else { "" }
            );
            for f in v["failed"].as_array().into_iter().flatten() {
                eprintln!("kairan-admin: could not remove {}: {}", cell(&f["user_id"]), cell(&f["error"]));
            }
            Ok(())
        }
        RoomsCommand::Purge { room, before } => {
            let v = client.post(&format!("{}/purge", room_path(&room)), json!({ "before": before })).await?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "deleted {} events of {} before {}",
                    cell(&v["deleted_events"]),
                    cell(&v["room_id"]),
                    cell(&v["before"])
                );
            }
            Ok(())
        }
    }
}

fn policy_summary(p: &Value) -> String {
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

async fn room_policy(client: &Client, command: RoomPolicyCommand, json: bool) -> Result<()> {
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

async fn server_policy(client: &Client, command: ServerPolicyCommand, json: bool) -> Result<()> {
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

fn check_month(month: &str) -> Result<()> {
    let month = month.trim();
    let ok = month.len() == 7
        && month.as_bytes()[4] == b'-'
        && month[..4].bytes().chain(month[5..].bytes()).all(|b| b.is_ascii_digit())
        && matches!(month[5..].parse::<u32>(), Ok(1..=12));
    if ok {
        Ok(())
    } else {
        Err(CliError::usage(format!("{month:?} is not a month; write it as YYYY-MM, e.g. 2026-11")))
    }
}

async fn figures(client: &Client, month: &str, csv_out: bool, json: bool) -> Result<()> {
    let month = month.trim();
    check_month(month)?;
    if csv_out {
        print!("{}", client.call_text(&format!("{PREFIX}/figures/{month}?format=csv")).await?);
        return Ok(());
    }
    let v = client.get(&format!("/figures/{month}")).await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let before = &v["year_before"];
    println!("Utilisation, {} ({} to {})", cell(&v["month"]), cell(&v["start"]), cell(&v["end"]));
    let mut t = Table::new(&["", &cell(&v["month"]), &cell(&before["month"]), "GROWTH"]);
    t.row(vec!["accounts".into(), cell(&v["accounts"]), cell(&before["accounts"]), growth(&v["growth"]["accounts"])]);
    t.row(vec![
        "active users".into(),
        cell(&v["active_users"]),
        cell(&before["active_users"]),
        growth(&v["growth"]["active_users"]),
    ]);
    t.row(vec!["active share".into(), percent(&v["active_share"]), percent(&before["active_share"]), String::new()]);
    t.row(vec!["messages".into(), cell(&v["messages"]), cell(&before["messages"]), growth(&v["growth"]["messages"])]);
    print!("{}", t.render());
    println!();
    let mut d = Table::new(&["DEPARTMENT", "ACCOUNTS", "ACTIVE", "SHARE", "MESSAGES"]);
    for row in v["by_department"].as_array().into_iter().flatten() {
        d.row(vec![
            if row["department"].is_null() { "(none)".into() } else { cell(&row["department"]) },
            cell(&row["accounts"]),
            cell(&row["active_users"]),
            percent(&row["active_share"]),
            cell(&row["messages"]),
        ]);
    }
    print!("{}", d.render());
    println!();
    let mut r = Table::new(&["ROOM", "NAME", "MESSAGES"]);
    for row in v["by_room"].as_array().into_iter().flatten() {
        r.row(vec![cell(&row["room_id"]), cell(&row["name"]), cell(&row["messages"])]);
    }
    if r.is_empty() {
        println!("no messages this month");
    } else {
        print!("{}", r.render());
    }
    Ok(())
}

async fn audit(client: &Client, a: AuditArgs, json: bool) -> Result<()> {
    if !(1..=1000).contains(&a.limit) {
        return Err(CliError::usage("--limit must be between 1 and 1000"));
    }
    let q = query(&[
        ("since", a.since),
        ("until", a.until),
        ("caller", a.caller),
        ("target", a.target),
        ("limit", Some(a.limit.to_string())),
        ("from", a.from.map(|f| f.to_string())),
    ]);
    let v = client
        .get(&format!("/audit{q}"))
        .await
        .map_err(|e| if e.message.contains("is not a date") { CliError::usage(e.message) } else { e })?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let mut t = Table::new(&["TIME", "CALLER", "ACTION", "TARGET", "RESULT", "DETAIL"]);
    for e in v["entries"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&e["time"]),
            cell(&e["caller"]),
            cell(&e["action"]),
            cell(&e["target"]),
            cell(&e["result"]),
            cell(&e["detail"]),
        ]);
    }
    if a.csv {
        print!("{}", t.csv());
    } else {
        print!("{}", t.render());
    }
    if let Some(n) = v["next"].as_i64() {
        eprintln!("more: add --from {n}");
    }
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
