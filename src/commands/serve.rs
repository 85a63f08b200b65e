//! `cargo serve-safe` (and `cargo portguard run`): lock the instance, choose the port, run the
//! server under supervision, stop it cleanly. `--detach` runs the same in the background (see
//! [`detach`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Result;

use crate::cli::{CommonArgs, RunArgs};
use crate::config::{self, Config, Handoff};
use crate::context::Context;
use crate::exit_codes::{self, BadInput, Exit};
use crate::health::{self, ReadyCheck};
use crate::instance::{
    self, Acquired, Ended, InstanceFiles, InstanceLock, InstanceName, Record, StateDir,
};
use crate::os;
use crate::output;
use crate::port;
use crate::project::{Features, Project, Target};
use crate::reserve::Reservations;
use crate::supervise::NotifySocket;
use crate::supervise::build::BuildReport;
use crate::supervise::report::Reporter;
use crate::supervise::{self, Ending, Launch, Observer, Supervisor};
use crate::watch;

mod detach;
mod progress;

/// Everything `serve-safe` learns from its input before it touches anything: a mistake found
/// here exits with 2 and has started nothing.
#[derive(Debug)]
struct Plan {
    cargo: PathBuf,
    project: Project,
    config: Config,
    target: Target,
    instance: InstanceName,
    state: StateDir,
    /// `--watch`: what to watch, checked before anything starts.
    watch: Option<watch::Spec>,
}

impl Plan {
    fn new(context: &Context, common: &CommonArgs, args: &RunArgs) -> Result<Self> {
        let loaded = super::load_config(
            context,
            common,
            config::Flags {
                env: args.env.as_deref(),
                port: args.port,
                bin: args.bin.as_deref(),
            },
        )?;
        let state = StateDir::locate(
            &loaded.project.workspace_root,
            context.path_var("PORTGUARD_STATE_DIR"),
        );
        let watch = if args.watch {
            let features = Features {
                names: &args.features,
                all: args.all_features,
                no_default: args.no_default_features,
            };
            Some(watch::spec(&loaded, features, state.path())?)
        } else {
            None
        };
        let config::Loaded {
            cargo,
            project,
            config,
        } = loaded;
        if args.replicas.is_some_and(|count| count > 1) && config.handoff.value != Handoff::Socket {
            return Err(BadInput(format!(
                "`--replicas {}` needs socket handoff: in env handoff each server binds `PORT` \
                 itself and only one can; set `handoff = \"socket\"` (or PORTGUARD_HANDOFF=socket)",
                args.replicas.unwrap_or_default()
            ))
            .into());
        }
        let target = project.target(args.example.as_deref(), config.bin.value.as_deref())?;
        let instance = InstanceName::new(args.instance.as_deref().unwrap_or(target.name()))?;
        Ok(Plan {
            cargo,
            project,
            config,
            target,
            instance,
            state,
            watch,
        })
    }
}

/// Runs `cargo serve-safe` to the end and returns its exit code.
///
/// # Errors
/// Bad input (exit 2), another running instance (exit 1), and failures to start.
pub(crate) fn serve(context: &Context, common: &CommonArgs, run: &RunArgs) -> Result<i32> {
    let reporter = Reporter::from_context(context);
    let result = Plan::new(context, common, run).and_then(|plan| {
        plan.state.create()?;
        let files = plan.state.instance(&plan.instance);
        // In the foreground, where its lines are seen; the detached copy finds nothing to stop.
        if run.force && reporter.is_none() {
            force_stop(&files)?;
        }
        if run.detach && reporter.is_none() {
            // cargo's own switch for its progress bar turns this progress off too.
            let progress = !common.quiet
                && context
                    .var("CARGO_TERM_PROGRESS_WHEN")
                    .is_none_or(|when| when != "never");
            return detach::start(context, &files, run.json, progress);
        }
        serve_planned(&plan, context, common, run, reporter.as_ref())
    });
    if let (Some(reporter), Err(error)) = (&reporter, &result) {
        reporter.fail(exit_codes::for_error(error), &format!("{error:#}"), None);
    }
    result
}

/// `--force`: the running copy goes first, the way `cargo portguard stop` ends it.
fn force_stop(files: &InstanceFiles) -> Result<()> {
    if files.is_running()? {
        output::status(
            "Forcing",
            format!(
                "a fresh start of `{}`: stopping the running copy first",
                files.name
            ),
        );
        instance::operate::stop(files, None)?;
    }
    Ok(())
}

fn serve_planned(
    plan: &Plan,
    context: &Context,
    common: &CommonArgs,
    run: &RunArgs,
    reporter: Option<&Reporter>,
) -> Result<i32> {
    let (config, instance, state) = (&plan.config, &plan.instance, &plan.state);
    let files = state.instance(instance);
    let (lock, left_behind) = match instance::acquire(&files)? {
        Acquired::Running(holder) => return Err(already_running(instance, holder.as_ref()).into()),
        Acquired::Ours(lock, left_behind) => (lock, left_behind),
    };
    // The log is this run's from here on: what it says about the last run belongs in it.
    let capture = match reporter {
        Some(reporter) => {
            let capture = files.capture_log()?;
            reporter.logging();
            Some(capture)
        }
        None => None,
    };
    if let Some(stale) = left_behind {
        instance::clean_up(&lock, &stale);
    }
    output::verbose(
        "Locked",
        format!("instance `{instance}` ({})", files.lock.display()),
    );

    let socket_handoff = config.handoff.value == Handoff::Socket;
    let runtime = context.runtime_dir()?;
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
    let socket_inode = selection
        .listener
        .as_ref()
        .and_then(|listener| os::socket_inode(std::os::fd::AsFd::as_fd(listener)).ok());
    let mut launch = launch(plan, common, run, selection.port, selection.listener);
    launch.notify_socket = NotifySocket::bind(runtime);
    launch.ready_timeout = reporter.map(|_| config.ready_timeout.value);
    launch.misplaced_fails = reporter.is_some();
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
            config.handoff.value
        ),
    );
    let mut supervisor = Supervisor::new(launch)?;
    let mut record = new_record(plan, selection.port);
    record.socket_inode = socket_inode;
    let mut recorder = Recorder {
        lock: &lock,
        record,
        several: supervisor.launch().replicas > 1,
        skipped: selection.skipped,
        dynamic_port: selection.dynamic,
        reporter,
    };
    // Changes are reported from the first start on: one made while it builds is built next.
    let _watcher = match &plan.watch {
        Some(spec) => Some(start_watching(spec.clone(), &plan.project, &supervisor)?),
        None => None,
    };
    let ending = supervisor.run(&mut recorder)?;
    let failure = describe_ending(&ending, recorder.record.pid, &supervisor.launch().display());
    drop(supervisor);
    Ok(end_run(
        plan,
        &ending,
        failure.as_deref(),
        lock,
        capture,
        reporter,
    ))
}

/// Watches the project for `--watch`; each batch of changes reaches the supervisor as one
/// event, named relative to the package folder.
fn start_watching(
    spec: watch::Spec,
    project: &Project,
    supervisor: &Supervisor,
) -> Result<watch::Watcher> {
    let base = std::fs::canonicalize(project.package_root())
        .unwrap_or_else(|_| project.package_root().to_owned());
    let report = supervisor.change_reporter();
    output::verbose(
        "Watching",
        spec.roots
            .iter()
            .map(|root| output::inert_path(root))
            .collect::<Vec<_>>()
            .join(", "),
    );
    watch::start(
        spec,
        Box::new(move |changes: watch::Changes| {
            report(format!(
                "{} changed",
                output::inert(&changes.describe(&base))
            ));
        }),
    )
}

/// Says how the run ended, leaves word of it for `stop`, lets go of the lock, and only then
/// tells a waiting `--detach` of a failure: a start it makes next must not find this run still
/// holding the lock.
fn end_run(
    plan: &Plan,
    ending: &Ending,
    failure: Option<&str>,
    lock: InstanceLock,
    capture: Option<instance::Capture>,
    reporter: Option<&Reporter>,
) -> i32 {
    let code = ending.exit_code();
    if let Some(message) = failure {
        output::error(message);
    }
    let ended = Ended {
        supervisor_pid: std::process::id(),
        at: SystemTime::now(),
        exit_code: code,
        killed: matches!(ending, Ending::Stopped { killed: true }),
        package: Some(plan.project.package.name.to_string()),
    };
    if let Err(error) = lock.write_ended(&ended) {
        output::warning(format!("could not record how the run ended: {error:#}"));
    }
    let files = lock.files().clone();
    drop(lock);
    drop(capture);
    if let Some(reporter) = reporter
        && !reporter.has_reported()
    {
        // Stopped before it was ready is a failed start all the same: nothing serves.
        let (code, message) = match failure {
            Some(message) => (code, message),
            None => (
                exit_codes::FAILURE,
                "the server was stopped before it was ready",
            ),
        };
        let tail = files
            .log_tail()
            .map(|tail| format!("note: the end of `{}`:\n{tail}", files.log.display()));
        reporter.fail(code, message, tail.as_deref());
    }
    code
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
        Ending::Misplaced(misplaced) => Some(misplaced.with("; stopped it")),
        Ending::Stopped { .. } => None,
    }
}

fn new_record(plan: &Plan, port: u16) -> Record {
    let Plan {
        project,
        config,
        target,
        instance,
        ..
    } = plan;
    Record {
        instance: instance.clone(),
        pid: 0,
        supervisor_pid: std::process::id(),
        port,
        host: config.host.value,
        url: url(config, port),
        handoff: config.handoff.value,
        started_at: SystemTime::now(),
        package: project.package.name.to_string(),
        bin: target.name().to_owned(),
        manifest_path: project.manifest_path().to_owned(),
        portguard_version: env!("CARGO_PKG_VERSION").to_owned(),
        pid_start_time: None,
        supervisor_start_time: os::start_time(std::process::id()),
        ready: false,
        health_path: config.health_path.value.clone(),
        check_timeout: config.check_timeout.value,
        shutdown_timeout: config.shutdown_timeout.value,
        environment: config.env_name.as_ref().map(|name| name.value.clone()),
        replicas: Vec::new(),
        socket_inode: None,
        generation: 0,
        reloaded_at: None,
        build: None,
    }
}

/// Writes the record whenever the servers change and once they answer, and says where the
/// server runs.
struct Recorder<'a> {
    lock: &'a InstanceLock,
    record: Record,
    /// `--replicas N` with N > 1: the record lists every replica.
    several: bool,
    /// The candidates passed over, described once the server answers.
    skipped: Vec<port::Skipped>,
    dynamic_port: bool,
    reporter: Option<&'a Reporter>,
}

impl Recorder<'_> {
    fn write(&self) {
        if let Err(error) = self.lock.write_record(&self.record) {
            output::warning(format!("could not record the running instance: {error:#}"));
        }
    }

    fn selection_note(&mut self) -> String {
        port::fill_holders(&mut self.skipped);
        skipped_note(&self.skipped, self.dynamic_port)
    }
}

impl Observer for Recorder<'_> {
    fn servers(&mut self, pids: &[u32], ready: bool) {
        self.record.pid = pids.first().copied().unwrap_or_default();
        self.record.pid_start_time = os::start_time(self.record.pid);
        self.record.replicas = if self.several {
            pids.to_vec()
        } else {
            Vec::new()
        };
        self.record.ready = ready;
        self.write();
    }

    fn ready(&mut self) {
        self.record.ready = true;
        self.write();
        // Tell a waiting `--detach` first: looking up who holds busy ports takes a while.
        if let Some(reporter) = self.reporter {
            reporter.ready();
        }
        let note = self.selection_note();
        output::status("Running", format!("on {}{note}", self.record.url));
    }

    fn build(&mut self, report: &BuildReport) {
        self.record.build = Some(report.clone());
        self.write();
    }

    fn reloaded(&mut self, swaps: u32, report: &BuildReport) {
        self.record.generation = swaps;
        self.record.reloaded_at = Some(SystemTime::now());
        self.record.build = Some(report.clone());
        self.write();
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
        ("PORTGUARD_INSTANCE".to_owned(), instance.to_string()),
    ];
    let socket_handoff = socket.is_some();
    if socket_handoff {
        env.extend([
            ("LISTEN_FDS".to_owned(), "1".to_owned()),
            ("LISTEN_FDNAMES".to_owned(), instance.to_string()),
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
        misplaced_fails: false,
        watch: args.watch,
        swap_timeout: config.ready_timeout.value,
    }
}

fn already_running(instance: &InstanceName, record: Option<&Record>) -> Exit {
    let message = match record {
        Some(record) => format!(
            "instance `{instance}` is already running (pid {}, port {}, started {})\n\
             note: open {} or run another copy with `--instance NAME`",
            record.pid,
            record.port,
            record.started_at_text(),
            record.url
        ),
        None => format!("instance `{instance}` is already being started by another portguard"),
    };
    Exit {
        code: exit_codes::FAILURE,
        message,
    }
}
