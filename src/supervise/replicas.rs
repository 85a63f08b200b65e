//! `--replicas N`: N servers accept on the one socket portguard bound, so the kernel spreads
//! connections across them. Each replica is supervised on its own: one that exits while nobody
//! asked is started again after a back-off, and a restart replaces them one at a time, so the
//! service keeps answering. Still one channel and no polling: the loop sleeps until an event or
//! the nearest restart deadline.
//!
//! Processes that leave a replica's group are stopped with it when it is found in the tree below
//! it; an orphan the supervisor adopted cannot be told to belong to one replica rather than
//! another, so only a stop of all replicas ends those.

use std::collections::HashSet;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::reaper::{Escaped, pid_list};
use super::{Ending, Event, Observer, Supervisor, describe, reap_remains};
use crate::os::{self, Sig};
use crate::{output, signals};

/// How long a replacement runs before the next replica of a rolling restart is stopped, unless
/// it says `READY=1` sooner.
const SETTLE: Duration = Duration::from_millis(300);
/// The first wait before a crashed replica is started again; it doubles with each crash.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A replica that ran this long before it crashed starts again from the first back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// One slot: the server running in it, if any, and its crash history.
#[derive(Debug)]
struct Replica {
    /// The generation and pid of the server now in this slot.
    process: Option<(u32, u32)>,
    started: Instant,
    /// Crashes in a row (reset by a run of `HEALTHY_RUN`).
    crashes: u32,
    restart_at: Option<Instant>,
}

/// Every slot, in replica order.
#[derive(Debug)]
struct Replicas(Vec<Replica>);

impl Replicas {
    fn new(count: usize) -> Self {
        Replicas(
            (0..count)
                .map(|_| Replica {
                    process: None,
                    started: Instant::now(),
                    crashes: 0,
                    restart_at: None,
                })
                .collect(),
        )
    }

    /// The pids of the servers now running, in replica order.
    fn pids(&self) -> Vec<u32> {
        self.0
            .iter()
            .filter_map(|replica| replica.process.map(|(_, pid)| pid))
            .collect()
    }

    fn index_of(&self, generation: u32) -> Option<usize> {
        self.0
            .iter()
            .position(|replica| replica.process.is_some_and(|(g, _)| g == generation))
    }

    fn next_restart(&self) -> Option<Instant> {
        self.0.iter().filter_map(|replica| replica.restart_at).min()
    }

    /// A replica exited while nobody asked: reap its group and schedule its restart.
    fn crashed(&mut self, index: usize, status: ExitStatus) {
        let replica = &mut self.0[index];
        let Some((_, pid)) = replica.process.take() else {
            return;
        };
        reap_remains(&[pid], &Escaped::default(), Duration::ZERO);
        if replica.started.elapsed() >= HEALTHY_RUN {
            replica.crashes = 0;
        }
        let delay = backoff(replica.crashes);
        replica.crashes = replica.crashes.saturating_add(1);
        replica.restart_at = Some(Instant::now() + delay);
        output::warning(format!(
            "replica {index} (pid {pid}) exited with {}; restarting in {}s",
            describe(status),
            delay.as_secs()
        ));
    }
}

/// The wait after the `crashes`-th crash in a row: 1 s, 2 s, 4 s, ... at most 30 s.
fn backoff(crashes: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << crashes.min(5))
        .min(MAX_BACKOFF)
}

/// What a wait inside a rolling restart ended with.
enum Waited {
    /// The event waited for.
    Done,
    Timeout,
    /// A stop was asked for.
    Stop,
}

/// The event a wait inside a rolling restart is for.
#[derive(Clone, Copy)]
enum Until {
    Exit(u32),
    Ready(u32),
}

impl Supervisor {
    /// Starts `launch.replicas` servers on the shared socket and supervises them until a stop.
    pub(super) fn run_replicas(&mut self, observer: &mut dyn Observer) -> Result<Ending> {
        let mut set = Replicas::new(self.launch.replicas);
        for index in 0..set.0.len() {
            self.start_replica(&mut set, index)?;
        }
        if let Some((generation, pid)) = set.0[0].process {
            // One probe: an answer on the socket means the service is up, whichever replica
            // gave it.
            self.start_probe(generation, pid)?;
        }
        observer.replicas(&set.pids(), false);
        let mut ready = false;
        let ready_deadline = self
            .launch
            .ready_timeout
            .map(|limit| (Instant::now() + limit, limit));
        loop {
            let wake = match ready_deadline {
                Some((deadline, _)) if !ready => Some(
                    set.next_restart()
                        .map_or(deadline, |restart| restart.min(deadline)),
                ),
                _ => set.next_restart(),
            };
            let event = match wake {
                Some(at) => match self
                    .events
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(event) => Some(event),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        anyhow::bail!("the supervisor's event channel closed")
                    }
                },
                None => Some(
                    self.events
                        .recv()
                        .context("the supervisor's event channel closed")?,
                ),
            };
            let Some(event) = event else {
                if let Some((deadline, limit)) = ready_deadline
                    && !ready
                    && Instant::now() >= deadline
                {
                    self.stop_all(&mut set)?;
                    return Ok(Ending::NotReady(limit));
                }
                self.restart_due(&mut set, observer, ready)?;
                continue;
            };
            match event {
                Event::Ready(generation) if !ready && set.index_of(generation).is_some() => {
                    ready = true;
                    observer.replicas(&set.pids(), true);
                    observer.ready(set.pids().first().copied().unwrap_or_default());
                }
                Event::Exited(generation, status) => {
                    let Some(index) = set.index_of(generation) else {
                        continue;
                    };
                    if !ready {
                        // A build failure or a server that cannot start: ending the run says so,
                        // where restarting would hide it.
                        self.cancel_probe.store(true, Ordering::Relaxed);
                        if let Some((_, pid)) = set.0[index].process.take() {
                            reap_remains(&[pid], &Escaped::default(), Duration::ZERO);
                        }
                        self.stop_all(&mut set)?;
                        return Ok(Ending::Exited {
                            status,
                            ready: false,
                        });
                    }
                    set.crashed(index, status);
                    observer.replicas(&set.pids(), ready);
                }
                Event::Ready(_) => {}
                Event::Signal(signals::RESTART) => {
                    if !self.rolling_restart(&mut set, observer)? {
                        return Ok(Ending::Stopped);
                    }
                    ready = true;
                }
                Event::Signal(signal) => {
                    output::verbose("Received", signals::name(signal));
                    self.stop_all(&mut set)?;
                    return Ok(Ending::Stopped);
                }
            }
        }
    }

    fn start_replica(&mut self, set: &mut Replicas, index: usize) -> Result<u32> {
        self.generation += 1;
        // `READY=1` counts for the newest server: the replacement a rolling restart waits for.
        self.current.store(self.generation, Ordering::Relaxed);
        let pid = self.spawn_process(self.generation, Some(index))?;
        let replica = &mut set.0[index];
        replica.process = Some((self.generation, pid));
        replica.started = Instant::now();
        replica.restart_at = None;
        output::verbose("Started", format!("replica {index} (pid {pid})"));
        Ok(pid)
    }

    /// Starts the replicas whose back-off is over.
    fn restart_due(
        &mut self,
        set: &mut Replicas,
        observer: &mut dyn Observer,
        ready: bool,
    ) -> Result<()> {
        let now = Instant::now();
        let due: Vec<usize> = (0..set.0.len())
            .filter(|&index| set.0[index].restart_at.is_some_and(|at| at <= now))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        for index in due {
            let pid = self.start_replica(set, index)?;
            output::status("Restarted", format!("replica {index} as pid {pid}"));
        }
        observer.replicas(&set.pids(), ready);
        Ok(())
    }

    /// Replaces the replicas one at a time: stop one, start its replacement, let it settle,
    /// then the next. False when a stop was asked for meanwhile (everything is stopped then).
    fn rolling_restart(&mut self, set: &mut Replicas, observer: &mut dyn Observer) -> Result<bool> {
        output::status(
            "Restarting",
            format!(
                "{} replicas one at a time (pids {})",
                set.0.len(),
                pid_list(&set.pids())
            ),
        );
        observer.replicas(&set.pids(), false);
        let grace = self.launch.shutdown_timeout;
        for index in 0..set.0.len() {
            if let Some((generation, pid)) = set.0[index].process {
                let started = Instant::now();
                let escaped = self.reaper.escaped(&[pid], false);
                let _ = os::signal_group(pid, Sig::TERM);
                escaped.signal(Sig::TERM);
                let deadline = started + grace;
                let waited = match self.wait_for(set, Until::Exit(generation), Some(deadline))? {
                    Waited::Timeout => {
                        output::warning(format!(
                            "replica {index} (pid {pid}) did not stop within {:.1}s of SIGTERM; sent SIGKILL",
                            grace.as_secs_f64()
                        ));
                        let _ = os::signal_group(pid, Sig::KILL);
                        escaped.signal(Sig::KILL);
                        self.wait_for(set, Until::Exit(generation), None)?
                    }
                    waited => waited,
                };
                if matches!(waited, Waited::Stop) {
                    self.stop_all(set)?;
                    return Ok(false);
                }
                set.0[index].process = None;
                reap_remains(
                    &[pid],
                    &escaped,
                    deadline.saturating_duration_since(Instant::now()),
                );
                output::status(
                    "Stopped",
                    format!(
                        "replica {index} (pid {pid}) in {:.2}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
            }
            let pid = self.start_replica(set, index)?;
            output::status("Started", format!("replica {index} as pid {pid}"));
            observer.replicas(&set.pids(), false);
            let generation = self.generation;
            let settled = Instant::now() + SETTLE;
            if let Waited::Stop = self.wait_for(set, Until::Ready(generation), Some(settled))? {
                self.stop_all(set)?;
                return Ok(false);
            }
        }
        // Crashes during the restart were scheduled; those already due start now.
        self.restart_due(set, observer, true)?;
        observer.replicas(&set.pids(), true);
        observer.ready(set.pids().first().copied().unwrap_or_default());
        Ok(true)
    }

    /// Waits for `until` (at most until `deadline`), taking care of what else happens meanwhile:
    /// a crash of another replica is scheduled for restart, a second restart request is part of
    /// this one, a stop request ends the wait.
    fn wait_for(
        &self,
        set: &mut Replicas,
        until: Until,
        deadline: Option<Instant>,
    ) -> Result<Waited> {
        loop {
            let event = match deadline {
                Some(deadline) => match self
                    .events
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    Ok(event) => event,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Ok(Waited::Timeout),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        anyhow::bail!("the supervisor's event channel closed")
                    }
                },
                None => self
                    .events
                    .recv()
                    .context("the supervisor's event channel closed")?,
            };
            match (event, until) {
                (Event::Exited(generation, _), Until::Exit(target)) if generation == target => {
                    return Ok(Waited::Done);
                }
                (Event::Ready(generation), Until::Ready(target)) if generation == target => {
                    return Ok(Waited::Done);
                }
                (Event::Exited(generation, status), _) => {
                    if let Some(index) = set.index_of(generation) {
                        set.crashed(index, status);
                    }
                }
                (Event::Signal(signals::RESTART) | Event::Ready(_), _) => {}
                (Event::Signal(signal), _) => {
                    output::verbose("Received", signals::name(signal));
                    return Ok(Waited::Stop);
                }
            }
        }
    }

    /// Stops every replica: SIGTERM to each group, one shared grace period, SIGKILL to those
    /// left; a second stop request skips the rest of the grace period.
    fn stop_all(&mut self, set: &mut Replicas) -> Result<()> {
        self.cancel_probe.store(true, Ordering::Relaxed);
        let grace = self.launch.shutdown_timeout;
        let started = Instant::now();
        let running: Vec<(u32, u32)> = set
            .0
            .iter_mut()
            .filter_map(|replica| {
                replica.restart_at = None;
                replica.process.take()
            })
            .collect();
        let pids: Vec<u32> = running.iter().map(|&(_, pid)| pid).collect();
        if running.is_empty() {
            // Replicas that crashed may have left orphans all the same.
            self.end_adopted();
            return Ok(());
        }
        // Every replica stops, so every orphan adopted so far is one of theirs.
        let escaped = self.reaper.escaped(&pids, true);
        for &pid in &pids {
            let _ = os::signal_group(pid, Sig::TERM);
        }
        escaped.signal(Sig::TERM);
        output::status(
            "Stopping",
            format!(
                "{} replicas (pids {}): sent SIGTERM to their process groups{}",
                pids.len(),
                pid_list(&pids),
                escaped.describe("them")
            ),
        );
        let mut left: HashSet<u32> = running.iter().map(|&(generation, _)| generation).collect();
        let kill_left = |left: &HashSet<u32>| {
            for &(generation, pid) in &running {
                if left.contains(&generation) {
                    let _ = os::signal_group(pid, Sig::KILL);
                }
            }
            escaped.signal(Sig::KILL);
        };
        let deadline = started + grace;
        let mut killed = false;
        while !left.is_empty() {
            let timeout = if killed {
                // Everything left got SIGKILL: its exit is a matter of moments.
                Duration::from_hours(1)
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match self.events.recv_timeout(timeout) {
                Ok(Event::Exited(generation, _)) => {
                    left.remove(&generation);
                }
                Ok(Event::Signal(_)) if !killed => {
                    output::status("Killing", "replicas: asked twice, sent SIGKILL");
                    kill_left(&left);
                    killed = true;
                }
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    output::warning(format!(
                        "{} replicas did not stop within {:.1}s of SIGTERM; sent SIGKILL",
                        left.len(),
                        grace.as_secs_f64()
                    ));
                    kill_left(&left);
                    killed = true;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("the supervisor's event channel closed")
                }
            }
        }
        reap_remains(
            &pids,
            &escaped,
            deadline.saturating_duration_since(Instant::now()),
        );
        self.end_adopted();
        output::status(
            "Stopped",
            format!(
                "{} replicas (pids {}) in {:.2}s",
                pids.len(),
                pid_list(&pids),
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let waits: Vec<u64> = (0..8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn pids_skip_empty_slots_and_keep_replica_order() {
        let mut set = Replicas::new(3);
        set.0[0].process = Some((1, 100));
        set.0[2].process = Some((3, 300));
        assert_eq!(set.pids(), [100, 300]);
        assert_eq!(set.index_of(3), Some(2));
        assert_eq!(set.index_of(2), None);
    }
}
