//! Shared helpers for portguard's integration tests, by concern: fixture projects in temp dirs
//! (`project`), running the binaries under test (`command`), guarding and inspecting the
//! processes a test starts (`process`), ports and HTTP (`net`), systemd units (`units`), a
//! second account (`users`) and what a command costs (`measure`). Everything public is
//! re-exported here, so a test module needs only `use crate::support::*`.

// benches/compare.rs includes this module too and uses only part of it; the rest would warn as
// dead code there.
#![allow(dead_code)]

pub mod command;
pub mod measure;
pub mod net;
pub mod process;
pub mod project;
pub mod units;
pub mod users;

// What the bench leaves unused of these would warn there as unused imports.
#[allow(unused_imports)]
pub use self::{command::*, net::*, process::*, project::*, units::*};
#[allow(unused_imports)]
pub use rustix::process::Signal;
