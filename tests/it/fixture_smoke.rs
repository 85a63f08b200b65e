//! The fixture server on its own, without portguard: when a portguard test
//! fails, this tells whether the fixture itself can be trusted.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Kills the fixture if an assertion fails before the test stops it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the fixture binary and waits for its "listening" line.
fn start(mut command: std::process::Command) -> (Guard, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the fixture");
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the fixture's stdout");
    (guard, line)
}

#[test]
fn fixture_serves_health_and_info_on_port() {
    let started = Instant::now();
    let project = TestProject::fixture();
    eprintln!(
        "fixture copy ready (includes the one-time build if no other test came first): {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let output = project
        .command(cargo_bin(), &["build"])
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("cargo build of a new copy: {:?}", started.elapsed());
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("Compiling"),
        "a fresh copy should not recompile anything:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let port = free_port();
    let pid_file = project.root.join("fixture.pid");
    let mut command = project.command(
        fixture_binary(),
        &[
            "--write-pid-file",
            pid_file.to_str().expect("UTF-8 temp path"),
            "two words",
            "--unknown",
        ],
    );
    command.env("PORT", port.to_string());
    let (guard, line) = start(command);
    let pid = guard.0.id();
    assert_eq!(
        line.trim(),
        format!("fixture: listening on 127.0.0.1:{port} pid {pid}")
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file written"),
        format!("{pid}\n")
    );

    assert_eq!(http_get(port, "/health"), Ok((200, "ok\n".to_string())));
    assert_eq!(http_get(port, "/"), Ok((200, "fixture\n".to_string())));
    assert_eq!(
        http_get(port, "/nowhere").map(|(status, _)| status),
        Ok(404)
    );

    let (status, body) = http_get(port, "/info").expect("GET /info");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).expect("/info is JSON");
    assert_eq!(info["pid"], pid);
    assert_eq!(info["port"], port);
    assert_eq!(info["port_env"], port.to_string());
    assert_eq!(info["socket_from_fd3"], false);
    assert_eq!(info["so_reuseport"], false);
    for unset in [
        "listen_fds",
        "listen_pid",
        "listen_fdnames",
        "listen_fds_first_fd",
        "portguard_host",
        "portguard_url",
        "portguard_instance",
    ] {
        assert!(info[unset].is_null(), "{unset} should be null: {info}");
    }
    assert_eq!(
        info["args"],
        serde_json::json!([
            "--write-pid-file",
            pid_file.to_str().expect("UTF-8 temp path"),
            "two words",
            "--unknown"
        ])
    );

    drop(guard);
    assert!(wait_until(Duration::from_secs(5), || !process_alive(pid)));
    assert!(wait_until_port_free(port, Duration::from_secs(5)));
}

#[test]
fn fixture_exit_code_exits_before_binding() {
    let project = TestProject::fixture();
    let output = project
        .command(fixture_binary(), &["--exit-code", "7"])
        .output()
        .expect("run the fixture");
    assert_eq!(output.status.code(), Some(7));
    assert!(
        output.stdout.is_empty(),
        "it must not have started listening"
    );
}

#[test]
fn fixture_refuses_a_socket_meant_for_another_pid() {
    let project = TestProject::fixture();
    let output = project
        .command(fixture_binary(), &[])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .env("PORT", free_port().to_string())
        .output()
        .expect("run the fixture");
    assert_eq!(output.status.code(), Some(FIXTURE_CONTRACT_VIOLATION));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LISTEN_PID"), "stderr: {stderr}");
}

#[test]
fn fixture_without_port_fails_loudly() {
    let project = TestProject::fixture();
    let output = project
        .command(fixture_binary(), &[])
        .output()
        .expect("run the fixture");
    assert_eq!(output.status.code(), Some(FIXTURE_CONTRACT_VIOLATION));
}

unsafe extern "C" {
    fn dup2(old: i32, new: i32) -> i32;
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
}

#[test]
fn fixture_takes_a_socket_at_fd_3() {
    use std::os::unix::process::CommandExt;
    const F_SETFD: i32 = 2;

    let project = TestProject::fixture();
    let (listener, port) = hold_port();
    let fd = listener.as_raw_fd();
    let mut command = project.command(fixture_binary(), &["--ignore-sigterm"]);
    command
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "smoke")
        .env("PORT", port.to_string());
    // SAFETY: dup2 and fcntl are async-signal-safe, as pre_exec requires.
    // dup2 onto 3 leaves the copy open across exec; if the listener already
    // is fd 3, only its close-on-exec flag needs clearing.
    unsafe {
        command.pre_exec(move || {
            let rc = if fd == 3 {
                fcntl(3, F_SETFD, 0)
            } else {
                dup2(fd, 3)
            };
            if rc == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (guard, line) = start(command);
    drop(listener); // the fixture has its own copy now
    let pid = guard.0.id();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");

    let (status, body) = http_get(port, "/info").expect("GET /info");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).expect("/info is JSON");
    assert_eq!(info["socket_from_fd3"], true);
    assert_eq!(info["port"], port);
    assert_eq!(info["listen_fdnames"], "smoke");

    // Ignoring SIGTERM is what shutdown-timeout tests depend on.
    let target = rustix::process::Pid::from_raw(pid as i32).expect("nonzero pid");
    rustix::process::kill_process(target, Signal::TERM).expect("send SIGTERM");
    std::thread::sleep(Duration::from_millis(200));
    assert!(process_alive(pid), "SIGTERM should have been ignored");
    assert_eq!(http_get(port, "/health"), Ok((200, "ok\n".to_string())));
}
