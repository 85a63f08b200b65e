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
}

/// Reads the `.env` file; a missing file is no file.
pub(super) fn read(path: &Path) -> Result<Option<DotEnv>, BadInput> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(BadInput(format!("cannot read `{}`: {e}", path.display())));
        }
    };
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
    let mut entries = HashMap::new();
    // Entries come in file order, so each key is searched for after the previous one: this
    // keeps repeated keys apart.
    let mut cursor = 0;
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((key, value)) => {
                let index = (cursor..lines.len())
                    .find(|&i| defines(lines[i], &key))
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
