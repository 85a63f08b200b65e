//! The environment a command runs in, read once in [`crate::app`]: the variables, the arguments
//! as given, the current folder. Everything below `app` asks this context, never the process, so
//! a command behaves the same when it is called in-process (as the tests and the `--detach`
//! re-execution do) and nothing reads a variable behind the configuration's back.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::runtime::RuntimeDir;

#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// Every variable, names that are not UTF-8 included: portguard reads none of those, but the
    /// detached supervisor it re-executes must see the same environment.
    vars: HashMap<OsString, OsString>,
    args: Vec<OsString>,
    cwd: PathBuf,
    /// Found (and created) on first use: commands that never need it never touch it.
    runtime: OnceCell<RuntimeDir>,
}

impl Context {
    /// The process's own environment, with `args` as the command line (subcommand word
    /// included, program name excluded).
    pub(crate) fn from_process(args: Vec<OsString>) -> Self {
        // A folder that was removed under us still has a meaning for messages.
        let cwd = std::env::current_dir().unwrap_or_default();
        Self::new(std::env::vars_os(), args, cwd)
    }

    /// A context made of given parts, for a command run in-process: `vars` stand for the whole
    /// environment (nothing of the process's own is added), `cwd` for the current folder.
    pub(crate) fn new(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        args: Vec<OsString>,
        cwd: PathBuf,
    ) -> Self {
        let vars = vars.into_iter().collect();
        Context {
            vars,
            args,
            cwd,
            runtime: OnceCell::new(),
        }
    }

    pub(crate) fn var(&self, name: &str) -> Option<OsString> {
        self.vars.get(OsStr::new(name)).cloned()
    }

    /// A variable that names a path; empty means unset, as for most Unix tools.
    pub(crate) fn path_var(&self, name: &str) -> Option<PathBuf> {
        self.vars
            .get(OsStr::new(name))
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    }

    /// The reader [`crate::config`] and [`crate::project`] take.
    pub(crate) fn vars(&self) -> impl Fn(&str) -> Option<OsString> + '_ {
        |name| self.var(name)
    }

    /// Every variable, for a process that must see the same environment (the detached
    /// supervisor).
    pub(crate) fn vars_os(&self) -> impl Iterator<Item = (&OsString, &OsString)> {
        self.vars.iter()
    }

    /// The arguments the command was parsed from.
    pub(crate) fn args(&self) -> &[OsString] {
        &self.args
    }

    pub(crate) fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// The private per-user runtime folder, created if needed (see [`RuntimeDir::create`]).
    ///
    /// # Errors
    /// When neither the shared location nor the fallback under the home folder can be made
    /// private to this user.
    pub(crate) fn runtime_dir(&self) -> anyhow::Result<&RuntimeDir> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime);
        }
        let runtime = RuntimeDir::create(self.path_var("XDG_RUNTIME_DIR"), self.path_var("HOME"))?;
        Ok(self.runtime.get_or_init(|| runtime))
    }

    /// `path` made absolute against the current folder.
    pub(crate) fn absolute(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.cwd.join(path)
        }
    }
}
