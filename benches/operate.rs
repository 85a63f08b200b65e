//! How fast portguard answers the commands people and CI scripts run all day: `status`, and
//! `stop` until the port is free again. Run with `cargo bench --bench operate`; it prints a
//! table and rewrites its section of BENCHMARKS.md.
//!
//! The binaries are timed as cargo calls them (`cargo-portguard portguard status`), so cargo's
//! own dispatch (about 15 ms) is left out: no plugin can remove it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::process::Output;
use std::time::{Duration, Instant};

use support::TestProject;

const STATUS_RUNS: usize = 101;
const STOP_RUNS: usize = 21;

fn main() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"\nhealth-path = \"/health\"");
    start_detached(&project, port);
    // One untimed run warms the page cache for the binary.
    run(&project, &["portguard", "status"]);
    let status = sample(STATUS_RUNS, || {
        let started = Instant::now();
        let output = run(&project, &["portguard", "status", "--json"]);
        assert!(
            output.status.success(),
            "status: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        started.elapsed()
    });
    run(&project, &["portguard", "stop"]);

    let stop = sample(STOP_RUNS, || {
        start_detached(&project, port);
        let started = Instant::now();
        let output = run(&project, &["portguard", "stop"]);
        let took = started.elapsed();
        assert!(
            output.status.success(),
            "stop: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // `stop` promises a free port when it returns: hold it to that.
        assert!(
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(),
            "port {port} still busy after stop"
        );
        took
    });

    let rows = [
        Row {
            what: "`status --json`, one running instance with a health probe",
            target: "< 5 ms",
            stats: status,
        },
        Row {
            what: "`stop` of a cooperative server until its port is free",
            target: "< 20 ms",
            stats: stop,
        },
    ];
    let table = table(&rows);
    println!("{table}");
    support::write_bench_section("operate", &table);
}

fn start_detached(project: &TestProject, port: u16) {
    let output = project
        .serve_safe(&["--detach"])
        .output()
        .expect("start cargo-serve-safe");
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

fn run(project: &TestProject, args: &[&str]) -> Output {
    project
        .portguard(args)
        .output()
        .expect("run cargo-portguard")
}

/// Median and 90th percentile of `runs` timings.
#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    p90: Duration,
    runs: usize,
}

fn sample(runs: usize, mut measure: impl FnMut() -> Duration) -> Stats {
    let mut timings: Vec<Duration> = (0..runs).map(|_| measure()).collect();
    timings.sort();
    Stats {
        median: timings[runs / 2],
        p90: timings[runs * 9 / 10],
        runs,
    }
}

struct Row {
    what: &'static str,
    target: &'static str,
    stats: Stats,
}

fn table(rows: &[Row]) -> String {
    let mut text =
        String::from("| measurement | median | p90 | runs | target |\n|---|---|---|---|---|\n");
    for row in rows {
        let _ = writeln!(
            text,
            "| {} | {:.2} ms | {:.2} ms | {} | {} |",
            row.what,
            row.stats.median.as_secs_f64() * 1000.0,
            row.stats.p90.as_secs_f64() * 1000.0,
            row.stats.runs,
            row.target
        );
    }
    text
}
