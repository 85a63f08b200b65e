//! Is the server ready, and is it healthy? Plain TCP connects and HTTP/1.1 over a std socket.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The address a client on this machine reaches a server listening on `host` at: a wildcard
/// host is reached on its loopback address.
#[must_use]
pub(crate) fn client_addr(host: IpAddr, port: u16) -> SocketAddr {
    let ip = match host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, port)
}

/// How to tell that a freshly started server is ready.
#[derive(Debug, Clone)]
pub(crate) struct ReadyCheck {
    pub(crate) addr: SocketAddr,
    pub(crate) health_path: Option<String>,
    /// The socket was bound by portguard: a connect succeeds long before the server accepts.
    pub(crate) socket_handoff: bool,
    pub(crate) check_timeout: Duration,
    /// The server's process group. In env handoff another program may hold the port that the
    /// server failed to bind; its answer must not count as our server being ready.
    pub(crate) owner_group: Option<u32>,
}

/// Waits until the server is ready or `cancel` is set; true when ready.
///
/// Env handoff: the server's own bind is the signal, so a successful connect is enough.
/// Socket handoff: the kernel completes connects on portguard's socket before the server runs,
/// so one request is sent and its answer (or the server closing the connection) is the signal;
/// that single connection waits in the backlog rather than polling.
#[must_use]
pub(crate) fn wait_ready(check: &ReadyCheck, cancel: &Arc<AtomicBool>) -> bool {
    let started = Instant::now();
    if check.socket_handoff && !cancel.load(Ordering::Relaxed) {
        let path = check.health_path.as_deref().unwrap_or("/");
        match http_status(check.addr, path, None) {
            Ok(status) if check.health_path.is_none() || is_success(status) => return true,
            Err(error) if check.health_path.is_none() && accepted(&error) => return true,
            // Accepted but not healthy yet: poll the health path like env handoff does.
            _ => {}
        }
    }
    loop {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        let ready = match &check.health_path {
            Some(path) => {
                http_status(check.addr, path, Some(check.check_timeout)).is_ok_and(is_success)
            }
            None => TcpStream::connect_timeout(&check.addr, check.check_timeout).is_ok(),
        };
        if ready && held_by_owner(check) {
            return true;
        }
        // Fast while a server usually comes up, gentle during a long build.
        let pause = if started.elapsed() < Duration::from_secs(2) {
            10
        } else {
            50
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
}

/// How long a new server that must be taken at its word (no `/proc` to see it accept) runs
/// before it counts as ready, unless it says `READY=1` sooner.
const SETTLE_UNSEEN: Duration = Duration::from_secs(1);

/// Waits until the server `pid` accepts on the handed socket `inode` (and, with a health path,
/// that answers 2xx), or `cancel` is set; true when ready. For a swap, where the old server
/// answers on the same socket: a connection proves nothing about the new one.
#[must_use]
pub(crate) fn wait_accepting(
    pid: u32,
    inode: Option<u64>,
    check: &ReadyCheck,
    cancel: &Arc<AtomicBool>,
) -> bool {
    let started = Instant::now();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        let accepts = inode.and_then(|inode| crate::os::accepts_on(pid, inode));
        if accepts == Some(true) || (accepts.is_none() && started.elapsed() >= SETTLE_UNSEEN) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if check.health_path.is_none() {
        return true;
    }
    // Then the health path, polled as for a server that bound its own port; whichever server
    // answers, the new one accepts by now.
    let health = ReadyCheck {
        socket_handoff: false,
        owner_group: None,
        ..check.clone()
    };
    wait_ready(&health, cancel)
}

/// Whether the listener on the port belongs to the server's group; true when that cannot be
/// told (a holder of another user's is invisible to us).
fn held_by_owner(check: &ReadyCheck) -> bool {
    let Some(group) = check.owner_group else {
        return true;
    };
    crate::os::port_holder(check.addr.port())
        .is_none_or(|holder| crate::os::process_group(holder.pid) == Some(group))
}

/// A server that took the connection and closed or reset it has accepted: it is running.
fn accepted(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::InvalidData
    )
}

#[must_use]
pub(crate) fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// `GET path` over HTTP/1.1; the status code of the answer. `timeout` bounds the connect and
/// each read and write; `None` waits as long as the server takes.
///
/// # Errors
/// When the connection fails, times out, or the answer is not HTTP (`InvalidData`).
pub(crate) fn http_status(
    addr: SocketAddr,
    path: &str,
    timeout: Option<Duration>,
) -> std::io::Result<u16> {
    let mut stream = match timeout {
        Some(limit) => TcpStream::connect_timeout(&addr, limit)?,
        None => TcpStream::connect(addr)?,
    };
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: portguard/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes())?;
    let mut head = [0_u8; 16];
    let mut filled = 0;
    while filled < head.len() {
        match stream.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    if filled == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    parse_status(&head[..filled]).ok_or_else(|| std::io::ErrorKind::InvalidData.into())
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.")?;
    let code = rest.get(2..5)?;
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_host_is_reached_on_loopback() {
        let wildcard = "0.0.0.0".parse().expect("address");
        assert_eq!(client_addr(wildcard, 5000).to_string(), "127.0.0.1:5000");
        let v6 = "::".parse().expect("address");
        assert_eq!(client_addr(v6, 5000).to_string(), "[::1]:5000");
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2"), None);
    }

    #[test]
    fn wildcard_hosts_are_reached_on_loopback() {
        assert_eq!(
            client_addr("0.0.0.0".parse().unwrap(), 80).to_string(),
            "127.0.0.1:80"
        );
        assert_eq!(
            client_addr("::".parse().unwrap(), 80).to_string(),
            "[::1]:80"
        );
        assert_eq!(
            client_addr("127.0.0.2".parse().unwrap(), 80).to_string(),
            "127.0.0.2:80"
        );
    }
}
