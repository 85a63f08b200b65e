//! `cargo portguard stop` and `restart`: thin layers over [`crate::instance::operate`], which
//! proves the supervisor before it signals anything.

use anyhow::Result;

use crate::cli::{CommonArgs, InstanceArg, StopArgs};
use crate::context::Context;
use crate::exit_codes::{self, Exit};
use crate::instance::{InstanceFiles, Scope, Stale, operate};
use crate::output;

/// `cargo portguard stop`.
///
/// # Errors
/// Bad input (exit 2); a server that could not be stopped (exit 1).
pub(crate) fn stop(context: &Context, common: &CommonArgs, args: &StopArgs) -> Result<i32> {
    let scope = Scope::find(
        context,
        common.manifest_path.as_deref(),
        common.package.as_deref(),
    );
    // What runs, and what a crashed run left (stop cleans that up); an error testing a lock is
    // kept, for `stop` to report.
    let running_or_stale = || -> Vec<InstanceFiles> {
        scope
            .instances()
            .into_iter()
            .map(|selected| selected.files)
            .filter(|files| files.is_running().unwrap_or(true) || Stale::read(files).is_some())
            .collect()
    };
    let targets = if args.all {
        running_or_stale()
    } else {
        match scope.pick_running(args.instance.as_deref())? {
            Some(files) => vec![files],
            // Nothing runs: what crashed runs left is cleaned up all the same.
            None => running_or_stale(),
        }
    };
    if targets.is_empty() {
        output::status(
            "Stopped",
            format!("nothing: no instance{} is running here", scope.describe()),
        );
        return Ok(exit_codes::OK);
    }
    for files in &targets {
        operate::stop(files, args.timeout)?;
    }
    Ok(exit_codes::OK)
}

/// `cargo portguard restart`: the supervisor stops the server and starts it again, keeping the
/// socket in socket handoff; this waits until the new server answers.
///
/// # Errors
/// Nothing running (exit 1), an unproved supervisor, or a server that does not come back.
pub(crate) fn restart(context: &Context, common: &CommonArgs, args: &InstanceArg) -> Result<i32> {
    let scope = Scope::find(
        context,
        common.manifest_path.as_deref(),
        common.package.as_deref(),
    );
    let files = match scope.pick_running(args.instance.as_deref())? {
        Some(files) if files.is_running()? => files,
        _ => {
            return Err(Exit {
                code: exit_codes::FAILURE,
                message: format!(
                    "nothing to restart: no instance{} is running here; start it with `cargo serve-safe`",
                    scope.describe()
                ),
            }
            .into());
        }
    };
    operate::restart(&files)?;
    Ok(exit_codes::OK)
}
