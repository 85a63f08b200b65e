//! Everything that differs between operating systems, behind one small API.
//!
//! Unix (Linux and macOS) is implemented; another platform adds a sibling module with the same
//! functions and the rest of the crate does not change.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(not(unix))]
compile_error!("portguard supports Unix (Linux and macOS) for now");
