//! Exit codes that scripts can rely on, kept in one place.
//!
//! A stopped server's own code (or 128 + the signal that killed it) and cargo's own code after
//! a failed build are passed through unchanged; these are the codes portguard itself decides.

/// Success; also a server that stopped because it was asked to.
pub const OK: i32 = 0;
/// Another copy of the instance is running, a stop failed, or no port could be had.
pub const FAILURE: i32 = 1;
/// Bad input: configuration, flags, environment, `.env`. Nothing was started.
pub const BAD_INPUT: i32 = 2;
/// `status`: the instance is not running (as LSB init scripts answer).
pub const NOT_RUNNING: i32 = 3;
/// Base for "killed by signal N", as shells report it.
pub const SIGNAL_BASE: i32 = 128;

/// An error that is the user's to fix: exits with [`BAD_INPUT`] and starts nothing.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// An error with an exit code of its own (for example "already running": 1).
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code for an error that reached `main`.
#[must_use]
pub fn for_error(error: &anyhow::Error) -> i32 {
    if error.downcast_ref::<BadInput>().is_some() {
        BAD_INPUT
    } else if let Some(exit) = error.downcast_ref::<Exit>() {
        exit.code
    } else {
        FAILURE
    }
}
