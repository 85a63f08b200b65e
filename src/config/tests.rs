use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Config, Handoff, Inputs, PortRange, Source, Sourced, Warning, resolve};

const WS: &str = "/w/Cargo.toml";
const PKG: &str = "/p/Cargo.toml";

/// One resolution's inputs; `workspace` and `package` are the `portguard` tables.
#[derive(Default)]
struct Case {
    workspace: Option<Value>,
    package: Option<Value>,
    dotenv: Option<&'static str>,
    vars: Vec<(&'static str, OsString)>,
    env_flag: Option<&'static str>,
    port_flag: Option<u16>,
    bin_flag: Option<&'static str>,
}

impl Case {
    fn ws(mut self, table: Value) -> Self {
        self.workspace = Some(table);
        self
    }
    fn pkg(mut self, table: Value) -> Self {
        self.package = Some(table);
        self
    }
    fn dotenv(mut self, text: &'static str) -> Self {
        self.dotenv = Some(text);
        self
    }
    fn var(mut self, name: &'static str, value: &str) -> Self {
        self.vars.push((name, value.into()));
        self
    }

    /// Resolves, with the `.env` file (if any) in a fresh temporary folder.
    fn run(&self) -> (Result<(Config, Vec<Warning>), String>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let dotenv_path = dir.path().join(".env");
        if let Some(text) = self.dotenv {
            std::fs::write(&dotenv_path, text).unwrap();
        }
        let workspace = self.workspace.clone().map(|t| json!({ "portguard": t }));
        let package = self.package.clone().map(|t| json!({ "portguard": t }));
        let vars: HashMap<&str, OsString> = self.vars.iter().cloned().collect();
        let lookup = |name: &str| vars.get(name).cloned();
        let inputs = Inputs {
            workspace_metadata: workspace.as_ref().map(|v| (v, Path::new(WS))),
            package_metadata: package.as_ref().map(|v| (v, Path::new(PKG))),
            dotenv: Some(&dotenv_path),
            vars: &lookup,
            env_flag: self.env_flag,
            port_flag: self.port_flag,
            bin_flag: self.bin_flag,
        };
        (resolve(&inputs).map_err(|e| e.0), dotenv_path)
    }

    fn ok(&self) -> Config {
        let (config, warnings) = self.run().0.unwrap();
        assert_eq!(warnings, vec![]);
        config
    }

    fn warnings(&self) -> Vec<String> {
        let (_, warnings) = self.run().0.unwrap();
        warnings.into_iter().map(|w| w.to_string()).collect()
    }

    fn err(&self) -> String {
        match self.run().0 {
            Ok((config, _)) => panic!("expected an error, got {config:?}"),
            Err(message) => message,
        }
    }
}

fn ws_src() -> Source {
    Source::WorkspaceTable(WS.into())
}
fn pkg_src() -> Source {
    Source::PackageTable(PKG.into())
}
fn env_src(manifest: &str, name: &str) -> Source {
    Source::EnvTable {
        manifest: manifest.into(),
        name: name.into(),
    }
}
fn sourced<T>(value: T, source: Source) -> Sourced<T> {
    Sourced { value, source }
}
fn dotenv_line(config_source: &Source) -> usize {
    match config_source {
        Source::DotEnv { path, line } => {
            assert!(path.ends_with(".env"), "{path:?}");
            *line
        }
        other => panic!("expected a .env source, got {other:?}"),
    }
}

// ---- defaults and layers ----

#[test]
fn defaults() {
    let config = Case::default().ok();
    assert_eq!(config, Config::default());
    assert_eq!(config.preferred_port, sourced(Some(5000), Source::Default));
    assert_eq!(
        config.fallback_ports.value,
        [5001, 5002, 5003, 5004, 5005, 3000, 3001, 8000, 8001]
    );
    assert_eq!(config.port_range.value, None);
    assert_eq!(config.max_attempts.value, 10);
    assert_eq!(config.check_timeout.value, Duration::from_secs(1));
    assert!(config.dynamic_port.value);
    assert_eq!(config.host.value, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(config.handoff.value, Handoff::Env);
    assert_eq!(config.shutdown_timeout.value, Duration::from_secs(10));
    assert_eq!(config.health_path.value, None);
    assert_eq!(config.ready_timeout.value, Duration::from_mins(5));
    assert_eq!(config.bin.value, None);
    assert_eq!(config.watch_paths.value, Vec::<PathBuf>::new());
    assert_eq!(config.watch_ignore.value, Vec::<String>::new());
    assert_eq!(config.watch_debounce.value, Duration::from_millis(50));
    assert_eq!(config.env_name, None);
}

#[test]
fn watch_keys_take_the_strongest_table() {
    let config = Case::default()
        .ws(json!({
            "watch-paths": ["../shared"],
            "watch-ignore": ["*.tmp"],
            "watch-debounce-ms": 300,
        }))
        .pkg(json!({
            "watch-ignore": ["fixtures/", "!fixtures/keep.rs"],
            "env": { "dev": { "watch-debounce-ms": 0 } },
        }))
        .ok();
    assert_eq!(
        config.watch_paths,
        sourced(vec![PathBuf::from("../shared")], ws_src())
    );
    assert_eq!(
        config.watch_ignore,
        sourced(
            vec!["fixtures/".to_owned(), "!fixtures/keep.rs".to_owned()],
            pkg_src()
        )
    );
    assert_eq!(
        config.watch_debounce,
        sourced(Duration::from_millis(300), ws_src())
    );
    assert_eq!(
        config.watch_paths(Path::new("/p")),
        [PathBuf::from("/p/../shared")]
    );
    let mut case = Case::default().pkg(json!({
        "watch-debounce-ms": 50,
        "env": { "dev": { "watch-debounce-ms": 0, "watch-paths": ["/abs/proto"] } },
    }));
    case.env_flag = Some("dev");
    let config = case.ok();
    assert_eq!(
        config.watch_debounce,
        sourced(Duration::ZERO, env_src(PKG, "dev"))
    );
    assert_eq!(
        config.watch_paths(Path::new("/p")),
        [PathBuf::from("/abs/proto")]
    );
}

#[test]
fn a_bad_watch_ignore_pattern_names_the_key_the_value_and_the_table() {
    let message = Case::default()
        .pkg(json!({ "env": { "dev": { "watch-ignore": ["*.tmp", "src/a**b"] } } }))
        .err();
    assert_mentions(
        &message,
        &[
            "invalid value `src/a**b`",
            "`package.metadata.portguard.env.dev.watch-ignore[1]` in `/p/Cargo.toml`",
            "a glob pattern",
        ],
    );
}

#[test]
fn metadata_without_portguard_is_no_table() {
    let metadata = json!({ "other-tool": { "x": 1 } });
    let null = Value::Null;
    let lookup = |_: &str| None;
    let inputs = Inputs {
        workspace_metadata: Some((&null, Path::new(WS))),
        package_metadata: Some((&metadata, Path::new(PKG))),
        dotenv: None,
        vars: &lookup,
        env_flag: None,
        port_flag: None,
        bin_flag: None,
    };
    let (config, warnings) = resolve(&inputs).unwrap();
    assert_eq!(config, Config::default());
    assert!(warnings.is_empty());
    assert_eq!(Case::default().pkg(Value::Null).ok(), Config::default());
}

#[test]
fn every_key_from_the_package_table() {
    let config = Case::default()
        .pkg(json!({
            "preferred-port": 4000,
            "fallback-ports": [4001, 4002],
            "port-range": "6000-6099",
            "max-attempts": 3,
            "check-timeout-ms": 250,
            "dynamic-port": false,
            "host": "::1",
            "handoff": "socket",
            "shutdown-timeout-ms": 0,
            "health-path": "/healthz?full=1",
            "ready-timeout-ms": 60000,
            "bin": "server",
        }))
        .ok();
    let p = pkg_src();
    assert_eq!(config.preferred_port, sourced(Some(4000), p.clone()));
    assert_eq!(config.fallback_ports, sourced(vec![4001, 4002], p.clone()));
    let range = PortRange {
        start: 6000,
        end: 6099,
    };
    assert_eq!(config.port_range, sourced(Some(range), p.clone()));
    assert_eq!(config.max_attempts, sourced(3, p.clone()));
    assert_eq!(
        config.check_timeout,
        sourced(Duration::from_millis(250), p.clone())
    );
    assert_eq!(config.dynamic_port, sourced(false, p.clone()));
    assert_eq!(
        config.host,
        sourced(IpAddr::V6(Ipv6Addr::LOCALHOST), p.clone())
    );
    assert_eq!(config.handoff, sourced(Handoff::Socket, p.clone()));
    assert_eq!(config.shutdown_timeout, sourced(Duration::ZERO, p.clone()));
    assert_eq!(
        config.health_path,
        sourced(Some("/healthz?full=1".into()), p.clone())
    );
    assert_eq!(
        config.ready_timeout,
        sourced(Duration::from_mins(1), p.clone())
    );
    assert_eq!(config.bin, sourced(Some("server".into()), p));
}

#[test]
fn each_layer_overrides_the_one_below() {
    // Each layer sets preferred-port and the layers below it; the strongest one present wins.
    let ws = json!({ "preferred-port": 4001, "env": { "dev": { "preferred-port": 4003 } } });
    let pkg = json!({ "preferred-port": 4002, "env": { "dev": { "preferred-port": 4004 } } });
    let port = |case: &Case| case.ok().preferred_port;

    let case = Case::default().ws(json!({ "preferred-port": 4001 }));
    assert_eq!(port(&case), sourced(Some(4001), ws_src()));
    let case = case.pkg(json!({ "preferred-port": 4002 }));
    assert_eq!(port(&case), sourced(Some(4002), pkg_src()));

    // Selected, the workspace's env table beats the package table...
    let case = Case {
        env_flag: Some("dev"),
        ..Case::default()
    }
    .ws(ws.clone())
    .pkg(json!({ "preferred-port": 4002 }));
    assert_eq!(port(&case), sourced(Some(4003), env_src(WS, "dev")));
    // ...and the package's env table beats the workspace's.
    let case = case.pkg(pkg.clone());
    assert_eq!(port(&case), sourced(Some(4004), env_src(PKG, "dev")));

    let case = case.dotenv("# comment\nPORT=4005\n");
    let config = case.ok();
    assert_eq!(config.preferred_port.value, Some(4005));
    assert_eq!(dotenv_line(&config.preferred_port.source), 2);

    let case = case.var("PORT", "4006");
    assert_eq!(
        port(&case),
        sourced(Some(4006), Source::EnvVar("PORT".into()))
    );

    let case = Case {
        port_flag: Some(4007),
        ..case
    };
    assert_eq!(
        port(&case),
        sourced(Some(4007), Source::Flag("--port".into()))
    );
}

#[test]
fn layers_merge_key_by_key() {
    let config = Case {
        env_flag: Some("dev"),
        bin_flag: Some("api"),
        ..Case::default()
    }
    .ws(json!({ "host": "0.0.0.0", "max-attempts": 2, "env": { "dev": { "handoff": "socket" } } }))
    .pkg(json!({ "bin": "web", "max-attempts": 4, "env": { "dev": { "health-path": "/up" } } }))
    .dotenv("PORTGUARD_PORT_RANGE=7000-7001\n")
    .var("FALLBACK_PORTS", "")
    .ok();
    assert_eq!(
        config.host,
        sourced(IpAddr::V4(Ipv4Addr::UNSPECIFIED), ws_src())
    );
    assert_eq!(config.max_attempts, sourced(4, pkg_src()));
    assert_eq!(config.handoff, sourced(Handoff::Socket, env_src(WS, "dev")));
    assert_eq!(
        config.health_path,
        sourced(Some("/up".into()), env_src(PKG, "dev"))
    );
    assert_eq!(
        config.bin,
        sourced(Some("api".into()), Source::Flag("--bin".into()))
    );
    assert_eq!(
        config.port_range.value,
        Some(PortRange {
            start: 7000,
            end: 7001
        })
    );
    assert_eq!(dotenv_line(&config.port_range.source), 1);
    assert_eq!(
        config.fallback_ports,
        sourced(vec![], Source::EnvVar("FALLBACK_PORTS".into()))
    );
    assert_eq!(
        config.env_name,
        Some(sourced("dev".into(), Source::Flag("--env".into())))
    );
}

#[test]
fn every_environment_variable() {
    let config = Case::default()
        .pkg(json!({ "port-range": "6000-6099" }))
        .var("PORT", " 5050 ")
        .var("FALLBACK_PORTS", "5051, 5052 ,5053")
        .var("PORTGUARD_PORT_RANGE", "")
        .var("MAX_PORT_ATTEMPTS", "7")
        .var("PORT_CHECK_TIMEOUT", "300")
        .var("PORTGUARD_HOST", "localhost")
        .var("PORTGUARD_HANDOFF", "socket")
        .ok();
    let var = |name: &str| Source::EnvVar(name.into());
    assert_eq!(config.preferred_port, sourced(Some(5050), var("PORT")));
    assert_eq!(
        config.fallback_ports,
        sourced(vec![5051, 5052, 5053], var("FALLBACK_PORTS"))
    );
    // An empty range switches off a range from a weaker layer.
    assert_eq!(
        config.port_range,
        sourced(None, var("PORTGUARD_PORT_RANGE"))
    );
    assert_eq!(config.max_attempts, sourced(7, var("MAX_PORT_ATTEMPTS")));
    assert_eq!(
        config.check_timeout,
        sourced(Duration::from_millis(300), var("PORT_CHECK_TIMEOUT"))
    );
    assert_eq!(
        config.host,
        sourced(IpAddr::V4(Ipv4Addr::LOCALHOST), var("PORTGUARD_HOST"))
    );
    assert_eq!(
        config.handoff,
        sourced(Handoff::Socket, var("PORTGUARD_HANDOFF"))
    );
}

#[test]
fn env_table_selected_by_variable_and_flag_wins() {
    let ws =
        json!({ "env": { "ci": { "preferred-port": 7100 }, "dev": { "preferred-port": 7200 } } });
    let case = Case::default().ws(ws).var("PORTGUARD_ENV", "ci");
    let config = case.ok();
    assert_eq!(config.preferred_port.value, Some(7100));
    let var = Source::EnvVar("PORTGUARD_ENV".into());
    assert_eq!(config.env_name, Some(sourced("ci".into(), var)));

    let case = Case {
        env_flag: Some("dev"),
        ..case
    };
    assert_eq!(case.ok().preferred_port.value, Some(7200));
}

#[test]
fn env_table_selected_by_dotenv_and_empty_variable_deselects() {
    let ws = json!({ "env": { "ci": { "preferred-port": 7100 } } });
    let case = Case::default().ws(ws).dotenv("\nPORTGUARD_ENV=ci\n");
    let config = case.ok();
    assert_eq!(config.preferred_port.value, Some(7100));
    let name = config.env_name.unwrap();
    assert_eq!(name.value, "ci");
    assert_eq!(dotenv_line(&name.source), 2);

    let config = case.var("PORTGUARD_ENV", "").ok();
    assert_eq!(config.env_name, None);
    assert_eq!(config.preferred_port.value, Some(5000));
}

// ---- .env syntax ----

#[test]
fn dotenv_comments_quotes_export() {
    let config = Case::default()
        .dotenv(
            "# portguard settings\n\
             \n\
             export PORT=6001\n\
             FALLBACK_PORTS=\"7001, 7002\" # inline comment\n\
             PORTGUARD_HOST='::1'\n\
             DATABASE_URL=postgres://localhost/db\n\
             MAX_PORT_ATTEMPTS = 4\n\
             PORT=9999\n",
        )
        .ok();
    assert_eq!(config.preferred_port.value, Some(6001));
    assert_eq!(dotenv_line(&config.preferred_port.source), 3);
    assert_eq!(config.fallback_ports.value, [7001, 7002]);
    assert_eq!(dotenv_line(&config.fallback_ports.source), 4);
    assert_eq!(config.host.value, IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(dotenv_line(&config.host.source), 5);
    assert_eq!(config.max_attempts.value, 4);
    assert_eq!(dotenv_line(&config.max_attempts.source), 7);
}

#[test]
fn dotenv_byte_order_mark_and_crlf() {
    let config = Case::default()
        .dotenv("\u{feff}PORT=6002\r\nPORTGUARD_HANDOFF=socket\r\n")
        .ok();
    assert_eq!(config.preferred_port.value, Some(6002));
    assert_eq!(dotenv_line(&config.preferred_port.source), 1);
    assert_eq!(config.handoff.value, Handoff::Socket);
    assert_eq!(dotenv_line(&config.handoff.source), 2);
}

#[test]
fn dotenv_line_of_a_key_after_a_multiline_value() {
    let config = Case::default()
        .dotenv("KEY=\"first\nsecond\"\nPORT=6003\n")
        .ok();
    assert_eq!(config.preferred_port.value, Some(6003));
    assert_eq!(dotenv_line(&config.preferred_port.source), 3);
}

#[test]
fn dotenv_key_inside_a_multiline_value_is_not_its_line() {
    let config = Case::default()
        .dotenv("SCRIPT=\"set -e\nPORT=1\n\"\nPORT=6004\n")
        .ok();
    assert_eq!(config.preferred_port.value, Some(6004));
    assert_eq!(dotenv_line(&config.preferred_port.source), 4);
}

#[test]
fn dotenv_last_line_with_trailing_space_and_no_line_break() {
    let config = Case::default().dotenv("A=1\nPORT=6005 ").ok();
    assert_eq!(config.preferred_port.value, Some(6005));
    assert_eq!(dotenv_line(&config.preferred_port.source), 2);
    // Also when that line is blank.
    let config = Case::default().dotenv("PORT=6006\n\t").ok();
    assert_eq!(config.preferred_port.value, Some(6006));
}

#[test]
fn missing_dotenv_is_no_layer() {
    assert_eq!(Case::default().ok(), Config::default());
}

// ---- bad input ----

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    assert!(message.starts_with(char::is_lowercase), "{message}");
    assert!(!message.ends_with('.'), "{message}");
}

#[test]
// Long only because rustfmt spreads the table of cases over many lines.
#[allow(clippy::too_many_lines)]
fn bad_manifest_values() {
    let cases: &[(Value, &str, &str, &str)] = &[
        (
            json!({ "preferred-port": 0 }),
            "preferred-port",
            "`0`",
            "from 1 to 65535",
        ),
        (
            json!({ "preferred-port": 70000 }),
            "preferred-port",
            "`70000`",
            "from 1 to 65535",
        ),
        (
            json!({ "preferred-port": -1 }),
            "preferred-port",
            "`-1`",
            "from 1 to 65535",
        ),
        (
            json!({ "preferred-port": "5000" }),
            "preferred-port",
            "`\"5000\"`",
            "found a string",
        ),
        (
            json!({ "preferred-port": 50.5 }),
            "preferred-port",
            "`50.5`",
            "found a floating",
        ),
        (
            json!({ "fallback-ports": [5001, 0] }),
            "fallback-ports[1]",
            "`0`",
            "port number",
        ),
        (
            json!({ "fallback-ports": "5001,5002" }),
            "fallback-ports",
            "5001,5002",
            "an array",
        ),
        (
            json!({ "port-range": "6099-6000" }),
            "port-range",
            "`6099-6000`",
            "6000-6099",
        ),
        (
            json!({ "port-range": "abc" }),
            "port-range",
            "`abc`",
            "6000-6099",
        ),
        (
            json!({ "port-range": "6000-" }),
            "port-range",
            "`6000-`",
            "6000-6099",
        ),
        (
            json!({ "port-range": "0-10" }),
            "port-range",
            "`0-10`",
            "6000-6099",
        ),
        (
            json!({ "port-range": 6000 }),
            "port-range",
            "`6000`",
            "found an integer",
        ),
        (
            json!({ "max-attempts": 0 }),
            "max-attempts",
            "`0`",
            "from 1",
        ),
        (
            json!({ "max-attempts": 5_000_000_000_u64 }),
            "max-attempts",
            "`5000000000`",
            "from 1",
        ),
        (
            json!({ "check-timeout-ms": 0 }),
            "check-timeout-ms",
            "`0`",
            "milliseconds from 1",
        ),
        (
            json!({ "shutdown-timeout-ms": -1 }),
            "shutdown-timeout-ms",
            "`-1`",
            "from 0",
        ),
        (
            json!({ "ready-timeout-ms": 1e3 }),
            "ready-timeout-ms",
            "`1000.0`",
            "milliseconds",
        ),
        (
            json!({ "dynamic-port": "yes" }),
            "dynamic-port",
            "`\"yes\"`",
            "`true` or `false`",
        ),
        (
            json!({ "host": "my-laptop" }),
            "host",
            "`my-laptop`",
            "an IP address",
        ),
        (json!({ "host": 127 }), "host", "`127`", "an IP address"),
        (
            json!({ "handoff": "pipe" }),
            "handoff",
            "`pipe`",
            "`env` or `socket`",
        ),
        (
            json!({ "health-path": "health" }),
            "health-path",
            "`health`",
            "starting with `/`",
        ),
        (
            json!({ "health-path": "/a b" }),
            "health-path",
            "`/a b`",
            "starting with `/`",
        ),
        (json!({ "bin": "" }), "bin", "``", "binary target"),
        (
            json!({ "watch-paths": "proto" }),
            "watch-paths",
            "`\"proto\"`",
            "an array of paths",
        ),
        (
            json!({ "watch-paths": ["proto", 3] }),
            "watch-paths[1]",
            "`3`",
            "a path",
        ),
        (
            json!({ "watch-paths": [""] }),
            "watch-paths[0]",
            "``",
            "a path",
        ),
        (
            json!({ "watch-ignore": [true] }),
            "watch-ignore[0]",
            "`true`",
            "a glob pattern",
        ),
        (
            json!({ "watch-ignore": ["bad["] }),
            "watch-ignore[0]",
            "`bad[`",
            "a glob pattern",
        ),
        (
            json!({ "watch-debounce-ms": -1 }),
            "watch-debounce-ms",
            "`-1`",
            "milliseconds from 0",
        ),
    ];
    for (table, key, value, expected) in cases {
        let message = Case::default().pkg(table.clone()).err();
        let culprit = format!("`package.metadata.portguard.{key}` in `{PKG}`");
        assert_mentions(&message, &["invalid value", &culprit, value, expected]);
    }
    let message = Case::default().ws(json!({ "preferred-port": 0 })).err();
    assert_eq!(
        message,
        "invalid value `0` for `workspace.metadata.portguard.preferred-port` in \
         `/w/Cargo.toml`: expected a port number from 1 to 65535"
    );
}

#[test]
fn bad_tables() {
    let message = Case::default().pkg(json!(5)).err();
    assert_mentions(
        &message,
        &[
            "`package.metadata.portguard` in `/p/Cargo.toml`",
            "`5`",
            "a table",
        ],
    );
    let message = Case::default().ws(json!({ "env": ["dev"] })).err();
    assert_mentions(
        &message,
        &[
            "`workspace.metadata.portguard.env`",
            "`[\"dev\"]`",
            "a table",
        ],
    );
    let message = Case::default().pkg(json!({ "env": { "dev": 1 } })).err();
    assert_mentions(
        &message,
        &["`package.metadata.portguard.env.dev`", "`1`", "a table"],
    );
    let message = Case::default()
        .pkg(json!({ "env": { "dev": { "preferred-port": 0 } } }))
        .err();
    assert_mentions(
        &message,
        &["`package.metadata.portguard.env.dev.preferred-port`", "`0`"],
    );
}

/// cargo hands a TOML float that is not finite (`nan`, `inf`) over as `null`, and a date-time
/// as a one-key object.
#[test]
fn non_finite_floats_and_date_times_in_the_manifest() {
    let message = Case::default().pkg(json!({ "preferred-port": null })).err();
    assert_eq!(
        message,
        "invalid value `nan or inf` for `package.metadata.portguard.preferred-port` in \
         `/p/Cargo.toml`: expected a port number from 1 to 65535, found a floating-point number"
    );
    let message = Case::default()
        .ws(json!({ "fallback-ports": [5001, null] }))
        .err();
    assert_mentions(
        &message,
        &[
            "`workspace.metadata.portguard.fallback-ports[1]`",
            "`nan or inf`",
        ],
    );
    let message = Case::default().pkg(json!({ "env": null })).err();
    assert_mentions(
        &message,
        &[
            "`package.metadata.portguard.env`",
            "`nan or inf`",
            "a table",
        ],
    );

    let datetime = |text: &str| json!({ "$__toml_private_datetime": text });
    let message = Case::default()
        .pkg(json!({ "host": datetime("07:32:00") }))
        .err();
    assert_eq!(
        message,
        "invalid value `07:32:00` for `package.metadata.portguard.host` in `/p/Cargo.toml`: \
         expected an IP address such as `127.0.0.1` or `::1`, or `localhost`, found a date-time"
    );
    let message = Case::default()
        .pkg(json!({ "fallback-ports": [[datetime("1979-05-27")]] }))
        .err();
    assert_mentions(&message, &["`[1979-05-27]`", "found an array"]);
    let message = Case::default()
        .pkg(json!({ "env": { "dev": datetime("1979-05-27") } }))
        .err();
    assert_mentions(
        &message,
        &[
            "`package.metadata.portguard.env.dev`",
            "`1979-05-27`",
            "a table",
        ],
    );
    let message = Case::default().ws(datetime("1979-05-27")).err();
    assert_mentions(
        &message,
        &["`workspace.metadata.portguard`", "`1979-05-27`", "a table"],
    );
}

#[test]
fn bad_environment_variables() {
    assert_eq!(
        Case::default().var("PORT", "abc").err(),
        "invalid value `abc` for PORT (environment variable): expected a port number from 1 to 65535"
    );
    let cases: &[(&str, &str, &str)] = &[
        ("PORT", "0", "port number"),
        ("PORT", "70000", "port number"),
        ("PORT", "-1", "port number"),
        ("PORT", "", "port number"),
        ("FALLBACK_PORTS", "5001,,5002", "comma-separated"),
        ("FALLBACK_PORTS", "5001;5002", "`5001;5002` is not one"),
        ("FALLBACK_PORTS", "5001, abc", "`abc` is not one"),
        ("PORTGUARD_PORT_RANGE", "6000-", "6000-6099"),
        ("PORTGUARD_PORT_RANGE", "6099-6000", "6000-6099"),
        ("MAX_PORT_ATTEMPTS", "0", "from 1"),
        ("PORT_CHECK_TIMEOUT", "1s", "milliseconds"),
        ("PORTGUARD_HOST", "example.com", "an IP address"),
        ("PORTGUARD_HANDOFF", "fd", "`env` or `socket`"),
    ];
    for (name, value, expected) in cases {
        let message = Case::default().var(name, value).err();
        let culprit = format!("{name} (environment variable)");
        assert_mentions(&message, &[&culprit, &format!("`{value}`"), expected]);
    }
}

#[test]
fn bad_flags() {
    let message = Case {
        port_flag: Some(0),
        ..Case::default()
    }
    .err();
    assert_eq!(
        message,
        "invalid value `0` for --port: expected a port number from 1 to 65535"
    );
    let message = Case {
        bin_flag: Some(""),
        ..Case::default()
    }
    .err();
    assert_mentions(&message, &["for --bin", "binary target"]);
}

#[cfg(unix)]
#[test]
fn variable_that_is_not_unicode() {
    use std::os::unix::ffi::OsStringExt;
    for name in ["PORT", "PORTGUARD_ENV"] {
        let mut case = Case::default();
        case.vars.push((name, OsString::from_vec(vec![b'5', 0xff])));
        let message = case.err();
        let culprit = format!("{name} (environment variable)");
        assert_mentions(&message, &[&culprit, "`5\u{fffd}`", "valid unicode"]);
    }
}

#[test]
fn bad_dotenv_value_names_the_line() {
    let (result, path) = Case::default()
        .dotenv("# settings\nOTHER=1\nPORT=abc\n")
        .run();
    let message = result.unwrap_err();
    assert_eq!(
        message,
        format!(
            "invalid value `abc` for PORT in `{}` line 3: expected a port number from 1 to 65535",
            path.display()
        )
    );
}

#[test]
fn unparsable_dotenv_lines() {
    let cases: &[(&str, usize, &str)] = &[
        ("PORT=5000\nPORT 5001\n", 2, "PORT 5001"),
        ("A=1\n\n# c\nPORT=a b\n", 4, "PORT=a b"),
        ("A=1\n-PORT=1\n", 2, "-PORT=1"),
        ("A=1\nPORT=\"5000\nB=2\n", 2, "PORT=\"5000"),
        ("A=1\nB=\\q\n", 2, "B=\\q"),
    ];
    for (text, line, shown) in cases {
        let (result, path) = Case::default().dotenv(text).run();
        let message = result.unwrap_err();
        let at = format!("cannot parse `{}` line {line}: `{shown}`", path.display());
        assert_mentions(&message, &[&at, "`NAME=value`"]);
    }
}

#[test]
fn dotenv_that_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    std::fs::write(&path, b"A=1\nPORT=5\xff\n").unwrap();
    let message = super::dotenv::read(&path).unwrap_err().0;
    assert_mentions(&message, &[".env` line 2", "not valid UTF-8"]);
}

#[test]
fn weaker_layers_are_checked_too() {
    let message = Case::default()
        .pkg(json!({ "preferred-port": 0 }))
        .var("PORT", "5000")
        .err();
    assert_mentions(
        &message,
        &["package.metadata.portguard.preferred-port", "`0`"],
    );
    // An env table that is not selected is checked as well.
    let message = Case::default()
        .ws(json!({ "env": { "ci": { "port-range": "1-" } } }))
        .err();
    assert_mentions(
        &message,
        &["workspace.metadata.portguard.env.ci.port-range", "`1-`"],
    );
}

#[test]
fn unknown_environment() {
    let case = Case {
        env_flag: Some("staging"),
        ..Case::default()
    };
    assert_eq!(
        case.err(),
        "unknown environment `staging` (from --env); known environments: none are defined"
    );
    let case = case
        .ws(json!({ "env": { "dev": {}, "ci": {} } }))
        .pkg(json!({ "env": { "dev": {} } }));
    assert_eq!(
        case.err(),
        "unknown environment `staging` (from --env); known environments: ci, dev"
    );
    let message = Case::default().var("PORTGUARD_ENV", "prod").err();
    assert_mentions(&message, &["`prod`", "PORTGUARD_ENV environment variable"]);
    let (result, path) = Case::default().dotenv("PORTGUARD_ENV=prod\n").run();
    let at = format!("PORTGUARD_ENV in `{}` line 1", path.display());
    assert_mentions(&result.unwrap_err(), &["`prod`", &at]);
}

// ---- warnings ----

#[test]
fn unknown_keys_are_warnings_with_suggestions() {
    let warnings = Case::default()
        .pkg(json!({ "prefered-port": 1, "colour": "red", "env": { "dev": { "max_attempts": 2, "env": {} } } }))
        .ws(json!({ "hots": "::1" }))
        .warnings();
    assert_eq!(
        warnings,
        [
            "unknown key `hots` in `[workspace.metadata.portguard]` of `/w/Cargo.toml`; did you mean `host`?",
            "unknown key `colour` in `[package.metadata.portguard]` of `/p/Cargo.toml`",
            "unknown key `prefered-port` in `[package.metadata.portguard]` of `/p/Cargo.toml`; did you mean `preferred-port`?",
            "unknown key `env` in `[package.metadata.portguard.env.dev]` of `/p/Cargo.toml`; `env` tables cannot be nested",
            "unknown key `max_attempts` in `[package.metadata.portguard.env.dev]` of `/p/Cargo.toml`; did you mean `max-attempts`?",
        ]
    );
}

#[test]
fn unknown_key_does_not_hide_known_ones() {
    let (config, warnings) = Case::default()
        .pkg(json!({ "preferred-port": 4000, "prot": 1 }))
        .run()
        .0
        .unwrap();
    assert_eq!(config.preferred_port.value, Some(4000));
    assert_eq!(warnings.len(), 1);
}

// ---- candidates ----

fn with_ports(preferred: u16, fallbacks: &[u16], range: Option<(u16, u16)>, max: u32) -> Config {
    let mut config = Config::default();
    config.preferred_port.value = Some(preferred);
    config.fallback_ports.value = fallbacks.to_vec();
    config.port_range.value = range.map(|(start, end)| PortRange { start, end });
    config.max_attempts.value = max;
    config
}

#[test]
fn candidates_default_order() {
    assert_eq!(
        Config::default().candidates(),
        [5000, 5001, 5002, 5003, 5004, 5005, 3000, 3001, 8000, 8001]
    );
}

#[test]
fn candidates_dedup_keeps_first() {
    let config = with_ports(5001, &[5003, 5001, 5002, 5003], Some((5002, 5005)), 100);
    assert_eq!(config.candidates(), [5001, 5003, 5002, 5004, 5005]);
}

#[test]
fn candidates_truncated_to_max_attempts() {
    let config = with_ports(5000, &[5001, 5002], Some((6000, 6099)), 4);
    assert_eq!(config.candidates(), [5000, 5001, 5002, 6000]);
    let config = with_ports(5000, &[], Some((1, 65535)), 3);
    assert_eq!(config.candidates(), [5000, 1, 2]);
    let config = with_ports(5000, &[], Some((1, 65535)), u32::MAX);
    assert_eq!(config.candidates().len(), 65535);
}

// ---- display ----

#[test]
fn source_display() {
    let cases = [
        (Source::Default, "default"),
        (ws_src(), "`/w/Cargo.toml` [workspace.metadata.portguard]"),
        (pkg_src(), "`/p/Cargo.toml` [package.metadata.portguard]"),
        (
            env_src(PKG, "dev"),
            "`/p/Cargo.toml` [...portguard.env.dev]",
        ),
        (
            Source::DotEnv {
                path: "/p/.env".into(),
                line: 3,
            },
            "`/p/.env` line 3",
        ),
        (Source::EnvVar("PORT".into()), "environment variable PORT"),
        (Source::Flag("--port".into()), "flag --port"),
        (
            Source::Replaced {
                by: Box::new(env_src(PKG, "ci")),
                keys: vec!["fallback-ports", "port-range"],
            },
            "replaced by fallback-ports and port-range in `/p/Cargo.toml` [...portguard.env.ci]",
        ),
    ];
    for (source, text) in cases {
        assert_eq!(source.to_string(), text);
    }
    let range = PortRange {
        start: 6000,
        end: 6099,
    };
    assert_eq!(range.to_string(), "6000-6099");
    assert_eq!(Handoff::Socket.to_string(), "socket");
}

fn replaced(by: Source, keys: &[&'static str]) -> Source {
    Source::Replaced {
        by: Box::new(by),
        keys: keys.to_vec(),
    }
}

#[test]
fn an_env_range_replaces_the_package_candidates() {
    let config = Case {
        env_flag: Some("ci"),
        ..Case::default()
    }
    .pkg(json!({
        "preferred-port": 5000,
        "fallback-ports": [5001],
        "env": { "ci": { "port-range": "7000-7002" } },
    }))
    .ok();
    let by = replaced(env_src(PKG, "ci"), &["port-range"]);
    assert_eq!(config.preferred_port, sourced(None, by.clone()));
    assert_eq!(config.fallback_ports, sourced(vec![], by));
    assert_eq!(
        config.port_range,
        sourced(
            Some(PortRange {
                start: 7000,
                end: 7002
            }),
            env_src(PKG, "ci")
        )
    );
    assert_eq!(config.candidates(), [7000, 7001, 7002]);
    assert_eq!(config.first_port(), Some(7000));
}

#[test]
fn a_table_with_candidate_keys_drops_the_defaults_too() {
    let config = Case::default()
        .pkg(json!({ "fallback-ports": [6001, 6002] }))
        .ok();
    let by = replaced(pkg_src(), &["fallback-ports"]);
    assert_eq!(config.preferred_port, sourced(None, by));
    // No range was there to replace: the default (none) stands, and says so.
    assert_eq!(config.port_range, sourced(None, Source::Default));
    assert_eq!(config.candidates(), [6001, 6002]);

    let config = Case::default().pkg(json!({ "fallback-ports": [] })).ok();
    assert_eq!(config.candidates(), Vec::<u16>::new());
    assert_eq!(config.first_port(), None);

    // Without a candidate key in any table the defaults stand.
    let config = Case::default().pkg(json!({ "host": "::1" })).ok();
    assert_eq!(config.preferred_port, sourced(Some(5000), Source::Default));
    assert_eq!(config.candidates()[..3], [5000, 5001, 5002]);
}

#[test]
fn the_strongest_table_with_a_candidate_key_decides_them_all() {
    let case = Case {
        env_flag: Some("dev"),
        ..Case::default()
    }
    .ws(json!({
        "preferred-port": 4000,
        "fallback-ports": [4001],
        "port-range": "4100-4101",
        "env": { "dev": { "fallback-ports": [4201] } },
    }))
    .pkg(json!({ "preferred-port": 4300, "max-attempts": 3 }));
    // Every env table is stronger than the package table: the workspace's env.dev decides.
    let config = case.ok();
    let by = replaced(env_src(WS, "dev"), &["fallback-ports"]);
    assert_eq!(config.preferred_port, sourced(None, by.clone()));
    assert_eq!(
        config.fallback_ports,
        sourced(vec![4201], env_src(WS, "dev"))
    );
    assert_eq!(config.port_range, sourced(None, by));
    assert_eq!(config.candidates(), [4201]);

    // Without the environment, the package table decides.
    let case = Case {
        env_flag: None,
        ..case
    };
    let config = case.ok();
    let by = replaced(pkg_src(), &["preferred-port"]);
    assert_eq!(config.preferred_port, sourced(Some(4300), pkg_src()));
    assert_eq!(config.fallback_ports, sourced(vec![], by.clone()));
    assert_eq!(config.port_range, sourced(None, by));
    assert_eq!(config.candidates(), [4300]);

    // A package table without candidate keys leaves them all to the workspace table.
    let config = case.pkg(json!({ "max-attempts": 3 })).ok();
    assert_eq!(config.preferred_port, sourced(Some(4000), ws_src()));
    assert_eq!(config.fallback_ports, sourced(vec![4001], ws_src()));
    assert_eq!(config.candidates(), [4000, 4001, 4100]);
}

#[test]
fn flags_variables_and_dotenv_override_candidate_keys_one_by_one() {
    let config = Case {
        env_flag: Some("ci"),
        port_flag: Some(5050),
        ..Case::default()
    }
    .pkg(json!({
        "preferred-port": 5000,
        "fallback-ports": [5001],
        "env": { "ci": { "port-range": "7000-7001" } },
    }))
    .dotenv("FALLBACK_PORTS=6001,6002\n")
    .ok();
    assert_eq!(
        config.preferred_port,
        sourced(Some(5050), Source::Flag("--port".into()))
    );
    assert_eq!(dotenv_line(&config.fallback_ports.source), 1);
    assert_eq!(config.port_range.source, env_src(PKG, "ci"));
    assert_eq!(config.candidates(), [5050, 6001, 6002, 7000, 7001]);

    let config = Case::default()
        .pkg(json!({ "port-range": "7000-7001" }))
        .var("PORTGUARD_PORT_RANGE", "")
        .ok();
    assert_eq!(
        config.port_range,
        sourced(None, Source::EnvVar("PORTGUARD_PORT_RANGE".into()))
    );
    assert_eq!(config.candidates(), Vec::<u16>::new());
}
