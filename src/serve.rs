//! `cargo serve-safe`: lock the instance, choose the port, run the server, stop it cleanly.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Result;

use crate::cli::{CommonArgs, RunArgs};
use crate::config::{self, Config, Handoff};
use crate::exit_codes::{self, BadInput, Exit};
use crate::health::{self, ReadyCheck};
use crate::lock::{self, Acquired, InstanceLock, Record, StateDir};
use crate::os;
use crate::port;
use crate::project::{self, Project, Target};
use crate::reserve::Reservations;
use crate::runtime::RuntimeDir;
use crate::supervise::{self, Ending, Launch, NotifySocket, Observer, Supervisor};
use crate::{detach, output, stop};

/// Reads a variable of the process environment; injectable for tests.
pub type Vars<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// Everything `serve-safe` learns from its input before it touches anything: a mistake found
/// here exits with 2 and has started nothing.
#[derive(Debug)]
pub struct Plan {
    pub cargo: PathBuf,
    pub project: Project,
    pub config: Config,
    pub target: Target,
    pub instance: String,
    pub state: StateDir,
}

impl Plan {
    /// Reads the project, the configuration and the target; prints configuration warnings.
    ///
    /// # Errors
    /// Bad input of any kind, and a cargo that cannot read the project.
    pub fn new(common: &CommonArgs, args: &RunArgs, vars: Vars<'_>) -> Result<Self> {
        let (cargo, project, config) = resolve_config(common, args, vars)?;
        if args.replicas.is_some_and(|count| count > 1) && config.handoff.value != Handoff::Socket {
            return Err(BadInput(format!(
                "`--replicas {}` needs socket handoff: in env handoff each server binds `PORT` \
                 itself and only one can; set `handoff = \"socket\"` (or PORTGUARD_HANDOFF=socket)",
                args.replicas.unwrap_or_default()
            ))
            .into());
        }
        let target = project.target(args.example.as_deref(), config.bin.value.as_deref())?;
        let instance = args
            .instance
            .clone()
            .unwrap_or_else(|| target.name().to_owned());
        lock::validate_instance(&instance)?;
        let state = StateDir::locate(
            &project.workspace_root,
            vars("PORTGUARD_STATE_DIR").map(PathBuf::from),
        );
        Ok(Plan {
            cargo,
            project,
            config,
            target,
            instance,
            state,
        })
    }
}

/// The cargo to use, the project, and its configuration (`--port`, `--env` and `--bin` of `args`
/// applied); prints configuration warnings. The first half of [`Plan::new`], shared with
/// `cargo portguard ports` and `config`, which need no target.
///
/// # Errors
/// Bad input of any kind, and a cargo that cannot read the project.
pub fn resolve_config(
    common: &CommonArgs,
    args: &RunArgs,
    vars: Vars<'_>,
) -> Result<(PathBuf, Project, Config)> {
    // Without a private folder there is no cache, and cargo is asked each time.
    let cache = RuntimeDir::create(
        vars("XDG_RUNTIME_DIR").map(PathBuf::from),
        vars("HOME").map(PathBuf::from),
    )
    .ok();
    let (cargo, project) = project::from_options(
        common.manifest_path.as_deref(),
        common.package.as_deref(),
        vars,
        cache.as_ref(),
    )?;
    let dotenv = project.package_root().join(".env");
    let (config, warnings) = config::resolve(&config::Inputs {
        workspace_metadata: Some((&project.workspace_metadata, &project.workspace_manifest)),
        package_metadata: Some((&project.package.metadata, project.manifest_path())),
        dotenv: Some(&dotenv),
        vars,
        env_flag: args.env.as_deref(),
        port_flag: args.port,
        bin_flag: args.bin.as_deref(),
    })?;
    for warning in warnings {
        output::warning(warning);
    }
    Ok((cargo, project, config))
}

/// Runs `cargo serve-safe` to the end and returns its exit code.
///
/// # Errors
/// Bad input (exit 2), another running instance (exit 1), and failures to start.
pub fn serve(common: &CommonArgs, run: &RunArgs, vars: Vars<'_>) -> Result<i32> {
    let reporter = detach::Reporter::from_env(vars);
    let result = Plan::new(common, run, vars).and_then(|plan| {
        plan.state.create()?;
        let files = plan.state.instance(&plan.instance);
        // In the foreground, where its lines are seen; the detached copy finds nothing to stop.
        if run.force && reporter.is_none() {
            force_stop(&files)?;
        }
        if run.detach && reporter.is_none() {
            return detach::start(&files, run.json);
        }
        serve_planned(&plan, common, run, vars, reporter.as_ref())
    });
    if let (Some(reporter), Err(error)) = (&reporter, &result) {
        reporter.fail(exit_codes::for_error(error), &format!("{error:#}"), None);
    }
    result
}

/// `--force`: the running copy goes first, the way `cargo portguard stop` ends it.
fn force_stop(files: &lock::InstanceFiles) -> Result<()> {
    if lock::is_held(files)? {
        output::status(
            "Forcing",
            format!(
                "a fresh start of `{}`: stopping the running copy first",
                files.name
            ),
        );
        stop::stop_instance(files, None)?;
    }
    Ok(())
}

fn serve_planned(
    plan: &Plan,
    common: &CommonArgs,
    run: &RunArgs,
    vars: Vars<'_>,
    reporter: Option<&detach::Reporter>,
) -> Result<i32> {
    let (config, instance, state) = (&plan.config, &plan.instance, &plan.state);
    let files = state.instance(instance);
    let (lock, left_behind) = match lock::acquire(&files)? {
        Acquired::Running(holder) => return Err(already_running(instance, holder.as_ref()).into()),
        Acquired::Ours(lock, left_behind) => (lock, left_behind),
    };
    // The log is this run's from here on: what it says about the last run belongs in it.
    if let Some(reporter) = reporter {
        reporter.redirect_to_log(&files)?;
    }
    if let Some(stale) = left_behind {
        stop::end_orphan(instance, &stale);
    }
    output::verbose(
        "Locked",
        format!("instance `{instance}` ({})", files.lock.display()),
    );

    let socket_handoff = config.handoff.value == Handoff::Socket;
    let runtime = RuntimeDir::create(
        vars("XDG_RUNTIME_DIR").map(PathBuf::from),
        vars("HOME").map(PathBuf::from),
    )?;
    let owner = format!("`{instance}` in {}", plan.project.workspace_root.display());
    let reservations = Reservations::new(runtime.path().to_owned(), owner);
    let selection = port::select(
        config.host.value,
        &config.candidates(),
        config.dynamic_port.value,
        socket_handoff,
        Some(&reservations),
    )
    .map_err(|mut error| {
        port::fill_holders(&mut error.skipped);
        Exit {
            code: exit_codes::FAILURE,
            message: format!(
                "{error}\nnote: tried at most {} candidates (`max-attempts`) and `dynamic-port` is off",
                config.max_attempts.value
            ),
        }
    })?;
    // Held until the instance ends, so no other start takes the port meanwhile.
    let _reservation = selection.reservation;
    let mut launch = launch(plan, common, run, selection.port, selection.listener);
    launch.notify_socket = NotifySocket::bind(&runtime);
    launch.ready_timeout = reporter.map(|_| config.ready_timeout.value);
    let replicas = match launch.replicas {
        1 => String::new(),
        count => format!(", {count} replicas"),
    };
    output::status(
        "Starting",
        format!(
            "`{}` on port {} ({} handoff, instance `{instance}`{replicas})",
            launch.display(),
            selection.port,
            handoff_name(socket_handoff)
        ),
    );
    let mut supervisor = Supervisor::new(launch)?;
    let mut recorder = Recorder {
        lock: &lock,
        record: new_record(plan, selection.port),
        skipped: selection.skipped,
        dynamic_port: selection.dynamic,
        reporter,
    };
    let ending = supervisor.run(&mut recorder)?;
    let code = ending.exit_code();
    let failure = describe_ending(&ending, recorder.record.pid, &supervisor.launch().display());
    if let Some(message) = &failure {
        output::error(message);
    }
    if let Some(reporter) = reporter {
        // A no-op once readiness was reported.
        let message = failure
            .as_deref()
            .unwrap_or("the server stopped before it was ready");
        reporter.fail(code, message, Some(&files));
    }
    drop(lock);
    Ok(code)
}

/// The error a run that never got ready ends with; a warning for a server that exited later.
fn describe_ending(ending: &Ending, pid: u32, command: &str) -> Option<String> {
    match ending {
        Ending::Exited {
            status,
            ready: true,
        } => {
            output::warning(format!(
                "server (pid {pid}) exited with {}",
                supervise::describe(*status)
            ));
            None
        }
        Ending::Exited {
            status,
            ready: false,
        } => Some(format!(
            "`{command}` exited with {} before the server was ready",
            supervise::describe(*status)
        )),
        Ending::NotReady(limit) => Some(format!(
            "the server was not ready within {}s (`ready-timeout-ms`); stopped it",
            limit.as_secs()
        )),
        Ending::Stopped => None,
    }
}

fn handoff_name(socket_handoff: bool) -> &'static str {
    if socket_handoff { "socket" } else { "env" }
}

fn new_record(plan: &Plan, port: u16) -> Record {
    let Plan {
        project,
        config,
        target,
        instance,
        ..
    } = plan;
    let millis =
        |duration: std::time::Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    Record {
        instance: instance.to_owned(),
        pid: 0,
        supervisor_pid: std::process::id(),
        port,
        host: config.host.value.to_string(),
        url: url(config, port),
        handoff: handoff_name(config.handoff.value == Handoff::Socket).to_owned(),
        started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        package: project.package.name.to_string(),
        bin: target.name().to_owned(),
        manifest_path: project.manifest_path().to_owned(),
        portguard_version: env!("CARGO_PKG_VERSION").to_owned(),
        pid_start_time: None,
        supervisor_start_time: os::start_time(std::process::id()),
        ready: false,
        health_path: config.health_path.value.clone(),
        check_timeout_ms: millis(config.check_timeout.value),
        shutdown_timeout_ms: millis(config.shutdown_timeout.value),
        environment: config.env_name.as_ref().map(|name| name.value.clone()),
        replicas: Vec::new(),
    }
}

/// Writes the record once the pid is known and again once the server answers, and says where
/// the server runs.
struct Recorder<'a> {
    lock: &'a InstanceLock,
    record: Record,
    /// The candidates passed over, described once the server answers.
    skipped: Vec<port::Skipped>,
    dynamic_port: bool,
    reporter: Option<&'a detach::Reporter>,
}

impl Recorder<'_> {
    fn write(&self) {
        if let Err(error) = self.lock.write_record(&self.record) {
            output::warning(format!("could not record the running instance: {error:#}"));
        }
    }
}

impl Observer for Recorder<'_> {
    fn spawned(&mut self, pid: u32) {
        self.record.pid = pid;
        self.record.pid_start_time = os::start_time(pid);
        self.record.ready = false;
        self.write();
    }

    fn replicas(&mut self, pids: &[u32], ready: bool) {
        self.record.pid = pids.first().copied().unwrap_or_default();
        self.record.pid_start_time = os::start_time(self.record.pid);
        self.record.replicas = pids.to_vec();
        self.record.ready = ready;
        self.write();
    }

    fn ready(&mut self, _pid: u32) {
        self.record.ready = true;
        self.write();
        // Tell a waiting `--detach` first: looking up who holds busy ports takes a while.
        if let Some(reporter) = self.reporter {
            reporter.ready();
        }
        let note = self.selection_note();
        output::status("Running", format!("on {}{note}", self.record.url));
    }
}

impl Recorder<'_> {
    fn selection_note(&mut self) -> String {
        port::fill_holders(&mut self.skipped);
        skipped_note(&self.skipped, self.dynamic_port)
    }
}

fn skipped_note(skipped: &[port::Skipped], dynamic: bool) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    let dynamic = if dynamic { "; port from the OS" } else { "" };
    format!(" ({}{dynamic})", port::describe_skipped(skipped))
}

/// Where a client on this machine reaches the server.
fn url(config: &Config, port: u16) -> String {
    format!("http://{}", health::client_addr(config.host.value, port))
}

fn launch(
    plan: &Plan,
    common: &CommonArgs,
    args: &RunArgs,
    port: u16,
    socket: Option<std::net::TcpListener>,
) -> Launch {
    let Plan {
        cargo,
        project,
        config,
        target,
        instance,
        ..
    } = plan;
    let mut cargo_args: Vec<OsString> = vec![
        "run".into(),
        "--manifest-path".into(),
        project.manifest_path().into(),
    ];
    cargo_args.extend(target.cargo_args().iter().map(OsString::from));
    if args.release {
        cargo_args.push("--release".into());
    }
    if let Some(profile) = &args.profile {
        cargo_args.extend(["--profile".into(), profile.into()]);
    }
    for features in &args.features {
        cargo_args.extend(["--features".into(), features.into()]);
    }
    if args.all_features {
        cargo_args.push("--all-features".into());
    }
    if args.no_default_features {
        cargo_args.push("--no-default-features".into());
    }
    if common.quiet {
        cargo_args.push("--quiet".into());
    }
    if let Some(color) = common.color {
        cargo_args.extend(["--color".into(), format!("{color:?}").to_lowercase().into()]);
    }
    if !args.server_args.is_empty() {
        cargo_args.push("--".into());
        cargo_args.extend(args.server_args.iter().cloned());
    }
    let host = config.host.value;
    let mut env = vec![
        ("PORT".to_owned(), port.to_string()),
        ("PORTGUARD_HOST".to_owned(), host.to_string()),
        ("PORTGUARD_URL".to_owned(), url(config, port)),
        ("PORTGUARD_INSTANCE".to_owned(), instance.to_owned()),
    ];
    let socket_handoff = socket.is_some();
    if socket_handoff {
        env.extend([
            ("LISTEN_FDS".to_owned(), "1".to_owned()),
            ("LISTEN_FDNAMES".to_owned(), instance.to_owned()),
            ("LISTEN_FDS_FIRST_FD".to_owned(), os::LISTEN_FD.to_string()),
        ]);
    }
    Launch {
        cargo: cargo.to_owned(),
        cargo_args,
        env,
        socket,
        ready: ReadyCheck {
            addr: health::client_addr(host, port),
            health_path: config.health_path.value.clone(),
            socket_handoff,
            check_timeout: config.check_timeout.value,
            owner_group: None,
        },
        shutdown_timeout: config.shutdown_timeout.value,
        notify_socket: None,
        ready_timeout: None,
        replicas: args.replicas.map_or(1, |count| count as usize),
    }
}

fn already_running(instance: &str, record: Option<&Record>) -> Exit {
    let message = match record {
        Some(record) => format!(
            "instance `{instance}` is already running (pid {}, port {}, started {})\n\
             note: open {} or run another copy with `--instance NAME`",
            record.pid, record.port, record.started_at, record.url
        ),
        None => format!("instance `{instance}` is already being started by another portguard"),
    };
    Exit {
        code: exit_codes::FAILURE,
        message,
    }
}
