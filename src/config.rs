//! The effective configuration: `[package.metadata.portguard]` and friends, resolved in the
//! contract's order of precedence, each value remembering where it came from.
//!
//! Precedence, strongest first: command-line flags, the process environment, the `.env` file at
//! the package root, the `env.<NAME>` table, the package table, the workspace table, defaults.
//! The candidate keys (`preferred-port`, `fallback-ports`, `port-range`) are one group per
//! table: the strongest table that sets any of them decides them all, and what it leaves out is
//! not inherited (someone who writes a range for CI means CI uses those ports); flags, variables
//! and `.env` still override them key by key.
//!
//! Choices where the contract is silent: an empty `PORTGUARD_ENV` (or `--env ""`) selects no
//! table, so the environment can undo a `.env` choice; an empty `port-range` or
//! `PORTGUARD_PORT_RANGE` means no range, so a stronger layer can switch a weaker one's off; when
//! the `.env` file sets a variable twice the first setting wins, as with `dotenvy::dotenv()`;
//! every `env.<NAME>` table is checked, selected or not, as cargo checks every profile.

mod dotenv;
mod layer;
#[cfg(test)]
pub(crate) mod props;
#[cfg(test)]
mod tests;
mod value;

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exit_codes::BadInput;
use layer::{Layer, Scope, Tables};
use value::Culprit;

/// The default of `preferred-port`.
pub(crate) const DEFAULT_PORT: u16 = 5000;

/// How the chosen port reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Handoff {
    /// The server gets `PORT` and binds it itself.
    Env,
    /// portguard binds and passes the listening socket at fd 3 (systemd protocol).
    Socket,
}

/// An inclusive port range such as `6000-6099`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortRange {
    pub(crate) start: u16,
    pub(crate) end: u16,
}

/// Where a configuration value came from, for messages and `cargo portguard config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Default,
    /// `[workspace.metadata.portguard]` in this manifest.
    WorkspaceTable(PathBuf),
    /// `[package.metadata.portguard]` in this manifest.
    PackageTable(PathBuf),
    /// `[package.metadata.portguard.env.<name>]` (or the workspace's) in this manifest.
    EnvTable {
        manifest: PathBuf,
        name: String,
    },
    /// A line of a `.env` file.
    DotEnv {
        path: PathBuf,
        line: usize,
    },
    /// A variable of the process environment.
    EnvVar(String),
    /// A command-line flag such as `--port`.
    Flag(String),
    /// No value: the table `by` set the candidate keys `keys` and not this one, and the group
    /// (`preferred-port`, `fallback-ports`, `port-range`) is replaced as a whole, so what a weaker
    /// table or the default had here does not count.
    Replaced {
        by: Box<Source>,
        keys: Vec<&'static str>,
    },
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sourced<T> {
    pub(crate) value: T,
    pub(crate) source: Source,
}

impl<T> Sourced<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Sourced<U> {
        Sourced {
            value: f(self.value),
            source: self.source,
        }
    }
}

/// The resolved configuration of one server package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    /// `None` when a table set the other candidate keys and not this one.
    pub(crate) preferred_port: Sourced<Option<u16>>,
    pub(crate) fallback_ports: Sourced<Vec<u16>>,
    pub(crate) port_range: Sourced<Option<PortRange>>,
    pub(crate) max_attempts: Sourced<u32>,
    pub(crate) check_timeout: Sourced<Duration>,
    pub(crate) dynamic_port: Sourced<bool>,
    pub(crate) host: Sourced<IpAddr>,
    pub(crate) handoff: Sourced<Handoff>,
    pub(crate) shutdown_timeout: Sourced<Duration>,
    pub(crate) health_path: Sourced<Option<String>>,
    pub(crate) ready_timeout: Sourced<Duration>,
    pub(crate) bin: Sourced<Option<String>>,
    /// `watch-paths` as written: relative ones are relative to the package folder (see
    /// [`Config::watch_paths`]).
    pub(crate) watch_paths: Sourced<Vec<PathBuf>>,
    /// `watch-ignore`: gitignore-syntax patterns, each checked.
    pub(crate) watch_ignore: Sourced<Vec<String>>,
    pub(crate) watch_debounce: Sourced<Duration>,
    /// The selected `env.<NAME>` table, if any.
    pub(crate) env_name: Option<Sourced<String>>,
}

/// Everything configuration is made of, gathered by the caller so that resolution is pure.
pub(crate) struct Inputs<'a> {
    /// `[workspace.metadata.portguard]` (the whole `workspace.metadata` value) and its manifest.
    pub(crate) workspace_metadata: Option<(&'a serde_json::Value, &'a Path)>,
    /// `package.metadata` (the whole value) and the package's manifest.
    pub(crate) package_metadata: Option<(&'a serde_json::Value, &'a Path)>,
    /// The `.env` file to read, if it exists (`<package root>/.env`).
    pub(crate) dotenv: Option<&'a Path>,
    /// Reads a variable of the process environment.
    pub(crate) vars: &'a dyn Fn(&str) -> Option<OsString>,
    /// `--env NAME`.
    pub(crate) env_flag: Option<&'a str>,
    /// `--port N`.
    pub(crate) port_flag: Option<u16>,
    /// `--bin NAME`.
    pub(crate) bin_flag: Option<&'a str>,
}

// By hand because `vars` is a closure, which has no `Debug`.
impl fmt::Debug for Inputs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inputs")
            .field("workspace_metadata", &self.workspace_metadata)
            .field("package_metadata", &self.package_metadata)
            .field("dotenv", &self.dotenv)
            .field("env_flag", &self.env_flag)
            .field("port_flag", &self.port_flag)
            .field("bin_flag", &self.bin_flag)
            .finish_non_exhaustive()
    }
}

/// A problem that does not stop the start, such as an unknown key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Warning(pub String);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Handoff::Env => "env",
            Handoff::Socket => "socket",
        })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::WorkspaceTable(path) => {
                write!(f, "`{}` [workspace.metadata.portguard]", path.display())
            }
            Source::PackageTable(path) => {
                write!(f, "`{}` [package.metadata.portguard]", path.display())
            }
            Source::EnvTable { manifest, name } => {
                write!(f, "`{}` [...portguard.env.{name}]", manifest.display())
            }
            Source::DotEnv { path, line } => write!(f, "`{}` line {line}", path.display()),
            Source::EnvVar(name) => write!(f, "environment variable {name}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Replaced { by, keys } => {
                write!(f, "replaced by {} in {by}", keys.join(" and "))
            }
        }
    }
}

impl Default for Config {
    /// The contract's defaults, every value with [`Source::Default`].
    fn default() -> Self {
        fn default<T>(value: T) -> Sourced<T> {
            Sourced {
                value,
                source: Source::Default,
            }
        }
        Config {
            preferred_port: default(Some(DEFAULT_PORT)),
            fallback_ports: default(vec![5001, 5002, 5003, 5004, 5005, 3000, 3001, 8000, 8001]),
            port_range: default(None),
            max_attempts: default(10),
            check_timeout: default(Duration::from_secs(1)),
            dynamic_port: default(true),
            host: default(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            handoff: default(Handoff::Env),
            shutdown_timeout: default(Duration::from_secs(10)),
            health_path: default(None),
            ready_timeout: default(Duration::from_mins(5)),
            bin: default(None),
            watch_paths: default(Vec::new()),
            watch_ignore: default(Vec::new()),
            watch_debounce: default(Duration::from_millis(50)),
            env_name: None,
        }
    }
}

impl Config {
    /// The ports to try, in order: the preferred port, the fallback ports, then the range;
    /// each port once (where it first appears), at most `max_attempts` of them.
    #[must_use]
    pub(crate) fn candidates(&self) -> Vec<u16> {
        let limit = usize::try_from(self.max_attempts.value).unwrap_or(usize::MAX);
        let range = self
            .port_range
            .value
            .map(|range| range.start..=range.end)
            .into_iter()
            .flatten();
        let mut seen = HashSet::new();
        self.preferred_port
            .value
            .into_iter()
            .chain(self.fallback_ports.value.iter().copied())
            .chain(range)
            .filter(|&port| seen.insert(port))
            .take(limit)
            .collect()
    }

    /// `watch-paths`, relative ones joined to the package folder `package_root`.
    #[must_use]
    pub(crate) fn watch_paths(&self, package_root: &Path) -> Vec<PathBuf> {
        self.watch_paths
            .value
            .iter()
            .map(|path| package_root.join(path))
            .collect()
    }

    /// The first candidate, the port a server gets when it is free; `None` when there is no
    /// candidate at all (every start takes a port from the OS).
    #[must_use]
    pub(crate) fn first_port(&self) -> Option<u16> {
        self.candidates().first().copied()
    }
}

/// One key of the configuration, its value as JSON, and where the value came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Setting {
    pub(crate) key: &'static str,
    pub(crate) value: serde_json::Value,
    pub(crate) source: Source,
}

/// Every key of `[package.metadata.portguard]`, in the order the contract lists them.
#[must_use]
pub(crate) fn settings(config: &Config) -> Vec<Setting> {
    fn setting<T>(
        key: &'static str,
        sourced: &Sourced<T>,
        value: impl Fn(&T) -> serde_json::Value,
    ) -> Setting {
        Setting {
            key,
            value: value(&sourced.value),
            source: sourced.source.clone(),
        }
    }
    let millis = |duration: &std::time::Duration| serde_json::json!(duration.as_millis());
    vec![
        setting("preferred-port", &config.preferred_port, |v| {
            serde_json::json!(v)
        }),
        setting("fallback-ports", &config.fallback_ports, |v| {
            serde_json::json!(v)
        }),
        setting("port-range", &config.port_range, |v| {
            serde_json::json!(v.map(|range| range.to_string()))
        }),
        setting("max-attempts", &config.max_attempts, |v| {
            serde_json::json!(v)
        }),
        setting("check-timeout-ms", &config.check_timeout, millis),
        setting("dynamic-port", &config.dynamic_port, |v| {
            serde_json::json!(v)
        }),
        setting("host", &config.host, |v| serde_json::json!(v.to_string())),
        setting("handoff", &config.handoff, |v| {
            serde_json::json!(v.to_string())
        }),
        setting("shutdown-timeout-ms", &config.shutdown_timeout, millis),
        setting("health-path", &config.health_path, |v| serde_json::json!(v)),
        setting("ready-timeout-ms", &config.ready_timeout, millis),
        setting("bin", &config.bin, |v| serde_json::json!(v)),
        setting("watch-paths", &config.watch_paths, |v| {
            serde_json::json!(
                v.iter()
                    .map(|path| path.to_string_lossy())
                    .collect::<Vec<_>>()
            )
        }),
        setting("watch-ignore", &config.watch_ignore, |v| {
            serde_json::json!(v)
        }),
        setting("watch-debounce-ms", &config.watch_debounce, millis),
    ]
}

/// What a command that runs or inspects the server works with: cargo, the project, and its
/// configuration with every layer applied.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) cargo: std::path::PathBuf,
    pub(crate) project: crate::project::Project,
    pub(crate) config: Config,
}

/// The flags that take part in the configuration's precedence.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flags<'a> {
    pub(crate) env: Option<&'a str>,
    pub(crate) port: Option<u16>,
    pub(crate) bin: Option<&'a str>,
}

/// Reads the project named by `--manifest-path` and `-p` and resolves its configuration from
/// every layer (tables, `.env`, variables, `flags`); prints the warnings. `cache` is the private
/// folder where cargo's answer may be kept.
///
/// # Errors
/// Bad input of any kind, and a cargo that cannot read the project.
pub(crate) fn load(
    cwd: &Path,
    vars: &dyn Fn(&str) -> Option<OsString>,
    manifest_path: Option<&Path>,
    package: Option<&str>,
    flags: Flags<'_>,
    cache: Option<&crate::runtime::RuntimeDir>,
) -> anyhow::Result<Loaded> {
    let (cargo, project) = crate::project::from_options(cwd, manifest_path, package, vars, cache)?;
    let dotenv = project.package_root().join(".env");
    let (config, warnings) = resolve(&Inputs {
        workspace_metadata: Some((&project.workspace_metadata, &project.workspace_manifest)),
        package_metadata: Some((&project.package.metadata, project.manifest_path())),
        dotenv: Some(&dotenv),
        vars,
        env_flag: flags.env,
        port_flag: flags.port,
        bin_flag: flags.bin,
    })?;
    for warning in warnings {
        crate::output::warning(warning);
    }
    Ok(Loaded {
        cargo,
        project,
        config,
    })
}

/// The configuration as Cargo.toml alone gives it (the package, workspace and `env.NAME`
/// tables): what `init` and `generate` write follows the manifest, not the environment or the
/// `.env` of the machine they run on. Prints the warnings.
///
/// # Errors
/// As [`resolve`].
pub(crate) fn from_manifests(
    project: &crate::project::Project,
    env_flag: Option<&str>,
    bin_flag: Option<&str>,
) -> Result<Config, BadInput> {
    let (config, warnings) = resolve(&Inputs {
        workspace_metadata: Some((&project.workspace_metadata, &project.workspace_manifest)),
        package_metadata: Some((&project.package.metadata, project.manifest_path())),
        dotenv: None,
        vars: &|_| None,
        env_flag,
        port_flag: None,
        bin_flag,
    })?;
    for warning in warnings {
        crate::output::warning(warning);
    }
    Ok(config)
}

/// Resolves the configuration from its layers (see the module documentation for the order).
///
/// Every layer present is checked, also where a stronger one overrides it: bad input never
/// starts anything. Unknown keys are warnings.
///
/// # Errors
/// [`BadInput`] naming the source (manifest and key, variable, `.env` line or flag) and the bad
/// value: a value out of range or of the wrong type, a malformed list or range, an unknown
/// `--env`/`PORTGUARD_ENV`, a variable that is not unicode, a `.env` line that cannot be parsed.
pub(crate) fn resolve(inputs: &Inputs<'_>) -> Result<(Config, Vec<Warning>), BadInput> {
    let mut warnings = Vec::new();
    let mut tables = |metadata: Option<(&serde_json::Value, &Path)>, scope| {
        metadata.map_or(Ok(None), |(metadata, manifest)| {
            Tables::from_metadata(metadata, manifest, scope, &mut warnings)
        })
    };
    let workspace = tables(inputs.workspace_metadata, Scope::Workspace)?.unwrap_or_default();
    let package = tables(inputs.package_metadata, Scope::Package)?.unwrap_or_default();

    let dotenv = inputs.dotenv.map(dotenv::read).transpose()?.flatten();
    let dotenv_layer = dotenv.as_ref().map_or(Ok(Layer::default()), dotenv_layer)?;
    let var_layer = Layer::from_vars(|name| {
        Ok(var(inputs, name)?
            .map(|text| (text, Source::EnvVar(name.to_owned()), Culprit::Var(name))))
    })?;
    let flag_layer = Layer::from_flags(inputs.port_flag, inputs.bin_flag)?;

    let env_name = select_env(inputs, dotenv.as_ref(), &package, &workspace)?;
    let overrides = [&flag_layer, &var_layer, &dotenv_layer];
    let mut tables = Vec::new();
    if let Some(name) = &env_name {
        tables.extend(package.envs.get(&name.value));
        tables.extend(workspace.envs.get(&name.value));
    }
    tables.extend([&package.base, &workspace.base]);
    let layers: Vec<&Layer> = overrides
        .iter()
        .copied()
        .chain(tables.iter().copied())
        .collect();
    // The strongest table with a candidate key decides them all; the defaults count only when
    // no table sets one.
    let group = tables.iter().enumerate().find_map(|(at, table)| {
        table
            .candidate_group()
            .map(|(source, keys)| (at, source, keys))
    });

    let defaults = Config::default();
    let config = Config {
        preferred_port: candidate(
            &overrides,
            &tables,
            group.as_ref(),
            |l| l.preferred_port.as_ref().map(|p| p.clone().map(Some)),
            defaults.preferred_port,
            None,
        ),
        fallback_ports: candidate(
            &overrides,
            &tables,
            group.as_ref(),
            |l| l.fallback_ports.clone(),
            defaults.fallback_ports,
            Vec::new(),
        ),
        port_range: candidate(
            &overrides,
            &tables,
            group.as_ref(),
            |l| l.port_range.clone(),
            defaults.port_range,
            None,
        ),
        max_attempts: pick(&layers, |l| l.max_attempts.as_ref(), defaults.max_attempts),
        check_timeout: pick(
            &layers,
            |l| l.check_timeout.as_ref(),
            defaults.check_timeout,
        ),
        dynamic_port: pick(&layers, |l| l.dynamic_port.as_ref(), defaults.dynamic_port),
        host: pick(&layers, |l| l.host.as_ref(), defaults.host),
        handoff: pick(&layers, |l| l.handoff.as_ref(), defaults.handoff),
        shutdown_timeout: pick(
            &layers,
            |l| l.shutdown_timeout.as_ref(),
            defaults.shutdown_timeout,
        ),
        health_path: pick(&layers, |l| l.health_path.as_ref(), defaults.health_path),
        ready_timeout: pick(
            &layers,
            |l| l.ready_timeout.as_ref(),
            defaults.ready_timeout,
        ),
        bin: pick(&layers, |l| l.bin.as_ref(), defaults.bin),
        watch_paths: pick(&layers, |l| l.watch_paths.as_ref(), defaults.watch_paths),
        watch_ignore: pick(&layers, |l| l.watch_ignore.as_ref(), defaults.watch_ignore),
        watch_debounce: pick(
            &layers,
            |l| l.watch_debounce.as_ref(),
            defaults.watch_debounce,
        ),
        env_name,
    };
    Ok((config, warnings))
}

/// The layer of the variables a `.env` file sets.
fn dotenv_layer(dotenv: &dotenv::DotEnv) -> Result<Layer, BadInput> {
    Layer::from_vars(|name| {
        Ok(dotenv.get(name).map(|(text, line)| {
            let source = Source::DotEnv {
                path: dotenv.path.clone(),
                line,
            };
            let culprit = Culprit::DotEnv {
                name,
                path: &dotenv.path,
                line,
            };
            (text.to_owned(), source, culprit)
        }))
    })
}

/// A candidate key: from the strongest flag, variable or `.env` line that sets it, else from
/// the table that decides the group (`group`: its place in `tables`, its source and the keys it
/// sets), else the default. A key that table leaves out is `unset`; its source names that table
/// when a weaker table or the default had a value there, and is the default otherwise (nothing
/// was replaced).
fn candidate<T: PartialEq>(
    overrides: &[&Layer],
    tables: &[&Layer],
    group: Option<&(usize, Source, Vec<&'static str>)>,
    field: impl Fn(&Layer) -> Option<Sourced<T>>,
    default: Sourced<T>,
    unset: T,
) -> Sourced<T> {
    if let Some(value) = overrides.iter().find_map(|layer| field(layer)) {
        return value;
    }
    let Some((at, by, keys)) = group else {
        return default;
    };
    if let Some(value) = field(tables[*at]) {
        return value;
    }
    let weaker_sets_it = tables[at + 1..].iter().any(|table| field(table).is_some());
    let source = if weaker_sets_it || default.value != unset {
        Source::Replaced {
            by: Box::new(by.clone()),
            keys: keys.clone(),
        }
    } else {
        Source::Default
    };
    Sourced {
        value: unset,
        source,
    }
}

/// The value of the strongest layer that sets it.
fn pick<T: Clone>(
    layers: &[&Layer],
    field: impl Fn(&Layer) -> Option<&Sourced<T>>,
    default: Sourced<T>,
) -> Sourced<T> {
    layers
        .iter()
        .find_map(|layer| field(layer))
        .cloned()
        .unwrap_or(default)
}

/// A variable of the process environment, which must be unicode.
fn var(inputs: &Inputs<'_>, name: &'static str) -> Result<Option<String>, BadInput> {
    (inputs.vars)(name)
        .map(|text| {
            text.into_string().map_err(|text| {
                value::invalid(
                    &text.to_string_lossy(),
                    &Culprit::Var(name),
                    "valid unicode",
                )
            })
        })
        .transpose()
}

/// The `env.<NAME>` table chosen by `--env`, else `PORTGUARD_ENV` (environment, then `.env`).
/// An empty name chooses none, so that `PORTGUARD_ENV=` can undo a `.env` choice.
fn select_env(
    inputs: &Inputs<'_>,
    dotenv: Option<&dotenv::DotEnv>,
    package: &Tables,
    workspace: &Tables,
) -> Result<Option<Sourced<String>>, BadInput> {
    const VAR: &str = "PORTGUARD_ENV";
    // Read even when the flag wins: a variable that is not unicode is an error anyway.
    let from_var = var(inputs, VAR)?;
    let chosen = if let Some(flag) = inputs.env_flag {
        Sourced {
            value: flag.to_owned(),
            source: Source::Flag("--env".to_owned()),
        }
    } else if let Some(text) = from_var {
        Sourced {
            value: text,
            source: Source::EnvVar(VAR.to_owned()),
        }
    } else if let Some(dotenv) = dotenv
        && let Some((text, line)) = dotenv.get(VAR)
    {
        Sourced {
            value: text.to_owned(),
            source: Source::DotEnv {
                path: dotenv.path.clone(),
                line,
            },
        }
    } else {
        return Ok(None);
    };
    let name = chosen.value.trim();
    if name.is_empty() {
        return Ok(None);
    }
    if package.envs.contains_key(name) || workspace.envs.contains_key(name) {
        return Ok(Some(Sourced {
            value: name.to_owned(),
            source: chosen.source,
        }));
    }
    let from = match &chosen.source {
        Source::Flag(flag) => flag.clone(),
        Source::EnvVar(name) => format!("the {name} environment variable"),
        Source::DotEnv { path, line } => format!("{VAR} in `{}` line {line}", path.display()),
        other => other.to_string(),
    };
    let known: BTreeSet<&str> = package
        .envs
        .keys()
        .chain(workspace.envs.keys())
        .map(String::as_str)
        .collect();
    let known = if known.is_empty() {
        "none are defined".to_owned()
    } else {
        known.into_iter().collect::<Vec<_>>().join(", ")
    };
    Err(BadInput(format!(
        "unknown environment `{name}` (from {from}); known environments: {known}"
    )))
}
