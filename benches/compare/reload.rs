//! Reload on save (row 8), a compile error held and then fixed (9), the idle watcher (10):
//! portguard's `cargo-serve-safe serve-safe --watch` beside `cargo watch -x run` under
//! systemfd, and `watchexec -r -e rs -- cargo run`, on the two examples, under a request loop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Plan, START_TIMEOUT, serve_safe};
use crate::common::{Group, Peers, Row, Stats};
use crate::support::TestProject;
use crate::{common, support};

/// Bound on the wait for the new code after a save: a tool that never serves it gets a note
/// in its rows instead of a hung benchmark.
const NEW_CODE_TIMEOUT: Duration = Duration::from_mins(2);

/// How long the compile error stays in the file before the fix is saved.
const HOLD_BROKEN: Duration = Duration::from_secs(4);

/// Bound on each request of the loop (connect, write, each read). A server behind systemfd's
/// socket leaves requests waiting in the backlog while cargo builds: up to this, a wait is a
/// slow answer, beyond it a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A `cargo-serve-safe` that exits 2 this soon did not know `--watch`.
const QUICK_EXIT: Duration = Duration::from_secs(10);

/// The source file every edit changes; both examples answer `GET /` from it.
const SOURCE: &str = "src/main.rs";

/// What makes the build fail: a type error in a function nobody calls, so that the rest of the
/// file, and the answer, stay as they were.
const COMPILE_ERROR: &str = "\nfn portguard_bench_broken() -> u32 {\n    \"not a number\"\n}\n";

// ---------------------------------------------------------------------------
// The examples and their edits.

/// A copy of an example in a temp folder, and the revisions of its source written so far.
struct Example {
    name: &'static str,
    project: TestProject,
    /// `src/main.rs` as copied: revision 0.
    original: String,
    /// The revision the file holds (or held before a compile error was added).
    revision: u32,
    /// Where saves are written before they are renamed into place, and the logs: outside the
    /// copy, so that neither is a change any watcher sees.
    scratch: tempfile::TempDir,
}

impl Example {
    /// Copies `examples/NAME` and builds it (dev profile) into a target folder kept between
    /// runs, so that only the example itself compiles again, never its dependencies.
    fn prepare(name: &'static str) -> Self {
        let project = TestProject::example(
            name,
            support::kept_target_dir(&format!("bench-reload-{name}")),
        );
        let original = project.read_file(SOURCE);
        assert!(
            original.contains(&Self::greeting(name, None)),
            "{name}'s {SOURCE} no longer says {:?}: the edit has nothing to change",
            Self::greeting(name, None)
        );
        let scratch = tempfile::Builder::new()
            .prefix("portguard-bench-reload-")
            .tempdir()
            .expect("create the scratch folder");
        let build = support::run_within(
            project.command(support::cargo_bin(), &["build", "--quiet"]),
            Duration::from_mins(15),
        );
        assert_eq!(build.code(), Some(0), "{}", build.describe());
        Example {
            name,
            project,
            original,
            revision: 0,
            scratch,
        }
    }

    /// The start of the greeting `GET /` answers, with the revision the benchmark gave it.
    fn greeting(name: &str, revision: Option<u32>) -> String {
        match revision {
            None => format!("Hello from {name},"),
            Some(revision) => format!("Hello from {name} (rev {revision}),"),
        }
    }

    fn source(&self, revision: u32) -> String {
        self.original.replacen(
            &Self::greeting(self.name, None),
            &Self::greeting(self.name, Some(revision)),
            1,
        )
    }

    /// The one-line edit: the greeting says the next revision. Returns when the save was made.
    fn edit(&mut self) -> Instant {
        self.revision += 1;
        self.save(&self.source(self.revision))
    }

    /// The current revision with a compile error added.
    fn break_build(&self) -> Instant {
        let mut broken = self.source(self.revision);
        broken.push_str(COMPILE_ERROR);
        self.save(&broken)
    }

    /// Writes `text` to a file beside the copy, then renames it over the source, as editors
    /// that save atomically do: a watcher sees one finished file appear, never half of it.
    fn save(&self, text: &str) -> Instant {
        let staged = self.scratch.path().join("main.rs.save");
        fs::write(&staged, text).expect("write the edit");
        fs::rename(&staged, self.project.root.join(SOURCE)).expect("rename the edit into place");
        Instant::now()
    }

    fn log(&self, name: &str) -> PathBuf {
        self.scratch.path().join(format!("{name}.log"))
    }
}

/// The revision an answer comes from: what follows `(rev ` in it, 0 for the original text.
fn revision_of(body: &str) -> u32 {
    body.split_once("(rev ")
        .and_then(|(_, rest)| rest.split(')').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The request loop.

#[derive(Debug, Clone)]
enum Outcome {
    /// A `200`, from this revision of the code.
    Answered(u32),
    Refused,
    /// Reset, cut short, timed out or not a `200`: how.
    Failed(String),
}

#[derive(Debug, Clone)]
struct Event {
    /// When the answer (or the failure) came.
    at: Instant,
    outcome: Outcome,
}

/// A thread that sends `GET /` to 127.0.0.1:PORT back to back, each on a fresh connection with
/// a 1 ms pause after it, and keeps what each one got. Dropping it stops the thread and waits
/// for it (at most one request's timeout).
struct RequestLoop {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
    thread: Option<JoinHandle<()>>,
}

impl RequestLoop {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            let events = Arc::clone(&events);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = match support::http_get_within(port, "/", REQUEST_TIMEOUT) {
                        Ok((200, body)) => Outcome::Answered(revision_of(&body)),
                        Ok((status, _)) => Outcome::Failed(format!("HTTP {status}")),
                        Err(error) if error.kind == std::io::ErrorKind::ConnectionRefused => {
                            Outcome::Refused
                        }
                        Err(error) => Outcome::Failed(format!("{:?}", error.kind)),
                    };
                    let event = Event {
                        at: Instant::now(),
                        outcome,
                    };
                    events
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(event);
                    thread::sleep(Duration::from_millis(1));
                }
            })
        };
        RequestLoop {
            stop,
            events,
            thread: Some(thread),
        }
    }

    /// When the first answer from `revision` came after `since`, if one has.
    fn answered_by(&self, revision: u32, since: Instant) -> Option<Instant> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events
            .iter()
            .rev()
            .take_while(|event| event.at > since)
            .fold(None, |first, event| match event.outcome {
                Outcome::Answered(answered) if answered == revision => Some(event.at),
                _ => first,
            })
    }

    /// Stops the loop and returns what it saw.
    fn finish(mut self) -> Vec<Event> {
        self.halt();
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What the loop saw between two instants.
#[derive(Debug, Default, Clone)]
struct Window {
    answered: usize,
    refused: usize,
    failed: BTreeMap<String, usize>,
    /// The longest time without an answer: between two answers, from the last answer before
    /// the window to the first in it, and from the last in it to the window's end.
    longest_wait: Duration,
}

impl Window {
    fn of(events: &[Event], from: Instant, to: Instant) -> Self {
        let mut window = Window::default();
        let mut last_answer = events
            .iter()
            .filter(|event| event.at <= from && matches!(event.outcome, Outcome::Answered(_)))
            .map(|event| event.at)
            .next_back()
            .unwrap_or(from);
        for event in events
            .iter()
            .filter(|event| event.at > from && event.at <= to)
        {
            match &event.outcome {
                Outcome::Answered(_) => {
                    window.answered += 1;
                    window.longest_wait = window.longest_wait.max(event.at - last_answer);
                    last_answer = event.at;
                }
                Outcome::Refused => window.refused += 1,
                Outcome::Failed(how) => *window.failed.entry(how.clone()).or_default() += 1,
            }
        }
        window.longest_wait = window
            .longest_wait
            .max(to.saturating_duration_since(last_answer));
        window
    }

    fn failures(&self) -> usize {
        self.failed.values().sum()
    }
}

/// The windows of all rounds summed: `R refused, failed: 2 ConnectionReset, A answered`.
fn describe_windows<'a>(windows: impl IntoIterator<Item = &'a Window>) -> String {
    let mut refused = 0;
    let mut answered = 0;
    let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
    for window in windows {
        refused += window.refused;
        answered += window.answered;
        for (how, count) in &window.failed {
            *failed.entry(how).or_default() += count;
        }
    }
    let failed = if failed.is_empty() {
        "0 failed".to_owned()
    } else {
        let hows: Vec<String> = failed
            .iter()
            .map(|(how, count)| format!("{count} {how}"))
            .collect();
        format!("failed: {}", hows.join(", "))
    };
    format!("{refused} refused, {failed}, {answered} answered")
}

// ---------------------------------------------------------------------------
// The tools.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// `cargo-serve-safe serve-safe --watch` in this handoff.
    Portguard(&'static str),
    CargoWatch,
    Watchexec,
}

impl Tool {
    /// Its log file's name.
    fn slug(self) -> &'static str {
        match self {
            Tool::Portguard("env") => "portguard-env",
            Tool::Portguard(_) => "portguard-socket",
            Tool::CargoWatch => "cargo-watch",
            Tool::Watchexec => "watchexec",
        }
    }
}

type MakeCommand<'a> = Box<dyn Fn(&TestProject, u16) -> Command + 'a>;

/// One way of running an example with reload on save, and what its rounds gave.
struct Variant<'a> {
    tool: Tool,
    what: String,
    command: Result<MakeCommand<'a>, String>,
    rounds: Vec<Round>,
    /// Why its rounds stopped early, if they did.
    note: Option<String>,
    /// What it used while idle (first round on the first example only).
    idle: Option<Idle>,
    /// The supervisor's own figures from its `Reloaded in … (build …, swap …)` lines.
    reported_builds: Vec<Duration>,
    reported_swaps: Vec<Duration>,
}

impl<'a> Variant<'a> {
    fn new(tool: Tool, what: &str, command: Result<MakeCommand<'a>, String>) -> Self {
        Variant {
            tool,
            what: what.to_owned(),
            command,
            rounds: Vec::new(),
            note: None,
            idle: None,
            reported_builds: Vec::new(),
            reported_swaps: Vec::new(),
        }
    }

    fn is_portguard(&self) -> bool {
        matches!(self.tool, Tool::Portguard(_))
    }
}

fn variants<'a>(example: &str, peers: &'a Peers) -> Vec<Variant<'a>> {
    let cargo = support::cargo_bin().to_string_lossy().into_owned();
    let mut variants = vec![Variant::new(
        Tool::Portguard("socket"),
        "`cargo-serve-safe serve-safe --watch`, socket handoff",
        Ok(Box::new(|project: &TestProject, port| {
            serve_safe(project, port, "socket", &["--watch"])
        })),
    )];
    if example == "hello-server" {
        variants.push(Variant::new(
            Tool::Portguard("env"),
            "`cargo-serve-safe serve-safe --watch`, env handoff",
            Ok(Box::new(|project: &TestProject, port| {
                serve_safe(project, port, "env", &["--watch"])
            })),
        ));
    }
    let cargo_watch: Result<MakeCommand, String> = match (&peers.systemfd, &peers.cargo_watch) {
        (Ok(systemfd), Ok(_)) => {
            let (systemfd, cargo) = (systemfd.path.clone(), cargo.clone());
            Ok(Box::new(move |project: &TestProject, port| {
                let socket = format!("http::{port}");
                let mut command = project.command(
                    &systemfd,
                    &[
                        "--no-pid", "-s", &socket, "--", &cargo, "watch", "-x", "run",
                    ],
                );
                command.env("PATH", common::peers_path());
                command
            }))
        }
        (Err(why), _) | (_, Err(why)) => Err(why.clone()),
    };
    variants.push(Variant::new(
        Tool::CargoWatch,
        "`systemfd --no-pid -s http::PORT -- cargo watch -x run`",
        cargo_watch,
    ));
    let watchexec = peers.watchexec.as_ref().map(|watchexec| {
        let (watchexec, cargo) = (watchexec.path.clone(), cargo.clone());
        Box::new(move |project: &TestProject, port: u16| {
            let mut command = project.command(&watchexec, &["-r", "-e", "rs", "--", &cargo, "run"]);
            command
                .env("PORT", port.to_string())
                .env("PATH", common::peers_path());
            command
        }) as MakeCommand
    });
    variants.push(Variant::new(
        Tool::Watchexec,
        "`watchexec -r -e rs -- cargo run` (`PORT` in the environment)",
        watchexec.map_err(Clone::clone),
    ));
    variants
}

// ---------------------------------------------------------------------------
// One round of one tool.

/// What one round measured.
#[derive(Debug, Clone)]
struct Round {
    save_to_new: Duration,
    reload: Window,
    broken: Window,
    fix_to_new: Duration,
    fix: Window,
}

/// What a watcher used while nothing changed.
#[derive(Debug, Clone)]
struct Idle {
    rss_kib: u64,
    cpu_ticks: u64,
    run: Duration,
    /// The program the measured pid runs (for the peers, which exec).
    program: String,
}

enum Failure {
    /// `cargo-serve-safe` exited 2 at once: this build has no `--watch`.
    NeedsWatch,
    Other(String),
}

/// Starts the tool on the example, optionally measures it idle, then makes the edit and the
/// compile error under the request loop. Every process it starts is stopped before it returns
/// (or, on a panic, by the `Group`'s drop).
fn round(
    example: &mut Example,
    variant: &Variant,
    make: &MakeCommand,
    idle: Option<Duration>,
) -> Result<(Round, Option<Idle>, String), Failure> {
    let port = support::quiet_port_range(1);
    let log = example.log(variant.tool.slug());
    let mut group = Group::spawn(make(&example.project, port), &variant.what, &log);
    let outcome = measure(example, variant, &mut group, port, idle);
    group.stop(Some(port));
    let log = group.log();
    outcome.map(|(round, idle)| (round, idle, log))
}

fn measure(
    example: &mut Example,
    variant: &Variant,
    group: &mut Group,
    port: u16,
    idle: Option<Duration>,
) -> Result<(Round, Option<Idle>), Failure> {
    wait_first_answer(group, variant, port)?;
    // The readiness probe, the record and the watcher's set-up are done by the time the
    // server answers; give them a moment all the same.
    thread::sleep(Duration::from_millis(300));
    let idle = idle.map(|idle| measure_idle(group, idle));

    let requests = RequestLoop::start(port);
    thread::sleep(Duration::from_millis(300));

    let saved = example.edit();
    let new_code = wait_new_code(&requests, group, example.revision, saved)?;
    thread::sleep(Duration::from_millis(300));

    let broken = example.break_build();
    thread::sleep(HOLD_BROKEN);
    let fixed = example.edit();
    let fixed_code = wait_new_code(&requests, group, example.revision, fixed)?;
    thread::sleep(Duration::from_millis(100));

    let events = requests.finish();
    let round = Round {
        save_to_new: new_code - saved,
        reload: Window::of(&events, saved, new_code),
        broken: Window::of(&events, broken, fixed),
        fix_to_new: fixed_code - fixed,
        fix: Window::of(&events, fixed, fixed_code),
    };
    Ok((round, idle))
}

fn wait_first_answer(group: &mut Group, variant: &Variant, port: u16) -> Result<(), Failure> {
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = support::http_get_within(port, "/", REQUEST_TIMEOUT) {
            return Ok(());
        }
        if let Some(status) = group.exited() {
            if variant.is_portguard() && status.code() == Some(2) && started.elapsed() < QUICK_EXIT
            {
                return Err(Failure::NeedsWatch);
            }
            return Err(Failure::Other(format!(
                "exited with {status} before it answered: {}",
                last_line(&group.log())
            )));
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(Failure::Other(format!(
                "did not answer within {} s: {}",
                START_TIMEOUT.as_secs(),
                last_line(&group.log())
            )));
        }
        thread::sleep(Duration::from_millis(2));
    }
}

fn wait_new_code(
    requests: &RequestLoop,
    group: &mut Group,
    revision: u32,
    saved: Instant,
) -> Result<Instant, Failure> {
    loop {
        if let Some(at) = requests.answered_by(revision, saved) {
            return Ok(at);
        }
        if let Some(status) = group.exited() {
            return Err(Failure::Other(format!(
                "exited with {status} before it served the new code: {}",
                last_line(&group.log())
            )));
        }
        if saved.elapsed() > NEW_CODE_TIMEOUT {
            return Err(Failure::Other(format!(
                "did not serve new code within {} s",
                NEW_CODE_TIMEOUT.as_secs()
            )));
        }
        thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(target_os = "linux")]
fn measure_idle(group: &Group, idle: Duration) -> Idle {
    let pid = group.pid();
    let before = common::usage(pid).expect("read /proc for the watcher");
    thread::sleep(idle);
    let after = common::usage(pid).expect("read /proc for the watcher");
    Idle {
        rss_kib: after.rss_kib,
        cpu_ticks: after.cpu_ticks - before.cpu_ticks,
        run: Duration::from_nanos(after.run_ns - before.run_ns),
        program: common::program_name(pid).unwrap_or_default(),
    }
}

#[cfg(not(target_os = "linux"))]
fn measure_idle(_group: &Group, _idle: Duration) -> Idle {
    unreachable!("the idle watcher is measured on Linux only")
}

fn last_line(log: &str) -> String {
    log.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("(nothing on stderr)")
        .trim()
        .replace('|', "\\|")
}

/// The build and swap times of every `Reloaded in 1.42s (build 1.40s, swap 12ms) after …` line.
fn reported_reloads(log: &str) -> Vec<(Duration, Duration)> {
    log.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("Reloaded in ")?;
            let (_, rest) = rest.split_once("(build ")?;
            let (build, rest) = rest.split_once(", swap ")?;
            let (swap, _) = rest.split_once(')')?;
            Some((parse_duration(build)?, parse_duration(swap)?))
        })
        .collect()
}

/// `1.40s`, `12ms`, `850µs`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "s" => number,
        "ms" => number / 1e3,
        "µs" | "us" => number / 1e6,
        "m" | "min" => number * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

// ---------------------------------------------------------------------------
// The rows.

pub(super) fn reload(peers: &Peers, plan: &Plan) -> Vec<Row> {
    let mut rows = Vec::new();
    for (index, name) in ["hello-server", "axum-server"].into_iter().enumerate() {
        let mut example = Example::prepare(name);
        let mut variants = variants(name, peers);
        let mut builds = Vec::new();
        for number in 0..plan.reload_rounds {
            // The same edit under plain `cargo build`, nothing else running: what a reload
            // cannot be faster than.
            example.edit();
            builds.push(common::timed_run(
                example
                    .project
                    .command(support::cargo_bin(), &["build", "--quiet"]),
                "cargo build of the edit",
            ));
            for variant in &mut variants {
                let (Ok(make), None) = (&variant.command, &variant.note) else {
                    continue;
                };
                // Once, on the first example, and not again for the second handoff: the
                // watcher is the same.
                let idle = (index == 0
                    && number == 0
                    && cfg!(target_os = "linux")
                    && variant.tool != Tool::Portguard("env"))
                .then_some(plan.idle);
                match round(&mut example, variant, make, idle) {
                    Ok((round, idle, log)) => {
                        variant.rounds.push(round);
                        if idle.is_some() {
                            variant.idle = idle;
                        }
                        for (build, swap) in reported_reloads(&log) {
                            variant.reported_builds.push(build);
                            variant.reported_swaps.push(swap);
                        }
                    }
                    Err(Failure::NeedsWatch) => variant.note = Some("needs --watch".to_owned()),
                    Err(Failure::Other(why)) => variant.note = Some(why),
                }
            }
        }
        let build = Stats::of(builds);
        rows.push(
            Row::timed(
                format!("8. {name}: plain `cargo build` of the same one-line edit"),
                build,
            )
            .compared("for reference"),
        );
        for variant in &variants {
            rows.extend(variant_rows(name, variant, build));
        }
        if index == 0 {
            rows.extend(idle_rows(&variants, plan));
        }
    }
    rows
}

fn variant_rows(example: &str, variant: &Variant, build: Stats) -> Vec<Row> {
    let what = |measurement: &str| format!("{measurement}, {example}: {}", variant.what);
    let reload_what = what("8. reload on save: save to new code");
    if let Err(why) = &variant.command {
        return vec![Row::skipped(reload_what, why)];
    }
    if variant.rounds.is_empty() {
        let why = variant.note.as_deref().unwrap_or("no round ran");
        return vec![Row::skipped(reload_what, why)];
    }
    let ours = variant.is_portguard();
    let socket = variant.tool == Tool::Portguard("socket");
    let rounds = &variant.rounds;
    let runs = rounds.len().to_string();

    let save_to_new = Stats::of(rounds.iter().map(|round| round.save_to_new).collect());
    let mut compared = format!("plain `cargo build`: {}", common::show(build.median));
    // The build this tool ran, under the request loop (on two cores the loop and the server
    // take about one): the build time the target means. The plain build ran without the loop.
    let mut own_build = None;
    if !variant.reported_builds.is_empty() {
        let builds = Stats::of(variant.reported_builds.clone());
        own_build = Some(builds.median);
        let swaps = Stats::of(variant.reported_swaps.clone());
        let _ = write!(
            compared,
            "; its own line: build {}, swap {}",
            common::show(builds.median),
            common::show(swaps.median)
        );
    }
    if let Some(note) = &variant.note {
        let _ = write!(compared, "; later rounds stopped: {note}");
    }
    let mut first = Row::timed(reload_what, save_to_new).compared(compared);
    if ours {
        let reference = own_build.unwrap_or(build.median);
        first = first.target(common::verdict(
            "≤ its build + 100 ms",
            save_to_new.median <= reference + Duration::from_millis(100),
        ));
    }

    let lost: Vec<usize> = rounds
        .iter()
        .map(|round| round.reload.refused + round.reload.failures())
        .collect();
    let mut sorted = lost.clone();
    sorted.sort_unstable();
    let mut lost_row = Row {
        what: "8. the same: refused and failed requests from the save to new code, a reload"
            .to_owned(),
        median: sorted[sorted.len() / 2].to_string(),
        p90: sorted[sorted.len() * 9 / 10].to_string(),
        runs: runs.clone(),
        compared: describe_windows(rounds.iter().map(|round| &round.reload)),
        ..Row::default()
    };
    if socket {
        lost_row = lost_row.target(common::verdict(
            "0 refused, 0 failed",
            lost.iter().all(|&count| count == 0),
        ));
    }

    let waits = Stats::of(
        rounds
            .iter()
            .map(|round| round.reload.longest_wait)
            .collect(),
    );
    let mut wait_row = Row::timed(
        "8. the same: longest wait between two responses during the reload",
        waits,
    );
    if ours {
        wait_row = wait_row.target(common::verdict(
            "< 50 ms",
            waits.median < Duration::from_millis(50),
        ));
    }

    let [broken_row, fix_row] = broken_rows(&what, variant);
    vec![first, lost_row, wait_row, broken_row, fix_row]
}

/// The rows of the compile error: what clients saw while it was held, and the fix.
fn broken_rows(what: &dyn Fn(&str) -> String, variant: &Variant) -> [Row; 2] {
    let rounds = &variant.rounds;
    let runs = rounds.len().to_string();
    let hold = HOLD_BROKEN.as_secs();
    let broken_waits = Stats::of(
        rounds
            .iter()
            .map(|round| round.broken.longest_wait)
            .collect(),
    );
    let old_code_answers = rounds.iter().all(|round| {
        round.broken.answered > 0 && round.broken.refused == 0 && round.broken.failures() == 0
    });
    let mut broken_row = Row {
        what: what(&format!(
            "9. compile error held {hold} s, then the fix: longest wait between two responses while it is held"
        )),
        median: common::show(broken_waits.median),
        p90: common::show(broken_waits.p90),
        runs,
        compared: describe_windows(rounds.iter().map(|round| &round.broken)),
        ..Row::default()
    };
    if variant.is_portguard() {
        broken_row = broken_row.target(common::verdict(
            "the old code answers: 0 refused, 0 failed",
            old_code_answers,
        ));
    }

    let fix_to_new = Stats::of(rounds.iter().map(|round| round.fix_to_new).collect());
    let fix_row =
        Row::timed("9. the same: from the fix to new code", fix_to_new).compared(format!(
            "meanwhile {}",
            describe_windows(rounds.iter().map(|round| &round.fix))
        ));

    [broken_row, fix_row]
}

fn idle_rows(variants: &[Variant], plan: &Plan) -> Vec<Row> {
    let secs = plan.idle.as_secs();
    let mut rows = Vec::new();
    if !cfg!(target_os = "linux") {
        rows.push(Row::skipped(
            "10. the idle watcher",
            "reads /proc, Linux only",
        ));
        return rows;
    }
    let ticks_ms = 1000 / clock_ticks();
    for variant in variants {
        if variant.tool == Tool::Portguard("env") {
            continue;
        }
        let what = format!(
            "10. idle watcher, hello-server, {secs} s without changes: {}",
            variant.what
        );
        let Some(idle) = &variant.idle else {
            let why = variant
                .command
                .as_ref()
                .err()
                .cloned()
                .or_else(|| variant.note.clone())
                .unwrap_or_else(|| "not measured".to_owned());
            rows.push(Row::skipped(what, &why));
            continue;
        };
        let rss_mib = f64::from(u32::try_from(idle.rss_kib).unwrap_or(u32::MAX)) / 1024.0;
        if variant.is_portguard() {
            rows.push(
                Row {
                    what: format!("{what}: supervisor's resident memory (VmRSS)"),
                    median: format!("{rss_mib:.2} MiB"),
                    runs: "1".to_owned(),
                    ..Row::default()
                }
                .target(common::verdict("< 8 MiB", idle.rss_kib < 8 * 1024)),
            );
            rows.push(
                Row {
                    what: "10. the same: CPU time of the supervisor and its watcher thread (`schedstat`)"
                        .to_owned(),
                    median: common::show(idle.run),
                    runs: "1".to_owned(),
                    compared: format!("utime+stime: {} ticks of {ticks_ms} ms", idle.cpu_ticks),
                    ..Row::default()
                }
                .target(common::verdict(
                    "no CPU (< 1 ms)",
                    idle.run < Duration::from_millis(1) && idle.cpu_ticks == 0,
                )),
            );
        } else {
            rows.push(Row {
                what: format!("{what}: the watcher's resident memory (VmRSS)"),
                median: format!("{rss_mib:.2} MiB"),
                runs: "1".to_owned(),
                compared: format!(
                    "`{}`: CPU {} (`schedstat`), utime+stime {} ticks of {ticks_ms} ms",
                    idle.program,
                    common::show(idle.run),
                    idle.cpu_ticks
                ),
                ..Row::default()
            });
        }
    }
    rows
}

#[cfg(target_os = "linux")]
fn clock_ticks() -> u64 {
    common::clock_ticks_per_second()
}

#[cfg(not(target_os = "linux"))]
fn clock_ticks() -> u64 {
    100
}
