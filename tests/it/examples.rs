//! The projects in `examples/`, as a user meets them: the std server the README's quick start
//! runs, end to end under portguard, and the axum server, built and served.

use std::time::Duration;

use crate::support::*;

/// Starts the example detached on a port from the OS, checks it, and stops it.
fn serve_check_stop(project: &TestProject, instance: &str, greeting: &str) {
    let port = free_port().to_string();
    let started = project.run_serve_safe(&["--detach", "--port", &port]);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    assert_eq!(started.stdout.trim(), port, "{}", started.describe());
    let port: u16 = port.parse().expect("a port");
    assert_eq!(http_get(port, "/health").map(|r| r.0), Ok(200));
    let (status, body) = http_get(port, "/").expect("GET /");
    assert_eq!(status, 200);
    assert!(body.contains(greeting), "{body}");
    let record = project
        .read_json(instance)
        .expect("a running instance has its record");
    assert_eq!(record["handoff"], "socket");
    #[cfg(target_os = "linux")]
    {
        // The server listens on the socket portguard bound, not on one of its own.
        let fd3 = std::fs::read_link(format!("/proc/{}/fd/3", record["pid"]))
            .expect("the server has fd 3");
        let fd3 = fd3.to_string_lossy();
        assert!(fd3.starts_with("socket:"), "{fd3}");
    }
    let stopped = project.run_portguard(&["portguard", "stop"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    assert!(wait_until_port_free(port, Duration::from_secs(5)));
    assert!(project.read_json(instance).is_none());
}

#[test]
fn the_quick_start_std_server_serves_through_the_handed_over_socket() {
    let project = TestProject::example("hello-server", kept_target_dir("example-hello-server"));
    serve_check_stop(&project, "hello-server", "Hello from hello-server");
}

#[test]
fn the_axum_example_builds_and_serves() {
    let project = TestProject::example("axum-server", kept_target_dir("example-axum-server"));
    // The first build fetches and compiles axum and tokio; later runs reuse the kept target dir.
    let build = run_within(
        project.command(cargo_bin(), &["build", "--locked"]),
        Duration::from_mins(15),
    );
    assert_eq!(build.code(), Some(0), "{}", build.describe());
    serve_check_stop(&project, "axum-server", "Hello from axum-server");
}
