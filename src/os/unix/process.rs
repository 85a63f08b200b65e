//! Processes: groups, signals, start times, parent death.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{Pid, Signal};

pub use rustix::process::Signal as Sig;

/// The file descriptor the systemd socket-passing protocol puts the first socket at.
pub const LISTEN_FD: RawFd = 3;

/// Makes `command` start in a process group of its own, end when this process dies, and,
/// with `socket`, find that listening socket at fd 3.
///
/// The group lets one signal reach `cargo`, rustc and the server alike, and keeps the
/// terminal's Ctrl-C away from them so that shutdown goes through the supervisor.
pub fn prepare_child(command: &mut Command, socket: Option<RawFd>) {
    command.process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid, kill, dup2, fcntl); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            die_with_parent(parent)?;
            if let Some(fd) = socket {
                place_at_listen_fd(fd)?;
            }
            Ok(())
        });
    }
}

#[cfg(target_os = "linux")]
fn die_with_parent(parent: u32) -> io::Result<()> {
    // SAFETY: plain system calls with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died before prctl: then nobody would ever send the signal.
        if u32::try_from(libc::getppid()).ok() != Some(parent) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
#[allow(clippy::unnecessary_wraps)] // The signature of the Linux version, which can fail.
fn die_with_parent(_parent: u32) -> io::Result<()> {
    // No parent-death signal here: a start after a crashed supervisor finds the orphan by its
    // recorded pid and start time instead.
    Ok(())
}

fn place_at_listen_fd(fd: RawFd) -> io::Result<()> {
    // SAFETY: dup2 and fcntl on descriptors this process owns.
    unsafe {
        if fd == LISTEN_FD {
            // dup2 onto itself would keep close-on-exec set.
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
        } else if libc::dup2(fd, LISTEN_FD) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub(super) fn pid(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("invalid pid {pid}")))
}

/// Sends `signal` to every process of the group led by `leader`.
pub fn signal_group(leader: u32, signal: Signal) -> io::Result<()> {
    Ok(rustix::process::kill_process_group(pid(leader)?, signal)?)
}

/// Sends `signal` to one process.
pub fn signal_process(target: u32, signal: Signal) -> io::Result<()> {
    Ok(rustix::process::kill_process(pid(target)?, signal)?)
}

/// Whether any process is left in the group led by `leader`.
#[must_use]
pub fn group_exists(leader: u32) -> bool {
    pid(leader).is_ok_and(
        |leader| match rustix::process::test_kill_process_group(leader) {
            Ok(()) => true,
            Err(error) => error == rustix::io::Errno::PERM,
        },
    )
}

/// Whether `target` is a live process (a zombie is not).
#[must_use]
pub fn is_alive(target: u32) -> bool {
    let exists = pid(target).is_ok_and(|p| match rustix::process::test_kill_process(p) {
        Ok(()) => true,
        Err(error) => error == rustix::io::Errno::PERM,
    });
    exists && !is_zombie(target)
}

#[cfg(target_os = "linux")]
fn is_zombie(target: u32) -> bool {
    proc_stat_fields(target).is_some_and(|fields| fields.first() == Some(&"Z".to_owned()))
}

#[cfg(not(target_os = "linux"))]
fn is_zombie(target: u32) -> bool {
    ps_field(target, "stat=").is_some_and(|state| state.starts_with('Z'))
}

/// A token that changes when `target` is a different process with the same pid: its start
/// time. `None` when the process does not exist.
#[cfg(target_os = "linux")]
#[must_use]
pub fn start_time(target: u32) -> Option<String> {
    // Field 22 of /proc/PID/stat, in clock ticks since boot; index 19 after the state field.
    proc_stat_fields(target).and_then(|fields| fields.get(19).cloned())
}

#[cfg(not(target_os = "linux"))]
#[must_use]
pub fn start_time(target: u32) -> Option<String> {
    ps_field(target, "lstart=")
}

/// The fields of /proc/PID/stat after the command name, which may itself hold spaces and
/// parentheses: the state is the first.
#[cfg(target_os = "linux")]
pub(super) fn proc_stat_fields(target: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{target}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

#[cfg(not(target_os = "linux"))]
fn ps_field(target: u32, field: &str) -> Option<String> {
    let output = Command::new("ps")
        .args(["-o", field, "-p", &target.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
}

/// The process group `target` belongs to.
#[must_use]
pub fn process_group(target: u32) -> Option<u32> {
    let group = rustix::process::getpgid(Some(pid(target).ok()?)).ok()?;
    u32::try_from(group.as_raw_nonzero().get()).ok()
}

/// Makes `command` a daemon: a session of its own (no terminal to hang up on it), with
/// `keep` still open across exec for it to report through.
pub fn detach_child(command: &mut Command, keep: RawFd) {
    // SAFETY: setsid and fcntl are async-signal-safe; nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = libc::fcntl(keep, libc::F_GETFD);
            if flags < 0 || libc::fcntl(keep, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Points this process's stdout and stderr at `file`, for a detached supervisor and the
/// server it starts.
pub fn redirect_output(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: dup2 onto the standard descriptors, which this process owns.
    unsafe {
        for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
            if libc::dup2(file.as_raw_fd(), target) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
