//! What `cargo portguard generate` writes, put to the tools that consume it: the systemd units
//! run the example server under `systemd-socket-activate`, and the Kubernetes manifests pass
//! `kubernetes-validate`'s schemas and say what the configuration says.
//!
//! A missing tool skips the part that needs it, with a note on stderr, so that `cargo test`
//! passes on a machine without them; `PORTGUARD_REQUIRE_DEPLOY_TOOLS=1` (set by `.ci/run`)
//! turns that into a failure, so CI cannot pass by skipping.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use serde::Deserialize as _;
use yaml_serde::Value;

/// The Kubernetes release whose schemas the manifests must pass: one that the pinned
/// `kubernetes-validate` ships, and old enough that clusters still in support accept it.
const KUBERNETES_VERSION: &str = "1.33.0";

/// Covers building the std-only example into its kept target dir, from scratch the first time.
#[cfg(target_os = "linux")]
const BUILD_TIMEOUT: Duration = Duration::from_mins(5);

/// The validator loads every schema of one release; a cold start on a slow disk takes seconds.
const VALIDATE_TIMEOUT: Duration = Duration::from_mins(1);

fn deploy_tools_required() -> bool {
    std::env::var_os("PORTGUARD_REQUIRE_DEPLOY_TOOLS").is_some_and(|value| value == "1")
}

/// Fails the test when the tools are required, else leaves a note that it was skipped: a
/// skipped test passes, and without the note nobody would know it checked nothing.
fn tool_missing(what: &str) {
    assert!(
        !deploy_tools_required(),
        "{what}, and PORTGUARD_REQUIRE_DEPLOY_TOOLS=1 requires it (run .ci/run, which installs it)"
    );
    // Straight to the process's stderr: `eprintln!` goes to the test harness, which shows the
    // output of passing tests only under --nocapture.
    let _ = writeln!(
        std::io::stderr(),
        "note: {what}: skipped the checks that need it (.ci/run installs it; \
         PORTGUARD_REQUIRE_DEPLOY_TOOLS=1 makes this a failure)"
    );
}

/// A copy of `examples/hello-server` without the files `generate` would write, so that every
/// assertion is about what this run generated, not about what the example ships.
fn hello_server() -> TestProject {
    let project = TestProject::example("hello-server", kept_target_dir("deploy-hello"));
    for generated in ["deploy", "Dockerfile", ".dockerignore"] {
        let path = project.root.join(generated);
        if path.is_dir() {
            fs::remove_dir_all(&path).expect("remove the example's deploy folder");
        } else if path.exists() {
            fs::remove_file(&path).expect("remove a generated file of the example");
        }
    }
    project
}

/// Edits the example's `[package.metadata.portguard]` in place: `set_metadata` would replace
/// the manifest's tail, which here holds `[dependencies]` and `[workspace]`.
fn edit_metadata(project: &TestProject, edit: impl FnOnce(&mut toml_edit::Table)) {
    let path = project.manifest_path();
    let mut manifest: toml_edit::DocumentMut = fs::read_to_string(&path)
        .expect("read Cargo.toml")
        .parse()
        .expect("the example's Cargo.toml is TOML");
    let table = manifest["package"]["metadata"]["portguard"]
        .as_table_mut()
        .expect("the example has a [package.metadata.portguard] table");
    edit(table);
    fs::write(&path, manifest.to_string()).expect("write Cargo.toml");
}

fn generate(project: &TestProject, args: &[&str]) {
    let mut all = vec!["portguard", "generate"];
    all.extend_from_slice(args);
    let generated = project.run_portguard(&all);
    assert_eq!(generated.code(), Some(0), "{}", generated.describe());
}

// ---------------------------------------------------------------------------
// systemd (`systemd-socket-activate` exists on Linux only)

/// `systemd-analyze verify` loads the units as systemd would (every key known, values well
/// formed, the socket and the service naming each other); it needs `ExecStart` to exist, so
/// the units point at a stand-in binary of the same name.
#[cfg(target_os = "linux")]
#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let project = hello_server();
    let bin_dir = tempfile::tempdir().expect("create a bin dir");
    stand_in(bin_dir.path());
    let verified = verify(&analyze, &project, bin_dir.path());
    assert_eq!(verified.code(), Some(0), "{}", verified.describe());
    assert!(verified.stderr.trim().is_empty(), "{}", verified.describe());
}

/// A folder whose name systemd would split at the space and expand at the `%`, unless
/// `ExecStart` quotes and escapes it: verify finds the binary only at the path meant.
#[cfg(target_os = "linux")]
#[test]
fn a_bin_dir_with_a_space_and_a_percent_passes_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let project = hello_server();
    let root = tempfile::tempdir().expect("create a bin dir");
    let bin_dir = root.path().join("my app 100%n");
    fs::create_dir(&bin_dir).expect("create the folder with a space");

    // Without the binary, verify says the ExecStart path is missing: it does look.
    let missing = verify(&analyze, &project, &bin_dir);
    assert_ne!(missing.code(), Some(0), "{}", missing.describe());
    let path = bin_dir.join("hello-server");
    assert!(
        missing.stderr.contains(path.to_str().expect("UTF-8 path")),
        "verify names the path ExecStart resolves to: {}",
        missing.describe()
    );

    stand_in(&bin_dir);
    let verified = verify(&analyze, &project, &bin_dir);
    assert_eq!(verified.code(), Some(0), "{}", verified.describe());
    assert!(verified.stderr.trim().is_empty(), "{}", verified.describe());
    let text = project.read_file("deploy/systemd/hello-server.service");
    let exec = unit_value(&unit_settings(&text), "Service", "ExecStart", &text).to_owned();
    assert_eq!(
        crate::generate::systemd_command_line(&exec),
        [path.to_str().expect("UTF-8 path")],
        "{text}"
    );
}

#[cfg(target_os = "linux")]
fn systemd_analyze() -> Option<PathBuf> {
    let found = which::which("systemd-analyze").ok();
    if found.is_none() {
        tool_missing("systemd-analyze is not on PATH");
    }
    found
}

/// An executable `hello-server` in `dir` that does nothing.
#[cfg(target_os = "linux")]
fn stand_in(dir: &Path) {
    let stand_in = dir.join("hello-server");
    fs::write(&stand_in, "#!/bin/sh\nexit 0\n").expect("write the stand-in");
    fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("make the stand-in executable");
}

/// Generates the units with `--bin-dir bin_dir` and runs `systemd-analyze verify` on them.
#[cfg(target_os = "linux")]
fn verify(analyze: &Path, project: &TestProject, bin_dir: &Path) -> Finished {
    generate(
        project,
        &[
            "systemd",
            "--bin-dir",
            bin_dir.to_str().expect("UTF-8 path"),
        ],
    );
    let units = project.root.join("deploy/systemd");
    let mut command = Command::new(analyze);
    command
        .arg("verify")
        .arg(units.join("hello-server.socket"))
        .arg(units.join("hello-server.service"));
    run_within(command, VALIDATE_TIMEOUT)
}

/// What the socket unit tells `systemd-socket-activate`: `ListenStream=` and
/// `FileDescriptorName=`.
#[cfg(target_os = "linux")]
struct SocketUnit {
    listen: String,
    fd_name: String,
}

/// Generates the units for the example on `port` and checks what the configuration decides in
/// them.
#[cfg(target_os = "linux")]
fn systemd_units(project: &TestProject, port: u16) -> SocketUnit {
    edit_metadata(project, |table| {
        table.insert("preferred-port", toml_edit::value(i64::from(port)));
        table.insert("host", toml_edit::value("127.0.0.1"));
        table.insert("shutdown-timeout-ms", toml_edit::value(4321));
    });
    generate(project, &["systemd"]);

    let socket_text = project.read_file("deploy/systemd/hello-server.socket");
    let service_text = project.read_file("deploy/systemd/hello-server.service");
    for text in [&socket_text, &service_text] {
        assert!(text.starts_with("# Generated by portguard"), "{text}");
    }
    let socket = unit_settings(&socket_text);
    let service = unit_settings(&service_text);
    let listen = unit_value(&socket, "Socket", "ListenStream", &socket_text);
    assert_eq!(listen, format!("127.0.0.1:{port}"), "{socket_text}");
    // The example calls notify_ready(), so systemd may wait for READY=1 before it counts the
    // service as started.
    assert_eq!(
        unit_value(&service, "Service", "Type", &service_text),
        "notify"
    );
    assert_eq!(
        unit_value(&service, "Service", "ExecStart", &service_text),
        "/usr/local/bin/hello-server"
    );
    assert_eq!(
        unit_value(&service, "Service", "TimeoutStopSec", &service_text),
        "4321ms"
    );
    SocketUnit {
        listen: listen.to_owned(),
        fd_name: unit_value(&socket, "Socket", "FileDescriptorName", &socket_text).to_owned(),
    }
}

#[cfg(target_os = "linux")]
#[test]
fn the_systemd_units_socket_activate_the_example_server_which_notifies_readiness() {
    use std::os::unix::net::UnixDatagram;
    use std::os::unix::process::ExitStatusExt as _;

    let Ok(activate) = which::which("systemd-socket-activate") else {
        tool_missing("systemd-socket-activate is not on PATH");
        return;
    };
    let project = hello_server();
    let port = free_port();
    let SocketUnit { listen, fd_name } = systemd_units(&project, port);

    let build = run_within(
        project.command(cargo_bin(), &["build", "--locked", "--quiet"]),
        BUILD_TIMEOUT,
    );
    assert_eq!(build.code(), Some(0), "{}", build.describe());
    let binary = project.target_dir.join("debug").join("hello-server");

    let notify_dir = tempfile::Builder::new()
        .prefix("portguard-notify-")
        .tempdir()
        .expect("create a folder for the notify socket");
    let notify_path = notify_dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let mut command = project.command(
        &activate,
        &[
            "-l",
            &listen,
            &format!("--fdname={fd_name}"),
            "-E",
            &format!(
                "NOTIFY_SOCKET={}",
                notify_path.to_str().expect("a temp path is UTF-8")
            ),
        ],
    );
    // The server gets no other environment than -E's, LISTEN_* and TERM, PATH, USER and HOME:
    // systemd-socket-activate builds it from scratch, so NOTIFY_SOCKET must be passed this way.
    command.arg(&binary);
    let mut activated = start_background(command);
    let pid = activated.pid();

    // Nothing runs the server until the first connection arrives; refused means the listening
    // socket is not open yet.
    let mut answer = Err(String::new());
    let answered = wait_until(Duration::from_secs(10), || {
        answer = http_get(port, "/");
        answer.is_ok()
    });
    assert!(
        answered,
        "no answer on {listen}: {answer:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
        activated.stderr(),
        activated.stdout()
    );
    let (status, body) = answer.expect("checked above");
    assert_eq!(status, 200, "{body}");
    // Without --accept, systemd-socket-activate execs the server in its own place: the pid it
    // was started as is the server's, which is what LISTEN_PID names.
    assert!(
        body.contains(&format!("Hello from hello-server, pid {pid}.")),
        "the server is not the process that was started (pid {pid}): {body:?}"
    );

    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a timeout on the notify socket");
    let mut datagram = [0u8; 256];
    let received = notify
        .recv(&mut datagram)
        .expect("the server sends READY=1 to NOTIFY_SOCKET");
    assert_eq!(
        String::from_utf8_lossy(&datagram[..received]),
        "READY=1",
        "the notification the server sent"
    );

    let raw_pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid is never 0");
    rustix::process::kill_process(raw_pid, Signal::TERM).expect("send SIGTERM to the server");
    let exited = activated
        .wait_exit(Duration::from_secs(5))
        .expect("the server exits on SIGTERM");
    // The example leaves SIGTERM at its default action, as its docs say.
    assert_eq!(exited.signal(), Some(libc::SIGTERM), "{exited}");
    assert!(
        wait_until_port_free(port, Duration::from_secs(5)),
        "port {port} is still held after the server exited"
    );
}

// ---------------------------------------------------------------------------
// Kubernetes

/// The validator `.ci/run` installs, or the one `PORTGUARD_KUBERNETES_VALIDATE` names; `None`
/// (after `tool_missing`) when it is not there.
fn kubernetes_validate() -> Option<PathBuf> {
    let path = std::env::var_os("PORTGUARD_KUBERNETES_VALIDATE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/kubernetes-validate"),
        PathBuf::from,
    );
    if path.is_file() {
        Some(path)
    } else {
        tool_missing(&format!("kubernetes-validate is not at {}", path.display()));
        None
    }
}

/// `kubernetes-validate --strict`, which also rejects fields the schema does not know: a
/// misspelt field is otherwise dropped silently by the API server.
fn validate(validator: &Path, manifest: &Path) -> Finished {
    let mut command = Command::new(validator);
    command
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(manifest);
    run_within(command, VALIDATE_TIMEOUT)
}

/// Asserts that both objects of the manifest passed the schemas of `KUBERNETES_VERSION`.
fn assert_valid(validator: &Path, manifest: &Path) {
    let result = validate(validator, manifest);
    assert_eq!(result.code(), Some(0), "{}", result.describe());
    // Exit 0 alone would also follow a file in which nothing was recognised as an object.
    let output = format!("{}{}", result.stdout, result.stderr);
    for object in ["deployment/hello-server", "service/hello-server"] {
        assert!(
            output.contains(&format!("passed for resource {object}")),
            "{object} was not validated: {}",
            result.describe()
        );
    }
}

/// The Deployment and the Service in the manifest, in that order.
fn objects(text: &str) -> (Value, Value) {
    let documents: Vec<Value> = yaml_serde::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("the manifest is YAML"))
        .filter(|document| !document.is_null())
        .collect();
    match documents.as_slice() {
        [deployment, service]
            if deployment["kind"] == "Deployment" && service["kind"] == "Service" =>
        {
            (deployment.clone(), service.clone())
        }
        _ => panic!("expected a Deployment and a Service:\n{text}"),
    }
}

/// The number a probe's or the Service's `port` means: a number, or the name of a port of
/// `container`.
fn port_number(port: &Value, container: &Value) -> Option<u64> {
    if let Some(number) = port.as_u64() {
        return Some(number);
    }
    let name = port.as_str()?;
    container["ports"]
        .as_sequence()?
        .iter()
        .find(|declared| declared["name"] == name)?["containerPort"]
        .as_u64()
}

/// Whether every label `selector` asks for is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .is_some_and(|wanted| !wanted.is_empty() && wanted.iter().all(|(k, v)| &labels[k] == v))
}

/// Checks what every manifest must say, whatever the configuration: one container, `PORT`,
/// the Service reaching the pods. Returns the container.
fn check_common(deployment: &Value, service: &Value, port: u16, text: &str) -> Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap_or_else(|| panic!("the Deployment has containers:\n{text}"));
    let [container] = containers.as_slice() else {
        panic!("expected one container:\n{text}");
    };
    let port = u64::from(port);
    assert_eq!(
        port_number(&container["ports"][0]["containerPort"], container),
        Some(port),
        "{text}"
    );
    let env_port = container["env"]
        .as_sequence()
        .and_then(|env| env.iter().find(|var| var["name"] == "PORT"))
        .unwrap_or_else(|| panic!("the container gets PORT:\n{text}"));
    // Environment values are strings to Kubernetes: a bare number fails the schema.
    assert_eq!(env_port["value"].as_str(), Some(port.to_string().as_str()));

    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(
        selects(&deployment["spec"]["selector"]["matchLabels"], pod_labels),
        "the Deployment's selector does not match its own pods:\n{text}"
    );
    assert!(
        selects(&service["spec"]["selector"], pod_labels),
        "the Service's selector matches none of the Deployment's pods:\n{text}"
    );
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["port"].as_u64(), Some(port), "{text}");
    assert_eq!(
        port_number(&service_port["targetPort"], container),
        Some(port),
        "the Service forwards elsewhere than the container's port:\n{text}"
    );
    container.clone()
}

#[test]
fn kubernetes_manifests_with_a_health_path_probe_it_and_pass_the_schemas() {
    let project = hello_server();
    let port = free_port();
    edit_metadata(&project, |table| {
        table.insert("preferred-port", toml_edit::value(i64::from(port)));
        table.insert("health-path", toml_edit::value("/health"));
        table.insert("shutdown-timeout-ms", toml_edit::value(4500));
    });
    generate(&project, &["kubernetes", "--replicas", "3"]);
    let path = project.root.join("deploy/kubernetes/hello-server.yaml");
    let text = project.read_file(&path);
    assert!(text.starts_with("# Generated by portguard"), "{text}");

    let (deployment, service) = objects(&text);
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(3), "{text}");
    // 4500 ms rounded up: rounding down would SIGKILL the server before its time is up.
    assert_eq!(
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64(),
        Some(5),
        "{text}"
    );
    let container = check_common(&deployment, &service, port, &text);
    for probe in ["readinessProbe", "livenessProbe"] {
        let http = &container[probe]["httpGet"];
        assert_eq!(http["path"].as_str(), Some("/health"), "{probe}:\n{text}");
        assert_eq!(
            port_number(&http["port"], &container),
            Some(u64::from(port)),
            "{probe}:\n{text}"
        );
        assert!(container[probe]["tcpSocket"].is_null(), "{probe}:\n{text}");
    }

    if let Some(validator) = kubernetes_validate() {
        assert_valid(&validator, &path);
    }
}

#[test]
fn kubernetes_manifests_without_a_health_path_probe_the_port_and_pass_the_schemas() {
    let project = hello_server();
    let port = free_port();
    edit_metadata(&project, |table| {
        table.insert("preferred-port", toml_edit::value(i64::from(port)));
        table.remove("health-path");
        table.insert("shutdown-timeout-ms", toml_edit::value(250));
    });
    generate(&project, &["kubernetes"]);
    let path = project.root.join("deploy/kubernetes/hello-server.yaml");
    let text = project.read_file(&path);

    let (deployment, service) = objects(&text);
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(1), "{text}");
    // Zero would mean SIGKILL at once: a short timeout still gets a second.
    assert_eq!(
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64(),
        Some(1),
        "{text}"
    );
    let container = check_common(&deployment, &service, port, &text);
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            port_number(&container[probe]["tcpSocket"]["port"], &container),
            Some(u64::from(port)),
            "{probe}:\n{text}"
        );
        assert!(container[probe]["httpGet"].is_null(), "{probe}:\n{text}");
    }

    if let Some(validator) = kubernetes_validate() {
        assert_valid(&validator, &path);
    }
}

/// The validator is only worth its exit 0 if it says no to a broken manifest: one with a
/// wrong type, and one with a field the schema does not know (what `--strict` is for).
#[test]
fn kubernetes_validate_rejects_broken_manifests() {
    let Some(validator) = kubernetes_validate() else {
        return;
    };
    let project = hello_server();
    let port = free_port();
    edit_metadata(&project, |table| {
        table.insert("preferred-port", toml_edit::value(i64::from(port)));
    });
    generate(&project, &["kubernetes"]);
    let text = project.read_file("deploy/kubernetes/hello-server.yaml");

    let breakages = [
        (
            format!("containerPort: {port}\n"),
            "containerPort: \"abc\"\n",
            "containerPort",
        ),
        (
            "periodSeconds: 5\n".to_owned(),
            "periodSecondz: 5\n",
            "periodSecondz",
        ),
    ];
    for (index, (good, bad, culprit)) in breakages.iter().enumerate() {
        assert!(
            text.contains(good.as_str()),
            "no {good:?} to break in:\n{text}"
        );
        let broken = project.root.join(format!("broken-{index}.yaml"));
        fs::write(&broken, text.replacen(good.as_str(), bad, 1)).expect("write a broken manifest");
        let result = validate(&validator, &broken);
        assert_ne!(
            result.code(),
            Some(0),
            "{culprit}: the validator accepted a broken manifest\n{}",
            result.describe()
        );
        let output = format!("{}{}", result.stdout, result.stderr);
        assert!(
            output.contains(culprit),
            "the validator failed without naming {culprit}:\n{}",
            result.describe()
        );
    }
}
