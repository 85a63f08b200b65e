//! State files and folders that only this user may have written.
//!
//! portguard acts on what its state files say (a pid to signal, a port to free), so a file that
//! someone else could have planted or changed must not be believed. Each check is made on the
//! open descriptor (fstat), so that what is checked is what is read; the open itself neither
//! follows a symbolic link in the last component nor waits on a FIFO.

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

/// Group or others may write.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Why a state file or folder cannot be trusted, or read.
#[derive(Debug)]
pub enum PrivateFileError {
    NotFound {
        path: PathBuf,
    },
    /// A symbolic link where a file or folder of portguard's own was expected.
    Link {
        path: PathBuf,
    },
    /// Not a regular file: `kind` is "a FIFO", "a socket", "a folder", ...
    NotRegular {
        path: PathBuf,
        kind: &'static str,
    },
    /// Not a folder: `kind` is "a regular file", "a FIFO", ...
    NotFolder {
        path: PathBuf,
        kind: &'static str,
    },
    /// Owned by another account than the effective one.
    ForeignOwner {
        path: PathBuf,
        uid: u32,
    },
    /// Group or others may write to it; `mode` holds the permission bits.
    WritableByOthers {
        path: PathBuf,
        mode: u32,
    },
    /// Larger than the caller's limit, in bytes.
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    Io {
        path: PathBuf,
        error: io::Error,
    },
}

impl PrivateFileError {
    /// The file or folder the error is about.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            PrivateFileError::NotFound { path }
            | PrivateFileError::Link { path }
            | PrivateFileError::NotRegular { path, .. }
            | PrivateFileError::NotFolder { path, .. }
            | PrivateFileError::ForeignOwner { path, .. }
            | PrivateFileError::WritableByOthers { path, .. }
            | PrivateFileError::TooLarge { path, .. }
            | PrivateFileError::Io { path, .. } => path,
        }
    }

    fn io(path: &Path, error: impl Into<io::Error>) -> Self {
        let error = error.into();
        if error.kind() == io::ErrorKind::NotFound {
            PrivateFileError::NotFound {
                path: path.to_owned(),
            }
        } else {
            PrivateFileError::Io {
                path: path.to_owned(),
                error,
            }
        }
    }
}

impl fmt::Display for PrivateFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path().display();
        match self {
            PrivateFileError::NotFound { .. } => write!(f, "{path} does not exist"),
            PrivateFileError::Link { .. } => write!(
                f,
                "{path} is a symbolic link; portguard does not follow links for its own files"
            ),
            PrivateFileError::NotRegular { kind, .. } => {
                write!(f, "{path} is {kind}, not a regular file")
            }
            PrivateFileError::NotFolder { kind, .. } => write!(f, "{path} is {kind}, not a folder"),
            PrivateFileError::ForeignOwner { uid, .. } => write!(
                f,
                "{path} belongs to uid {uid}, not to this user (uid {})",
                rustix::process::geteuid().as_raw()
            ),
            PrivateFileError::WritableByOthers { mode, .. } => write!(
                f,
                "{path} may be written by other users (mode {mode:04o}); \
                 remove that permission (chmod go-w)"
            ),
            PrivateFileError::TooLarge { size, limit, .. } => write!(
                f,
                "{path} is {size} bytes long, more than the {limit} bytes portguard reads"
            ),
            PrivateFileError::Io { error, .. } => {
                write!(f, "could not open or read {path}: {error}")
            }
        }
    }
}

impl std::error::Error for PrivateFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PrivateFileError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// `st_mode` as a `u32`: it is a `u16` on macOS.
#[allow(clippy::useless_conversion)]
fn raw_mode(mode: rustix::fs::RawMode) -> u32 {
    u32::from(mode)
}

/// Permission bits given as a `u32` as rustix takes them; bits that do not fit are dropped.
#[allow(clippy::unnecessary_cast)] // `RawMode` is a `u32` on Linux, a `u16` on macOS.
fn mode_of(mode: u32) -> Mode {
    Mode::from_bits_truncate((mode & 0o7777) as rustix::fs::RawMode)
}

/// How a file type reads in a message.
fn kind_of(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a folder",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "an unknown kind of file",
    }
}

/// Opens `path` for reading without waiting for anything: opening a FIFO that no process
/// writes to would otherwise block forever. Reads from a regular file are unaffected.
pub fn open_without_waiting(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// What a file of this type is, for messages: "a regular file", "a folder", "a FIFO", ...
#[must_use]
pub fn file_kind(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    kind_of(if file_type.is_file() {
        FileType::RegularFile
    } else if file_type.is_dir() {
        FileType::Directory
    } else if file_type.is_symlink() {
        FileType::Symlink
    } else if file_type.is_fifo() {
        FileType::Fifo
    } else if file_type.is_socket() {
        FileType::Socket
    } else if file_type.is_char_device() {
        FileType::CharacterDevice
    } else if file_type.is_block_device() {
        FileType::BlockDevice
    } else {
        FileType::Unknown
    })
}

/// Reads the state file at `path`, at most `limit` bytes, if it is a regular file of this
/// effective user that nobody else may write.
pub fn read_private_file(path: &Path, limit: u64) -> Result<Vec<u8>, PrivateFileError> {
    let file = open_checked(path, OFlags::RDONLY, Mode::empty())?;
    let size = check_private_file(path, &file)?;
    if size > limit {
        return Err(PrivateFileError::TooLarge {
            path: path.to_owned(),
            size,
            limit,
        });
    }
    // One byte more than allowed tells a file that grew since the fstat.
    let mut contents = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut contents)
        .map_err(|error| PrivateFileError::io(path, error))?;
    let read = contents.len() as u64;
    if read > limit {
        return Err(PrivateFileError::TooLarge {
            path: path.to_owned(),
            size: read,
            limit,
        });
    }
    Ok(contents)
}

/// Opens the file at `path` for reading in pieces (a log, whose size is not capped), if it is a
/// regular file of this effective user that nobody else may write.
pub fn open_private_read(path: &Path) -> Result<File, PrivateFileError> {
    let file = open_checked(path, OFlags::RDONLY, Mode::empty())?;
    check_private_file(path, &file)?;
    Ok(file)
}

/// Opens the file at `path` for reading without following a link in its last component or
/// waiting on a FIFO; who owns it is the caller's question.
pub fn open_no_follow_read(path: &Path) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::open(path, flags, Mode::empty())?))
}

/// Creates one folder with mode 0700 in the `mkdir` itself, so that it is never open to others
/// for an instant whatever the umask; an existing one is an `AlreadyExists` error.
pub fn mkdir_private(path: &Path) -> io::Result<()> {
    Ok(rustix::fs::mkdir(path, Mode::RWXU)?)
}

/// Makes a folder of this user's private (mode 0700) through a descriptor, so that a link put
/// in its place meanwhile is refused rather than followed. Returns the folder's owner; a folder
/// of another user's is left alone and its owner returned.
pub fn restrict_dir_to_owner(path: &Path) -> io::Result<u32> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let folder = rustix::fs::open(path, flags, Mode::empty())?;
    let stat = rustix::fs::fstat(&folder)?;
    if stat.st_uid == super::owner::effective_uid() {
        rustix::fs::fchmod(&folder, Mode::RWXU)?;
    }
    Ok(stat.st_uid)
}

/// Whether this user may create and remove files in the folder `path`.
pub fn can_write_dir(path: &Path) -> io::Result<()> {
    Ok(rustix::fs::accessat(
        rustix::fs::CWD,
        path,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        rustix::fs::AtFlags::EACCESS,
    )?)
}

/// Opens the file at `path` for reading and writing (a lock), creating it with `mode` when
/// `create` says so, if it is a regular file of this effective user that nobody else may write.
pub fn open_private_rw(path: &Path, create: bool, mode: u32) -> Result<File, PrivateFileError> {
    let access = if create {
        OFlags::RDWR | OFlags::CREATE
    } else {
        OFlags::RDWR
    };
    let file = open_checked(path, access, mode_of(mode))?;
    check_private_file(path, &file)?;
    Ok(file)
}

/// Opens (creating it with `mode` if missing) the file at `path` for appending, as a log, if it
/// is a regular file of this effective user that nobody else may write.
pub fn open_private_append(path: &Path, mode: u32) -> Result<File, PrivateFileError> {
    let file = open_checked(
        path,
        OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE,
        mode_of(mode),
    )?;
    check_private_file(path, &file)?;
    Ok(file)
}

/// Opens without following a final symbolic link, without blocking on a FIFO, and without
/// leaking the descriptor into any program this process starts.
fn open_checked(path: &Path, access: OFlags, mode: Mode) -> Result<File, PrivateFileError> {
    let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rustix::fs::open(path, flags, mode) {
        Ok(fd) => Ok(File::from(fd)),
        // O_NOFOLLOW answers ELOOP for a link (EMLINK on FreeBSD).
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::MLINK) => Err(PrivateFileError::Link {
            path: path.to_owned(),
        }),
        // A socket cannot be opened at all, and a FIFO without a reader cannot be opened for
        // writing without blocking: say which it is.
        Err(rustix::io::Errno::NXIO | rustix::io::Errno::OPNOTSUPP) => {
            match rustix::fs::lstat(path) {
                Ok(stat) => Err(PrivateFileError::NotRegular {
                    path: path.to_owned(),
                    kind: kind_of(FileType::from_raw_mode(stat.st_mode)),
                }),
                Err(error) => Err(PrivateFileError::io(path, error)),
            }
        }
        Err(error) => Err(PrivateFileError::io(path, error)),
    }
}

/// The checks of a private file on its open descriptor; its size when they pass.
fn check_private_file(path: &Path, file: &File) -> Result<u64, PrivateFileError> {
    let stat = rustix::fs::fstat(file).map_err(|error| PrivateFileError::io(path, error))?;
    let file_type = FileType::from_raw_mode(stat.st_mode);
    if file_type != FileType::RegularFile {
        return Err(PrivateFileError::NotRegular {
            path: path.to_owned(),
            kind: kind_of(file_type),
        });
    }
    check_owner_and_mode(path, stat.st_uid, raw_mode(stat.st_mode))?;
    Ok(u64::try_from(stat.st_size).unwrap_or(0))
}

fn check_owner_and_mode(path: &Path, uid: u32, mode: u32) -> Result<(), PrivateFileError> {
    if uid != rustix::process::geteuid().as_raw() {
        return Err(PrivateFileError::ForeignOwner {
            path: path.to_owned(),
            uid,
        });
    }
    if mode & WRITABLE_BY_OTHERS != 0 {
        return Err(PrivateFileError::WritableByOthers {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Checks that `path` itself (not what a link there points to) is a folder of this effective
/// user that nobody else may write to.
///
/// A sticky folder such as /tmp does not pass: portguard's own folders are private, and no
/// other user has any business adding to them.
pub fn check_private_dir(path: &Path) -> Result<(), PrivateFileError> {
    let stat = rustix::fs::lstat(path).map_err(|error| PrivateFileError::io(path, error))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => {}
        FileType::Symlink => {
            return Err(PrivateFileError::Link {
                path: path.to_owned(),
            });
        }
        other => {
            return Err(PrivateFileError::NotFolder {
                path: path.to_owned(),
                kind: kind_of(other),
            });
        }
    }
    check_owner_and_mode(path, stat.st_uid, raw_mode(stat.st_mode))
}

/// Creates the folder `path` with mode 0700 (less whatever the umask removes), in the `mkdir`
/// itself so that it is never open to others, and checks it with [`check_private_dir`]; a
/// folder already there must pass the same check. The parent must exist.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    match rustix::fs::mkdir(path, Mode::RWXU) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(error) => return Err(error.into()),
    }
    check_private_dir(path).map_err(|error| {
        let kind = match &error {
            PrivateFileError::NotFound { .. } => io::ErrorKind::NotFound,
            PrivateFileError::Io { error, .. } => error.kind(),
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, error)
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt as _, symlink};
    use std::time::{Duration, Instant};

    use super::*;

    const LIMIT: u64 = 64 * 1024;

    fn write(path: &Path, contents: &str, mode: u32) {
        fs::write(path, contents).expect("write the file");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn a_private_file_is_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("instance.json");
        write(&path, "{\"pid\": 42}\n", 0o600);
        assert_eq!(
            read_private_file(&path, LIMIT).expect("a private file"),
            b"{\"pid\": 42}\n"
        );
        // Readable by others is fine: only writing is a way to plant a lie.
        write(&path, "42\n", 0o644);
        assert_eq!(read_private_file(&path, LIMIT).expect("0644"), b"42\n");
        // Exactly at the limit is allowed.
        assert_eq!(read_private_file(&path, 3).expect("3 bytes"), b"42\n");
        assert!(matches!(
            read_private_file(&path, 2),
            Err(PrivateFileError::TooLarge {
                size: 3,
                limit: 2,
                ..
            })
        ));
    }

    #[test]
    fn a_missing_file_is_not_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing.json");
        let error = read_private_file(&path, LIMIT).expect_err("missing");
        assert!(
            matches!(error, PrivateFileError::NotFound { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("{} does not exist", path.display())
        );
    }

    #[test]
    fn a_symbolic_link_is_refused_even_to_a_private_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("target.json");
        write(&target, "42\n", 0o600);
        let link = dir.path().join("instance.json");
        symlink(&target, &link).expect("symlink");
        let error = read_private_file(&link, LIMIT).expect_err("a link");
        assert!(matches!(error, PrivateFileError::Link { .. }), "{error:?}");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        let error = open_private_append(&link, 0o600).expect_err("a link");
        assert!(matches!(error, PrivateFileError::Link { .. }), "{error:?}");
        // A dangling link is not created through either.
        let dangling = dir.path().join("dangling.log");
        symlink(dir.path().join("nowhere.log"), &dangling).expect("symlink");
        let error = open_private_append(&dangling, 0o600).expect_err("a dangling link");
        assert!(matches!(error, PrivateFileError::Link { .. }), "{error:?}");
        assert!(!dir.path().join("nowhere.log").exists());
    }

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("instance.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo failed");
        let started = Instant::now();
        let error = read_private_file(&path, LIMIT).expect_err("a FIFO");
        assert!(
            matches!(error, PrivateFileError::NotRegular { kind: "a FIFO", .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("{} is a FIFO, not a regular file", path.display())
        );
        // Without a reader, opening for writing would block without O_NONBLOCK.
        let error = open_private_append(&path, 0o600).expect_err("a FIFO");
        assert!(
            matches!(error, PrivateFileError::NotRegular { kind: "a FIFO", .. }),
            "{error:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_socket_and_a_folder_are_not_regular_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("instance.json");
        let _socket = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let error = read_private_file(&path, LIMIT).expect_err("a socket");
        assert!(
            matches!(
                error,
                PrivateFileError::NotRegular {
                    kind: "a socket",
                    ..
                }
            ),
            "{error:?}"
        );
        let error = open_private_append(&path, 0o600).expect_err("a socket");
        assert!(
            matches!(
                error,
                PrivateFileError::NotRegular {
                    kind: "a socket",
                    ..
                }
            ),
            "{error:?}"
        );
        let error = read_private_file(dir.path(), LIMIT).expect_err("a folder");
        assert!(
            matches!(
                error,
                PrivateFileError::NotRegular {
                    kind: "a folder",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_file_others_may_write_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("instance.json");
        write(&path, "42\n", 0o666);
        let error = read_private_file(&path, LIMIT).expect_err("0666");
        assert!(
            matches!(
                error,
                PrivateFileError::WritableByOthers { mode: 0o666, .. }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("mode 0666"), "{error}");
        write(&path, "42\n", 0o620);
        let error = open_private_append(&path, 0o600).expect_err("0620");
        assert!(
            matches!(
                error,
                PrivateFileError::WritableByOthers { mode: 0o620, .. }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_file_of_another_account_is_refused() {
        if !is_root() {
            eprintln!("not root: cannot give a file away, skipped");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("instance.json");
        write(&path, "42\n", 0o600);
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
        let error = read_private_file(&path, LIMIT).expect_err("a foreign file");
        assert!(
            matches!(error, PrivateFileError::ForeignOwner { uid: 65534, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("uid 65534"), "{error}");
        let error = open_private_append(&path, 0o600).expect_err("a foreign file");
        assert!(
            matches!(error, PrivateFileError::ForeignOwner { uid: 65534, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_huge_sparse_file_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("instance.json");
        let file = File::create(&path).expect("create");
        file.set_len(2 << 30).expect("a sparse 2 GiB file");
        drop(file);
        let started = Instant::now();
        let error = read_private_file(&path, LIMIT).expect_err("2 GiB");
        assert!(
            matches!(
                error,
                PrivateFileError::TooLarge {
                    size: 0x8000_0000,
                    limit: LIMIT,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_log_is_created_private_and_appended_to() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("server.log");
        {
            use std::io::Write as _;
            let mut log = open_private_append(&path, 0o600).expect("create the log");
            log.write_all(b"one\n").expect("write");
            let mut log = open_private_append(&path, 0o600).expect("open the log again");
            log.write_all(b"two\n").expect("write");
        }
        assert_eq!(fs::read(&path).expect("read"), b"one\ntwo\n");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }

    #[test]
    fn private_folders_are_created_and_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        create_private_dir(&state).expect("create");
        let mode = fs::metadata(&state).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "mode {mode:o}");
        create_private_dir(&state).expect("an existing private folder passes");
        check_private_dir(&state).expect("private");

        fs::set_permissions(&state, fs::Permissions::from_mode(0o1777)).expect("chmod");
        let error = check_private_dir(&state).expect_err("sticky and open to all");
        assert!(
            matches!(
                error,
                PrivateFileError::WritableByOthers { mode: 0o1777, .. }
            ),
            "{error:?}"
        );
        let error = create_private_dir(&state).expect_err("an open folder");
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert!(error.to_string().contains("mode 1777"), "{error}");

        let link = dir.path().join("link");
        symlink(dir.path(), &link).expect("symlink");
        let error = check_private_dir(&link).expect_err("a link");
        assert!(matches!(error, PrivateFileError::Link { .. }), "{error:?}");

        let file = dir.path().join("file");
        write(&file, "", 0o600);
        let error = check_private_dir(&file).expect_err("a file");
        assert!(
            matches!(
                error,
                PrivateFileError::NotFolder {
                    kind: "a regular file",
                    ..
                }
            ),
            "{error:?}"
        );
        let error = create_private_dir(&file).expect_err("a file is there");
        assert!(error.to_string().contains("not a folder"), "{error}");
        assert_eq!(
            create_private_dir(&dir.path().join("no/such/parent"))
                .expect_err("no parent")
                .kind(),
            io::ErrorKind::NotFound
        );

        if is_root() {
            let foreign = dir.path().join("foreign");
            fs::create_dir(&foreign).expect("mkdir");
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown");
            let error = check_private_dir(&foreign).expect_err("a foreign folder");
            assert!(
                matches!(error, PrivateFileError::ForeignOwner { uid: 65534, .. }),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_fifo_without_a_writer_opens_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("p");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let file = open_without_waiting(&fifo).unwrap();
        assert_eq!(file_kind(file.metadata().unwrap().file_type()), "a FIFO");
    }
}
