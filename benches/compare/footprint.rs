//! 6. The supervisor's footprint while the server idles.

#[cfg(target_os = "linux")]
use std::thread;
#[cfg(target_os = "linux")]
use std::time::{Duration, Instant};

use super::Plan;
#[cfg(target_os = "linux")]
use super::{START_TIMEOUT, log_path, serve_safe};
#[cfg(target_os = "linux")]
use crate::common::Group;
use crate::common::{Peers, Row};
use crate::support::TestProject;
#[cfg(target_os = "linux")]
use crate::{common, support};

// ---------------------------------------------------------------------------
// 6. The supervisor's footprint while the server idles.

#[cfg(target_os = "linux")]
pub(super) fn footprint(project: &TestProject, peers: &Peers, plan: &Plan) -> Vec<Row> {
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
pub(super) fn footprint(_project: &TestProject, _peers: &Peers, plan: &Plan) -> Vec<Row> {
    vec![Row::skipped(
        format!(
            "6. supervisor footprint while the server idles {} s",
            plan.idle.as_secs()
        ),
        "reads /proc, Linux only",
    )]
}
