//! `cargo portguard stop`, `restart` and `serve-safe --force`: signals reach a process only
//! after it is proved to be the one recorded (the lock is held, the start time is the same),
//! so a reused pid is never hit.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cli::{CommonArgs, InstanceArg, StopArgs};
use crate::exit_codes::{self, Exit};
use crate::lock::{self, InstanceFiles, Record, Stale};
use crate::os::{self, Sig};
use crate::output;
use crate::port::{self, PortState};
use crate::serve::Vars;
use crate::status::{self, find_state};

/// Extra wait past the supervisor's own grace period, for it to reap and clean up.
const SUPERVISOR_SLACK: Duration = Duration::from_secs(3);
/// How long a freed port may take to become bindable (a server's children closing it).
const PORT_RELEASE: Duration = Duration::from_secs(2);

/// `cargo portguard stop`.
///
/// # Errors
/// Bad input (exit 2); a server that could not be stopped (exit 1).
pub fn stop(common: &CommonArgs, args: &StopArgs, vars: Vars<'_>) -> Result<i32> {
    let state = find_state(common, vars);
    let targets = if args.all {
        match &state {
            Some(state) => status::running_instances(state)?
                .iter()
                .map(|name| state.instance(name))
                .collect(),
            None => Vec::new(),
        }
    } else {
        status::pick_running(state.as_ref(), args.instance.as_deref())?
            .into_iter()
            .collect()
    };
    if targets.is_empty() {
        output::status("Stopped", "nothing: no instance is running here");
        return Ok(exit_codes::OK);
    }
    for files in &targets {
        stop_instance(files, args.timeout)?;
    }
    Ok(exit_codes::OK)
}

/// Stops one instance and returns once its supervisor is gone and its port is free.
///
/// # Errors
/// When the recorded supervisor cannot be proved to be ours, or will not die.
pub fn stop_instance(files: &InstanceFiles, timeout: Option<Duration>) -> Result<()> {
    let name = &files.name;
    if !lock::is_held(files)? {
        if let lock::Acquired::Ours(_, Some(stale)) = lock::acquire(files)? {
            end_orphan(name, &stale);
        }
        output::status("Stopped", format!("nothing: `{name}` is not running"));
        return Ok(());
    }
    let record = running_record(files)?;
    prove_supervisor(&record)?;
    let started = Instant::now();
    output::status(
        "Stopping",
        format!("`{name}` (server pid {}, port {})", record.pid, record.port),
    );
    let supervisor = record.supervisor_pid;
    signal(supervisor, Sig::TERM)?;
    output::status(
        "Signalled",
        format!("SIGTERM to supervisor pid {supervisor}, which stops the server's process group"),
    );

    let grace = Duration::from_millis(record.shutdown_timeout_ms);
    let released = match timeout {
        Some(limit) if limit < grace => {
            lock::wait_released(files, limit) || {
                // A second request makes the supervisor SIGKILL the group at once.
                output::status(
                    "Killing",
                    format!("`{name}`: not stopped within {:.1}s", limit.as_secs_f64()),
                );
                let _ = os::signal_process(supervisor, Sig::TERM);
                lock::wait_released(files, SUPERVISOR_SLACK)
            }
        }
        Some(limit) => lock::wait_released(files, limit + SUPERVISOR_SLACK),
        None => lock::wait_released(files, grace + SUPERVISOR_SLACK),
    };
    if !released {
        kill_everything(&record);
        if !lock::wait_released(files, SUPERVISOR_SLACK) {
            return Err(Exit {
                code: exit_codes::FAILURE,
                message: format!(
                    "could not stop `{name}`: supervisor pid {supervisor} survived SIGKILL"
                ),
            }
            .into());
        }
        // A killed supervisor cleans nothing up: its files go now, not as "stale" later. The
        // waits above that timed out still hold a shared lock for an instant once it is free.
        for _ in 0..100 {
            if let lock::Acquired::Ours(lock, _) = lock::acquire(files)? {
                lock.clear();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let port_note = wait_port_free(&record);
    output::status(
        "Stopped",
        format!(
            "`{name}` (server pid {}) in {:.2}s; {port_note}",
            record.pid,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// `cargo portguard restart`: the supervisor stops the server and starts it again, keeping the
/// socket in socket handoff; this waits until the new server answers.
///
/// # Errors
/// Nothing running (exit 1), an unproved supervisor, or a server that does not come back.
pub fn restart(common: &CommonArgs, args: &InstanceArg, vars: Vars<'_>) -> Result<i32> {
    let state = find_state(common, vars);
    let files = status::pick_running(state.as_ref(), args.instance.as_deref())?
        .filter(|files| lock::is_held(files).unwrap_or(false))
        .ok_or_else(|| Exit {
            code: exit_codes::FAILURE,
            message:
                "nothing to restart: no instance is running here; start it with `cargo serve-safe`"
                    .to_owned(),
        })?;
    let record = running_record(&files)?;
    prove_supervisor(&record)?;
    let name = &files.name;
    output::status(
        "Restarting",
        format!("`{name}` (server pid {})", record.pid),
    );
    // SIGUSR2: `signals::RESTART`, as the supervisor answers it.
    signal(record.supervisor_pid, Sig::USR2)?;
    // The supervisor rewrites the record with the new pid, then again once it answers.
    let limit = Duration::from_millis(record.shutdown_timeout_ms) + Duration::from_mins(5);
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(new) = lock::read_record(&files)
            && new.pid != record.pid
            && new.ready
        {
            output::status(
                "Restarted",
                format!(
                    "`{name}`: server pid {} → {}, on {}",
                    record.pid, new.pid, new.url
                ),
            );
            return Ok(exit_codes::OK);
        }
        if !lock::is_held(&files)? {
            return Err(Exit {
                code: exit_codes::FAILURE,
                message: format!("`{name}` stopped during the restart; see its output (or `cargo portguard logs`)"),
            }
            .into());
        }
        if Instant::now() > deadline {
            return Err(Exit {
                code: exit_codes::FAILURE,
                message: format!(
                    "`{name}` did not answer within {}s of the restart",
                    limit.as_secs()
                ),
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A held lock with no readable record is a supervisor between taking the lock and writing.
fn running_record(files: &InstanceFiles) -> Result<Record> {
    for _ in 0..100 {
        if let Ok(record) = lock::read_record(files) {
            return Ok(record);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(Exit {
        code: exit_codes::FAILURE,
        message: format!(
            "`{}` is running but has no readable record `{}`; try again",
            files.name,
            files.json.display()
        ),
    }
    .into())
}

/// The recorded supervisor must be alive and have the recorded start time: a pid reused by
/// another program is never signalled.
fn prove_supervisor(record: &Record) -> Result<()> {
    let pid = record.supervisor_pid;
    let now = os::start_time(pid);
    if pid > 1 && pid != std::process::id() && now.is_some() && now == record.supervisor_start_time
    {
        return Ok(());
    }
    Err(Exit {
        code: exit_codes::FAILURE,
        message: format!(
            "refusing to signal pid {pid}: it is not the supervisor recorded for `{}` (its start time differs or it is gone)",
            record.instance
        ),
    }
    .into())
}

fn signal(pid: u32, signal: Sig) -> Result<()> {
    os::signal_process(pid, signal).map_err(|error| {
        Exit {
            code: exit_codes::FAILURE,
            message: format!("could not signal supervisor pid {pid}: {error}"),
        }
        .into()
    })
}

/// The supervisor did not finish in time: end it and, when proved ours, the server's group.
fn kill_everything(record: &Record) {
    output::warning(format!(
        "supervisor pid {} did not finish in time; sending SIGKILL",
        record.supervisor_pid
    ));
    if is_recorded_server(record) {
        let _ = os::signal_group(record.pid, Sig::KILL);
    }
    let _ = os::signal_process(record.supervisor_pid, Sig::KILL);
}

/// Whether `record.pid` is still the server portguard started: the leader of its own group,
/// with the recorded start time. Never pid 1 or this process, whatever a damaged record says.
#[must_use]
pub fn is_recorded_server(record: &Record) -> bool {
    record.pid > 1
        && record.pid != std::process::id()
        && os::process_group(record.pid) == Some(record.pid)
        && record.pid_start_time.is_some()
        && os::start_time(record.pid) == record.pid_start_time
}

/// Reports what a crashed supervisor left and ends its server if that outlived it (where the
/// OS has no parent-death signal). The files are already gone.
pub fn end_orphan(name: &str, stale: &Stale) {
    let Some(record) = &stale.record else {
        output::warning(format!(
            "removed unreadable state of instance `{name}` left by an earlier run"
        ));
        return;
    };
    output::warning(format!(
        "instance `{name}` was not shut down cleanly (supervisor pid {} is gone); removed its stale state (pid {}, port {})",
        record.supervisor_pid, record.pid, record.port
    ));
    if is_recorded_server(record) && os::is_alive(record.pid) {
        output::warning(format!(
            "its server (pid {}) outlived it; stopping it",
            record.pid
        ));
        let _ = os::signal_group(record.pid, Sig::TERM);
        let deadline = Instant::now() + Duration::from_millis(record.shutdown_timeout_ms);
        while os::is_alive(record.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = os::signal_group(record.pid, Sig::KILL);
    } else if leftover_group(record) {
        // The server died with its supervisor, but what it forked lives on in its group (a
        // parent-death signal reaches only the direct child) and may hold the port.
        output::warning(format!(
            "processes the server (pid {}) started are still running in its process group; ending them",
            record.pid
        ));
        let _ = os::signal_group(record.pid, Sig::KILL);
        let deadline = Instant::now() + PORT_RELEASE;
        while os::group_exists(record.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether the recorded server is gone but its process group is not. A group's id is not given
/// to a new process while any member lives, so the group is still the one our server led;
/// pid 1 and this process never qualify.
fn leftover_group(record: &Record) -> bool {
    record.pid > 1
        && record.pid != std::process::id()
        && record.pid_start_time.is_some()
        && !os::is_alive(record.pid)
        && os::group_exists(record.pid)
}

/// Waits until the instance's port can be bound again; says how that went.
fn wait_port_free(record: &Record) -> String {
    let Ok(host) = record.host.parse() else {
        return format!("port {}", record.port);
    };
    let deadline = Instant::now() + PORT_RELEASE;
    loop {
        match port::check(host, record.port) {
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
