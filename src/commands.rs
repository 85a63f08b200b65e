//! The commands `app` dispatches to. Each is a thin layer: it reads its arguments, asks the
//! domain modules (`instance`, `supervise`, `port`, `config`, `project`), and says what happened.
//! No command imports another.

pub(crate) mod config;
pub(crate) mod generate;
pub(crate) mod init;
pub(crate) mod logs;
pub(crate) mod ports;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod stop;

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::CommonArgs;
use crate::config::{Flags, Loaded};
use crate::context::Context;
use crate::project::{self, Project};

/// The project and its configuration with every layer applied, for the commands that run or
/// inspect the server. `cargo metadata`'s answer is kept in the private runtime folder; without
/// one, cargo is asked each time.
///
/// # Errors
/// Bad input of any kind, and a cargo that cannot read the project.
fn load_config(context: &Context, common: &CommonArgs, flags: Flags<'_>) -> Result<Loaded> {
    crate::config::load(
        context.cwd(),
        &context.vars(),
        common.manifest_path.as_deref(),
        common.package.as_deref(),
        flags,
        context.runtime_dir().ok(),
    )
}

/// Cargo and the project as the manifests are now, for the commands that change or generate
/// files from them (no cache).
///
/// # Errors
/// A cargo that cannot be found or cannot read the project.
fn fresh_project(context: &Context, common: &CommonArgs) -> Result<(PathBuf, Project)> {
    project::from_options(
        context.cwd(),
        common.manifest_path.as_deref(),
        common.package.as_deref(),
        &context.vars(),
        None,
    )
}
