//! Port selection end to end: `cargo-serve-safe` runs the fixture server, and each test checks
//! the port a user would see (the ready line, `.portguard/<instance>.json`, the server's own
//! `/info`) and what the server was handed (environment, socket at fd 3).
//!
//! Every port comes from the OS; a busy port is one this test holds.

use crate::support::{
    EXIT_TIMEOUT, FIXTURE_INSTANCE, READY_LINE, READY_TIMEOUT, Ready, Running, TestProject,
    free_port, hold_port, http_get, info, ready,
};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, TcpListener};

/// How portguard reports a port this test holds, holder included.
fn busy_by_me(port: u16) -> String {
    format!("{port} busy: pid {} `", std::process::id())
}

/// The ports a report of skipped ports names, in order: the report is `5000 busy: pid 1 `x`;
/// 5001 busy; port from the OS`, in parentheses after the ready line's url or after
/// `no free port: `.
fn reported_ports(line: &str) -> Vec<u16> {
    let report = line
        .split_once(" (")
        .or_else(|| line.split_once("no free port: "))
        .map_or("", |(_, report)| report);
    report
        .split("; ")
        .filter_map(|entry| entry.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Sets `[package.metadata.portguard]` to `metadata`, starts the fixture and waits until it
/// answers.
fn start_with(project: &TestProject, metadata: &str) -> (Running, Ready) {
    project.set_metadata(metadata);
    let server = project.serve(&[]);
    let ready = ready(project, &server);
    (server, ready)
}

/// That the ready line reports `busy`, in order, as skipped, each with this test as holder.
fn assert_skipped(ready: &Ready, busy: &[u16]) {
    assert_eq!(reported_ports(&ready.line), busy, "{}", ready.line);
    for &port in busy {
        assert!(ready.line.contains(&busy_by_me(port)), "{}", ready.line);
    }
}

#[test]
fn free_preferred_port_is_used() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let server = project.serve(&[]);
    let ready = ready(&project, &server);
    assert_eq!(ready.port, port);
    assert_eq!(
        ready.line,
        format!("Running on http://127.0.0.1:{port}"),
        "nothing was skipped, so nothing should be reported"
    );
    assert_eq!(http_get(port, "/health"), Ok((200, "ok\n".to_owned())));
}

#[test]
fn busy_preferred_port_falls_back_and_names_the_holder() {
    let project = TestProject::fixture();
    let (_held, busy) = hold_port();
    let fallback = free_port();
    let (_server, ready) = start_with(
        &project,
        &format!("preferred-port = {busy}\nfallback-ports = [{fallback}]"),
    );
    assert_eq!(ready.port, fallback, "{}", ready.line);
    assert_skipped(&ready, &[busy]);
    assert!(!ready.line.contains("port from the OS"), "{}", ready.line);
}

#[test]
fn every_candidate_busy_takes_a_port_from_the_os() {
    let project = TestProject::fixture();
    let held: Vec<(TcpListener, u16)> = (0..3).map(|_| hold_port()).collect();
    let busy: Vec<u16> = held.iter().map(|(_, port)| *port).collect();
    let (_server, ready) = start_with(
        &project,
        &format!(
            "preferred-port = {}\nfallback-ports = [{}, {}]",
            busy[0], busy[1], busy[2]
        ),
    );
    assert!(!busy.contains(&ready.port), "{}", ready.line);
    assert!(
        ready.line.ends_with("; port from the OS)"),
        "{}",
        ready.line
    );
    assert_skipped(&ready, &busy);
    assert_eq!(
        http_get(ready.port, "/health"),
        Ok((200, "ok\n".to_owned()))
    );
}

#[test]
fn max_attempts_stops_before_a_free_candidate() {
    let project = TestProject::fixture();
    let (_held_a, busy_a) = hold_port();
    let (_held_b, busy_b) = hold_port();
    let free = free_port();
    let (_server, ready) = start_with(
        &project,
        &format!(
            "preferred-port = {busy_a}\nfallback-ports = [{busy_b}, {free}]\nmax-attempts = 2"
        ),
    );
    assert_ne!(
        ready.port, free,
        "the third candidate is past max-attempts = 2: {}",
        ready.line
    );
    assert!(![busy_a, busy_b].contains(&ready.port), "{}", ready.line);
    assert!(ready.line.contains("port from the OS"), "{}", ready.line);
    assert_eq!(
        reported_ports(&ready.line),
        [busy_a, busy_b],
        "{}",
        ready.line
    );
}

#[test]
fn max_attempts_without_dynamic_port_is_no_free_port() {
    let project = TestProject::fixture();
    let (_held_a, busy_a) = hold_port();
    let (_held_b, busy_b) = hold_port();
    let free = free_port();
    project.set_metadata(&format!(
        "preferred-port = {busy_a}\nfallback-ports = [{busy_b}, {free}]\n\
         max-attempts = 2\ndynamic-port = false"
    ));
    let mut server = project.serve(&[]);
    let status = server
        .wait_exit(EXIT_TIMEOUT)
        .expect("with no port to have, cargo-serve-safe must exit");
    let stderr = server.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let error = stderr
        .lines()
        .find(|line| line.starts_with("error: no free port: "))
        .unwrap_or_else(|| panic!("no `no free port` error: {stderr}"));
    assert_eq!(
        reported_ports(error),
        [busy_a, busy_b],
        "max-attempts = 2 leaves out {free}: {error}"
    );
    assert!(error.contains(&busy_by_me(busy_a)), "{error}");
    for started in ["Starting", "Compiling", "Running"] {
        assert!(!stderr.contains(started), "{stderr}");
    }
    assert!(project.read_json(FIXTURE_INSTANCE).is_none());
    assert!(project.read_pid(FIXTURE_INSTANCE).is_none());
}

#[test]
fn port_held_on_ipv4_wildcard_is_busy_for_loopback() {
    let project = TestProject::fixture();
    let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind 0.0.0.0:0");
    let busy = held.local_addr().expect("local_addr").port();
    let fallback = free_port();
    let (_server, ready) = start_with(
        &project,
        &format!("preferred-port = {busy}\nfallback-ports = [{fallback}]"),
    );
    assert_eq!(ready.port, fallback, "{}", ready.line);
    assert_skipped(&ready, &[busy]);
}

#[test]
fn port_held_on_ipv6_loopback_is_busy_for_ipv4_loopback() {
    let project = TestProject::fixture();
    let Ok(held) = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) else {
        eprintln!("::1 cannot be bound on this machine: skipped");
        return;
    };
    let busy = held.local_addr().expect("local_addr").port();
    // The premise: 127.0.0.1 alone would let portguard take the port.
    drop(TcpListener::bind((Ipv4Addr::LOCALHOST, busy)).expect("127.0.0.1 is free"));
    let fallback = free_port();
    let (_server, ready) = start_with(
        &project,
        &format!("preferred-port = {busy}\nfallback-ports = [{fallback}]"),
    );
    assert_eq!(
        ready.port, fallback,
        "a browser asking for localhost could reach [::1]:{busy}: {}",
        ready.line
    );
    assert_skipped(&ready, &[busy]);
}

#[test]
fn port_range_is_tried_after_the_fallback_list() {
    let project = TestProject::fixture();
    let (_held_a, busy_a) = hold_port();
    let (_held_b, busy_b) = hold_port();
    let in_range = free_port();
    let (_server, ready) = start_with(
        &project,
        &format!(
            "preferred-port = {busy_a}\nfallback-ports = [{busy_b}]\n\
             port-range = \"{in_range}-{in_range}\""
        ),
    );
    assert_eq!(ready.port, in_range, "{}", ready.line);
    // Skipped ports are reported in the order they were tried.
    assert_eq!(
        reported_ports(&ready.line),
        [busy_a, busy_b],
        "{}",
        ready.line
    );
    assert!(!ready.line.contains("port from the OS"), "{}", ready.line);
}

#[test]
fn fallback_list_comes_before_port_range() {
    let project = TestProject::fixture();
    let (_held, busy) = hold_port();
    let fallback = free_port();
    let in_range = free_port();
    let (_server, ready) = start_with(
        &project,
        &format!(
            "preferred-port = {busy}\nfallback-ports = [{fallback}]\n\
             port-range = \"{in_range}-{in_range}\""
        ),
    );
    assert_eq!(ready.port, fallback, "{}", ready.line);
}

#[test]
fn socket_handoff_passes_a_listening_socket_at_fd_3() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let server = project.serve(&[]);
    let ready = ready(&project, &server);
    let info = &ready.info;
    assert_eq!(ready.port, port);
    assert_eq!(info["socket_from_fd3"], true, "{info}");
    assert_eq!(info["listen_fds"], "1", "{info}");
    assert_eq!(info["listen_fds_first_fd"], "3", "{info}");
    assert_eq!(info["listen_fdnames"], FIXTURE_INSTANCE, "{info}");
    assert_eq!(info["port_env"], port.to_string(), "{info}");
    assert_eq!(info["so_reuseport"], false, "{info}");

    let pid = info["pid"].as_u64().expect("pid in /info");
    assert_eq!(
        info["listen_pid"],
        pid.to_string(),
        "LISTEN_PID must be the server's own pid: {info}"
    );
    assert_eq!(
        project.read_pid(FIXTURE_INSTANCE).map(u64::from),
        Some(pid),
        "the .pid file names another process"
    );
    let json = project.read_json(FIXTURE_INSTANCE).expect(".json");
    assert_eq!(json["handoff"], "socket", "{json}");

    // While it runs, nothing else can have the port, SO_REUSEPORT or not.
    for host in [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED] {
        let error = TcpListener::bind((host, port)).expect_err("the port is the server's");
        assert_eq!(error.kind(), ErrorKind::AddrInUse, "{host}:{port}: {error}");
    }
    assert_eq!(
        bind_with_reuseport(port),
        Err(rustix::io::Errno::ADDRINUSE),
        "a socket with SO_REUSEPORT could share the server's port"
    );
}

/// Binds 127.0.0.1:`port` with `SO_REUSEADDR` and `SO_REUSEPORT`, as a second server that wants
/// to share a port would.
fn bind_with_reuseport(port: u16) -> Result<(), rustix::io::Errno> {
    use rustix::net::{AddressFamily, SocketType, bind, socket, sockopt};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_socket_reuseport(&fd, true)?;
    bind(&fd, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

#[test]
fn env_handoff_gives_port_and_portguard_variables() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let server = project.serve(&["--instance", "blue"]);
    // `ready` reads the default instance's .json; this run is instance `blue`.
    let stderr = server
        .wait_for_stderr(READY_LINE, READY_TIMEOUT)
        .unwrap_or_else(|stderr| panic!("no ready line; stderr:\n{stderr}"));
    assert!(
        stderr.contains("(env handoff, instance `blue`)"),
        "{stderr}"
    );
    let info = info(port);
    assert_eq!(info["port"], port, "{info}");
    assert_eq!(info["port_env"], port.to_string(), "{info}");
    assert_eq!(info["portguard_host"], "127.0.0.1", "{info}");
    assert_eq!(
        info["portguard_url"],
        format!("http://127.0.0.1:{port}"),
        "{info}"
    );
    assert_eq!(info["portguard_instance"], "blue", "{info}");
    assert_eq!(info["socket_from_fd3"], false, "{info}");
    for unset in [
        "listen_fds",
        "listen_pid",
        "listen_fdnames",
        "listen_fds_first_fd",
    ] {
        assert!(info[unset].is_null(), "{unset} should not be set: {info}");
    }

    let json = project.read_json("blue").expect("blue.json");
    assert_eq!(json["port"], port, "{json}");
    assert_eq!(json["handoff"], "env", "{json}");
    assert_eq!(json["pid"], info["pid"], "{json}");
    assert!(
        project.read_json(FIXTURE_INSTANCE).is_none(),
        "only instance `blue` runs"
    );
}
