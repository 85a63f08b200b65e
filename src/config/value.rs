//! Parsing and checking single values, wherever they come from: a manifest (JSON, as
//! `cargo metadata` gives it), or text (an environment variable, a `.env` line, a flag).
//!
//! Every error names the culprit and the bad value and says what was expected, in one sentence.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Handoff, PortRange};
use crate::exit_codes::BadInput;

const PORT: &str = "a port number from 1 to 65535";
const PORT_LIST: &str = "a comma-separated list of port numbers from 1 to 65535";
const PORT_ARRAY: &str = "an array of port numbers from 1 to 65535";
const RANGE: &str = "an inclusive port range such as `6000-6099`, both ends from 1 to 65535 \
                     and the start not above the end";
const ATTEMPTS: &str = "an integer from 1 to 4294967295";
const HOST: &str = "an IP address such as `127.0.0.1` or `::1`, or `localhost`";
const HANDOFF: &str = "`env` or `socket`";
const HEALTH_PATH: &str = "a path starting with `/`, without spaces or control characters";
const BIN: &str = "the name of a binary target";
const BOOL: &str = "`true` or `false`";
const PATHS: &str = "an array of paths";
const PATH: &str = "a path (relative ones are relative to the package folder)";
const GLOBS: &str = "an array of glob patterns";
const GLOB: &str = "a glob pattern in gitignore syntax";

/// The longest timeout accepted, in milliseconds. Timeouts end up in `poll(2)`-style calls that
/// take an `int` of milliseconds and in `Instant` arithmetic that panics on overflow; about 24
/// days is far more than any dev server needs.
const MAX_MILLIS: u64 = i32::MAX as u64;

/// Who supplied a value, as error messages name it.
#[derive(Debug, Clone)]
pub(super) enum Culprit<'a> {
    /// A key of a portguard table: `table` is the dotted path such as
    /// `package.metadata.portguard.env.dev`.
    Key {
        table: &'a str,
        key: String,
        manifest: &'a Path,
    },
    Var(&'static str),
    DotEnv {
        name: &'static str,
        path: &'a Path,
        line: usize,
    },
    Flag(&'static str),
}

impl Culprit<'_> {
    /// The culprit for one element of an array value.
    fn element(&self, index: usize) -> Self {
        match self {
            Culprit::Key {
                table,
                key,
                manifest,
            } => Culprit::Key {
                table,
                key: format!("{key}[{index}]"),
                manifest,
            },
            other => other.clone(),
        }
    }
}

impl fmt::Display for Culprit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Culprit::Key {
                table,
                key,
                manifest,
            } => write!(f, "`{table}.{key}` in `{}`", manifest.display()),
            Culprit::Var(name) => write!(f, "{name} (environment variable)"),
            Culprit::DotEnv { name, path, line } => {
                write!(f, "{name} in `{}` line {line}", path.display())
            }
            Culprit::Flag(flag) => f.write_str(flag),
        }
    }
}

/// A value before it is checked.
#[derive(Clone, Copy)]
pub(super) enum Raw<'a> {
    Json(&'a Value),
    Text(&'a str),
}

/// The key of the one-key object cargo makes of a TOML date-time, as the `toml` crate
/// serializes one.
const DATETIME: &str = "$__toml_private_datetime";

/// The text of a TOML date-time as `cargo metadata` hands it over, if `value` is one.
fn datetime(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) if map.len() == 1 => map.get(DATETIME)?.as_str(),
        _ => None,
    }
}

/// A table, and not the object cargo makes of a date-time.
pub(super) fn table(value: &Value) -> Option<&Map<String, Value>> {
    match value {
        Value::Object(map) if datetime(value).is_none() => Some(map),
        _ => None,
    }
}

/// A manifest value as messages show it: JSON, which spells strings, numbers, booleans and
/// arrays as TOML does, except that a date-time is shown as written and `null`, which cargo
/// makes of a float that is not finite, as the `nan` or `inf` it was.
pub(super) fn written(value: &Value) -> String {
    if let Some(text) = datetime(value) {
        return text.to_owned();
    }
    match value {
        Value::Null => "nan or inf".to_owned(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(written).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{}:{}", Value::from(key.as_str()), written(value)))
                .collect();
            format!("{{{}}}", entries.join(","))
        }
        other => other.to_string(),
    }
}

impl Raw<'_> {
    /// The value as the user wrote it: strings without quotes when a string was expected.
    fn shown(&self) -> String {
        match self {
            Raw::Json(Value::String(s)) => s.clone(),
            Raw::Text(s) => (*s).to_owned(),
            Raw::Json(other) => written(other),
        }
    }

    fn invalid(&self, culprit: &Culprit<'_>, expected: &str) -> BadInput {
        invalid(&self.shown(), culprit, expected)
    }

    /// A non-negative integer; a negative one is a bad value, a float or a string a bad type.
    fn integer(&self, culprit: &Culprit<'_>, expected: &str) -> Result<u64, BadInput> {
        match self {
            Raw::Json(Value::Number(n)) => match n.as_u64() {
                Some(n) => Ok(n),
                None if n.is_i64() => Err(self.invalid(culprit, expected)),
                None => Err(wrong_type(self, culprit, expected)),
            },
            Raw::Json(_) => Err(wrong_type(self, culprit, expected)),
            Raw::Text(s) => digits(s).ok_or_else(|| self.invalid(culprit, expected)),
        }
    }

    fn string(&self, culprit: &Culprit<'_>, expected: &str) -> Result<&str, BadInput> {
        match self {
            Raw::Json(Value::String(s)) => Ok(s),
            Raw::Text(s) => Ok(s),
            Raw::Json(_) => Err(wrong_type(self, culprit, expected)),
        }
    }
}

/// A decimal integer with optional surrounding whitespace, and nothing else (no sign).
fn digits(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn invalid(shown: &str, culprit: &Culprit<'_>, expected: &str) -> BadInput {
    BadInput(format!(
        "invalid value `{shown}` for {culprit}: expected {expected}"
    ))
}

fn wrong_type(raw: &Raw<'_>, culprit: &Culprit<'_>, expected: &str) -> BadInput {
    let found = match raw {
        Raw::Json(value) if datetime(value).is_some() => "a date-time",
        Raw::Json(Value::Null) => "a floating-point number",
        Raw::Json(Value::Bool(_)) => "a boolean",
        Raw::Json(Value::Number(n)) if n.is_f64() => "a floating-point number",
        Raw::Json(Value::Number(_)) => "an integer",
        Raw::Json(Value::String(_)) | Raw::Text(_) => "a string",
        Raw::Json(Value::Array(_)) => "an array",
        Raw::Json(Value::Object(_)) => "a table",
    };
    // Show strings quoted here: the quotes are the point when a number was expected.
    let shown = match raw {
        Raw::Json(value) => written(value),
        Raw::Text(s) => format!("{s:?}"),
    };
    BadInput(format!(
        "invalid value `{shown}` for {culprit}: expected {expected}, found {found}"
    ))
}

pub(super) fn port(raw: Raw<'_>, culprit: &Culprit<'_>) -> Result<u16, BadInput> {
    let n = raw.integer(culprit, PORT)?;
    u16::try_from(n)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| raw.invalid(culprit, PORT))
}

pub(super) fn ports(raw: Raw<'_>, culprit: &Culprit<'_>) -> Result<Vec<u16>, BadInput> {
    match raw {
        Raw::Json(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| port(Raw::Json(item), &culprit.element(i)))
            .collect(),
        Raw::Json(_) => Err(wrong_type(&raw, culprit, PORT_ARRAY)),
        // The contract: an empty variable is an empty list, which turns the fallbacks off.
        Raw::Text(s) if s.trim().is_empty() => Ok(Vec::new()),
        Raw::Text(s) => s
            .split(',')
            .map(|item| {
                digits(item)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|&p| p != 0)
                    .ok_or_else(|| {
                        let expected = format!("{PORT_LIST}, and `{}` is not one", item.trim());
                        raw.invalid(culprit, &expected)
                    })
            })
            .collect(),
    }
}

/// A port range; an empty string means none, so a stronger layer can switch a range off.
pub(super) fn port_range(
    raw: Raw<'_>,
    culprit: &Culprit<'_>,
) -> Result<Option<PortRange>, BadInput> {
    let text = raw.string(culprit, RANGE)?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let end_port = |s: &str| {
        digits(s)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&p| p != 0)
    };
    text.split_once('-')
        .and_then(|(start, end)| Some((end_port(start)?, end_port(end)?)))
        .filter(|(start, end)| start <= end)
        .map(|(start, end)| Some(PortRange { start, end }))
        .ok_or_else(|| raw.invalid(culprit, RANGE))
}

pub(super) fn max_attempts(raw: Raw<'_>, culprit: &Culprit<'_>) -> Result<u32, BadInput> {
    let n = raw.integer(culprit, ATTEMPTS)?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| raw.invalid(culprit, ATTEMPTS))
}

/// A timeout in milliseconds, at least `min`.
pub(super) fn millis(raw: Raw<'_>, culprit: &Culprit<'_>, min: u64) -> Result<Duration, BadInput> {
    let expected = format!("a number of milliseconds from {min} to {MAX_MILLIS}");
    let n = raw.integer(culprit, &expected)?;
    if (min..=MAX_MILLIS).contains(&n) {
        Ok(Duration::from_millis(n))
    } else {
        Err(raw.invalid(culprit, &expected))
    }
}

pub(super) fn boolean(raw: Raw<'_>, culprit: &Culprit<'_>) -> Result<bool, BadInput> {
    match raw {
        Raw::Json(Value::Bool(b)) => Ok(*b),
        Raw::Json(_) => Err(wrong_type(&raw, culprit, BOOL)),
        Raw::Text(s) => match s.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(raw.invalid(culprit, BOOL)),
        },
    }
}

pub(super) fn host(raw: Raw<'_>, culprit: &Culprit<'_>) -> Result<IpAddr, BadInput> {
    let text = raw.string(culprit, HOST)?.trim();
    if text.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    text.parse().map_err(|_| raw.invalid(culprit, HOST))
}

pub(super) fn handoff(raw: Raw<'_>, culprit: &Culprit<'_>) -> Result<Handoff, BadInput> {
    match raw.string(culprit, HANDOFF)?.trim() {
        "env" => Ok(Handoff::Env),
        "socket" => Ok(Handoff::Socket),
        _ => Err(raw.invalid(culprit, HANDOFF)),
    }
}

/// The path goes into an HTTP request line verbatim, so a space or a line break would break
/// the request (or smuggle in a header).
pub(super) fn health_path(raw: Raw<'_>, culprit: &Culprit<'_>) -> Result<Option<String>, BadInput> {
    let text = raw.string(culprit, HEALTH_PATH)?;
    if text.starts_with('/') && !text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(Some(text.to_owned()))
    } else {
        Err(raw.invalid(culprit, HEALTH_PATH))
    }
}

pub(super) fn bin(raw: Raw<'_>, culprit: &Culprit<'_>) -> Result<Option<String>, BadInput> {
    let text = raw.string(culprit, BIN)?;
    if text.trim().is_empty() {
        Err(raw.invalid(culprit, BIN))
    } else {
        Ok(Some(text.to_owned()))
    }
}

/// The strings of an array; text (which no variable gives today) is one string.
fn strings<'a, 'c>(
    raw: Raw<'a>,
    culprit: &Culprit<'c>,
    expected: &str,
) -> Result<Vec<(Raw<'a>, Culprit<'c>)>, BadInput> {
    match raw {
        Raw::Json(Value::Array(items)) => Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| (Raw::Json(item), culprit.element(i)))
            .collect()),
        Raw::Json(_) => Err(wrong_type(&raw, culprit, expected)),
        Raw::Text(_) => Ok(vec![(raw, culprit.clone())]),
    }
}

/// `watch-paths`: paths as written; the watcher resolves relative ones.
pub(super) fn paths(raw: Raw<'_>, culprit: &Culprit<'_>) -> Result<Vec<PathBuf>, BadInput> {
    strings(raw, culprit, PATHS)?
        .into_iter()
        .map(|(item, culprit)| {
            let text = item.string(&culprit, PATH)?;
            if text.trim().is_empty() {
                Err(item.invalid(&culprit, PATH))
            } else {
                Ok(PathBuf::from(text))
            }
        })
        .collect()
}

/// `watch-ignore`: patterns the watcher reads as gitignore rules.
pub(super) fn globs(raw: Raw<'_>, culprit: &Culprit<'_>) -> Result<Vec<String>, BadInput> {
    strings(raw, culprit, GLOBS)?
        .into_iter()
        .map(|(item, culprit)| {
            let text = item.string(&culprit, GLOB)?;
            match crate::gitignore::Rules::check(text) {
                Ok(()) => Ok(text.to_owned()),
                Err(why) => Err(item.invalid(&culprit, &format!("{GLOB} ({why})"))),
            }
        })
        .collect()
}
