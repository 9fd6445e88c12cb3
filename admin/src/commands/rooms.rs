//! Rooms: list, show with their members, shut down and purge history.

use serde_json::json;

use super::{policy::policy_summary, room_path};
use crate::{
    cli::RoomsCommand,
    client::{Client, query},
    error::Result,
    output::{Table, cell, print_fields, print_json},
};

pub(super) async fn rooms(client: &Client, command: RoomsCommand, json: bool) -> Result<()> {
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
