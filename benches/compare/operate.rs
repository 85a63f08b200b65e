//! 3. Stop to free port against kill-port, 4. `status`, and 7. the restart gap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{Plan, START_TIMEOUT, log_path, serve_safe};
use crate::common::{Group, Peers, Row, Stats};
use crate::support::TestProject;
use crate::{common, support};

// ---------------------------------------------------------------------------
// 3. Stop to free port.

pub(super) fn stop_to_free_port(project: &TestProject, peers: &Peers, plan: &Plan) -> Vec<Row> {
    let port = support::quiet_port_range(1);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..plan.stop_rounds {
        start_detached(project, port, "socket");
        let started = Instant::now();
        let output = project
            .portguard(&["portguard", "stop"])
            .output()
            .expect("run cargo-portguard stop");
        assert!(
            output.status.success(),
            "stop: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        ours.push(common::wait_bindable(port, started));

        if let Ok(kill_port) = &peers.kill_port {
            let mut command = project.command(support::cargo_bin(), &["run"]);
            command.env("PORT", port.to_string());
            let mut server = Group::spawn(
                command,
                "`cargo run` for kill-port",
                &log_path(project, "kill-port"),
            );
            server.first_response(port, Instant::now(), START_TIMEOUT);
            let json = common::run_node(
                "kill-port-stop.mjs",
                &[&kill_port.path.to_string_lossy(), &port.to_string()],
            );
            let millis = json["ms"].as_f64().expect("ms");
            theirs.push(Duration::from_secs_f64(millis / 1e3));
            server.wait_exit(Duration::from_secs(10));
            assert!(support::wait_until_port_free(port, Duration::from_secs(10)));
        }
    }
    let ours = Stats::of(ours);
    let mut rows = vec![
        Row::timed(
            "3. stop to free port: `cargo-portguard portguard stop` (SIGTERM, the server exits at once)",
            ours,
        )
        .target(common::verdict("< 20 ms", ours.median < Duration::from_millis(20))),
    ];
    let what = "3. stop to free port: kill-port `killPort(port)` (SIGKILL via `lsof`), in node, node's start-up excluded";
    match &peers.kill_port {
        Ok(_) => {
            let theirs = Stats::of(theirs);
            rows.push(Row::timed(what, theirs).compared(common::versus(ours, theirs)));
        }
        Err(why) => rows.push(Row::skipped(what, why)),
    }
    rows
}

/// `cargo-serve-safe serve-safe --detach --port PORT` with `handoff`; returns once it answers.
pub(super) fn start_detached(project: &TestProject, port: u16, handoff: &str) {
    let mut command = serve_safe(project, port, handoff, &["--detach"]);
    let output = command.output().expect("start cargo-serve-safe --detach");
    assert!(
        output.status.success(),
        "detach: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        port.to_string()
    );
}

// ---------------------------------------------------------------------------
// 4. status.

pub(super) fn status(project: &TestProject, plan: &Plan) -> Row {
    let port = support::quiet_port_range(1);
    start_detached(project, port, "socket");
    let command = || project.portguard(&["portguard", "status", "--json"]);
    // One untimed run warms the page cache for the binary.
    common::timed_run(command(), "status");
    let timings = (0..plan.status_runs)
        .map(|_| common::timed_run(command(), "status --json"))
        .collect();
    let stopped = project.run_portguard(&["portguard", "stop"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    let stats = Stats::of(timings);
    Row::timed(
        "4. `cargo-portguard portguard status --json`, one instance, health probe of `/health`",
        stats,
    )
    .target(common::verdict(
        "< 5 ms",
        stats.median < Duration::from_millis(5),
    ))
}

// ---------------------------------------------------------------------------
// 7. The restart gap under a steady request loop.

/// What a request loop saw.
#[derive(Debug, Default, Clone)]
pub(super) struct Seen {
    answered: usize,
    refused: usize,
    /// Requests that failed otherwise (reset, cut off, timed out, not a 200), by how.
    failed: BTreeMap<String, usize>,
    /// The longest time between two successful responses (from the loop's start for the first).
    longest_wait: Duration,
}

pub(super) fn restart_gap(project: &TestProject, plan: &Plan) -> Vec<Row> {
    let ports = [support::quiet_port_range(1), support::quiet_port_range(1)];
    let modes = ["socket", "env"];
    let mut servers: Vec<Group> = modes
        .iter()
        .zip(ports)
        .map(|(mode, port)| {
            let mut group = Group::spawn(
                serve_safe(project, port, mode, &["--instance", mode]),
                &format!("cargo-serve-safe ({mode} handoff)"),
                &log_path(project, &format!("restart-{mode}")),
            );
            group.first_response(port, Instant::now(), START_TIMEOUT);
            group
        })
        .collect();
    let mut seen: [Vec<Seen>; 2] = [Vec::new(), Vec::new()];
    let mut took: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..plan.restart_rounds {
        for (index, mode) in modes.iter().enumerate() {
            let (round, restart) = restart_under_load(project, mode, ports[index]);
            seen[index].push(round);
            took[index].push(restart);
        }
    }
    for (server, port) in servers.iter_mut().zip(ports) {
        server.stop(Some(port));
    }

    let mut rows = Vec::new();
    for (index, mode) in modes.iter().enumerate() {
        let rounds = &seen[index];
        let refused: Vec<usize> = rounds.iter().map(|seen| seen.refused).collect();
        let mut sorted = refused.clone();
        sorted.sort_unstable();
        let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
        for (how, count) in rounds.iter().flat_map(|seen| &seen.failed) {
            *failed.entry(how).or_default() += count;
        }
        let failed = if failed.is_empty() {
            "none failed otherwise".to_owned()
        } else {
            let hows: Vec<String> = failed
                .iter()
                .map(|(how, count)| format!("{count} {how}"))
                .collect();
            format!("failed otherwise: {}", hows.join(", "))
        };
        let answered: usize = rounds.iter().map(|seen| seen.answered).sum();
        let total_refused: usize = refused.iter().sum();
        let mut row = Row {
            what: format!(
                "7. `cargo-portguard portguard restart` under a request loop, {mode} handoff: refused connections a restart"
            ),
            median: sorted[sorted.len() / 2].to_string(),
            p90: sorted[sorted.len() * 9 / 10].to_string(),
            runs: rounds.len().to_string(),
            compared: format!("{total_refused} refused, {failed}, {answered} answered in all"),
            ..Row::default()
        };
        if *mode == "socket" {
            row = row.target(common::verdict("0", total_refused == 0));
        }
        rows.push(row);
        let waits = Stats::of(rounds.iter().map(|seen| seen.longest_wait).collect());
        let restarts = Stats::of(took[index].clone());
        rows.push(
            Row::timed(
                format!("7. the same: longest wait between two responses, {mode} handoff"),
                waits,
            )
            .compared(format!(
                "`restart` itself: {} median",
                common::show(restarts.median)
            )),
        );
    }
    rows
}

/// One restart of instance `mode` while a thread sends `GET /` back to back, each on a fresh
/// connection (after a failure it pauses 1 ms, so that it does not take a core from the
/// restart): what the loop saw, and how long `restart` took.
pub(super) fn restart_under_load(project: &TestProject, mode: &str, port: u16) -> (Seen, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let requests = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || request_loop(port, &stop))
    };
    // Steady state first.
    thread::sleep(Duration::from_millis(100));
    let restart = common::timed_run(
        project.portguard(&["portguard", "restart", "--instance", mode]),
        "restart",
    );
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let seen = requests.join().expect("the request loop");
    (seen, restart)
}

pub(super) fn request_loop(port: u16, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match support::http_get_within(port, "/", Duration::from_secs(10)) {
            Ok((200, _)) => {
                seen.answered += 1;
                seen.longest_wait = seen.longest_wait.max(last.elapsed());
                last = Instant::now();
            }
            Err(error) if error.kind == std::io::ErrorKind::ConnectionRefused => {
                seen.refused += 1;
                thread::sleep(Duration::from_millis(1));
            }
            other => {
                let how = match other {
                    Ok((status, _)) => format!("HTTP {status}"),
                    Err(error) => format!("{:?}", error.kind),
                };
                *seen.failed.entry(how).or_default() += 1;
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    seen
}
