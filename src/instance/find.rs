//! Which instances an operating command (`status`, `stop`, `restart`, `logs`) is about, found
//! without `cargo metadata`: the nearest trusted state folder, limited to one package when `-p`
//! names it or when the command runs in a workspace member's folder (as `serve-safe` picks that
//! member).

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{InstanceFiles, InstanceName, Record, StateDir};
use crate::context::Context;
use crate::exit_codes::BadInput;

/// A manifest larger than this is not read to learn a package name.
const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;

/// Where the package limit came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Limit {
    /// `-p NAME`.
    Flag(String),
    /// The workspace member whose folder the command runs in.
    Folder(String),
}

/// The instances a command may act on.
#[derive(Debug)]
pub(crate) struct Scope {
    pub(crate) state: Option<StateDir>,
    limit: Option<Limit>,
}

/// One instance in scope, with its record when it has one.
#[derive(Debug)]
pub(crate) struct Selected {
    pub(crate) files: InstanceFiles,
    pub(crate) record: Option<Record>,
}

impl Scope {
    /// The state folder found from `--manifest-path`'s folder or the current folder
    /// (`PORTGUARD_STATE_DIR` overrides it), and the package `-p` names or whose folder this is.
    pub(crate) fn find(
        context: &Context,
        manifest_path: Option<&Path>,
        package: Option<&str>,
    ) -> Self {
        let start = match manifest_path {
            Some(manifest) => context.absolute(manifest.parent().unwrap_or(Path::new(""))),
            None => context.cwd().to_owned(),
        };
        let state = StateDir::find(&start, context.path_var("PORTGUARD_STATE_DIR"));
        let limit = match package {
            Some(name) => Some(Limit::Flag(name.to_owned())),
            None => state
                .as_ref()
                .and_then(|state| member_package(&start, state))
                .map(Limit::Folder),
        };
        Scope { state, limit }
    }

    /// Whether an instance belongs in scope, by the package its record (or its last run's
    /// word) names.
    fn admits(&self, files: &InstanceFiles, record: Option<&Record>) -> bool {
        let Some(limit) = &self.limit else {
            return true;
        };
        let package = match limit {
            Limit::Flag(name) | Limit::Folder(name) => name,
        };
        record
            .map(|record| record.package.clone())
            .or_else(|| files.read_ended().and_then(|ended| ended.package))
            .is_some_and(|recorded| recorded == *package)
    }

    /// Every instance in scope that has state, with its record.
    pub(crate) fn instances(&self) -> Vec<Selected> {
        let Some(state) = &self.state else {
            return Vec::new();
        };
        state
            .instances()
            .iter()
            .map(|name| {
                let files = state.instance(name);
                let record = files.read_record().ok();
                Selected { files, record }
            })
            .filter(|selected| self.admits(&selected.files, selected.record.as_ref()))
            .collect()
    }

    /// The instances in scope whose supervisor holds the lock.
    ///
    /// # Errors
    /// When a lock cannot be tested: an error is never taken for "not running".
    pub(crate) fn running(&self) -> Result<Vec<Selected>> {
        let mut running = Vec::new();
        for selected in self.instances() {
            if selected.files.is_running()? {
                running.push(selected);
            }
        }
        Ok(running)
    }

    /// A named instance; it must be in scope when `-p` limits it.
    ///
    /// # Errors
    /// A bad name (exit 2); a name outside the package `-p` names (exit 2).
    pub(crate) fn named(&self, name: &str) -> Result<Option<InstanceFiles>> {
        let name = InstanceName::new(name)?;
        let Some(state) = &self.state else {
            return Ok(None);
        };
        let files = state.instance(&name);
        if let Some(Limit::Flag(package)) = &self.limit {
            let record = files.read_record().ok();
            let known = record.is_some() || files.read_ended().is_some();
            if known && !self.admits(&files, record.as_ref()) {
                return Err(BadInput(format!(
                    "instance `{name}` does not belong to package `{package}`"
                ))
                .into());
            }
        }
        Ok(Some(files))
    }

    /// The one running instance a command acts on: the named one, else the only one running
    /// in scope.
    ///
    /// # Errors
    /// A bad name (exit 2), several running and none named (exit 2, listing them), a lock that
    /// cannot be tested.
    pub(crate) fn pick_running(&self, named: Option<&str>) -> Result<Option<InstanceFiles>> {
        if let Some(name) = named {
            return self.named(name);
        }
        let mut running = self.running()?;
        match running.len() {
            0 => Ok(None),
            1 => Ok(running.pop().map(|selected| selected.files)),
            _ => Err(self.ambiguous("running", &running).into()),
        }
    }

    /// The one instance whose log to show: the named one, else the only one in scope with a
    /// log.
    ///
    /// # Errors
    /// A bad name (exit 2), several logs and none named (exit 2, listing them).
    pub(crate) fn pick_log(&self, named: Option<&str>) -> Result<Option<InstanceFiles>> {
        if let Some(name) = named {
            return self.named(name);
        }
        let mut with_log: Vec<Selected> = self
            .instances()
            .into_iter()
            .filter(|selected| std::fs::symlink_metadata(&selected.files.log).is_ok())
            .collect();
        match with_log.len() {
            0 => Ok(None),
            1 => Ok(with_log.pop().map(|selected| selected.files)),
            _ => Err(self.ambiguous("with a log", &with_log).into()),
        }
    }

    fn ambiguous(&self, what: &str, choices: &[Selected]) -> BadInput {
        let listed: Vec<String> = choices
            .iter()
            .map(|selected| match &selected.record {
                Some(record) => format!("{} (package {})", selected.files.name, record.package),
                None => selected.files.name.to_string(),
            })
            .collect();
        let hint = if self.limit.is_some() {
            "name one with `--instance NAME`"
        } else {
            "name one with `--instance NAME`, or a package with `-p NAME`"
        };
        BadInput(format!(
            "several instances are {what} ({}): {hint}",
            listed.join(", ")
        ))
    }

    /// Says what the scope is limited to, for "nothing is running" answers.
    pub(crate) fn describe(&self) -> String {
        match &self.limit {
            Some(Limit::Flag(name)) => format!(" of package `{name}`"),
            Some(Limit::Folder(name)) => format!(" of package `{name}` (this folder's)"),
            None => String::new(),
        }
    }
}

/// The workspace member whose folder `start` is in: the nearest manifest with a `[package]`
/// at or above `start`, strictly below the folder that holds the state folder (the workspace
/// root, whose own commands see every instance).
fn member_package(start: &Path, state: &StateDir) -> Option<String> {
    let root = state.path().parent()?;
    if state.path().file_name()? != ".portguard" {
        // `PORTGUARD_STATE_DIR` names a folder anywhere: no workspace root to measure from.
        return None;
    }
    let start = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_owned());
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
    start
        .ancestors()
        .take_while(|dir| *dir != root && dir.starts_with(&root))
        .find_map(|dir| package_name(&dir.join("Cargo.toml")))
}

/// The `package.name` of a manifest, if it is a small regular file. Who owns it does not matter:
/// it only narrows which instances a command sees.
fn package_name(manifest: &PathBuf) -> Option<String> {
    let meta = std::fs::symlink_metadata(manifest).ok()?;
    if !meta.is_file() || meta.len() > MANIFEST_LIMIT {
        return None;
    }
    let text = std::fs::read_to_string(manifest).ok()?;
    let document: toml_edit::DocumentMut = text.parse().ok()?;
    document
        .get("package")?
        .get("name")?
        .as_str()
        .map(str::to_owned)
}
