//! Configuration end to end: which layer wins, checked by the port the server really listens
//! on; bad input of every kind exits 2, names the culprit and starts nothing; an unknown key
//! only warns; a project path with spaces works.

mod support;

use std::path::PathBuf;

use support::{EXIT_TIMEOUT, FIXTURE_INSTANCE, Ready, TestProject, free_port, ready};

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
