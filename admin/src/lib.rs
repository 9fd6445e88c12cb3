//! kairan-admin: the administrators' CLI of kairan. It speaks only the admin HTTP API
//! (`/_kairan/admin/v1`) of a running homeserver, never its database.
//!
//! Errors are one line on stderr, `kairan-admin: <what went wrong and what to do>`, with
//! an exit status by kind (see [`error::exit`]).

pub mod cli;
pub mod client;
mod commands;
pub mod config;
pub mod error;
pub mod output;

use std::process::ExitCode;

use clap::Parser as _;

/// Parses the arguments, runs the command, and reports its outcome.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kairan-admin: cannot start: {e}");
            return ExitCode::from(error::exit::FAILED);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kairan-admin: {e}");
            ExitCode::from(e.code)
        }
    }
}

/// Help and version as clap prints them; argument errors as one line.
fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(error::exit::USAGE)
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("kairan-admin: {first} (see kairan-admin --help)");
            ExitCode::from(error::exit::USAGE)
        }
    }
}
