//! `cargo serve-safe`: lock the instance, choose the port, run the server, stop it cleanly.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Result;

use crate::cli::RunArgs;
use crate::config::{self, Config, Handoff};
use crate::exit_codes::{self, Exit};
use crate::health::{self, ReadyCheck};
use crate::lock::{self, Acquired, InstanceLock, Record, Stale, StateDir};
use crate::os::{self, Sig};
use crate::output;
use crate::port;
use crate::project::{self, Project, Target};
use crate::supervise::{self, Ending, Launch, Observer, Supervisor};

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
    pub fn new(args: &RunArgs, vars: Vars<'_>) -> Result<Self> {
        let cargo = project::find_cargo(vars)?;
        let project = Project::locate(
            &cargo,
            args.common.manifest_path.as_deref(),
            args.common.package.as_deref(),
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

/// Runs `cargo serve-safe` to the end and returns its exit code.
///
/// # Errors
/// Bad input (exit 2), another running instance (exit 1), and failures to start.
pub fn serve(args: &RunArgs, vars: Vars<'_>) -> Result<i32> {
    let Plan {
        cargo,
        project,
        config,
        target,
        instance,
        state,
    } = Plan::new(args, vars)?;
    state.create()?;
    let files = state.instance(&instance);
    let lock = match lock::acquire(&files)? {
        Acquired::Running(record) => return Err(already_running(&instance, record.as_ref()).into()),
        Acquired::Ours(held, stale) => {
            if let Some(stale) = stale {
                clean_up_stale(&instance, &stale, &config);
            }
            held
        }
    };
    output::verbose(
        "Locked",
        format!("instance `{instance}` ({})", files.lock.display()),
    );

    let socket_handoff = config.handoff.value == Handoff::Socket;
    let selection = port::select(
        config.host.value,
        &config.candidates(),
        config.dynamic_port.value,
        socket_handoff,
    )
    .map_err(|error| Exit {
        code: exit_codes::FAILURE,
        message: format!(
            "{error}\nnote: tried at most {} candidates (`max-attempts`) and `dynamic-port` is off",
            config.max_attempts.value
        ),
    })?;
    let launch = launch(
        &cargo,
        args,
        &project,
        &config,
        &target,
        &instance,
        selection.port,
        selection.listener,
    );
    output::status(
        "Starting",
        format!(
            "`{}` on port {} ({} handoff, instance `{instance}`)",
            launch.display(),
            selection.port,
            if socket_handoff { "socket" } else { "env" }
        ),
    );
    let mut supervisor = Supervisor::new(launch)?;
    let mut recorder = Recorder {
        lock: &lock,
        record: Record {
            instance: instance.clone(),
            pid: 0,
            supervisor_pid: std::process::id(),
            port: selection.port,
            host: config.host.value.to_string(),
            url: url(&config, selection.port),
            handoff: if socket_handoff { "socket" } else { "env" }.to_owned(),
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            package: project.package.name.to_string(),
            bin: target.name().to_owned(),
            manifest_path: project.manifest_path().to_owned(),
            portguard_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid_start_time: None,
            supervisor_start_time: os::start_time(std::process::id()),
        },
        selection_note: skipped_note(&selection.skipped, selection.dynamic),
    };
    let ending = supervisor.run(&mut recorder)?;
    let code = ending.exit_code();
    if let Ending::Exited { status, ready } = ending {
        let described = supervise::describe(status);
        if ready {
            output::warning(format!(
                "server (pid {}) exited with {described}",
                recorder.record.pid
            ));
        } else {
            output::error(format!(
                "`{}` exited with {described} before the server was ready",
                supervisor.launch().display()
            ));
        }
    }
    drop(lock);
    Ok(code)
}

/// Writes the record once the pid is known, and says where the server runs once it answers.
struct Recorder<'a> {
    lock: &'a InstanceLock,
    record: Record,
    selection_note: String,
}

impl Observer for Recorder<'_> {
    fn spawned(&mut self, pid: u32) {
        self.record.pid = pid;
        self.record.pid_start_time = os::start_time(pid);
        if let Err(error) = self.lock.write_record(&self.record) {
            output::warning(format!("could not record the running instance: {error:#}"));
        }
    }

    fn ready(&mut self, _pid: u32) {
        output::status(
            "Running",
            format!("on {}{}", self.record.url, self.selection_note),
        );
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

#[allow(clippy::too_many_arguments)] // each is one part of the server's command line; a struct would only rename them
fn launch(
    cargo: &std::path::Path,
    args: &RunArgs,
    project: &Project,
    config: &Config,
    target: &Target,
    instance: &str,
    port: u16,
    socket: Option<std::net::TcpListener>,
) -> Launch {
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
    if args.common.quiet {
        cargo_args.push("--quiet".into());
    }
    if let Some(color) = args.common.color {
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

/// A supervisor that died without cleaning up (SIGKILL, power loss) left files behind. They are
/// replaced, never trusted; a server that outlived it is ended only when its recorded start
/// time proves it is the one portguard started.
fn clean_up_stale(instance: &str, stale: &Stale, config: &Config) {
    let Some(record) = &stale.record else {
        output::warning(format!(
            "removed unreadable state of instance `{instance}` left by an earlier run"
        ));
        return;
    };
    output::warning(format!(
        "instance `{instance}` was not shut down cleanly (supervisor pid {} is gone); removed its stale state (pid {}, port {})",
        record.supervisor_pid, record.pid, record.port
    ));
    // Our servers lead their own process group; pid 1 and this process never qualify, whatever
    // a damaged record says.
    let same_process = record.pid > 1
        && record.pid != std::process::id()
        && os::process_group(record.pid) == Some(record.pid)
        && record.pid_start_time.is_some()
        && os::start_time(record.pid) == record.pid_start_time;
    if same_process && os::is_alive(record.pid) {
        output::warning(format!(
            "its server (pid {}) outlived it; stopping it",
            record.pid
        ));
        let _ = os::signal_group(record.pid, Sig::TERM);
        let deadline = std::time::Instant::now() + config.shutdown_timeout.value;
        while os::is_alive(record.pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = os::signal_group(record.pid, Sig::KILL);
    }
}
