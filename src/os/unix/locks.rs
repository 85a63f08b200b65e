//! File locks: taking them, and telling whether a given process holds one.
//!
//! Whether a process holds a lock is read from its own descriptor table: on Linux,
//! `/proc/PID/fdinfo/N` lists the locks held through descriptor `N`. (`/proc/locks` lists every
//! lock of the system, but reading it waits for an RCU grace period: tens of milliseconds on the
//! way to every `stop`.) Elsewhere the answer is "cannot tell".

use std::fs::File;
use std::io;

/// Tries an advisory lock on the whole file (`flock`): exclusive, or shared with other shared
/// holders. `Ok(false)` when another holder's lock conflicts; never waits.
pub fn try_lock(file: &File, exclusive: bool) -> io::Result<bool> {
    let tried = if exclusive {
        fs4::FileExt::try_lock(file)
    } else {
        fs4::FileExt::try_lock_shared(file)
    };
    match tried {
        Ok(()) => Ok(true),
        Err(fs4::TryLockError::WouldBlock) => Ok(false),
        Err(fs4::TryLockError::Error(error)) => Err(error),
    }
}

/// Waits for a shared lock on the file: until no exclusive holder is left.
pub fn lock_shared(file: &File) -> io::Result<()> {
    fs4::FileExt::lock_shared(file)
}

/// Whether process `pid` holds an exclusive lock on `file` through a descriptor of its own (one
/// it opened or inherited), found by the file's device and inode among its descriptors.
/// `Ok(None)` where the OS cannot tell. A descriptor table that cannot be read (the process is
/// gone, or another user's) is an error, never "no".
#[cfg(target_os = "linux")]
pub fn holds_lock(pid: u32, file: &File) -> io::Result<Option<bool>> {
    use std::os::unix::fs::MetadataExt as _;
    let target = file.metadata()?;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        // Followed: the link names the open file. One closed meanwhile is skipped.
        let Ok(open) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if open.dev() != target.dev() || open.ino() != target.ino() {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))?;
        if holds_write_lock(&info) {
            return Ok(Some(true));
        }
    }
    Ok(Some(false))
}

#[cfg(not(target_os = "linux"))]
#[allow(clippy::unnecessary_wraps)] // The signature of the Linux version, which can fail.
pub fn holds_lock(_pid: u32, _file: &File) -> io::Result<Option<bool>> {
    Ok(None)
}

/// Whether an fdinfo text lists an exclusive lock held through that descriptor:
/// `lock:\t1: FLOCK  ADVISORY  WRITE 4796 fe:00:10013531 0 EOF`.
#[cfg(target_os = "linux")]
fn holds_write_lock(info: &str) -> bool {
    info.lines()
        .filter_map(|line| line.strip_prefix("lock:"))
        .any(|lock| {
            let fields: Vec<&str> = lock.split_whitespace().collect();
            // A blocked request (`->`) is not held, and a lease is no lock.
            fields
                .get(1)
                .is_some_and(|kind| matches!(*kind, "FLOCK" | "POSIX" | "OFDLCK"))
                && fields.get(3) == Some(&"WRITE")
        })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::process::CommandExt as _;
    use std::process::{Child, Command};

    use super::*;
    use crate::os::unix::eventually;

    /// A `flock` command holding or waiting for the lock; its whole group is killed on drop,
    /// since the program it runs inherits the locked descriptor.
    struct Flock(Child);

    impl Flock {
        fn start(path: &std::path::Path) -> Option<Self> {
            if which::which("flock").is_err() {
                eprintln!("flock (util-linux) not installed: skipped");
                return None;
            }
            let child = Command::new("flock")
                .arg("--exclusive")
                .arg(path)
                .args(["sleep", "30"])
                .process_group(0)
                .spawn()
                .expect("start flock");
            Some(Flock(child))
        }

        fn id(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Flock {
        fn drop(&mut self) {
            let group = rustix::process::Pid::from_raw(self.0.id() as i32).expect("a pid");
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = self.0.wait();
        }
    }

    /// Whether `/proc/locks` lists `pid` as a waiter (a `->` line): the test's own check.
    fn waiting(pid: u32) -> bool {
        std::fs::read_to_string("/proc/locks").is_ok_and(|list| {
            list.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(1) == Some(&"->") && fields.get(5) == Some(&pid.to_string().as_str())
            })
        })
    }

    /// Whether `pid` holds the lock, as far as the test can tell while things move.
    fn holds(pid: u32, file: &File) -> bool {
        holds_lock(pid, file).ok().flatten() == Some(true)
    }

    #[test]
    fn the_holder_holds_the_lock_and_a_waiter_does_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("instance.lock");
        let file = File::create(&path).expect("create the lock file");
        let Some(holder) = Flock::start(&path) else {
            return;
        };
        assert!(
            eventually(|| holds(holder.id(), &file)),
            "the flock process never showed as holding the lock"
        );
        let waiter = Flock::start(&path).expect("flock is installed");
        assert!(
            eventually(|| waiting(waiter.id())),
            "the second flock never waited"
        );
        assert_eq!(holds_lock(waiter.id(), &file).expect("fdinfo"), Some(false));
        drop(holder);
        assert!(
            eventually(|| holds(waiter.id(), &file)),
            "the waiter never took over"
        );
    }

    #[test]
    fn a_lock_taken_here_is_held_here_and_only_on_its_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("instance.lock");
        let file = File::create(&path).expect("create the lock file");
        let other = File::create(dir.path().join("other.lock")).expect("create another file");
        let me = std::process::id();
        assert_eq!(holds_lock(me, &file).expect("fdinfo"), Some(false));
        assert!(try_lock(&file, true).expect("lock"));
        assert_eq!(holds_lock(me, &file).expect("fdinfo"), Some(true));
        assert_eq!(holds_lock(me, &other).expect("fdinfo"), Some(false));
        fs4::FileExt::unlock(&file).expect("unlock");
        assert_eq!(holds_lock(me, &file).expect("fdinfo"), Some(false));
        assert!(
            holds_lock(u32::MAX - 1, &file).is_err(),
            "no such process is an error"
        );
    }

    #[test]
    fn fdinfo_lock_lines_are_read() {
        let held =
            "pos:\t0\nflags:\t0100002\nlock:\t1: FLOCK  ADVISORY  WRITE 4796 fe:00:1 0 EOF\n";
        assert!(holds_write_lock(held));
        assert!(!holds_write_lock("pos:\t0\nflags:\t0100002\n"));
        let shared = "lock:\t1: FLOCK  ADVISORY  READ 4796 fe:00:1 0 EOF\n";
        assert!(!holds_write_lock(shared));
        let lease = "lock:\t1: LEASE  ACTIVE    WRITE 4796 fe:00:1 0 EOF\n";
        assert!(!holds_write_lock(lease));
    }
}
