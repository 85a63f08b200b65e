//! `--detach`: the supervisor runs in the background and reports through a pipe, so that
//! `PORT=$(cargo serve-safe --detach)` returns exactly when the server is ready, or fails with
//! the reason and nothing left running.
//!
//! The foreground process re-executes itself with the arguments it was given, less `--detach`,
//! in a session of its own, and reads one line from the pipe: `ready`, or `fail CODE` followed
//! by the message (see [`crate::supervise::report`]). Meanwhile it shows cargo's progress from
//! the instance's log (see [`super::progress`]).

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::AsRawFd as _;
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::context::Context;
use crate::exit_codes::{self, Exit};
use crate::instance::InstanceFiles;
use crate::supervise::report::REPORT_FD_VAR;
use crate::{os, output, signals};

use super::progress::Progress;

/// How often the log is looked at for progress while the build runs.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// Starts the supervisor in the background and waits for its verdict. Prints the port (or,
/// with `json`, a status entry) on stdout once the server is ready; meanwhile, with `progress`,
/// cargo's progress on stderr.
///
/// # Errors
/// When the background supervisor cannot be started, or reports a failure (its exit code is
/// carried in an [`Exit`]).
pub(super) fn start(
    context: &Context,
    files: &InstanceFiles,
    json: bool,
    progress: bool,
) -> Result<i32> {
    let (reader, writer) = std::io::pipe().context("could not create the report pipe")?;
    let exe = std::env::current_exe().context("could not find the running portguard binary")?;
    let mut command = Command::new(&exe);
    command
        .args(without_detach(context.args().iter().cloned()))
        .env_clear()
        .envs(context.vars_os())
        .env(REPORT_FD_VAR, writer.as_raw_fd().to_string())
        .current_dir(context.cwd())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    os::detach_child(&mut command, writer.as_raw_fd());
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{}` in the background", exe.display()))?;
    // Only the child may keep the pipe open, so that its death reads as end of file here.
    drop(writer);
    let progress = Progress::new(files.log.clone(), progress);
    let (verdict, mut lines) = match wait_for_report(reader, progress)? {
        Report::Lines(first, rest) => (first, rest),
        Report::Interrupted(signal) => {
            // Whoever pressed Ctrl-C while waiting does not want a server left behind.
            output::status(
                "Cancelling",
                format!("the background start (supervisor pid {})", child.id()),
            );
            let _ = os::signal_process(child.id(), os::Sig::TERM);
            let _ = child.wait();
            return Ok(exit_codes::SIGNAL_BASE + signal);
        }
    };
    match verdict.as_deref() {
        Some("ready") => {
            let summary = files.summary(true)?;
            let mut stdout = std::io::stdout().lock();
            if json {
                let text =
                    serde_json::to_string(&summary).context("could not encode the status entry")?;
                writeln!(stdout, "{text}")
            } else {
                writeln!(stdout, "{}", summary.port().unwrap_or_default())
            }
            .context("could not write to stdout")?;
            output::status(
                "Detached",
                format!(
                    "supervisor pid {} (log: {})",
                    child.id(),
                    files.log.display()
                ),
            );
            Ok(exit_codes::OK)
        }
        Some(line) if line.starts_with("fail ") => {
            let code = line["fail ".len()..]
                .trim()
                .parse()
                .ok()
                // A failed start never reads as success, whatever the report says.
                .filter(|&code| code != exit_codes::OK)
                .unwrap_or(exit_codes::FAILURE);
            let message: Vec<String> = lines.by_ref().map_while(Result::ok).collect();
            // The supervisor let go of the lock before it reported; its exit follows.
            let _ = child.wait();
            Err(Exit {
                code,
                message: message.join("\n"),
            }
            .into())
        }
        _ => {
            let status = child.wait().ok();
            Err(Exit {
                code: exit_codes::FAILURE,
                message: format!(
                    "the background supervisor ended without a report ({})",
                    status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string())
                ),
            }
            .into())
        }
    }
}

/// What the foreground learns while it waits: the report, or a signal that cancels the start.
enum Report {
    Lines(
        Option<String>,
        std::io::Lines<BufReader<std::io::PipeReader>>,
    ),
    Interrupted(i32),
}

/// What the report thread and the signal handler tell the waiting foreground.
enum Word {
    /// The log has started: follow it.
    Log,
    Verdict(
        Option<String>,
        std::io::Lines<BufReader<std::io::PipeReader>>,
    ),
    Signal(i32),
}

/// Reads the report on a thread of its own, so that Ctrl-C while waiting is noticed at once,
/// and shows the build's progress until the verdict comes.
fn wait_for_report(reader: std::io::PipeReader, mut progress: Progress) -> Result<Report> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let signal_sender = sender.clone();
    let handle = signals::listen(&signals::STOP, move |signal| {
        let _ = signal_sender.send(Word::Signal(signal));
    })?;
    std::thread::Builder::new()
        .name("portguard-report".to_owned())
        .spawn(move || {
            let mut lines = BufReader::new(reader).lines();
            loop {
                let first = lines.next().and_then(Result::ok);
                if first.as_deref() == Some("log") {
                    if sender.send(Word::Log).is_err() {
                        return;
                    }
                    continue;
                }
                let _ = sender.send(Word::Verdict(first, lines));
                return;
            }
        })
        .context("could not start the report thread")?;
    let report = loop {
        let word = if progress.is_following() {
            match receiver.recv_timeout(FOLLOW_EVERY) {
                Ok(word) => word,
                Err(RecvTimeoutError::Timeout) => {
                    progress.poll();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("the report thread ended without a word")
                }
            }
        } else {
            receiver
                .recv()
                .context("the report thread ended without a word")?
        };
        match word {
            Word::Log => progress.follow(),
            Word::Verdict(first, rest) => {
                progress.poll();
                break Report::Lines(first, rest);
            }
            Word::Signal(signal) => break Report::Interrupted(signal),
        }
    };
    progress.finish();
    handle.close();
    Ok(report)
}

/// The same command line without `--detach` and `--json`, which only the foreground uses.
fn without_detach(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut server_args = false;
    args.filter(|arg| {
        if arg == "--" {
            server_args = true;
        }
        server_args || (arg != "--detach" && arg != "--json")
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_portguards_own_detach_flags_are_dropped() {
        let args = [
            "serve-safe",
            "--detach",
            "--json",
            "--port",
            "1",
            "--",
            "--json",
            "--detach",
        ]
        .map(OsString::from);
        let kept = without_detach(args.into_iter());
        assert_eq!(
            kept,
            ["serve-safe", "--port", "1", "--", "--json", "--detach"].map(OsString::from)
        );
    }
}
