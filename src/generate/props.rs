//! Property tests: whatever string goes into a generated file, the format's own reader gets
//! back that one string, or the writer refuses it; no written form holds a control character.
//!
//! The readers: `serde_json` for Docker's exec form, `yaml_serde` for YAML, and two small ones
//! written here from the documentation, for systemd (systemd.syntax and systemd.service,
//! "Command lines") and for a POSIX shell word.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::select;

use crate::config::props::cases;

use super::escape::{
    comment_text, copy_file_name, exec_form, exec_path, image_reference, shell_word, unit_text,
    yaml_name, yaml_quoted,
};

/// Characters some format reads specially, often, and any character now and then.
fn text() -> impl Strategy<Value = String> {
    const SPECIAL: [char; 27] = [
        '"', '\'', '\\', '%', '$', '{', '}', ' ', '\t', '\n', '\r', ';', '#', '/', '.', ':', '*',
        '[', '\u{85}', '\u{2028}', '\u{7f}', '\u{feff}', '\u{fffe}', 'é', '😀', 'a', '-',
    ];
    prop::collection::vec(
        prop_oneof![3 => select(SPECIAL.to_vec()), 1 => any::<char>()],
        0..16,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// Mostly absolute paths, so that the quoting is reached more often than the refusals.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        prop::collection::vec(text(), 1..4).prop_map(|parts| format!("/{}", parts.join("/"))),
    ]
}

fn raw_controls(written: &str) -> bool {
    written
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
}

// ---- a reader of systemd command lines ----

/// `%` specifiers: `%%` is a `%`; any other would be expanded, which the writer never means.
fn specifiers(line: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('%') => out.push('%'),
                other => return Err(format!("specifier %{other:?}")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// One C escape after a backslash, as systemd's unescaping reads it.
fn c_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    match chars.next() {
        Some('\\') => Ok('\\'),
        Some('"') => Ok('"'),
        Some('\'') => Ok('\''),
        Some('n') => Ok('\n'),
        Some('t') => Ok('\t'),
        Some('r') => Ok('\r'),
        Some('s') => Ok(' '),
        Some('x') => {
            let hex: String = chars.by_ref().take(2).collect();
            u8::from_str_radix(&hex, 16)
                .map(char::from)
                .map_err(|_| format!("bad \\x{hex}"))
        }
        other => Err(format!("unknown escape \\{other:?}")),
    }
}

/// systemd's splitting of a command line into words: whitespace separates words; a word may be
/// wrapped whole in double or single quotes (the closing quote followed by whitespace or the
/// end); C escapes are read inside and outside quotes.
fn systemd_words(line: &str) -> Result<Vec<String>, String> {
    let line = specifiers(line)?;
    let separator = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|&c| separator(c)).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quote".to_owned()),
                    Some(c) if c == first => break,
                    Some('\\') => word.push(c_escape(&mut chars)?),
                    Some(c) => word.push(c),
                }
            }
            if chars.peek().is_some_and(|&c| !separator(c)) {
                return Err("text after a closing quote".to_owned());
            }
        } else {
            while let Some(c) = chars.next_if(|&c| !separator(c)) {
                match c {
                    '\\' => word.push(c_escape(&mut chars)?),
                    '"' | '\'' => return Err("a quote inside a word".to_owned()),
                    c => word.push(c),
                }
            }
        }
        words.push(word);
    }
}

/// A plain unit setting's value as systemd reads it: trimmed, specifiers expanded, and a
/// trailing backslash joining the next line (which the writer never means).
fn unit_value(written: &str) -> Result<String, String> {
    if written.ends_with('\\') {
        return Err("continued".to_owned());
    }
    specifiers(written.trim())
}

// ---- a reader of shell words ----

/// One POSIX shell word made of plain characters, backslash escapes and single-quoted parts;
/// anything a shell would expand or split on is an error.
fn shell_words(written: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = written.chars().peekable();
    loop {
        while chars.next_if(|&c| c == ' ').is_some() {}
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        while let Some(c) = chars.next_if(|&c| c != ' ') {
            match c {
                '\'' => loop {
                    match chars.next() {
                        None => return Err("unterminated quote".to_owned()),
                        Some('\'') => break,
                        Some(c) => word.push(c),
                    }
                },
                '\\' => word.push(chars.next().ok_or("trailing backslash")?),
                c if c.is_ascii_alphanumeric() || "-_./:@%+,=".contains(c) => word.push(c),
                c => return Err(format!("{c:?} unquoted")),
            }
        }
        words.push(word);
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn exec_form_reads_back_as_the_same_words(words in prop::collection::vec(text(), 0..4)) {
        let written = exec_form(&words.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert!(!raw_controls(&written), "{written:?}");
        prop_assert!(!written.contains('\n'));
        let read: Vec<String> = serde_json::from_str(&written).expect("JSON");
        prop_assert_eq!(read, words);
    }

    #[test]
    fn exec_paths_read_back_as_one_word_or_are_refused(path in path()) {
        if let Ok(written) = exec_path(&path) {
            prop_assert!(!raw_controls(&written), "{written:?}");
            prop_assert_eq!(systemd_words(&written), Ok(vec![path.clone()]), "{}", written);
            prop_assert!(path.starts_with('/') && !path.contains('$'));
        }
    }

    #[test]
    fn unit_text_reads_back_or_is_refused(text in text()) {
        if let Ok(written) = unit_text(&text) {
            prop_assert!(!raw_controls(&written), "{written:?}");
            prop_assert_eq!(unit_value(&written), Ok(text));
        }
    }

    #[test]
    fn yaml_scalars_read_back_as_the_same_string(text in text()) {
        let written = yaml_quoted(&text);
        prop_assert!(!raw_controls(&written), "{written:?}");
        let read: BTreeMap<String, String> =
            yaml_serde::from_str(&format!("key: {written}\n")).expect("YAML");
        prop_assert_eq!(read.get("key"), Some(&text));
    }

    #[test]
    fn yaml_names_read_back_as_strings(name in "[a-z][a-z0-9-]{0,8}") {
        let read: BTreeMap<String, String> =
            yaml_serde::from_str(&format!("name: {}\n", yaml_name(&name))).expect("YAML");
        prop_assert_eq!(read.get("name"), Some(&name));
    }

    #[test]
    fn shell_words_read_back_as_one_word_or_are_refused(text in text()) {
        if let Ok(written) = shell_word(&text) {
            prop_assert!(!raw_controls(&written), "{written:?}");
            prop_assert_eq!(shell_words(&written), Ok(vec![text]));
        }
    }

    #[test]
    fn comments_and_docker_names_take_only_what_they_can_hold(text in text()) {
        if let Ok(shown) = comment_text(&text) {
            prop_assert!(!raw_controls(shown));
        }
        if let Ok(name) = copy_file_name(&text) {
            prop_assert!(!name.is_empty());
            prop_assert!(!name.contains(['$', '\\', '"', '\'', ' ', '*', '?', '[', '/']));
            prop_assert!(!raw_controls(name));
        }
        if image_reference(&text).is_ok() {
            prop_assert_eq!(shell_word(&text), Ok(text.clone()), "shown as it is");
        }
    }
}

#[test]
fn the_readers_read_what_systemd_and_a_shell_read() {
    assert_eq!(
        systemd_words(r#"/a "b c" 'd\"e' f\sg %%"#),
        Ok(vec!["/a", "b c", "d\"e", "f g", "%"]
            .into_iter()
            .map(String::from)
            .collect())
    );
    assert!(systemd_words("/a%n").is_err());
    assert!(systemd_words("\"/a\"b").is_err());
    assert_eq!(
        shell_words(r"'a b'\''c' d"),
        Ok(vec!["a b'c".to_owned(), "d".to_owned()])
    );
    assert!(shell_words("$(x)").is_err());
    assert_eq!(unit_value(" a%%b "), Ok("a%b".to_owned()));
}
