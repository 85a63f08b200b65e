//! `cargo portguard init` end to end: projects it scaffolds build, run through the aliases it
//! writes (real cargo finding the binaries under test on PATH), and listen where it says.
//! These build servers: the axum one downloads and compiles axum once into a target dir kept
//! under `CARGO_TARGET_TMPDIR`, so later runs only rebuild the project itself.

use std::time::{Duration, Instant};

use crate::support::{
    COMMAND_TIMEOUT, Finished, Signal, TestProject, free_port, http_get, kept_target_dir,
    process_alive, ready_port, run_within, start_background, wait_until, wait_until_port_free,
};

/// Covers building a small std server (and the `toml` build-dependency) on two busy cores.
const BUILD_TIMEOUT: Duration = Duration::from_mins(5);

/// Covers downloading and compiling axum, tokio and hyper from nothing on two cores.
const AXUM_BUILD_TIMEOUT: Duration = Duration::from_mins(30);

fn assert_exit(run: &Finished, code: i32) {
    assert_eq!(run.code(), Some(code), "{}", run.describe());
}

/// `key=value` from the std responder's body.
fn field<'a>(body: &'a str, key: &str) -> &'a str {
    body.split_whitespace()
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {body:?}"))
}

/// What the test servers print on stdout once they listen, before `HOST:PORT`.
const LISTENING: &str = "listening on http://";

/// The port in a server's own `listening on http://HOST:PORT, ...` line on stdout.
fn listening_port(stdout: &str) -> u16 {
    let start = stdout.find(LISTENING).expect("a listening line") + LISTENING.len();
    stdout[start..]
        .split([',', '\n'])
        .next()
        .and_then(|addr| addr.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {stdout:?}"))
}

/// (a) A std server scaffolded by init runs with `cargo dev-safe`, serves through the socket
/// portguard hands over, shows in `cargo status` and goes with `cargo stop`: the aliases as a
/// user types them, through real cargo.
#[test]
fn a_scaffolded_std_server_runs_with_cargo_dev_safe_status_and_stop() {
    let project = TestProject::init_fixture("std-responder");
    project.set_metadata_on_free_port("");
    // As a user types it: cargo finds `cargo-portguard` on PATH.
    let init = run_within(project.user_cargo(&["portguard", "init"]), COMMAND_TIMEOUT);
    assert_exit(&init, 0);
    assert!(
        init.stderr
            .contains("Creating .cargo/config.toml: aliases dev-safe, force-start, stop, status"),
        "{}",
        init.describe()
    );

    let dev_safe = start_background(project.user_cargo(&["dev-safe"]));
    let port = ready_port(&dev_safe, BUILD_TIMEOUT);
    let (status, body) = http_get(port, "/").expect("GET / on the scaffolded server");
    assert_eq!(status, 200, "{body}");
    let pid: u32 = field(&body, "pid").parse().expect("a pid");
    assert_eq!(field(&body, "port"), port.to_string(), "{body}");
    // The socket was at fd 3 before the glue ran, and the glue's listener is that socket.
    assert_eq!(field(&body, "listen_fds"), "1", "{body}");
    assert_eq!(field(&body, "listener_fd"), "3", "{body}");
    let fd3 = std::fs::read_link(format!("/proc/{pid}/fd/3")).expect("the server's fd 3");
    let fd3 = fd3.display().to_string();
    assert!(fd3.starts_with("socket:["), "fd 3 is {fd3}");
    assert_eq!(field(&body, "fd3_at_start"), fd3, "{body}");

    let status = run_within(project.user_cargo(&["status"]), COMMAND_TIMEOUT);
    assert_exit(&status, 0);
    assert!(
        status.stdout.contains("pg-init-std: RUNNING")
            && status.stdout.contains(&format!("pid {pid} "))
            && status.stdout.contains(&format!("port {port},")),
        "{}",
        status.describe()
    );

    let stop = run_within(project.user_cargo(&["stop"]), COMMAND_TIMEOUT);
    assert_exit(&stop, 0);
    assert!(
        stop.stderr
            .contains(&format!("Stopped `pg-init-std` (server pid {pid})")),
        "{}",
        stop.describe()
    );
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "the server (pid {pid}) outlived `cargo stop`"
    );
    assert!(
        wait_until_port_free(port, Duration::from_secs(10)),
        "port {port} is still busy after `cargo stop`"
    );
    let mut dev_safe = dev_safe;
    assert!(
        dev_safe.wait_exit(Duration::from_secs(30)).is_some(),
        "`cargo dev-safe` is still running after `cargo stop`:\n{}",
        dev_safe.stderr()
    );
    let after = run_within(project.user_cargo(&["status"]), COMMAND_TIMEOUT);
    assert_exit(&after, 3);
}

/// (b) The axum glue compiles in a scaffolded project whose tokio has only the features an
/// axum app has (`macros`, `rt-multi-thread`), with no warning; the tokio glue too, beside it.
/// The server then serves, and SIGTERM ends it gracefully through `shutdown_signal()`.
#[test]
fn the_axum_glue_compiles_and_shuts_down_gracefully() {
    let project =
        TestProject::init_fixture("axum-app").with_target_dir(kept_target_dir("init-axum-target"));
    let init = project.init(&[]);
    assert_exit(&init, 0);
    assert!(init.stderr.contains("(axum glue)"), "{}", init.describe());
    let tokio = project.init(&["--framework", "tokio", "--glue-path", "src/tokio_glue.rs"]);
    assert_exit(&tokio, 0);
    let main = project.read_file("src/main.rs");
    project.write_file(
        "src/main.rs",
        format!(
            "{main}\n// Compiled, not called: the tokio glue builds with this tokio too.\n\
             mod tokio_glue;\n"
        ),
    );

    let started = Instant::now();
    let build = run_within(
        project.command(crate::support::cargo_bin(), &["build"]),
        AXUM_BUILD_TIMEOUT,
    );
    eprintln!("cargo build of the axum project: {:?}", started.elapsed());
    assert_exit(&build, 0);
    // A diagnostic about the project's own code points into src/; dependencies' are capped.
    assert!(
        !build.stderr.contains("--> src/"),
        "the glue compiles without warnings:\n{}",
        build.stderr
    );

    let binary = project.target_dir.join("debug/pg-init-axum");
    let mut command = project.command(&binary, &[]);
    command.env("PORT", "0");
    let mut server = start_background(command);
    let stdout = server
        .wait_for_stdout(LISTENING, Duration::from_secs(30))
        .unwrap_or_else(|out| panic!("no listening line: {out}\n{}", server.stderr()));
    let port = listening_port(&stdout);
    assert_eq!(
        http_get(port, "/"),
        Ok((200, "hello from axum\n".to_owned()))
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(server.pid() as i32).expect("a pid"),
        Signal::TERM,
    )
    .expect("SIGTERM to the server");
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.and_then(|status| status.code()),
        Some(0),
        "the server ends on SIGTERM with exit 0:\n{}\n{}",
        server.stdout(),
        server.stderr()
    );
    assert!(
        server.stdout().contains("pg-init-axum: stopped gracefully"),
        "{}",
        server.stdout()
    );
}

/// (c) With `--build-rs`, a plain `cargo run` (no portguard, PORT unset) listens on the
/// preferred port in Cargo.toml, and follows it when it changes: the build script bakes it in.
#[test]
fn with_build_rs_a_plain_cargo_run_listens_on_the_configured_port() {
    let project = TestProject::init_fixture("std-responder")
        .with_target_dir(kept_target_dir("init-build-rs-target"));
    let first = free_port();
    project.set_metadata(&format!("preferred-port = {first}"));
    let init = project.init(&["--build-rs"]);
    assert_exit(&init, 0);

    let mut ports = vec![first];
    // Then the port changes in Cargo.toml only: the glue's default from init is now stale.
    let second = loop {
        let port = free_port();
        if port != first {
            break port;
        }
    };
    ports.push(second);
    for (run, &port) in ports.iter().enumerate() {
        if run > 0 {
            let manifest = project.read_file("Cargo.toml");
            let mut doc: toml_edit::DocumentMut = manifest.parse().expect("TOML");
            doc["package"]["metadata"]["portguard"]["preferred-port"] =
                toml_edit::value(i64::from(port));
            project.write_file("Cargo.toml", doc.to_string());
        }
        let cargo_run = start_background(project.command(crate::support::cargo_bin(), &["run"]));
        let stdout = cargo_run
            .wait_for_stdout(LISTENING, BUILD_TIMEOUT)
            .unwrap_or_else(|out| panic!("no listening line: {out}\n{}", cargo_run.stderr()));
        assert_eq!(
            listening_port(&stdout),
            port,
            "run {run}: {stdout}\n{}",
            cargo_run.stderr()
        );
        assert!(stdout.contains("http://127.0.0.1:"), "{stdout}");
        let (status, body) = http_get(port, "/").unwrap_or_else(|err| {
            panic!(
                "run {run}: GET / on port {port}: {err}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                cargo_run.stdout(),
                cargo_run.stderr()
            )
        });
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            field(&body, "listen_fds"),
            "",
            "no socket was handed over: {body}"
        );
        drop(cargo_run);
        assert!(
            wait_until_port_free(port, Duration::from_secs(10)),
            "port {port} is still busy"
        );
    }
}

/// `--build-rs` in a workspace member whose preferred port comes from
/// `[workspace.metadata.portguard]` (init leaves it out of the member so as not to shadow it):
/// the build script must bake that port, which `cargo serve-safe` also tries first, not 5000.
/// Read from what the crate compiles with (`cargo build -vv`), so that nothing binds a port
/// the OS did not hand out.
#[test]
fn with_build_rs_a_workspace_member_bakes_the_workspace_port() {
    let project = TestProject::init_fixture("workspace")
        .with_target_dir(kept_target_dir("init-build-rs-target"));
    let port = free_port();
    let manifest = project.read_file("Cargo.toml");
    project.write_file(
        "Cargo.toml",
        manifest.replace("preferred-port = 6100", &format!("preferred-port = {port}")),
    );
    let init = project.init(&["-p", "api", "--build-rs"]);
    assert_exit(&init, 0);
    assert!(
        project
            .read_file("api/src/portguard.rs")
            .contains(&format!("    None => {port},\n")),
        "init's own default is the workspace port"
    );

    let build = run_within(
        project.command(crate::support::cargo_bin(), &["build", "-p", "api", "-vv"]),
        BUILD_TIMEOUT,
    );
    assert_exit(&build, 0);
    // With -vv cargo shows the environment the crate compiles with, which the build script set.
    let baked: Vec<&str> = build
        .stderr
        .split("PORTGUARD_BUILD_PORT=")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or(rest)
        })
        .collect();
    assert!(
        !baked.is_empty(),
        "the build script ran and set PORTGUARD_BUILD_PORT:\n{}",
        build.stderr
    );
    assert!(
        baked.iter().all(|value| *value == port.to_string()),
        "the build script baked PORTGUARD_BUILD_PORT={baked:?}, not the workspace's {port}, \
         so a plain `cargo run -p api` listens elsewhere than `cargo serve-safe` tries first"
    );
}
