//! The proofs portguard asks for before it signals a process: the pid must still name the process
//! that was recorded (its start time), that process must belong to the user running portguard,
//! and a supervisor must be the very process that holds the instance lock. A start time alone
//! proves that a pid was not reused; it proves nothing about who wrote the record, and the record
//! is only believed at all because it is a private file of this user's (see [`super::StateDir`]).
//! Where a proof fails, the caller reports and signals nothing.

use super::{InstanceFiles, Record};
use crate::os::{self, StartTime};

/// Why a process is not provably ours.
pub(crate) type Refusal = String;

/// Never pid 0 or 1, never portguard itself, whatever a record says; and only a live process
/// (not a zombie) of this user's that started when the record says.
fn same_process(pid: u32, start: Option<&StartTime>, what: &str) -> Result<(), Refusal> {
    if pid <= 1 || pid == std::process::id() {
        return Err(format!("pid {pid} cannot be the {what}"));
    }
    if !os::is_running(pid) {
        return Err(format!("the {what} (pid {pid}) is gone"));
    }
    match os::process_uid(pid) {
        Some(uid) if uid == os::effective_uid() => {}
        Some(uid) => {
            return Err(format!(
                "pid {pid} belongs to another user (uid {uid}), not to the {what} portguard started"
            ));
        }
        None => return Err(format!("cannot tell who owns pid {pid}")),
    }
    match (start, os::start_time(pid)) {
        (Some(recorded), Some(now)) if *recorded == now => Ok(()),
        (None, _) => Err(format!(
            "no start time was recorded for the {what} (pid {pid})"
        )),
        _ => Err(format!(
            "pid {pid} is not the {what} that was recorded (its start time differs)"
        )),
    }
}

/// The supervisor of a running instance, before `stop`, `restart` or `--force` signal it.
pub(crate) fn supervisor(files: &InstanceFiles, record: &Record) -> Result<u32, Refusal> {
    let pid = record.supervisor_pid;
    same_process(pid, record.supervisor_start_time.as_ref(), "supervisor")?;
    match files.is_held_by(pid) {
        // `None`: the OS cannot tell who holds a lock (macOS), so owner and start time are the
        // proof.
        Ok(Some(true) | None) => Ok(pid),
        Ok(Some(false)) => Err(format!(
            "pid {pid} does not hold the lock `{}`",
            files.lock.display()
        )),
        Err(error) => Err(format!("{error:#}")),
    }
}

/// The server of a crashed supervisor, still running: it leads its own process group (which
/// portguard gave it), belongs to this user and started when the record says.
pub(crate) fn orphan_server(record: &Record) -> Result<u32, Refusal> {
    let pid = record.pid;
    same_process(pid, record.pid_start_time.as_ref(), "server")?;
    if os::process_group(pid) != Some(pid) {
        return Err(format!("pid {pid} no longer leads its own process group"));
    }
    Ok(pid)
}

/// The server is gone but its process group is not: what it forked lives on in it (a
/// parent-death signal reaches only the direct child) and may hold the port. A group's id is
/// not given to a new process while any member lives, so the group is still the one our server
/// led.
pub(crate) fn leftover_group(record: &Record) -> Option<u32> {
    let pid = record.pid;
    (pid > 1
        && pid != std::process::id()
        && record.pid_start_time.is_some()
        && !os::is_running(pid)
        && os::group_has_running_members(pid))
    .then_some(pid)
}
