//! portguard: run a Rust dev server under an instance lock on a port that is really free.
//!
//! The binaries `cargo-serve-safe` and `cargo-portguard` are thin: they hand their arguments to
//! [`app`] and exit with the code it returns. The layers, each importing only those below it:
//! `app` → `commands` → the domain modules (`instance`, `supervise`, `port`, `reserve`,
//! `config`, `project`, `health`, `scaffold`, `generate`, `watch`) → `os` and `output`.

pub mod app;
mod cli;
mod commands;
mod config;
mod context;
pub mod exit_codes;
mod generate;
mod gitignore;
mod health;
mod instance;
mod os;
mod output;
mod port;
mod project;
mod reserve;
mod runtime;
mod scaffold;
mod signals;
mod supervise;
mod watch;

/// What `cargo bench` measures beside the peers (port selection with reservations); not an
/// interface of its own.
#[doc(hidden)]
pub mod bench {
    pub use crate::port::{NoFreePort, Selection, select};
    pub use crate::reserve::Reservations;
}
