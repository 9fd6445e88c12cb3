//! The one error of the CLI: a one-line message and the exit status it maps to.

use std::fmt;

/// Exit statuses (documented in docs/admin.md).
pub mod exit {
    /// The server refused or failed the request, or some rows of an import failed.
    pub const FAILED: u8 = 1;
    /// Bad arguments (also what clap uses).
    pub const USAGE: u8 = 2;
    /// The server cannot be reached.
    pub const UNREACHABLE: u8 = 3;
    /// Not logged in, session ended, or not a server administrator.
    pub const DENIED: u8 = 4;
    /// No such user, room, device or token.
    pub const NOT_FOUND: u8 = 5;
}

/// What went wrong, said in one line, with the exit status it ends the CLI with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(exit::FAILED, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever the server said.
        f.write_str(&self.message.replace(['\n', '\r'], " "))
    }
}

impl std::error::Error for CliError {}
