//! What a detached start shows while it waits: cargo's progress (`Compiling x`, `Downloading`),
//! read from the instance's log, where the background supervisor's output goes. On a terminal
//! one line is rewritten in place; otherwise each step is a line of its own. Always on stderr:
//! stdout holds only the port.

use std::fs::File;
use std::io::{IsTerminal as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;

use anstream::ColorChoice;
use anstyle::{AnsiColor, Style};

use crate::instance::open_for_reading;
use crate::output;

/// cargo's verbs for work in progress; `Finished` and `Running` say it is over, and the
/// server's own lines are not ours to repeat.
const VERBS: &[&str] = &[
    "Adding",
    "Blocking",
    "Building",
    "Checking",
    "Compiling",
    "Documenting",
    "Downloaded",
    "Downloading",
    "Locking",
    "Updating",
];

/// A line rewritten in place is cut to this many characters, so that it never wraps on a
/// common terminal (a wrapped line could not be cleared with `\r`).
const IN_PLACE_WIDTH: usize = 79;

/// At most this much of the log is read at a time, so that a chatty server cannot hold up the
/// verdict.
const READ_LIMIT: u64 = 256 * 1024;

const VERB: Style = AnsiColor::Green.on_default().bold();

/// Follows the log of a detached start and shows cargo's progress from it.
pub(super) struct Progress {
    path: PathBuf,
    /// The log, once the supervisor said it has started it, and how far it was read.
    log: Option<(File, u64)>,
    /// The end of a line not yet complete.
    partial: Vec<u8>,
    in_place: bool,
    /// A line rewritten in place is on the screen.
    shown: bool,
    /// Off: follows nothing, shows nothing.
    enabled: bool,
}

impl Progress {
    pub(super) fn new(path: PathBuf, enabled: bool) -> Self {
        Progress {
            path,
            log: None,
            partial: Vec::new(),
            in_place: std::io::stderr().is_terminal(),
            shown: false,
            enabled,
        }
    }

    pub(super) fn is_following(&self) -> bool {
        self.log.is_some()
    }

    /// Starts following the log from its beginning: the supervisor has just emptied it.
    pub(super) fn follow(&mut self) {
        if !self.enabled {
            return;
        }
        // A log that cannot be read only means no progress is shown.
        self.log = open_for_reading(&self.path).ok().map(|file| (file, 0));
        self.partial.clear();
    }

    /// Shows the progress lines written since the last look.
    pub(super) fn poll(&mut self) {
        let Some((file, read)) = &mut self.log else {
            return;
        };
        let Ok(length) = file.metadata().map(|metadata| metadata.len()) else {
            return;
        };
        if length < *read {
            // Rotated or emptied: what is there now is new.
            *read = 0;
            self.partial.clear();
        }
        if file.seek(SeekFrom::Start(*read)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        let Ok(count) = (&mut *file).take(READ_LIMIT).read_to_end(&mut bytes) else {
            return;
        };
        *read += count as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(end) = self.partial.iter().rposition(|&byte| byte == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in String::from_utf8_lossy(&complete).lines() {
            if let Some((verb, rest)) = progress_line(line) {
                self.show(&verb, &rest);
            }
        }
    }

    /// Clears the line shown in place, and stops following.
    pub(super) fn finish(&mut self) {
        if self.shown {
            let _ = std::io::stderr().lock().write_all(b"\r\x1b[2K");
            self.shown = false;
        }
        self.log = None;
    }

    fn show(&mut self, verb: &str, rest: &str) {
        let rest = output::inert(rest);
        if !self.in_place {
            output::status(verb, rest);
            return;
        }
        let mut text: String = format!("{verb:>12} {rest}")
            .chars()
            .take(IN_PLACE_WIDTH)
            .collect();
        let stderr = std::io::stderr();
        if anstream::AutoStream::choice(&stderr) != ColorChoice::Never {
            text = format!("{VERB}{verb:>12}{VERB:#}{}", &text[12..]);
        }
        let _ = stderr
            .lock()
            .write_all(format!("\r\x1b[2K{text}").as_bytes());
        self.shown = true;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The verb and the rest of a cargo progress line such as `   Compiling foo v0.1.0 (/src)`,
/// colours removed.
fn progress_line(line: &str) -> Option<(String, String)> {
    let plain = without_escapes(line);
    let (verb, rest) = plain.trim_start().split_once(' ')?;
    VERBS
        .contains(&verb)
        .then(|| (verb.to_owned(), rest.trim().to_owned()))
}

/// `line` without its ANSI escape sequences (cargo colours its verbs with `--color always`).
fn without_escapes(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            plain.push(c);
            continue;
        }
        // CSI: `ESC [`, parameters, then a final byte in `@`..`~`.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_progress_lines_are_picked_out() {
        assert_eq!(
            progress_line("   Compiling foo v0.1.0 (/src/foo)"),
            Some(("Compiling".to_owned(), "foo v0.1.0 (/src/foo)".to_owned()))
        );
        assert_eq!(
            progress_line("\x1b[1m\x1b[32m Downloading\x1b[0m crates ..."),
            Some(("Downloading".to_owned(), "crates ...".to_owned()))
        );
        assert_eq!(progress_line("    Finished `dev` profile"), None);
        assert_eq!(progress_line("     Running `target/debug/foo`"), None);
        assert_eq!(progress_line("Compiling"), None);
        assert_eq!(progress_line("server: Compiling is a word too"), None);
        assert_eq!(progress_line(""), None);
    }

    #[test]
    fn the_log_is_followed_from_its_start_in_pieces() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, "    Starting `cargo run`\n   Compil").expect("write");
        let mut progress = Progress::new(path.clone(), true);
        progress.in_place = false;
        assert!(!progress.is_following());
        progress.follow();
        assert!(progress.is_following());
        progress.poll();
        assert_eq!(progress.partial, b"   Compil");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(b"ing foo v0.1.0\n").expect("append");
        progress.poll();
        assert!(progress.partial.is_empty());
        // Emptied under it: read from the start again.
        std::fs::write(&path, "x\n").expect("write");
        progress.poll();
        assert_eq!(progress.log.as_ref().map(|(_, read)| *read), Some(2));
        progress.finish();
        assert!(!progress.is_following());
    }
}
