//! Building the next server while the current one serves.
//!
//! A build is `cargo run` with the run's own arguments, `--message-format=json-render-diagnostics`
//! (cargo renders the compiler's diagnostics on stderr, passed through here, and speaks JSON on
//! stdout) and portguard itself as the runner: where `cargo run` would start the server, cargo
//! starts `portguard __portguard-launch SERVER ARGS…` instead, with the environment, folder and
//! arguments it would have given the server. That prints them as one JSON line and exits, and
//! the supervisor starts the server from exactly that when it is time to swap. So a new server
//! gets what `cargo run` gives it (cargo's `CARGO_*` variables, the `[env]` table, library
//! paths, the target `cargo run` picks) without portguard deriving any of it again.

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{Event, Launch, reaper::Reaper};
use crate::{exit_codes, os, output};

/// The first argument that makes a portguard binary the runner of a build (see the module
/// docs); nobody types it.
pub(crate) const LAUNCH_WORD: &str = "__portguard-launch";

/// The `reason` of the JSON line the runner prints, beside cargo's own messages.
const LAUNCH_REASON: &str = "portguard-launch";

/// How long a finished build may take to hand the launch over before it counts as failed: a
/// runner configured for the target would otherwise run the server inside the build.
const HANDOVER_LIMIT: Duration = Duration::from_secs(10);

/// How `cargo run` would start the server, as cargo gave it to the runner. Bytes, not text:
/// paths and variables need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Captured {
    pub(crate) program: Vec<u8>,
    pub(crate) args: Vec<Vec<u8>>,
    pub(crate) cwd: Vec<u8>,
    pub(crate) env: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Captured {
    /// The command that starts the server as `cargo run` would (in its own process group, its
    /// descriptors and `LISTEN_PID` set up by the caller).
    pub(crate) fn command(&self) -> (PathBuf, Vec<OsString>, PathBuf, Vec<(OsString, OsString)>) {
        (
            os::os_from_bytes(self.program.clone()).into(),
            self.args.iter().cloned().map(os::os_from_bytes).collect(),
            os::os_from_bytes(self.cwd.clone()).into(),
            self.env
                .iter()
                .map(|(key, value)| {
                    (
                        os::os_from_bytes(key.clone()),
                        os::os_from_bytes(value.clone()),
                    )
                })
                .collect(),
        )
    }

    /// The executable's path, for messages.
    pub(crate) fn program_display(&self) -> String {
        output::inert_path(std::path::Path::new(&os::os_from_bytes(
            self.program.clone(),
        )))
    }
}

/// The runner's side: `ARGS` are `[LAUNCH_WORD, SERVER, SERVER_ARGS…]` as cargo passes them.
/// Prints the launch as one JSON line on stdout (cargo's message stream) and returns the exit
/// code.
#[must_use]
pub(crate) fn hand_over(args: &[OsString]) -> i32 {
    let Some((program, server_args)) = args.get(1..).and_then(<[OsString]>::split_first) else {
        output::error(format!(
            "`{LAUNCH_WORD}` is run by cargo as the runner of a build"
        ));
        return exit_codes::BAD_INPUT;
    };
    let Ok(cwd) = std::env::current_dir() else {
        output::error("the runner of a build could not read its current folder");
        return exit_codes::FAILURE;
    };
    // cargo names the executable relative to the folder it runs it in.
    let program = cwd.join(program);
    let captured = Captured {
        program: os::os_bytes(program.as_os_str()).to_vec(),
        args: server_args
            .iter()
            .map(|arg| os::os_bytes(arg).to_vec())
            .collect(),
        cwd: os::os_bytes(cwd.as_os_str()).to_vec(),
        env: std::env::vars_os()
            .map(|(key, value)| (os::os_bytes(&key).to_vec(), os::os_bytes(&value).to_vec()))
            .collect(),
    };
    let line = serde_json::json!({ "reason": LAUNCH_REASON, "launch": captured });
    match output::answer(&line.to_string()) {
        Ok(()) => exit_codes::OK,
        Err(_) => exit_codes::FAILURE,
    }
}

/// How a build ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Built; the new server can start from this.
    Built(Captured),
    /// It failed: cargo's exit status and the first error it printed, if one was seen.
    Failed {
        status: ExitStatus,
        first_error: Option<String>,
    },
}

/// Where the last build stands, for the record and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum BuildState {
    /// cargo is building.
    Building,
    /// It built, and its server took over.
    Serving,
    /// It did not build; the last good build keeps serving.
    Failed,
    /// It built, but its server exited or was not ready in time; it was stopped.
    ServerFailed,
}

/// The last build, as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BuildReport {
    /// Counts the builds of this run, from 1: `restart` tells its own build from an earlier one.
    pub(crate) number: u32,
    pub(crate) state: BuildState,
    /// When it started (`Building`) or ended.
    #[serde(with = "rfc3339_millis")]
    pub(crate) at: std::time::SystemTime,
    /// What it was for: `src/main.rs changed`, `restart`.
    pub(crate) cause: String,
    /// The first error, for a failed build or server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// Times in RFC 3339 with milliseconds, for builds and reloads, which come close together.
pub(crate) mod rfc3339_millis {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*time))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }

    /// The same for an optional time.
    pub(crate) mod option {
        use std::time::SystemTime;

        use serde::{Deserialize as _, Deserializer, Serializer};

        #[expect(
            clippy::ref_option,
            reason = "serde's `with` hands over a reference to the field"
        )]
        pub(crate) fn serialize<S: Serializer>(
            time: &Option<SystemTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(time) => super::serialize(time, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// A build that runs.
#[derive(Debug)]
pub(crate) struct Build {
    pub(crate) generation: u32,
    pub(crate) pid: u32,
    pub(crate) started: Instant,
}

/// Starts the build for `generation`: its stderr is passed on, its end arrives as
/// `Event::Built(generation, …)` on `events`.
///
/// # Errors
/// When cargo cannot be started.
pub(super) fn start(
    launch: &Launch,
    generation: u32,
    reaper: &Reaper,
    events: Sender<Event>,
) -> Result<Build> {
    let runner = std::env::current_exe().context("could not find portguard's own executable")?;
    let mut command = Command::new(&launch.cargo);
    command.arg("--config").arg(runner_config(&runner));
    let mut args = launch.cargo_args.iter();
    // `run` first, then the message format: an option after `--` would be the server's.
    command.args(args.next());
    command.arg("--message-format=json-render-diagnostics");
    // Piped, cargo would drop its colours; an option, not `CARGO_TERM_COLOR`, so the server's
    // environment stays the one `cargo run` gives it.
    if output::stderr_colored() && !launch.cargo_args.iter().any(|arg| arg == "--color") {
        command.args(["--color", "always"]);
    }
    command.args(args);
    super::server_env(&mut command, launch, None);
    // The server's notify socket and replica number are set when it starts, not by cargo.
    command.env_remove("NOTIFY_SOCKET");
    command.stdin(Stdio::null());
    command.stdout(Stdio::piped());
    command.stderr(Stdio::piped());
    os::prepare_child(&mut command, None);
    let mut child = reaper
        .spawn(&mut command, generation)
        .with_context(|| format!("could not start `{}` to build", launch.display()))?;
    let pid = child.id();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        anyhow::bail!("the build's output could not be read");
    };
    let errors = std::thread::Builder::new()
        .name("portguard-build-stderr".to_owned())
        .spawn(move || pass_stderr(stderr))
        .context("could not start the build's output thread")?;
    let reaper = reaper.clone();
    std::thread::Builder::new()
        .name("portguard-build".to_owned())
        .spawn(move || {
            let handed_over = Arc::new(Mutex::new(false));
            let (captured, finished_at) = read_messages(stdout, &|| {
                watch_handover(pid, Arc::clone(&handed_over));
            });
            // The build is over: the watchdog must not signal a group that may be gone.
            *handed_over.lock().unwrap_or_else(PoisonError::into_inner) = true;
            let status = child
                .wait()
                .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(9 << 8));
            reaper.reaped(pid, generation);
            let first_error = errors.join().ok().flatten();
            let outcome = match captured {
                Some(captured) if status.success() => Outcome::Built(captured),
                _ => Outcome::Failed {
                    status,
                    first_error: first_error.or_else(|| {
                        finished_at.map(|_| {
                            "the build finished but cargo did not hand the server over (is a \
                             `runner` configured for this target?)"
                                .to_owned()
                        })
                    }),
                },
            };
            let _ = events.send(Event::Built(generation, Box::new(outcome)));
        })
        .context("could not start the build's wait thread")?;
    Ok(Build {
        generation,
        pid,
        started: Instant::now(),
    })
}

/// `target."cfg(all())".runner = [PORTGUARD, LAUNCH_WORD]`, as TOML for `--config`.
fn runner_config(runner: &std::path::Path) -> OsString {
    let mut array = toml_edit::Array::new();
    array.push(runner.to_string_lossy().into_owned());
    array.push(LAUNCH_WORD);
    format!("target.\"cfg(all())\".runner = {array}").into()
}

/// Reads cargo's JSON messages: the launch the runner handed over, and when `build-finished`
/// came (a finished build that hands nothing over within a while is stopped, by the caller's
/// wait ending: the stream closes when the build group is gone).
fn read_messages(stdout: impl Read, on_finished: &dyn Fn()) -> (Option<Captured>, Option<Instant>) {
    let (mut captured, mut finished_at) = (None, None);
    for line in BufReader::new(stdout).split(b'\n') {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        match message.get("reason").and_then(serde_json::Value::as_str) {
            Some(LAUNCH_REASON) => {
                captured = message
                    .get("launch")
                    .and_then(|launch| serde_json::from_value(launch.clone()).ok());
            }
            Some("build-finished") => {
                finished_at = Some(Instant::now());
                on_finished();
            }
            _ => {}
        }
    }
    (captured, finished_at)
}

/// After the build finished, the runner hands over at once; a build still running
/// [`HANDOVER_LIMIT`] later is running the server itself (a `runner` configured for the target
/// wins over portguard's) and is ended, so that the build is reported as failed.
fn watch_handover(pid: u32, handed_over: Arc<Mutex<bool>>) {
    let _ = std::thread::Builder::new()
        .name("portguard-handover".to_owned())
        .spawn(move || {
            std::thread::sleep(HANDOVER_LIMIT);
            let done = handed_over.lock().unwrap_or_else(PoisonError::into_inner);
            if !*done {
                let _ = os::signal_group(pid, os::Sig::KILL);
            }
        });
}

/// Passes cargo's stderr on line by line, except the line that names portguard's runner, and
/// returns the first error it showed (its headline and location).
fn pass_stderr(stderr: impl Read) -> Option<String> {
    let mut first_error: Option<String> = None;
    let mut wants_location = false;
    for line in BufReader::new(stderr).split(b'\n') {
        let Ok(mut line) = line else { break };
        let plain = strip_ansi(&String::from_utf8_lossy(&line));
        let trimmed = plain.trim();
        if trimmed.starts_with("Running `") && plain.contains(LAUNCH_WORD) {
            continue;
        }
        if wants_location {
            if let Some(location) = trimmed.strip_prefix("--> ")
                && let Some(error) = &mut first_error
            {
                error.push_str(" at ");
                error.push_str(location);
            }
            if !trimmed.is_empty() && !trimmed.starts_with('|') {
                wants_location = false;
            }
        }
        if first_error.is_none() && trimmed.starts_with("error") {
            first_error = Some(trimmed.to_owned());
            wants_location = true;
        }
        line.push(b'\n');
        output::raw_stderr(&line);
    }
    first_error
}

/// `text` without terminal colour sequences (`ESC [ … m`), to read cargo's coloured output.
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_error_and_its_location() {
        let stderr = "   Compiling app v0.1.0\n\u{1b}[1m\u{1b}[91merror[E0425]\u{1b}[0m: cannot find value `x`\n  \
                      --> src/main.rs:3:5\n   |\n3  |     x\nerror: could not compile `app`\n";
        assert_eq!(
            pass_stderr(stderr.as_bytes()).as_deref(),
            Some("error[E0425]: cannot find value `x` at src/main.rs:3:5")
        );
    }

    #[test]
    fn reads_the_launch_among_cargo_messages() {
        let captured = Captured {
            program: b"/t/debug/app".to_vec(),
            args: vec![b"--flag".to_vec()],
            cwd: b"/p".to_vec(),
            env: vec![(b"CARGO_PKG_NAME".to_vec(), vec![0xff, b'x'])],
        };
        let stream = format!(
            "{{\"reason\":\"compiler-artifact\"}}\nnot json\n{{\"reason\":\"build-finished\",\"success\":true}}\n{}\n",
            serde_json::json!({"reason": LAUNCH_REASON, "launch": captured})
        );
        let (read, finished) = read_messages(stream.as_bytes(), &|| {});
        assert_eq!(read, Some(captured));
        assert!(finished.is_some());
    }

    #[test]
    fn the_runner_config_is_toml_that_quotes_the_path() {
        let config = runner_config(std::path::Path::new("/a \"b\"/portguard"));
        let text = config.to_string_lossy();
        let parsed: toml_edit::DocumentMut = text.parse().unwrap();
        let runner = parsed["target"]["cfg(all())"]["runner"].as_array().unwrap();
        assert_eq!(runner.get(0).unwrap().as_str(), Some("/a \"b\"/portguard"));
        assert_eq!(runner.get(1).unwrap().as_str(), Some(LAUNCH_WORD));
    }
}
