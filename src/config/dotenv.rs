//! The `.env` file: parsed by dotenvy, with the line of each key found here because dotenvy
//! does not report lines.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::exit_codes::BadInput;

/// The variables of a `.env` file, each with the 1-based line it was set on.
#[derive(Debug)]
pub(super) struct DotEnv {
    pub(super) path: PathBuf,
    entries: HashMap<String, (String, usize)>,
}

impl DotEnv {
    /// The value and line of a variable.
    pub(super) fn get(&self, name: &str) -> Option<(&str, usize)> {
        self.entries
            .get(name)
            .map(|(value, line)| (value.as_str(), *line))
    }

    /// The names the file sets, for tests that check it sets nothing else.
    #[cfg(test)]
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// A `.env` larger than this is refused rather than read.
const DOTENV_LIMIT: u64 = 1024 * 1024;

/// Reads the `.env` file; a missing file is no file.
pub(super) fn read(path: &Path) -> Result<Option<DotEnv>, BadInput> {
    let cannot =
        |why: &dyn std::fmt::Display| BadInput(format!("cannot read `{}`: {why}", path.display()));
    // Opened without waiting, so that a FIFO in its place cannot hang a start, and read only if
    // it is a regular file of a size a `.env` can have.
    let file = match crate::os::open_without_waiting(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cannot(&e)),
    };
    let meta = file.metadata().map_err(|e| cannot(&e))?;
    if !meta.is_file() {
        let kind = crate::os::file_kind(meta.file_type());
        return Err(cannot(&format_args!("it is {kind}, not a regular file")));
    }
    if meta.len() > DOTENV_LIMIT {
        return Err(cannot(&format_args!(
            "it is {} bytes long, more than the {DOTENV_LIMIT} a `.env` may have",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, DOTENV_LIMIT + 1), &mut bytes)
        .map_err(|e| cannot(&e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.split(|&b| b == b'\n').count();
        BadInput(format!(
            "cannot read `{}` line {line}: it is not valid UTF-8",
            path.display()
        ))
    })?;
    parse(path, &text).map(Some)
}

/// Parses the text of a `.env` file. The text is read once and handed to dotenvy from memory,
/// so that the lines searched here are exactly the lines dotenvy parsed.
pub(super) fn parse(path: &Path, text: &str) -> Result<DotEnv, BadInput> {
    // dotenvy strips a byte order mark only when it loads into the process environment.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    // dotenvy takes a last line that ends in a space or a tab, without a line break after it,
    // for an open quote, and rejects it; with the line break it is read as any other line.
    let terminated;
    let text = if text.is_empty() || text.ends_with('\n') {
        text
    } else {
        terminated = format!("{text}\n");
        &terminated
    };
    let starts = entry_starts(&lines);
    let mut entries = HashMap::new();
    // Entries come in file order, so each key is searched for after the previous one: this
    // keeps repeated keys apart.
    let mut cursor = 0;
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((key, value)) => {
                let index = (cursor..lines.len())
                    .find(|&i| starts[i] && defines(lines[i], &key))
                    .unwrap_or(cursor);
                cursor = index + 1;
                // The first setting wins, as when dotenvy loads the file into a process.
                entries.entry(key).or_insert((value, index + 1));
            }
            Err(dotenvy::Error::LineParse(content, _)) => {
                return Err(unparsable(path, &lines, cursor, &content));
            }
            Err(e) => {
                return Err(BadInput(format!("cannot read `{}`: {e}", path.display())));
            }
        }
    }
    Ok(DotEnv {
        path: path.to_owned(),
        entries,
    })
}

/// For each line, whether dotenvy starts an entry there rather than read on in a quoted value
/// that an earlier line opened (where `KEY=` is only part of that value). This follows the
/// quote tracking of dotenvy's line reader: a quote opens a value that runs to the closing one,
/// across line breaks; a backslash escapes the next character, a line break included; `#` after
/// whitespace starts a comment that ends the line.
fn entry_starts(lines: &[&str]) -> Vec<bool> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum State {
        Complete,
        WhiteSpace,
        Escape,
        Strong,
        StrongEscape,
        Weak,
        WeakEscape,
    }
    let mut state = State::Complete;
    let mut starts = Vec::with_capacity(lines.len());
    for line in lines {
        starts.push(state == State::Complete);
        if state == State::Complete && line.trim_start().starts_with('#') {
            continue;
        }
        for c in line.chars().chain(['\n']) {
            state = match (state, c) {
                (State::WhiteSpace, '#') => {
                    state = State::Complete;
                    break;
                }
                (State::Complete | State::WhiteSpace, '\\') => State::Escape,
                (State::Complete | State::WhiteSpace, '"') | (State::WeakEscape, _) => State::Weak,
                (State::Complete | State::WhiteSpace, '\'') | (State::StrongEscape, _) => {
                    State::Strong
                }
                (State::Complete, c) if c.is_whitespace() && c != '\n' && c != '\r' => {
                    State::WhiteSpace
                }
                (State::Weak, '\\') => State::WeakEscape,
                (State::Strong, '\\') => State::StrongEscape,
                (State::Weak, '"')
                | (State::Strong, '\'')
                | (State::Complete | State::WhiteSpace | State::Escape, _) => State::Complete,
                (State::Weak | State::Strong, _) => state,
            };
        }
    }
    starts
}

/// Whether a line sets `key` (`KEY=`, `KEY =`, `export KEY=`), as dotenvy reads a key.
fn defines(line: &str, key: &str) -> bool {
    let line = line.trim_start();
    let without_export = line
        .strip_prefix("export")
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .map(str::trim_start);
    [Some(line), without_export].into_iter().flatten().any(|l| {
        l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

/// The error for a line dotenvy rejects. dotenvy gives the text it choked on (the line, or only
/// its value part); the line is the first one after the last good entry that holds that text,
/// else the first one there that is neither blank nor a comment.
fn unparsable(path: &Path, lines: &[&str], cursor: usize, content: &str) -> BadInput {
    let needle = content.lines().next().unwrap_or("").trim();
    let found = (!needle.is_empty())
        .then(|| (cursor..lines.len()).find(|&i| lines[i].contains(needle)))
        .flatten()
        .or_else(|| {
            (cursor..lines.len()).find(|&i| {
                let l = lines[i].trim_start();
                !l.is_empty() && !l.starts_with('#')
            })
        });
    let expected = "expected `NAME=value` (quoted if the value holds spaces), a comment or a \
                    blank line";
    match found {
        Some(i) => BadInput(format!(
            "cannot parse `{}` line {}: `{}`: {expected}",
            path.display(),
            i + 1,
            lines[i].trim_end()
        )),
        None => BadInput(format!(
            "cannot parse `{}`: `{}`: {expected}",
            path.display(),
            content.trim_end()
        )),
    }
}
