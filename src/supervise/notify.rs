//! The systemd readiness protocol: a server that sends `READY=1` to `NOTIFY_SOCKET` is ready,
//! whatever a probe from outside would say.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Sender;

use anyhow::{Context as _, Result};

use super::Event;

/// Binds the datagram socket at `path` and reports `READY=1` as readiness of the server of
/// the generation `current` holds at that moment.
pub(super) fn listen(path: &Path, events: Sender<Event>, current: Arc<AtomicU32>) -> Result<()> {
    // A socket file left by a crashed supervisor of the same pid would block the bind.
    let _ = std::fs::remove_file(path);
    let socket = UnixDatagram::bind(path)
        .with_context(|| format!("could not create the notify socket `{}`", path.display()))?;
    std::thread::Builder::new()
        .name("portguard-notify".to_owned())
        .spawn(move || {
            let mut buffer = [0_u8; 4096];
            while let Ok(length) = socket.recv(&mut buffer) {
                if says_ready(&buffer[..length]) {
                    let _ = events.send(Event::Ready(current.load(Ordering::Relaxed)));
                }
            }
        })
        .context("could not start the notify thread")?;
    Ok(())
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
