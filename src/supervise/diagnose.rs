//! A server that does not take the port it was given: it binds an address of its own (axum's
//! hello world binds `0.0.0.0:3000`) while portguard's socket, or `PORT`, goes unserved, and the
//! readiness probe waits forever. Where the server's processes really listen is in their
//! descriptor tables, so that is where this looks, while the server is not ready yet (the
//! supervisor) or was never ready (`status`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::Event;
use crate::os;

/// How often the supervisor looks while the server is not ready.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// How long a listener elsewhere must last before it is reported: a server may open an admin
/// port a moment before its main one.
const GRACE: Duration = Duration::from_secs(1);

/// What the server was given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Given {
    pub(crate) port: u16,
    pub(crate) socket_handoff: bool,
    /// In socket handoff, the inode of the socket handed over, where it is known.
    pub(crate) socket_inode: Option<u64>,
}

/// Why nothing serves the port the server was given: where it listens instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Misplaced {
    pub(crate) elsewhere: Vec<SocketAddr>,
    pub(crate) pid: u32,
    pub(crate) given: u16,
    pub(crate) socket_handoff: bool,
}

impl Misplaced {
    /// The diagnosis in one line, with what became of the server (`then`, say `; stopped it`)
    /// before the fix.
    pub(crate) fn with(&self, then: &str) -> String {
        let addrs: Vec<String> = self.elsewhere.iter().map(ToString::to_string).collect();
        let (handoff, fix) = if self.socket_handoff {
            (
                "socket handoff",
                "serve on the socket portguard hands over at fd 3 (`portguard::listener()` in \
                 src/portguard.rs, which `cargo portguard init` wrote), or bind the port in \
                 `PORT` and set `handoff = \"env\"`",
            )
        } else {
            (
                "env handoff",
                "bind `PORTGUARD_HOST`:`PORT` from the environment (`portguard::listener()` in \
                 src/portguard.rs, which `cargo portguard init` wrote, does)",
            )
        };
        format!(
            "the server (pid {}) listens on {}, not on {} ({handoff}), so nothing answers \
             there{then}; fix: {fix}",
            self.pid,
            addrs.join(", "),
            self.given
        )
    }
}

impl std::fmt::Display for Misplaced {
    /// One line, for `status` and `status --json`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.with(""))
    }
}

/// Looks once at where the processes below `root` listen (`root` itself is left out: it is
/// the supervisor, which holds the handed socket too).
#[must_use]
pub(crate) fn look(root: u32, given: &Given) -> Option<Misplaced> {
    let pids: Vec<u32> = os::ProcessTree::read_below(root)
        .descendants(root)
        .iter()
        .map(|process| process.pid)
        .collect();
    judge(&os::listening_sockets_of(&pids), given, os::accept_queue)
}

/// The verdict on what the server's processes listen on.
fn judge(
    sockets: &[os::ListeningSocket],
    given: &Given,
    accept_queue: impl Fn(u64) -> Option<u32>,
) -> Option<Misplaced> {
    // In socket handoff the server holds the given port from the start (fd 3): whether it
    // serves it only its own sockets elsewhere and the handed socket's queue can tell.
    let on_port = sockets
        .iter()
        .any(|socket| socket.addr.port() == given.port);
    if on_port && !given.socket_handoff {
        return None;
    }
    let elsewhere: Vec<&os::ListeningSocket> = sockets
        .iter()
        .filter(|socket| socket.addr.port() != given.port)
        .collect();
    let first = elsewhere.first()?;
    // A server that accepts on the handed socket and answers the probe with an error (a
    // health path not yet 2xx) empties the queue: it serves its port, and an admin port too.
    if given.socket_handoff
        && given
            .socket_inode
            .and_then(accept_queue)
            .is_some_and(|queued| queued == 0)
    {
        return None;
    }
    let mut addrs: Vec<SocketAddr> = elsewhere.iter().map(|socket| socket.addr).collect();
    addrs.dedup();
    Some(Misplaced {
        pid: first.pid,
        elsewhere: addrs,
        given: given.port,
        socket_handoff: given.socket_handoff,
    })
}

/// Watches, in a thread, until the server of `generation` is reported as misplaced (once, after
/// [`GRACE`]) or `cancel` is set (it became ready, or is being stopped).
///
/// # Errors
/// When the thread cannot be started.
pub(super) fn watch(
    given: Given,
    generation: u32,
    cancel: Arc<AtomicBool>,
    sender: Sender<Event>,
) -> Result<()> {
    let root = std::process::id();
    std::thread::Builder::new()
        .name("portguard-diagnose".to_owned())
        .spawn(move || {
            let mut seen: Option<(Instant, Vec<SocketAddr>)> = None;
            loop {
                // First a wait: a server that is ready at once (most are) costs nothing here,
                // and a wrong listener is reported only after `GRACE` anyway.
                std::thread::sleep(LOOK_EVERY);
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                match look(root, &given) {
                    Some(misplaced) => match &seen {
                        Some((since, addrs))
                            if *addrs == misplaced.elsewhere && since.elapsed() >= GRACE =>
                        {
                            let _ = sender.send(Event::Misplaced(generation, misplaced));
                            return;
                        }
                        Some((_, addrs)) if *addrs == misplaced.elsewhere => {}
                        _ => seen = Some((Instant::now(), misplaced.elsewhere)),
                    },
                    None => seen = None,
                }
            }
        })
        .context("could not start the listener watch thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(pid: u32, addr: &str, inode: u64) -> os::ListeningSocket {
        os::ListeningSocket {
            pid,
            addr: addr.parse().expect("address"),
            inode,
        }
    }

    const ENV: Given = Given {
        port: 5000,
        socket_handoff: false,
        socket_inode: None,
    };
    const SOCKET: Given = Given {
        port: 5000,
        socket_handoff: true,
        socket_inode: Some(7),
    };

    #[test]
    fn nothing_listening_is_no_diagnosis() {
        assert_eq!(judge(&[], &ENV, |_| None), None);
        assert_eq!(
            judge(&[socket(9, "127.0.0.1:5000", 7)], &SOCKET, |_| Some(1)),
            None
        );
    }

    #[test]
    fn env_handoff_is_judged_by_the_port() {
        let admin = [
            socket(9, "127.0.0.1:5000", 1),
            socket(9, "127.0.0.1:9090", 2),
        ];
        assert_eq!(judge(&admin, &ENV, |_| None), None);
        let misplaced = judge(&[socket(9, "0.0.0.0:3000", 2)], &ENV, |_| None).expect("misplaced");
        assert_eq!(
            misplaced.elsewhere,
            ["0.0.0.0:3000".parse().expect("address")]
        );
        let text = misplaced.to_string();
        assert!(
            text.starts_with(
                "the server (pid 9) listens on 0.0.0.0:3000, not on 5000 (env handoff)"
            ),
            "{text}"
        );
        assert!(text.contains("`PORT`"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn socket_handoff_is_judged_by_the_queue_on_the_handed_socket() {
        let sockets = [socket(9, "127.0.0.1:5000", 7), socket(9, "0.0.0.0:3000", 8)];
        // The probe's connection waits: nobody accepts on the handed socket.
        let misplaced = judge(&sockets, &SOCKET, |_| Some(1)).expect("misplaced");
        let text = misplaced.to_string();
        assert!(text.contains("not on 5000 (socket handoff)"), "{text}");
        assert!(text.contains("portguard::listener()"), "{text}");
        assert!(text.contains("handoff = \"env\""), "{text}");
        // Unknown (no /proc): a listener elsewhere is enough.
        assert!(judge(&sockets, &SOCKET, |_| None).is_some());
        // Accepted: it serves its port, and an admin port besides.
        assert_eq!(judge(&sockets, &SOCKET, |_| Some(0)), None);
    }
}
