//! Running the servers: `cargo run` in a process group of its own, watched without polling, and
//! stopped as a group through the one stop primitive ([`stop`]). One server is the one-replica
//! case of the same loop: `--replicas N` only changes what a crash after readiness means (the
//! replica is started again after a back-off, where a single server's crash ends the run) and
//! how long a restart waits for each replacement. What left the group is stopped along with it
//! (see [`reaper`]).

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::health::{self, ReadyCheck};
use crate::{exit_codes, os, output, signals};

pub(crate) mod diagnose;
mod notify;
mod reaper;
mod replicas;
pub(crate) mod report;
pub(crate) mod stop;

pub(crate) use notify::NotifySocket;
pub(crate) use reaper::{Escaped, pid_list, processes};
use replicas::Replicas;
use stop::{EventWatch, Stopped, Targets};

/// What the supervisor reacts to. Every source sends into one channel, so the supervisor
/// sleeps until something happens.
#[derive(Debug)]
pub(crate) enum Event {
    Signal(i32),
    /// The server of this generation answers.
    Ready(u32),
    /// The process `cargo run` became has exited.
    Exited(u32, ExitStatus),
    /// The server of this generation listens elsewhere, not on the port it was given.
    Misplaced(u32, diagnose::Misplaced),
}

/// How to start the server.
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) cargo: PathBuf,
    /// Everything after `cargo`: `run`, target selection, features, `--`, server arguments.
    pub(crate) cargo_args: Vec<OsString>,
    /// `PORT`, `PORTGUARD_*` and, in socket handoff, `LISTEN_*` but `LISTEN_PID`.
    pub(crate) env: Vec<(String, String)>,
    /// The socket the server takes at fd 3; the supervisor keeps it open for the whole run.
    pub(crate) socket: Option<TcpListener>,
    pub(crate) ready: ReadyCheck,
    /// The wait after SIGTERM before SIGKILL.
    pub(crate) shutdown_timeout: Duration,
    /// Where the server may send `READY=1` (`NOTIFY_SOCKET`, the systemd protocol).
    pub(crate) notify_socket: Option<NotifySocket>,
    /// Give up on a server that is not ready by then (detached runs, where nobody watches).
    pub(crate) ready_timeout: Option<Duration>,
    /// How many servers accept on the socket (`--replicas`); more than one needs `socket`.
    pub(crate) replicas: usize,
    /// A server that listens elsewhere than it was told ends the run (detached runs, where
    /// nobody reads a warning), rather than being warned about.
    pub(crate) misplaced_fails: bool,
}

impl Launch {
    /// The command as a user would type it, for messages.
    pub(crate) fn display(&self) -> String {
        let mut text = String::from("cargo");
        for arg in &self.cargo_args {
            text.push(' ');
            text.push_str(&arg.to_string_lossy());
        }
        text
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub(crate) enum Ending {
    /// The server exited on its own; `ready` tells whether it had ever answered.
    Exited { status: ExitStatus, ready: bool },
    /// It was stopped on request; `killed` when SIGKILL was needed.
    Stopped { killed: bool },
    /// It did not become ready within the ready timeout and was stopped.
    NotReady(Duration),
    /// It listened elsewhere than it was told, and was stopped (`misplaced_fails`).
    Misplaced(diagnose::Misplaced),
}

impl Ending {
    /// The supervisor's exit code, as the contract says.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Ending::Stopped { .. } => exit_codes::OK,
            Ending::NotReady(_) | Ending::Misplaced(_) => exit_codes::FAILURE,
            Ending::Exited { status, .. } => status_code(*status),
        }
    }
}

/// The server's own code, or 128 + the signal that killed it.
pub(crate) fn status_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| {
            status
                .signal()
                .map(|signal| exit_codes::SIGNAL_BASE + signal)
        })
        .unwrap_or(exit_codes::FAILURE)
}

/// Says what an exit status means, for people.
pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal} ({})", signals::name(signal)),
        (None, None) => status.to_string(),
    }
}

/// Told what happens to the servers, so the caller can record and report it.
pub(crate) trait Observer {
    /// The servers now running, in replica order (their pids are known; they may still be
    /// building), and whether the service counts as ready.
    fn servers(&mut self, pids: &[u32], ready: bool);
    /// The service answers (first start, or the end of a restart).
    fn ready(&mut self);
}

/// The supervised servers, and the channel everything reports to.
#[derive(Debug)]
pub(crate) struct Supervisor {
    launch: Launch,
    events: Receiver<Event>,
    sender: Sender<Event>,
    /// Counts the servers started, so that late news of an old one is recognised.
    generation: u32,
    /// The generation the notify socket reports for: the newest server.
    current: Arc<AtomicU32>,
    cancel_probe: Arc<AtomicBool>,
    reaper: reaper::Reaper,
}

/// How the main loop goes on after a restart.
enum Restarted {
    /// The replacements run; the service is ready when `ready` says so.
    Running { ready: bool },
    /// A stop was asked for during the restart: everything is stopped, nothing new runs.
    Stopped(Stopped),
}

impl Supervisor {
    /// Installs the signal handlers; call before anything can be interrupted.
    ///
    /// # Errors
    /// When the handlers cannot be installed.
    pub(crate) fn new(launch: Launch) -> Result<Self> {
        let (sender, events) = std::sync::mpsc::channel();
        let signal_sender = sender.clone();
        let mut handled = signals::STOP.to_vec();
        handled.push(signals::RESTART);
        signals::listen(&handled, move |signal| {
            let _ = signal_sender.send(Event::Signal(signal));
        })?;
        let current = Arc::new(AtomicU32::new(0));
        if let Some(socket) = &launch.notify_socket {
            notify::listen(socket, sender.clone(), Arc::clone(&current))?;
        }
        Ok(Supervisor {
            launch,
            events,
            sender,
            generation: 0,
            current,
            cancel_probe: Arc::new(AtomicBool::new(false)),
            reaper: reaper::Reaper::new()?,
        })
    }

    pub(crate) fn launch(&self) -> &Launch {
        &self.launch
    }

    /// Starts the servers and supervises them until the run ends: a stop request, a server
    /// that exits before it is ready (or, alone, at all), or the ready timeout.
    ///
    /// # Errors
    /// When `cargo` cannot be started or the event channel fails.
    pub(crate) fn run(&mut self, observer: &mut dyn Observer) -> Result<Ending> {
        let mut set = Replicas::new(self.launch.replicas.max(1));
        for index in 0..set.len() {
            self.start_replica(&mut set, index)?;
        }
        self.probe_first(&set)?;
        observer.servers(&set.pids(), false);
        let mut ready = false;
        let mut ready_deadline = self.ready_deadline();
        loop {
            let wake = match ready_deadline {
                Some((deadline, _)) if !ready => Some(
                    set.next_restart()
                        .map_or(deadline, |restart| restart.min(deadline)),
                ),
                _ => set.next_restart(),
            };
            let Some(event) = self.next_event(wake)? else {
                if let Some((deadline, limit)) = ready_deadline
                    && !ready
                    && Instant::now() >= deadline
                {
                    self.stop_all(&mut set, false)?;
                    return Ok(Ending::NotReady(limit));
                }
                self.restart_due(&mut set, observer, ready)?;
                continue;
            };
            match event {
                Event::Ready(generation) if !ready && set.index_of(generation).is_some() => {
                    // The listener watch has nothing more to say.
                    self.cancel_probe.store(true, Ordering::Relaxed);
                    ready = true;
                    observer.servers(&set.pids(), true);
                    observer.ready();
                }
                Event::Exited(generation, status) => {
                    let Some(index) = set.index_of(generation) else {
                        continue;
                    };
                    if !ready || set.len() == 1 {
                        // A build failure or a server that cannot start: ending the run says so,
                        // where restarting would hide it. A single server's exit is the run's.
                        self.cancel_probe.store(true, Ordering::Relaxed);
                        set.exited(index);
                        self.stop_all(&mut set, false)?;
                        return Ok(Ending::Exited { status, ready });
                    }
                    set.crashed(index, status);
                    observer.servers(&set.pids(), ready);
                }
                Event::Misplaced(generation, misplaced)
                    if !ready && set.index_of(generation).is_some() =>
                {
                    if self.launch.misplaced_fails {
                        self.stop_all(&mut set, false)?;
                        return Ok(Ending::Misplaced(misplaced));
                    }
                    output::warning(misplaced.with(" (it keeps running)"));
                }
                Event::Ready(_) | Event::Misplaced(..) => {}
                Event::Signal(signals::RESTART) => match self.restart(&mut set, observer)? {
                    Restarted::Running { ready: now_ready } => {
                        ready = now_ready;
                        ready_deadline = self.ready_deadline();
                    }
                    Restarted::Stopped(stopped) => {
                        return Ok(Ending::Stopped {
                            killed: stopped.killed,
                        });
                    }
                },
                Event::Signal(signal) => {
                    output::verbose("Received", signals::name(signal));
                    let stopped = self.stop_all(&mut set, true)?;
                    return Ok(Ending::Stopped {
                        killed: stopped.killed,
                    });
                }
            }
        }
    }

    fn ready_deadline(&self) -> Option<(Instant, Duration)> {
        self.launch
            .ready_timeout
            .map(|limit| (Instant::now() + limit, limit))
    }

    /// The next event, or `None` once `wake` has passed.
    fn next_event(&self, wake: Option<Instant>) -> Result<Option<Event>> {
        match wake {
            Some(at) => match self
                .events
                .recv_timeout(at.saturating_duration_since(Instant::now()))
            {
                Ok(event) => Ok(Some(event)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("the supervisor's event channel closed")
                }
            },
            None => self
                .events
                .recv()
                .map(Some)
                .context("the supervisor's event channel closed"),
        }
    }

    /// One probe: an answer on the socket means the service is up, whichever replica gave it.
    fn probe_first(&mut self, set: &Replicas) -> Result<()> {
        match set.first() {
            Some((generation, pid)) => self.start_probe(generation, pid),
            None => Ok(()),
        }
    }

    fn start_replica(&mut self, set: &mut Replicas, index: usize) -> Result<u32> {
        self.generation += 1;
        // `READY=1` counts for the newest server: the replacement a restart waits for.
        self.current.store(self.generation, Ordering::Relaxed);
        let replica = (set.len() > 1).then_some(index);
        let pid = self.spawn_process(self.generation, replica)?;
        set.started(index, self.generation, pid);
        if set.len() > 1 {
            output::verbose("Started", format!("replica {index} (pid {pid})"));
        }
        Ok(pid)
    }

    /// Starts the replicas whose back-off is over.
    fn restart_due(
        &mut self,
        set: &mut Replicas,
        observer: &mut dyn Observer,
        ready: bool,
    ) -> Result<()> {
        let due = set.due(Instant::now());
        if due.is_empty() {
            return Ok(());
        }
        for index in due {
            let pid = self.start_replica(set, index)?;
            output::status("Restarted", format!("replica {index} as pid {pid}"));
        }
        observer.servers(&set.pids(), ready);
        Ok(())
    }

    /// Replaces the servers one at a time: stop one, start its replacement, and (with replicas)
    /// let it settle before the next. A stop asked for meanwhile ends the run: everything is
    /// stopped and nothing new is started.
    fn restart(&mut self, set: &mut Replicas, observer: &mut dyn Observer) -> Result<Restarted> {
        let several = set.len() > 1;
        if several {
            output::status(
                "Restarting",
                format!(
                    "{} replicas one at a time (pids {})",
                    set.len(),
                    pid_list(&set.pids())
                ),
            );
        }
        observer.servers(&set.pids(), false);
        for index in 0..set.len() {
            if let Some((generation, pid)) = set.process(index) {
                if !several {
                    output::status("Restarting", format!("server (pid {pid})"));
                }
                let stopped = self.stop_one(set, index, generation, pid)?;
                if stopped.asked {
                    // The stop asked for began with this replica: whether it needed SIGKILL
                    // is part of what the stop reports.
                    let rest = self.stop_all(set, true)?;
                    return Ok(Restarted::Stopped(Stopped {
                        killed: stopped.killed || rest.killed,
                        ..rest
                    }));
                }
            }
            let pid = self.start_replica(set, index)?;
            observer.servers(&set.pids(), false);
            if !several {
                // A single server is ready when its own probe says so, in the main loop.
                self.start_probe(self.generation, pid)?;
                return Ok(Restarted::Running { ready: false });
            }
            output::status("Started", format!("replica {index} as pid {pid}"));
            if self.settle(set, self.generation)? {
                return Ok(Restarted::Stopped(self.stop_all(set, true)?));
            }
        }
        // Crashes during the restart were scheduled; those already due start now.
        self.restart_due(set, observer, true)?;
        observer.servers(&set.pids(), true);
        observer.ready();
        Ok(Restarted::Running { ready: true })
    }

    /// Stops the server in one slot (a restart replaces it); other news is kept for later.
    fn stop_one(
        &mut self,
        set: &mut Replicas,
        index: usize,
        generation: u32,
        pid: u32,
    ) -> Result<Stopped> {
        self.cancel_probe.store(true, Ordering::Relaxed);
        let alone = set.len() == 1;
        // Alone, every orphan adopted so far is this server's.
        let targets = Targets {
            leaders: vec![pid],
            escaped: self.reaper.escaped(&[pid], alone),
        };
        let name = if alone {
            format!("server (pid {pid})")
        } else {
            format!("replica {index} (pid {pid})")
        };
        output::status(
            "Stopping",
            format!(
                "{name}: sent SIGTERM to its process group{}",
                targets.escaped.describe("it")
            ),
        );
        let mut crashes = Vec::new();
        let stopped = stop::stop(
            &targets,
            self.launch.shutdown_timeout,
            false,
            &mut EventWatch {
                events: &self.events,
                left: [generation].into(),
                other: &mut |event| {
                    if let Event::Exited(generation, status) = event {
                        crashes.push((generation, status));
                    }
                },
            },
        )?;
        set.exited(index);
        for (generation, status) in crashes {
            if let Some(other) = set.index_of(generation) {
                set.crashed(other, status);
            }
        }
        if alone {
            self.end_adopted();
        }
        output::status("Stopped", format!("{name}{}", stopped.describe()));
        Ok(stopped)
    }

    /// Waits until the replacement of `generation` says it is ready, at most a moment; true
    /// when a stop was asked for meanwhile. Another replica's crash is scheduled for restart.
    fn settle(&self, set: &mut Replicas, generation: u32) -> Result<bool> {
        let settled = Instant::now() + replicas::SETTLE;
        loop {
            let Some(event) = self.next_event(Some(settled))? else {
                return Ok(false);
            };
            match event {
                Event::Ready(ready) if ready == generation => return Ok(false),
                Event::Exited(other, status) => {
                    if let Some(index) = set.index_of(other) {
                        set.crashed(index, status);
                    }
                }
                Event::Signal(signals::RESTART) | Event::Ready(_) | Event::Misplaced(..) => {}
                Event::Signal(signal) => {
                    output::verbose("Received", signals::name(signal));
                    return Ok(true);
                }
            }
        }
    }

    /// Stops every server: one grace period for all; `asked` when a stop request started it
    /// (a second one then cuts the grace period short).
    fn stop_all(&mut self, set: &mut Replicas, asked: bool) -> Result<Stopped> {
        self.cancel_probe.store(true, Ordering::Relaxed);
        let running = set.take_all();
        let pids: Vec<u32> = running.iter().map(|&(_, pid)| pid).collect();
        if running.is_empty() {
            // Servers that exited may have left orphans all the same.
            self.end_adopted();
            return Ok(Stopped {
                elapsed: Duration::ZERO,
                killed: false,
                asked: false,
            });
        }
        // Every server stops, so every orphan adopted so far is one of theirs.
        let targets = Targets {
            leaders: pids.clone(),
            escaped: self.reaper.escaped(&pids, true),
        };
        let name = match pids.as_slice() {
            [pid] if set.len() == 1 => format!("server (pid {pid})"),
            _ => format!("{} replicas (pids {})", pids.len(), pid_list(&pids)),
        };
        let groups = if pids.len() == 1 {
            "its process group"
        } else {
            "their process groups"
        };
        output::status(
            "Stopping",
            format!(
                "{name}: sent SIGTERM to {groups}{}",
                targets
                    .escaped
                    .describe(if pids.len() == 1 { "it" } else { "them" })
            ),
        );
        let stopped = stop::stop(
            &targets,
            self.launch.shutdown_timeout,
            asked,
            &mut EventWatch {
                events: &self.events,
                left: running.iter().map(|&(generation, _)| generation).collect(),
                other: &mut |_| {},
            },
        )?;
        self.end_adopted();
        output::status("Stopped", format!("{name}{}", stopped.describe()));
        Ok(stopped)
    }

    /// Starts `cargo run` for `generation` (with `PORTGUARD_REPLICA` for a replica) and a
    /// thread that reports its exit.
    fn spawn_process(&self, generation: u32, replica: Option<usize>) -> Result<u32> {
        let mut command = match &self.launch.socket {
            // `LISTEN_PID` must be the server's own pid, known only in the child. A shell sets
            // it and execs cargo, which execs the server: all three share that pid.
            Some(_) => {
                let mut command = Command::new("/bin/sh");
                command
                    .arg("-c")
                    .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$@\"")
                    .arg("portguard")
                    .arg(&self.launch.cargo);
                command
            }
            None => Command::new(&self.launch.cargo),
        };
        command.args(&self.launch.cargo_args);
        command.envs(self.launch.env.iter().map(|(key, value)| (key, value)));
        match replica {
            Some(index) => command.env("PORTGUARD_REPLICA", index.to_string()),
            None => command.env_remove("PORTGUARD_REPLICA"),
        };
        // Descriptors named by an inherited jobserver could collide with fd 3, and an inherited
        // `LISTEN_*` would tell the server about a socket it was not given.
        for key in [
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
            "LISTEN_FDS_FIRST_FD",
        ] {
            if !self.launch.env.iter().any(|(k, _)| k == key) {
                command.env_remove(key);
            }
        }
        // The jobserver's descriptors are closed on exec (see `os::prepare_child`): a variable
        // naming them would point the server's cargo at whatever it opens there next.
        for key in ["MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS"] {
            command.env_remove(key);
        }
        // portguard's own plumbing stays out of the server's environment.
        command.env_remove(report::REPORT_FD_VAR);
        match &self.launch.notify_socket {
            Some(socket) => command.env("NOTIFY_SOCKET", socket.address()),
            None => command.env_remove("NOTIFY_SOCKET"),
        };
        os::prepare_child(
            &mut command,
            self.launch.socket.as_ref().map(AsRawFd::as_raw_fd),
        );
        let mut child = self
            .reaper
            .spawn(&mut command, generation)
            .with_context(|| format!("could not start `{}`", self.launch.display()))?;
        let pid = child.id();

        let sender = self.sender.clone();
        let reaper = self.reaper.clone();
        std::thread::Builder::new()
            .name("portguard-wait".to_owned())
            .spawn(move || {
                // A failed wait means the child is gone already; report it as killed.
                let status = child
                    .wait()
                    .unwrap_or_else(|_| ExitStatus::from_raw(os::Sig::KILL.as_raw()));
                reaper.reaped(pid, generation);
                let _ = sender.send(Event::Exited(generation, status));
            })
            .context("could not start the wait thread")?;
        Ok(pid)
    }

    /// Probes readiness once, in a thread; reports `Event::Ready(generation)`. Meanwhile another
    /// thread watches where the server listens, and reports `Event::Misplaced` if that is not
    /// where it was told to.
    fn start_probe(&mut self, generation: u32, pid: u32) -> Result<()> {
        self.cancel_probe = Arc::new(AtomicBool::new(false));
        let cancel = Arc::clone(&self.cancel_probe);
        let mut check = self.launch.ready.clone();
        if !check.socket_handoff {
            check.owner_group = Some(pid);
        }
        let given = diagnose::Given {
            port: check.addr.port(),
            socket_handoff: check.socket_handoff,
            socket_inode: self
                .launch
                .socket
                .as_ref()
                .and_then(|socket| os::socket_inode(std::os::fd::AsFd::as_fd(socket)).ok()),
        };
        diagnose::watch(given, generation, Arc::clone(&cancel), self.sender.clone())?;
        let sender = self.sender.clone();
        std::thread::Builder::new()
            .name("portguard-ready".to_owned())
            .spawn(move || {
                if health::wait_ready(&check, &cancel) {
                    let _ = sender.send(Event::Ready(generation));
                }
            })
            .context("could not start the readiness thread")?;
        Ok(())
    }

    /// Once no server runs: ends whatever the servers left reparented to the supervisor, and
    /// says so, since it means a process escaped both its group and the stop's signals.
    fn end_adopted(&self) {
        let ended = self.reaper.end_adopted();
        if !ended.is_empty() {
            output::status(
                "Killed",
                format!(
                    "{} left behind outside the server's process group",
                    processes(&ended)
                ),
            );
        }
    }
}
