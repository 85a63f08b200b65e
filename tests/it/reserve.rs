//! Per-user port reservations: no two starts get the same port, even in env handoff where the
//! server binds its port a moment after portguard chose it.

use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

#[test]
fn a_port_chosen_for_a_server_still_starting_is_skipped_by_other_projects() {
    let first = TestProject::fixture();
    let port = first.set_metadata_on_free_port("");
    let fallback = free_port();
    // The first server takes three seconds to bind: without a reservation the port looks free.
    let _slow = first.serve(&["--", "--delay-ms", "3000"]);
    assert!(
        wait_until(READY_TIMEOUT, || first
            .read_json(FIXTURE_INSTANCE)
            .is_some()),
        "the first start never recorded itself"
    );

    let second = TestProject::fixture();
    second.set_metadata(&format!(
        "preferred-port = {port}\nfallback-ports = [{fallback}]"
    ));
    let running = second.serve(&[]);
    let ready = ready(&second, &running);
    assert_eq!(ready.port, fallback, "{}", ready.line);
    assert!(
        ready
            .line
            .contains(&format!("{port} reserved by `fixture-server` in ")),
        "{}",
        ready.line
    );
}

#[test]
fn fifty_simultaneous_starts_preferring_one_port_get_fifty_ports_that_answer() {
    const STARTS: usize = 50;
    let project = TestProject::fixture();
    // Below the ephemeral range: fifty servers bind their own ports here (env handoff).
    let port = quiet_port_range(120);
    project.set_metadata(&format!(
        "preferred-port = {port}\nfallback-ports = []\nport-range = \"{port}-{}\"\nmax-attempts = 120",
        port + 119
    ));
    let children: Vec<_> = (0..STARTS)
        .map(|n| {
            let mut command = project.serve_safe(&["--detach", "--instance", &format!("copy-{n}")]);
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
            command.spawn().expect("start cargo-serve-safe")
        })
        .collect();
    let mut ports = Vec::new();
    for (n, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().expect("wait for cargo-serve-safe");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "start {n} failed:\n{stderr}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let port: u16 = stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("start {n}: {stdout:?}"));
        ports.push((n, port));
    }
    let mut distinct: Vec<u16> = ports.iter().map(|&(_, port)| port).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), STARTS, "a port was given twice: {ports:?}");
    for (n, port) in ports {
        let info = info(port);
        assert_eq!(
            info["portguard_instance"],
            format!("copy-{n}"),
            "port {port}: {info}"
        );
    }
    let stopped = project.run_portguard(&["stop", "--all"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    assert!(
        project
            .wait_until_no_process_left(Duration::from_secs(30))
            .is_ok()
    );
}

#[test]
fn a_port_from_the_os_leaves_no_reservation_file_behind() {
    let project = TestProject::fixture();
    // The only configured port is busy, so the OS picks one.
    let (_held, busy) = hold_port();
    project.set_metadata(&format!(
        "preferred-port = {busy}\nfallback-ports = []\ndynamic-port = true"
    ));
    let runtime = tempfile::tempdir().expect("create a runtime folder");
    let runtime_path = runtime.path().to_str().expect("UTF-8 path");
    let mut running = project.serve_with_env(&[], &[("XDG_RUNTIME_DIR", runtime_path)]);
    let ready = ready(&project, &running);
    assert_ne!(ready.port, busy);
    let reservation = runtime
        .path()
        .join(format!("portguard/port-{}.lock", ready.port));
    let label = std::fs::read_to_string(&reservation).expect("reserved while it runs");
    assert!(label.starts_with("`fixture-server` in "), "{label}");

    running.signal(Signal::TERM);
    let status = running
        .wait_exit(EXIT_TIMEOUT)
        .expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "{}", running.stderr());
    assert!(
        !reservation.exists(),
        "the reservation file of a port from the OS outlived its instance"
    );
}

#[test]
fn a_reservation_file_of_another_account_is_replaced_not_believed() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    let other = crate::other_account_or_skip!();
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let xdg = tempfile::tempdir().expect("create XDG_RUNTIME_DIR");
    let runtime = xdg.path().join("portguard");
    std::fs::create_dir(&runtime).expect("create the runtime folder");
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // Put there while the folder was open to others, and still locked by their process.
    let planted = runtime.join(format!("port-{port}.lock"));
    other.plant(&planted, b"`evil` in /elsewhere", 0o644);
    let held = std::fs::File::open(&planted).expect("open the planted file");
    fs4::FileExt::try_lock(&held).expect("lock the planted file");

    let mut command = project.serve_safe(&["--detach"]);
    command
        .env("XDG_RUNTIME_DIR", xdg.path())
        .env("HOME", xdg.path());
    let started = run_within(command, COMMAND_TIMEOUT);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    assert_eq!(
        started.stdout.trim(),
        port.to_string(),
        "{}",
        started.describe()
    );
    assert!(!started.stderr.contains("evil"), "{}", started.describe());
    let meta = std::fs::symlink_metadata(&planted).expect("a reservation file");
    assert_eq!(meta.uid(), users::my_uid(), "the file is this user's now");
    assert_eq!(meta.mode() & 0o777, 0o600);
    let stopped = project.run_portguard(&["stop"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
}
