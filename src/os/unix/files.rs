//! Opening a file that may turn out to be no regular file at all.

use std::fs::{File, FileType, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Opens `path` for reading without waiting for anything: opening a FIFO that no process
/// writes to would otherwise block forever. Reads from a regular file are unaffected.
pub fn open_without_waiting(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// What a file of this type is, for messages: "a regular file", "a folder", "a FIFO", ...
#[must_use]
pub fn file_kind(file_type: FileType) -> &'static str {
    if file_type.is_file() {
        "a regular file"
    } else if file_type.is_dir() {
        "a folder"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let kind = |path: &Path| file_kind(std::fs::symlink_metadata(path).unwrap().file_type());
        assert_eq!(kind(&file), "a regular file");
        assert_eq!(kind(dir.path()), "a folder");
        assert_eq!(kind(Path::new("/dev/null")), "a character device");
        let socket = dir.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(kind(&socket), "a socket");
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
        assert_eq!(
            file_kind(file.metadata().unwrap().file_type()),
            "a FIFO (named pipe)"
        );
    }
}
