//! Property tests: whatever the manifest tables, the `.env` text and the environment hold,
//! resolution answers without panicking; every rejection names where the bad value came from;
//! good values come out as they went in, from the layer that should win.
//!
//! Manifest values are generated as `cargo metadata` hands them over, which is what `resolve`
//! sees: TOML integers, strings, booleans, arrays and tables map to their JSON twins, a float
//! that is not finite becomes `null` and a date-time becomes a one-key object.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};

use super::settings;
use super::{Config, Inputs, PortRange, Source, Sourced, Warning, dotenv, resolve};

const WS: &str = "/w/Cargo.toml";
const PKG: &str = "/p/Cargo.toml";

/// The variables portguard reads, from the environment or from `.env`, and the keys they set.
const VAR_KEYS: [(&str, Option<&str>); 8] = [
    ("PORT", Some("preferred-port")),
    ("FALLBACK_PORTS", Some("fallback-ports")),
    ("PORTGUARD_PORT_RANGE", Some("port-range")),
    ("MAX_PORT_ATTEMPTS", Some("max-attempts")),
    ("PORT_CHECK_TIMEOUT", Some("check-timeout-ms")),
    ("PORTGUARD_HOST", Some("host")),
    ("PORTGUARD_HANDOFF", Some("handoff")),
    ("PORTGUARD_ENV", None),
];

fn vars() -> Vec<&'static str> {
    VAR_KEYS.iter().map(|(name, _)| *name).collect()
}

/// The key cargo gives the one-key object a TOML date-time turns into.
const DATETIME: &str = "$__toml_private_datetime";

/// Enough cases to cover the generators' corners, few enough for a test run of a few seconds;
/// `PROPTEST_CASES` asks for more (an explicit count would otherwise override it). The property
/// tests of other modules take it from here.
pub(crate) fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    ProptestConfig::with_cases(cases)
}

// ---- running a case ----

/// One resolution's inputs; `workspace` and `package` are the `portguard` tables.
#[derive(Debug, Clone, Default)]
struct Case {
    workspace: Option<Value>,
    package: Option<Value>,
    dotenv: Option<Vec<u8>>,
    vars: BTreeMap<&'static str, OsString>,
    env_flag: Option<String>,
    port_flag: Option<u16>,
}

/// A resolution's answer (errors as their text) and the `.env` path it was given.
struct Outcome {
    result: Result<(Config, Vec<Warning>), String>,
    dotenv: PathBuf,
}

impl Case {
    /// Resolves, with the `.env` file (if any) in a fresh temporary folder.
    fn run(&self) -> Outcome {
        let dir = tempfile::tempdir().expect("temporary folder");
        let dotenv = dir.path().join(".env");
        if let Some(bytes) = &self.dotenv {
            std::fs::write(&dotenv, bytes).expect("write .env");
        }
        let workspace = self.workspace.clone().map(|t| json!({ "portguard": t }));
        let package = self.package.clone().map(|t| json!({ "portguard": t }));
        let lookup = |name: &str| self.vars.get(name).cloned();
        let inputs = Inputs {
            workspace_metadata: workspace.as_ref().map(|v| (v, Path::new(WS))),
            package_metadata: package.as_ref().map(|v| (v, Path::new(PKG))),
            dotenv: Some(&dotenv),
            vars: &lookup,
            env_flag: self.env_flag.as_deref(),
            port_flag: self.port_flag,
            bin_flag: None,
        };
        let result = resolve(&inputs).map_err(|e| format!("{e:#}"));
        Outcome { result, dotenv }
    }
}

/// Where a manifest value is written.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Workspace,
    Package,
    WorkspaceEnv,
    PackageEnv,
}

impl Scope {
    fn all() -> impl Strategy<Value = Scope> {
        select(vec![
            Scope::Workspace,
            Scope::Package,
            Scope::WorkspaceEnv,
            Scope::PackageEnv,
        ])
    }

    /// A case with `table` at this scope, its `env.dev` table selected when it is one.
    fn case(self, table: Map<String, Value>) -> Case {
        let (workspace, package, env) = match self {
            Scope::Workspace => (Some(Value::Object(table)), None, false),
            Scope::Package => (None, Some(Value::Object(table)), false),
            Scope::WorkspaceEnv => (Some(json!({ "env": { "dev": table } })), None, true),
            Scope::PackageEnv => (None, Some(json!({ "env": { "dev": table } })), true),
        };
        Case {
            workspace,
            package,
            env_flag: env.then(|| "dev".to_owned()),
            ..Case::default()
        }
    }

    fn table_name(self) -> &'static str {
        match self {
            Scope::Workspace => "workspace.metadata.portguard",
            Scope::Package => "package.metadata.portguard",
            Scope::WorkspaceEnv => "workspace.metadata.portguard.env.dev",
            Scope::PackageEnv => "package.metadata.portguard.env.dev",
        }
    }

    fn manifest(self) -> &'static str {
        match self {
            Scope::Workspace | Scope::WorkspaceEnv => WS,
            Scope::Package | Scope::PackageEnv => PKG,
        }
    }

    fn source(self) -> Source {
        match self {
            Scope::Workspace => Source::WorkspaceTable(WS.into()),
            Scope::Package => Source::PackageTable(PKG.into()),
            Scope::WorkspaceEnv | Scope::PackageEnv => Source::EnvTable {
                manifest: self.manifest().into(),
                name: "dev".into(),
            },
        }
    }
}

/// The resolved value of a key as `cargo portguard config --json` gives it, and its source.
fn setting(config: &Config, key: &str) -> (Value, Source) {
    let setting = settings(config)
        .into_iter()
        .find(|s| s.key == key)
        .expect("a known key");
    (setting.value, setting.source)
}

fn one_key(key: &str, value: Value) -> Map<String, Value> {
    Map::from_iter([(key.to_owned(), value)])
}

// ---- generators ----

/// Text that is often nearly right: numbers, lists, ranges, addresses, paths, plus anything.
fn text() -> impl Strategy<Value = String> {
    let near = select(vec![
        "",
        " ",
        "\t",
        "0",
        "1",
        "5000",
        " 5000 ",
        "65535",
        "65536",
        "-1",
        "+1",
        "1e3",
        "5000.0",
        "٥٠٠٠",
        "5001,5002",
        "5001,,5002",
        " , ",
        "6000-6099",
        "1-65535",
        "0-1",
        "6099-6000",
        "6000-",
        "-6000",
        "6000 - 6099",
        "::1",
        "[::1]",
        "localhost",
        "LOCALHOST",
        "0.0.0.0",
        "256.0.0.1",
        "env",
        "socket",
        " socket ",
        "/",
        "/health",
        "/a b",
        "/a\tb",
        "health",
        "true",
        "false",
        "TRUE",
        "dev",
        " dev ",
        "ci",
        "\0",
        "\u{feff}5000",
        "4294967295",
        "4294967296",
        "2147483647",
        "2147483648",
        "18446744073709551616",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        3 => near,
        2 => "[ 0-9,-]{0,12}",
        2 => "[ -~]{0,16}",
        2 => any::<String>(),
    ]
}

/// A TOML date-time, local date or local time, as cargo spells it.
fn datetime() -> impl Strategy<Value = String> {
    (
        1000u16..=9999,
        1u8..=12,
        1u8..=28,
        0u8..24,
        0u8..60,
        0u8..60,
        0u8..5,
    )
        .prop_map(|(y, mo, d, h, mi, s, form)| match form {
            0 => format!("{y:04}-{mo:02}-{d:02}"),
            1 => format!("{h:02}:{mi:02}:{s:02}"),
            2 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}"),
            3 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.5+01:30"),
            _ => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
        })
}

/// A float as cargo hands it over: JSON has no NaN or infinity, so those become `null`.
fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Any TOML value, as `cargo metadata` gives it.
fn toml_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => text().prop_map(Value::from),
        2 => (-2i64..70_000).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => select(vec![i64::MIN, -1, 0, 1, 65535, 65536, i64::from(i32::MAX), i64::MAX])
            .prop_map(Value::from),
        1 => any::<f64>().prop_map(float),
        1 => select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 5000.0, 1e300])
            .prop_map(float),
        1 => any::<bool>().prop_map(Value::from),
        1 => datetime().prop_map(|s| json!({ DATETIME: s })),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A key of a portguard table: a known one, `env`, a near miss or anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(super::layer::key_names()).prop_map(str::to_owned),
        1 => Just("env".to_owned()),
        1 => "[a-z_-]{1,16}",
        1 => any::<String>(),
    ]
}

/// A portguard table of any keys, sometimes with `env` tables (or an `env` that is no table).
fn portguard_table() -> impl Strategy<Value = Value> {
    let table = || prop::collection::btree_map(key(), toml_value(), 0..5);
    let envs = prop_oneof![
        2 => prop::collection::btree_map(
            select(vec!["dev", "ci", " dev", ""]).prop_map(str::to_owned),
            prop_oneof![4 => table().prop_map(|t| json!(t)), 1 => toml_value()],
            0..3,
        )
        .prop_map(|envs| json!(envs)),
        1 => toml_value(),
    ];
    (table(), proptest::option::of(envs)).prop_map(|(table, envs)| {
        let mut table: Map<String, Value> = table.into_iter().collect();
        if let Some(envs) = envs {
            table.insert("env".to_owned(), envs);
        }
        Value::Object(table)
    })
}

/// A variable's value: text, or on Unix bytes that need not be unicode.
fn os_value() -> impl Strategy<Value = OsString> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        prop_oneof![
            4 => text().prop_map(OsString::from),
            1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(OsString::from_vec),
        ]
    }
    #[cfg(not(unix))]
    text().prop_map(OsString::from)
}

// ---- what messages must say ----

/// The ways a message may show a manifest value: a string bare or quoted, anything else as
/// [`written`].
fn shown(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone(), value.to_string()],
        other => vec![written(other)],
    }
}

/// A value as the TOML user wrote it, near enough: compact JSON, but a date-time as written
/// and a float that is not finite (which cargo turns into `null`) as `nan or inf`.
fn written(value: &Value) -> String {
    match value {
        Value::Null => "nan or inf".to_owned(),
        Value::Object(map) if map.len() == 1 && map.contains_key(DATETIME) => {
            map[DATETIME].as_str().expect("text").to_owned()
        }
        Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(written).collect::<Vec<_>>().join(",")
            )
        }
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), written(v)))
                .collect();
            format!("{{{}}}", entries.join(","))
        }
        other => other.to_string(),
    }
}

/// Checks that `message` blames `key` of the table at `scope` and shows the bad `value`, or
/// the element of it the message names.
fn assert_blames_key(message: &str, scope: Scope, key: &str, value: &Value) {
    let table = scope.table_name();
    let manifest = scope.manifest();
    let whole = format!("`{table}.{key}` in `{manifest}`");
    let element = format!("`{table}.{key}[");
    let culprit = if message.contains(&whole) {
        value
    } else {
        let at = message
            .find(&element)
            .unwrap_or_else(|| panic!("neither {whole} nor an element of it in: {message}"));
        let rest = &message[at + element.len()..];
        let index: usize = rest[..rest.find(']').expect("closing bracket")]
            .parse()
            .expect("an index");
        let in_manifest = format!("{key}[{index}]` in `{manifest}`");
        assert!(
            message.contains(&in_manifest),
            "{in_manifest} missing: {message}"
        );
        &value[index]
    };
    let forms = shown(culprit);
    assert!(
        forms
            .iter()
            .any(|form| message.contains(&format!("`{form}`"))),
        "none of {forms:?} in: {message}"
    );
    assert!(
        !message.contains(DATETIME),
        "cargo's date-time key in: {message}"
    );
}

/// The 1-based line numbers a message gives (`line N`), all within a file of `lines` lines.
fn assert_lines_within(message: &str, lines: usize) {
    for (at, _) in message.match_indices(" line ") {
        let digits: String = message[at + 6..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(line) = digits.parse::<usize>() {
            assert!(
                (1..=lines.max(1)).contains(&line),
                "line {line} of {lines}: {message}"
            );
        }
    }
}

// ---- no input panics; every rejection names its source ----

proptest! {
    #![proptest_config(cases())]

    /// Whole tables of anything: resolution answers, and an error names a manifest and the
    /// portguard table in it (or is about the chosen environment).
    #[test]
    fn any_tables_are_answered(
        workspace in proptest::option::of(portguard_table()),
        package in proptest::option::of(portguard_table()),
        env_flag in proptest::option::of(select(vec!["dev", "ci", " dev ", "", "prod"])),
    ) {
        let case = Case {
            workspace,
            package,
            env_flag: env_flag.map(str::to_owned),
            ..Case::default()
        };
        if let Err(message) = case.run().result {
            let names_table = [WS, PKG].iter().any(|m| message.contains(&format!("in `{m}`")))
                && message.contains("metadata.portguard");
            let names_env = message.starts_with("unknown environment")
                && message.contains("(from --env)");
            prop_assert!(names_table || names_env, "{}", message);
            prop_assert!(!message.contains(DATETIME), "{}", message);
        }
    }

    /// One key, any value, any table: rejected naming the table, the key, the manifest and the
    /// value; or accepted, and then the value comes from that table.
    #[test]
    fn one_key_is_accepted_from_its_table_or_blamed(
        scope in Scope::all(),
        key in select(super::layer::key_names()),
        value in toml_value(),
    ) {
        match scope.case(one_key(key, value.clone())).run().result {
            Ok((config, warnings)) => {
                prop_assert!(warnings.is_empty(), "{:?}", warnings);
                prop_assert_eq!(setting(&config, key).1, scope.source());
            }
            Err(message) => assert_blames_key(&message, scope, key, &value),
        }
    }

    /// A key portguard does not know is a warning naming it, its table and manifest; never an
    /// error, whatever its value.
    #[test]
    fn unknown_keys_only_warn(
        scope in Scope::all(),
        key in prop_oneof!["[a-z_-]{1,16}", any::<String>()]
            .prop_filter("an unknown key", |k| !super::layer::key_names().contains(&k.as_str()) && k != "env"),
        value in toml_value(),
    ) {
        let (_, warnings) = scope
            .case(one_key(&key, value))
            .run()
            .result
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(warnings.len(), 1);
        let expected = format!(
            "unknown key `{key}` in `[{}]` of `{}`",
            scope.table_name(),
            scope.manifest()
        );
        prop_assert!(warnings[0].0.starts_with(&expected), "{}", warnings[0]);
    }

    /// Any value of one variable, from the environment or from `.env`: rejected naming the
    /// variable (and the `.env` line) and the value, or accepted from there.
    #[test]
    fn one_variable_is_accepted_or_blamed(
        name in select(vars()),
        value in os_value(),
        in_dotenv in any::<bool>(),
    ) {
        let tables = json!({ "env": { "dev": {}, "ci": {} } });
        let mut case = Case { workspace: Some(tables), ..Case::default() };
        let value = if in_dotenv {
            // Single quotes take anything but a quote, a backslash or a line break.
            let text: String = value
                .to_string_lossy()
                .chars()
                .map(|c| if matches!(c, '\'' | '\\' | '\n' | '\r') { '_' } else { c })
                .collect();
            case.dotenv = Some(format!("{name}='{text}'\n").into_bytes());
            OsString::from(text)
        } else {
            case.vars.insert(name, value.clone());
            value
        };
        let outcome = case.run();
        let lossy = value.to_string_lossy();
        match outcome.result {
            Ok((config, _)) if name == "PORTGUARD_ENV" => {
                let chosen = config.env_name.map(|n| n.value);
                let trimmed = lossy.trim();
                prop_assert_eq!(chosen.as_deref(), (!trimmed.is_empty()).then_some(trimmed));
            }
            Ok((config, _)) => {
                let key = VAR_KEYS
                    .iter()
                    .find_map(|(var, key)| (*var == name).then_some(*key).flatten())
                    .expect("a variable that sets a key");
                let expected = if in_dotenv {
                    Source::DotEnv { path: outcome.dotenv.clone(), line: 1 }
                } else {
                    Source::EnvVar(name.to_owned())
                };
                prop_assert_eq!(setting(&config, key).1, expected);
            }
            Err(message) => {
                let culprit = match (in_dotenv, name) {
                    (true, _) => format!("{name} in `{}` line 1", outcome.dotenv.display()),
                    (false, "PORTGUARD_ENV") if value.to_str().is_some() => {
                        "the PORTGUARD_ENV environment variable".to_owned()
                    }
                    (false, _) => format!("{name} (environment variable)"),
                };
                prop_assert!(message.contains(&culprit), "{} missing: {}", culprit, message);
                let shown = if name == "PORTGUARD_ENV" && value.to_str().is_some() {
                    lossy.trim()
                } else {
                    &lossy
                };
                prop_assert!(message.contains(&format!("`{shown}`")), "{:?}: {}", shown, message);
            }
        }
    }

    /// All variables at once: an error names one of them and shows its value.
    #[test]
    fn any_variables_are_answered(
        vars in prop::collection::btree_map(select(vars()), os_value(), 0..8),
    ) {
        let case = Case { vars: vars.clone(), ..Case::default() };
        if let Err(message) = case.run().result {
            let blamed = vars.iter().any(|(name, value)| {
                message.contains(name) && message.contains(value.to_string_lossy().trim())
            });
            prop_assert!(blamed, "{}", message);
        }
    }
}

// ---- the `.env` reader ----

/// Pieces `.env` text is made of, well-formed or not.
fn dotenv_piece() -> impl Strategy<Value = String> {
    let pieces = select(vec![
        "PORT",
        "PORTGUARD_HOST",
        "PORTGUARD_ENV",
        "KEY",
        "export",
        "export ",
        "=",
        " = ",
        "\"",
        "'",
        "#",
        " #",
        "\n",
        "\r\n",
        "\r",
        "\\",
        "\\n",
        "$",
        "${",
        "}",
        " ",
        "\t",
        "\0",
        "\u{feff}",
        "5000",
        "a b",
        "é",
        "\u{2028}",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        6 => pieces,
        1 => "[ -~]{1,4}",
        1 => any::<char>().prop_map(String::from),
    ]
}

fn dotenv_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(dotenv_piece(), 0..40).prop_map(|pieces| pieces.concat()),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(cases())]

    /// Any text: parsed or rejected, never a panic; an error names the file, and a line of it
    /// that exists; an entry's line is one that mentions its name.
    #[test]
    fn any_dotenv_text_is_answered(text in dotenv_text()) {
        let path = Path::new("/p/.env");
        let lines: Vec<&str> = text.strip_prefix('\u{feff}').unwrap_or(&text).lines().collect();
        match dotenv::parse(path, &text) {
            Ok(dotenv) => {
                for name in dotenv.names() {
                    let (_, line) = dotenv.get(name).expect("a listed name");
                    prop_assert!((1..=lines.len()).contains(&line), "{} at {}", name, line);
                    prop_assert!(lines[line - 1].contains(name), "{} at {}", name, line);
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(message.contains("`/p/.env`"), "{}", message);
                assert_lines_within(&message, lines.len());
            }
        }
    }

    /// Any bytes in the file, through the whole resolution: an error names the file.
    #[test]
    fn any_dotenv_bytes_are_answered(
        bytes in prop_oneof![
            dotenv_text().prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..64),
        ],
    ) {
        let line_count = bytes.split(|&b| b == b'\n').count();
        let case = Case { dotenv: Some(bytes), ..Case::default() };
        let outcome = case.run();
        if let Err(message) = outcome.result {
            let path = format!("`{}`", outcome.dotenv.display());
            prop_assert!(message.contains(&path), "{}", message);
            assert_lines_within(&message, line_count);
        }
    }
}

/// How a well-formed `.env` value is written.
#[derive(Debug, Clone)]
enum Written {
    Bare(String),
    Single(String),
    Double(String),
    /// Double-quoted, with backslash escapes: each piece as written and as read.
    Escaped(Vec<(&'static str, &'static str)>),
    /// Double-quoted over several lines, which may look like settings themselves.
    Lines(Vec<String>),
}

/// One line (or, for [`Written::Lines`], several) of a well-formed `.env` file.
#[derive(Debug, Clone)]
enum DotEnvLine {
    Blank(String),
    Comment(String),
    Entry {
        export: bool,
        name: String,
        equals: &'static str,
        value: Written,
        /// Spaces, maybe a comment, after the value: never a comment without a space before
        /// it, which a bare value would take for part of itself.
        after: &'static str,
    },
}

fn dotenv_line() -> impl Strategy<Value = DotEnvLine> {
    let name = prop_oneof![
        3 => select(vars()).prop_map(str::to_owned),
        1 => "[A-Za-z_][A-Za-z0-9_.]{0,8}",
    ];
    let inner = prop_oneof![
        select(vars()).prop_map(|name| format!("{name}=1")),
        "[\\PC&&[^\"\\\\$]]{0,10}",
    ];
    let value = prop_oneof![
        "[A-Za-z0-9_./:,@+=-]{0,12}".prop_map(Written::Bare),
        "[\\PC&&[^'\\\\]]{0,12}".prop_map(Written::Single),
        "[\\PC&&[^\"\\\\$]]{0,12}".prop_map(Written::Double),
        prop::collection::vec(
            select(vec![
                ("a", "a"),
                (" ", " "),
                ("#", "#"),
                ("'", "'"),
                ("\\\"", "\""),
                ("\\\\", "\\"),
                ("\\n", "\n"),
                ("\\$", "$"),
                ("\\'", "'"),
                ("\\ ", " "),
            ]),
            0..8,
        )
        .prop_map(Written::Escaped),
        prop::collection::vec(inner, 2..4).prop_map(Written::Lines),
    ];
    let after = select(vec!["", " ", "\t ", " # note", "\t# \"quoted\" 'note'"]);
    prop_oneof![
        1 => "[ \t]{0,3}".prop_map(DotEnvLine::Blank),
        1 => "[ \t]{0,2}#[\\PC]{0,12}".prop_map(DotEnvLine::Comment),
        5 => (any::<bool>(), name, select(vec!["=", " =", "= ", " = "]), value, after)
            .prop_map(|(export, name, equals, value, after)| DotEnvLine::Entry {
                export,
                name,
                equals,
                value,
                after,
            }),
    ]
}

/// The text of a well-formed file and, for each name, the value and line of its first setting.
fn render(
    lines: &[DotEnvLine],
    crlf: bool,
    final_newline: bool,
) -> (String, HashMap<String, (String, usize)>) {
    let newline = if crlf { "\r\n" } else { "\n" };
    let mut text = String::new();
    let mut expected = HashMap::new();
    let mut line = 1;
    for (i, piece) in lines.iter().enumerate() {
        let (written, value) = match piece {
            DotEnvLine::Blank(s) | DotEnvLine::Comment(s) => (s.clone(), None),
            DotEnvLine::Entry {
                export,
                name,
                equals,
                value,
                after,
            } => {
                let export = if *export { "export " } else { "" };
                let (shown, parsed) = match value {
                    Written::Bare(v) => (v.clone(), v.clone()),
                    Written::Single(v) => (format!("'{v}'"), v.clone()),
                    Written::Double(v) => (format!("\"{v}\""), v.clone()),
                    Written::Escaped(pieces) => {
                        let raw: String = pieces.iter().map(|(raw, _)| *raw).collect();
                        let read: String = pieces.iter().map(|(_, read)| *read).collect();
                        (format!("\"{raw}\""), read)
                    }
                    Written::Lines(v) => (format!("\"{}\"", v.join(newline)), v.join(newline)),
                };
                (
                    format!("{export}{name}{equals}{shown}{after}"),
                    Some((name, parsed)),
                )
            }
        };
        if let Some((name, parsed)) = value {
            expected.entry(name.clone()).or_insert((parsed, line));
        }
        line += written.matches('\n').count() + 1;
        text.push_str(&written);
        if i + 1 < lines.len() || final_newline {
            text.push_str(newline);
        }
    }
    (text, expected)
}

proptest! {
    #![proptest_config(cases())]

    /// A well-formed file gives exactly its settings: each name's first value, at the line it
    /// starts on.
    #[test]
    fn well_formed_dotenv_round_trips(
        lines in prop::collection::vec(dotenv_line(), 0..12),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
        bom in any::<bool>(),
    ) {
        let (mut text, expected) = render(&lines, crlf, final_newline);
        if bom {
            text.insert(0, '\u{feff}');
        }
        let dotenv = dotenv::parse(Path::new("/p/.env"), &text)
            .map_err(|e| TestCaseError::fail(format!("{e:#}\n{text:?}")))?;
        let mut names: Vec<&str> = dotenv.names().collect();
        names.sort_unstable();
        let mut wanted: Vec<&str> = expected.keys().map(String::as_str).collect();
        wanted.sort_unstable();
        prop_assert_eq!(names, wanted, "{:?}", text);
        for (name, (value, line)) in &expected {
            prop_assert_eq!(
                dotenv.get(name),
                Some((value.as_str(), *line)),
                "{} in {:?}", name, text
            );
        }
    }
}

// ---- accepted values round-trip ----

proptest! {
    #![proptest_config(cases())]

    /// A number for a numeric key is accepted exactly within the documented range, and then is
    /// the value, from that table; outside it, the key and the number are named.
    #[test]
    fn numbers_are_accepted_within_their_range(
        scope in Scope::all(),
        key in select(vec![
            "preferred-port",
            "max-attempts",
            "check-timeout-ms",
            "shutdown-timeout-ms",
            "ready-timeout-ms",
            "watch-debounce-ms",
        ]),
        n in prop_oneof![
            any::<i64>(),
            -2i64..70_000,
            select(vec![0, 1, 65535, 65536, i64::from(i32::MAX), i64::from(i32::MAX) + 1,
                        i64::from(u32::MAX), i64::from(u32::MAX) + 1]),
        ],
    ) {
        let range = match key {
            "preferred-port" => 1..=65535,
            "max-attempts" => 1..=i64::from(u32::MAX),
            "shutdown-timeout-ms" | "watch-debounce-ms" => 0..=i64::from(i32::MAX),
            _ => 1..=i64::from(i32::MAX),
        };
        match scope.case(one_key(key, json!(n))).run().result {
            Ok((config, _)) => {
                prop_assert!(range.contains(&n), "{} accepted for {}", n, key);
                prop_assert_eq!(setting(&config, key), (json!(n), scope.source()));
            }
            Err(message) => {
                prop_assert!(!range.contains(&n), "{} rejected for {}: {}", n, key, message);
                assert_blames_key(&message, scope, key, &json!(n));
            }
        }
    }

    /// Any port given as `preferred-port`, from any layer, is the preferred port, from there.
    #[test]
    fn any_port_round_trips_from_any_layer(port in 1u16..=65535, layer in 0usize..7) {
        let mut case = Case::default();
        let scopes = [Scope::Workspace, Scope::Package, Scope::WorkspaceEnv, Scope::PackageEnv];
        let expected = match layer {
            0..=3 => {
                let scope = scopes[layer];
                case = scope.case(one_key("preferred-port", json!(port)));
                Some(scope.source())
            }
            4 => {
                case.dotenv = Some(format!("# port\nexport PORT=\" {port}\"\n").into_bytes());
                None
            }
            5 => {
                case.vars.insert("PORT", format!("{port} ").into());
                Some(Source::EnvVar("PORT".into()))
            }
            _ => {
                case.port_flag = Some(port);
                Some(Source::Flag("--port".into()))
            }
        };
        let outcome = case.run();
        let (config, _) = outcome.result.map_err(TestCaseError::fail)?;
        let expected = expected.unwrap_or(Source::DotEnv { path: outcome.dotenv, line: 2 });
        prop_assert_eq!(config.preferred_port, Sourced { value: Some(port), source: expected });
    }

    /// `a-b` is a range exactly when both are ports and `a <= b`; otherwise the key (or the
    /// variable) and the text are named.
    #[test]
    fn port_ranges_need_ordered_ports(
        a in prop_oneof![0u32..=70_000, 1u32..=65535],
        b in prop_oneof![0u32..=70_000, 1u32..=65535],
        spaces in select(vec!["", " "]),
        where_ in 0usize..6,
    ) {
        let text = format!("{spaces}{a}-{b}{spaces}");
        let valid = 1 <= a && a <= b && b <= 65535;
        let scopes = [Scope::Workspace, Scope::Package, Scope::WorkspaceEnv, Scope::PackageEnv];
        let mut case = Case::default();
        if let Some(&scope) = scopes.get(where_) {
            case = scope.case(one_key("port-range", json!(text)));
        } else if where_ == 4 {
            case.vars.insert("PORTGUARD_PORT_RANGE", text.clone().into());
        } else {
            case.dotenv = Some(format!("PORTGUARD_PORT_RANGE=\"{text}\"\n").into_bytes());
        }
        let outcome = case.run();
        match (outcome.result, scopes.get(where_)) {
            (Ok((config, _)), _) => {
                prop_assert!(valid, "{} accepted", text);
                let range = PortRange { start: a as u16, end: b as u16 };
                prop_assert_eq!(config.port_range.value, Some(range));
            }
            (Err(message), Some(&scope)) => {
                prop_assert!(!valid, "{} rejected: {}", text, message);
                assert_blames_key(&message, scope, "port-range", &json!(text));
            }
            (Err(message), None) => {
                prop_assert!(!valid, "{} rejected: {}", text, message);
                let culprit = if where_ == 4 {
                    "PORTGUARD_PORT_RANGE (environment variable)".to_owned()
                } else {
                    format!("PORTGUARD_PORT_RANGE in `{}` line 1", outcome.dotenv.display())
                };
                prop_assert!(message.contains(&culprit), "{}", message);
                prop_assert!(message.contains(&format!("`{text}`")), "{}", message);
            }
        }
    }

    /// A comma-separated list of ports, spaced anyhow, is that list.
    #[test]
    fn fallback_port_lists_round_trip(
        ports in prop::collection::vec((1u16..=65535, select(vec!["", " ", "\t"])), 1..8),
    ) {
        let text = ports
            .iter()
            .map(|(port, space)| format!("{space}{port}{space}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut case = Case::default();
        case.vars.insert("FALLBACK_PORTS", text.into());
        let (config, _) = case.run().result.map_err(TestCaseError::fail)?;
        let expected: Vec<u16> = ports.iter().map(|(port, _)| *port).collect();
        prop_assert_eq!(config.fallback_ports.value, expected);
    }
}

// ---- precedence ----

/// The layers, strongest first: flag, environment, `.env`, the selected package `env.dev`
/// table, the selected workspace one, the package table, the workspace table.
const LAYERS: usize = 7;

/// How `env.dev` is selected, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selector {
    None,
    Flag,
    Var,
    DotEnv,
}

/// A portguard table with the keys of `base` and an `env.dev` table with those of `dev`.
fn with_dev(mut base: Map<String, Value>, dev: Map<String, Value>) -> Value {
    base.insert("env".to_owned(), json!({ "dev": Value::Object(dev) }));
    Value::Object(base)
}

proptest! {
    #![proptest_config(cases())]

    /// Whichever layers set `preferred-port` and `host`, each key comes from the strongest of
    /// them, key by key; an `env.dev` table counts only when selected.
    #[test]
    fn the_strongest_layer_wins_key_by_key(
        port_in in any::<[bool; LAYERS]>(),
        host_in in any::<[bool; LAYERS]>(),
        ports in prop::array::uniform7(1u16..=65535),
        selector in select(vec![Selector::None, Selector::Flag, Selector::Var, Selector::DotEnv]),
    ) {
        // No flag sets the host.
        let mut host_in = host_in;
        host_in[0] = false;
        let host = |layer: usize| IpAddr::V4(Ipv4Addr::new(127, 0, 0, layer as u8 + 1));
        let table = |layer: usize| {
            let mut table = Map::new();
            if port_in[layer] {
                table.insert("preferred-port".into(), json!(ports[layer]));
            }
            if host_in[layer] {
                table.insert("host".into(), json!(host(layer).to_string()));
            }
            table
        };
        let mut case = Case {
            package: Some(with_dev(table(5), table(3))),
            workspace: Some(with_dev(table(6), table(4))),
            port_flag: port_in[0].then_some(ports[0]),
            env_flag: (selector == Selector::Flag).then(|| "dev".to_owned()),
            ..Case::default()
        };
        if port_in[1] {
            case.vars.insert("PORT", ports[1].to_string().into());
        }
        if host_in[1] {
            case.vars.insert("PORTGUARD_HOST", host(1).to_string().into());
        }
        if selector == Selector::Var {
            case.vars.insert("PORTGUARD_ENV", "dev".into());
        }
        let mut dotenv = vec!["# settings".to_owned()];
        let mut dotenv_line = HashMap::new();
        for (set, line) in [
            (selector == Selector::DotEnv, "PORTGUARD_ENV=dev".to_owned()),
            (port_in[2], format!("PORT={}", ports[2])),
            (host_in[2], format!("PORTGUARD_HOST={}", host(2))),
        ] {
            if set {
                dotenv.push(line.clone());
                let name = line.split('=').next().expect("a name").to_owned();
                dotenv_line.insert(name, dotenv.len());
            }
        }
        case.dotenv = Some(dotenv.join("\n").into_bytes());

        let outcome = case.run();
        let (config, warnings) = outcome.result.map_err(TestCaseError::fail)?;
        prop_assert!(warnings.is_empty(), "{:?}", warnings);
        let source = |layer: usize, var: &str| match layer {
            0 => Source::Flag("--port".into()),
            1 => Source::EnvVar(var.into()),
            2 => Source::DotEnv { path: outcome.dotenv.clone(), line: dotenv_line[var] },
            3 => Source::EnvTable { manifest: PKG.into(), name: "dev".into() },
            4 => Source::EnvTable { manifest: WS.into(), name: "dev".into() },
            5 => Source::PackageTable(PKG.into()),
            _ => Source::WorkspaceTable(WS.into()),
        };
        let counts = |layer: usize| !(3..=4).contains(&layer) || selector != Selector::None;
        let winner = |set: &[bool; LAYERS]| (0..LAYERS).find(|&l| set[l] && counts(l));

        let expected_port = winner(&port_in).map_or(
            Sourced { value: Some(5000), source: Source::Default },
            |l| Sourced { value: Some(ports[l]), source: source(l, "PORT") },
        );
        prop_assert_eq!(config.preferred_port, expected_port);
        let expected_host = winner(&host_in).map_or(
            Sourced { value: IpAddr::V4(Ipv4Addr::LOCALHOST), source: Source::Default },
            |l| Sourced { value: host(l), source: source(l, "PORTGUARD_HOST") },
        );
        prop_assert_eq!(config.host, expected_host);
        let expected_env = match selector {
            Selector::None => None,
            Selector::Flag => Some(Source::Flag("--env".into())),
            Selector::Var => Some(Source::EnvVar("PORTGUARD_ENV".into())),
            Selector::DotEnv => Some(source(2, "PORTGUARD_ENV")),
        };
        prop_assert_eq!(
            config.env_name,
            expected_env.map(|source| Sourced { value: "dev".to_owned(), source })
        );
    }
}

// ---- the candidate group ----

/// Candidate keys one table may set: `preferred-port`, `fallback-ports`, `port-range`.
type Group = (Option<u16>, Option<Vec<u16>>, Option<(u16, u16)>);

fn group() -> impl Strategy<Value = Group> {
    (
        prop::option::of(1u16..=60_000),
        prop::option::of(prop::collection::vec(1u16..=60_000, 0..4)),
        prop::option::of((1u16..=60_000, 0u16..5).prop_map(|(start, len)| (start, start + len))),
    )
}

fn group_table(group: &Group) -> Map<String, Value> {
    let mut table = Map::new();
    if let Some(port) = group.0 {
        table.insert("preferred-port".into(), json!(port));
    }
    if let Some(ports) = &group.1 {
        table.insert("fallback-ports".into(), json!(ports));
    }
    if let Some((start, end)) = group.2 {
        table.insert("port-range".into(), json!(format!("{start}-{end}")));
    }
    table
}

proptest! {
    #![proptest_config(cases())]

    /// The strongest table that sets any candidate key decides the candidates alone: what it
    /// leaves out is not inherited from weaker tables or the defaults. A flag, a variable or a
    /// `.env` line still overrides its one key.
    #[test]
    fn a_table_with_a_candidate_key_decides_the_candidates_alone(
        groups in prop::array::uniform4(group()),
        selected in any::<bool>(),
        port_flag in prop::option::of(1u16..=60_000),
        port_var in prop::option::of(1u16..=60_000),
        fallbacks_dotenv in prop::option::of(prop::collection::vec(1u16..=60_000, 1..3)),
        range_var in prop::option::of((1u16..=60_000, 0u16..3)),
    ) {
        // Strongest first: package env.dev, workspace env.dev, package, workspace.
        let [pkg_dev, ws_dev, pkg, ws] = &groups;
        let mut case = Case {
            package: Some(with_dev(group_table(pkg), group_table(pkg_dev))),
            workspace: Some(with_dev(group_table(ws), group_table(ws_dev))),
            env_flag: selected.then(|| "dev".to_owned()),
            port_flag,
            ..Case::default()
        };
        if let Some(port) = port_var {
            case.vars.insert("PORT", port.to_string().into());
        }
        if let Some((start, len)) = range_var {
            case.vars.insert("PORTGUARD_PORT_RANGE", format!("{start}-{}", start + len).into());
        }
        if let Some(ports) = &fallbacks_dotenv {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            case.dotenv = Some(format!("FALLBACK_PORTS={}\n", list.join(",")).into_bytes());
        }
        let (config, warnings) = case.run().result.map_err(TestCaseError::fail)?;
        prop_assert!(warnings.is_empty(), "{:?}", warnings);

        let counted = if selected { &groups[..] } else { &groups[2..] };
        let decider = counted
            .iter()
            .find(|g| g.0.is_some() || g.1.is_some() || g.2.is_some());
        let defaults = Config::default();
        let (mut preferred, mut fallbacks, mut range) = match decider {
            Some(g) => (g.0, g.1.clone().unwrap_or_default(), g.2),
            None => (
                defaults.preferred_port.value,
                defaults.fallback_ports.value.clone(),
                None,
            ),
        };
        if let Some(port) = port_flag.or(port_var) {
            preferred = Some(port);
        }
        if let Some(ports) = fallbacks_dotenv {
            fallbacks = ports;
        }
        if let Some((start, len)) = range_var {
            range = Some((start, start + len));
        }
        let mut expected: Vec<u16> = Vec::new();
        let all = preferred
            .into_iter()
            .chain(fallbacks)
            .chain(range.map_or(0..=0, |(start, end)| start..=end).filter(|&p| p != 0));
        for port in all {
            if !expected.contains(&port) && expected.len() < 10 {
                expected.push(port);
            }
        }
        prop_assert_eq!(config.candidates(), expected);
        // What a table left out says which table replaced it.
        if let Some(g) = decider
            && g.0.is_none()
            && port_flag.or(port_var).is_none()
        {
            prop_assert!(
                matches!(config.preferred_port.source, Source::Replaced { .. }),
                "{:?}",
                config.preferred_port
            );
        }
    }
}
