//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kairan-admin",
    version,
    about = "Administer a kairan homeserver over its admin API",
    long_about = "Administer a kairan homeserver over its admin API (never its database).\n\n\
                  Log in once with `kairan-admin login --server URL --user NAME`; the server URL and \
                  access token are kept in ~/.config/kairan-admin/config.toml (mode 0600), or in the \
                  file KAIRAN_ADMIN_CONFIG names.\n\n\
                  Exit status: 0 done, 1 refused or failed (or some import rows failed), 2 bad \
                  arguments, 3 server unreachable, 4 not logged in or not an administrator, 5 not found."
)]
pub struct Cli {
    /// Print JSON (the API's answer) instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in as a server administrator and remember the session.
    Login {
        /// The homeserver's URL, e.g. https://matrix.pref.example.
        #[arg(long)]
        server: String,
        /// Your user name (localpart) or full user ID.
        #[arg(long)]
        user: String,
        /// A file whose first line is the password; without it, the first line of stdin.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// End the stored session and forget it.
    Logout,
    /// Accounts and sessions.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Registration tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Rooms.
    #[command(subcommand)]
    Rooms(RoomsCommand),
    /// Room and server policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Utilisation figures of a month (YYYY-MM), beside the same month a year before.
    Figures {
        /// The month, e.g. 2026-11 (in the server's admin.utc_offset).
        month: String,
        /// Print CSV.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
    /// The audit log of administrative calls, newest first.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// From this date (YYYY-MM-DD) or time (YYYY-MM-DDTHH:MM[:SS][Z|±HH:MM]).
    #[arg(long)]
    pub since: Option<String>,
    /// Up to and including this date, or before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only calls made by this user.
    #[arg(long)]
    pub caller: Option<String>,
    /// Only calls on this user, room or token fingerprint.
    #[arg(long)]
    pub target: Option<String>,
    /// Entries per page (1-1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Continue from the `next` of an earlier page.
    #[arg(long)]
    pub from: Option<i64>,
    /// Print CSV.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create one account (a password is generated and shown unless --password-file is given).
    Create {
        /// Localpart or user ID.
        user: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        department: Option<String>,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
        /// A file whose first line is the password.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Create accounts from a CSV: user ID, display name, department[, password].
    Import {
        csv: PathBuf,
        /// Write the generated initial passwords here (CSV user_id,password, mode 0600)
        /// instead of to stdout.
        #[arg(long)]
        passwords_out: Option<PathBuf>,
        /// Rows sent per request.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        batch_size: u32,
    },
    /// List accounts.
    List {
        /// A part of the user ID or display name.
        #[arg(long)]
        search: Option<String>,
        #[arg(long)]
        department: Option<String>,
        /// Only server administrators.
        #[arg(long)]
        admins: bool,
        /// Only deactivated accounts.
        #[arg(long, conflicts_with = "active")]
        deactivated: bool,
        /// Only accounts that are not deactivated.
        #[arg(long)]
        active: bool,
        /// Accounts per page (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this user ID (the `next` of an earlier page).
        #[arg(long)]
        from: Option<String>,
        /// Every page.
        #[arg(long)]
        all: bool,
        /// Print CSV.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
    /// Show one account.
    Show { user: String },
    /// Deactivate an account: its sessions end at once and it leaves every room.
    Deactivate { user: String },
    /// Reactivate an account with a new password (generated unless --password-file).
    Reactivate {
        user: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Set a new password (generated unless --password-file); every session ends.
    ResetPassword {
        user: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Keep the user's sessions.
        #[arg(long)]
        keep_sessions: bool,
    },
    /// Make a user a server administrator (or, with --revoke, no longer one).
    SetAdmin {
        user: String,
        #[arg(long)]
        revoke: bool,
    },
    /// Set (or, with an empty value, clear) the department of an account.
    SetDepartment { user: String, department: String },
    /// List a user's devices (sessions).
    Devices { user: String },
    /// End one session of a user.
    DeleteDevice { user: String, device: String },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a registration token (random unless --token).
    Create {
        #[arg(long)]
        token: Option<String>,
        /// How many registrations it allows (unlimited if absent).
        #[arg(long)]
        uses: Option<u32>,
        /// Last day (YYYY-MM-DD) or time it works.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List registration tokens.
    List,
    /// Revoke a registration token.
    Revoke { token: String },
}

#[derive(Debug, Subcommand)]
pub enum RoomsCommand {
    /// List rooms.
    List {
        /// A part of the room ID, name or alias.
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
    /// Show a room: summary, members, servers, policy (--json adds the full state).
    Show { room: String },
    /// Shut a room down: every local member leaves, and joins are refused.
    Shutdown {
        room: String,
        /// Keep the members (only block new joins).
        #[arg(long)]
        no_evacuate: bool,
        /// Do not block joins (only remove the members).
        #[arg(long)]
        no_block: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete the message history before a date (refused for official rooms).
    Purge {
        room: String,
        /// YYYY-MM-DD (from the start of that day) or a time.
        #[arg(long)]
        before: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The policy of a room.
    #[command(subcommand)]
    Room(RoomPolicyCommand),
    /// Server policy: federation allowlist, media, registration.
    #[command(subcommand)]
    Server(ServerPolicyCommand),
}

#[derive(Debug, Subcommand)]
pub enum RoomPolicyCommand {
    /// Show a room's policy.
    Show { room: String },
    /// Change a room's policy; options not given keep their value.
    Set(RoomPolicyArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnExpiry {
    /// Transfer to the archives (移管).
    Transfer,
    /// Dispose (廃棄).
    Dispose,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Encryption {
    Required,
    Forbidden,
    /// No rule.
    None,
}

#[derive(Debug, Args)]
pub struct RoomPolicyArgs {
    pub room: String,
    /// Mark the room an official record (needs --retention, --on-expiry, --department).
    #[arg(long, conflicts_with = "not_official")]
    pub official: bool,
    /// The room is not (or no longer) an official record.
    #[arg(long)]
    pub not_official: bool,
    /// Retention class: under1y, 1y, 3y, 5y, 10y, 30y or permanent.
    #[arg(long)]
    pub retention: Option<String>,
    /// What happens when the retention ends.
    #[arg(long, value_enum)]
    pub on_expiry: Option<OnExpiry>,
    /// The owning department.
    #[arg(long)]
    pub department: Option<String>,
    #[arg(long, value_enum)]
    pub encryption: Option<Encryption>,
    /// A server allowed in the room (repeat; m.room.server_acl; this server is always allowed).
    #[arg(long = "allow-server", conflicts_with = "any_server")]
    pub allow_server: Vec<String>,
    /// Allow every server (server ACL "*").
    #[arg(long)]
    pub any_server: bool,
}

#[derive(Debug, Subcommand)]
pub enum ServerPolicyCommand {
    /// Show the server policy in force.
    Show,
    /// Replace the federation allowlist (server names, *.domain, or *).
    SetFederation {
        servers: Vec<String>,
        /// Allow no server (an empty list).
        #[arg(long, conflicts_with = "servers")]
        none: bool,
    },
    /// Change the media policy; lists given replace the current ones.
    SetMedia {
        /// Largest upload: bytes, or with K, M or G (binary units).
        #[arg(long)]
        max_upload: Option<String>,
        /// An allowed type (repeat): image/png, image/*, */*.
        #[arg(long = "allow")]
        allow: Vec<String>,
        /// A refused type (repeat).
        #[arg(long = "refuse")]
        refuse: Vec<String>,
        /// Refuse no type (an empty refused list).
        #[arg(long, conflicts_with = "refuse")]
        refuse_none: bool,
    },
    /// Set who may register: closed, or token (with a registration token).
    SetRegistration {
        #[arg(value_parser = ["closed", "token"])]
        mode: String,
    },
}
