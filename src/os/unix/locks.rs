//! Who holds a lock on a file.
//!
//! Linux lists every lock in `/proc/locks`, by the device and inode of the locked file; no other
//! Unix portguard runs on has such a list, so there the answer is "cannot tell".

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

/// The pids holding a lock on `file`: a `flock` (as fs4 takes it), a POSIX record lock or an
/// open file description lock, found by the file's device and inode. Processes waiting for
/// the lock are not holders.
///
/// `Ok(None)` where the OS cannot tell, which includes a lock whose holder the kernel does not
/// name (an open file description lock, or a holder in another pid namespace). A failure to
/// read the list is an error, never "no holders".
///
/// For a `flock` the kernel names the process that took the lock; a process that inherited the
/// descriptor since holds it too, and outlives that pid if the taker exits.
#[cfg(target_os = "linux")]
pub fn lock_holders(file: &File) -> io::Result<Option<Vec<u32>>> {
    let stat = rustix::fs::fstat(file)?;
    let id = FileId {
        major: libc::major(stat.st_dev),
        minor: libc::minor(stat.st_dev),
        inode: stat.st_ino,
    };
    let list = std::fs::read_to_string("/proc/locks")?;
    Ok(holders_in(&list, id))
}

#[cfg(not(target_os = "linux"))]
#[allow(clippy::unnecessary_wraps)] // The signature of the Linux version, which can fail.
pub fn lock_holders(_file: &File) -> io::Result<Option<Vec<u32>>> {
    Ok(None)
}

/// A file as `/proc/locks` names it: `MAJOR:MINOR:INODE`, the device numbers in hex.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    major: u32,
    minor: u32,
    inode: u64,
}

#[cfg(target_os = "linux")]
impl FileId {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let id = FileId {
            major: u32::from_str_radix(parts.next()?, 16).ok()?,
            minor: u32::from_str_radix(parts.next()?, 16).ok()?,
            inode: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(id)
    }
}

/// The holders of locks on `file` in the text of `/proc/locks`, sorted, each once; `None` when
/// one of those locks has no pid (`-1` for an open file description lock, `0` for a holder
/// outside this pid namespace).
///
/// A line is `ID: CLASS MODE ACCESS PID MAJOR:MINOR:INODE START END`; a waiter's line has `->`
/// after the id and is not a holder.
#[cfg(target_os = "linux")]
fn holders_in(list: &str, file: FileId) -> Option<Vec<u32>> {
    let mut holders = Vec::new();
    for line in list.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") {
            continue;
        }
        let (Some(class), Some(pid), Some(id)) = (fields.get(1), fields.get(4), fields.get(5))
        else {
            continue;
        };
        // Leases and delegations are not locks: they do not keep anyone else from locking.
        if !matches!(*class, "FLOCK" | "POSIX" | "OFDLCK") {
            continue;
        }
        if FileId::parse(id) != Some(file) {
            continue;
        }
        match pid
            .parse::<i64>()
            .ok()
            .and_then(|pid| u32::try_from(pid).ok())
        {
            Some(pid @ 1..) => holders.push(pid),
            _ => return None,
        }
    }
    holders.sort_unstable();
    holders.dedup();
    Some(holders)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::process::CommandExt as _;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use super::*;

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

    fn eventually(mut condition: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if condition() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Whether `/proc/locks` lists `pid` as a waiter (a `->` line).
    fn waiting(pid: u32) -> bool {
        std::fs::read_to_string("/proc/locks").is_ok_and(|list| {
            list.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(1) == Some(&"->") && fields.get(5) == Some(&pid.to_string().as_str())
            })
        })
    }

    #[test]
    fn the_holder_is_listed_and_a_waiter_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("instance.lock");
        let file = File::create(&path).expect("create the lock file");
        assert_eq!(lock_holders(&file).expect("read /proc/locks"), Some(vec![]));

        let Some(holder) = Flock::start(&path) else {
            return;
        };
        assert!(
            eventually(|| lock_holders(&file).expect("read /proc/locks") == Some(vec![holder.id()])),
            "the flock process never showed as the holder: {:?}",
            lock_holders(&file)
        );

        let waiter = Flock::start(&path).expect("flock is installed");
        assert!(
            eventually(|| waiting(waiter.id())),
            "the second flock never waited"
        );
        assert_eq!(
            lock_holders(&file).expect("read /proc/locks"),
            Some(vec![holder.id()]),
            "the waiter counted as a holder"
        );

        drop(holder);
        assert!(
            eventually(|| lock_holders(&file).expect("read /proc/locks") == Some(vec![waiter.id()])),
            "the waiter never took over: {:?}",
            lock_holders(&file)
        );
    }

    #[test]
    fn a_lock_taken_here_names_this_process() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("instance.lock");
        let file = File::create(&path).expect("create the lock file");
        let other = File::create(dir.path().join("other.lock")).expect("create another file");
        fs4::FileExt::lock(&file).expect("lock");
        assert_eq!(
            lock_holders(&file).expect("read /proc/locks"),
            Some(vec![std::process::id()])
        );
        // Another descriptor on the same file finds the same lock; another file has none.
        let again = File::open(&path).expect("open the lock file again");
        assert_eq!(
            lock_holders(&again).expect("read /proc/locks"),
            Some(vec![std::process::id()])
        );
        assert_eq!(
            lock_holders(&other).expect("read /proc/locks"),
            Some(vec![])
        );
        fs4::FileExt::unlock(&file).expect("unlock");
        assert_eq!(lock_holders(&file).expect("read /proc/locks"), Some(vec![]));
    }

    #[test]
    fn the_list_is_parsed() {
        let file = FileId {
            major: 0x103,
            minor: 0x2d,
            inode: 123_456,
        };
        let list = "\
1: FLOCK  ADVISORY  WRITE 12345 103:2d:123456 0 EOF
1: -> FLOCK  ADVISORY  WRITE 12346 103:2d:123456 0 EOF
2: POSIX  ADVISORY  READ 777 103:2d:123456 0 99
3: POSIX  ADVISORY  READ 777 103:2d:123456 100 EOF
4: FLOCK  ADVISORY  WRITE 555 103:2e:123456 0 EOF
5: FLOCK  ADVISORY  WRITE 556 103:2d:1234567 0 EOF
6: LEASE  ACTIVE    READ 888 103:2d:123456 0 EOF
";
        assert_eq!(holders_in(list, file), Some(vec![777, 12345]));
        assert_eq!(holders_in("", file), Some(vec![]));
        let ofd = "1: OFDLCK ADVISORY  WRITE -1 103:2d:123456 0 EOF\n";
        assert_eq!(holders_in(ofd, file), None, "a holder without a pid");
        let foreign = "1: FLOCK  ADVISORY  WRITE 0 103:2d:123456 0 EOF\n";
        assert_eq!(
            holders_in(foreign, file),
            None,
            "a holder in another pid namespace"
        );
        assert_eq!(
            FileId::parse("08:01:42"),
            Some(FileId {
                major: 8,
                minor: 1,
                inode: 42
            })
        );
        assert_eq!(FileId::parse("08:01"), None);
        assert_eq!(FileId::parse("08:01:42:1"), None);
        assert_eq!(FileId::parse("zz:01:42"), None);
    }
}
