//! Running the servers: `cargo run` in a process group of its own, watched without polling, and
//! stopped as a group through the one stop primitive ([`stop`]). One server is the one-replica
//! case of the same loop: `--replicas N` only changes what a crash after readiness means (the
//! replica is started again after a back-off, where a single server's crash ends the run) and
//! that a swap replaces the servers one at a time. What left the group is stopped along with it
//! (see [`reaper`]). A restart or a change under `--watch` builds while the servers serve, then
//! swaps the new build in (see [`swap`]).

use std::collections::VecDeque;
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

pub(crate) mod build;
pub(crate) mod diagnose;
mod notify;
mod reaper;
mod replicas;
pub(crate) mod report;
pub(crate) mod stop;
mod swap;

use build::{BuildReport, Captured, Outcome};
pub(crate) use notify::NotifySocket;
pub(crate) use reaper::{Escaped, pid_list, processes};
use replicas::Replicas;
use stop::{EventWatch, Stopped, Targets};
use swap::Trigger;

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
    /// The build of this generation ended (builds and servers count in one sequence).
    Built(u32, Box<Outcome>),
    /// Files changed (`--watch`); what changed, for messages.
    Changed(String),
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
    /// `--watch`: once the service has been ready (or from the start, in the foreground), a
    /// server that exits does not end the run; the next change builds and starts it again.
    pub(crate) watch: bool,
    /// How long a new build's server may take to be ready before it is stopped and the old one
    /// kept (`ready-timeout-ms`).
    pub(crate) swap_timeout: Duration,
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
    /// The service answers for the first time.
    fn ready(&mut self);
    /// A build started, or ended as `report` says.
    fn build(&mut self, report: &BuildReport);
    /// A new build's servers took over, the `swaps`-th time this run; `report` says it serves.
    fn reloaded(&mut self, swaps: u32, report: &BuildReport);
}

/// The supervised servers, and the channel everything reports to.
#[derive(Debug)]
pub(crate) struct Supervisor {
    launch: Launch,
    events: Receiver<Event>,
    sender: Sender<Event>,
    /// Counts the servers and builds started, so that late news of an old one is recognised.
    generation: u32,
    /// The generation the notify socket reports for: the newest server.
    current: Arc<AtomicU32>,
    cancel_probe: Arc<AtomicBool>,
    reaper: reaper::Reaper,
    /// The inode of the handed socket, to see a new server accept on it.
    socket_inode: Option<u64>,
    /// How the last good build's server starts; until the first build, servers start with
    /// `cargo run`.
    captured: Option<Captured>,
    /// The build that runs, and what it is for.
    build: Option<(build::Build, Trigger)>,
    /// A change or restart that came during a swap, built once the swap is over.
    queued: Option<Trigger>,
    builds: u32,
    swaps: u32,
    /// News that came while a stop waited for something else, handled next.
    deferred: VecDeque<Event>,
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
        let socket_inode = launch
            .socket
            .as_ref()
            .and_then(|socket| os::socket_inode(std::os::fd::AsFd::as_fd(socket)).ok());
        Ok(Supervisor {
            launch,
            events,
            sender,
            generation: 0,
            current,
            cancel_probe: Arc::new(AtomicBool::new(false)),
            reaper: reaper::Reaper::new()?,
            socket_inode,
            captured: None,
            build: None,
            queued: None,
            builds: 0,
            swaps: 0,
            deferred: VecDeque::new(),
        })
    }

    pub(crate) fn launch(&self) -> &Launch {
        &self.launch
    }

    /// Where a file watcher reports changes: `changed` names what changed, for messages.
    pub(crate) fn change_reporter(&self) -> impl Fn(String) + Send + 'static {
        let sender = self.sender.clone();
        move |changed| {
            let _ = sender.send(Event::Changed(changed));
        }
    }

    /// Starts the servers and supervises them until the run ends: a stop request, a server
    /// that exits before it is ready (or, alone, at all; not with `--watch`), or the ready
    /// timeout.
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
        let ready_deadline = self.ready_deadline();
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
                    // Watching, a server that exits waits for the next change, except a
                    // detached start's first one: its failure is what `--detach` reports.
                    let waits = self.launch.watch && (ready || self.launch.ready_timeout.is_none());
                    if waits && (!ready || set.len() == 1) {
                        self.cancel_probe.store(true, Ordering::Relaxed);
                        set.exited(index);
                        output::warning(format!(
                            "the server exited with {}; the next change rebuilds and starts it",
                            describe(status)
                        ));
                        observer.servers(&set.pids(), false);
                        continue;
                    }
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
                Event::Changed(change) => {
                    if self.launch.watch {
                        self.trigger(Trigger::new(Some(change)), &set, observer)?;
                    }
                }
                Event::Signal(signals::RESTART) => {
                    self.trigger(Trigger::new(None), &set, observer)?;
                }
                Event::Built(generation, outcome) => {
                    if let Some(ending) =
                        self.built(&mut set, observer, generation, *outcome, &mut ready)?
                    {
                        return Ok(ending);
                    }
                }
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

    /// The next event (news deferred during a stop first), or `None` once `wake` has passed.
    fn next_event(&mut self, wake: Option<Instant>) -> Result<Option<Event>> {
        if let Some(event) = self.deferred.pop_front() {
            return Ok(Some(event));
        }
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

    fn next_generation(&mut self) -> u32 {
        self.generation += 1;
        self.generation
    }

    fn start_replica(&mut self, set: &mut Replicas, index: usize) -> Result<u32> {
        let generation = self.next_generation();
        let replica = (set.len() > 1).then_some(index);
        let pid = self.spawn_process(generation, replica)?;
        set.started(index, generation, pid);
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

    /// A stop asked for while one server was being stopped: the rest stop too, and whether that
    /// one needed SIGKILL is part of what the stop reports.
    fn stop_rest(&mut self, set: &mut Replicas, first: Stopped) -> Result<Stopped> {
        let rest = self.stop_all(set, true)?;
        Ok(Stopped {
            killed: first.killed || rest.killed,
            ..rest
        })
    }

    /// Stops one server that a swap replaces (or whose replacement failed); the slots are the
    /// caller's to update. `quiet` keeps its lines to `--verbose`: a reload says one line.
    fn stop_server(
        &mut self,
        set: &mut Replicas,
        name: &str,
        generation: u32,
        pid: u32,
        quiet: bool,
    ) -> Result<Stopped> {
        // Only the orphans found below it: another server may run beside it.
        let targets = Targets {
            leaders: vec![pid],
            escaped: self.reaper.escaped(&[pid], false),
        };
        let say = |verb: &str, text: String| {
            if quiet {
                output::verbose(verb, text);
            } else {
                output::status(verb, text);
            }
        };
        say(
            "Stopping",
            format!(
                "{name}: sent SIGTERM to its process group{}",
                targets.escaped.describe("it")
            ),
        );
        let mut crashes = Vec::new();
        let mut deferred = Vec::new();
        let stopped = stop::stop(
            &targets,
            self.launch.shutdown_timeout,
            false,
            &mut EventWatch {
                events: &self.events,
                left: [generation].into(),
                other: &mut |event| match event {
                    Event::Exited(generation, status) => crashes.push((generation, status)),
                    other => deferred.push(other),
                },
            },
        )?;
        for (generation, status) in crashes {
            if let Some(other) = set.index_of(generation) {
                set.crashed(other, status);
            }
        }
        self.deferred.extend(deferred);
        say("Stopped", format!("{name}{}", stopped.describe()));
        Ok(stopped)
    }

    /// Stops every server: one grace period for all; `asked` when a stop request started it
    /// (a second one then cuts the grace period short).
    fn stop_all(&mut self, set: &mut Replicas, asked: bool) -> Result<Stopped> {
        self.cancel_probe.store(true, Ordering::Relaxed);
        let running = set.take_all();
        let pids: Vec<u32> = running.iter().map(|&(_, pid)| pid).collect();
        let build = self.build.take().map(|(build, _)| build);
        if running.is_empty() && build.is_none() {
            // Servers that exited may have left orphans all the same.
            self.end_adopted();
            return Ok(Stopped {
                elapsed: Duration::ZERO,
                killed: false,
                asked: false,
            });
        }
        // Every server stops, so every orphan adopted so far is one of theirs.
        let mut targets = Targets {
            leaders: pids.clone(),
            escaped: self.reaper.escaped(&pids, true),
        };
        let mut left: std::collections::HashSet<u32> =
            running.iter().map(|&(generation, _)| generation).collect();
        let mut name = match pids.as_slice() {
            [] => String::new(),
            [pid] if set.len() == 1 => format!("server (pid {pid})"),
            _ => format!("{} replicas (pids {})", pids.len(), pid_list(&pids)),
        };
        let groups = if pids.len() == 1 {
            "its process group"
        } else {
            "their process groups"
        };
        let mut message = if pids.is_empty() {
            String::new()
        } else {
            format!(
                "{name}: sent SIGTERM to {groups}{}",
                targets
                    .escaped
                    .describe(if pids.len() == 1 { "it" } else { "them" })
            )
        };
        if let Some(build) = build {
            // The build under way goes with them: its cargo and compilers are in its group.
            targets.leaders.push(build.pid);
            left.insert(build.generation);
            let build_name = format!("the build under way (pid {})", build.pid);
            message = if message.is_empty() {
                format!("{build_name}: sent SIGTERM to its process group")
            } else {
                format!("{message}, and {build_name}")
            };
            name = if name.is_empty() {
                build_name
            } else {
                format!("{name} and {build_name}")
            };
        }
        output::status("Stopping", message);
        let stopped = stop::stop(
            &targets,
            self.launch.shutdown_timeout,
            asked,
            &mut EventWatch {
                events: &self.events,
                left,
                other: &mut |_| {},
            },
        )?;
        self.end_adopted();
        output::status("Stopped", format!("{name}{}", stopped.describe()));
        Ok(stopped)
    }

    /// Starts the server for `generation` (with `PORTGUARD_REPLICA` for a replica): as the last
    /// good build says `cargo run` would, or with `cargo run` itself before the first build;
    /// and a thread that reports its exit.
    fn spawn_process(&self, generation: u32, replica: Option<usize>) -> Result<u32> {
        // `READY=1` counts for the newest server: the replacement a swap waits for.
        self.current.store(generation, Ordering::Relaxed);
        let (program, args, folder, env) = match &self.captured {
            Some(captured) => {
                let (program, args, folder, env) = captured.command();
                (program, args, Some(folder), Some(env))
            }
            None => (
                self.launch.cargo.clone(),
                self.launch.cargo_args.clone(),
                None,
                None,
            ),
        };
        let mut command = match &self.launch.socket {
            // `LISTEN_PID` must be the server's own pid, known only in the child. A shell sets
            // it and execs the server (or cargo, which execs it): they all share that pid.
            Some(_) => {
                let mut command = Command::new("/bin/sh");
                command
                    .arg("-c")
                    .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$@\"")
                    .arg("portguard")
                    .arg(&program);
                command
            }
            None => Command::new(&program),
        };
        command.args(&args);
        if let Some(folder) = folder {
            command.current_dir(folder);
        }
        if let Some(env) = env {
            // Exactly what cargo gave the build's server, portguard's variables included.
            command.env_clear();
            command.envs(env);
        }
        server_env(&mut command, &self.launch, replica);
        os::prepare_child(
            &mut command,
            self.launch.socket.as_ref().map(AsRawFd::as_raw_fd),
        );
        let mut child = self
            .reaper
            .spawn(&mut command, generation)
            .with_context(|| match &self.captured {
                Some(captured) => format!("could not start `{}`", captured.program_display()),
                None => format!("could not start `{}`", self.launch.display()),
            })?;
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

/// The environment a server (or the build that hands one over) gets beyond the context's:
/// portguard's variables, the replica number, the notify socket; and none of what would point
/// it at descriptors it does not have.
fn server_env(command: &mut Command, launch: &Launch, replica: Option<usize>) {
    command.envs(launch.env.iter().map(|(key, value)| (key, value)));
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
        if !launch.env.iter().any(|(k, _)| k == key) {
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
    match &launch.notify_socket {
        Some(socket) => command.env("NOTIFY_SOCKET", socket.address()),
        None => command.env_remove("NOTIFY_SOCKET"),
    };
}
