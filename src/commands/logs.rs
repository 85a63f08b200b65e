//! `cargo portguard logs`: the output of a detached server, from `.portguard/<instance>.log`.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::cli::{CommonArgs, LogsArgs};
use crate::context::Context;
use crate::exit_codes::{self, Exit};
use crate::instance::{InstanceFiles, LOG_LIMIT, Scope, open_for_reading};
use crate::output;

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
    skip_to_tail(&mut log, &files);
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

/// portguard rotates a log before it grows past [`LOG_LIMIT`]: a longer file was not written
/// by it (or was planted), and only its end is shown, never the whole of it.
fn skip_to_tail(log: &mut File, files: &InstanceFiles) {
    let length = log.metadata().map_or(0, |meta| meta.len());
    if length > LOG_LIMIT {
        output::warning(format!(
            "`{}` is {length} bytes long, more than portguard writes to a log; showing its last {} MiB",
            files.log.display(),
            LOG_LIMIT / (1024 * 1024)
        ));
        log.seek(SeekFrom::Start(length - LOG_LIMIT)).ok();
    }
}

fn copy_new(log: &mut File, files: &InstanceFiles) -> Result<()> {
    // A restarted detached run empties the log: start again from its beginning.
    let length = log.metadata().map_or(0, |meta| meta.len());
    if log.stream_position().unwrap_or(0) > length {
        log.seek(SeekFrom::Start(0)).ok();
    }
    // Up to the length seen now, in pieces, never the whole file in memory.
    let position = log.stream_position().unwrap_or(0);
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut log.take(length.saturating_sub(position)), &mut stdout).map_err(
        |error| {
            anyhow::anyhow!(error).context(format!(
                "could not copy `{}` to stdout",
                files.log.display()
            ))
        },
    )?;
    stdout.flush().context("could not write to stdout")
}
