//! portguard: run a Rust dev server under an instance lock on a port that is really free.
//!
//! The binaries `cargo-serve-safe` and `cargo-portguard` are thin: they hand their arguments to
//! [`app`] and exit with the code it returns.

pub mod app;
pub mod cli;
pub mod config;
pub mod detach;
pub mod exit_codes;
pub mod generate;
pub mod health;
pub mod lock;
pub mod logs;
pub mod os;
pub mod output;
pub mod port;
pub mod ports;
pub mod project;
pub mod reserve;
pub mod runtime;
pub mod scaffold;
pub mod serve;
pub mod signals;
pub mod status;
pub mod stop;
pub mod supervise;
