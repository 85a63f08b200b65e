//! The commands that start no server (`config`, `ports`, `status`, `init --dry-run`), called in
//! this process through `portguard::app::portguard_in` with the environment, folder and
//! arguments the spawned binary gets: both must answer the same, code, stdout and stderr. That
//! the environment is only what is passed in (never this process's, which is left as it is)
//! shows that the context `app` builds is the commands' one door to it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::thread;

use crate::support::{EXIT_TIMEOUT, Finished, TestProject, hold_port, run_within};

/// What `portguard_in` returned.
#[derive(Debug, PartialEq, Eq)]
struct InProcess {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `command` (from `TestProject::portguard`) run in this process instead: the same arguments,
/// the environment it would have (this process's with its changes applied), its folder.
fn in_process(command: &Command) -> InProcess {
    let mut vars: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => vars.insert(name.to_owned(), value.to_owned()),
            None => vars.remove(name),
        };
    }
    let args = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(ToOwned::to_owned)
        .collect();
    let cwd = command
        .get_current_dir()
        .map(PathBuf::from)
        .expect("TestProject::command sets the folder");
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = portguard::app::portguard_in(
        args,
        vars.into_iter().collect(),
        cwd,
        &mut stdout,
        &mut stderr,
    );
    InProcess {
        code,
        stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
    }
}

/// `cargo-portguard ARGS` with `vars` in `project`, spawned and in-process; panics unless both
/// answer the same, which must be `code`. The spawned run, for further checks.
fn same_both_ways(
    project: &TestProject,
    args: &[&str],
    vars: &[(&str, &str)],
    code: i32,
) -> Finished {
    let command = || {
        let mut command = project.portguard(args);
        command.envs(vars.iter().copied());
        command
    };
    let spawned = run_within(command(), EXIT_TIMEOUT);
    let inside = in_process(&command());
    assert_eq!(spawned.code(), Some(code), "{}", spawned.describe());
    assert_eq!(
        inside,
        InProcess {
            code,
            stdout: spawned.stdout.clone(),
            stderr: spawned.stderr.clone(),
        },
        "`{}` answered otherwise in-process",
        args.join(" ")
    );
    spawned
}

/// A project with no server built: `init`'s plain fixture.
fn plain() -> TestProject {
    TestProject::init_fixture("plain")
}

/// `--manifest-path` for `project`, as the arguments after the command take it.
fn manifest(project: &TestProject) -> String {
    project
        .manifest_path()
        .to_str()
        .expect("temp paths are UTF-8")
        .to_owned()
}

/// Two ports this test holds busy, and a configuration that tries only them: every run finds
/// the same, whatever other tests do meanwhile.
fn held_candidates(project: &TestProject) -> [(TcpListener, u16); 2] {
    let held = [hold_port(), hold_port()];
    project.set_metadata(&format!(
        "preferred-port = {}\nfallback-ports = [{}]\ndynamic-port = false",
        held[0].1, held[1].1
    ));
    held
}

#[test]
fn config_answers_the_same_in_process() {
    let project = plain();
    let (_held, port) = hold_port();
    project.set_metadata(&format!("preferred-port = {port}\nfallback-ports = []"));
    let path = manifest(&project);
    let text = same_both_ways(&project, &["config", "--manifest-path", &path], &[], 0);
    assert!(
        text.stdout.contains(&port.to_string()),
        "{}",
        text.describe()
    );
    same_both_ways(
        &project,
        &["config", "--json", "--manifest-path", &path],
        &[("FALLBACK_PORTS", "7001,7002")],
        0,
    );
}

/// Without `--manifest-path` the project is found from the folder the call is given, not from
/// the test process's own (this repository, whose Cargo.toml is portguard's).
#[test]
fn config_finds_the_project_from_the_given_folder_in_process() {
    let project = plain();
    let (_held, port) = hold_port();
    project.set_metadata(&format!("preferred-port = {port}\nfallback-ports = []"));
    let text = same_both_ways(&project, &["config"], &[], 0);
    assert!(
        text.stdout.contains(&port.to_string()),
        "{}",
        text.describe()
    );
}

#[test]
fn config_bad_input_exits_2_the_same_in_process() {
    let project = plain();
    let path = manifest(&project);
    let run = same_both_ways(
        &project,
        &["config", "--manifest-path", &path],
        &[("PORT", "abc")],
        2,
    );
    assert!(run.stderr.contains("`abc` for PORT"), "{}", run.describe());
}

#[test]
fn ports_json_answers_the_same_in_process() {
    let project = plain();
    let _held = held_candidates(&project);
    let path = manifest(&project);
    let run = same_both_ways(
        &project,
        &["ports", "--json", "--manifest-path", &path],
        &[],
        0,
    );
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        json["candidates"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );
}

#[test]
fn ports_bad_input_exits_2_the_same_in_process() {
    let project = plain();
    let _held = held_candidates(&project);
    let path = manifest(&project);
    let run = same_both_ways(
        &project,
        &["ports", "--manifest-path", &path],
        &[("MAX_PORT_ATTEMPTS", "many")],
        2,
    );
    assert!(
        run.stderr.contains("MAX_PORT_ATTEMPTS"),
        "{}",
        run.describe()
    );
}

#[test]
fn status_with_nothing_running_exits_3_the_same_in_process() {
    let project = plain();
    let path = manifest(&project);
    same_both_ways(&project, &["status", "--manifest-path", &path], &[], 3);
    let json = same_both_ways(
        &project,
        &["status", "--json", "--manifest-path", &path],
        &[],
        3,
    );
    assert!(
        json.stdout.contains("\"instances\": []"),
        "{}",
        json.describe()
    );
}

#[test]
fn status_bad_input_exits_2_the_same_in_process() {
    let project = plain();
    let path = manifest(&project);
    let run = same_both_ways(
        &project,
        &[
            "status",
            "--manifest-path",
            &path,
            "--instance",
            "../elsewhere",
        ],
        &[],
        2,
    );
    assert!(run.stderr.contains("`../elsewhere`"), "{}", run.describe());
    // A usage error is clap's, on stderr, and the same too.
    same_both_ways(&project, &["status", "--no-such-flag"], &[], 2);
}

#[test]
fn init_dry_run_answers_the_same_in_process_and_writes_nothing() {
    let project = TestProject::init_fixture("plain");
    let before = project.tree();
    let path = manifest(&project);
    let run = same_both_ways(
        &project,
        &["init", "--dry-run", "--manifest-path", &path],
        &[],
        0,
    );
    assert!(
        run.stdout.contains("+++ b/Cargo.toml"),
        "{}",
        run.describe()
    );
    assert_eq!(before.changes_to(&project.tree()), Vec::<String>::new());
}

#[test]
fn init_dry_run_bad_input_exits_2_the_same_in_process() {
    let project = TestProject::init_fixture("workspace");
    let before = project.tree();
    let path = manifest(&project);
    let run = same_both_ways(
        &project,
        &["init", "--dry-run", "--manifest-path", &path],
        &[],
        2,
    );
    assert!(run.stderr.contains("`-p NAME`"), "{}", run.describe());
    assert_eq!(before.changes_to(&project.tree()), Vec::<String>::new());
}

/// Calls on parallel threads each see their own variables and get their own output: the
/// good `PORT` of one call and the bad `PORT` of another, with its error, stay apart.
#[test]
fn parallel_calls_keep_their_environment_and_output_apart() {
    let project = plain();
    let path = manifest(&project);
    let held: Vec<(TcpListener, u16)> = (0..6).map(|_| hold_port()).collect();
    thread::scope(|scope| {
        let calls: Vec<_> = held
            .iter()
            .enumerate()
            .map(|(i, (_, port))| {
                let (project, path) = (&project, &path);
                // Every other call gives a value that is no port, naming the call.
                let value = if i % 2 == 0 {
                    port.to_string()
                } else {
                    format!("call{i}")
                };
                scope.spawn(move || {
                    let mut command =
                        project.portguard(&["config", "--json", "--manifest-path", path]);
                    command.env("PORT", &value);
                    (value, in_process(&command))
                })
            })
            .collect();
        for call in calls {
            let (value, run) = call.join().expect("the call did not panic");
            if value.starts_with("call") {
                assert_eq!(run.code, 2, "{run:?}");
                assert_eq!(run.stdout, "", "{run:?}");
                assert_eq!(
                    run.stderr.matches("error:").count(),
                    1,
                    "one error, this call's: {run:?}"
                );
                assert!(run.stderr.contains(&format!("`{value}`")), "{run:?}");
            } else {
                assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:?}");
                let json: serde_json::Value = serde_json::from_str(&run.stdout)
                    .unwrap_or_else(|err| panic!("not one JSON answer ({err}): {}", run.stdout));
                assert_eq!(
                    json["settings"]["preferred-port"]["value"].to_string(),
                    value,
                    "{json}"
                );
            }
        }
    });
}
