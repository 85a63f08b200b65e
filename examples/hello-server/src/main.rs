//! hello-server: the smallest server that plays well with portguard.
//!
//! Run it with `cargo serve-safe` from this folder, or on its own with
//! `PORT=8080 cargo run`. It shows the two ways a server can get its port:
//!
//! - `handoff = "env"` (portguard's default): portguard picks a free port and
//!   sets `PORT` (and `PORTGUARD_HOST`); the server binds it itself.
//! - `handoff = "socket"`: portguard binds the port and passes the listening
//!   socket as file descriptor 3, with `LISTEN_FDS=1` and `LISTEN_PID` set as in
//!   systemd's socket activation. Nothing can take the port between portguard's
//!   check and the server's start, and it stays open across a restart. Real
//!   servers usually read this protocol with the `listenfd` crate.
//!
//! Routes: `GET /health` answers `ok`, `GET /` a greeting.
//!
//! There is no signal handling: SIGTERM's default action ends the process,
//! which is all a stateless server needs. A server with work to finish would
//! catch SIGTERM and finish within portguard's `shutdown-timeout-ms`.

use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::process;
use std::thread;
use std::time::Duration;

/// Where the listening socket came from, for the start-up line and greeting.
#[derive(Clone, Copy)]
enum Source {
    Portguard,
    SelfBound,
}

impl Source {
    fn describe(self) -> &'static str {
        match self {
            Source::Portguard => "socket from portguard",
            Source::SelfBound => "bound PORT itself",
        }
    }
}

fn main() {
    let (listener, source) = match open_listener() {
        Ok(found) => found,
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
        "hello-server: listening on http://{addr} ({}), pid {}",
        source.describe(),
        process::id()
    );

    for stream in listener.incoming() {
        match stream {
            // A thread per connection keeps this std-only; one slow client
            // cannot hold up the health check.
            Ok(stream) => {
                thread::spawn(move || {
                    if let Err(err) = handle(stream, source) {
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

/// Takes the socket portguard passed, or binds `PORTGUARD_HOST`:`PORT`.
fn open_listener() -> io::Result<(TcpListener, Source)> {
    if socket_was_passed() {
        // SAFETY: LISTEN_FDS=1 and a LISTEN_PID naming this process are the
        // promise that fd 3 is an open listening socket meant for us alone,
        // so taking ownership of it cannot close or alias anything else.
        let listener = unsafe { TcpListener::from_raw_fd(3) };
        return Ok((listener, Source::Portguard));
    }

    let host = env::var("PORTGUARD_HOST").unwrap_or_else(|_| "127.0.0.1".to_string());
    let port = match env::var("PORT") {
        Ok(value) => value.trim().parse::<u16>().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("PORT={value:?} is not a port number"),
            )
        })?,
        Err(_) => 5000,
    };
    // A (host, port) pair accepts both "127.0.0.1" and "::1" as the host.
    let listener = TcpListener::bind((host.as_str(), port)).map_err(|err| {
        io::Error::new(err.kind(), format!("cannot bind {host} port {port}: {err}"))
    })?;
    Ok((listener, Source::SelfBound))
}

/// The systemd socket-activation check, as the `listenfd` crate does it.
fn socket_was_passed() -> bool {
    if env::var("LISTEN_FDS").as_deref() != Ok("1") {
        return false;
    }
    // LISTEN_PID guards against a child inheriting the variables (and fd 3)
    // from a parent that was given them.
    match env::var("LISTEN_PID") {
        Ok(pid) => pid.trim() == process::id().to_string(),
        Err(_) => true,
    }
}

fn handle(stream: TcpStream, source: Source) -> io::Result<()> {
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
            format!(
                "Hello from hello-server, pid {} ({}).\n",
                process::id(),
                source.describe()
            ),
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
