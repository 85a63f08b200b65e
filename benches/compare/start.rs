//! 1. Time to first HTTP response: `cargo run`, systemfd and `cargo-serve-safe`, interleaved.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{Plan, START_TIMEOUT, log_path, serve_safe};
use crate::common::{Group, Peers, Row, Stats};
use crate::support::TestProject;
use crate::{common, support};

// ---------------------------------------------------------------------------
// 1. Time to first HTTP response.

/// How a start is made (or why it cannot be), and what it is called in the table.
pub(super) struct Variant<'a> {
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
pub(super) fn start_variants<'a>(project: &'a TestProject, peers: &Peers) -> Vec<Variant<'a>> {
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

pub(super) fn first_response(project: &TestProject, peers: &Peers, plan: &Plan) -> Vec<Row> {
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
