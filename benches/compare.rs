//! portguard beside the tools people use for the same jobs today, in one run: `cargo run`,
//! systemfd, npm's get-port and kill-port, and for reload on save `systemfd … cargo watch` and
//! watchexec. Run with `cargo bench --bench compare` (install the
//! peers first with `scripts/install-bench-peers.sh`; a missing one is skipped with a note). It
//! prints a table and rewrites its section of BENCHMARKS.md.
//!
//! Everything runs the example server of the README's quick start (`examples/hello-server`,
//! std only), copied to a temp dir and built once, in the dev profile, before anything is
//! timed: every `cargo run` below only checks that it is fresh. The portguard binaries are the
//! release builds `cargo bench` makes, called as cargo calls them (`cargo-serve-safe
//! serve-safe`); one row goes through `cargo serve-safe` for cargo's own dispatch. The reload
//! rows (`reload.rs`) edit their own copies of `examples/hello-server` and
//! `examples/axum-server`, each building into a target folder of its own.
//!
//! Environment:
//! - `PORTGUARD_BENCH_QUICK=1`: a few rounds of each measurement, a 2 s idle window; the table
//!   is printed, BENCHMARKS.md is left alone.
//! - `PORTGUARD_BENCH_ONLY=start,select,stop,status,fifty,footprint,restart,reload`: only those
//!   (for working on one); BENCHMARKS.md is left alone.

#[path = "../tests/it/support/mod.rs"]
mod support;

mod common;
#[path = "compare/footprint.rs"]
mod footprint;
#[path = "compare/operate.rs"]
mod operate;
#[path = "compare/reload.rs"]
mod reload;
#[path = "compare/select.rs"]
mod select;
#[path = "compare/start.rs"]
mod start;

use std::process::Command;
use std::time::Duration;

use common::Peers;
use support::TestProject;

use footprint::footprint;
use operate::{restart_gap, status, stop_to_free_port};
use reload::reload;
use select::{port_selection, simultaneous_starts};
use start::first_response;

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
    /// Rounds of each reload-on-save tool, alternated between the tools.
    reload_rounds: usize,
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
                reload_rounds: 1,
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
                reload_rounds: 3,
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
    if plan.wants("reload") {
        rows.extend(reload(&peers, &plan));
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
        common::write_bench_section("compare", &section);
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
