//! Running the server: `cargo run` in a process group of its own, watched without polling,
//! and stopped as a group: SIGTERM, a grace period, then SIGKILL. What left the group is
//! stopped along with it (see [`reaper`]).

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
use crate::os::{self, Sig};
use crate::{exit_codes, output, signals};

mod notify;
mod reaper;
mod replicas;

pub use notify::NotifySocket;

use reaper::{Escaped, Reaper};

/// What the supervisor reacts to. Every source sends into one channel, so the supervisor
/// sleeps until something happens.
#[derive(Debug)]
pub enum Event {
    Signal(i32),
    /// The server of this generation answers.
    Ready(u32),
    /// The process `cargo run` became has exited.
    Exited(u32, ExitStatus),
}

/// How to start the server.
#[derive(Debug)]
pub struct Launch {
    pub cargo: PathBuf,
    /// Everything after `cargo`: `run`, target selection, features, `--`, server arguments.
    pub cargo_args: Vec<OsString>,
    /// `PORT`, `PORTGUARD_*` and, in socket handoff, `LISTEN_*` but `LISTEN_PID`.
    pub env: Vec<(String, String)>,
    /// The socket the server takes at fd 3; the supervisor keeps it open for the whole run.
    pub socket: Option<TcpListener>,
    pub ready: ReadyCheck,
    /// The wait after SIGTERM before SIGKILL.
    pub shutdown_timeout: Duration,
    /// Where the server may send `READY=1` (`NOTIFY_SOCKET`, the systemd protocol).
    pub notify_socket: Option<NotifySocket>,
    /// Give up on a server that is not ready by then (detached runs, where nobody watches).
    pub ready_timeout: Option<Duration>,
    /// How many servers accept on the socket (`--replicas`); more than one needs `socket`.
    pub replicas: usize,
}

impl Launch {
    /// The command as a user would type it, for messages.
    #[must_use]
    pub fn display(&self) -> String {
        let mut text = String::from("cargo");
        for arg in &self.cargo_args {
            text.push(' ');
            text.push_str(&arg.to_string_lossy());
        }
        text
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Ending {
    /// The server exited on its own; `ready` tells whether it had ever answered.
    Exited { status: ExitStatus, ready: bool },
    /// It was stopped on request.
    Stopped,
    /// It did not become ready within the ready timeout and was stopped.
    NotReady(Duration),
}

impl Ending {
    /// The supervisor's exit code, as the contract says.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Ending::Stopped => exit_codes::OK,
            Ending::NotReady(_) => exit_codes::FAILURE,
            Ending::Exited { status, .. } => status_code(*status),
        }
    }
}

/// The server's own code, or 128 + the signal that killed it.
#[must_use]
pub fn status_code(status: ExitStatus) -> i32 {
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
#[must_use]
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal} ({})", signals::name(signal)),
        (None, None) => status.to_string(),
    }
}

/// One supervised server, and the channel everything reports to.
#[derive(Debug)]
pub struct Supervisor {
    launch: Launch,
    events: Receiver<Event>,
    sender: Sender<Event>,
    /// Counts the servers started, so that late news of an old one is recognised.
    generation: u32,
    /// The generation the notify socket reports for.
    current: Arc<AtomicU32>,
    cancel_probe: Arc<AtomicBool>,
    reaper: Reaper,
}

/// Told what happens to the server, so the caller can record and report it.
pub trait Observer {
    /// The server process exists (its pid is known) but may still be building.
    fn spawned(&mut self, pid: u32);
    /// The server answers.
    fn ready(&mut self, pid: u32);
    /// With `--replicas`: the pids of the replicas now running (in replica order), and whether
    /// the service counts as ready (not during a rolling restart).
    fn replicas(&mut self, pids: &[u32], ready: bool) {
        let _ = (pids, ready);
    }
}

impl Supervisor {
    /// Installs the signal handlers; call before anything can be interrupted.
    ///
    /// # Errors
    /// When the handlers cannot be installed.
    pub fn new(launch: Launch) -> Result<Self> {
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
            reaper: Reaper::new()?,
        })
    }

    /// Starts the server and supervises it until it exits or is stopped.
    ///
    /// # Errors
    /// When `cargo` cannot be started.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<Ending> {
        if self.launch.replicas > 1 {
            return self.run_replicas(observer);
        }
        let mut pid = self.spawn()?;
        observer.spawned(pid);
        let mut ready = false;
        let mut ready_deadline = self
            .launch
            .ready_timeout
            .map(|limit| (Instant::now() + limit, limit));
        loop {
            let event = match ready_deadline {
                Some((deadline, limit)) if !ready => {
                    match self
                        .events
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Timeout) => {
                            self.stop(pid)?;
                            return Ok(Ending::NotReady(limit));
                        }
                        Err(RecvTimeoutError::Disconnected) => {
                            anyhow::bail!("the supervisor's event channel closed")
                        }
                    }
                }
                _ => self
                    .events
                    .recv()
                    .context("the supervisor's event channel closed")?,
            };
            match event {
                Event::Ready(generation) if generation == self.generation && !ready => {
                    ready = true;
                    observer.ready(pid);
                }
                Event::Exited(generation, status) if generation == self.generation => {
                    self.cancel_probe.store(true, Ordering::Relaxed);
                    reap_remains(&[pid], &Escaped::default(), Duration::ZERO);
                    // Its escaped descendants are the supervisor's orphans by now.
                    self.end_adopted();
                    return Ok(Ending::Exited { status, ready });
                }
                // Late news of an earlier generation.
                Event::Ready(_) | Event::Exited(..) => {}
                Event::Signal(signals::RESTART) => {
                    output::status("Restarting", format!("server (pid {pid})"));
                    self.stop(pid)?;
                    pid = self.spawn()?;
                    observer.spawned(pid);
                    ready = false;
                    ready_deadline = self
                        .launch
                        .ready_timeout
                        .map(|limit| (Instant::now() + limit, limit));
                }
                Event::Signal(signal) => {
                    output::verbose("Received", signals::name(signal));
                    self.stop(pid)?;
                    return Ok(Ending::Stopped);
                }
            }
        }
    }

    #[must_use]
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    fn spawn(&mut self) -> Result<u32> {
        self.generation += 1;
        self.current.store(self.generation, Ordering::Relaxed);
        let pid = self.spawn_process(self.generation, None)?;
        self.start_probe(self.generation, pid)?;
        Ok(pid)
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
        if self.launch.socket.is_some() {
            for key in ["MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS"] {
                command.env_remove(key);
            }
        }
        // portguard's own plumbing stays out of the server's environment.
        command.env_remove(crate::detach::REPORT_FD_VAR);
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
                    .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
                reaper.reaped(pid, generation);
                let _ = sender.send(Event::Exited(generation, status));
            })
            .context("could not start the wait thread")?;
        Ok(pid)
    }

    /// Probes readiness once, in a thread; reports `Event::Ready(generation)`.
    fn start_probe(&mut self, generation: u32, pid: u32) -> Result<()> {
        self.cancel_probe = Arc::new(AtomicBool::new(false));
        let cancel = Arc::clone(&self.cancel_probe);
        let mut check = self.launch.ready.clone();
        if !check.socket_handoff {
            check.owner_group = Some(pid);
        }
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

    /// SIGTERM to the group and to what left it, the grace period, SIGKILL; returns once the
    /// server is reaped and nothing of its group, or of what left it, is left. A second stop
    /// request skips the rest of the grace period.
    fn stop(&mut self, pid: u32) -> Result<()> {
        let grace = self.launch.shutdown_timeout;
        let started = Instant::now();
        self.cancel_probe.store(true, Ordering::Relaxed);
        // The only server is this one, so every orphan adopted so far is one of its own.
        let escaped = self.reaper.escaped(&[pid], true);
        output::status(
            "Stopping",
            format!(
                "server (pid {pid}): sent SIGTERM to its process group{}",
                escaped.describe("it")
            ),
        );
        let _ = os::signal_group(pid, Sig::TERM);
        escaped.signal(Sig::TERM);
        let deadline = started + grace;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Exited(generation, _)) if generation == self.generation => break,
                Ok(Event::Signal(_)) => {
                    output::status(
                        "Killing",
                        format!("server (pid {pid}): asked twice, sent SIGKILL"),
                    );
                    let _ = os::signal_group(pid, Sig::KILL);
                    escaped.signal(Sig::KILL);
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    output::warning(format!(
                        "server (pid {pid}) did not stop within {:.1}s of SIGTERM; sent SIGKILL",
                        grace.as_secs_f64()
                    ));
                    let _ = os::signal_group(pid, Sig::KILL);
                    escaped.signal(Sig::KILL);
                    self.wait_exit()?;
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("the supervisor's event channel closed")
                }
            }
        }
        reap_remains(
            &[pid],
            &escaped,
            deadline.saturating_duration_since(Instant::now()),
        );
        self.end_adopted();
        output::status(
            "Stopped",
            format!(
                "server (pid {pid}) in {:.2}s",
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    }

    fn wait_exit(&self) -> Result<()> {
        loop {
            match self
                .events
                .recv()
                .context("the supervisor's event channel closed")?
            {
                Event::Exited(generation, _) if generation == self.generation => return Ok(()),
                _ => {}
            }
        }
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
                    reaper::processes(&ended)
                ),
            );
        }
    }
}

/// What the servers `leaders` left in their groups (children that ignore SIGTERM), and the
/// processes that left those groups, get what is left of the grace period, then SIGKILL.
fn reap_remains(leaders: &[u32], escaped: &Escaped, grace: Duration) {
    let deadline = Instant::now() + grace;
    let left = || leaders.iter().any(|&leader| os::group_exists(leader)) || escaped.any_alive();
    while left() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if left() {
        for &leader in leaders {
            if os::group_exists(leader) {
                let _ = os::signal_group(leader, Sig::KILL);
            }
        }
        escaped.signal(Sig::KILL);
        escaped.wait_gone();
    }
}
