//! Who owns a process, and whether it still runs: the facts portguard checks before it treats a
//! recorded pid or group as its own.

#[cfg(not(target_os = "linux"))]
use std::process::Command;

use super::process::{group_exists, pid};

/// The effective user id of this process: whose files and processes portguard may trust.
#[must_use]
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The effective uid of the live (or zombie) process `target`; `None` when it does not exist
/// or the OS will not say.
///
/// The effective uid is the one the kernel checks when that process opens, binds or signals,
/// so it is the one that says whose the process is.
#[cfg(target_os = "linux")]
#[must_use]
pub fn process_uid(target: u32) -> Option<u32> {
    pid(target).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{target}/status")).ok()?;
    effective_uid_in(&status)
}

/// The effective uid in the text of /proc/PID/status: `Uid:` lists real, effective, saved and
/// filesystem uids.
#[cfg(target_os = "linux")]
fn effective_uid_in(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(not(target_os = "linux"))]
#[must_use]
pub fn process_uid(target: u32) -> Option<u32> {
    pid(target).ok()?;
    // `uid` is the effective uid in BSD ps; `ruid` would be the real one.
    let output = Command::new("ps")
        .args(["-o", "uid=", "-p", &target.to_string()])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// Whether `target` exists and has not exited: a zombie (exited, not yet reaped) does not run,
/// though its pid still answers a signal.
#[cfg(target_os = "linux")]
#[must_use]
pub fn is_running(target: u32) -> bool {
    if pid(target).is_err() {
        return false;
    }
    match super::process::proc_stat_fields(target) {
        Some(fields) => fields.first().is_some_and(|state| state_runs(state)),
        // No stat file: gone, or /proc hides other users' processes (hidepid); then the
        // signal test is all there is.
        None => signal_reaches(target),
    }
}

#[cfg(not(target_os = "linux"))]
#[must_use]
pub fn is_running(target: u32) -> bool {
    if !signal_reaches(target) {
        return false;
    }
    let Ok(output) = Command::new("ps")
        .args(["-o", "stat=", "-p", &target.to_string()])
        .output()
    else {
        return true;
    };
    let state = String::from_utf8_lossy(&output.stdout);
    let state = state.trim();
    // ps fails once the process is gone between the two looks.
    output.status.success() && !state.is_empty() && state_runs(state)
}

/// Whether a process state letter (of /proc/PID/stat or of ps) is one that still runs code:
/// `Z` is a zombie, `X` (Linux) a process being torn down.
fn state_runs(state: &str) -> bool {
    !(state.starts_with('Z') || state.starts_with('X'))
}

fn signal_reaches(target: u32) -> bool {
    pid(target).is_ok_and(|p| match rustix::process::test_kill_process(p) {
        Ok(()) => true,
        Err(error) => error == rustix::io::Errno::PERM,
    })
}

/// Whether the process group `pgid` has a member that is not a zombie.
///
/// A group whose members have all exited but are not yet reaped still answers `kill(-pgid, 0)`
/// (see [`group_exists`]); this answers whether anything in it can still act.
#[cfg(target_os = "linux")]
#[must_use]
pub fn group_has_running_members(pgid: u32) -> bool {
    // The cheap answer first: no member at all, zombie or not.
    if !group_exists(pgid) {
        return false;
    }
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return true;
    };
    let mut seen_any = false;
    for process in processes.flatten() {
        let Some(member) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(fields) = super::process::proc_stat_fields(member) else {
            continue;
        };
        // After the state: the parent, then the process group.
        if fields.get(2).and_then(|group| group.parse::<u32>().ok()) != Some(pgid) {
            continue;
        }
        seen_any = true;
        if fields.first().is_some_and(|state| state_runs(state)) {
            return true;
        }
    }
    // The signal reached a member that /proc does not show (hidepid, another pid namespace):
    // that member cannot be proved a zombie, so it counts as running.
    !seen_any
}

#[cfg(not(target_os = "linux"))]
#[must_use]
pub fn group_has_running_members(pgid: u32) -> bool {
    if !group_exists(pgid) {
        return false;
    }
    let Ok(output) = Command::new("ps")
        .args(["-A", "-o", "pgid=,stat="])
        .output()
    else {
        return true;
    };
    if !output.status.success() {
        return true;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut seen_any = false;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(group), Some(state)) = (fields.next(), fields.next()) else {
            continue;
        };
        if group.parse::<u32>().ok() != Some(pgid) {
            continue;
        }
        seen_any = true;
        if state_runs(state) {
            return true;
        }
    }
    !seen_any
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt as _;
    use std::process::Command;

    use super::*;
    use crate::os::unix::eventually;

    #[test]
    fn the_uid_of_a_child_is_ours() {
        let mut child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("start sleep");
        assert_eq!(
            process_uid(child.id()),
            Some(rustix::process::geteuid().as_raw())
        );
        assert_eq!(
            process_uid(std::process::id()),
            Some(rustix::process::geteuid().as_raw())
        );
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
        assert_eq!(process_uid(child.id()), None, "a reaped pid has no owner");
        assert_eq!(process_uid(0), None);
        assert_eq!(process_uid(u32::MAX), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_effective_uid_is_read_from_the_status_text() {
        let status = "Name:\tsudo\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid_in(status), Some(0));
        assert_eq!(effective_uid_in("Name:\tx\n"), None);
        assert_eq!(effective_uid_in("Uid:\t1000\n"), None);
    }

    #[test]
    fn a_zombie_is_not_running() {
        let mut child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("start sleep");
        assert!(is_running(child.id()));
        child.kill().expect("kill sleep");
        // Not waited for: the child stays a zombie, and its pid still answers a signal.
        assert!(
            eventually(|| !is_running(child.id())),
            "the killed child still counts as running"
        );
        assert!(signal_reaches(child.id()), "the zombie was reaped already");
        assert!(
            process_uid(child.id()).is_some(),
            "a zombie still has an owner"
        );
        child.wait().expect("reap sleep");
        assert!(!is_running(child.id()));
        assert!(!is_running(0));
    }

    #[test]
    fn a_group_of_zombies_has_no_running_member() {
        let mut leader = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("start sleep");
        let group = leader.id();
        let mut member = Command::new("sleep")
            .arg("30")
            .process_group(group as i32)
            .spawn()
            .expect("start a second sleep in the group");
        assert!(group_has_running_members(group));

        leader.kill().expect("kill the leader");
        assert!(
            eventually(|| !is_running(group)),
            "the leader never became a zombie"
        );
        assert!(
            group_has_running_members(group),
            "the second member still runs"
        );

        member.kill().expect("kill the member");
        assert!(
            eventually(|| !group_has_running_members(group)),
            "a group of zombies counts as running"
        );
        assert!(group_exists(group), "the zombies were reaped already");

        leader.wait().expect("reap the leader");
        member.wait().expect("reap the member");
        assert!(!group_has_running_members(group));
    }
}
