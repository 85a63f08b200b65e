//! portguard beside the tools people use for the same jobs today, in one run: `cargo run`,
//! systemfd, npm's get-port and kill-port. Run with `cargo bench --bench compare` (install the
//! peers first with `scripts/install-bench-peers.sh`; a missing one is skipped with a note). It
//! prints a table and rewrites its section of BENCHMARKS.md.
//!
//! Everything runs the example server of the README's quick start (`examples/hello-server`,
//! std only), copied to a temp dir and built once, in the dev profile, before anything is
//! timed: every `cargo run` below only checks that it is fresh. The portguard binaries are the
//! release builds `cargo bench` makes, called as cargo calls them (`cargo-serve-safe
//! serve-safe`); one row goes through `cargo serve-safe` for cargo's own dispatch.
//!
//! Environment:
//! - `PORTGUARD_BENCH_QUICK=1`: a few rounds of each measurement, a 2 s idle window; the table
//!   is printed, BENCHMARKS.md is left alone.
//! - `PORTGUARD_BENCH_ONLY=start,select,stop,status,fifty,footprint,restart`: only those (for
//!   working on one); BENCHMARKS.md is left alone.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Group, Peers, Row, Stats};
use portguard::port;
use portguard::reserve::Reservations;
use support::TestProject;

/// Bound on the wait for the first response of a start (nothing compiles).
const START_TIMEOUT: Duration = Duration::from_mins(1);

/// How many of each measurement: the full run, or `PORTGUARD_BENCH_QUICK=1`.
struct Plan {
    quick: bool,
    only: Option<Vec<String>>,
    start_rounds: usize,
    select_runs: usize,
    stop_rounds: usize,
    status_runs: usize,
    starts: usize,
    idle: Duration,
    restart_rounds: usize,
}

impl Plan {
    fn from_env() -> Self {
        let quick = std::env::var_os("PORTGUARD_BENCH_QUICK").is_some_and(|v| v != "0");
        let only = std::env::var("PORTGUARD_BENCH_ONLY")
            .ok()
            .filter(|list| !list.trim().is_empty())
            .map(|list| list.split(',').map(|item| item.trim().to_owned()).collect());
        if quick {
            Plan {
                quick,
                only,
                start_rounds: 3,
                select_runs: 100,
                stop_rounds: 3,
                status_runs: 11,
                starts: 10,
                idle: Duration::from_secs(2),
                restart_rounds: 2,
            }
        } else {
            Plan {
                quick,
                only,
                start_rounds: 31,
                select_runs: 1000,
                stop_rounds: 21,
                status_runs: 101,
                starts: 50,
                idle: Duration::from_secs(10),
                restart_rounds: 7,
            }
        }
    }

    fn wants(&self, item: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|name| name == item))
    }
}

fn main() {
    let plan = Plan::from_env();
    let peers = Peers::find();
    eprintln!("{}", peers.describe());
    let project = TestProject::example(
        "hello-server",
        support::kept_target_dir("bench-hello-server"),
    );
    build_example(&project);

    let mut rows = Vec::new();
    if plan.wants("start") {
        rows.extend(first_response(&project, &peers, &plan));
    }
    if plan.wants("select") {
        rows.extend(port_selection(&peers, &plan));
    }
    if plan.wants("stop") {
        rows.extend(stop_to_free_port(&project, &peers, &plan));
    }
    if plan.wants("status") {
        rows.push(status(&project, &plan));
    }
    if plan.wants("fifty") {
        rows.extend(simultaneous_starts(&project, &peers, &plan));
    }
    if plan.wants("footprint") {
        rows.extend(footprint(&project, &peers, &plan));
    }
    if plan.wants("restart") {
        rows.extend(restart_gap(&project, &plan));
    }

    let section = format!(
        "{} The example server runs in the dev profile (as `cargo run` builds it), built before \
         the timing starts.\n\n{}",
        peers.describe(),
        common::table(&rows)
    );
    println!("{section}");
    if plan.quick || plan.only.is_some() {
        eprintln!("BENCHMARKS.md left alone: PORTGUARD_BENCH_QUICK or PORTGUARD_BENCH_ONLY is set");
    } else {
        support::write_bench_section("compare", &section);
    }
}

/// Builds the example once (dev profile), so that no timed `cargo run` compiles anything.
fn build_example(project: &TestProject) {
    let build = support::run_within(
        project.command(support::cargo_bin(), &["build", "--quiet"]),
        Duration::from_mins(10),
    );
    assert_eq!(build.code(), Some(0), "{}", build.describe());
}

/// `cargo-serve-safe serve-safe ARGS` on the example with only `port` as a candidate (then a
/// port from the OS, which the probe on `port` would never see answer) and `handoff`.
fn serve_safe(project: &TestProject, port: u16, handoff: &str, extra: &[&str]) -> Command {
    let port = port.to_string();
    let mut args = vec!["--port", port.as_str()];
    args.extend_from_slice(extra);
    let mut command = project.serve_safe(&args);
    command
        .env("PORTGUARD_HANDOFF", handoff)
        .env("FALLBACK_PORTS", "");
    command
}

fn log_path(project: &TestProject, name: &str) -> std::path::PathBuf {
    project.dir.path().join(format!("bench-{name}.log"))
}

// ---------------------------------------------------------------------------
// 1. Time to first HTTP response.

/// How a start is made (or why it cannot be), and what it is called in the table.
struct Variant<'a> {
    what: String,
    command: Result<Box<dyn Fn(u16) -> Command + 'a>, String>,
    /// Held to the target: within 3 ms of `cargo run`.
    targeted: bool,
    timings: Vec<Duration>,
}

impl<'a> Variant<'a> {
    fn new(what: &str, command: Result<Box<dyn Fn(u16) -> Command + 'a>, String>) -> Self {
        Variant {
            what: what.to_owned(),
            command,
            targeted: false,
            timings: Vec::new(),
        }
    }
}

/// The starts compared, `cargo run` first: each runs the example on the port it is given.
fn start_variants<'a>(project: &'a TestProject, peers: &Peers) -> Vec<Variant<'a>> {
    let cargo = support::cargo_bin();
    let mut variants = vec![Variant::new(
        "`cargo run` (`PORT` in the environment)",
        Ok(Box::new(|port: u16| {
            let mut command = project.command(support::cargo_bin(), &["run"]);
            command.env("PORT", port.to_string());
            command
        })),
    )];
    variants.push(Variant::new(
        "`systemfd -s http::PORT -- cargo run`",
        peers
            .systemfd
            .clone()
            .map(|systemfd| -> Box<dyn Fn(u16) -> Command> {
                Box::new(move |port: u16| {
                    let socket = format!("http::{port}");
                    let cargo = cargo.to_string_lossy();
                    project.command(&systemfd.path, &["-s", &socket, "--", &cargo, "run"])
                })
            }),
    ));
    for handoff in ["env", "socket"] {
        let mut variant = Variant::new(
            &format!("`cargo-serve-safe`, {handoff} handoff"),
            Ok(Box::new(move |port| {
                serve_safe(project, port, handoff, &[])
            })),
        );
        variant.targeted = true;
        variants.push(variant);
    }
    variants.push(Variant::new(
        "`cargo serve-safe` (through cargo), socket handoff",
        Ok(Box::new(|port: u16| {
            let mut command = project.user_cargo(&["serve-safe", "--port", &port.to_string()]);
            command
                .env("PORTGUARD_HANDOFF", "socket")
                .env("FALLBACK_PORTS", "");
            command
        })),
    ));
    variants
}

fn first_response(project: &TestProject, peers: &Peers, plan: &Plan) -> Vec<Row> {
    let port = support::quiet_port_range(1);
    let mut variants = start_variants(project, peers);
    // What `cargo-serve-safe` runs before `cargo run`, timed in the same rounds.
    let metadata = || {
        project.command(
            support::cargo_bin(),
            &["metadata", "--no-deps", "--format-version", "1"],
        )
    };
    let mut metadata_timings = Vec::new();

    // Round-robin; round 0 is untimed: it warms the page cache and shows that every variant
    // works.
    for round in 0..=plan.start_rounds {
        for (index, variant) in variants.iter_mut().enumerate() {
            let Ok(make) = &variant.command else {
                continue;
            };
            let log = log_path(project, &format!("start-{index}"));
            let started = Instant::now();
            let mut group = Group::spawn(make(port), &variant.what, &log);
            let took = group.first_response(port, started, START_TIMEOUT);
            group.stop(Some(port));
            if round > 0 {
                variant.timings.push(took);
            }
        }
        let took = common::timed_run(metadata(), "cargo metadata");
        if round > 0 {
            metadata_timings.push(took);
        }
    }

    let baseline = variants[0].timings.clone();
    let mut rows = Vec::new();
    for (index, variant) in variants.into_iter().enumerate() {
        let what = format!("1. first response: {}", variant.what);
        if let Err(why) = &variant.command {
            rows.push(Row::skipped(what, why));
            continue;
        }
        // Paired by round: each difference is of two starts made moments apart.
        let delta = common::median_f64(
            variant
                .timings
                .iter()
                .zip(&baseline)
                .map(|(ours, base)| ours.as_secs_f64() - base.as_secs_f64())
                .collect(),
        );
        let mut row = Row::timed(what, Stats::of(variant.timings));
        row = if index == 0 {
            row.compared("baseline")
        } else {
            row.compared(format!("{} vs `cargo run`", common::show_delta(delta)))
        };
        if variant.targeted {
            row = row.target(common::verdict(
                "within 3 ms of `cargo run`",
                delta <= 0.003,
            ));
        }
        rows.push(row);
    }
    rows.push(
        Row::timed(
            "1. `cargo metadata --no-deps` alone (what `serve-safe` runs before `cargo run`)",
            Stats::of(metadata_timings),
        )
        .compared("for reference"),
    );
    rows
}

// ---------------------------------------------------------------------------
// 2. Port selection with the preferred port and nine fallbacks busy.

fn port_selection(peers: &Peers, plan: &Plan) -> Vec<Row> {
    const BATCHES: usize = 5;
    let per_batch = plan.select_runs.div_ceil(BATCHES);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    // Interleaved in batches: a node process per batch (its start-up and warm-up untimed).
    for _ in 0..BATCHES {
        ours.extend(select_with_ten_busy(per_batch));
        if let Ok(get_port) = &peers.get_port {
            let json = common::run_node(
                "get-port-select.mjs",
                &[&get_port.path.to_string_lossy(), &per_batch.to_string()],
            );
            theirs.extend(
                json["timings_us"]
                    .as_array()
                    .expect("timings_us")
                    .iter()
                    .map(|micros| {
                        Duration::from_secs_f64(micros.as_f64().expect("a number") / 1e6)
                    }),
            );
        }
    }
    let ours = Stats::of(ours);
    let mut rows = vec![
        Row::timed(
            "2. port selection, preferred + 9 fallbacks busy: portguard's `port::select` (reservations on)",
            ours,
        )
        .target(common::verdict(
            "< 100 µs",
            ours.median < Duration::from_micros(100),
        )),
    ];
    let what = "2. port selection, same ports: get-port `getPort({port: [...]})`, in process";
    match &peers.get_port {
        Ok(_) => {
            let theirs = Stats::of(theirs);
            rows.push(Row::timed(what, theirs).compared(common::versus(ours, theirs)));
        }
        Err(why) => rows.push(Row::skipped(what, why)),
    }
    rows
}

/// Timings of `port::select` over ten busy candidates (listening on 127.0.0.1) and a free one,
/// with this user's reservations in a folder of their own, after a few untimed calls.
fn select_with_ten_busy(runs: usize) -> Vec<Duration> {
    let host = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let busy: Vec<TcpListener> = (0..10)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind"))
        .collect();
    let mut candidates: Vec<u16> = busy
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    candidates.push(support::free_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let reservations = Reservations::new(dir.path().to_owned(), "the benchmark".to_owned());
    let once = || {
        let started = Instant::now();
        let selection =
            port::select(host, &candidates, true, false, Some(&reservations)).expect("a free port");
        let took = started.elapsed();
        assert_eq!(selection.skipped.len(), 10);
        took
    };
    for _ in 0..10 {
        once();
    }
    (0..runs).map(|_| once()).collect()
}

// ---------------------------------------------------------------------------
// 3. Stop to free port.

fn stop_to_free_port(project: &TestProject, peers: &Peers, plan: &Plan) -> Vec<Row> {
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
fn start_detached(project: &TestProject, port: u16, handoff: &str) {
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

fn status(project: &TestProject, plan: &Plan) -> Row {
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
// 5. Simultaneous starts preferring one port.

fn simultaneous_starts(project: &TestProject, peers: &Peers, plan: &Plan) -> Vec<Row> {
    let count = plan.starts;
    // Below the ephemeral range: the servers bind their own ports here (env handoff), where no
    // client connection can take one as its source port meanwhile.
    let range = u16::try_from(count).expect("a few starts") * 2 + 20;
    let port = support::quiet_port_range(range);
    let started = Instant::now();
    let children: Vec<_> = (0..count)
        .map(|n| {
            let mut command = project.serve_safe(&["--detach", "--instance", &format!("copy-{n}")]);
            command
                .env("PORT", port.to_string())
                .env("FALLBACK_PORTS", "")
                .env(
                    "PORTGUARD_PORT_RANGE",
                    format!("{port}-{}", port + range - 1),
                )
                .env("MAX_PORT_ATTEMPTS", range.to_string())
                .env("PORTGUARD_HANDOFF", "env")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            command.spawn().expect("start cargo-serve-safe")
        })
        .collect();
    let ports: Vec<u16> = children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().expect("wait");
            assert!(
                output.status.success(),
                "a start failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .expect("a port")
        })
        .collect();
    let took = started.elapsed();
    let stopped = project.run_portguard(&["portguard", "stop", "--all"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    let twice = given_twice(&ports);

    let mut rows = vec![
        Row {
            what: format!(
                "5. {count} `cargo-serve-safe --detach` at once, env handoff, all preferring one port: wall time until all answer"
            ),
            median: common::show(took),
            runs: "1".to_owned(),
            ..Row::default()
        },
        Row {
            what: format!("5. ports given twice among those {count} starts"),
            median: twice.to_string(),
            runs: "1".to_owned(),
            ..Row::default()
        }
        .target(common::verdict("0", twice == 0)),
    ];
    let what = format!(
        "5. ports given twice: {count} node processes at once, each `getPort({{port}})` then listening on it"
    );
    match &peers.get_port {
        Ok(get_port) => {
            let (twice, failed, took) = get_port_race(get_port, port, count);
            rows.push(Row {
                what,
                median: twice.to_string(),
                runs: "1".to_owned(),
                compared: format!(
                    "{failed} listens failed; {} until all answered",
                    common::show(took)
                ),
                ..Row::default()
            });
        }
        Err(why) => rows.push(Row::skipped(what, why)),
    }
    rows
}

fn given_twice(ports: &[u16]) -> usize {
    ports.len() - ports.iter().collect::<HashSet<_>>().len()
}

/// `count` node processes asking get-port for `port` at once, each listening on what it got
/// and holding it until all have answered: (ports given twice, failed listens, wall time).
fn get_port_race(get_port: &common::Peer, port: u16, count: usize) -> (usize, usize, Duration) {
    let script = common::peer_script("get-port-race.mjs");
    let module = get_port.path.to_string_lossy().into_owned();
    let started = Instant::now();
    let mut children: Vec<_> = (0..count)
        .map(|_| {
            Command::new("node")
                .arg(&script)
                .args([module.as_str(), &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start node")
        })
        .collect();
    let lines: Vec<String> = children
        .iter_mut()
        .map(|child| {
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("piped stdout"))
                .read_line(&mut line)
                .expect("read node's answer");
            line.trim().to_owned()
        })
        .collect();
    let took = started.elapsed();
    for mut child in children {
        drop(child.stdin.take());
        child.wait().expect("wait for node");
    }
    let ports: Vec<u16> = lines
        .iter()
        .map(|line| {
            line.split_whitespace()
                .next()
                .and_then(|port| port.parse().ok())
                .unwrap_or_else(|| panic!("get-port-race.mjs printed {line:?}"))
        })
        .collect();
    let failed = lines.iter().filter(|line| !line.ends_with(" ok")).count();
    (given_twice(&ports), failed, took)
}

// ---------------------------------------------------------------------------
// 6. The supervisor's footprint while the server idles.

#[cfg(target_os = "linux")]
fn footprint(project: &TestProject, peers: &Peers, plan: &Plan) -> Vec<Row> {
    let idle = plan.idle;
    let port = support::quiet_port_range(1);
    let mut supervisor = Group::spawn(
        serve_safe(project, port, "socket", &[]),
        "cargo-serve-safe",
        &log_path(project, "footprint"),
    );
    supervisor.first_response(port, Instant::now(), START_TIMEOUT);
    // Its readiness probe and the record written once ready are done by the time the server
    // answers a request of ours; give them a moment all the same.
    thread::sleep(Duration::from_millis(200));

    // systemfd alongside, in the same window: does anything of it stay resident?
    let systemfd = peers.systemfd.as_ref().ok().map(|systemfd| {
        let port = support::quiet_port_range(1);
        let mut command = project.command(&systemfd.path, &[]);
        command.args([
            "-s",
            &format!("http::{port}"),
            "--",
            &support::cargo_bin().to_string_lossy(),
            "run",
        ]);
        let mut group = Group::spawn(
            command,
            "systemfd",
            &log_path(project, "footprint-systemfd"),
        );
        group.first_response(port, Instant::now(), START_TIMEOUT);
        (group, port)
    });

    let pid = supervisor.pid();
    let before = common::usage(pid).expect("read /proc for the supervisor");
    thread::sleep(idle);
    let after = common::usage(pid).expect("read /proc for the supervisor");
    supervisor.stop(Some(port));

    let ticks = after.cpu_ticks - before.cpu_ticks;
    let tick_ms = 1000 / common::clock_ticks_per_second();
    let run = Duration::from_nanos(after.run_ns - before.run_ns);
    let secs = idle.as_secs();
    let rss_mib = f64::from(u32::try_from(after.rss_kib).unwrap_or(u32::MAX)) / 1024.0;
    let mut rows = vec![
        Row {
            what: format!(
                "6. `cargo-serve-safe` supervisor, socket handoff: resident memory (VmRSS) after {secs} s idle"
            ),
            median: format!("{rss_mib:.2} MiB"),
            runs: "1".to_owned(),
            ..Row::default()
        }
        .target(common::verdict("< 4 MiB", after.rss_kib < 4 * 1024)),
        Row {
            what: format!(
                "6. the same supervisor: CPU time over {secs} s idle (on-CPU time of its threads, `schedstat`)"
            ),
            median: common::show(run),
            runs: "1".to_owned(),
            compared: format!(
                "utime+stime: {ticks} ticks of {tick_ms} ms"
            ),
            ..Row::default()
        }
        .target(common::verdict("< 1 ms", run < Duration::from_millis(1))),
    ];
    let what = "6. systemfd: what stays resident beside the server";
    match systemfd {
        Some((mut group, port)) => {
            // systemfd execs the command, which execs the server: the pid it started is the
            // server's.
            let program = common::program_name(group.pid()).unwrap_or_default();
            group.stop(Some(port));
            rows.push(Row {
                what: what.to_owned(),
                median: if program == "hello-server" {
                    "nothing: it execs `cargo run`, which execs the server".to_owned()
                } else {
                    format!("its pid runs `{program}`")
                },
                runs: "1".to_owned(),
                compared: "it cannot stop, restart or report the server".to_owned(),
                ..Row::default()
            });
        }
        None => rows.push(Row::skipped(
            what,
            peers.systemfd.as_ref().err().map_or("", String::as_str),
        )),
    }
    rows
}

#[cfg(not(target_os = "linux"))]
fn footprint(_project: &TestProject, _peers: &Peers, _plan: &Plan) -> Vec<Row> {
    vec![Row::skipped(
        "6. supervisor footprint while the server idles",
        "reads /proc, Linux only",
    )]
}

// ---------------------------------------------------------------------------
// 7. The restart gap under a steady request loop.

/// What a request loop saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    answered: usize,
    refused: usize,
    /// Requests that failed otherwise (reset, cut off, timed out, not a 200), by how.
    failed: BTreeMap<String, usize>,
    /// The longest time between two successful responses (from the loop's start for the first).
    longest_wait: Duration,
}

fn restart_gap(project: &TestProject, plan: &Plan) -> Vec<Row> {
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
fn restart_under_load(project: &TestProject, mode: &str, port: u16) -> (Seen, Duration) {
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

fn request_loop(port: u16, stop: &AtomicBool) -> Seen {
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
