//! `cargo portguard generate`: the production files (see [`crate::generate`]).

use anyhow::Result;

use crate::cli::CommonArgs;
use crate::context::Context;
use crate::generate::{self, GenerateArgs};

/// # Errors
/// As [`generate::generate`], and a cargo that cannot read the project.
pub(crate) fn generate(context: &Context, common: &CommonArgs, args: &GenerateArgs) -> Result<i32> {
    // The files follow the manifests as they are now: cargo is asked afresh.
    let (_, project) = super::fresh_project(context, common)?;
    generate::generate(&project, args)
}
