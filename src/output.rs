//! Human output in cargo's style: a right-aligned, coloured verb on stderr.
//!
//! The server's own stdout and stderr never pass through here; they are inherited untouched.

use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use anstream::ColorChoice;
use anstyle::{AnsiColor, Style};

static QUIET: AtomicBool = AtomicBool::new(false);
static VERBOSE: AtomicBool = AtomicBool::new(false);

const VERB: Style = AnsiColor::Green.on_default().bold();
const NOTE: Style = AnsiColor::Cyan.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
const ERROR: Style = AnsiColor::Red.on_default().bold();

/// `--color` as cargo spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// Sets colour and verbosity for the rest of the process.
///
/// `--color` wins over `CARGO_TERM_COLOR`; with neither, anstream follows `NO_COLOR`,
/// `CLICOLOR_FORCE` and whether stderr is a terminal.
pub fn init(color: Option<Color>, quiet: bool, verbose: bool) {
    let from_cargo = std::env::var("CARGO_TERM_COLOR")
        .ok()
        .and_then(|value| <Color as clap::ValueEnum>::from_str(&value, true).ok());
    let choice = match color.or(from_cargo) {
        Some(Color::Always) => ColorChoice::Always,
        Some(Color::Never) => ColorChoice::Never,
        Some(Color::Auto) | None => ColorChoice::Auto,
    };
    choice.write_global();
    QUIET.store(quiet, Ordering::Relaxed);
    VERBOSE.store(verbose, Ordering::Relaxed);
}

#[must_use]
pub fn is_verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// A command's answer (a table, JSON) on stdout, where scripts read it.
///
/// # Errors
/// When stdout is closed.
pub fn answer(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|error| anyhow::anyhow!("could not write to stdout: {error}"))
}

/// A status line such as `     Running http://127.0.0.1:5000`; silenced by `--quiet`.
pub fn status(verb: &str, message: impl Display) {
    if !QUIET.load(Ordering::Relaxed) {
        line(VERB, &format!("{verb:>12}"), message);
    }
}

/// A status line shown only with `--verbose`.
pub fn verbose(verb: &str, message: impl Display) {
    if is_verbose() {
        status(verb, message);
    }
}

/// `note: ...`; silenced by `--quiet`.
pub fn note(message: impl Display) {
    if !QUIET.load(Ordering::Relaxed) {
        line(NOTE, "note:", message);
    }
}

pub fn warning(message: impl Display) {
    line(WARNING, "warning:", message);
}

pub fn error(message: impl Display) {
    line(ERROR, "error:", message);
}

/// Prints an error and its chain of causes the way cargo does.
pub fn error_chain(chain: &anyhow::Error) {
    error(chain);
    for cause in chain.chain().skip(1) {
        line(ERROR, "\nCaused by:\n ", cause);
    }
}

fn line(style: Style, label: &str, message: impl Display) {
    let stderr = std::io::stderr();
    let colored = anstream::AutoStream::choice(&stderr) != ColorChoice::Never;
    // One write for the whole line: the server and cargo share this stderr, and a line written
    // in pieces can be cut in two by theirs.
    let text = if colored {
        format!("{style}{label}{style:#} {message}\n")
    } else {
        format!("{label} {message}\n")
    };
    // Nothing useful can be done when stderr is gone; the exit code still tells the story.
    let _ = stderr.lock().write_all(text.as_bytes());
}
