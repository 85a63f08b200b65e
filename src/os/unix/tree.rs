//! The process tree: who descends from whom, and the subreaper that keeps orphans in it.
//!
//! A server's descendant that calls `setsid` or `setpgid` leaves the server's process group, so
//! the group signals miss it, and one whose parent exits is reparented away from the server.
//! These functions let the supervisor find such processes by ancestry instead.

use std::collections::{HashMap, HashSet};
use std::io;

use rustix::process::{Signal, WaitOptions};

use super::process::{StartTime, is_alive, pid, process_group, signal_process, start_time};

/// Makes this process the one that its orphaned descendants are reparented to (rather than
/// init), so that they stay its children: within reach of a stop, and its to reap.
///
/// False where there is no such thing, as on macOS (FreeBSD's `procctl(PROC_REAP_ACQUIRE)` is
/// not used): an orphan goes to init there, and only a walk of the tree made while its parent
/// still runs can find it.
#[cfg(target_os = "linux")]
pub fn become_subreaper() -> io::Result<bool> {
    // SAFETY: a plain system call with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

#[cfg(not(target_os = "linux"))]
#[allow(clippy::unnecessary_wraps)] // The signature of the Linux version, which can fail.
pub fn become_subreaper() -> io::Result<bool> {
    Ok(false)
}

/// One process found in the tree, with its start time so that a later process that reuses
/// the pid is never taken for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Its process group when the tree was read.
    pub group: Option<u32>,
    start: Option<StartTime>,
}

impl Process {
    /// `target` as it is now, for a process found by other means than the tree (a holder of a
    /// socket): later signals reach it only while the pid still names it.
    #[must_use]
    pub fn of(target: u32) -> Self {
        Process {
            pid: target,
            group: process_group(target),
            start: start_time(target),
        }
    }

    /// Whether the pid still names this process (a zombie does not count).
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.is_same() && is_alive(self.pid)
    }

    /// Sends `signal` if the pid still names this process.
    pub fn signal(&self, signal: Signal) {
        if self.is_same() {
            let _ = signal_process(self.pid, signal);
        }
    }

    fn is_same(&self) -> bool {
        self.start.is_some() && start_time(self.pid) == self.start
    }
}

/// A snapshot of the processes this user can see: each one's parent and group.
#[derive(Debug, Default)]
pub struct ProcessTree {
    children: HashMap<u32, Vec<u32>>,
    groups: HashMap<u32, u32>,
}

impl ProcessTree {
    /// Reads this process and everything below it; empty when that cannot be read.
    ///
    /// On Linux the walk follows each task's `children` file from this process down, which
    /// reads only the few processes a supervisor has below it; a full scan of `/proc` costs
    /// about a millisecond on a quiet machine, and it sits on the path of every stop.
    #[must_use]
    pub fn read() -> Self {
        Self::read_below(std::process::id())
    }

    /// Reads `root` and everything below it, the same way as [`ProcessTree::read`]: for a
    /// process other than this one (a supervisor that `status` looks at).
    #[must_use]
    pub fn read_below(root: u32) -> Self {
        let mut tree = ProcessTree::default();
        let entries = below(root).unwrap_or_else(entries);
        for Entry { pid, parent, group } in entries {
            tree.children.entry(parent).or_default().push(pid);
            tree.groups.insert(pid, group);
        }
        tree
    }

    /// The children of `parent`, zombies included.
    #[must_use]
    pub fn children(&self, parent: u32) -> Vec<u32> {
        self.children.get(&parent).cloned().unwrap_or_default()
    }

    /// Every process below `root`, parents before their children.
    #[must_use]
    pub fn descendants(&self, root: u32) -> Vec<Process> {
        let mut found = Vec::new();
        let mut seen = HashSet::from([root]);
        let mut next = vec![root];
        while let Some(parent) = next.pop() {
            for &child in self.children.get(&parent).into_iter().flatten() {
                if seen.insert(child) {
                    found.push(self.process(child));
                    next.push(child);
                }
            }
        }
        found
    }

    /// `target` as found in this snapshot, with its start time read now.
    #[must_use]
    pub fn process(&self, target: u32) -> Process {
        Process {
            pid: target,
            group: self.groups.get(&target).copied(),
            start: start_time(target),
        }
    }
}

/// Collects `target` if it is a child of this process that has exited; never waits. Only for
/// pids that nobody else waits for: a reaped status is gone for any other waiter.
pub fn reap(target: u32) {
    if let Ok(target) = pid(target) {
        let _ = rustix::process::waitpid(Some(target), WaitOptions::NOHANG);
    }
}

struct Entry {
    pid: u32,
    parent: u32,
    group: u32,
}

#[cfg(target_os = "linux")]
fn entries() -> Vec<Entry> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let fields = super::process::proc_stat_fields(pid)?;
            // After the state: the parent's pid, then the process group.
            Some(Entry {
                pid,
                parent: fields.get(1)?.parse().ok()?,
                group: fields.get(2)?.parse().ok()?,
            })
        })
        .collect()
}

/// The processes below `root`, from `/proc/PID/task/TID/children`; `None` where the kernel
/// does not provide those files (`CONFIG_PROC_CHILDREN`), and the whole table is read instead.
#[cfg(target_os = "linux")]
fn below(root: u32) -> Option<Vec<Entry>> {
    let mut found = Vec::new();
    let mut next = vec![root];
    let mut seen = HashSet::from([root]);
    while let Some(parent) = next.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children"));
            let children = match children {
                Ok(text) => text,
                Err(error) if error.kind() == io::ErrorKind::NotFound && parent == root => {
                    return None;
                }
                Err(_) => continue,
            };
            for pid in children
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
            {
                if !seen.insert(pid) {
                    continue;
                }
                let Some(group) = super::process::proc_stat_fields(pid)
                    .and_then(|fields| fields.get(2)?.parse().ok())
                else {
                    continue;
                };
                found.push(Entry { pid, parent, group });
                next.push(pid);
            }
        }
    }
    Some(found)
}

#[cfg(not(target_os = "linux"))]
#[allow(clippy::unnecessary_wraps)] // `None` is the answer here: read the whole table.
fn below(_root: u32) -> Option<Vec<Entry>> {
    None
}

#[cfg(not(target_os = "linux"))]
fn entries() -> Vec<Entry> {
    let Ok(output) = std::process::Command::new("ps")
        .args(["-A", "-o", "pid=,ppid=,pgid="])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(str::parse::<u32>);
            Some(Entry {
                pid: fields.next()?.ok()?,
                parent: fields.next()?.ok()?,
                group: fields.next()?.ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt as _;

    use super::*;

    #[test]
    fn a_child_is_found_below_this_process_with_its_group() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("start sleep");
        let me = std::process::id();
        let tree = ProcessTree::read();
        assert!(tree.children(me).contains(&child.id()));
        let found = tree.descendants(me);
        let sleep = found
            .iter()
            .find(|process| process.pid == child.id())
            .expect("the child is a descendant");
        assert_eq!(sleep.group, Some(child.id()), "a group of its own");
        assert!(sleep.is_alive());
        sleep.signal(Signal::KILL);
        child.wait().expect("reap sleep");
        assert!(!sleep.is_alive());
    }

    #[test]
    fn a_process_with_another_start_time_is_never_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("start sleep");
        let real = ProcessTree::default().process(child.id());
        let impostor = Process {
            start: Some(StartTime::never()),
            ..real.clone()
        };
        assert!(!impostor.is_alive());
        impostor.signal(Signal::KILL);
        assert!(
            real.is_alive(),
            "the impostor's signal reached the real process"
        );
        real.signal(Signal::KILL);
        child.wait().expect("reap sleep");
    }

    #[test]
    fn descendants_leave_out_the_root_and_unrelated_processes() {
        let mut tree = ProcessTree::default();
        for (parent, child) in [(1, 10), (10, 11), (11, 12), (1, 20), (12, 10)] {
            tree.children.entry(parent).or_default().push(child);
        }
        let pids: Vec<u32> = tree.descendants(10).iter().map(|p| p.pid).collect();
        assert_eq!(pids, [11, 12]);
        assert!(tree.descendants(99).is_empty());
    }
}
