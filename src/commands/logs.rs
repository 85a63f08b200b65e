//! `cargo portguard logs`: the output of a detached server, from `.portguard/<instance>.log`.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::cli::{CommonArgs, LogsArgs};
use crate::context::Context;
use crate::exit_codes::{self, Exit};
use crate::instance::{InstanceFiles, Scope, open_for_reading};

/// How often `--follow` looks for new output, as `tail -f` does without inotify.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// `cargo portguard logs [-f]`.
///
/// # Errors
/// No log to show (exit 1), an unreadable log.
pub(crate) fn logs(context: &Context, common: &CommonArgs, args: &LogsArgs) -> Result<i32> {
    let scope = Scope::find(
        context,
        common.manifest_path.as_deref(),
        common.package.as_deref(),
    );
    let files = scope.pick_log(args.instance.instance.as_deref())?;
    let Some(files) = files.filter(|files| std::fs::symlink_metadata(&files.log).is_ok()) else {
        return Err(Exit {
            code: exit_codes::FAILURE,
            message: format!(
                "no log here{}: logs are written by `cargo serve-safe --detach` (name the instance with `--instance`)",
                scope.describe()
            ),
        }
        .into());
    };
    let mut log = open_for_reading(&files.log)?;
    copy_new(&mut log, &files)?;
    if args.follow {
        // Until the instance stops; what it wrote last is still shown.
        while files.is_running()? {
            std::thread::sleep(FOLLOW_INTERVAL);
            copy_new(&mut log, &files)?;
            log = reopen_if_rotated(log, &files)?;
        }
        copy_new(&mut log, &files)?;
    }
    Ok(exit_codes::OK)
}

/// After a rotation the path names a new file: what the old one still had was copied, and
/// the new one is read from its start.
fn reopen_if_rotated(log: File, files: &InstanceFiles) -> Result<File> {
    let same = match (log.metadata(), std::fs::symlink_metadata(&files.log)) {
        (Ok(open), Ok(named)) => open.ino() == named.ino() && open.dev() == named.dev(),
        _ => true,
    };
    if same {
        return Ok(log);
    }
    open_for_reading(&files.log)
}

fn copy_new(log: &mut File, files: &InstanceFiles) -> Result<()> {
    // A restarted detached run empties the log: start again from its beginning.
    let length = log.metadata().map_or(0, |meta| meta.len());
    if log.stream_position().unwrap_or(0) > length {
        log.seek(SeekFrom::Start(0)).ok();
    }
    let mut bytes = Vec::new();
    log.read_to_end(&mut bytes)
        .with_context(|| format!("could not read `{}`", files.log.display()))?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&bytes)
        .and_then(|()| stdout.flush())
        .context("could not write to stdout")
}
