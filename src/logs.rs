//! `cargo portguard logs`: the output of a detached server, from `.portguard/<instance>.log`.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::cli::{CommonArgs, LogsArgs};
use crate::exit_codes::{self, Exit};
use crate::lock::{self, InstanceFiles};
use crate::serve::Vars;
use crate::status::find_state;

/// How often `--follow` looks for new output, as `tail -f` does without inotify.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// `cargo portguard logs [-f]`.
///
/// # Errors
/// No log to show (exit 1), an unreadable log.
pub fn logs(common: &CommonArgs, args: &LogsArgs, vars: Vars<'_>) -> Result<i32> {
    let state = find_state(common, vars);
    let files = match (&args.instance.instance, &state) {
        (Some(name), Some(state)) => {
            lock::validate_instance(name)?;
            Some(state.instance(name))
        }
        (None, Some(state)) => only_log(state),
        _ => None,
    };
    let Some(files) = files.filter(|files| files.log.is_file()) else {
        return Err(Exit {
            code: exit_codes::FAILURE,
            message: "no log here: logs are written by `cargo serve-safe --detach` (name the instance with `--instance`)"
                .to_owned(),
        }
        .into());
    };
    let mut log = std::fs::File::open(&files.log)
        .with_context(|| format!("could not open `{}`", files.log.display()))?;
    copy_new(&mut log, &files)?;
    if args.follow {
        // Until the instance stops; what it wrote last is still shown.
        while lock::is_held(&files)? {
            std::thread::sleep(FOLLOW_INTERVAL);
            copy_new(&mut log, &files)?;
        }
        copy_new(&mut log, &files)?;
    }
    Ok(exit_codes::OK)
}

/// The instance whose log it must be when none is named: the only one with a log.
fn only_log(state: &lock::StateDir) -> Option<InstanceFiles> {
    let mut with_log = state
        .instances()
        .into_iter()
        .map(|name| state.instance(&name))
        .filter(|files| files.log.is_file());
    let first = with_log.next()?;
    with_log.next().is_none().then_some(first)
}

fn copy_new(log: &mut std::fs::File, files: &InstanceFiles) -> Result<()> {
    // A restarted detached run truncates the log: start again from its beginning.
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
