//! 2. Port selection against get-port, and 5. fifty simultaneous starts preferring one port.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portguard::bench as port;
use portguard::bench::Reservations;

use super::Plan;
use crate::common::{Peers, Row, Stats};
use crate::support::TestProject;
use crate::{common, support};

// ---------------------------------------------------------------------------
// 2. Port selection with the preferred port and nine fallbacks busy.

pub(super) fn port_selection(peers: &Peers, plan: &Plan) -> Vec<Row> {
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
pub(super) fn select_with_ten_busy(runs: usize) -> Vec<Duration> {
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
// 5. Simultaneous starts preferring one port.

pub(super) fn simultaneous_starts(project: &TestProject, peers: &Peers, plan: &Plan) -> Vec<Row> {
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

pub(super) fn given_twice(ports: &[u16]) -> usize {
    ports.len() - ports.iter().collect::<HashSet<_>>().len()
}

/// `count` node processes asking get-port for `port` at once, each listening on what it got
/// and holding it until all have answered: (ports given twice, failed listens, wall time).
pub(super) fn get_port_race(
    get_port: &common::Peer,
    port: u16,
    count: usize,
) -> (usize, usize, Duration) {
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
