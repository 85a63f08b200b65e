//! Build, then swap: what `--watch`, `restart` and SIGUSR2 share. A trigger starts a build while
//! the servers keep serving (a trigger during a build cancels it and builds again); the build's
//! end arrives as an event; a good build is swapped in slot by slot. In socket handoff the new
//! server starts beside the old one on the one socket and the old one stops once the new one
//! accepts, so nothing is refused; in env handoff the old one must free the port first.

use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::build::{self, BuildReport, BuildState, Captured, Outcome};
use super::replicas::Replicas;
use super::stop::{self, EventWatch, Stopped, Targets};
use super::{Ending, Escaped, Event, Observer, Supervisor, describe, pid_list, reaper};
use crate::{health, output, signals};

/// Why a build runs, and since when someone waits for it.
#[derive(Debug, Clone)]
pub(super) struct Trigger {
    /// `src/main.rs changed`, or `None` for a restart.
    change: Option<String>,
    at: Instant,
}

impl Trigger {
    /// A change (`Some`, what changed) or a restart (`None`), now.
    pub(super) fn new(change: Option<String>) -> Self {
        Trigger {
            change,
            at: Instant::now(),
        }
    }

    fn cause(&self) -> String {
        self.change.clone().unwrap_or_else(|| "restart".to_owned())
    }
}

/// How the wait for a new build's server ended.
enum Awaited {
    Ready,
    /// A stop was asked for.
    Asked,
    /// It exited (`exited`) or was not ready in time: `why`, for the message.
    Failed {
        why: String,
        ending: Ending,
        exited: bool,
    },
}

/// How a swap ended.
enum Swap {
    /// The new build serves.
    Done,
    /// Its server failed and was stopped; what serves is what served before (in env handoff,
    /// nothing: the old server had to go first). `ending` is how a run without `--watch` ends
    /// when nothing serves any more.
    Failed(Ending),
    /// A stop was asked for during the swap: everything is stopped.
    Stopped(Stopped),
}

impl Supervisor {
    /// A build ended: swap it in, or say why not. `Some` when that ends the run.
    pub(super) fn built(
        &mut self,
        set: &mut Replicas,
        observer: &mut dyn Observer,
        generation: u32,
        outcome: Outcome,
        ready: &mut bool,
    ) -> Result<Option<Ending>> {
        let Some((build, trigger)) = self
            .build
            .take_if(|(build, _)| build.generation == generation)
        else {
            // A cancelled build's late news.
            return Ok(None);
        };
        let built_in = build.started.elapsed();
        let swap = match outcome {
            Outcome::Failed {
                status,
                first_error,
            } => {
                self.build_failed(set, observer, &trigger, built_in, status, first_error);
                None
            }
            Outcome::Built(captured) => {
                Some(self.swap(set, observer, captured, &trigger, built_in)?)
            }
        };
        match swap {
            Some(Swap::Done) if !*ready => {
                *ready = true;
                observer.ready();
            }
            Some(Swap::Stopped(stopped)) => {
                return Ok(Some(Ending::Stopped {
                    killed: stopped.killed,
                }));
            }
            Some(Swap::Failed(ending)) if !self.launch.watch && set.pids().is_empty() => {
                self.stop_all(set, false)?;
                return Ok(Some(ending));
            }
            _ => {}
        }
        if let Some(trigger) = self.queued.take() {
            self.trigger(trigger, set, observer)?;
        }
        Ok(None)
    }

    /// A change or a restart: builds the newest code while the servers keep serving. A build
    /// already under way is cancelled and started again, so the one that finishes has every
    /// change; during a swap the trigger waits for the swap to end.
    pub(super) fn trigger(
        &mut self,
        trigger: Trigger,
        set: &Replicas,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        if let Some((build, _)) = self.build.take() {
            output::status(
                "Cancelled",
                format!("the build under way: {}; building again", trigger.cause()),
            );
            let mut deferred = Vec::new();
            stop::stop(
                &Targets {
                    leaders: vec![build.pid],
                    escaped: reaper::Escaped::default(),
                },
                self.launch.shutdown_timeout,
                false,
                &mut EventWatch {
                    events: &self.events,
                    left: [build.generation].into(),
                    other: &mut |event| deferred.push(event),
                },
            )?;
            self.deferred.extend(deferred);
        }
        let generation = self.next_generation();
        let build = build::start(&self.launch, generation, &self.reaper, self.sender.clone())?;
        self.builds += 1;
        let serving = match set.pids().as_slice() {
            [] => String::new(),
            [pid] => format!("; the server (pid {pid}) keeps serving"),
            pids => format!("; the replicas (pids {}) keep serving", pid_list(pids)),
        };
        let after = trigger.change.as_ref().map_or_else(
            || "for a restart".to_owned(),
            |change| format!("after {change}"),
        );
        output::status("Building", format!("{after}{serving}"));
        observer.build(&self.report(&trigger, BuildState::Building, None));
        self.build = Some((build, trigger));
        Ok(())
    }

    fn build_failed(
        &self,
        set: &Replicas,
        observer: &mut dyn Observer,
        trigger: &Trigger,
        took: Duration,
        status: ExitStatus,
        first_error: Option<String>,
    ) {
        let keeps = if set.pids().is_empty() {
            "; nothing serves until a build succeeds".to_owned()
        } else {
            "; the last good build keeps serving".to_owned()
        };
        output::error(format!(
            "the build {} failed in {:.2}s ({}){keeps}",
            trigger.change.as_ref().map_or_else(
                || "for the restart".to_owned(),
                |change| format!("after {change}")
            ),
            took.as_secs_f64(),
            describe(status)
        ));
        observer.build(&self.report(
            trigger,
            BuildState::Failed,
            first_error.or_else(|| Some(format!("cargo exited with {}", describe(status)))),
        ));
    }

    /// Where the build of this run's latest trigger stands, for the record.
    fn report(&self, trigger: &Trigger, state: BuildState, error: Option<String>) -> BuildReport {
        BuildReport {
            number: self.builds,
            state,
            at: std::time::SystemTime::now(),
            cause: trigger.cause(),
            error,
        }
    }

    /// Puts the new build in the servers' place, one slot at a time. In socket handoff the new
    /// server starts beside the old one, both accept on the one socket, and the old one is
    /// stopped once the new one is ready: nothing is refused. In env handoff the old server
    /// must free the port first: the gap is a stop and a start.
    fn swap(
        &mut self,
        set: &mut Replicas,
        observer: &mut dyn Observer,
        captured: Captured,
        trigger: &Trigger,
        built_in: Duration,
    ) -> Result<Swap> {
        let started = Instant::now();
        let socket = self.launch.socket.is_some();
        let several = set.len() > 1;
        let previous = self.captured.replace(captured);
        let mut served_at = started;
        for index in 0..set.len() {
            let name = if several {
                format!("replica {index}")
            } else {
                "server".to_owned()
            };
            let mut old = set.process(index);
            if !socket && let Some((generation, pid)) = old.take() {
                let name = format!("the old {name} (pid {pid})");
                let stopped = self.stop_server(set, &name, generation, pid, true)?;
                set.exited(index);
                if stopped.asked {
                    return Ok(Swap::Stopped(self.stop_rest(set, stopped)?));
                }
            }
            let generation = self.next_generation();
            let pid = self.spawn_process(generation, several.then_some(index))?;
            output::verbose("Started", format!("the new {name} (pid {pid})"));
            self.cancel_probe.store(true, Ordering::Relaxed);
            if socket {
                self.start_accept_probe(generation, pid)?;
            } else {
                self.start_probe(generation, pid)?;
            }
            match self.await_new(set, generation, &mut old)? {
                Awaited::Ready => {}
                Awaited::Asked => {
                    set.started(index, generation, pid);
                    return Ok(Swap::Stopped(self.stop_all(set, true)?));
                }
                Awaited::Failed {
                    why,
                    ending,
                    exited,
                } => {
                    self.captured = previous;
                    let name = format!("the new {name} (pid {pid})");
                    return self.swap_failed(
                        set,
                        observer,
                        trigger,
                        (generation, pid),
                        &name,
                        &why,
                        exited,
                        ending,
                    );
                }
            }
            served_at = Instant::now();
            // The slot is the new server's from here: news of it during the old one's stop
            // is news of the slot.
            set.started(index, generation, pid);
            observer.servers(&set.pids(), true);
            if let Some((generation, old_pid)) = old {
                let name = format!("the old {name} (pid {old_pid})");
                let stopped = self.stop_server(set, &name, generation, old_pid, true)?;
                if stopped.asked {
                    return Ok(Swap::Stopped(self.stop_rest(set, stopped)?));
                }
            }
            if several {
                output::verbose("Replaced", format!("replica {index}: pid {pid}"));
            }
        }
        self.swaps += 1;
        report_swap(
            trigger,
            served_at.duration_since(trigger.at),
            built_in,
            served_at.duration_since(started),
        );
        observer.reloaded(self.swaps, &self.report(trigger, BuildState::Serving, None));
        Ok(Swap::Done)
    }

    /// The new server `new` failed (`why`): it is stopped, unless it `exited` already, and
    /// what served before goes on serving.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, each argument named there"
    )]
    fn swap_failed(
        &mut self,
        set: &mut Replicas,
        observer: &mut dyn Observer,
        trigger: &Trigger,
        (generation, pid): (u32, u32),
        name: &str,
        why: &str,
        exited: bool,
        ending: Ending,
    ) -> Result<Swap> {
        if exited {
            stop::reap_remains(&[pid], &Escaped::default(), Duration::ZERO);
        } else {
            let stopped = self.stop_server(set, name, generation, pid, true)?;
            if stopped.asked {
                return Ok(Swap::Stopped(self.stop_rest(set, stopped)?));
            }
        }
        let keeps = if set.pids().is_empty() {
            "; nothing serves until a build succeeds"
        } else {
            "; the old build keeps serving"
        };
        output::error(format!("{name} {why}{keeps}"));
        observer.servers(&set.pids(), !set.pids().is_empty());
        observer.build(&self.report(
            trigger,
            BuildState::ServerFailed,
            Some(format!("the new server {why}")),
        ));
        Ok(Swap::Failed(ending))
    }

    /// Waits for the new server `generation` to be ready. Meanwhile the old one in its slot may
    /// exit (`old` is then cleared), other replicas may crash (restarted later), and a change or
    /// restart waits for the swap to end.
    fn await_new(
        &mut self,
        set: &mut Replicas,
        generation: u32,
        old: &mut Option<(u32, u32)>,
    ) -> Result<Awaited> {
        let limit = self.launch.swap_timeout;
        let deadline = Instant::now() + limit;
        loop {
            let Some(event) = self.next_event(Some(deadline))? else {
                self.cancel_probe.store(true, Ordering::Relaxed);
                return Ok(Awaited::Failed {
                    why: format!(
                        "was not ready within {}s (`ready-timeout-ms`); stopped it",
                        limit.as_secs()
                    ),
                    ending: Ending::NotReady(limit),
                    exited: false,
                });
            };
            match event {
                Event::Ready(ready) if ready == generation => {
                    self.cancel_probe.store(true, Ordering::Relaxed);
                    return Ok(Awaited::Ready);
                }
                Event::Exited(exited, status) if exited == generation => {
                    self.cancel_probe.store(true, Ordering::Relaxed);
                    return Ok(Awaited::Failed {
                        why: format!("exited with {} before it was ready", describe(status)),
                        ending: Ending::Exited {
                            status,
                            ready: true,
                        },
                        exited: true,
                    });
                }
                Event::Exited(exited, _) if old.is_some_and(|(g, _)| g == exited) => {
                    if let Some((_, old_pid)) = old.take() {
                        stop::reap_remains(&[old_pid], &Escaped::default(), Duration::ZERO);
                    }
                }
                Event::Exited(exited, status) => {
                    if let Some(index) = set.index_of(exited) {
                        set.crashed(index, status);
                    }
                }
                Event::Changed(change) => {
                    if self.launch.watch {
                        self.queued = Some(Trigger::new(Some(change)));
                    }
                }
                Event::Signal(signals::RESTART) => {
                    self.queued = Some(Trigger::new(None));
                }
                Event::Signal(signal) => {
                    output::verbose("Received", signals::name(signal));
                    self.cancel_probe.store(true, Ordering::Relaxed);
                    return Ok(Awaited::Asked);
                }
                Event::Ready(_) | Event::Misplaced(..) | Event::Built(..) => {}
            }
        }
    }

    /// Waits, in a thread, until the new server `pid` accepts on the handed socket (and, with a
    /// `health-path`, that answers 2xx); reports `Event::Ready(generation)`. `READY=1` from it
    /// reports the same sooner. A probe's answer alone proves nothing here: the old server
    /// answers on the same socket.
    fn start_accept_probe(&mut self, generation: u32, pid: u32) -> Result<()> {
        self.current.store(generation, Ordering::Relaxed);
        self.cancel_probe = Arc::new(AtomicBool::new(false));
        let cancel = Arc::clone(&self.cancel_probe);
        let check = self.launch.ready.clone();
        let inode = self.socket_inode;
        let sender = self.sender.clone();
        std::thread::Builder::new()
            .name("portguard-ready".to_owned())
            .spawn(move || {
                if health::wait_accepting(pid, inode, &check, &cancel) {
                    let _ = sender.send(Event::Ready(generation));
                }
            })
            .context("could not start the readiness thread")?;
        Ok(())
    }
}

/// The one line a reload prints: `Reloaded in 1.42s (build 1.40s, swap 12ms) after
/// src/routes.rs changed`; `Restarted in …` for a restart.
fn report_swap(trigger: &Trigger, total: Duration, build: Duration, swap: Duration) {
    let (verb, after) = match &trigger.change {
        Some(change) => ("Reloaded", format!(" after {change}")),
        None => ("Restarted", String::new()),
    };
    output::status(
        verb,
        format!(
            "in {} (build {}, swap {}){after}",
            seconds(total),
            seconds(build),
            seconds(swap)
        ),
    );
}

/// `1.42s`, or `12ms` under a second, for the reload line.
fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.2}s", duration.as_secs_f64())
    }
}
