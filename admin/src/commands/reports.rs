//! Reports: the monthly utilisation figures, and the audit log of admin API calls.

use crate::{
    cli::AuditArgs,
    client::{Client, PREFIX, query},
    error::{CliError, Result},
    output::{Table, cell, growth, percent, print_json},
};

pub(super) fn check_month(month: &str) -> Result<()> {
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

pub(super) async fn figures(client: &Client, month: &str, csv_out: bool, json: bool) -> Result<()> {
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

pub(super) async fn audit(client: &Client, a: AuditArgs, json: bool) -> Result<()> {
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
