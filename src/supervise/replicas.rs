//! The slots of the servers a supervisor runs (one, or `--replicas N` accepting on one socket so
//! the kernel spreads connections across them): what runs in each, and each one's crash history.
//! A replica that exits after the service was ready is started again after a back-off.
//!
//! Processes that leave a replica's group are stopped with it when it is found in the tree below
//! it; an orphan the supervisor adopted cannot be told to belong to one replica rather than
//! another, so only a stop of all replicas ends those.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::describe;
use super::stop::reap_remains;
use crate::output;

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
pub(super) struct Replicas(Vec<Replica>);

impl Replicas {
    pub(super) fn new(count: usize) -> Self {
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

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The pids of the servers now running, in replica order.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.0
            .iter()
            .filter_map(|replica| replica.process.map(|(_, pid)| pid))
            .collect()
    }

    pub(super) fn first(&self) -> Option<(u32, u32)> {
        self.0.iter().find_map(|replica| replica.process)
    }

    pub(super) fn process(&self, index: usize) -> Option<(u32, u32)> {
        self.0[index].process
    }

    pub(super) fn index_of(&self, generation: u32) -> Option<usize> {
        self.0
            .iter()
            .position(|replica| replica.process.is_some_and(|(g, _)| g == generation))
    }

    pub(super) fn next_restart(&self) -> Option<Instant> {
        self.0.iter().filter_map(|replica| replica.restart_at).min()
    }

    /// The slots whose back-off is over at `now`.
    pub(super) fn due(&self, now: Instant) -> Vec<usize> {
        (0..self.0.len())
            .filter(|&index| self.0[index].restart_at.is_some_and(|at| at <= now))
            .collect()
    }

    pub(super) fn started(&mut self, index: usize, generation: u32, pid: u32) {
        let replica = &mut self.0[index];
        replica.process = Some((generation, pid));
        replica.started = Instant::now();
        replica.restart_at = None;
    }

    /// The server in slot `index` is gone and was reaped; what it left in its group goes too.
    pub(super) fn exited(&mut self, index: usize) {
        if let Some((_, pid)) = self.0[index].process.take() {
            reap_remains(&[pid], &super::Escaped::default(), Duration::ZERO);
        }
    }

    /// Empties every slot and cancels pending restarts; returns what ran.
    pub(super) fn take_all(&mut self) -> Vec<(u32, u32)> {
        self.0
            .iter_mut()
            .filter_map(|replica| {
                replica.restart_at = None;
                replica.process.take()
            })
            .collect()
    }

    /// A replica exited while nobody asked: reap its group and schedule its restart.
    pub(super) fn crashed(&mut self, index: usize, status: ExitStatus) {
        let replica = &mut self.0[index];
        let Some((_, pid)) = replica.process.take() else {
            return;
        };
        reap_remains(&[pid], &super::Escaped::default(), Duration::ZERO);
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
        set.started(0, 1, 100);
        set.started(2, 3, 300);
        assert_eq!(set.pids(), [100, 300]);
        assert_eq!(set.index_of(3), Some(2));
        assert_eq!(set.index_of(2), None);
        assert_eq!(set.first(), Some((1, 100)));
    }
}
