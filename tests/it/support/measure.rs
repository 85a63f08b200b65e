//! A command run to its end with what it cost: how long it took and the most memory it (or any
//! process it waited for) held, as the kernel counts it. A command that reads a huge file whole
//! shows in either.

use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use super::command::Finished;
use super::process::{POLL, start_background};

/// How a measured command ended.
#[derive(Debug)]
pub struct Measured {
    pub finished: Finished,
    pub elapsed: Duration,
    /// The peak resident memory of the command or of the largest process it reaped, in KiB.
    pub max_rss_kib: u64,
}

/// Runs `command` (from `command`, `portguard` or `serve_safe`) to its end; panics with its
/// output if it takes longer than `timeout` (it is killed then, with what it started).
pub fn run_measured(command: Command, timeout: Duration) -> Measured {
    let started = Instant::now();
    let mut background = start_background(command);
    let pid = i32::try_from(background.pid()).expect("a pid fits an i32");
    let (status, rusage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to live locals of the right types; the child is ours, so
        // reaping it here cannot take another part of the test's child.
        let reaped = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut rusage) };
        assert!(
            reaped >= 0,
            "wait4({pid}): {}",
            std::io::Error::last_os_error()
        );
        if reaped == pid {
            break (ExitStatus::from_raw(status), rusage);
        }
        assert!(
            started.elapsed() <= timeout,
            "{} did not finish within {timeout:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            background.kind.program,
            background.stderr(),
            background.stdout()
        );
        std::thread::sleep(POLL);
    };
    let elapsed = started.elapsed();
    // Reaped here, so the guard must not wait for it again (nor kill a reused pid).
    background.status = Some(status);
    background.wait_exit(Duration::ZERO);
    Measured {
        finished: Finished {
            status,
            stdout: background.stdout(),
            stderr: background.stderr(),
        },
        elapsed,
        max_rss_kib: u64::try_from(rusage.ru_maxrss).unwrap_or(0),
    }
}
