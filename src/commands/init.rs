//! `cargo portguard init`: adds portguard to the server package (see [`crate::scaffold`]).

use anyhow::Result;

use crate::cli::CommonArgs;
use crate::context::Context;
use crate::scaffold::{self, InitArgs};

/// # Errors
/// As [`scaffold::init`], and a cargo that cannot read the project.
pub(crate) fn init(context: &Context, common: &CommonArgs, args: &InitArgs) -> Result<i32> {
    let (_, project) = super::fresh_project(context, common)?;
    scaffold::init(&project, args)
}
