//! What a crashed run leaves: its record, and perhaps its server (where the OS has no
//! parent-death signal), processes the server forked into its group, or processes that left the
//! group holding the socket portguard handed over. Only the holder of the instance lock cleans
//! up (the next start, or `stop`); `status` only reports.

use std::fs;

use super::{InstanceFiles, InstanceLock, Record, proof};
use crate::os::{self, Process};
use crate::output;
use crate::supervise::stop::{self, TableWatch, Targets};
use crate::supervise::{Escaped, processes};

/// What an earlier run left behind although its supervisor is gone.
#[derive(Debug)]
pub(crate) struct Stale {
    pub(crate) record: Option<Record>,
}

impl Stale {
    /// What a run left, if anything; an unreadable record counts.
    pub(crate) fn read(files: &InstanceFiles) -> Option<Stale> {
        let exists = |path: &std::path::Path| fs::symlink_metadata(path).is_ok();
        if !exists(&files.json) && !exists(&files.pid) {
            return None;
        }
        Some(Stale {
            record: files.read_record().ok(),
        })
    }
}

/// Reports what a crashed supervisor left, ends what of it still runs (when proved ours), and
/// removes its files.
pub(crate) fn clean_up(lock: &InstanceLock, stale: &Stale) {
    let name = &lock.files().name;
    match &stale.record {
        None => output::warning(format!(
            "removed unreadable state of instance `{name}` left by an earlier run"
        )),
        Some(record) => {
            output::warning(format!(
                "instance `{name}` was not shut down cleanly (supervisor pid {} is gone); removed its stale state (pid {}, port {})",
                record.supervisor_pid, record.pid, record.port
            ));
            end_left_behind(record);
        }
    }
    lock.clear();
}

/// Ends the processes a crashed run left running, with the one stop primitive.
fn end_left_behind(record: &Record) {
    let mut targets = Targets::default();
    if let Ok(pid) = proof::orphan_server(record) {
        output::warning(format!("its server (pid {pid}) outlived it; stopping it"));
        targets.leaders.push(pid);
    } else if let Some(group) = proof::leftover_group(record) {
        output::warning(format!(
            "processes the server (pid {group}) started are still running in its process group; ending them"
        ));
        targets.leaders.push(group);
    }
    targets.escaped = socket_holders(record, &targets.leaders);
    if targets.leaders.is_empty() && targets.escaped.is_empty() {
        return;
    }
    if let Err(error) = stop::stop(
        &targets,
        record.shutdown_timeout,
        false,
        &mut TableWatch { targets: &targets },
    ) {
        output::warning(format!(
            "could not end what the crashed run left: {error:#}"
        ));
    }
}

/// The processes of this user's, outside the groups already being stopped, that still hold the
/// very socket portguard handed over: a descendant that left the server's group and kept the
/// port when the supervisor was killed.
fn socket_holders(record: &Record, groups: &[u32]) -> Escaped {
    let Some(inode) = record.socket_inode else {
        return Escaped::default();
    };
    let me = os::effective_uid();
    let holders: Vec<os::Holder> = os::socket_holders(inode, me)
        .into_iter()
        .filter(|holder| holder.pid != std::process::id())
        .filter(|holder| os::process_group(holder.pid).is_none_or(|group| !groups.contains(&group)))
        .collect();
    if holders.is_empty() {
        return Escaped::default();
    }
    let pids: Vec<u32> = holders.iter().map(|holder| holder.pid).collect();
    let names: Vec<String> = holders.iter().map(ToString::to_string).collect();
    output::warning(format!(
        "{} still hold the socket the crashed run was given (port {}): {}; ending them",
        processes(&pids),
        record.port,
        names.join(", ")
    ));
    Escaped::new(
        holders
            .iter()
            .map(|holder| Process::of(holder.pid))
            .collect(),
    )
}
