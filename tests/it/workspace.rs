//! A workspace with two server packages: each runs as its own instance, the workspace table
//! gives both their defaults, and from the root `status` lists them and `stop --all` ends them.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::support::*;

/// A workspace of two fixture servers, `api` and `web`, building into a target dir of its own.
fn two_server_workspace() -> (TestProject, u16, u16) {
    let dir = tempfile::Builder::new()
        .prefix("portguard-workspace-")
        .tempdir()
        .expect("create temp dir");
    let root = dir.path().to_path_buf();
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/server-core");
    let (api_port, web_port) = (free_port(), free_port());
    fs::write(
        root.join("Cargo.toml"),
        "[workspace]\nmembers = [\"api\", \"web\"]\nresolver = \"2\"\n\n\
         [workspace.metadata.portguard]\nhandoff = \"socket\"\nfallback-ports = []\n",
    )
    .expect("write the workspace manifest");
    for (name, port) in [("api", api_port), ("web", web_port)] {
        fs::create_dir_all(root.join(name).join("src")).expect("create member");
        fs::write(
            root.join(name).join("Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                 [dependencies]\nserver-core = {{ path = {:?} }}\n\n\
                 [package.metadata.portguard]\npreferred-port = {port}\n",
                core.display().to_string()
            ),
        )
        .expect("write member manifest");
        fs::write(
            root.join(name).join("src/main.rs"),
            "fn main() {\n    server_core::main()\n}\n",
        )
        .expect("write member main");
    }
    let project = TestProject {
        target_dir: root.join("target"),
        root,
        dir,
    };
    (project, api_port, web_port)
}

#[test]
fn each_member_runs_as_its_own_instance_and_stop_all_ends_both() {
    let (project, api_port, web_port) = two_server_workspace();
    for (member, port) in [("api", api_port), ("web", web_port)] {
        let started = project.run_serve_safe(&["-p", member, "--detach"]);
        assert_eq!(started.code(), Some(0), "{}", started.describe());
        assert_eq!(started.stdout.trim(), port.to_string());
        assert_eq!(info(port)["portguard_instance"], member);
    }
    // State lives at the workspace root, one set per member.
    for member in ["api", "web"] {
        let record = project.read_json(member).expect("a record per member");
        assert_eq!(
            record["handoff"], "socket",
            "the workspace table applies: {record}"
        );
        assert_eq!(record["package"], member);
    }

    let status = project.run_portguard(&["status", "--json"]);
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let listed: Vec<(&str, &str)> = status["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|entry| {
            (
                entry["instance"].as_str().unwrap_or(""),
                entry["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(listed, [("api", "running"), ("web", "running")]);

    let stopped = project.run_portguard(&["stop", "--all"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    assert!(
        stopped.stderr.contains("Stopped `api`"),
        "{}",
        stopped.describe()
    );
    assert!(
        stopped.stderr.contains("Stopped `web`"),
        "{}",
        stopped.describe()
    );
    for port in [api_port, web_port] {
        assert!(wait_until_port_free(port, Duration::from_secs(5)));
    }
    let status = project.run_portguard(&["status"]);
    assert_eq!(status.code(), Some(3), "{}", status.describe());
}

#[test]
fn without_a_package_the_workspace_asks_which_one() {
    let (project, ..) = two_server_workspace();
    let started = project.run_serve_safe(&[]);
    assert_eq!(started.code(), Some(2), "{}", started.describe());
    assert!(
        started.stderr.contains("api, web"),
        "{}",
        started.describe()
    );
    assert!(started.stderr.contains("-p NAME"), "{}", started.describe());
}

/// `cargo-portguard ARGS` run in the workspace member folder `member`.
fn portguard_in(project: &TestProject, member: &str, args: &[&str]) -> Finished {
    let mut command = project.portguard(args);
    command.current_dir(project.root.join(member));
    run_within(command, COMMAND_TIMEOUT)
}

/// The instances `status --json` lists, with their states.
fn listed(status: &Finished) -> Vec<(String, String)> {
    let json: serde_json::Value = serde_json::from_str(&status.stdout)
        .unwrap_or_else(|err| panic!("status printed no JSON ({err}):\n{}", status.describe()));
    json["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|entry| {
            (
                entry["instance"].as_str().unwrap_or("").to_owned(),
                entry["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn running(member: &str) -> Vec<(String, String)> {
    vec![(member.to_owned(), "running".to_owned())]
}

/// Starts `member` detached; its port.
fn detach(project: &TestProject, member: &str) -> u16 {
    let started = project.run_serve_safe(&["-p", member, "--detach"]);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    started.stdout.trim().parse().expect("a port")
}

fn pid_of(project: &TestProject, member: &str) -> u32 {
    project.read_pid(member).expect("a .pid")
}

#[test]
fn p_limits_status_stop_restart_and_logs_to_one_member() {
    let (project, api_port, web_port) = two_server_workspace();
    assert_eq!(detach(&project, "api"), api_port);
    assert_eq!(detach(&project, "web"), web_port);
    let (api_pid, web_pid) = (pid_of(&project, "api"), pid_of(&project, "web"));

    // From the root: `-p` picks one; without it, `stop` will not guess.
    let status = project.run_portguard(&["status", "-p", "api", "--json"]);
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    assert_eq!(listed(&status), running("api"));
    let ambiguous = project.run_portguard(&["stop"]);
    assert_eq!(ambiguous.code(), Some(2), "{}", ambiguous.describe());
    for choice in ["api (package api)", "web (package web)"] {
        assert!(
            ambiguous.stderr.contains(choice),
            "lists {choice}:\n{}",
            ambiguous.describe()
        );
    }
    for args in [
        &["stop", "-p", "api", "--instance", "web"][..],
        &["status", "-p", "api", "--instance", "web"],
        &["restart", "-p", "api", "--instance", "web"],
    ] {
        let other = project.run_portguard(args);
        assert_eq!(other.code(), Some(2), "{args:?}: {}", other.describe());
        assert!(
            other.stderr.contains("does not belong to package `api`"),
            "{args:?}: {}",
            other.describe()
        );
    }
    assert!(process_alive(api_pid) && process_alive(web_pid));

    // `restart -p web` replaces web's server only.
    let restart = project.run_portguard(&["restart", "-p", "web"]);
    assert_eq!(restart.code(), Some(0), "{}", restart.describe());
    let new_web = pid_of(&project, "web");
    assert_ne!(new_web, web_pid, "web was not restarted");
    assert!(!process_alive(web_pid), "the old web server survived");
    assert_eq!(pid_of(&project, "api"), api_pid, "api was restarted too");
    assert_eq!(info(web_port)["pid"], new_web);

    // From api/: everything defaults to api.
    let status = portguard_in(&project, "api", &["status", "--json"]);
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    assert_eq!(listed(&status), running("api"));
    let listening = |port: u16| format!("fixture: listening on 127.0.0.1:{port}");
    let logs = portguard_in(&project, "api", &["logs"]);
    assert_eq!(logs.code(), Some(0), "{}", logs.describe());
    assert!(
        logs.stdout.contains(&listening(api_port)),
        "{}",
        logs.describe()
    );
    assert!(
        !logs.stdout.contains(&listening(web_port)),
        "{}",
        logs.describe()
    );
    let stop = portguard_in(&project, "api", &["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(stop.stderr.contains("Stopped `api`"), "{}", stop.describe());
    assert!(!process_alive(api_pid), "api survived its stop");
    assert!(process_alive(new_web), "stop in api/ stopped web");
    assert_eq!(info(web_port)["pid"], new_web);

    // From the root, `stop -p api` stops api only, and its log is still there after.
    let api_pid = {
        detach(&project, "api");
        pid_of(&project, "api")
    };
    let stop = project.run_portguard(&["stop", "-p", "api"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(stop.stderr.contains("Stopped `api`"), "{}", stop.describe());
    assert!(!stop.stderr.contains("`web`"), "{}", stop.describe());
    assert!(!process_alive(api_pid), "api survived its stop");
    assert!(process_alive(new_web), "stop -p api stopped web");
    let status = project.run_portguard(&["status", "--json"]);
    assert_eq!(listed(&status), running("web"));
    let logs = project.run_portguard(&["logs", "-p", "api"]);
    assert_eq!(logs.code(), Some(0), "{}", logs.describe());
    assert!(
        logs.stdout.contains(&listening(api_port)),
        "{}",
        logs.describe()
    );
    assert!(
        !logs.stdout.contains(&listening(web_port)),
        "{}",
        logs.describe()
    );

    let stop = project.run_portguard(&["stop", "--all"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(wait_until_port_free(web_port, Duration::from_secs(5)));
}
