//! The `kairan-bridge` command: the archiving daemon and the records office's tools.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use kairan_bridge::{
    archive::{Archive, Cosignature},
    config::Config,
    daemon::Daemon,
    export::{self, ExportRequest, Mask},
    keys, metrics,
    office::{self, Decision},
    package,
    retention::{self, format_jst, now_ms},
    verify,
};
use serde_json::json;

/// kairan-bridge: archives official rooms as public records (公文書).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, short, global = true, env = "KAIRAN_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// The archive database URL, instead of the configuration's.
    #[arg(long, global = true)]
    database: Option<String>,
    /// The attachment folder, instead of the configuration's.
    #[arg(long, global = true)]
    attachments: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the archiving daemon.
    Run,
    /// Show what the archive holds.
    Status,
    /// List a room's records (add --payloads for the payloads as text).
    Records {
        #[arg(long)]
        room: String,
        #[arg(long)]
        payloads: bool,
    },
    /// Recompute every hash, signature and tree head; name the first that does not match.
    Verify {
        /// The bridge's public key (file); default: the configured signing key.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// A co-signer's public key (file) whose signature the newest head must carry.
        #[arg(long)]
        cosigner_key: Vec<PathBuf>,
    },
    /// Sign a tree head over the whole log now.
    Checkpoint,
    /// Co-sign the newest tree head (or --head N) with another office's key, after verifying.
    Cosign {
        /// The co-signer's secret key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        head: Option<i64>,
        /// The bridge's public key (file); default: the configured signing key.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Create a new Ed25519 key (FILE and FILE.pub).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Legal holds (訴訟ホールド等): stop disposal and transfer.
    Hold {
        #[command(subcommand)]
        action: HoldAction,
    },
    /// Dispose of (廃棄) a room's expired records marked for disposal and not held.
    Dispose {
        #[arg(long)]
        room: String,
        /// Required: only expired records are ever disposed of.
        #[arg(long)]
        expired: bool,
        /// The date the decision applies (JST, YYYY-MM-DD); default today.
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        by: String,
        /// The decision (決裁) reference.
        #[arg(long)]
        decision: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a self-verifying transfer (移管) package of a room's records marked for transfer.
    Transfer {
        #[arg(long)]
        room: String,
        #[arg(long)]
        out: PathBuf,
        /// Only records past their retention at --as-of.
        #[arg(long)]
        expired: bool,
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        by: String,
        #[arg(long)]
        decision: String,
    },
    /// Export a room (and time range) for a disclosure request, with masking.
    Export {
        #[arg(long)]
        room: String,
        #[arg(long)]
        out: PathBuf,
        /// The unmasked copy for the records office; default OUT-unmasked.
        #[arg(long)]
        unmasked_out: Option<PathBuf>,
        /// Start of the range: YYYY-MM-DD (JST) or RFC 3339.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Mask a whole event: EVENT_ID=REASON.
        #[arg(long)]
        mask_event: Vec<String>,
        /// Mask a text in an event: EVENT_ID=REASON=TEXT.
        #[arg(long)]
        mask_text: Vec<String>,
        /// A JSON file: [{"event_id", "reason", "text"?}, ...].
        #[arg(long)]
        masks: Option<PathBuf>,
        /// Staff directory CSV (user_id,displayname,department) for names and departments.
        #[arg(long)]
        directory: Option<PathBuf>,
    },
    /// Check an export or transfer package on its own.
    VerifyPackage {
        dir: PathBuf,
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum HoldAction {
    /// Put a room, or a time range of it, on hold.
    Set {
        #[arg(long)]
        room: String,
        /// YYYY-MM-DD (JST) or RFC 3339; default: open.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        decision: String,
    },
    /// Release a hold by its ID.
    Release {
        #[arg(long)]
        id: i64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        decision: String,
    },
    /// List holds in force.
    List {
        #[arg(long)]
        room: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message, up to its usage block, on one line.
            let text = e.to_string();
            let message: Vec<&str> =
                text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).filter(|l| !l.is_empty()).collect();
            let message = message.join(" ");
            let message = message.trim_start_matches("error: ");
            eprintln!("kairan-bridge: {message} (see kairan-bridge --help)");
            return ExitCode::from(2);
        }
    };
    let filter = if matches!(cli.command, Command::Run) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kairan-bridge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("kairan-bridge: {}", chain.join(": ").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(db) = &cli.database {
        config.database = Some(db.clone());
    }
    if let Some(dir) = &cli.attachments {
        config.attachments_dir = Some(dir.clone());
    }
    Ok(config)
}

fn print(cli: &Cli, value: serde_json::Value, text: String) {
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
    } else {
        println!("{text}");
    }
}

fn bridge_public_key(config: &Config, given: Option<&PathBuf>) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
    match given {
        Some(p) => keys::load_public_key(p),
        None => {
            let path = config.signing_key_path();
            let public = keys::public_path(&path);
            if public.exists() {
                keys::load_public_key(&public)
            } else {
                keys::load_public_key(&path)
                    .context("no --public-key given and the configured signing key cannot be read")
            }
        }
    }
}

fn as_of(s: Option<&String>) -> anyhow::Result<chrono::NaiveDate> {
    s.map(|s| retention::parse_date(s)).transpose().map(|d| d.unwrap_or_else(retention::today_jst))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(&cli)?;
    match &cli.command {
        Command::Run => {
            // Bound before logging in, so that a taken or wrong address stops the start at once.
            let metrics_listener = match config.metrics_listen {
                Some(addr) => Some(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("cannot listen on metrics_listen {addr}"))?,
                ),
                None => None,
            };
            let daemon = Daemon::start(config).await?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            let metrics_server = metrics_listener.map(|listener| {
                if let Ok(addr) = listener.local_addr() {
                    tracing::info!(%addr, "serving metrics on GET /metrics");
                }
                tokio::spawn(metrics::serve(listener, daemon.metrics_source(), rx.clone()))
            });
            tokio::spawn(async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
                tx.send(true).ok();
            });
            let result = daemon.run(rx).await;
            // The listener stops with the daemon: by itself on a signal, aborted on an error.
            if let Some(server) = metrics_server {
                server.abort();
                if let Ok(Err(e)) = server.await {
                    tracing::warn!(error = %e, "the metrics listener failed");
                }
            }
            result?;
        }
        Command::Status => {
            let archive = Archive::open(&config.database_url()).await?;
            let size = archive.size().await?;
            let heads = archive.heads().await?;
            let counts = archive.counts().await?;
            let rooms = archive.rooms().await?;
            let pending = archive.pending_count().await?;
            let room_json: Vec<_> = rooms
                .iter()
                .map(|r| {
                    let c: serde_json::Map<String, serde_json::Value> = counts
                        .iter()
                        .filter(|(room, _, _)| room.as_deref() == Some(r.room_id.as_str()))
                        .map(|(_, k, n)| (k.clone(), json!(n)))
                        .collect();
                    json!({ "room_id": r.room_id, "official": r.official, "records": c })
                })
                .collect();
            let latest = heads.last();
            let mut text = format!("{size} records, {} tree heads, {pending} pending\n", heads.len());
            for r in &room_json {
                text.push_str(&format!("{} official={} {}\n", r["room_id"], r["official"], r["records"]));
            }
            if let Some(h) = latest {
                text.push_str(&format!(
                    "latest head #{} size {} root {} at {}",
                    h.id,
                    h.tree_size,
                    h.root_hash,
                    format_jst(h.created_ts)
                ));
            }
            print(
                &cli,
                json!({ "records": size, "pending": pending, "heads": heads.len(), "latest_head": latest, "rooms": room_json }),
                text,
            );
            archive.close().await;
        }
        Command::Records { room, payloads } => {
            let archive = Archive::open(&config.database_url()).await?;
            let records = archive.room_records(room).await?;
            archive.close().await;
            let mut list = Vec::new();
            let mut text = String::new();
            for r in &records {
                let mut v = serde_json::to_value(r)?;
                if *payloads {
                    v["payload"] = match &r.payload {
                        Some(p) => String::from_utf8_lossy(p).into_owned().into(),
                        None => serde_json::Value::Null,
                    };
                }
                text.push_str(&format!(
                    "{} {} {} {} {}{}\n",
                    r.seq,
                    r.kind,
                    r.event_id.as_deref().unwrap_or("-"),
                    r.event_type.as_deref().unwrap_or("-"),
                    r.origin_ts.map(format_jst).unwrap_or_default(),
                    r.disposed_by.map(|d| format!(" (disposed by record {d})")).unwrap_or_default()
                ));
                list.push(v);
            }
            print(&cli, serde_json::Value::Array(list), text.trim_end().to_owned());
        }
        Command::Verify { public_key, cosigner_key } => {
            let archive = Archive::open(&config.database_url()).await?;
            let bridge = bridge_public_key(&config, public_key.as_ref())?;
            let cosigners = cosigner_key.iter().map(|p| keys::load_public_key(p)).collect::<anyhow::Result<_>>()?;
            let report = verify::verify(&archive, &config.attachments(), &verify::Keys { bridge, cosigners }).await?;
            archive.close().await;
            let text = if report.ok {
                format!(
                    "verify: OK: {} records ({} disposed), {} attachments, {} tree heads ({} co-signed)",
                    report.records, report.disposed, report.attachments, report.heads, report.cosigned_heads
                )
            } else {
                let mut t = format!(
                    "verify: FAILED: {}\n{} problem(s):",
                    report.first_problem.as_ref().map(|p| p.to_string()).unwrap_or_default(),
                    report.problems.len()
                );
                for p in report.problems.iter().take(50) {
                    t.push_str(&format!("\n  {p}"));
                }
                t
            };
            print(&cli, serde_json::to_value(&report)?, text);
            if !report.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Checkpoint => {
            let archive = Archive::open(&config.database_url()).await?;
            let key = keys::load_signing_key(&config.signing_key_path())?;
            let head = archive.sign_head(&key, false).await?.context("no head signed")?;
            archive.close().await;
            let text = format!("tree head #{} size {} root {}", head.id, head.tree_size, head.root_hash);
            print(&cli, serde_json::to_value(&head)?, text);
        }
        Command::Cosign { key, head, public_key } => {
            let archive = Archive::open(&config.database_url()).await?;
            let cosigner = keys::load_signing_key(key)?;
            let bridge = bridge_public_key(&config, public_key.as_ref())?;
            let report =
                verify::verify(&archive, &config.attachments(), &verify::Keys { bridge, cosigners: vec![] }).await?;
            if !report.ok {
                bail!(
                    "the archive does not verify, refusing to co-sign: {}",
                    report.first_problem.map(|p| p.to_string()).unwrap_or_default()
                );
            }
            let heads = archive.heads().await?;
            let target = match head {
                Some(id) => heads.iter().find(|h| h.id == *id).with_context(|| format!("no tree head #{id}"))?,
                None => heads.last().context("no tree head yet; run kairan-bridge checkpoint first")?,
            };
            let public = cosigner.verifying_key();
            let c = Cosignature {
                head_id: target.id,
                key_id: keys::key_id(&public),
                public_key: keys::public_key_b64(&public),
                signature: keys::sign(&cosigner, target.message().as_bytes()),
                created_ts: now_ms(),
            };
            archive.add_cosignature(&c).await?;
            archive.close().await;
            let text = format!("co-signed tree head #{} (size {}) with key {}", target.id, target.tree_size, c.key_id);
            print(&cli, serde_json::to_value(&c)?, text);
        }
        Command::Keygen { out } => {
            let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            keys::write_signing_key(out, &key)?;
            let public = keys::public_key_b64(&key.verifying_key());
            let text = format!(
                "{}: key {} (public key in {})",
                out.display(),
                keys::key_id(&key.verifying_key()),
                keys::public_path(out).display()
            );
            print(&cli, json!({ "key_id": keys::key_id(&key.verifying_key()), "public_key": public }), text);
        }
        Command::Hold { action } => {
            let archive = Archive::open(&config.database_url()).await?;
            match action {
                HoldAction::Set { room, from, until, reason, by, decision } => {
                    let key = keys::load_signing_key(&config.signing_key_path())?;
                    let from_ms = from.as_deref().map(|s| office::parse_bound(s, false)).transpose()?;
                    let until_ms = until.as_deref().map(|s| office::parse_bound(s, true)).transpose()?;
                    let d = Decision { by: by.clone(), reference: decision.clone() };
                    let id = office::set_hold(&archive, &key, room, from_ms, until_ms, reason, &d).await?;
                    print(&cli, json!({ "hold": id }), format!("legal hold {id} set on {room}"));
                }
                HoldAction::Release { id, reason, by, decision } => {
                    let key = keys::load_signing_key(&config.signing_key_path())?;
                    let d = Decision { by: by.clone(), reference: decision.clone() };
                    let seq = office::release_hold(&archive, &key, *id, reason, &d).await?;
                    print(
                        &cli,
                        json!({ "released": id, "record": seq }),
                        format!("legal hold {id} released (record {seq})"),
                    );
                }
                HoldAction::List { room } => {
                    let holds = office::list_holds(&archive, room.as_deref()).await?;
                    let text = holds
                        .iter()
                        .map(|h| {
                            format!(
                                "{} {} {:?}..{:?} {} ({})",
                                h.id,
                                h.room_id,
                                h.from_ms.map(format_jst),
                                h.until_ms.map(format_jst),
                                h.reason,
                                h.by
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    print(&cli, serde_json::to_value(&holds)?, text);
                }
            }
            archive.close().await;
        }
        Command::Dispose { room, expired, as_of: date, by, decision, dry_run } => {
            if !expired {
                bail!("dispose needs --expired: only expired records are ever disposed of");
            }
            let date = as_of(date.as_ref())?;
            let archive = Archive::open(&config.database_url()).await?;
            let key = keys::load_signing_key(&config.signing_key_path())?;
            let d = Decision { by: by.clone(), reference: decision.clone() };
            let outcome = office::dispose(&archive, &key, &config.attachments(), room, date, &d, *dry_run).await?;
            archive.close().await;
            let text = format!(
                "{}{} records disposed of in {room} as of {} (held: {}, not expired: {}, kept for transfer: {}){}",
                if *dry_run { "dry run: " } else { "" },
                outcome.disposed.len(),
                outcome.as_of,
                outcome.held,
                outcome.not_expired,
                outcome.kept_for_transfer,
                outcome.record.map(|r| format!("; disposal record {r}")).unwrap_or_default()
            );
            print(&cli, serde_json::to_value(&outcome)?, text);
        }
        Command::Transfer { room, out, expired, as_of: date, by, decision } => {
            let date = as_of(date.as_ref())?;
            let archive = Archive::open(&config.database_url()).await?;
            let key = keys::load_signing_key(&config.signing_key_path())?;
            let d = Decision { by: by.clone(), reference: decision.clone() };
            let outcome =
                office::transfer(&archive, &key, &config.attachments(), room, out, date, *expired, &d).await?;
            archive.close().await;
            let text = format!(
                "{} records and {} attachments of {room} written to {}; transfer record {}",
                outcome.records,
                outcome.attachments,
                out.display(),
                outcome.record
            );
            print(&cli, serde_json::to_value(&outcome)?, text);
        }
        Command::Export { room, out, unmasked_out, from, until, mask_event, mask_text, masks, directory } => {
            let mut all_masks = Vec::new();
            if let Some(file) = masks {
                let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
                let list: Vec<Mask> = serde_json::from_str(&text).with_context(|| format!("{}", file.display()))?;
                all_masks.extend(list);
            }
            for m in mask_event {
                all_masks.push(Mask::parse_event(m)?);
            }
            for m in mask_text {
                all_masks.push(Mask::parse_text(m)?);
            }
            let server_name = config.user.as_deref().and_then(|u| u.split_once(':')).map(|(_, s)| s.to_owned());
            let directory = match directory {
                Some(p) => export::read_directory(p, server_name.as_deref())?,
                None => Default::default(),
            };
            let unmasked = unmasked_out.clone().unwrap_or_else(|| {
                let mut p = out.as_os_str().to_owned();
                p.push("-unmasked");
                p.into()
            });
            let archive = Archive::open(&config.database_url()).await?;
            let key = keys::load_signing_key(&config.signing_key_path())?;
            let report = verify::verify(
                &archive,
                &config.attachments(),
                &verify::Keys { bridge: key.verifying_key(), cosigners: vec![] },
            )
            .await?;
            if !report.ok {
                bail!(
                    "the archive does not verify, refusing to export: {}",
                    report.first_problem.map(|p| p.to_string()).unwrap_or_default()
                );
            }
            let request = ExportRequest {
                room_id: room,
                from_ms: from.as_deref().map(|s| office::parse_bound(s, false)).transpose()?,
                until_ms: until.as_deref().map(|s| office::parse_bound(s, true)).transpose()?,
                masks: all_masks,
                directory,
                out,
                unmasked_out: &unmasked,
            };
            let outcome = export::export(&archive, &key, &config.attachments(), &request).await?;
            archive.close().await;
            let text = format!(
                "{} records of {room} exported to {} ({} masked places); unmasked copy in {}",
                outcome.records,
                out.display(),
                outcome.masked_places.len(),
                unmasked.display()
            );
            print(&cli, serde_json::to_value(&outcome)?, text);
        }
        Command::VerifyPackage { dir, public_key } => {
            let key = public_key.as_ref().map(|p| keys::load_public_key(p)).transpose()?;
            let n = package::verify_package(dir, key.as_ref())?;
            print(&cli, json!({ "ok": true, "records": n }), format!("{}: OK, {n} records proven", dir.display()));
        }
    }
    Ok(ExitCode::SUCCESS)
}
