//! `cargo portguard config`: the effective configuration of the chosen package and environment,
//! each value with where it came from (a flag, an environment variable, a `.env` line, an
//! `env.<NAME>` table, the package or workspace table, or the default).
//!
//! Human output is one line a key, `key = value    (source)`, values spelled as in Cargo.toml and
//! `none` for a key without a value; `--json` gives the same as one object.

use std::fmt::Write as _;

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use crate::cli::{CommonArgs, ConfigQueryArgs};
use crate::config::{Config, Setting, Source, settings};
use crate::context::Context;
use crate::exit_codes;

/// A value as Cargo.toml spells it (`5000`, `"socket"`, `[5001, 5002]`); `none` for no value.
#[must_use]
pub(crate) fn toml_value(value: &Value) -> String {
    match value {
        Value::Null => "none".to_owned(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        // JSON's strings, numbers and booleans are TOML's.
        other => other.to_string(),
    }
}

/// Widest `key = value` the sources are aligned after.
const ALIGN_AT_MOST: usize = 40;

/// The human answer: a comment naming the package, then `key = value    (source)` lines, the
/// selected environment first; the sources line up, at least four spaces after the value.
#[must_use]
pub(crate) fn render(package: &str, manifest: &Path, config: &Config) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    if let Some(env) = &config.env_name {
        lines.push((
            format!("environment = {}", toml_value(&json!(env.value))),
            env.source.to_string(),
        ));
    }
    for setting in settings(config) {
        lines.push((
            format!("{} = {}", setting.key, toml_value(&setting.value)),
            setting.source.to_string(),
        ));
    }
    // A long value (the default fallback list) would push every source far right: it alone
    // sticks out.
    let width = lines
        .iter()
        .map(|(line, _)| line.chars().count())
        .filter(|&width| width <= ALIGN_AT_MOST)
        .max()
        .unwrap_or(0);
    let mut out = format!("# package `{package}` ({})\n", manifest.display());
    for (line, source) in lines {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{line:<width$}    ({source})");
    }
    out
}

/// The `--json` answer.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    pub(crate) package: &'a str,
    pub(crate) manifest: &'a Path,
    pub(crate) config: &'a Config,
}

impl Serialize for Report<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("package", self.package)?;
        map.serialize_entry("manifest_path", self.manifest)?;
        map.serialize_entry(
            "environment",
            &self.config.env_name.as_ref().map(|env| Entry {
                value: json!(env.value),
                source: &env.source,
            }),
        )?;
        map.serialize_entry("settings", &Settings(settings(self.config)))?;
        map.end()
    }
}

/// The settings as one object, keys in the contract's order.
struct Settings(Vec<Setting>);

impl Serialize for Settings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for setting in &self.0 {
            let entry = Entry {
                value: setting.value.clone(),
                source: &setting.source,
            };
            map.serialize_entry(setting.key, &entry)?;
        }
        map.end()
    }
}

/// `{"value": ..., "source": KIND, ...details}`: `default`; `workspace_table`, `package_table`
/// with `path`; `env_table` with `environment` and `path`; `dotenv` with `path` and `line`;
/// `environment_variable` with `variable`; `flag` with `flag`; `replaced` (a candidate key a
/// stronger table left out) with `keys`, the candidate keys that table set, and `by`, the table
/// as `{"source": KIND, ...details}`.
struct Entry<'a> {
    value: Value,
    source: &'a Source,
}

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("value", &self.value)?;
        source_fields(&mut map, self.source)?;
        map.end()
    }
}

/// A source alone, as `by` shows the table that replaced a key.
struct SourceOnly<'a>(&'a Source);

impl Serialize for SourceOnly<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        source_fields(&mut map, self.0)?;
        map.end()
    }
}

fn source_fields<M: SerializeMap>(map: &mut M, source: &Source) -> Result<(), M::Error> {
    match source {
        Source::Default => map.serialize_entry("source", "default")?,
        Source::WorkspaceTable(path) => {
            map.serialize_entry("source", "workspace_table")?;
            map.serialize_entry("path", path)?;
        }
        Source::PackageTable(path) => {
            map.serialize_entry("source", "package_table")?;
            map.serialize_entry("path", path)?;
        }
        Source::EnvTable { manifest, name } => {
            map.serialize_entry("source", "env_table")?;
            map.serialize_entry("environment", name)?;
            map.serialize_entry("path", manifest)?;
        }
        Source::DotEnv { path, line } => {
            map.serialize_entry("source", "dotenv")?;
            map.serialize_entry("path", path)?;
            map.serialize_entry("line", line)?;
        }
        Source::EnvVar(name) => {
            map.serialize_entry("source", "environment_variable")?;
            map.serialize_entry("variable", name)?;
        }
        Source::Flag(flag) => {
            map.serialize_entry("source", "flag")?;
            map.serialize_entry("flag", flag)?;
        }
        Source::Replaced { by, keys } => {
            map.serialize_entry("source", "replaced")?;
            map.serialize_entry("keys", keys)?;
            map.serialize_entry("by", &SourceOnly(by))?;
        }
    }
    Ok(())
}

/// `cargo portguard config`. Exit 0; 2 for bad input, as `run` would find it.
///
/// # Errors
/// Bad input (configuration, flags, environment, `.env`), a cargo that cannot read the project,
/// stdout gone.
pub(crate) fn config(
    context: &Context,
    common: &CommonArgs,
    args: &ConfigQueryArgs,
) -> Result<i32> {
    let crate::config::Loaded {
        project, config, ..
    } = super::load_config(context, common, args.flags())?;
    let (package, manifest) = (project.package.name.as_str(), project.manifest_path());
    let text = if args.json {
        let report = Report {
            package,
            manifest,
            config: &config,
        };
        let mut text =
            serde_json::to_string_pretty(&report).context("could not encode the configuration")?;
        text.push('\n');
        text
    } else {
        render(package, manifest, &config)
    };
    crate::output::answer(&text)?;
    Ok(exit_codes::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Handoff, PortRange, Sourced};
    use std::path::PathBuf;

    fn from<T>(value: T, source: Source) -> Sourced<T> {
        Sourced { value, source }
    }

    /// A configuration with a value from every kind of source.
    fn mixed() -> Config {
        let manifest = PathBuf::from("/src/api/Cargo.toml");
        Config {
            preferred_port: from(Some(6001), Source::Flag("--port".into())),
            fallback_ports: from(vec![6002, 6003], Source::EnvVar("FALLBACK_PORTS".into())),
            port_range: from(
                Some(PortRange {
                    start: 7000,
                    end: 7009,
                }),
                Source::DotEnv {
                    path: "/src/api/.env".into(),
                    line: 3,
                },
            ),
            handoff: from(
                Handoff::Socket,
                Source::EnvTable {
                    manifest: manifest.clone(),
                    name: "dev".into(),
                },
            ),
            health_path: from(
                Some("/health".into()),
                Source::PackageTable(manifest.clone()),
            ),
            shutdown_timeout: from(
                std::time::Duration::from_millis(2500),
                Source::WorkspaceTable(manifest.clone()),
            ),
            watch_paths: from(
                vec!["../proto".into()],
                Source::PackageTable(manifest.clone()),
            ),
            watch_ignore: from(vec!["*.tmp".into()], Source::WorkspaceTable(manifest)),
            env_name: Some(from("dev".into(), Source::Flag("--env".into()))),
            ..Config::default()
        }
    }

    #[test]
    fn every_key_of_the_contract_is_listed_once_in_order() {
        let keys: Vec<&str> = settings(&Config::default()).iter().map(|s| s.key).collect();
        assert_eq!(
            keys,
            [
                "preferred-port",
                "fallback-ports",
                "port-range",
                "max-attempts",
                "check-timeout-ms",
                "dynamic-port",
                "host",
                "handoff",
                "shutdown-timeout-ms",
                "health-path",
                "ready-timeout-ms",
                "bin",
                "watch-paths",
                "watch-ignore",
                "watch-debounce-ms",
            ]
        );
    }

    #[test]
    fn values_are_spelled_as_in_cargo_toml() {
        assert_eq!(toml_value(&json!(5000)), "5000");
        assert_eq!(toml_value(&json!([5001, 5002])), "[5001, 5002]");
        assert_eq!(toml_value(&json!([])), "[]");
        assert_eq!(toml_value(&json!("socket")), "\"socket\"");
        assert_eq!(toml_value(&json!("a\"b")), "\"a\\\"b\"");
        assert_eq!(toml_value(&json!(true)), "true");
        assert_eq!(toml_value(&Value::Null), "none");
    }

    #[test]
    fn human_output_names_each_source() {
        let text = render("api", Path::new("/src/api/Cargo.toml"), &mixed());
        let expected = "\
# package `api` (/src/api/Cargo.toml)
environment = \"dev\"              (flag --env)
preferred-port = 6001            (flag --port)
fallback-ports = [6002, 6003]    (environment variable FALLBACK_PORTS)
port-range = \"7000-7009\"         (`/src/api/.env` line 3)
max-attempts = 10                (default)
check-timeout-ms = 1000          (default)
dynamic-port = true              (default)
host = \"127.0.0.1\"               (default)
handoff = \"socket\"               (`/src/api/Cargo.toml` [...portguard.env.dev])
shutdown-timeout-ms = 2500       (`/src/api/Cargo.toml` [workspace.metadata.portguard])
health-path = \"/health\"          (`/src/api/Cargo.toml` [package.metadata.portguard])
ready-timeout-ms = 300000        (default)
bin = none                       (default)
watch-paths = [\"../proto\"]       (`/src/api/Cargo.toml` [package.metadata.portguard])
watch-ignore = [\"*.tmp\"]         (`/src/api/Cargo.toml` [workspace.metadata.portguard])
watch-debounce-ms = 50           (default)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_replaced_candidate_key_names_the_table_that_replaced_it() {
        let manifest = PathBuf::from("/src/api/Cargo.toml");
        let table = Source::EnvTable {
            manifest: manifest.clone(),
            name: "ci".into(),
        };
        let replaced = Source::Replaced {
            by: Box::new(table.clone()),
            keys: vec!["port-range"],
        };
        let config = Config {
            preferred_port: from(None, replaced.clone()),
            fallback_ports: from(Vec::new(), replaced),
            port_range: from(
                Some(PortRange {
                    start: 7000,
                    end: 7099,
                }),
                table,
            ),
            ..Config::default()
        };
        let text = render("api", &manifest, &config);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1..4],
            [
                "preferred-port = none          (replaced by port-range in \
                 `/src/api/Cargo.toml` [...portguard.env.ci])",
                "fallback-ports = []            (replaced by port-range in \
                 `/src/api/Cargo.toml` [...portguard.env.ci])",
                "port-range = \"7000-7099\"       (`/src/api/Cargo.toml` [...portguard.env.ci])",
            ]
        );
        let report = Report {
            package: "api",
            manifest: &manifest,
            config: &config,
        };
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(
            json["settings"]["preferred-port"],
            json!({
                "value": null,
                "source": "replaced",
                "keys": ["port-range"],
                "by": {
                    "source": "env_table",
                    "environment": "ci",
                    "path": "/src/api/Cargo.toml",
                },
            })
        );
        assert_eq!(json["settings"]["fallback-ports"]["value"], json!([]));
    }

    #[test]
    fn without_an_environment_there_is_no_environment_line() {
        let text = render("api", Path::new("/src/api/Cargo.toml"), &Config::default());
        assert!(!text.contains("environment"), "{text}");
        assert_eq!(text.lines().count(), 16, "{text}");
    }

    #[test]
    fn a_long_value_does_not_push_the_other_sources_away() {
        let text = render("api", Path::new("/src/api/Cargo.toml"), &Config::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "fallback-ports = [5001, 5002, 5003, 5004, 5005, 3000, 3001, 8000, 8001]    (default)"
        );
        assert_eq!(lines[1], "preferred-port = 5000          (default)");
        assert_eq!(lines[9], "shutdown-timeout-ms = 10000    (default)");
    }

    #[test]
    fn json_gives_each_value_and_its_source() {
        let config = mixed();
        let report = Report {
            package: "api",
            manifest: Path::new("/src/api/Cargo.toml"),
            config: &config,
        };
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["package"], "api");
        assert_eq!(json["manifest_path"], "/src/api/Cargo.toml");
        assert_eq!(
            json["environment"],
            json!({"value": "dev", "source": "flag", "flag": "--env"})
        );
        let settings = &json["settings"];
        assert_eq!(settings.as_object().expect("object").len(), 15);
        assert_eq!(
            settings["preferred-port"],
            json!({"value": 6001, "source": "flag", "flag": "--port"})
        );
        assert_eq!(
            settings["fallback-ports"],
            json!({"value": [6002, 6003], "source": "environment_variable", "variable": "FALLBACK_PORTS"})
        );
        assert_eq!(
            settings["port-range"],
            json!({"value": "7000-7009", "source": "dotenv", "path": "/src/api/.env", "line": 3})
        );
        assert_eq!(
            settings["handoff"],
            json!({"value": "socket", "source": "env_table", "environment": "dev", "path": "/src/api/Cargo.toml"})
        );
        assert_eq!(
            settings["health-path"],
            json!({"value": "/health", "source": "package_table", "path": "/src/api/Cargo.toml"})
        );
        assert_eq!(
            settings["shutdown-timeout-ms"],
            json!({"value": 2500, "source": "workspace_table", "path": "/src/api/Cargo.toml"})
        );
        assert_eq!(settings["bin"], json!({"value": null, "source": "default"}));
        assert_eq!(
            settings["watch-paths"],
            json!({"value": ["../proto"], "source": "package_table", "path": "/src/api/Cargo.toml"})
        );
        assert_eq!(
            settings["watch-ignore"],
            json!({"value": ["*.tmp"], "source": "workspace_table", "path": "/src/api/Cargo.toml"})
        );
        assert_eq!(
            settings["watch-debounce-ms"],
            json!({"value": 50, "source": "default"})
        );
        assert_eq!(
            settings["check-timeout-ms"],
            json!({"value": 1000, "source": "default"})
        );
    }

    #[test]
    fn json_keeps_the_contract_order_and_a_null_environment() {
        let config = Config::default();
        let report = Report {
            package: "api",
            manifest: Path::new("/src/api/Cargo.toml"),
            config: &config,
        };
        let text = serde_json::to_string(&report).expect("json");
        assert!(
            text.starts_with(
                "{\"package\":\"api\",\"manifest_path\":\"/src/api/Cargo.toml\",\
                 \"environment\":null,\"settings\":{\"preferred-port\":"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("\"watch-debounce-ms\":{\"value\":50,\"source\":\"default\"}}}"),
            "{text}"
        );
    }
}
