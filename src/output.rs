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
pub(crate) enum Color {
    Auto,
    Always,
    Never,
}

/// Sets colour and verbosity for the rest of the process.
///
/// `--color` wins over `CARGO_TERM_COLOR`; with neither, anstream follows `NO_COLOR`,
/// `CLICOLOR_FORCE` and whether stderr is a terminal.
pub(crate) fn init(color: Option<Color>, quiet: bool, verbose: bool) {
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
pub(crate) fn is_verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// A command's answer (a table, JSON) on stdout, where scripts read it.
///
/// # Errors
/// When stdout is closed.
pub(crate) fn answer(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|error| anyhow::anyhow!("could not write to stdout: {error}"))
}

/// A status line such as `     Running http://127.0.0.1:5000`; silenced by `--quiet`.
pub(crate) fn status(verb: &str, message: impl Display) {
    if !QUIET.load(Ordering::Relaxed) {
        line(VERB, &format!("{verb:>12}"), message);
    }
}

/// A status line shown only with `--verbose`.
pub(crate) fn verbose(verb: &str, message: impl Display) {
    if is_verbose() {
        status(verb, message);
    }
}

/// `note: ...`; silenced by `--quiet`.
pub(crate) fn note(message: impl Display) {
    if !QUIET.load(Ordering::Relaxed) {
        line(NOTE, "note:", message);
    }
}

pub(crate) fn warning(message: impl Display) {
    line(WARNING, "warning:", message);
}

pub(crate) fn error(message: impl Display) {
    line(ERROR, "error:", message);
}

/// Prints an error and its chain of causes the way cargo does.
pub(crate) fn error_chain(chain: &anyhow::Error) {
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

/// Text that came from outside portguard (a process's command line, a reservation label, a
/// path) made safe to print: control characters (C0, DEL, C1) and the bidirectional overrides
/// and isolates are shown as visible escapes, so the text cannot move the cursor, retitle or
/// clear the terminal, or make what follows read in another order.
#[must_use]
pub(crate) fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => {
                use std::fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`inert`] for a path, which may also hold bytes that are not UTF-8 (shown as `�`).
#[must_use]
pub(crate) fn inert_path(path: &std::path::Path) -> String {
    inert(&path.to_string_lossy()).into_owned()
}

/// Formats as [`inert`] text: `format!("{}", Inert(label))`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inert<'a>(pub &'a str);

impl Display for Inert<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&inert(self.0))
    }
}

fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::inert;

    #[test]
    fn escapes_read_as_what_they_are() {
        assert_eq!(inert("api"), "api");
        assert_eq!(inert("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(inert("x\u{202e}y"), "x\\u{202e}y");
    }

    #[test]
    fn every_terminal_control_is_escaped() {
        assert_eq!(
            inert("\u{1b}]0;pwned\u{7}\u{1b}[2J"),
            "\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"
        );
        assert_eq!(inert("\u{7f}\u{9b}\u{85}"), "\\u{7f}\\u{9b}\\u{85}");
        assert_eq!(inert("\u{2066}a\u{2069}"), "\\u{2066}a\\u{2069}");
        assert_eq!(inert("tab\there"), "tab\\there");
    }

    #[test]
    fn printable_text_is_kept_as_it_is() {
        for text in ["", "`api` in /src/shop", "café ünïcode 日本", "a\\u{1b}"] {
            assert!(
                matches!(inert(text), std::borrow::Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }
}
