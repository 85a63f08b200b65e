//! One layer of configuration (a manifest table, the environment, the `.env` file, the flags):
//! the values it sets, each checked and carrying its source.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::value::{self, Culprit, Raw};
use super::{Handoff, PortRange, Source, Sourced, Warning};
use crate::exit_codes::BadInput;

/// A key of a portguard table, `env` aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    PreferredPort,
    FallbackPorts,
    PortRange,
    MaxAttempts,
    CheckTimeout,
    DynamicPort,
    Host,
    Handoff,
    ShutdownTimeout,
    HealthPath,
    ReadyTimeout,
    Bin,
    WatchPaths,
    WatchIgnore,
    WatchDebounce,
}

const KEYS: [(&str, Key); 15] = [
    ("preferred-port", Key::PreferredPort),
    ("fallback-ports", Key::FallbackPorts),
    ("port-range", Key::PortRange),
    ("max-attempts", Key::MaxAttempts),
    ("check-timeout-ms", Key::CheckTimeout),
    ("dynamic-port", Key::DynamicPort),
    ("host", Key::Host),
    ("handoff", Key::Handoff),
    ("shutdown-timeout-ms", Key::ShutdownTimeout),
    ("health-path", Key::HealthPath),
    ("ready-timeout-ms", Key::ReadyTimeout),
    ("bin", Key::Bin),
    ("watch-paths", Key::WatchPaths),
    ("watch-ignore", Key::WatchIgnore),
    ("watch-debounce-ms", Key::WatchDebounce),
];

/// The keys a portguard table may hold, `env` aside.
#[cfg(test)]
pub(super) fn key_names() -> Vec<&'static str> {
    KEYS.iter().map(|(name, _)| *name).collect()
}

/// The environment variables that override keys.
const VARS: [(&str, Key); 7] = [
    ("PORT", Key::PreferredPort),
    ("FALLBACK_PORTS", Key::FallbackPorts),
    ("PORTGUARD_PORT_RANGE", Key::PortRange),
    ("MAX_PORT_ATTEMPTS", Key::MaxAttempts),
    ("PORT_CHECK_TIMEOUT", Key::CheckTimeout),
    ("PORTGUARD_HOST", Key::Host),
    ("PORTGUARD_HANDOFF", Key::Handoff),
];

/// The values one layer sets; `None` leaves the key to weaker layers.
#[derive(Debug, Default)]
pub(super) struct Layer {
    pub(super) preferred_port: Option<Sourced<u16>>,
    pub(super) fallback_ports: Option<Sourced<Vec<u16>>>,
    pub(super) port_range: Option<Sourced<Option<PortRange>>>,
    pub(super) max_attempts: Option<Sourced<u32>>,
    pub(super) check_timeout: Option<Sourced<Duration>>,
    pub(super) dynamic_port: Option<Sourced<bool>>,
    pub(super) host: Option<Sourced<IpAddr>>,
    pub(super) handoff: Option<Sourced<Handoff>>,
    pub(super) shutdown_timeout: Option<Sourced<Duration>>,
    pub(super) health_path: Option<Sourced<Option<String>>>,
    pub(super) ready_timeout: Option<Sourced<Duration>>,
    pub(super) bin: Option<Sourced<Option<String>>>,
    pub(super) watch_paths: Option<Sourced<Vec<PathBuf>>>,
    pub(super) watch_ignore: Option<Sourced<Vec<String>>>,
    pub(super) watch_debounce: Option<Sourced<Duration>>,
}

impl Layer {
    /// Checks `raw` as the value of `key` and stores it.
    fn set(
        &mut self,
        key: Key,
        raw: Raw<'_>,
        culprit: &Culprit<'_>,
        source: &Source,
    ) -> Result<(), BadInput> {
        fn sourced<T>(value: T, source: &Source) -> Sourced<T> {
            Sourced {
                value,
                source: source.clone(),
            }
        }
        match key {
            Key::PreferredPort => {
                self.preferred_port = Some(sourced(value::port(raw, culprit)?, source));
            }
            Key::FallbackPorts => {
                self.fallback_ports = Some(sourced(value::ports(raw, culprit)?, source));
            }
            Key::PortRange => {
                self.port_range = Some(sourced(value::port_range(raw, culprit)?, source));
            }
            Key::MaxAttempts => {
                self.max_attempts = Some(sourced(value::max_attempts(raw, culprit)?, source));
            }
            Key::CheckTimeout => {
                self.check_timeout = Some(sourced(value::millis(raw, culprit, 1)?, source));
            }
            Key::DynamicPort => {
                self.dynamic_port = Some(sourced(value::boolean(raw, culprit)?, source));
            }
            Key::Host => {
                self.host = Some(sourced(value::host(raw, culprit)?, source));
            }
            Key::Handoff => {
                self.handoff = Some(sourced(value::handoff(raw, culprit)?, source));
            }
            Key::ShutdownTimeout => {
                self.shutdown_timeout = Some(sourced(value::millis(raw, culprit, 0)?, source));
            }
            Key::HealthPath => {
                self.health_path = Some(sourced(value::health_path(raw, culprit)?, source));
            }
            Key::ReadyTimeout => {
                self.ready_timeout = Some(sourced(value::millis(raw, culprit, 1)?, source));
            }
            Key::Bin => {
                self.bin = Some(sourced(value::bin(raw, culprit)?, source));
            }
            Key::WatchPaths => {
                self.watch_paths = Some(sourced(value::paths(raw, culprit)?, source));
            }
            Key::WatchIgnore => {
                self.watch_ignore = Some(sourced(value::globs(raw, culprit)?, source));
            }
            Key::WatchDebounce => {
                self.watch_debounce = Some(sourced(value::millis(raw, culprit, 0)?, source));
            }
        }
        Ok(())
    }

    /// For a table that sets any candidate key: its source and the candidate keys it sets, in
    /// the contract's order.
    pub(super) fn candidate_group(&self) -> Option<(Source, Vec<&'static str>)> {
        let set = [
            (
                "preferred-port",
                self.preferred_port.as_ref().map(|v| &v.source),
            ),
            (
                "fallback-ports",
                self.fallback_ports.as_ref().map(|v| &v.source),
            ),
            ("port-range", self.port_range.as_ref().map(|v| &v.source)),
        ];
        let source = set.iter().find_map(|(_, source)| *source)?.clone();
        let keys = set
            .iter()
            .filter(|(_, source)| source.is_some())
            .map(|(key, _)| *key)
            .collect();
        Some((source, keys))
    }

    /// The layer of variables, from the process environment or a `.env` file. `get` gives a
    /// variable's text, source and culprit.
    pub(super) fn from_vars<'a>(
        get: impl Fn(&'static str) -> Result<Option<(String, Source, Culprit<'a>)>, BadInput>,
    ) -> Result<Self, BadInput> {
        let mut layer = Layer::default();
        for (var, key) in VARS {
            if let Some((text, source, culprit)) = get(var)? {
                layer.set(key, Raw::Text(&text), &culprit, &source)?;
            }
        }
        Ok(layer)
    }

    /// The layer of command-line flags.
    pub(super) fn from_flags(port: Option<u16>, bin: Option<&str>) -> Result<Self, BadInput> {
        let mut layer = Layer::default();
        if let Some(port) = port {
            let source = Source::Flag("--port".to_owned());
            let text = port.to_string();
            layer.set(
                Key::PreferredPort,
                Raw::Text(&text),
                &Culprit::Flag("--port"),
                &source,
            )?;
        }
        if let Some(bin) = bin {
            let source = Source::Flag("--bin".to_owned());
            layer.set(Key::Bin, Raw::Text(bin), &Culprit::Flag("--bin"), &source)?;
        }
        Ok(layer)
    }
}

/// The portguard tables of one manifest: the table itself and its `env.<NAME>` tables.
#[derive(Debug, Default)]
pub(super) struct Tables {
    pub(super) base: Layer,
    pub(super) envs: BTreeMap<String, Layer>,
}

/// Which table of a manifest.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope {
    Workspace,
    Package,
}

impl Tables {
    /// Reads `portguard` out of a `package.metadata` or `workspace.metadata` value.
    pub(super) fn from_metadata(
        metadata: &Value,
        manifest: &Path,
        scope: Scope,
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<Self>, BadInput> {
        let (parent, source) = match scope {
            Scope::Workspace => (
                "workspace.metadata",
                Source::WorkspaceTable(manifest.to_owned()),
            ),
            Scope::Package => (
                "package.metadata",
                Source::PackageTable(manifest.to_owned()),
            ),
        };
        let table_name = format!("{parent}.portguard");
        let table = match metadata.get("portguard") {
            None | Some(Value::Null) => return Ok(None),
            Some(other) => value::table(other)
                .ok_or_else(|| not_a_table(other, parent, "portguard", manifest))?,
        };
        let mut tables = Tables {
            base: read_table(table, &table_name, manifest, &source, warnings)?,
            envs: BTreeMap::new(),
        };
        // `null` here was written, not left out: cargo turns `env = nan` (or `inf`) into it.
        if let Some(envs) = table.get("env") {
            let envs = value::table(envs)
                .ok_or_else(|| not_a_table(envs, &table_name, "env", manifest))?;
            let envs_name = format!("{table_name}.env");
            for (name, env) in envs {
                let env = value::table(env)
                    .ok_or_else(|| not_a_table(env, &envs_name, name, manifest))?;
                let source = Source::EnvTable {
                    manifest: manifest.to_owned(),
                    name: name.clone(),
                };
                let env_table_name = format!("{envs_name}.{name}");
                let layer = read_table(env, &env_table_name, manifest, &source, warnings)?;
                tables.envs.insert(name.clone(), layer);
            }
        }
        Ok(Some(tables))
    }
}

fn not_a_table(value: &Value, table: &str, key: &str, manifest: &Path) -> BadInput {
    let culprit = Culprit::Key {
        table,
        key: key.to_owned(),
        manifest,
    };
    value::invalid(&value::written(value), &culprit, "a table")
}

/// Reads the keys of one portguard table (`env` excepted, which the caller handles).
fn read_table(
    table: &Map<String, Value>,
    table_name: &str,
    manifest: &Path,
    source: &Source,
    warnings: &mut Vec<Warning>,
) -> Result<Layer, BadInput> {
    let is_env_table = matches!(source, Source::EnvTable { .. });
    let mut layer = Layer::default();
    for (key, value) in table {
        if key == "env" {
            if is_env_table {
                warnings.push(Warning(format!(
                    "unknown key `env` in `[{table_name}]` of `{}`; `env` tables cannot be nested",
                    manifest.display()
                )));
            }
            continue;
        }
        let Some(&(_, known)) = KEYS.iter().find(|(name, _)| name == key) else {
            warnings.push(unknown_key(key, table_name, manifest, is_env_table));
            continue;
        };
        let culprit = Culprit::Key {
            table: table_name,
            key: key.clone(),
            manifest,
        };
        layer.set(known, Raw::Json(value), &culprit, source)?;
    }
    Ok(layer)
}

fn unknown_key(key: &str, table_name: &str, manifest: &Path, is_env_table: bool) -> Warning {
    let env = (!is_env_table).then_some("env");
    let known = KEYS.iter().map(|(name, _)| *name).chain(env);
    // Close enough to be a typo: a third of the key's length, at least one edit.
    let limit = (key.chars().count() / 3).max(1);
    let nearest = known
        .map(|k| (strsim::osa_distance(key, k), k))
        .filter(|(distance, _)| *distance <= limit)
        .min();
    let mut message = format!(
        "unknown key `{key}` in `[{table_name}]` of `{}`",
        manifest.display()
    );
    if let Some((_, nearest)) = nearest {
        message = format!("{message}; did you mean `{nearest}`?");
    }
    Warning(message)
}
