//! Configuration end to end: which layer wins, checked by the port the server really listens
//! on; bad input of every kind exits 2, names the culprit and starts nothing; an unknown key
//! only warns; a project path with spaces works.

use std::path::PathBuf;

use crate::support::{EXIT_TIMEOUT, FIXTURE_INSTANCE, Ready, TestProject, free_port, ready};

/// Cargo.toml as cargo reports it in messages: the canonical path.
fn manifest(project: &TestProject) -> PathBuf {
    std::fs::canonicalize(project.manifest_path()).expect("canonical Cargo.toml path")
}

/// Adds `[workspace.metadata.portguard]` to the fixture's `[workspace]` table.
fn set_workspace_metadata(project: &TestProject, toml: &str) {
    let path = project.manifest_path();
    let text = std::fs::read_to_string(&path).expect("read Cargo.toml");
    let table = format!("\n[workspace]\n\n[workspace.metadata.portguard]\n{toml}\n");
    assert!(text.contains("\n[workspace]\n"), "no [workspace] in {text}");
    std::fs::write(&path, text.replacen("\n[workspace]\n", &table, 1)).expect("write Cargo.toml");
}

// ---- precedence -------------------------------------------------------------------------

/// A port for each layer that can set the preferred port, all free a moment ago: the
/// package table's and `.env`'s are written; the others are for the test to pass.
struct Layers {
    flag: u16,
    var: u16,
    dotenv: u16,
    manifest: u16,
}

fn four_layers(project: &TestProject) -> Layers {
    let manifest = project.set_metadata_on_free_port("");
    let dotenv = free_port();
    // dotenv syntax: a comment, `export`, quotes, and keys that are not portguard's.
    project.write_file(
        ".env",
        format!("# the dev server\nexport PORT=\"{dotenv}\"\nDATABASE_URL=postgres://x\n"),
    );
    Layers {
        flag: free_port(),
        var: free_port(),
        dotenv,
        manifest,
    }
}

#[test]
fn port_flag_beats_port_variable() {
    let project = TestProject::fixture();
    let layers = four_layers(&project);
    let server = project.serve_with_env(
        &["--port", &layers.flag.to_string()],
        &[("PORT", &layers.var.to_string())],
    );
    assert_eq!(ready(&project, &server).port, layers.flag);
}

#[test]
fn port_variable_beats_dotenv() {
    let project = TestProject::fixture();
    let layers = four_layers(&project);
    let server = project.serve_with_env(&[], &[("PORT", &layers.var.to_string())]);
    assert_eq!(ready(&project, &server).port, layers.var);
}

#[test]
fn dotenv_beats_package_table() {
    let project = TestProject::fixture();
    let layers = four_layers(&project);
    let server = project.serve(&[]);
    let Ready { port, info, .. } = ready(&project, &server);
    assert_eq!(port, layers.dotenv);
    assert_eq!(info["port_env"], layers.dotenv.to_string(), "{info}");
}

#[test]
fn package_table_port_is_used_without_overrides() {
    let project = TestProject::fixture();
    let layers = four_layers(&project);
    project.write_file(
        ".env",
        "# nothing for portguard\nDATABASE_URL=postgres://x\n",
    );
    let server = project.serve(&[]);
    assert_eq!(ready(&project, &server).port, layers.manifest);
}

#[test]
fn workspace_table_gives_defaults() {
    let project = TestProject::fixture();
    let port = free_port();
    set_workspace_metadata(
        &project,
        &format!("preferred-port = {port}\nfallback-ports = []\nhandoff = \"socket\""),
    );
    let server = project.serve(&[]);
    let Ready {
        port: used, info, ..
    } = ready(&project, &server);
    assert_eq!(used, port);
    assert_eq!(info["socket_from_fd3"], true, "{info}");
}

#[test]
fn package_table_beats_workspace_table() {
    let project = TestProject::fixture();
    let workspace_port = free_port();
    set_workspace_metadata(
        &project,
        &format!("preferred-port = {workspace_port}\nfallback-ports = []\nhandoff = \"socket\""),
    );
    let package_port = project.set_metadata_on_free_port("");
    let server = project.serve(&[]);
    let Ready {
        port: used, info, ..
    } = ready(&project, &server);
    assert_eq!(used, package_port);
    // Key by key: what the package table leaves out still comes from the workspace.
    assert_eq!(info["socket_from_fd3"], true, "{info}");
}

/// A package table on one port, with `env.dev` and `env.ci` tables on others.
struct EnvTables {
    base: u16,
    dev: u16,
    ci: u16,
}

fn env_tables(project: &TestProject) -> EnvTables {
    let (dev, ci) = (free_port(), free_port());
    let base = project.set_metadata_on_free_port(&format!(
        "[package.metadata.portguard.env.dev]\npreferred-port = {dev}\n\
         [package.metadata.portguard.env.ci]\npreferred-port = {ci}"
    ));
    EnvTables { base, dev, ci }
}

#[test]
fn env_flag_selects_an_env_table() {
    let project = TestProject::fixture();
    let ports = env_tables(&project);
    let server = project.serve(&["--env", "dev"]);
    let used = ready(&project, &server).port;
    assert_eq!(used, ports.dev, "base {}, ci {}", ports.base, ports.ci);
}

#[test]
fn portguard_env_variable_selects_an_env_table() {
    let project = TestProject::fixture();
    let ports = env_tables(&project);
    let server = project.serve_with_env(&[], &[("PORTGUARD_ENV", "ci")]);
    let used = ready(&project, &server).port;
    assert_eq!(used, ports.ci, "base {}, dev {}", ports.base, ports.dev);
}

#[test]
fn env_flag_beats_portguard_env_variable() {
    let project = TestProject::fixture();
    let ports = env_tables(&project);
    let server = project.serve_with_env(&["--env", "dev"], &[("PORTGUARD_ENV", "ci")]);
    let used = ready(&project, &server).port;
    assert_eq!(used, ports.dev, "base {}, ci {}", ports.base, ports.ci);
}

#[test]
fn portguard_env_in_dotenv_selects_an_env_table() {
    let project = TestProject::fixture();
    let ports = env_tables(&project);
    project.write_file(".env", "PORTGUARD_ENV=ci\n");
    let server = project.serve(&[]);
    let used = ready(&project, &server).port;
    assert_eq!(used, ports.ci, "base {}, dev {}", ports.base, ports.dev);
}

#[test]
fn workspace_env_table_beats_package_table() {
    let project = TestProject::fixture();
    let dev = free_port();
    set_workspace_metadata(
        &project,
        &format!("[workspace.metadata.portguard.env.dev]\npreferred-port = {dev}"),
    );
    let base = project.set_metadata_on_free_port("");
    let server = project.serve(&["--env", "dev"]);
    assert_eq!(ready(&project, &server).port, dev, "package table {base}");
}

#[test]
fn dotenv_beats_the_selected_env_table() {
    let project = TestProject::fixture();
    let ports = env_tables(&project);
    let dotenv = free_port();
    project.write_file(".env", format!("PORT={dotenv}\n"));
    let server = project.serve(&["--env", "dev"]);
    let used = ready(&project, &server).port;
    assert_eq!(used, dotenv, "dev {}, base {}", ports.dev, ports.base);
}

// ---- the candidate keys are one group per table ----------------------------------------

/// `start-end`, `len` consecutive ports free now.
fn free_range(len: u16) -> (u16, String) {
    let start = crate::support::quiet_port_range(len);
    (start, format!("{start}-{}", start + len - 1))
}

#[test]
fn an_env_range_is_all_the_environment_uses_even_with_package_candidates() {
    let project = TestProject::fixture();
    let (start, range) = free_range(3);
    let (preferred, fallback) = (free_port(), free_port());
    project.set_metadata(&format!(
        "preferred-port = {preferred}
fallback-ports = [{fallback}]
         [package.metadata.portguard.env.ci]
port-range = \"{range}\""
    ));
    let stdout = config_stdout(&project, &["--env", "ci"], &[]);
    let env_table = format!("`{}` [...portguard.env.ci]", manifest(&project).display());
    let replaced = format!("replaced by port-range in {env_table}");
    assert_eq!(
        config_line(&stdout, "preferred-port"),
        ("none", replaced.as_str()),
        "{stdout}"
    );
    assert_eq!(
        config_line(&stdout, "fallback-ports"),
        ("[]", replaced.as_str()),
        "{stdout}"
    );
    let quoted = format!("\"{range}\"");
    assert_eq!(
        config_line(&stdout, "port-range"),
        (quoted.as_str(), env_table.as_str()),
        "{stdout}"
    );
    // The server really starts on the range's first port, not on the package's.
    let server = project.serve(&["--env", "ci"]);
    assert_eq!(
        ready(&project, &server).port,
        start,
        "package ports {preferred}, {fallback}"
    );
}

#[test]
fn an_env_range_without_package_candidates_starts_at_its_first_port() {
    let project = TestProject::fixture();
    let (start, range) = free_range(2);
    project.set_metadata(&format!(
        "handoff = \"socket\"\n[package.metadata.portguard.env.ci]\nport-range = \"{range}\""
    ));
    let run = run_config(&project, &["--json", "--env", "ci"], &[]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let manifest = manifest(&project);
    let by = serde_json::json!({
        "source": "env_table",
        "environment": "ci",
        "path": manifest.to_str().expect("UTF-8 path"),
    });
    // The defaults (5000 and its fallbacks) are what the range replaces here.
    assert_eq!(
        json["settings"]["preferred-port"],
        serde_json::json!({"value": null, "source": "replaced", "keys": ["port-range"], "by": by}),
        "{json}"
    );
    assert_eq!(
        json["settings"]["fallback-ports"],
        serde_json::json!({"value": [], "source": "replaced", "keys": ["port-range"], "by": by}),
        "{json}"
    );
    let server = project.serve(&["--env", "ci"]);
    let Ready { port, info, .. } = ready(&project, &server);
    assert_eq!(port, start);
    // Only the candidate keys are one group: the package table's handoff still counts.
    assert_eq!(info["socket_from_fd3"], true, "{info}");
}

#[test]
fn workspace_package_and_env_tables_each_replace_the_candidates_as_a_whole() {
    let project = TestProject::fixture();
    let (ws_port, ws_fallback, pkg_port, dev_fallback) =
        (free_port(), free_port(), free_port(), free_port());
    let (ws_start, ws_range) = free_range(2);
    set_workspace_metadata(
        &project,
        &format!(
            "preferred-port = {ws_port}
fallback-ports = [{ws_fallback}]
             port-range = \"{ws_range}\"
             [workspace.metadata.portguard.env.dev]
fallback-ports = [{dev_fallback}]"
        ),
    );
    let manifest = manifest(&project);
    let package = format!("`{}` [package.metadata.portguard]", manifest.display());
    let workspace = format!("`{}` [workspace.metadata.portguard]", manifest.display());
    let env_table = format!("`{}` [...portguard.env.dev]", manifest.display());

    // Only the workspace sets candidates: they all come from there.
    let stdout = config_stdout(&project, &[], &[]);
    let ws_port_text = ws_port.to_string();
    assert_eq!(
        config_line(&stdout, "preferred-port"),
        (ws_port_text.as_str(), workspace.as_str())
    );
    let ws_range_text = format!("\"{ws_range}\"");
    assert_eq!(
        config_line(&stdout, "port-range"),
        (ws_range_text.as_str(), workspace.as_str())
    );

    // The package's preferred port replaces the workspace's fallbacks and range as well.
    project.set_metadata(&format!("preferred-port = {pkg_port}"));
    let stdout = config_stdout(&project, &[], &[]);
    let by_package = format!("replaced by preferred-port in {package}");
    let pkg_port_text = pkg_port.to_string();
    assert_eq!(
        config_line(&stdout, "preferred-port"),
        (pkg_port_text.as_str(), package.as_str())
    );
    assert_eq!(
        config_line(&stdout, "fallback-ports"),
        ("[]", by_package.as_str())
    );
    assert_eq!(
        config_line(&stdout, "port-range"),
        ("none", by_package.as_str())
    );
    let server = project.serve(&[]);
    assert_eq!(
        ready(&project, &server).port,
        pkg_port,
        "workspace {ws_start}"
    );
    drop(server);

    // The selected env table, even the workspace's, is stronger than the package table.
    let stdout = config_stdout(&project, &["--env", "dev"], &[]);
    let by_env = format!("replaced by fallback-ports in {env_table}");
    assert_eq!(
        config_line(&stdout, "preferred-port"),
        ("none", by_env.as_str())
    );
    let dev_text = format!("[{dev_fallback}]");
    assert_eq!(
        config_line(&stdout, "fallback-ports"),
        (dev_text.as_str(), env_table.as_str())
    );
    assert_eq!(
        config_line(&stdout, "port-range"),
        ("none", by_env.as_str())
    );
}

#[test]
fn flags_variables_and_dotenv_still_override_candidate_keys_one_by_one() {
    let project = TestProject::fixture();
    let (start, range) = free_range(2);
    let (preferred, flag, var, dotenv) = (free_port(), free_port(), free_port(), free_port());
    project.set_metadata(&format!(
        "preferred-port = {preferred}
fallback-ports = []
         [package.metadata.portguard.env.ci]
port-range = \"{range}\""
    ));
    project.write_file(
        ".env",
        format!(
            "FALLBACK_PORTS={dotenv}
"
        ),
    );
    let stdout = config_stdout(&project, &["--env", "ci"], &[("PORT", &var.to_string())]);
    let var_text = var.to_string();
    assert_eq!(
        config_line(&stdout, "preferred-port"),
        (var_text.as_str(), "environment variable PORT")
    );
    let dotenv_text = format!("[{dotenv}]");
    let line = format!("`{}` line 1", dotenv_path(&project).display());
    assert_eq!(
        config_line(&stdout, "fallback-ports"),
        (dotenv_text.as_str(), line.as_str())
    );
    let range_text = format!("\"{range}\"");
    let env_table = format!("`{}` [...portguard.env.ci]", manifest(&project).display());
    assert_eq!(
        config_line(&stdout, "port-range"),
        (range_text.as_str(), env_table.as_str())
    );
    let server = project.serve_with_env(
        &["--env", "ci", "--port", &flag.to_string()],
        &[("PORT", &var.to_string())],
    );
    assert_eq!(
        ready(&project, &server).port,
        flag,
        "package {preferred}, range from {start}"
    );
}

// ---- bad input --------------------------------------------------------------------------

/// Runs `cargo-serve-safe serve-safe ARGS` with `vars`, expecting bad input: exit code 2,
/// every one of `expected` in stderr, and nothing started, built or written.
fn assert_bad_input(
    project: &TestProject,
    args: &[&str],
    vars: &[(&str, &str)],
    expected: &[&str],
) {
    let mut run = project.serve_with_env(args, vars);
    let status = run
        .wait_exit(EXIT_TIMEOUT)
        .expect("bad input must end cargo-serve-safe at once");
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
    for needle in expected {
        assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
    }
    for started in ["Starting", "Compiling", "Finished", "Running"] {
        assert!(!stderr.contains(started), "{started}: {stderr}");
    }
    assert!(project.read_json(FIXTURE_INSTANCE).is_none(), "{stderr}");
    assert!(project.read_pid(FIXTURE_INSTANCE).is_none(), "{stderr}");
    assert!(
        !project.state_dir().exists(),
        "bad input should be found before the state folder is made: {stderr}"
    );
}

/// A project that would start on a free port, were it not for the bad input under test.
fn good_project() -> TestProject {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    project
}

#[test]
fn port_variable_not_a_number() {
    assert_bad_input(
        &good_project(),
        &[],
        &[("PORT", "abc")],
        &[
            "error: invalid value `abc` for PORT (environment variable): \
             expected a port number from 1 to 65535",
        ],
    );
}

#[test]
fn port_variable_out_of_range() {
    assert_bad_input(
        &good_project(),
        &[],
        &[("PORT", "70000")],
        &["invalid value `70000` for PORT (environment variable)"],
    );
}

#[test]
fn fallback_ports_variable_malformed() {
    assert_bad_input(
        &good_project(),
        &[],
        &[("FALLBACK_PORTS", "5001,x")],
        &[
            "invalid value `5001,x` for FALLBACK_PORTS (environment variable)",
            "`x` is not one",
        ],
    );
}

#[test]
fn port_range_variable_backwards() {
    assert_bad_input(
        &good_project(),
        &[],
        &[("PORTGUARD_PORT_RANGE", "6099-6000")],
        &["invalid value `6099-6000` for PORTGUARD_PORT_RANGE (environment variable)"],
    );
}

#[test]
fn max_attempts_variable_negative() {
    assert_bad_input(
        &good_project(),
        &[],
        &[("MAX_PORT_ATTEMPTS", "-1")],
        &["invalid value `-1` for MAX_PORT_ATTEMPTS (environment variable)"],
    );
}

#[test]
fn check_timeout_variable_not_a_number() {
    assert_bad_input(
        &good_project(),
        &[],
        &[("PORT_CHECK_TIMEOUT", "soon")],
        &["invalid value `soon` for PORT_CHECK_TIMEOUT (environment variable)"],
    );
}

#[test]
fn handoff_variable_unknown() {
    assert_bad_input(
        &good_project(),
        &[],
        &[("PORTGUARD_HANDOFF", "pipe")],
        &[
            "invalid value `pipe` for PORTGUARD_HANDOFF (environment variable): \
             expected `env` or `socket`",
        ],
    );
}

#[test]
fn preferred_port_zero_in_manifest() {
    let project = TestProject::fixture();
    project.set_metadata("preferred-port = 0\nfallback-ports = []");
    let culprit = format!(
        "invalid value `0` for `package.metadata.portguard.preferred-port` in `{}`",
        manifest(&project).display()
    );
    assert_bad_input(&project, &[], &[], &[&culprit]);
}

#[test]
fn fallback_ports_string_in_manifest() {
    let project = TestProject::fixture();
    let port = free_port();
    project.set_metadata(&format!(
        "preferred-port = {port}\nfallback-ports = \"5001\""
    ));
    let culprit = format!(
        "invalid value `\"5001\"` for `package.metadata.portguard.fallback-ports` in `{}`",
        manifest(&project).display()
    );
    assert_bad_input(&project, &[], &[], &[&culprit, "found a string"]);
}

#[test]
fn dotenv_line_that_cannot_be_parsed() {
    let project = good_project();
    project.write_file(".env", "# settings\nexport PORT=1234\nthis is not valid\n");
    let dotenv = std::fs::canonicalize(project.root.join(".env")).expect("canonical .env path");
    let culprit = format!(
        "cannot parse `{}` line 3: `this is not valid`",
        dotenv.display()
    );
    assert_bad_input(&project, &[], &[], &[&culprit]);
}

#[test]
fn dotenv_value_that_is_not_a_port() {
    let project = good_project();
    project.write_file(".env", "# settings\nPORT=abc\n");
    let dotenv = std::fs::canonicalize(project.root.join(".env")).expect("canonical .env path");
    let culprit = format!(
        "invalid value `abc` for PORT in `{}` line 2",
        dotenv.display()
    );
    assert_bad_input(&project, &[], &[], &[&culprit]);
}

#[test]
fn env_flag_unknown_lists_known_environments() {
    let project = TestProject::fixture();
    env_tables(&project);
    assert_bad_input(
        &project,
        &["--env", "nope"],
        &[],
        &["unknown environment `nope` (from --env); known environments: ci, dev"],
    );
}

#[test]
fn portguard_env_variable_unknown() {
    let project = TestProject::fixture();
    env_tables(&project);
    assert_bad_input(
        &project,
        &[],
        &[("PORTGUARD_ENV", "nope")],
        &["unknown environment `nope` (from the PORTGUARD_ENV environment variable)"],
    );
}

#[test]
fn port_flag_zero_is_a_usage_error() {
    assert_bad_input(
        &good_project(),
        &["--port", "0"],
        &[],
        &["invalid value '0' for '--port <PORT>'"],
    );
}

#[test]
fn instance_name_with_a_path() {
    assert_bad_input(
        &good_project(),
        &["--instance", "../x"],
        &[],
        &["invalid instance name `../x`"],
    );
}

// ---- warnings and paths -----------------------------------------------------------------

#[test]
fn unknown_key_warns_with_a_suggestion_and_still_starts() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("prefered-port = 1");
    let server = project.serve(&[]);
    assert_eq!(ready(&project, &server).port, port);
    let warning = format!(
        "warning: unknown key `prefered-port` in `[package.metadata.portguard]` of `{}`; \
         did you mean `preferred-port`?",
        manifest(&project).display()
    );
    let stderr = server.stderr();
    assert!(stderr.contains(&warning), "{stderr}");
}

#[test]
fn project_path_with_spaces_works() {
    let project = TestProject::fixture_in("my project");
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let server = project.serve(&["--", "two words"]);
    let Ready {
        port: used, info, ..
    } = ready(&project, &server);
    assert_eq!(used, port);
    assert_eq!(info["socket_from_fd3"], true, "{info}");
    assert_eq!(info["args"], serde_json::json!(["two words"]), "{info}");
    let cwd = info["cwd"].as_str().expect("cwd in /info");
    assert!(cwd.ends_with("/my project"), "{info}");
    let json = project.read_json(FIXTURE_INSTANCE).expect(".json");
    assert_eq!(
        json["manifest_path"],
        manifest(&project).to_str().expect("UTF-8 path"),
        "{json}"
    );
}

// ---- cargo portguard config -------------------------------------------------------------

/// `cargo-portguard config ARGS` with `vars` set, run to its end.
fn run_config(
    project: &TestProject,
    args: &[&str],
    vars: &[(&str, &str)],
) -> crate::support::Finished {
    let mut all = vec!["config"];
    all.extend_from_slice(args);
    let mut command = project.portguard(&all);
    for (name, value) in vars {
        command.env(name, value);
    }
    crate::support::run_within(command, EXIT_TIMEOUT)
}

/// `config ARGS`, which must succeed; its stdout.
fn config_stdout(project: &TestProject, args: &[&str], vars: &[(&str, &str)]) -> String {
    let run = run_config(project, args, vars);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    run.stdout
}

/// The value and source on the `key = value    (source)` line of `key`.
fn config_line<'a>(stdout: &'a str, key: &str) -> (&'a str, &'a str) {
    let prefix = format!("{key} = ");
    let line = stdout
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{stdout}"));
    let (value, source) = line[prefix.len()..]
        .split_once("    (")
        .unwrap_or_else(|| panic!("no `    (source)` on {line:?}"));
    let source = source
        .strip_suffix(')')
        .unwrap_or_else(|| panic!("{line:?} should end with `)`"));
    (value.trim_end(), source)
}

/// `.env` at the package root as portguard names it.
fn dotenv_path(project: &TestProject) -> PathBuf {
    std::fs::canonicalize(project.root.join(".env")).expect("canonical .env path")
}

/// Every key of the contract's table (`env.<NAME>` is `config`'s `environment`).
const CONTRACT_KEYS: [&str; 15] = [
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
];

/// A project whose settings come from every kind of table and file: the package table, its
/// `env.dev` table, the workspace table, and `.env` line 3. Returns the package table's port.
fn layered_project() -> (TestProject, u16) {
    let project = TestProject::fixture();
    set_workspace_metadata(&project, "handoff = \"socket\"\nshutdown-timeout-ms = 2500");
    let port = project.set_metadata_on_free_port(
        "health-path = \"/health\"\n[package.metadata.portguard.env.dev]\nmax-attempts = 3",
    );
    project.write_file(
        ".env",
        "# dev settings\nDATABASE_URL=postgres://x\nexport PORT_CHECK_TIMEOUT=250\n",
    );
    (project, port)
}

#[test]
fn config_shows_where_each_value_comes_from() {
    let (project, port) = layered_project();
    let stdout = config_stdout(&project, &["--env", "dev"], &[]);
    let manifest = manifest(&project);
    let package = format!("`{}` [package.metadata.portguard]", manifest.display());
    let workspace = format!("`{}` [workspace.metadata.portguard]", manifest.display());
    let env_table = format!("`{}` [...portguard.env.dev]", manifest.display());
    let dotenv = format!("`{}` line 3", dotenv_path(&project).display());
    let port = port.to_string();
    let expected = [
        ("environment", "\"dev\"", "flag --env"),
        ("preferred-port", port.as_str(), package.as_str()),
        ("fallback-ports", "[]", package.as_str()),
        ("port-range", "none", "default"),
        ("max-attempts", "3", env_table.as_str()),
        ("check-timeout-ms", "250", dotenv.as_str()),
        ("dynamic-port", "true", "default"),
        ("host", "\"127.0.0.1\"", "default"),
        ("handoff", "\"socket\"", workspace.as_str()),
        ("shutdown-timeout-ms", "2500", workspace.as_str()),
        ("health-path", "\"/health\"", package.as_str()),
        ("ready-timeout-ms", "300000", "default"),
        ("bin", "none", "default"),
        ("watch-paths", "[]", "default"),
        ("watch-ignore", "[]", "default"),
        ("watch-debounce-ms", "50", "default"),
    ];
    for (key, value, source) in expected {
        assert_eq!(config_line(&stdout, key), (value, source), "{stdout}");
    }
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("# package `fixture-server` ({})", manifest.display())
    );
    assert_eq!(lines.len(), 1 + expected.len(), "{stdout}");
    // Without --env no table is selected and the package table's value stands.
    let stdout = config_stdout(&project, &[], &[]);
    assert!(!stdout.contains("environment = "), "{stdout}");
    assert_eq!(config_line(&stdout, "max-attempts"), ("10", "default"));
}

#[test]
fn config_shows_the_flag_the_variable_or_the_dotenv_line_that_set_the_port() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let (flag, var, dotenv) = (free_port(), free_port(), free_port());
    project.write_file(
        ".env",
        format!("# the dev server\n\nexport PORT=\"{dotenv}\"\n"),
    );
    let (flag, var, dotenv) = (flag.to_string(), var.to_string(), dotenv.to_string());
    let line = format!("`{}` line 3", dotenv_path(&project).display());

    let stdout = config_stdout(&project, &[], &[]);
    assert_eq!(
        config_line(&stdout, "preferred-port"),
        (dotenv.as_str(), line.as_str())
    );
    let stdout = config_stdout(&project, &[], &[("PORT", &var)]);
    assert_eq!(
        config_line(&stdout, "preferred-port"),
        (var.as_str(), "environment variable PORT")
    );
    let stdout = config_stdout(&project, &["--port", &flag], &[("PORT", &var)]);
    assert_eq!(
        config_line(&stdout, "preferred-port"),
        (flag.as_str(), "flag --port")
    );
}

#[test]
fn config_json_gives_every_key_with_its_value_and_source() {
    let (project, port) = layered_project();
    let run = run_config(&project, &["--json", "--env", "dev", "--port", "4321"], &[]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let json: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|err| panic!("config --json is not JSON ({err}): {}", run.describe()));
    let manifest = manifest(&project);
    let manifest = manifest.to_str().expect("UTF-8 path");
    assert_eq!(json["package"], "fixture-server", "{json}");
    assert_eq!(json["manifest_path"], manifest, "{json}");
    assert_eq!(
        json["environment"],
        serde_json::json!({"value": "dev", "source": "flag", "flag": "--env"})
    );
    let settings = &json["settings"];
    assert_eq!(
        crate::support::sorted_keys(settings),
        crate::support::sorted(&CONTRACT_KEYS),
        "{json}"
    );
    for key in CONTRACT_KEYS {
        let setting = &settings[key];
        assert!(setting.get("value").is_some(), "{key}: {json}");
        assert!(setting["source"].is_string(), "{key}: {json}");
    }
    let dotenv = dotenv_path(&project);
    let expected = [
        (
            "preferred-port",
            serde_json::json!({"value": 4321, "source": "flag", "flag": "--port"}),
        ),
        (
            "fallback-ports",
            serde_json::json!({"value": [], "source": "package_table", "path": manifest}),
        ),
        (
            "max-attempts",
            serde_json::json!({"value": 3, "source": "env_table", "environment": "dev",
                               "path": manifest}),
        ),
        (
            "check-timeout-ms",
            serde_json::json!({"value": 250, "source": "dotenv",
                               "path": dotenv.to_str().expect("UTF-8 path"), "line": 3}),
        ),
        (
            "handoff",
            serde_json::json!({"value": "socket", "source": "workspace_table", "path": manifest}),
        ),
        (
            "port-range",
            serde_json::json!({"value": null, "source": "default"}),
        ),
        (
            "ready-timeout-ms",
            serde_json::json!({"value": 300_000, "source": "default"}),
        ),
    ];
    for (key, setting) in expected {
        assert_eq!(settings[key], setting, "{key}: {json}");
    }
    let run = run_config(&project, &["--json"], &[("PORT", &port.to_string())]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(json["environment"], serde_json::Value::Null, "{json}");
    assert_eq!(
        json["settings"]["preferred-port"],
        serde_json::json!({"value": port, "source": "environment_variable", "variable": "PORT"})
    );
}

/// `config ARGS` with `vars`, expecting bad input as `run` reports it: exit 2, every one of
/// `expected` in stderr, nothing on stdout, nothing written.
fn assert_config_bad_input(
    project: &TestProject,
    args: &[&str],
    vars: &[(&str, &str)],
    expected: &[&str],
) {
    let run = run_config(project, args, vars);
    assert_eq!(run.code(), Some(2), "{}", run.describe());
    for needle in expected {
        assert!(
            run.stderr.contains(needle),
            "expected {needle:?} in:\n{}",
            run.stderr
        );
    }
    assert!(run.stdout.is_empty(), "{}", run.describe());
    assert!(!project.state_dir().exists(), "{}", run.describe());
}

#[test]
fn config_exits_2_on_bad_input_as_run_does() {
    assert_config_bad_input(
        &good_project(),
        &[],
        &[("PORT", "abc")],
        &[
            "error: invalid value `abc` for PORT (environment variable): \
           expected a port number from 1 to 65535",
        ],
    );
    let project = TestProject::fixture();
    env_tables(&project);
    assert_config_bad_input(
        &project,
        &["--env", "nope"],
        &[],
        &["unknown environment `nope` (from --env); known environments: ci, dev"],
    );
    let project = good_project();
    project.write_file(".env", "# settings\nPORT=abc\n");
    let culprit = format!(
        "invalid value `abc` for PORT in `{}` line 2",
        dotenv_path(&project).display()
    );
    assert_config_bad_input(&project, &[], &[], &[&culprit]);
    assert_config_bad_input(
        &good_project(),
        &["--port", "0"],
        &[],
        &["invalid value '0' for '--port <PORT>'"],
    );
    let project = good_project();
    project.set_metadata("watch-ignore = [\"*.tmp\", \"src/a**b\"]");
    let culprit = format!(
        "invalid value `src/a**b` for `package.metadata.portguard.watch-ignore[1]` in `{}`: \
         expected a glob pattern in gitignore syntax",
        manifest(&project).display()
    );
    assert_config_bad_input(&project, &[], &[], &[&culprit]);
}

#[test]
fn config_shows_the_watch_keys_from_the_tables() {
    let project = TestProject::fixture();
    set_workspace_metadata(&project, "watch-debounce-ms = 250");
    project.set_metadata("watch-paths = [\"../proto\"]\nwatch-ignore = [\"*.snap\"]");
    let manifest = manifest(&project);
    let package = format!("`{}` [package.metadata.portguard]", manifest.display());
    let workspace = format!("`{}` [workspace.metadata.portguard]", manifest.display());
    let stdout = config_stdout(&project, &[], &[]);
    assert_eq!(
        config_line(&stdout, "watch-paths"),
        ("[\"../proto\"]", package.as_str())
    );
    assert_eq!(
        config_line(&stdout, "watch-ignore"),
        ("[\"*.snap\"]", package.as_str())
    );
    assert_eq!(
        config_line(&stdout, "watch-debounce-ms"),
        ("250", workspace.as_str())
    );
    let run = run_config(&project, &["--json"], &[]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let manifest = manifest.to_str().expect("UTF-8 path");
    assert_eq!(
        json["settings"]["watch-paths"],
        serde_json::json!({"value": ["../proto"], "source": "package_table", "path": manifest})
    );
    assert_eq!(
        json["settings"]["watch-debounce-ms"],
        serde_json::json!({"value": 250, "source": "workspace_table", "path": manifest})
    );
}
