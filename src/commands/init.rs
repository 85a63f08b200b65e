//! `cargo portguard init`: adds portguard to the server package (see [`crate::scaffold`]).

use anyhow::Result;

use crate::cli::CommonArgs;
use crate::context::Context;
use crate::project;
use crate::scaffold::{self, InitArgs};

/// # Errors
/// As [`scaffold::init`], and a cargo that cannot read the project.
pub(crate) fn init(context: &Context, common: &CommonArgs, args: &InitArgs) -> Result<i32> {
    let (_, project) = project::from_options(
        common.manifest_path.as_deref(),
        common.package.as_deref(),
        &context.vars(),
        // init is about to change the manifests: it asks cargo afresh.
        None,
    )?;
    scaffold::init(&project, args)
}
