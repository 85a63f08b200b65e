//! hello-server: the smallest server that plays well with portguard.
//!
//! Run it with `cargo serve-safe` from this folder, or on its own with
//! `PORT=8080 cargo run`. Routes: `GET /health` answers `ok`, `GET /` a greeting.
//!
//! All it needs from portguard is in `src/portguard.rs`, which
//! `cargo portguard init` writes (std only):
//!
//! - `portguard::listener()` takes the listening socket portguard passes as
//!   file descriptor 3 when `handoff = "socket"` (as in Cargo.toml here; the
//!   systemd protocol, `LISTEN_FDS=1`), so nothing can take the port between
//!   portguard's check and the server's start, and it stays open across a
//!   restart. Otherwise (`handoff = "env"`, or a plain `cargo run`) it binds
//!   `PORTGUARD_HOST`:`PORT`, by default 127.0.0.1:5000.
//! - `portguard::notify_ready()` tells portguard the server is ready
//!   (`READY=1` to `NOTIFY_SOCKET`).
//!
//! There is no signal handling: SIGTERM's default action ends the process,
//! which is all a stateless server needs. A server with work to finish would
//! catch SIGTERM and finish within portguard's `shutdown-timeout-ms`.

mod portguard;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process;
use std::thread;
use std::time::Duration;

fn main() {
    let listener = match portguard::listener() {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("hello-server: cannot listen: {err}");
            process::exit(1);
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("hello-server: the listening socket has no address: {err}");
            process::exit(1);
        }
    };
    println!(
        "hello-server: listening on http://{addr}, pid {}",
        process::id()
    );
    portguard::notify_ready();

    for stream in listener.incoming() {
        match stream {
            // A thread per connection keeps this std-only; one slow client
            // cannot hold up the health check.
            Ok(stream) => {
                thread::spawn(move || {
                    if let Err(err) = handle(stream) {
                        if !client_went_away(&err) {
                            eprintln!("hello-server: connection error: {err}");
                        }
                    }
                });
            }
            Err(err) => eprintln!("hello-server: accept failed: {err}"),
        }
    }
}

fn handle(stream: TcpStream) -> io::Result<()> {
    // Without a timeout a client that connects and says nothing would keep
    // its thread forever.
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(16 * 1024));

    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(()); // connected and closed: a TCP readiness probe
    }
    // The headers are not needed, but must be read before answering.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
    }

    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/health") => ("200 OK", "ok\n".to_string()),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            format!("Hello from hello-server, pid {}.\n", process::id()),
        ),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "method not allowed\n".to_string()),
    };

    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// A readiness probe connects and hangs up, sometimes with a reset; that is
/// not worth a line of output on every start.
fn client_went_away(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}
