//! Ports on the loopback address, always OS-given, and a minimal HTTP client for the fixture
//! server.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::process::wait_until;

/// A port that was free a moment ago. Another process may take it before the
/// test uses it; use `hold_port` where the port must stay busy.
pub fn free_port() -> u16 {
    hold_port().1
}

/// A listener on 127.0.0.1 on an OS-chosen port, busy until it is dropped.
pub fn hold_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    (listener, port)
}

/// `GET path` on 127.0.0.1:port: the status code and body, or why not.
/// The fixture answers with `Connection: close`, so the body is all that
/// follows the headers.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    http_get_within(port, path, Duration::from_secs(2)).map_err(|err| err.message)
}

/// The fixture's `GET /info` on 127.0.0.1:port; panics unless it answers 200
/// with JSON.
pub fn info(port: u16) -> serde_json::Value {
    let (status, body) = http_get(port, "/info").expect("GET /info");
    assert_eq!(status, 200, "GET /info: {body}");
    serde_json::from_str(&body).expect("/info is JSON")
}

/// Whether no listener holds `port` on any local IPv4 or IPv6 address (a
/// wildcard bind conflicts with all of them), within `timeout`.
pub fn wait_until_port_free(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || port_is_free(port))
}

fn port_is_free(port: u16) -> bool {
    if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_err() {
        return false;
    }
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)) {
        Ok(_) => true,
        // Without IPv6 on this host nothing can listen there either.
        Err(err) => err.kind() != std::io::ErrorKind::AddrInUse,
    }
}

/// Why `http_get_within` got no answer: the kind tells a refused connection
/// (`ConnectionRefused`) from one cut off (`ConnectionReset`, or
/// `UnexpectedEof` for an incomplete response) and a timeout.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub kind: std::io::ErrorKind,
    pub message: String,
}

/// As `http_get`, with `timeout` on the connect and on each read and write,
/// and an error that says what went wrong.
pub fn http_get_within(
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let fail = |what: &str, err: std::io::Error| HttpError {
        kind: err.kind(),
        message: format!("{what} {addr}: {err}"),
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|err| fail("connect", err))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|err| fail("set timeouts on", err))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|err| fail("send request to", err))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|err| fail("read response from", err))?;
    let response = String::from_utf8_lossy(&response);
    let incomplete = || HttpError {
        kind: std::io::ErrorKind::UnexpectedEof,
        message: format!("incomplete response from {addr}: {response:?}"),
    };
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(incomplete)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(incomplete)?;
    Ok((status, body.to_string()))
}

/// The first of `len` consecutive ports, all free now, below the OS's ephemeral range. Tests
/// where servers bind their own port (env handoff) use it when they start many at once: a port
/// in the ephemeral range can become the source port of any test's outgoing connection between
/// portguard's check and the server's bind. The base still comes from the OS (an ephemeral port
/// folded below the range), so no port number is fixed and parallel tests spread out.
pub fn quiet_port_range(len: u16) -> u16 {
    let ephemeral_start: u16 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let span = ephemeral_start
        .saturating_sub(10_000)
        .saturating_sub(len)
        .max(1);
    for _ in 0..50 {
        let base = 10_000 + free_port() % span;
        let all_free =
            (base..base + len).all(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {len} free consecutive ports below {ephemeral_start}")
}
