//! The `kairan-homeserver` command: run the server, print a configuration, create users,
//! back up and restore.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kairan_core::config::{Config, LogConfig, LogFormat};
use kairan_homeserver::{Services, config_check};

/// jemalloc instead of glibc's malloc: glibc keeps freed large buffers (each password
/// hash's 19 MiB argon2 block) in per-thread arenas for good, where jemalloc hands
/// unused pages back to the system after a few seconds, and fragments less under the
/// many short-lived JSON values of a busy server.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "kairan-homeserver", version, about = "A Matrix homeserver for a prefecture and its municipalities")]
struct Cli {
    /// TOML configuration file; without one, the embedded defaults apply.
    #[arg(long, short, global = true, env = "KAIRAN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Run,
    /// Print a commented configuration with every option at its default.
    GenerateConfig,
    /// Check a configuration (file and KAIRAN_* variables) without starting: every
    /// unknown key, wrong type and invalid value, one line each naming the option and its
    /// line in the file (or its variable).
    CheckConfig,
    /// Create an account.
    CreateUser {
        /// The localpart (`alice` for `@alice:server`).
        name: String,
        /// File whose first line is the password (keeps it out of shell history).
        #[arg(long)]
        password_file: PathBuf,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Quarantine a media: downloads and thumbnails of it answer 404 from now on.
    QuarantineMedia {
        /// The media's URI, `mxc://SERVER/MEDIA_ID`.
        mxc_uri: String,
    },
    /// Back up the database, media, signing key and configuration into DIR while the
    /// server runs (SQLite: VACUUM INTO; PostgreSQL: pg_dump, which must be on PATH).
    Backup {
        /// A new or empty directory.
        dir: PathBuf,
    },
    /// Restore a backup into the configured database, data_dir and media store. Stop the
    /// server first.
    Restore {
        /// A directory written by `backup`.
        dir: PathBuf,
        /// Replace a database that already holds data, and a different signing key.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::GenerateConfig) = cli.command {
        print!("{}", Config::commented_default());
        return std::process::ExitCode::SUCCESS;
    }
    // `check-config` and every other command, `run` included, refuse a bad configuration
    // the same way: each problem on a line of its own, as `FILE: line N: key: message`,
    // then how many there were.
    let config = match config_check::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            for problem in e.problems() {
                eprintln!("{problem}");
            }
            return fail(e.summary());
        }
    };
    init_logging(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(e.to_string()),
    }
}

fn fail(message: String) -> std::process::ExitCode {
    eprintln!("kairan-homeserver: {message}");
    std::process::ExitCode::FAILURE
}

fn init_logging(log: &LogConfig) {
    use std::io::IsTerminal;
    // Dependencies are chatty at info; they speak up at warn unless asked by name.
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAIRAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("sqlx=warn,ruma_state_res=warn,{}", log.level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    if let Some(Command::CheckConfig) = cli.command {
        let federation = match config.listen.federation {
            Some(addr) => format!(", federation (TLS) on {addr}"),
            None => ", no federation listener".to_owned(),
        };
        let metrics = config.listen.metrics.map(|addr| format!(", metrics on {addr}")).unwrap_or_default();
        println!(
            "configuration is valid: server {}, database {}, client API on {}{federation}{metrics}",
            config.server_name,
            kairan_homeserver::storage::redact_url(&config.database_url()),
            config.listen.client
        );
        return Ok(());
    }
    let config_file = cli.config.clone();
    match cli.command {
        Some(Command::Backup { dir }) => {
            let m = kairan_homeserver::server_backup::backup(&config, config_file.as_deref(), &dir).await?;
            println!(
                "backed up {} (schema {}, {}) and {} media files ({} bytes) into {}",
                m.server_name,
                m.schema_version,
                m.backend,
                m.media_files,
                m.media_bytes,
                dir.display()
            );
            Ok(())
        }
        Some(Command::Restore { dir, force }) => {
            let m = kairan_homeserver::server_backup::restore(&config, &dir, force).await?;
            println!(
                "restored {} (schema {}, {}, taken at {} ms since the epoch) from {}; start the server now",
                m.server_name,
                m.schema_version,
                m.backend,
                m.created_ts,
                dir.display()
            );
            Ok(())
        }
        None | Some(Command::Run) => kairan_homeserver::serve(config, shutdown_signal()).await,
        Some(Command::CreateUser { name, password_file, admin }) => {
            let text = std::fs::read_to_string(&password_file)
                .map_err(|e| anyhow::anyhow!("cannot read password file {}: {e}", password_file.display()))?;
            let password = text.lines().next().unwrap_or("").to_owned();
            if password.is_empty() {
                anyhow::bail!("password file {} is empty", password_file.display());
            }
            let services = Services::start(config).await?;
            let user = services
                .create_account(&name, Some(password), admin)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            println!("created {user}{}", if admin { " (administrator)" } else { "" });
            services.store.close().await;
            Ok(())
        }
        Some(Command::QuarantineMedia { mxc_uri }) => {
            let uri = <&ruma::MxcUri>::from(mxc_uri.as_str());
            let (server, media_id) =
                uri.parts().map_err(|e| anyhow::anyhow!("{mxc_uri:?} is not an mxc:// URI: {e}"))?;
            if server.as_str() != config.server_name {
                anyhow::bail!("{mxc_uri} is not a media of this server ({})", config.server_name);
            }
            let services = Services::start(config).await?;
            let result = services.media.quarantine(media_id).await.map_err(|e| anyhow::anyhow!("{}", e.message));
            services.store.close().await;
            result?;
            println!("quarantined {mxc_uri}");
            Ok(())
        }
        Some(Command::GenerateConfig | Command::CheckConfig) => unreachable!("handled above"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
