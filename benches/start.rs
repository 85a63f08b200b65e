//! What starting costs: choosing a port when the preferred one and nine fallbacks are busy
//! (the library call, with this user's reservations in place), and fifty starts at the same
//! instant all preferring one port. Run with `cargo bench --bench start`; it prints a table and
//! rewrites its section of BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};

use portguard::port;
use portguard::reserve::Reservations;
use support::TestProject;

const SELECT_RUNS: usize = 1001;
const STARTS: usize = 50;

fn main() {
    let select = select_with_ten_busy();
    let (starts, collisions) = fifty_starts();
    let table = format!(
        "| measurement | median | p90 | runs | target |\n|---|---|---|---|---|\n\
         | `port::select`, preferred + 9 fallbacks busy, reservations on | {:.1} µs | {:.1} µs | {SELECT_RUNS} | < 100 µs |\n\
         | {STARTS} simultaneous `--detach` starts preferring one port: wall time until all are ready | {:.2} s | | 1 | |\n\
         | ports given twice among those {STARTS} starts | {collisions} | | 1 | 0 |\n",
        micros(select.0),
        micros(select.1),
        starts.as_secs_f64(),
    );
    println!("{table}");
    support::write_bench_section("start", &table);
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Median and 90th percentile of `port::select` over ten busy candidates and one free one.
fn select_with_ten_busy() -> (Duration, Duration) {
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
    let mut timings: Vec<Duration> = (0..SELECT_RUNS)
        .map(|_| {
            let started = Instant::now();
            let selection = port::select(host, &candidates, true, false, Some(&reservations))
                .expect("a free port");
            let took = started.elapsed();
            assert_eq!(selection.skipped.len(), 10);
            took
        })
        .collect();
    timings.sort();
    (timings[SELECT_RUNS / 2], timings[SELECT_RUNS * 9 / 10])
}

/// Wall time of fifty detached starts of different instances, all preferring one port, and
/// how many ports were given twice.
fn fifty_starts() -> (Duration, usize) {
    let project = TestProject::fixture();
    // Below the ephemeral range: fifty servers bind their own ports here (env handoff).
    let port = support::quiet_port_range(120);
    project.set_metadata(&format!(
        "preferred-port = {port}\nfallback-ports = []\nport-range = \"{port}-{}\"\nmax-attempts = 120",
        port + 119
    ));
    let started = Instant::now();
    let children: Vec<_> = (0..STARTS)
        .map(|n| {
            let mut command = project.serve_safe(&["--detach", "--instance", &format!("copy-{n}")]);
            command.stdout(Stdio::piped()).stderr(Stdio::null());
            command.spawn().expect("start cargo-serve-safe")
        })
        .collect();
    let mut ports: Vec<u16> = children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().expect("wait");
            assert!(output.status.success(), "a start failed");
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .expect("a port")
        })
        .collect();
    let took = started.elapsed();
    let total = ports.len();
    ports.sort_unstable();
    ports.dedup();
    let stopped = project.run_portguard(&["stop", "--all"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    (took, total - ports.len())
}
