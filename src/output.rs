//! Human output in cargo's style: a right-aligned, coloured verb on stderr; a command's answer
//! on stdout. Every word a command says passes through here, so that a caller in this process
//! (see [`capture`]) can take it instead of the process's streams.
//!
//! The server's own stdout and stderr never pass through here; they are inherited untouched.

use std::cell::RefCell;
use std::ffi::OsString;
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

/// What a [`capture`] collects, with the settings [`init`] makes global otherwise: commands
/// captured on parallel threads must neither mix their output nor share `--quiet`.
#[derive(Debug, Default)]
struct Sink {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    quiet: bool,
    verbose: bool,
    colored: bool,
}

thread_local! {
    static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
}

/// Runs `command` with everything this thread writes through `output` collected instead of
/// written to the process's streams; returns its result, then what went to stdout and to stderr.
/// The process's streams are this thread's again afterwards, even when `command` panics.
pub(crate) fn capture<T>(command: impl FnOnce() -> T) -> (T, Vec<u8>, Vec<u8>) {
    /// Puts back what was there before, on the way out however it is taken.
    struct Restore(Option<Sink>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SINK.with(|sink| *sink.borrow_mut() = previous);
        }
    }
    let restore = Restore(SINK.with(|sink| sink.borrow_mut().replace(Sink::default())));
    let result = command();
    let taken = SINK
        .with(|sink| sink.borrow_mut().take())
        .unwrap_or_default();
    drop(restore);
    (result, taken.stdout, taken.stderr)
}

/// `f` on this thread's sink, if a [`capture`] is running.
fn with_sink<T>(f: impl FnOnce(&mut Sink) -> T) -> Option<T> {
    SINK.with(|sink| sink.borrow_mut().as_mut().map(f))
}

/// Sets colour and verbosity for the rest of the process, or of the [`capture`] under way.
///
/// `--color` wins over `CARGO_TERM_COLOR`; with neither, anstream follows `NO_COLOR`,
/// `CLICOLOR_FORCE` and whether stderr is a terminal. A capture is no terminal: it is coloured
/// only when asked for (`always`, or `CLICOLOR_FORCE` without `NO_COLOR`). `vars` is the
/// command's environment.
pub(crate) fn init(
    color: Option<Color>,
    quiet: bool,
    verbose: bool,
    vars: &dyn Fn(&str) -> Option<OsString>,
) {
    let from_cargo = vars("CARGO_TERM_COLOR")
        .and_then(|value| value.into_string().ok())
        .and_then(|value| <Color as clap::ValueEnum>::from_str(&value, true).ok());
    let color = color.or(from_cargo);
    let captured = with_sink(|sink| {
        let set = |name: &str| vars(name).filter(|value| !value.is_empty());
        sink.quiet = quiet;
        sink.verbose = verbose;
        sink.colored = match color {
            Some(Color::Always) => true,
            Some(Color::Never) => false,
            Some(Color::Auto) | None => {
                set("NO_COLOR").is_none() && set("CLICOLOR_FORCE").is_some_and(|v| v != "0")
            }
        };
    });
    if captured.is_some() {
        return;
    }
    let choice = match color {
        Some(Color::Always) => ColorChoice::Always,
        Some(Color::Never) => ColorChoice::Never,
        Some(Color::Auto) | None => ColorChoice::Auto,
    };
    choice.write_global();
    QUIET.store(quiet, Ordering::Relaxed);
    VERBOSE.store(verbose, Ordering::Relaxed);
}

fn is_quiet() -> bool {
    with_sink(|sink| sink.quiet).unwrap_or_else(|| QUIET.load(Ordering::Relaxed))
}

#[must_use]
pub(crate) fn is_verbose() -> bool {
    with_sink(|sink| sink.verbose).unwrap_or_else(|| VERBOSE.load(Ordering::Relaxed))
}

/// A command's answer (a table, JSON, a diff) on stdout, where scripts read it.
///
/// # Errors
/// When stdout is closed.
pub(crate) fn answer(text: &str) -> anyhow::Result<()> {
    if with_sink(|sink| sink.stdout.extend_from_slice(text.as_bytes())).is_some() {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|error| anyhow::anyhow!("could not write to stdout: {error}"))
}

/// A status line such as `     Running http://127.0.0.1:5000`; silenced by `--quiet`.
pub(crate) fn status(verb: &str, message: impl Display) {
    if !is_quiet() {
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
    if !is_quiet() {
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

/// Help and version on stdout, a usage error on stderr, as clap prints them.
pub(crate) fn clap_error(error: &clap::Error) {
    let captured = with_sink(|sink| {
        let rendered = if sink.colored {
            error.render().ansi().to_string()
        } else {
            error.render().to_string()
        };
        let stream = if error.use_stderr() {
            &mut sink.stderr
        } else {
            &mut sink.stdout
        };
        stream.extend_from_slice(rendered.as_bytes());
    });
    if captured.is_none() {
        // Nothing useful can be done when the stream is gone; the exit code still tells.
        let _ = error.print();
    }
}

/// Whether lines on stderr are coloured: a build's cargo is told to colour its own to match.
pub(crate) fn stderr_colored() -> bool {
    with_sink(|sink| sink.colored)
        .unwrap_or_else(|| anstream::AutoStream::choice(&std::io::stderr()) != ColorChoice::Never)
}

/// A line of another program's (a build's cargo) passed on to stderr as it is, in one write.
pub(crate) fn raw_stderr(line: &[u8]) {
    if with_sink(|sink| sink.stderr.extend_from_slice(line)).is_some() {
        return;
    }
    // Nothing useful can be done when stderr is gone; the build's outcome still tells.
    let _ = std::io::stderr().lock().write_all(line);
}

fn line(style: Style, label: &str, message: impl Display) {
    // One write for the whole line: the server and cargo share this stderr, and a line written
    // in pieces can be cut in two by theirs.
    let text = |colored: bool| {
        if colored {
            format!("{style}{label}{style:#} {message}\n")
        } else {
            format!("{label} {message}\n")
        }
    };
    // The message is formatted before the sink is borrowed, so that its `Display` may print.
    if let Some(colored) = with_sink(|sink| sink.colored) {
        let text = text(colored);
        with_sink(|sink| sink.stderr.extend_from_slice(text.as_bytes()));
        return;
    }
    let stderr = std::io::stderr();
    let text = text(anstream::AutoStream::choice(&stderr) != ColorChoice::Never);
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
