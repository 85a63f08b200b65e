//! The one way portguard stops servers, whether it is the supervisor ending its run, replacing a
//! replica during a restart, or the next start ending what a crashed supervisor left: SIGTERM to
//! the process groups and to what left them, one deadline, SIGKILL to whatever is left, reaped,
//! and a report of what happened.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::Event;
use super::reaper::Escaped;
use crate::os::{self, Sig};
use crate::signals;

const POLL: Duration = Duration::from_millis(10);
/// How long processes may take to be gone after SIGKILL before a stop goes on without them:
/// one in uninterruptible sleep can take long, and the stop must end all the same.
const KILLED_LIMIT: Duration = Duration::from_secs(5);

/// What a stop ends: the process groups its servers lead, and what left those groups.
#[derive(Debug, Default)]
pub(crate) struct Targets {
    pub(crate) leaders: Vec<u32>,
    pub(crate) escaped: Escaped,
}

/// What a wait during a stop ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Every server is gone.
    Gone,
    /// Someone asked for a stop (a signal to the supervisor).
    Asked,
    /// The deadline passed.
    Deadline,
}

/// How a stop learns that the servers are gone: the supervisor from its children's exits, a
/// later start by looking at the process table.
pub(crate) trait Watch {
    /// Waits until every server is gone, a stop is asked for, or `until` passes (never, for
    /// `None`).
    ///
    /// # Errors
    /// When the source of news fails.
    fn wait(&mut self, until: Option<Instant>) -> Result<Wake>;
}

/// What happened during a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped {
    pub(crate) elapsed: Duration,
    /// SIGKILL was needed: something did not end within the grace period, or a second stop
    /// request cut it short.
    pub(crate) killed: bool,
    /// A stop request arrived during this stop: when the stop was part of a restart, the run
    /// ends instead of going on.
    pub(crate) asked: bool,
}

impl Stopped {
    /// ` in 0.12s`, or ` in 3.00s (SIGKILL was needed)`, for messages.
    pub(crate) fn describe(&self) -> String {
        let killed = if self.killed {
            " (SIGKILL was needed)"
        } else {
            ""
        };
        format!(" in {:.2}s{killed}", self.elapsed.as_secs_f64())
    }
}

/// Stops `targets`: SIGTERM, then waits up to `grace`; SIGKILL to what is left when the grace
/// period is over or a stop is asked for again (`asked_before`: the stop itself was asked for,
/// so the first request counts as the second). Returns once the servers are gone and what they
/// left in their groups, or outside them, is gone too.
///
/// # Errors
/// When `watch` fails.
pub(crate) fn stop(
    targets: &Targets,
    grace: Duration,
    asked_before: bool,
    watch: &mut dyn Watch,
) -> Result<Stopped> {
    let started = Instant::now();
    let deadline = started + grace;
    signal(targets, Sig::TERM);
    let (mut asked, mut killed_at) = (false, None::<Instant>);
    loop {
        let until = killed_at.map_or(deadline, |at| at + KILLED_LIMIT);
        match watch.wait(Some(until))? {
            Wake::Gone => break,
            // Killed and still not gone (uninterruptible sleep): go on without it.
            Wake::Deadline if killed_at.is_some() => break,
            Wake::Asked if killed_at.is_some() => {}
            Wake::Asked if asked || asked_before => {
                crate::output::status(
                    "Killing",
                    format!("{}: asked twice, sent SIGKILL", what(targets)),
                );
                signal(targets, Sig::KILL);
                killed_at = Some(Instant::now());
            }
            Wake::Asked => asked = true,
            Wake::Deadline => {
                crate::output::warning(format!(
                    "{} did not stop within {:.1}s of SIGTERM; sent SIGKILL",
                    what(targets),
                    grace.as_secs_f64()
                ));
                signal(targets, Sig::KILL);
                killed_at = Some(Instant::now());
            }
        }
    }
    let mut killed = killed_at.is_some();
    killed |= reap_remains(
        &targets.leaders,
        &targets.escaped,
        deadline.saturating_duration_since(Instant::now()),
    );
    Ok(Stopped {
        elapsed: started.elapsed(),
        killed,
        asked,
    })
}

fn signal(targets: &Targets, signal: Sig) {
    for &leader in &targets.leaders {
        let _ = os::signal_group(leader, signal);
    }
    targets.escaped.signal(signal);
}

fn what(targets: &Targets) -> String {
    match targets.leaders.as_slice() {
        [one] => format!("server (pid {one})"),
        all => format!(
            "{} servers (pids {})",
            all.len(),
            super::reaper::pid_list(all)
        ),
    }
}

/// What the servers `leaders` left in their groups (children that ignore SIGTERM), and the
/// processes that left those groups, get what is left of the grace period, then SIGKILL. True
/// when SIGKILL was needed.
pub(super) fn reap_remains(leaders: &[u32], escaped: &Escaped, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    let left = || leaders.iter().any(|&leader| os::group_exists(leader)) || escaped.any_alive();
    while left() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    if !left() {
        return false;
    }
    for &leader in leaders {
        if os::group_exists(leader) {
            let _ = os::signal_group(leader, Sig::KILL);
        }
    }
    escaped.signal(Sig::KILL);
    escaped.wait_gone();
    true
}

/// The supervisor's watch: its servers' exits arrive as events, as do stop requests. Other news
/// (another replica exiting, a readiness report) is handed to `other` for after the stop.
pub(super) struct EventWatch<'a> {
    pub(super) events: &'a Receiver<Event>,
    /// The generations still to exit.
    pub(super) left: HashSet<u32>,
    pub(super) other: &'a mut dyn FnMut(Event),
}

impl Watch for EventWatch<'_> {
    fn wait(&mut self, until: Option<Instant>) -> Result<Wake> {
        loop {
            if self.left.is_empty() {
                return Ok(Wake::Gone);
            }
            let event = match until {
                Some(until) => match self
                    .events
                    .recv_timeout(until.saturating_duration_since(Instant::now()))
                {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => return Ok(Wake::Deadline),
                    Err(RecvTimeoutError::Disconnected) => {
                        bail!("the supervisor's event channel closed")
                    }
                },
                None => self
                    .events
                    .recv()
                    .context("the supervisor's event channel closed")?,
            };
            match event {
                Event::Exited(generation, _) | Event::Built(generation, _)
                    if self.left.remove(&generation) => {}
                // A restart asked for during a stop is part of it.
                Event::Signal(signals::RESTART) => {}
                Event::Signal(signal) => {
                    crate::output::verbose("Received", signals::name(signal));
                    return Ok(Wake::Asked);
                }
                other => (self.other)(other),
            }
        }
    }
}

/// The watch of a process that is not the servers' parent (a start cleaning up after a crashed
/// supervisor): it looks at the process table until the groups have no running member and the
/// escaped processes are gone. Nobody asks it to hurry.
#[derive(Debug)]
pub(crate) struct TableWatch<'a> {
    pub(crate) targets: &'a Targets,
}

impl Watch for TableWatch<'_> {
    fn wait(&mut self, until: Option<Instant>) -> Result<Wake> {
        loop {
            let left = self
                .targets
                .leaders
                .iter()
                // A zombie is dead: what is left of a crashed run waits for init to reap it.
                .any(|&leader| os::group_has_running_members(leader))
                || self.targets.escaped.any_alive();
            if !left {
                return Ok(Wake::Gone);
            }
            if until.is_some_and(|until| Instant::now() >= until) {
                return Ok(Wake::Deadline);
            }
            std::thread::sleep(POLL);
        }
    }
}
