//! `<instance>.log`: what a detached server and its supervisor print. Output goes through a pipe
//! to a thread of the supervisor that writes the file and keeps it bounded: past [`LOG_LIMIT`]
//! the file becomes `<instance>.log.1` (replacing the one before) and a new one starts, so a
//! chatty server that runs for weeks cannot fill the disk.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};

use super::InstanceFiles;
use crate::os;

/// The size past which the log is rotated: one previous file is kept, so the two together hold
/// at most about twice this.
pub(crate) const LOG_LIMIT: u64 = 8 * 1024 * 1024;

/// Lines of the log shown when a detached start fails.
const TAIL_LINES: usize = 20;
/// How much of the end of the log is read to find them.
const TAIL_BYTES: u64 = 64 * 1024;

/// This process's stdout and stderr, and so those of every server it starts, written to the
/// log. Dropping it waits briefly for what is still in the pipe.
#[derive(Debug)]
pub(crate) struct Capture {
    copier: Option<JoinHandle<()>>,
    log: PathBuf,
}

impl InstanceFiles {
    /// Starts the log afresh and sends this process's output to it. Only the lock holder may.
    ///
    /// # Errors
    /// When the log cannot be created (a FIFO, a link or another user's file in its place is
    /// refused, never opened for writing), or the output cannot be redirected.
    pub(crate) fn capture_log(&self) -> Result<Capture> {
        let file = create(&self.log)?;
        let (reader, writer) = std::io::pipe().context("could not create the log pipe")?;
        os::redirect_stdout_stderr(writer.as_raw_fd())
            .with_context(|| format!("could not send output to `{}`", self.log.display()))?;
        drop(writer);
        let path = self.log.clone();
        let copier = std::thread::Builder::new()
            .name("portguard-log".to_owned())
            .spawn(move || copy(reader, file, &path))
            .context("could not start the log thread")?;
        Ok(Capture {
            copier: Some(copier),
            log: self.log.clone(),
        })
    }

    /// The last lines of the log, for a failed detached start.
    pub(crate) fn log_tail(&self) -> Option<String> {
        tail(&self.log)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Once nothing else writes (the servers are gone), the copier sees the end of the pipe
        // when this process's own ends close: point them at the log file itself.
        if let Ok(file) = open_append(&self.log) {
            let _ = os::redirect_stdout_stderr(file.as_raw_fd());
        }
        if let Some(copier) = self.copier.take() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !copier.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if copier.is_finished() {
                let _ = copier.join();
            }
        }
    }
}

/// Copies the pipe into the log, rotating it past the limit.
fn copy(mut reader: std::io::PipeReader, mut file: File, path: &Path) {
    let mut written = 0_u64;
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let length = match reader.read(&mut buffer) {
            Ok(0) => return,
            Ok(length) => length,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if written + length as u64 > LOG_LIMIT
            && written > 0
            && let Ok(fresh) = rotate(path)
        {
            file = fresh;
            written = 0;
        }
        if file.write_all(&buffer[..length]).is_ok() {
            written += length as u64;
        }
    }
}

/// `<instance>.log` becomes `<instance>.log.1`, and a new log starts.
fn rotate(path: &Path) -> Result<File> {
    let mut previous = path.as_os_str().to_owned();
    previous.push(".1");
    std::fs::rename(path, &previous)
        .with_context(|| format!("could not rotate `{}`", path.display()))?;
    create(path)
}

/// Creates (or empties) the log: never through a link, never a FIFO, only a file of this user's.
fn create(path: &Path) -> Result<File> {
    let file = os::open_private_append(path, 0o600).map_err(|why| anyhow!("{why}"))?;
    file.set_len(0)
        .with_context(|| format!("could not empty the log `{}`", path.display()))?;
    Ok(file)
}

fn open_append(path: &Path) -> Result<File> {
    os::open_private_append(path, 0o600).map_err(|why| anyhow!("{why}"))
}

/// Opens the log for reading the way every state file is read: no link, no blocking, this
/// user's regular file. Its size is not capped: it is read in pieces.
pub(crate) fn open_for_reading(path: &Path) -> Result<File> {
    os::open_private_read(path).map_err(|why| anyhow!("{why}"))
}

fn tail(path: &Path) -> Option<String> {
    let mut file = open_for_reading(path).ok()?;
    let length = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut bytes = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    (!lines.is_empty()).then(|| {
        lines[start..].iter().fold(String::new(), |mut text, line| {
            let _ = writeln!(text, "  | {}", crate::output::inert(line));
            text
        })
    })
}
