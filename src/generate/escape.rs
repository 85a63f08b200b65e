//! How a value is written into each format `generate` produces, so that the format's own reader
//! gets back exactly that value as one item, or why it cannot be: a Dockerfile's exec form, a
//! systemd command line and setting, a YAML scalar, a comment, a shell word in a comment.
//!
//! Each function takes any string; the refusals are reasons (`Unfit`), which the caller turns
//! into a message naming the value and where it came from.

use std::fmt::Write as _;

/// Why a value cannot be written into a format.
pub(crate) type Unfit = String;

/// Characters that end a line for some reader (YAML 1.1 counts NEL, LS and PS as line breaks)
/// or that a person cannot see: no generated file has one raw.
fn unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

fn no_unprintable(text: &str) -> Result<(), Unfit> {
    match text.chars().find(|&c| unprintable(c)) {
        Some(c) => Err(format!(
            "it has the control character U+{:04X}, which the file cannot hold",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

// ---- Dockerfile ----

/// A Dockerfile instruction's exec form: a JSON array, which Docker runs without a shell and
/// without substituting variables. `serde_json` escapes quotes, backslashes and C0 controls; the
/// other unprintable characters become `\u` escapes too, which JSON reads back the same.
pub(crate) fn exec_form(words: &[&str]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|word| {
            let json = serde_json::Value::from(*word).to_string();
            let mut escaped = String::with_capacity(json.len());
            for c in json.chars() {
                if unprintable(c) {
                    let _ = write!(escaped, "\\u{:04x}", u32::from(c));
                } else {
                    escaped.push(c);
                }
            }
            escaped
        })
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// A file name in a `COPY` source or destination: Docker substitutes `$` variables there, reads
/// `\` as an escape, quotes as quoting and `*?[` as patterns, so only characters none of that
/// touches are taken.
pub(crate) fn copy_file_name(name: &str) -> Result<&str, Unfit> {
    no_unprintable(name)?;
    if name.is_empty() || name.chars().all(|c| c == '.') {
        return Err("it is not a file name".to_owned());
    }
    match name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '@' | '%' | ',')))
    {
        Some(c) => Err(format!(
            "`{}` has a meaning in a Dockerfile COPY (only letters, digits and `-_.+@%,` are taken)",
            c.escape_debug()
        )),
        None => Ok(name),
    }
}

/// A container image reference (`registry:5000/team/app:1.2@sha256:...`) is made of ASCII
/// letters, digits and `._-/:@`; anything else is a typo or worse, and would need quoting in
/// the `docker build` command the Dockerfile shows.
pub(crate) fn image_reference(image: &str) -> Result<(), Unfit> {
    no_unprintable(image)?;
    if image.is_empty() {
        return Err("it is empty".to_owned());
    }
    match image
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@')))
    {
        Some(c) => Err(format!(
            "`{}` cannot be part of an image reference (ASCII letters, digits and `._-/:@`)",
            c.escape_debug()
        )),
        None => Ok(()),
    }
}

// ---- systemd ----

/// The executable of an `ExecStart=` command line (systemd.service, "Command lines"): `%` is a
/// specifier, so it is doubled; whitespace splits words, so a path with whitespace, a quote or a
/// backslash is double-quoted with C escapes. `$` is refused: systemd expands variables in the
/// arguments but not in the executable, so no spelling means the same in both. The path must be
/// absolute and normalized, as systemd requires.
pub(crate) fn exec_path(path: &str) -> Result<String, Unfit> {
    no_unprintable(path)?;
    if !path.starts_with('/') {
        return Err("systemd runs only an absolute path".to_owned());
    }
    if path
        .split('/')
        .skip(1)
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("systemd refuses a path with an empty, `.` or `..` component".to_owned());
    }
    if path.contains('$') {
        return Err("`$` starts an environment variable in an ExecStart= command line".to_owned());
    }
    // PATH_MAX, with its terminating NUL.
    if path.len() >= 4096 {
        return Err("it is longer than systemd takes a path".to_owned());
    }
    let specifiers = path.replace('%', "%%");
    let needs_quotes = specifiers
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'));
    if !needs_quotes {
        return Ok(specifiers);
    }
    let mut quoted = String::from("\"");
    for c in specifiers.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted)
}

/// The value of a unit setting that takes text as it is (`Description=`,
/// `FileDescriptorName=`): `%` is a specifier, so it is doubled; there is no escape for the
/// rest, so what systemd would change is refused: whitespace at either end (trimmed) and a
/// backslash at the end (which joins the next line).
pub(crate) fn unit_text(text: &str) -> Result<String, Unfit> {
    no_unprintable(text)?;
    if text.trim() != text {
        return Err("systemd trims whitespace at either end of a value".to_owned());
    }
    if text.ends_with('\\') {
        return Err(
            "a backslash at the end of a line joins it to the next in a unit file".to_owned(),
        );
    }
    Ok(text.replace('%', "%%"))
}

// ---- YAML ----

/// A YAML double-quoted scalar: `"` and `\` escaped, and every character YAML does not take raw
/// (controls, NEL/LS/PS, which YAML 1.1 folds as line breaks, the BOM and U+FFFE/U+FFFF)
/// written as an escape. Every string reads back unchanged.
pub(crate) fn yaml_quoted(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if unprintable(c) || matches!(c, '\u{fffe}' | '\u{ffff}') => {
                let _ = write!(quoted, "\\u{:04x}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A Kubernetes object name (a DNS label) as a YAML scalar: plain, as people write names,
/// unless YAML 1.1, which Kubernetes' reader follows, would read it as a boolean or null.
pub(crate) fn yaml_name(name: &str) -> String {
    const NOT_STRINGS: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !NOT_STRINGS.contains(&name);
    if plain {
        name.to_owned()
    } else {
        yaml_quoted(name)
    }
}

// ---- comments ----

/// Text in a `#` comment line: a line break would end the comment and start a line the file's
/// reader obeys, so no control character is taken.
pub(crate) fn comment_text(text: &str) -> Result<&str, Unfit> {
    no_unprintable(text)?;
    Ok(text)
}

/// A word of a shell command shown in a comment, quoted for a POSIX shell where it needs it,
/// so the command can be pasted as it is.
pub(crate) fn shell_word(word: &str) -> Result<String, Unfit> {
    comment_text(word)?;
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '.' | '/' | ':' | '@' | '%' | '+' | ',' | '=')
        });
    if plain {
        Ok(word.to_owned())
    } else {
        Ok(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_form_is_json_without_raw_controls() {
        assert_eq!(exec_form(&["/usr/local/bin/x"]), r#"["/usr/local/bin/x"]"#);
        assert_eq!(
            exec_form(&["a\"b", "c\\d", "e\nf", "g\u{85}\u{2028}"]),
            r#"["a\"b", "c\\d", "e\nf", "g\u0085\u2028"]"#
        );
    }

    #[test]
    fn exec_paths_are_quoted_where_systemd_would_split_them() {
        assert_eq!(exec_path("/usr/local/bin/x").unwrap(), "/usr/local/bin/x");
        assert_eq!(exec_path("/opt/100%/x").unwrap(), "/opt/100%%/x");
        assert_eq!(exec_path("/opt/my app/x").unwrap(), "\"/opt/my app/x\"");
        assert_eq!(exec_path("/o/a\"b\\c").unwrap(), r#""/o/a\"b\\c""#);
        for refused in [
            "x", "/a/../b", "/a//b", "/a/./b", "/a/", "/a$b", "/a\nb", "",
        ] {
            assert!(exec_path(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn unit_text_doubles_specifiers_and_refuses_what_systemd_changes() {
        assert_eq!(unit_text("a 100% b").unwrap(), "a 100%% b");
        for refused in [" a", "a ", "a\\", "a\nb"] {
            assert!(unit_text(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn yaml_names_are_plain_unless_yaml_would_read_another_type() {
        assert_eq!(yaml_name("my-server"), "my-server");
        assert_eq!(yaml_name("yes"), "\"yes\"");
        assert_eq!(yaml_name("null"), "\"null\"");
    }

    #[test]
    fn shell_words_are_quoted_where_needed() {
        assert_eq!(shell_word("--bin-dir").unwrap(), "--bin-dir");
        assert_eq!(shell_word("/opt/my app").unwrap(), "'/opt/my app'");
        assert_eq!(shell_word("it's").unwrap(), r"'it'\''s'");
        assert_eq!(shell_word("").unwrap(), "''");
        assert!(shell_word("a\nb").is_err());
        assert!(comment_text("a\u{2028}b").is_err());
    }

    #[test]
    fn copy_file_names_are_literal() {
        assert_eq!(copy_file_name("hello-server").unwrap(), "hello-server");
        assert_eq!(copy_file_name("serveur-été").unwrap(), "serveur-été");
        for refused in ["a$b", "a b", "a*", "a\"b", "a\\b", "..", "", "a\nb"] {
            assert!(copy_file_name(refused).is_err(), "{refused:?}");
        }
    }
}
