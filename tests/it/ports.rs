//! `cargo portguard ports` end to end: each candidate of the fixture's configuration with its
//! state, the holder of a busy port (a listener this test holds, so the holder is this test's own
//! pid), a port reserved by a running instance, the port `serve-safe` would take, and that asking
//! starts, builds and writes nothing.
//!
//! Every port comes from the OS; a busy port is one this test holds.

use std::net::{Ipv4Addr, TcpListener};

use crate::support::{Finished, TestProject, free_port, hold_port, ready};
use serde_json::Value;

/// `cargo-portguard ports ARGS` in `project`, which must succeed.
fn ports(project: &TestProject, args: &[&str]) -> Finished {
    let mut all = vec!["ports"];
    all.extend_from_slice(args);
    let run = project.run_portguard(&all);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    run
}

/// `ports --json`, parsed.
fn ports_json(project: &TestProject, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let run = ports(project, &all);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|err| panic!("ports --json is not JSON ({err}): {}", run.describe()))
}

/// The words of the table row for `port`.
fn row(stdout: &str, port: u16) -> Vec<&str> {
    stdout
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|words| words.first() == Some(&port.to_string().as_str()))
        .unwrap_or_else(|| panic!("no row for port {port} in:\n{stdout}"))
}

/// The ports of `ports --json`'s candidates, in order.
fn candidate_ports(json: &Value) -> Vec<u64> {
    json["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("no candidates array: {json}"))
        .iter()
        .map(|candidate| candidate["port"].as_u64().expect("a port"))
        .collect()
}

#[test]
fn names_the_holder_of_a_busy_port_and_shows_free_ones_free() {
    let project = TestProject::fixture();
    let (_held, busy) = hold_port();
    let free = free_port();
    project.set_metadata(&format!(
        "preferred-port = {busy}\nfallback-ports = [{free}]"
    ));
    let run = ports(&project, &[]);
    let stdout = &run.stdout;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["PORT", "STATE", "HOLDER"],
        "{stdout}"
    );
    let busy_row = row(stdout, busy);
    assert_eq!(
        busy_row[1..4],
        ["busy", "pid", &std::process::id().to_string()],
        "{stdout}"
    );
    assert!(
        busy_row.len() > 4 && busy_row[4].starts_with('`'),
        "a command: {stdout}"
    );
    assert_eq!(
        row(stdout, free),
        [free.to_string().as_str(), "free"],
        "{stdout}"
    );
    assert_eq!(
        lines.last().copied(),
        Some(format!("serve-safe would use port {free} on 127.0.0.1").as_str()),
        "{stdout}"
    );
    // The rows are the candidates, in order: header, busy, free, a blank line, the answer.
    assert_eq!(lines.len(), 5, "{stdout}");
}

#[test]
fn json_gives_each_state_and_the_first_free_candidate() {
    let project = TestProject::fixture();
    let (_held_a, busy_a) = hold_port();
    let (_held_b, busy_b) = hold_port();
    let (free_a, free_b) = (free_port(), free_port());
    project.set_metadata(&format!(
        "preferred-port = {busy_a}\nfallback-ports = [{free_a}, {busy_b}, {free_b}]"
    ));
    let json = ports_json(&project, &[]);
    assert_eq!(json["host"], "127.0.0.1", "{json}");
    assert_eq!(
        candidate_ports(&json),
        [busy_a, free_a, busy_b, free_b].map(u64::from),
        "{json}"
    );
    let candidates = json["candidates"].as_array().expect("array");
    let states: Vec<&str> = candidates
        .iter()
        .map(|c| c["state"].as_str().expect("a state"))
        .collect();
    assert_eq!(states, ["busy", "free", "busy", "free"], "{json}");
    for busy in [&candidates[0], &candidates[2]] {
        assert_eq!(busy["pid"], std::process::id(), "{json}");
        assert!(
            busy["command"].as_str().is_some_and(|c| !c.is_empty()),
            "{json}"
        );
    }
    for free in [&candidates[1], &candidates[3]] {
        assert_eq!(
            crate::support::sorted_keys(free),
            ["port", "state"],
            "a free port has no holder: {json}"
        );
    }
    assert_eq!(json["would_use"], free_a, "{json}");
    assert_eq!(json["dynamic_port"], true, "{json}");
}

#[test]
fn with_every_candidate_busy_it_says_what_serve_safe_would_do() {
    let project = TestProject::fixture();
    let (_held_a, busy_a) = hold_port();
    let (_held_b, busy_b) = hold_port();
    project.set_metadata(&format!(
        "preferred-port = {busy_a}\nfallback-ports = [{busy_b}]"
    ));
    let json = ports_json(&project, &[]);
    assert_eq!(json["would_use"], Value::Null, "{json}");
    assert_eq!(json["dynamic_port"], true, "{json}");
    let text = ports(&project, &[]).stdout;
    assert!(
        text.ends_with(
            "\nserve-safe would use a port from the OS on 127.0.0.1: no candidate is free\n"
        ),
        "{text}"
    );

    project.set_metadata(&format!(
        "preferred-port = {busy_a}\nfallback-ports = [{busy_b}]\ndynamic-port = false"
    ));
    let json = ports_json(&project, &[]);
    assert_eq!(json["would_use"], Value::Null, "{json}");
    assert_eq!(json["dynamic_port"], false, "{json}");
    let text = ports(&project, &[]).stdout;
    assert!(
        text.contains("serve-safe would find no port on 127.0.0.1"),
        "{text}"
    );
}

#[test]
fn port_and_env_flags_choose_the_candidates_as_run_does() {
    let project = TestProject::fixture();
    let (base, dev_fallback, flag, max) = (free_port(), free_port(), free_port(), free_port());
    project.set_metadata(&format!(
        "preferred-port = {base}\nfallback-ports = []\n\
         [package.metadata.portguard.env.dev]\nfallback-ports = [{dev_fallback}]"
    ));
    let json = ports_json(&project, &[]);
    assert_eq!(candidate_ports(&json), [u64::from(base)], "{json}");
    let json = ports_json(&project, &["--env", "dev", "--port", &flag.to_string()]);
    assert_eq!(
        candidate_ports(&json),
        [flag, dev_fallback].map(u64::from),
        "{json}"
    );
    assert_eq!(json["would_use"], flag, "{json}");
    // The environment counts as it does for `run`.
    let mut command = project.portguard(&["ports", "--json"]);
    command.env("PORT", max.to_string());
    let run = crate::support::run_within(command, crate::support::COMMAND_TIMEOUT);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let json: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(candidate_ports(&json), [u64::from(max)], "{json}");
}

#[test]
fn an_env_range_replaces_the_package_candidates() {
    let project = TestProject::fixture();
    let start = crate::support::quiet_port_range(3);
    let (preferred, fallback, flag) = (free_port(), free_port(), free_port());
    project.set_metadata(&format!(
        "preferred-port = {preferred}\nfallback-ports = [{fallback}]\n\
         [package.metadata.portguard.env.ci]\nport-range = \"{start}-{}\"",
        start + 2
    ));
    let json = ports_json(&project, &["--env", "ci"]);
    let range = [start, start + 1, start + 2].map(u64::from);
    assert_eq!(candidate_ports(&json), range, "{json}");
    assert_eq!(json["would_use"], start, "{json}");
    // Without the environment the package's candidates stand.
    let json = ports_json(&project, &[]);
    assert_eq!(
        candidate_ports(&json),
        [preferred, fallback].map(u64::from),
        "{json}"
    );
    // A flag still sets its one key: the port first, then the range.
    let json = ports_json(&project, &["--env", "ci", "--port", &flag.to_string()]);
    let mut expected = vec![u64::from(flag)];
    expected.extend(range);
    assert_eq!(candidate_ports(&json), expected, "{json}");
}

#[test]
fn runs_nothing_and_writes_nothing() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let run = ports(&project, &[]);
    assert_eq!(row(&run.stdout, port), [port.to_string().as_str(), "free"]);
    for started in ["Starting", "Compiling", "Running", "Locked"] {
        assert!(!run.stderr.contains(started), "{}", run.describe());
    }
    assert!(
        !project.state_dir().exists(),
        "ports made {}",
        project.state_dir().display()
    );
    assert!(
        project.processes_left().is_empty(),
        "{:?}",
        project.processes_left()
    );
    // Nothing holds the port: the check closed every socket it opened.
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is still free");
}

#[test]
fn port_of_a_running_portguard_instance_is_not_free() {
    let running = TestProject::fixture();
    let port = running.set_metadata_on_free_port("");
    let server = running.serve(&[]);
    assert_eq!(ready(&running, &server).port, port);

    let other = TestProject::fixture();
    let fallback = free_port();
    other.set_metadata(&format!(
        "preferred-port = {port}\nfallback-ports = [{fallback}]"
    ));
    let json = ports_json(&other, &[]);
    let first = &json["candidates"][0];
    assert_eq!(first["port"], port, "{json}");
    // The per-user reservation says who holds the port (the instance, as its portguard wrote).
    assert_eq!(first["state"], "reserved", "{json}");
    let by = first["by"].as_str().unwrap_or_default();
    assert!(!by.is_empty(), "{json}");
    // In env handoff the server binds the port itself: it is the process listening there.
    let server_pid = running
        .read_pid(crate::support::FIXTURE_INSTANCE)
        .expect("pid");
    assert_eq!(first["pid"], server_pid, "{json}");
    let text = ports(&other, &[]).stdout;
    assert_eq!(row(&text, port)[1], "reserved", "{text}");
    assert_eq!(json["would_use"], fallback, "{json}");
}

#[test]
fn while_the_instance_runs_it_says_so_and_what_a_copy_would_take() {
    let project = TestProject::fixture();
    let (port, fallback) = (free_port(), free_port());
    project.set_metadata(&format!(
        "preferred-port = {port}\nfallback-ports = [{fallback}]"
    ));
    let json = ports_json(&project, &[]);
    assert_eq!(json["running"], Value::Null, "{json}");
    assert_eq!(json["would_use"], port, "{json}");

    let server = project.serve(&[]);
    assert_eq!(ready(&project, &server).port, port);
    let pid = project
        .read_pid(crate::support::FIXTURE_INSTANCE)
        .expect("pid");
    let json = ports_json(&project, &[]);
    assert_eq!(
        json["running"],
        serde_json::json!({
            "instance": crate::support::FIXTURE_INSTANCE,
            "pid": pid,
            "port": port,
        }),
        "{json}"
    );
    assert_eq!(json["would_use"], fallback, "{json}");
    let text = ports(&project, &[]).stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[lines.len() - 2..],
        [
            format!(
                "instance `{}` is already running (pid {pid}, port {port}): serve-safe would \
                 refuse to start it again",
                crate::support::FIXTURE_INSTANCE
            ),
            format!("a copy with `--instance NAME` would use port {fallback} on 127.0.0.1"),
        ],
        "{text}"
    );

    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    let json = ports_json(&project, &[]);
    assert_eq!(json["running"], Value::Null, "{json}");
    let text = ports(&project, &[]).stdout;
    assert!(
        text.ends_with(&format!(
            "\nserve-safe would use port {port} on 127.0.0.1\n"
        )),
        "{text}"
    );
    drop(server);
}

#[test]
fn a_port_the_os_refuses_is_not_permitted() {
    // Port 1 is privileged, unless this runs as root or the system lowered the limit.
    match TcpListener::bind((Ipv4Addr::LOCALHOST, 1)) {
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {}
        _ => {
            eprintln!("port 1 is not refused here: skipped");
            return;
        }
    }
    let project = TestProject::fixture();
    let free = free_port();
    project.set_metadata(&format!("preferred-port = 1\nfallback-ports = [{free}]"));
    let run = ports(&project, &[]);
    assert_eq!(
        row(&run.stdout, 1),
        ["1", "not", "permitted"],
        "{}",
        run.stdout
    );
    let json = ports_json(&project, &[]);
    assert_eq!(json["candidates"][0]["state"], "not_permitted", "{json}");
    assert_eq!(json["would_use"], free, "{json}");
}

#[test]
fn bad_input_exits_2_and_runs_nothing() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let mut command = project.portguard(&["ports"]);
    command.env("PORT", "abc");
    let run = crate::support::run_within(command, crate::support::EXIT_TIMEOUT);
    assert_eq!(run.code(), Some(2), "{}", run.describe());
    assert!(
        run.stderr
            .contains("error: invalid value `abc` for PORT (environment variable)"),
        "{}",
        run.describe()
    );
    assert!(run.stdout.is_empty(), "{}", run.describe());
    assert!(!project.state_dir().exists());
}

/// A reservation file `port-PORT.lock` in `runtime` holding `label`, locked as a running
/// portguard holds it for as long as the returned file is open.
fn held_reservation(runtime: &std::path::Path, port: u16, label: &[u8]) -> std::fs::File {
    let path = runtime.join(format!("port-{port}.lock"));
    std::fs::write(&path, label).expect("write the reservation");
    let file = std::fs::File::open(&path).expect("open the reservation");
    fs4::FileExt::try_lock(&file).expect("lock the reservation");
    file
}

#[test]
fn reservation_labels_are_shown_inert_and_only_this_users_are_believed() {
    use std::os::unix::fs::PermissionsExt as _;

    let other = crate::other_account_or_skip!();
    let project = TestProject::fixture();
    let (own, foreign) = (free_port(), free_port());
    project.set_metadata(&format!(
        "preferred-port = {own}\nfallback-ports = [{foreign}]"
    ));
    let xdg = tempfile::tempdir().expect("create XDG_RUNTIME_DIR");
    let runtime = xdg.path().join("portguard");
    std::fs::create_dir(&runtime).expect("create the runtime folder");
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let escapes = b"\x1b]0;pwned\x07`api` in /src\x1b[2J";
    let _own = held_reservation(&runtime, own, escapes);
    let _foreign = held_reservation(&runtime, foreign, escapes);
    std::fs::set_permissions(
        runtime.join(format!("port-{foreign}.lock")),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    other.own(&runtime.join(format!("port-{foreign}.lock")));

    let run = |args: &[&str]| {
        let mut all = vec!["ports"];
        all.extend_from_slice(args);
        let mut command = project.portguard(&all);
        command
            .env("XDG_RUNTIME_DIR", xdg.path())
            .env("HOME", xdg.path());
        let run = crate::support::run_within(command, crate::support::COMMAND_TIMEOUT);
        assert_eq!(run.code(), Some(0), "{}", run.describe());
        assert!(!run.stdout.contains('\x1b'), "a raw ESC: {:?}", run.stdout);
        assert!(!run.stderr.contains('\x1b'), "a raw ESC: {:?}", run.stderr);
        run.stdout
    };

    let text = run(&[]);
    let own_row = text
        .lines()
        .find(|line| line.starts_with(&format!("{own} ")))
        .unwrap_or_else(|| panic!("no row for {own}:\n{text}"));
    assert!(
        own_row.contains("reserved") && own_row.contains("\\u{1b}]0;pwned\\u{7}`api` in /src"),
        "{text}"
    );
    let foreign_row = text
        .lines()
        .find(|line| line.starts_with(&format!("{foreign} ")))
        .unwrap_or_else(|| panic!("no row for {foreign}:\n{text}"));
    assert!(
        foreign_row.contains("reserved")
            && foreign_row.contains(&format!("another user (uid {})", other.uid))
            && !foreign_row.contains("pwned"),
        "{text}"
    );

    let json: Value = serde_json::from_str(&run(&["--json"])).expect("JSON");
    let candidates = json["candidates"].as_array().expect("candidates");
    assert_eq!(
        candidates[0]["by"].as_str(),
        Some(String::from_utf8_lossy(escapes).as_ref()),
        "{json}"
    );
    let by = candidates[1]["by"].as_str().expect("a holder");
    assert!(!by.contains("pwned"), "{json}");
}
