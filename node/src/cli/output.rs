//! Output and errors of CLI commands: JSON on stdout, one message on stderr.

use std::fmt;
use std::io::Write;

use serde::Serialize;

/// A command's failure: a message a user can act on.
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

impl CliError {
    /// An error with a message.
    pub fn msg(m: impl Into<String>) -> Self {
        Self(m.into())
    }
}

/// Wraps any error with context.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|e| CliError(format!("{}: {e}", what())))
    }
}

/// Prints one value as a JSON line on stdout.
pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)
        .map_err(|e| CliError(format!("cannot write output: {e}")))?;
    writeln!(out).map_err(|e| CliError(format!("cannot write output: {e}")))
}
