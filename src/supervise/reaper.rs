//! Descendants that leave the server's process group (`setsid`, `setpgid`: a daemon, a helper
//! a shell put in a group of its own) are out of reach of the group signals, and may keep the
//! port. A stop finds them by walking the process tree from the server and signals them along
//! with the group. Where the system allows (Linux), the supervisor is also a child subreaper:
//! an orphaned descendant becomes its child instead of init's, so that even one whose parent
//! exited long ago is found, and it is the supervisor's to reap.
//!
//! Reaping must never take the exit status of a server, which its wait thread collects: only
//! pids known not to be servers are ever waited for here, never "any child".

use std::collections::{HashMap, HashSet};
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::os::{self, Process, ProcessTree, Sig};
use crate::{output, signals};

/// How long processes may take to be gone after SIGKILL before a stop goes on without them:
/// one in uninterruptible sleep can take long, and the stop must end all the same.
const KILLED_LIMIT: Duration = Duration::from_secs(5);

const POLL: Duration = Duration::from_millis(10);

/// Knows which children of the supervisor are servers, and reaps the others.
///
/// Every other child is taken for an adopted orphan, so the supervisor's process must start
/// nothing but servers once it has a reaper (on Linux, where it adopts; elsewhere it starts
/// `ps`, and never adopts).
#[derive(Debug, Clone)]
pub(super) struct Reaper {
    /// Server pid -> its generation, from before its spawn returns until its wait thread has
    /// reaped it. Held while spawning, so that a new server is never taken for an orphan.
    servers: Arc<Mutex<HashMap<u32, u32>>>,
    /// Whether orphans are reparented to the supervisor (it is a subreaper).
    adopts: bool,
}

impl Reaper {
    /// Makes the supervisor a subreaper where it can be, and reaps its adopted children as
    /// they exit. Call before the first server starts.
    ///
    /// # Errors
    /// When the SIGCHLD handler cannot be installed.
    pub(super) fn new() -> Result<Self> {
        let adopts = match os::become_subreaper() {
            Ok(adopts) => adopts,
            Err(error) => {
                output::warning(format!(
                    "could not make the supervisor a child subreaper ({error}); processes the \
                     server orphans outside its process group may outlive a stop"
                ));
                false
            }
        };
        let reaper = Reaper {
            servers: Arc::default(),
            adopts,
        };
        if adopts {
            let on_exit = reaper.clone();
            // SIGCHLD says some child changed state; which ones is read from the process table.
            signals::listen(&[signal_hook::consts::SIGCHLD], move |_| {
                on_exit.reap_exited();
            })?;
        }
        Ok(reaper)
    }

    /// Spawns a server; `generation` tells it from a later server that reuses its pid.
    pub(super) fn spawn(&self, command: &mut Command, generation: u32) -> io::Result<Child> {
        let mut servers = self.servers();
        let child = command.spawn()?;
        servers.insert(child.id(), generation);
        Ok(child)
    }

    /// The server `pid` of `generation` has been reaped by its wait thread.
    pub(super) fn reaped(&self, pid: u32, generation: u32) {
        let mut servers = self.servers();
        if servers.get(&pid) == Some(&generation) {
            servers.remove(&pid);
        }
    }

    /// What left the process groups led by `leaders`, found while those still run; with
    /// `adopted`, also every orphan the supervisor adopted so far and what descends from it
    /// (it spawns nothing but servers, so they can only have come from one).
    pub(super) fn escaped(&self, leaders: &[u32], adopted: bool) -> Escaped {
        let tree = ProcessTree::read();
        let mut found = Vec::new();
        for &leader in leaders {
            found.extend(
                tree.descendants(leader)
                    .into_iter()
                    .filter(|process| process.group != Some(leader)),
            );
        }
        if adopted {
            for orphan in self.adopted(&tree) {
                found.push(tree.process(orphan));
                found.extend(tree.descendants(orphan));
            }
        }
        let mut seen = HashSet::new();
        found.retain(|process| seen.insert(process.pid));
        Escaped(found)
    }

    /// SIGKILLs every adopted orphan and what descends from it, and waits until they are
    /// reaped. For when every server is gone: an orphan cannot be told apart from one that a
    /// running server's helper left. Returns the pids that were still running.
    pub(super) fn end_adopted(&self) -> Vec<u32> {
        if !self.adopts {
            return Vec::new();
        }
        let deadline = Instant::now() + KILLED_LIMIT;
        let mut ended = Vec::new();
        loop {
            let tree = ProcessTree::read();
            let orphans = self.adopted(&tree);
            if orphans.is_empty() {
                return ended;
            }
            for &orphan in &orphans {
                let mut family = vec![tree.process(orphan)];
                family.extend(tree.descendants(orphan));
                for process in family {
                    if process.is_alive() && !ended.contains(&process.pid) {
                        ended.push(process.pid);
                    }
                    process.signal(Sig::KILL);
                }
            }
            self.reap_exited();
            if Instant::now() >= deadline {
                output::warning(format!(
                    "{} that the server left behind did not end within {}s of SIGKILL",
                    processes(&orphans),
                    KILLED_LIMIT.as_secs()
                ));
                return ended;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Reaps the adopted children that have exited.
    fn reap_exited(&self) {
        if !self.adopts {
            return;
        }
        // Held throughout, so that no server is spawned between reading the table and reaping.
        let servers = self.servers();
        let me = std::process::id();
        for child in ProcessTree::read().children(me) {
            if !servers.contains_key(&child) {
                os::reap(child);
            }
        }
    }

    /// The supervisor's children that are not servers: orphans it adopted.
    fn adopted(&self, tree: &ProcessTree) -> Vec<u32> {
        if !self.adopts {
            return Vec::new();
        }
        let servers = self.servers();
        tree.children(std::process::id())
            .into_iter()
            .filter(|child| !servers.contains_key(child))
            .collect()
    }

    fn servers(&self) -> MutexGuard<'_, HashMap<u32, u32>> {
        // The map stays consistent whatever panicked while holding it: one insert or remove.
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Processes that left the servers' process groups, as found when a stop began.
#[derive(Debug, Default)]
pub(crate) struct Escaped(Vec<Process>);

impl Escaped {
    /// Processes found by other means (the holders of a handed-over socket after a crash).
    pub(crate) fn new(processes: Vec<Process>) -> Self {
        Escaped(processes)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn signal(&self, signal: Sig) {
        for process in &self.0 {
            process.signal(signal);
        }
    }

    pub(super) fn any_alive(&self) -> bool {
        self.0.iter().any(Process::is_alive)
    }

    /// Waits until none is left, at most `KILLED_LIMIT`; for after SIGKILL.
    pub(super) fn wait_gone(&self) {
        let deadline = Instant::now() + KILLED_LIMIT;
        while self.any_alive() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }

    /// For messages after "sent SIGTERM to its process group": ` and to 1 process (pid N) that
    /// left it`, with `it` as given; nothing when none left.
    pub(super) fn describe(&self, it: &str) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let pids: Vec<u32> = self.0.iter().map(|process| process.pid).collect();
        format!(" and to {} that left {it}", processes(&pids))
    }
}

/// `1 process (pid N)` or `N processes (pids A, B)`, for messages.
pub(crate) fn processes(pids: &[u32]) -> String {
    match pids {
        [one] => format!("1 process (pid {one})"),
        all => format!("{} processes (pids {})", all.len(), pid_list(all)),
    }
}

pub(crate) fn pid_list(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
