//! Processes: groups, signals, start times, parent death.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{Pid, Signal};

pub use rustix::process::Signal as Sig;

/// When a process started, as the OS tells it: compared for equality only, to prove that a pid
/// still names the process it named when it was recorded (a reused pid starts later).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct StartTime(String);

impl StartTime {
    /// A start time no process has, for tests of the proofs.
    #[cfg(test)]
    pub(crate) fn never() -> Self {
        StartTime("not a start time".to_owned())
    }
}

/// The file descriptor the systemd socket-passing protocol puts the first socket at.
pub const LISTEN_FD: RawFd = 3;

/// Makes `command` start in a process group of its own, end when this process dies, and,
/// with `socket`, find that listening socket at fd 3. No other descriptor of this process
/// reaches it: everything above stderr but that socket is closed on exec.
///
/// The group lets one signal reach `cargo`, rustc and the server alike, and keeps the
/// terminal's Ctrl-C away from them so that shutdown goes through the supervisor. A descriptor
/// that the supervisor inherited without close-on-exec (a detached start's report pipe, a
/// jobserver, whatever its own parent left open) would otherwise live on in the server, where
/// it keeps a pipe from ever reading end of file or a lock from ever being released.
pub fn prepare_child(command: &mut Command, socket: Option<RawFd>) {
    command.process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid, kill, dup2, fcntl, close_range, getrlimit); it allocates
    // nothing.
    unsafe {
        command.pre_exec(move || {
            die_with_parent(parent)?;
            let first_closed = match socket {
                Some(fd) => {
                    place_at_listen_fd(fd)?;
                    LISTEN_FD + 1
                }
                None => LISTEN_FD,
            };
            close_on_exec_from(first_closed)
        });
    }
}

/// Sets close-on-exec on every descriptor from `first` up, between fork and exec.
///
/// Marked rather than closed: the standard library reports a failed exec through a
/// close-on-exec pipe of its own, which must stay open until the exec.
#[cfg(target_os = "linux")]
fn close_on_exec_from(first_fd: RawFd) -> io::Result<()> {
    let Ok(first) = libc::c_uint::try_from(first_fd) else {
        return Ok(());
    };
    // Called through syscall(2): the libc wrapper is missing from older glibc and from musl.
    // SAFETY: close_range only changes flags of this process's own descriptors.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if done == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        // Before Linux 5.11 (CLOSE_RANGE_CLOEXEC) or 5.9 (close_range itself), or under a
        // seccomp filter that does not know it.
        Some(libc::ENOSYS | libc::EINVAL | libc::EPERM) => close_on_exec_each_from(first_fd),
        _ => Err(error),
    }
}

#[cfg(not(target_os = "linux"))]
fn close_on_exec_from(first: RawFd) -> io::Result<()> {
    close_on_exec_each_from(first)
}

/// Descriptors looked at one by one when the kernel cannot mark a range: a soft limit of a
/// million (common in containers) would cost a second per start.
const MAX_DESCRIPTOR_SCAN: libc::rlim_t = 65_536;

/// [`close_on_exec_from`] one descriptor at a time, up to the soft `RLIMIT_NOFILE`. Past
/// [`MAX_DESCRIPTOR_SCAN`] nothing is marked: a process that opened that many descriptors
/// before starting portguard is not one portguard can clean up after.
fn close_on_exec_each_from(first: RawFd) -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given; fcntl only reads and sets the
    // flags of this process's own descriptors.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        let end = RawFd::try_from(limit.rlim_cur.min(MAX_DESCRIPTOR_SCAN)).unwrap_or(RawFd::MAX);
        for fd in first..end {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            // Not open: nothing to mark.
            if flags < 0 || flags & libc::FD_CLOEXEC != 0 {
                continue;
            }
            if libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
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
pub fn start_time(target: u32) -> Option<StartTime> {
    // Field 22 of /proc/PID/stat, in clock ticks since boot; index 19 after the state field.
    proc_stat_fields(target).and_then(|fields| fields.get(19).cloned().map(StartTime))
}

#[cfg(not(target_os = "linux"))]
#[must_use]
pub fn start_time(target: u32) -> Option<StartTime> {
    ps_field(target, "lstart=").map(StartTime)
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

/// Makes this process's stdout and stderr copies of `source`, for a detached supervisor and the
/// servers it starts.
pub fn redirect_stdout_stderr(source: RawFd) -> io::Result<()> {
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 between descriptors this process owns.
        if unsafe { libc::dup2(source, target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Takes over a descriptor this process inherited for its own use (not 0–2), if it is open,
/// and keeps it from the programs this process starts.
#[must_use]
pub fn take_inherited_fd(fd: RawFd) -> Option<std::fs::File> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if fd <= 2 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the descriptor is open, and the caller was handed it for this use alone.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    // SAFETY: F_SETFD on the descriptor just taken over.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    Some(file)
}

/// The bytes of an OS string, to carry it through JSON unchanged.
#[must_use]
pub fn os_bytes(text: &std::ffi::OsStr) -> &[u8] {
    std::os::unix::ffi::OsStrExt::as_bytes(text)
}

/// The OS string of `bytes` that [`os_bytes`] gave.
#[must_use]
pub fn os_from_bytes(bytes: Vec<u8>) -> std::ffi::OsString {
    std::os::unix::ffi::OsStringExt::from_vec(bytes)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::collections::BTreeMap;
    use std::net::TcpListener;
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    use std::process::{Child, Stdio};

    use super::*;

    /// A descriptor of this process without close-on-exec, as a careless parent leaves one.
    fn inheritable_copy(fd: RawFd) -> OwnedFd {
        // SAFETY: dup returns a new descriptor (without FD_CLOEXEC) that the OwnedFd then owns.
        let copy = unsafe { libc::dup(fd) };
        assert!(copy > 2, "dup failed: {}", io::Error::last_os_error());
        // SAFETY: `copy` was just opened and nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(copy) }
    }

    /// The open descriptors of `sleep` once it sleeps: while it starts it may hold a file of its
    /// own for a moment (its locale), which is none of portguard's doing.
    fn settled_descriptors(pid: u32) -> BTreeMap<u32, String> {
        let mut last = descriptors(pid);
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let now = descriptors(pid);
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    /// The open descriptors of a process and what each is.
    fn descriptors(pid: u32) -> BTreeMap<u32, String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("read the child's fd folder")
            .flatten()
            .filter_map(|entry| {
                let fd = entry.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(entry.path()).ok()?;
                Some((fd, target.display().to_string()))
            })
            .collect()
    }

    fn sleep_with(prepare: impl FnOnce(&mut Command)) -> Child {
        let mut command = Command::new("sleep");
        command
            .arg("30")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        prepare(&mut command);
        command.spawn().expect("start sleep")
    }

    fn stop(mut child: Child) {
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn only_the_standard_descriptors_reach_the_child() {
        let file = tempfile::tempfile().expect("a temp file");
        let leak = inheritable_copy(file.as_raw_fd());
        let child = sleep_with(|command| prepare_child(command, None));
        let open = settled_descriptors(child.id());
        stop(child);
        assert_eq!(
            open.keys().copied().collect::<Vec<_>>(),
            [0, 1, 2],
            "{open:?}"
        );
        drop(leak);
    }

    #[test]
    fn the_listening_socket_reaches_the_child_at_fd_3_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = crate::os::socket_inode(std::os::fd::AsFd::as_fd(&listener)).expect("inode");
        let file = tempfile::tempfile().expect("a temp file");
        let leak = inheritable_copy(file.as_raw_fd());
        let child = sleep_with(|command| prepare_child(command, Some(listener.as_raw_fd())));
        let open = settled_descriptors(child.id());
        stop(child);
        assert_eq!(
            open.keys().copied().collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "{open:?}"
        );
        assert_eq!(open[&3], format!("socket:[{inode}]"));
        drop(leak);
    }

    #[test]
    fn the_one_by_one_fallback_marks_every_descriptor() {
        let file = tempfile::tempfile().expect("a temp file");
        let leak = inheritable_copy(file.as_raw_fd());
        let child = sleep_with(|command| {
            // SAFETY: fcntl and getrlimit only, as in prepare_child.
            unsafe {
                command.pre_exec(|| close_on_exec_each_from(LISTEN_FD));
            }
        });
        let open = settled_descriptors(child.id());
        stop(child);
        assert_eq!(
            open.keys().copied().collect::<Vec<_>>(),
            [0, 1, 2],
            "{open:?}"
        );
        drop(leak);
    }
}
