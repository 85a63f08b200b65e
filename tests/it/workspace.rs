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
