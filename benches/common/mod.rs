//! The machinery of `benches/compare.rs`: statistics and the table, processes started in a
//! group of their own and stopped cleanly, the HTTP probe that times a start, what `/proc`
//! says about a process, the peers `scripts/install-bench-peers.sh` installs, and the bench's
//! section of BENCHMARKS.md.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use crate::support;

// ---------------------------------------------------------------------------
// Statistics and the table.

/// Median and 90th percentile of a set of timings.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: Duration,
    pub p90: Duration,
    pub runs: usize,
}

impl Stats {
    /// # Panics
    /// For no timings at all.
    pub fn of(mut timings: Vec<Duration>) -> Self {
        assert!(!timings.is_empty(), "no timings");
        timings.sort();
        let runs = timings.len();
        Stats {
            median: timings[runs / 2],
            p90: timings[runs * 9 / 10],
            runs,
        }
    }
}

/// The median of `values` (such as signed differences, in seconds).
pub fn median_f64(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "no values");
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A duration in the unit that suits it: `812.4 µs`, `14.21 ms`, `2.65 s`.
pub fn show(duration: Duration) -> String {
    show_secs(duration.as_secs_f64())
}

/// As `show`, for seconds that may be negative.
pub fn show_secs(secs: f64) -> String {
    let magnitude = secs.abs();
    if magnitude < 1e-3 {
        format!("{:.1} µs", secs * 1e6)
    } else if magnitude < 1.0 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

/// As `show_secs`, with a sign: `+16.20 ms`, `-0.31 ms`.
pub fn show_delta(secs: f64) -> String {
    if secs >= 0.0 {
        format!("+{}", show_secs(secs))
    } else {
        show_secs(secs)
    }
}

/// How portguard's median compares with a peer's: `portguard 4.2× faster` or `… slower`.
pub fn versus(ours: Stats, theirs: Stats) -> String {
    let ratio = theirs.median.as_secs_f64() / ours.median.as_secs_f64();
    if ratio >= 1.0 {
        format!("portguard {ratio:.1}× faster")
    } else {
        format!("portguard {:.1}× slower", 1.0 / ratio)
    }
}

/// `< 5 ms: met` or `< 5 ms: missed`.
pub fn verdict(target: &str, met: bool) -> String {
    format!("{target}: {}", if met { "met" } else { "**missed**" })
}

/// One line of the table. Every cell is text, so that a row can be a count, a size or a note.
#[derive(Debug, Default)]
pub struct Row {
    pub what: String,
    pub median: String,
    pub p90: String,
    pub runs: String,
    pub compared: String,
    pub target: String,
}

impl Row {
    pub fn timed(what: impl Into<String>, stats: Stats) -> Self {
        Row {
            what: what.into(),
            median: show(stats.median),
            p90: show(stats.p90),
            runs: stats.runs.to_string(),
            ..Row::default()
        }
    }

    /// A measurement that was not made, and why.
    pub fn skipped(what: impl Into<String>, why: &str) -> Self {
        Row {
            what: what.into(),
            median: format!("skipped: {why}"),
            ..Row::default()
        }
    }

    pub fn compared(mut self, text: impl Into<String>) -> Self {
        self.compared = text.into();
        self
    }

    pub fn target(mut self, text: impl Into<String>) -> Self {
        self.target = text.into();
        self
    }
}

/// The rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut text = String::from(
        "| measurement | median | p90 | runs | compared | target |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} |",
            row.what, row.median, row.p90, row.runs, row.compared, row.target
        );
    }
    text
}

// ---------------------------------------------------------------------------
// Processes.

/// A command started in a process group of its own (its pid is the group's id), its stdout
/// discarded and its stderr written to a file for the error message should it fail. Stopped
/// with SIGTERM to that group; dropping it unstopped SIGKILLs the group. Only the group this
/// started is ever signalled.
pub struct Group {
    child: Child,
    status: Option<ExitStatus>,
    what: String,
    log: PathBuf,
}

impl Group {
    /// # Panics
    /// When the command cannot be started.
    pub fn spawn(mut command: Command, what: &str, log: &Path) -> Self {
        let stderr = fs::File::create(log).expect("create the log file");
        command
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {what}: {err}"));
        Group {
            child,
            status: None,
            what: what.to_owned(),
            log: log.to_owned(),
        }
    }

    /// For what /proc says about it (Linux only).
    #[cfg(target_os = "linux")]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote on stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// The time from `started` to the first `200` for `GET /` on 127.0.0.1:`port`: connects
    /// back to back (a refused connect waits 200 µs), each answered connection read to its end.
    ///
    /// # Panics
    /// When the command exits first, or nothing answers within `timeout`.
    pub fn first_response(&mut self, port: u16, started: Instant, timeout: Duration) -> Duration {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = started + timeout;
        loop {
            if let Ok(Some(200)) =
                TcpStream::connect(addr).map(|stream| get_status(stream, timeout))
            {
                return started.elapsed();
            }
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited with {status} before it answered on port {port}; stderr:\n{}",
                    self.what,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer on port {port} within {timeout:?}; stderr:\n{}",
                self.what,
                self.log()
            );
            thread::sleep(Duration::from_micros(200));
        }
    }

    /// SIGTERM to the group, then waits for the command to exit (SIGKILL after 15 s) and, with
    /// `port`, for the port to be free.
    ///
    /// # Panics
    /// When the port stays busy.
    pub fn stop(&mut self, port: Option<u16>) {
        if self.exited().is_none() {
            self.signal(Signal::TERM);
            let exited = support::wait_until(Duration::from_secs(15), || self.exited().is_some());
            if !exited {
                eprintln!("{} ignored SIGTERM for 15 s; sending SIGKILL", self.what);
                self.kill();
            }
        }
        if let Some(port) = port {
            assert!(
                support::wait_until_port_free(port, Duration::from_secs(15)),
                "port {port} still busy 15 s after {} stopped",
                self.what
            );
        }
    }

    /// Waits for an exit that something else caused.
    ///
    /// # Panics
    /// When it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        support::wait_until(timeout, || self.exited().is_some());
        self.exited()
            .unwrap_or_else(|| panic!("{} still runs after {timeout:?}", self.what))
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32).expect("a child's pid is never 0");
        let _ = kill_process_group(pid, signal);
    }

    fn kill(&mut self) {
        self.signal(Signal::KILL);
        self.status = Some(self.child.wait().expect("wait"));
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill();
        }
    }
}

/// `GET /` on a connected stream: the status code, or `None` for no complete answer.
fn get_status(mut stream: TcpStream, timeout: Duration) -> Option<u16> {
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let head = std::str::from_utf8(response.get(..response.len().min(32))?).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `command` to its end and returns how long it took.
///
/// # Panics
/// When it cannot be started or fails.
pub fn timed_run(mut command: Command, what: &str) -> Duration {
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let started = Instant::now();
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {what}: {err}"));
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    took
}

/// Binds 127.0.0.1:`port` (closing at once) until that succeeds; `started` is when the wait
/// began.
///
/// # Panics
/// When the port is still busy after 10 s.
pub fn wait_bindable(port: u16, started: Instant) -> Duration {
    loop {
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "port {port} still busy 10 s after the stop began"
        );
        thread::sleep(Duration::from_micros(100));
    }
}

// ---------------------------------------------------------------------------
// What /proc says about a process (Linux only).

/// A process's memory and CPU use at one moment.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// `VmRSS`, in KiB.
    pub rss_kib: u64,
    /// utime + stime of all its threads, in clock ticks.
    pub cpu_ticks: u64,
    /// Time on a CPU of its live threads (`/proc/PID/task/*/schedstat`), in nanoseconds.
    pub run_ns: u64,
}

#[cfg(target_os = "linux")]
pub fn usage(pid: u32) -> Option<Usage> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields are counted from the last ')': the command name may hold spaces. utime and stime
    // are fields 14 and 15; the first after ')' is field 3.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let mut run_ns = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let text = fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        run_ns += text
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Usage {
        rss_kib,
        cpu_ticks: utime + stime,
        run_ns,
    })
}

/// Clock ticks a second (`sysconf(_SC_CLK_TCK)`), the unit of utime and stime.
#[cfg(target_os = "linux")]
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100)
}

/// The file name of the program `pid` runs.
#[cfg(target_os = "linux")]
pub fn program_name(pid: u32) -> Option<String> {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(exe.file_name()?.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------------------
// Peers.

/// Where `scripts/install-bench-peers.sh` puts the peers.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".bench-peers")
}

const INSTALL_HINT: &str = "run scripts/install-bench-peers.sh";

/// The peers found, each with its version, or why it cannot be used.
#[derive(Debug)]
pub struct Peers {
    /// `.bench-peers/bin/systemfd`.
    pub systemfd: Result<Peer, String>,
    /// `.bench-peers/bin/cargo-watch`, which cargo finds on PATH as `cargo watch`.
    pub cargo_watch: Result<Peer, String>,
    /// `.bench-peers/bin/watchexec` (the crate watchexec-cli).
    pub watchexec: Result<Peer, String>,
    /// `get-port`'s `index.js`, run with `node`.
    pub get_port: Result<Peer, String>,
    /// `kill-port`'s `index.js`, run with `node`; it also needs `lsof`.
    pub kill_port: Result<Peer, String>,
    /// `node --version`, when node is on PATH.
    pub node_version: Option<String>,
}

/// A peer that can be run, and its version.
#[derive(Debug, Clone)]
pub struct Peer {
    pub path: PathBuf,
    pub version: String,
}

impl Peers {
    pub fn find() -> Self {
        let dir = peers_dir();
        let systemfd = crate_peer(&dir, "systemfd");
        let cargo_watch = crate_peer(&dir, "cargo-watch");
        let watchexec = crate_peer(&dir, "watchexec");
        let node_version = Command::new("node")
            .arg("--version")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
        let node_package = |name: &str| -> Result<Peer, String> {
            if node_version.is_none() {
                return Err(format!("`node` not found on PATH, needed for {name}"));
            }
            let package = dir.join("node/node_modules").join(name);
            let version = fs::read_to_string(package.join("package.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|json| json["version"].as_str().map(str::to_owned))
                .ok_or_else(|| format!("{name} not installed ({INSTALL_HINT})"))?;
            Ok(Peer {
                path: package.join("index.js"),
                version: format!("{name} {version}"),
            })
        };
        let get_port = node_package("get-port");
        let kill_port = node_package("kill-port").and_then(|peer| {
            // kill-port finds the process with `lsof`; without it, it kills nothing and says
            // nothing.
            if which::which("lsof").is_ok() {
                Ok(peer)
            } else {
                Err("kill-port needs `lsof`, which is not on PATH".to_owned())
            }
        });
        Peers {
            systemfd,
            cargo_watch,
            watchexec,
            get_port,
            kill_port,
            node_version,
        }
    }

    /// One line naming the versions compared against.
    pub fn describe(&self) -> String {
        let mut found = Vec::new();
        let all = [
            &self.systemfd,
            &self.cargo_watch,
            &self.watchexec,
            &self.get_port,
            &self.kill_port,
        ];
        for peer in all.into_iter().flatten() {
            found.push(peer.version.clone());
        }
        let node = self
            .node_version
            .as_deref()
            .map(|version| format!(" (node {version})"))
            .unwrap_or_default();
        if found.is_empty() {
            "Peers: none installed (run `scripts/install-bench-peers.sh`).".to_owned()
        } else {
            format!("Peers: {}{node}.", found.join(", "))
        }
    }
}

/// A binary of `.bench-peers/bin`, with the version it reports (`NAME --version`).
fn crate_peer(dir: &Path, name: &str) -> Result<Peer, String> {
    let path = dir.join("bin").join(name);
    if !path.is_file() {
        return Err(format!("{name} not installed ({INSTALL_HINT})"));
    }
    let version = Command::new(&path)
        .arg("--version")
        .output()
        .ok()
        // The first line: watchexec goes on with its build details.
        .and_then(|output| {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.lines().next().map(|line| line.trim().to_owned())
        })
        .filter(|version| !version.is_empty())
        .unwrap_or_else(|| name.to_owned());
    Ok(Peer { path, version })
}

/// PATH with the peers' folder and the folder of the cargo the benchmark runs in front, so
/// that `cargo watch` finds cargo-watch and a peer's `cargo run` is that same cargo.
pub fn peers_path() -> std::ffi::OsString {
    let mut folders = vec![peers_dir().join("bin")];
    if let Some(cargo_dir) = support::cargo_bin()
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        folders.push(cargo_dir.to_path_buf());
    }
    if let Some(path) = std::env::var_os("PATH") {
        folders.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(folders).unwrap_or_default()
}

/// A script of `benches/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/peers")
        .join(name)
}

/// Runs `node SCRIPT ARGS...` and parses the JSON it prints.
///
/// # Panics
/// When node fails or prints no JSON.
pub fn run_node(script: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new("node")
        .arg(peer_script(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "node {script} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "node {script} printed no JSON ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

// ---------------------------------------------------------------------------
// The results in BENCHMARKS.md.

/// Replaces this benchmark's section of BENCHMARKS.md, with the machine and the date.
pub fn write_bench_section(name: &str, table: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let section = format!("{begin}\n{}\n{table}{end}", bench_machine());
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(start), Some(stop)) => format!(
            "{}{section}{}",
            &existing[..start],
            &existing[stop + end.len()..]
        ),
        _ => format!("{}\n{section}\n", existing.trim_end()),
    };
    std::fs::write(&path, updated).expect("write BENCHMARKS.md");
}

fn bench_machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let kernel = std::process::Command::new("uname")
        .arg("-sr")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("Measured {date} on {cpu}, {cores} cores, {kernel}; release build.\n")
}
