//! `--detach`: the supervisor runs in the background and reports through a pipe, so that
//! `PORT=$(cargo serve-safe --detach)` returns exactly when the server is ready, or fails with
//! the reason and nothing left running.
//!
//! The foreground process re-executes itself without `--detach` in a session of its own and
//! reads one line from the pipe: `ready`, or `fail CODE` followed by the message.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context as _, Result};

use crate::exit_codes::{self, Exit};
use crate::lock::InstanceFiles;
use crate::{os, output, signals, status};

/// The variable that tells a re-executed supervisor which descriptor to report through.
pub const REPORT_FD_VAR: &str = "PORTGUARD_DETACH_REPORT_FD";

/// Lines of the server's log shown when a detached start fails.
const LOG_TAIL_LINES: usize = 20;

/// Starts the supervisor in the background and waits for its verdict. Prints the port (or,
/// with `json`, a status entry) on stdout once the server is ready.
///
/// # Errors
/// When the background supervisor cannot be started, or reports a failure (its exit code is
/// carried in an [`Exit`]).
pub fn start(files: &InstanceFiles, json: bool) -> Result<i32> {
    let (reader, writer) = std::io::pipe().context("could not create the report pipe")?;
    let exe = std::env::current_exe().context("could not find the running portguard binary")?;
    let mut command = Command::new(&exe);
    command
        .args(without_detach(std::env::args_os().skip(1)))
        .env(REPORT_FD_VAR, writer.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    os::detach_child(&mut command, writer.as_raw_fd());
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{}` in the background", exe.display()))?;
    // Only the child may keep the pipe open, so that its death reads as end of file here.
    drop(writer);
    let (verdict, mut lines) = match wait_for_report(reader)? {
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
            let entry = status::entry(files, true)?;
            let mut stdout = std::io::stdout().lock();
            if json {
                let text =
                    serde_json::to_string(&entry).context("could not encode the status entry")?;
                writeln!(stdout, "{text}")
            } else {
                writeln!(stdout, "{}", entry.port().unwrap_or_default())
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
                .unwrap_or(exit_codes::FAILURE);
            let message: Vec<String> = lines.by_ref().map_while(Result::ok).collect();
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

/// Reads the first line of the report on a thread of its own, so that Ctrl-C while waiting
/// is noticed at once.
fn wait_for_report(reader: std::io::PipeReader) -> Result<Report> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let signal_sender = sender.clone();
    let handle = signals::listen(&signals::STOP, move |signal| {
        let _ = signal_sender.send(Err(signal));
    })?;
    std::thread::Builder::new()
        .name("portguard-report".to_owned())
        .spawn(move || {
            let mut lines = BufReader::new(reader).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = sender.send(Ok((first, lines)));
        })
        .context("could not start the report thread")?;
    let report = receiver
        .recv()
        .context("the report thread ended without a word")?;
    handle.close();
    Ok(match report {
        Ok((first, rest)) => Report::Lines(first, rest),
        Err(signal) => Report::Interrupted(signal),
    })
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

/// The background side: tells the waiting foreground how the start went, once.
#[derive(Debug)]
pub struct Reporter {
    pipe: Mutex<Option<File>>,
}

impl Reporter {
    /// The reporter of a re-executed supervisor, if this is one.
    #[must_use]
    pub fn from_env(vars: &dyn Fn(&str) -> Option<OsString>) -> Option<Self> {
        let fd: i32 = vars(REPORT_FD_VAR)?.to_str()?.parse().ok()?;
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if fd <= 2 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return None;
        }
        // SAFETY: the foreground portguard opened this descriptor for us and for this use alone.
        let file = unsafe { File::from_raw_fd(fd) };
        Some(Reporter {
            pipe: Mutex::new(Some(file)),
        })
    }

    /// From now on the server's output and the supervisor's own lines go to the log.
    ///
    /// # Errors
    /// When the log cannot be opened.
    pub fn redirect_to_log(&self, files: &InstanceFiles) -> Result<()> {
        let log = crate::lock::create_log(files)?;
        os::redirect_output(&log)
            .with_context(|| format!("could not redirect output to `{}`", files.log.display()))
    }

    pub fn ready(&self) {
        self.send("ready\n");
    }

    /// Reports a failure, with the end of the server's log when there is one of this run.
    pub fn fail(&self, code: i32, message: &str, log: Option<&InstanceFiles>) {
        let mut text = format!("fail {code}\n{message}\n");
        if let Some((files, tail)) = log.and_then(|files| Some((files, tail(&files.log)?))) {
            let _ = write!(text, "note: the end of `{}`:\n{tail}", files.log.display());
        }
        self.send(&text);
    }

    fn send(&self, text: &str) {
        let Ok(mut pipe) = self.pipe.lock() else {
            return;
        };
        if let Some(mut file) = pipe.take() {
            // The foreground may have gone (Ctrl-C); nobody is left to tell.
            let _ = file.write_all(text.as_bytes());
        }
    }
}

fn tail(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    (!lines.is_empty()).then(|| {
        lines[start..].iter().fold(String::new(), |mut text, line| {
            let _ = writeln!(text, "  | {line}");
            text
        })
    })
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
