//! Cargo.toml and `.cargo/config.toml` edits through `toml_edit`, so that every byte of the
//! user's file outside what portguard adds stays as it was: comments, order, spacing.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value};

/// A TOML file being edited: its path, its text as read, and the document.
#[derive(Debug)]
pub(crate) struct LocalManifest {
    pub(crate) path: PathBuf,
    /// `None` when the file does not exist yet.
    pub(crate) original: Option<String>,
    doc: DocumentMut,
}

/// One key portguard adds to its metadata table, with the comment that explains it.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    pub(crate) key: &'static str,
    pub(crate) value: Value,
    pub(crate) comment: &'static str,
}

impl LocalManifest {
    /// Reads and parses `path`; a missing file is an empty document.
    ///
    /// # Errors
    /// When the file cannot be read (or is no regular file, or too large) or is not TOML.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let original = super::files::read_optional(path)?;
        let doc = original
            .as_deref()
            .unwrap_or_default()
            .parse::<DocumentMut>()
            .with_context(|| format!("`{}` is not valid TOML", path.display()))?;
        Ok(LocalManifest {
            path: path.to_owned(),
            original,
            doc,
        })
    }

    /// The text as it would be written now, in the file's own line endings.
    #[must_use]
    pub(crate) fn render(&self) -> String {
        same_line_endings(self.original.as_deref(), self.doc.to_string())
    }

    /// Adds `[package.metadata.portguard]` with those `settings` whose key is neither there
    /// already nor in `skip` (keys the workspace table sets, which a package value would
    /// shadow). Returns the keys added; the user's values are never changed.
    pub(crate) fn add_portguard_settings(
        &mut self,
        settings: &[Setting],
        skip: &[String],
    ) -> Vec<&'static str> {
        let Some(package) = self.doc.get_mut("package").and_then(Item::as_table_mut) else {
            return Vec::new();
        };
        let metadata = package.entry("metadata").or_insert_with(|| {
            let mut table = Table::new();
            // No `[package.metadata]` header of its own: only the portguard table shows.
            table.set_implicit(true);
            Item::Table(table)
        });
        // `metadata = { ... }` in [package] holds only inline values.
        let metadata_inline = metadata.is_inline_table();
        let Some(metadata) = metadata.as_table_like_mut() else {
            return Vec::new();
        };
        let fresh = metadata.get("portguard").is_none();
        let portguard = metadata.entry("portguard").or_insert_with(|| {
            if metadata_inline {
                return Item::Value(Value::InlineTable(InlineTable::new()));
            }
            let mut table = Table::new();
            table.decor_mut().set_prefix(
                "\n# portguard: `cargo serve-safe` runs this server on a free port, one copy at a time.\n",
            );
            Item::Table(table)
        });
        // A comment inside an inline table is not TOML.
        let commented = !portguard.is_inline_table();
        let Some(portguard) = portguard.as_table_like_mut() else {
            return Vec::new();
        };
        let mut added = Vec::new();
        for setting in settings {
            if portguard.contains_key(setting.key) || skip.iter().any(|key| key == setting.key) {
                continue;
            }
            let mut value = setting.value.clone();
            if commented {
                value
                    .decor_mut()
                    .set_suffix(format!("  # {}", setting.comment));
            }
            portguard.insert(setting.key, Item::Value(value));
            added.push(setting.key);
        }
        if fresh && added.is_empty() {
            metadata.remove("portguard");
        }
        added
    }

    /// Adds `[build-dependencies] NAME = "VERSION"` unless the package has that dependency.
    /// Returns whether it was added.
    pub(crate) fn add_build_dependency(&mut self, name: &str, version: &str) -> bool {
        let table = self
            .doc
            .entry("build-dependencies")
            .or_insert_with(|| Item::Table(Table::new()));
        let Some(table) = table.as_table_like_mut() else {
            return false;
        };
        if table.contains_key(name) {
            return false;
        }
        table.insert(name, toml_edit::value(version));
        true
    }

    /// Adds `[alias] NAME = "COMMAND"` for each alias that is missing. An alias that exists with
    /// another meaning is left alone and returned, with what it means now.
    pub(crate) fn add_aliases(
        &mut self,
        aliases: &[(&'static str, &'static str)],
    ) -> (Vec<&'static str>, Vec<(String, String)>) {
        let table = self
            .doc
            .entry("alias")
            .or_insert_with(|| Item::Table(Table::new()));
        let mut added = Vec::new();
        let mut conflicts = Vec::new();
        let Some(table) = table.as_table_like_mut() else {
            return (added, vec![("alias".to_owned(), "not a table".to_owned())]);
        };
        for &(name, command) in aliases {
            match table.get(name) {
                None => {
                    table.insert(name, toml_edit::value(command));
                    added.push(name);
                }
                Some(existing)
                    if alias_words(existing) == command.split_whitespace().collect::<Vec<_>>() => {}
                Some(existing) => {
                    conflicts.push((name.to_owned(), existing.to_string().trim().to_owned()));
                }
            }
        }
        (added, conflicts)
    }
}

/// `text` with CRLF line endings when `original` has them: the lines portguard adds must not
/// be the only ones that differ, nor turn the rest of a Windows-edited file into LF.
#[must_use]
pub(crate) fn same_line_endings(original: Option<&str>, text: String) -> String {
    if original.is_some_and(|original| original.contains("\r\n")) {
        text.replace("\r\n", "\n").replace('\n', "\r\n")
    } else {
        text
    }
}

/// An alias is a string of words or an array of them; compare the words.
fn alias_words(item: &Item) -> Vec<&str> {
    match item.as_value() {
        Some(Value::String(text)) => text.value().split_whitespace().collect(),
        Some(Value::Array(words)) => words.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A TOML array of ports, for a setting.
#[must_use]
pub(crate) fn port_array(ports: &[u16]) -> Value {
    Value::Array(ports.iter().map(|&port| i64::from(port)).collect::<Array>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> LocalManifest {
        LocalManifest {
            path: PathBuf::from("Cargo.toml"),
            original: Some(text.to_owned()),
            doc: text.parse().unwrap(),
        }
    }

    fn port_setting() -> Vec<Setting> {
        vec![
            Setting {
                key: "preferred-port",
                value: 5000.into(),
                comment: "first port tried",
            },
            Setting {
                key: "handoff",
                value: "socket".into(),
                comment: "pass the socket",
            },
        ]
    }

    /// Every line of `original` is still there, in order, unchanged: the edit only inserted.
    fn only_inserted(original: &str, edited: &str) -> bool {
        similar::TextDiff::from_lines(original, edited)
            .iter_all_changes()
            .all(|change| change.tag() != similar::ChangeTag::Delete)
    }

    #[test]
    fn adds_the_table_and_keeps_every_byte_of_the_rest() {
        let original = "# my server\n[package]\nname = \"api\"   # odd spacing\nversion=\"0.1.0\"\n\n# deps\n[dependencies]\nserde = { version = \"1\", features = [\"derive\"] } # inline\n";
        let mut edited = manifest(original);
        assert_eq!(
            edited.add_portguard_settings(&port_setting(), &[]),
            ["preferred-port", "handoff"]
        );
        let text = edited.render();
        assert!(only_inserted(original, &text), "{text}");
        assert!(
            text.contains(
                "[package.metadata.portguard]\npreferred-port = 5000  # first port tried\n"
            ),
            "{text}"
        );
        assert!(!text.contains("[package.metadata]\n"), "{text}");
        assert!(
            text.contains("\n# deps\n[dependencies]"),
            "comments stay with their table: {text}"
        );
    }

    #[test]
    fn keeps_the_users_values_and_adds_nothing_twice() {
        let original =
            "[package]\nname = \"api\"\n\n[package.metadata.portguard]\nhandoff = \"env\" # mine\n";
        let mut edited = manifest(original);
        assert_eq!(
            edited.add_portguard_settings(&port_setting(), &[]),
            ["preferred-port"]
        );
        let once = edited.render();
        assert!(once.contains("handoff = \"env\" # mine"), "{once}");
        assert!(
            edited
                .add_portguard_settings(&port_setting(), &[])
                .is_empty()
        );
        assert_eq!(edited.render(), once);
    }

    #[test]
    fn workspace_keys_are_not_shadowed() {
        let mut edited = manifest("[package]\nname = \"api\"\n");
        let added = edited.add_portguard_settings(&port_setting(), &["preferred-port".to_owned()]);
        assert_eq!(added, ["handoff"]);
    }

    #[test]
    fn aliases_with_another_meaning_are_left_alone() {
        let mut config = manifest(
            "[alias]\nstop = \"run --bin stopper\"\nstatus = [\"portguard\", \"status\"]\n",
        );
        let (added, conflicts) = config.add_aliases(&[
            ("dev-safe", "serve-safe"),
            ("stop", "portguard stop"),
            ("status", "portguard status"),
        ]);
        assert_eq!(added, ["dev-safe"]);
        assert_eq!(
            conflicts,
            [("stop".to_owned(), "\"run --bin stopper\"".to_owned())]
        );
        assert!(config.render().contains("stop = \"run --bin stopper\""));
    }
}
