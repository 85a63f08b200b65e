//! Operating a running instance from another process (`stop`, `restart`, `serve-safe --force`):
//! the supervisor is proved to be ours, then signalled, and it does the rest; only a supervisor
//! that does not finish in time is taken over.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Acquired, InstanceFiles, LockState, Record, acquire, clean_up, proof};
use crate::exit_codes::{self, Exit};
use crate::os::{self, Sig};
use crate::output;
use crate::port::{self, PortState};
use crate::supervise::build::BuildState;

/// Extra wait past the supervisor's own grace period, for it to reap and clean up.
const SUPERVISOR_SLACK: Duration = Duration::from_secs(3);
/// How long a freed port may take to become bindable (a server's children closing it).
const PORT_RELEASE: Duration = Duration::from_secs(2);

fn failure(message: String) -> anyhow::Error {
    Exit {
        code: exit_codes::FAILURE,
        message,
    }
    .into()
}

/// Stops one instance and returns once its supervisor is gone and its port is free. What a
/// crashed run left is cleaned up here too (the lock is taken for that, briefly).
///
/// # Errors
/// When the recorded supervisor cannot be proved to be ours, or will not die.
pub(crate) fn stop(files: &InstanceFiles, timeout: Option<Duration>) -> Result<()> {
    let name = &files.name;
    if files.lock_state()? == LockState::Free {
        if let Acquired::Ours(lock, Some(stale)) = acquire(files)? {
            clean_up(&lock, &stale);
        }
        output::status("Stopped", format!("nothing: `{name}` is not running"));
        return Ok(());
    }
    let record = running_record(files)?;
    let supervisor = proved_supervisor(files, &record)?;
    let started = Instant::now();
    output::status(
        "Stopping",
        format!("`{name}` (server pid {}, port {})", record.pid, record.port),
    );
    signal(supervisor, Sig::TERM)?;
    output::status(
        "Signalled",
        format!("SIGTERM to supervisor pid {supervisor}, which stops the server's process group"),
    );

    let grace = record.shutdown_timeout;
    let released = match timeout {
        Some(limit) if limit < grace => {
            files.wait_released(limit)? || {
                // A second request makes the supervisor SIGKILL the group at once.
                output::status(
                    "Killing",
                    format!("`{name}`: not stopped within {:.1}s", limit.as_secs_f64()),
                );
                let _ = os::signal_process(supervisor, Sig::TERM);
                files.wait_released(SUPERVISOR_SLACK)?
            }
        }
        Some(limit) => files.wait_released(limit + SUPERVISOR_SLACK)?,
        None => files.wait_released(grace + SUPERVISOR_SLACK)?,
    };
    let mut killed = false;
    if !released {
        take_over(files, &record, supervisor)?;
        killed = true;
    }
    killed |= files
        .read_ended()
        .is_some_and(|ended| ended.supervisor_pid == record.supervisor_pid && ended.killed);
    let port_note = wait_port_free(&record);
    let killed_note = if killed { ", SIGKILL was needed" } else { "" };
    output::status(
        "Stopped",
        format!(
            "`{name}` (server pid {}) in {:.2}s{killed_note}; {port_note}",
            record.pid,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// The supervisor did not finish in time: end it and, when proved ours, the server's group;
/// then clean up the files it could not.
fn take_over(files: &InstanceFiles, record: &Record, supervisor: u32) -> Result<()> {
    output::warning(format!(
        "supervisor pid {supervisor} did not finish in time; sending SIGKILL"
    ));
    if let Ok(server) = proof::orphan_server(record) {
        let _ = os::signal_group(server, Sig::KILL);
    }
    let _ = os::signal_process(supervisor, Sig::KILL);
    if !files.wait_released(SUPERVISOR_SLACK)? {
        return Err(failure(format!(
            "could not stop `{}`: supervisor pid {supervisor} survived SIGKILL",
            files.name
        )));
    }
    // A killed supervisor cleans nothing up: its files go now, not as "stale" later. The waits
    // above that timed out still hold a shared lock for an instant once it is free.
    for _ in 0..100 {
        if let Acquired::Ours(lock, stale) = acquire(files)? {
            match stale {
                Some(stale) => clean_up(&lock, &stale),
                None => lock.clear(),
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Asks the supervisor for a restart and waits until the new server answers.
///
/// # Errors
/// An unproved supervisor, or a server that does not come back.
pub(crate) fn restart(files: &InstanceFiles) -> Result<()> {
    let name = &files.name;
    let record = running_record(files)?;
    let supervisor = proved_supervisor(files, &record)?;
    output::status(
        "Restarting",
        format!("`{name}` (server pid {})", record.pid),
    );
    // SIGUSR2: `signals::RESTART`, as the supervisor answers it: it builds, starts the new
    // server, and counts a generation once that serves; or records how the build failed.
    let builds = record.build.as_ref().map_or(0, |build| build.number);
    signal(supervisor, Sig::USR2)?;
    let limit = record.shutdown_timeout + Duration::from_mins(5);
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(new) = files.read_record() {
            if new.generation > record.generation && new.ready {
                output::status(
                    "Restarted",
                    format!(
                        "`{name}`: server pid {} → {}, on {}",
                        record.pid, new.pid, new.url
                    ),
                );
                return Ok(());
            }
            if let Some(build) = &new.build
                && build.number > builds
                && matches!(build.state, BuildState::Failed | BuildState::ServerFailed)
            {
                let keeps = if new.pid == 0 {
                    "nothing serves until a build succeeds"
                } else {
                    "the old server keeps serving"
                };
                return Err(failure(format!(
                    "the restart of `{name}` failed: {}; {keeps}",
                    build
                        .error
                        .as_deref()
                        .map_or_else(|| "see its output".into(), output::inert)
                )));
            }
        }
        if !files.is_running()? {
            return Err(failure(format!(
                "`{name}` stopped during the restart; see its output (or `cargo portguard logs`)"
            )));
        }
        if Instant::now() > deadline {
            return Err(failure(format!(
                "`{name}` did not answer within {}s of the restart",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A held lock with no readable record is a supervisor between taking the lock and writing.
fn running_record(files: &InstanceFiles) -> Result<Record> {
    let mut last = None;
    for _ in 0..100 {
        match files.read_record() {
            Ok(record) => return Ok(record),
            Err(error) => last = Some(error),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(failure(format!(
        "`{}` is running but its record cannot be read: {:#}",
        files.name,
        last.unwrap_or_else(|| anyhow::anyhow!("no record"))
    )))
}

/// The recorded supervisor, once proved ours; otherwise the refusal, as an error.
fn proved_supervisor(files: &InstanceFiles, record: &Record) -> Result<u32> {
    proof::supervisor(files, record).map_err(|why| {
        failure(format!(
            "refusing to signal pid {}, the supervisor recorded for `{}`: {why}",
            record.supervisor_pid, files.name
        ))
    })
}

fn signal(pid: u32, signal: Sig) -> Result<()> {
    os::signal_process(pid, signal)
        .map_err(|error| failure(format!("could not signal supervisor pid {pid}: {error}")))
}

/// Waits until the instance's port can be bound again; says how that went.
fn wait_port_free(record: &Record) -> String {
    let deadline = Instant::now() + PORT_RELEASE;
    loop {
        match port::check(record.host, record.port) {
            PortState::Free => return format!("port {} is free", record.port),
            state if Instant::now() > deadline => {
                return format!("port {} is still {}", record.port, describe_state(&state));
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn describe_state(state: &PortState) -> String {
    port::describe_skipped(&[port::Skipped {
        port: 0,
        state: state.clone(),
    }])
    .trim_start_matches("0 ")
    .to_owned()
}
