//! The systemd readiness protocol: a server that sends `READY=1` to `NOTIFY_SOCKET` is ready,
//! whatever a probe from outside would say.
//!
//! The socket is a convenience, never a condition: readiness is probed from outside anyway, so
//! when it cannot be had the server starts without `NOTIFY_SOCKET`, after one warning. On
//! Linux it has an abstract address (`@portguard-notify-...`), which needs no folder and no
//! path that fits `sun_path`, and only messages of this user's processes count. Elsewhere it
//! is a file in the private `notify` folder of the runtime folder.

use std::ffi::{OsStr, OsString};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Sender;

use anyhow::{Context as _, Result};

use super::Event;
use crate::output;
use crate::runtime::RuntimeDir;

/// A bound notify socket; dropping it removes its file, if it has one.
#[derive(Debug)]
pub(crate) struct NotifySocket {
    socket: UnixDatagram,
    /// `NOTIFY_SOCKET` as the server gets it: a path, or `@name` for an abstract address.
    address: OsString,
    file: Option<PathBuf>,
}

impl NotifySocket {
    /// A socket of this supervisor's own, or `None` after a warning when none can be bound.
    #[must_use]
    pub(crate) fn bind(runtime: &RuntimeDir) -> Option<Self> {
        match bind_socket(runtime) {
            Ok(socket) => Some(socket),
            Err(error) => {
                output::warning(format!(
                    "{error:#}: the server gets no NOTIFY_SOCKET, and readiness is only probed"
                ));
                None
            }
        }
    }

    /// The value of `NOTIFY_SOCKET`.
    #[must_use]
    pub(crate) fn address(&self) -> &OsStr {
        &self.address
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        if let Some(path) = &self.file {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(target_os = "linux")]
fn bind_socket(_runtime: &RuntimeDir) -> Result<NotifySocket> {
    use std::hash::{BuildHasher as _, Hasher as _};

    // Random keys per process: a name nobody can take from us beforehand by guessing.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let name = format!("portguard-notify-{}-{random:016x}", std::process::id());
    let socket = crate::os::bind_abstract_datagram(name.as_bytes())
        .with_context(|| format!("could not create the notify socket `@{name}`"))?;
    Ok(NotifySocket {
        socket,
        address: format!("@{name}").into(),
        file: None,
    })
}

#[cfg(not(target_os = "linux"))]
fn bind_socket(runtime: &RuntimeDir) -> Result<NotifySocket> {
    let folder = runtime.subdir("notify")?;
    sweep(&folder);
    let path = folder.join(format!("notify-{}.sock", std::process::id()));
    // A socket file left by a crashed supervisor of the same pid would block the bind.
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).with_context(|| {
        format!(
            "could not create the notify socket `{}`",
            output::inert_path(&path)
        )
    })?;
    Ok(NotifySocket {
        socket,
        address: path.clone().into_os_string(),
        file: Some(path),
    })
}

/// A supervisor killed with SIGKILL leaves its socket behind; the next one removes the sockets
/// of supervisors that no longer run. A folder of their own, because the runtime folder also
/// holds a reservation file for every port ever used, and listing those would cost
/// milliseconds on the way to `cargo run`.
#[cfg(not(target_os = "linux"))]
fn sweep(folder: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|name| {
            name.strip_prefix("notify-")?
                .strip_suffix(".sock")?
                .parse::<u32>()
                .ok()
        });
        if pid.is_some_and(|pid| !crate::os::is_alive(pid)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Reports `READY=1` on `socket` as readiness of the server of the generation `current` holds
/// at that moment.
pub(super) fn listen(
    socket: &NotifySocket,
    events: Sender<Event>,
    current: Arc<AtomicU32>,
) -> Result<()> {
    let socket = socket
        .socket
        .try_clone()
        .context("could not share the notify socket")?;
    std::thread::Builder::new()
        .name("portguard-notify".to_owned())
        .spawn(move || {
            let mut buffer = [0_u8; 4096];
            loop {
                match receive(&socket, &mut buffer) {
                    Ok(Some(length)) if says_ready(&buffer[..length]) => {
                        let _ = events.send(Event::Ready(current.load(Ordering::Relaxed)));
                    }
                    Ok(_) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })
        .context("could not start the notify thread")?;
    Ok(())
}

#[cfg(target_os = "linux")]
fn receive(socket: &UnixDatagram, buffer: &mut [u8]) -> std::io::Result<Option<usize>> {
    crate::os::recv_from_own_user(socket, buffer)
}

/// The socket's folder is private: whatever arrives was sent by this user.
#[cfg(not(target_os = "linux"))]
fn receive(socket: &UnixDatagram, buffer: &mut [u8]) -> std::io::Result<Option<usize>> {
    socket.recv(buffer).map(Some)
}

/// A notify message is newline-separated `KEY=VALUE` assignments.
fn says_ready(message: &[u8]) -> bool {
    message
        .split(|&byte| byte == b'\n')
        .any(|line| line == b"READY=1")
}

#[cfg(test)]
mod tests {
    use super::says_ready;

    #[test]
    fn ready_is_one_assignment_among_others() {
        assert!(says_ready(b"READY=1"));
        assert!(says_ready(b"STATUS=serving\nREADY=1\n"));
        assert!(!says_ready(b"READY=0"));
        assert!(!says_ready(b"STATUS=READY=1"));
    }
}
