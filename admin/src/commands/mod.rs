//! What each command does: one or a few admin API calls, and their answer printed.
//! Here: the dispatch from a parsed command line, and the helpers several commands share.

use std::{io::Read as _, path::Path};

use crate::{
    cli::{Cli, Command, PolicyCommand},
    client::{Client, enc},
    config,
    error::{CliError, Result},
};

mod policy;
mod reports;
mod rooms;
mod session;
mod tokens;
mod users;

pub async fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Login { server, user, password_file } => {
            session::login(&server, &user, password_file.as_deref(), json).await
        }
        Command::Logout => session::logout().await,
        command => {
            if let Command::Figures { month, .. } = &command {
                reports::check_month(month)?;
            }
            let login = config::load()?;
            let client = Client::new(&login.server, Some(login.access_token.clone()))?;
            match command {
                Command::Users(c) => users::users(&client, c, json).await,
                Command::Tokens(c) => tokens::tokens(&client, c, json).await,
                Command::Rooms(c) => rooms::rooms(&client, c, json).await,
                Command::Policy(PolicyCommand::Room(c)) => policy::room_policy(&client, c, json).await,
                Command::Policy(PolicyCommand::Server(c)) => policy::server_policy(&client, c, json).await,
                Command::Figures { month, csv } => reports::figures(&client, &month, csv, json).await,
                Command::Audit(a) => reports::audit(&client, a, json).await,
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

fn room_path(room: &str) -> String {
    format!("/rooms/{}", enc(room))
}
