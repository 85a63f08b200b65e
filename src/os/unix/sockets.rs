//! Sockets and who holds them.
//!
//! Two things differ between Unix systems here: what `SO_REUSEADDR` means for a bind, and where
//! to find out which process listens on a port. Linux answers the second from `/proc`; the other
//! systems (macOS, the BSDs) have no `/proc` with sockets in it, so they ask `lsof`.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A process found holding a port or a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command line, arguments joined with spaces, control characters replaced; may be
    /// empty when the process could not be inspected beyond its pid.
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.command.is_empty() {
            write!(f, "pid {}", self.pid)
        } else {
            write!(
                f,
                "pid {} `{}`",
                self.pid,
                crate::output::Inert(&self.command)
            )
        }
    }
}

/// Whether the sockets that only test a port set `SO_REUSEADDR`.
///
/// On Linux, with `SO_REUSEADDR` on both sides, a bind fails only against a socket that is
/// LISTENING on an overlapping address, so connections lingering in `TIME_WAIT` after a previous
/// server do not make the port look busy, while a wildcard listener still blocks a specific
/// address. On macOS and the BSDs the flag lets a specific bind coexist with a wildcard one (and
/// the other way round), which would hide exactly the listeners the probes look for.
#[must_use]
pub fn probe_reuse_address() -> bool {
    cfg!(target_os = "linux")
}

/// Whether the listening socket that portguard keeps or hands over sets `SO_REUSEADDR`.
///
/// It does everywhere, as `std::net::TcpListener::bind` does on Unix: without it a restart of
/// the server within the `TIME_WAIT` period of its previous connections fails on macOS and Linux
/// alike. The cross-address probes run before this bind, so they have already ruled out the
/// overlaps that the flag would let through on macOS.
#[must_use]
pub fn listener_reuse_address() -> bool {
    true
}

/// Who listens on `port` (any address, IPv4 or IPv6), if that can be found out.
///
/// Never fails loudly: a process that cannot be inspected is skipped, and a lookup that takes
/// too long gives up with what it has.
#[must_use]
pub fn port_holder(port: u16) -> Option<Holder> {
    port_holders(&[port]).remove(&port)
}

/// [`port_holder`] for several ports at once, for the price of one look at the process table.
///
/// Ports without a known holder are absent from the map.
#[must_use]
pub fn port_holders(ports: &[u16]) -> HashMap<u16, Holder> {
    if ports.is_empty() {
        return HashMap::new();
    }
    #[cfg(target_os = "linux")]
    {
        procfs::holders(ports)
    }
    #[cfg(not(target_os = "linux"))]
    {
        lsof::holders(ports)
    }
}

/// The inode of the socket at `fd`, which names it in `/proc/PID/fd` (`socket:[INODE]`) and in
/// the kernel's socket tables.
pub fn socket_inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let stat = rustix::fs::fstat(fd)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the descriptor is not a socket",
        ));
    }
    #[allow(clippy::useless_conversion)] // `st_ino` is narrower than u64 on some targets.
    Ok(u64::from(stat.st_ino))
}

/// Every process owned by `uid` that has the socket `inode` open, sorted by pid.
///
/// Processes of other users are never looked into, and a process that cannot be inspected is
/// skipped. Empty on systems without `/proc`, where a socket's inode names nothing.
#[must_use]
pub fn socket_holders(inode: u64, uid: u32) -> Vec<Holder> {
    #[cfg(target_os = "linux")]
    {
        procfs::socket_holders(inode, uid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        // macOS names a socket by a kernel address, not by the inode fstat gives, so nothing
        // (lsof included) can match the two.
        let _ = (inode, uid);
        Vec::new()
    }
}

/// A listening TCP socket found in a process's descriptor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListeningSocket {
    /// One process that holds it (a socket shared by several is listed once).
    pub pid: u32,
    /// The address it listens on, as the kernel has it (a wildcard host stays a wildcard).
    pub addr: SocketAddr,
    /// Its inode; 0 where the system does not say (without `/proc`).
    pub inode: u64,
}

/// The listening TCP sockets that `pids` hold, sorted by address: where those processes really
/// serve, whatever they were told.
///
/// Never fails loudly: a process that cannot be inspected is skipped. On systems without
/// `/proc` it asks `lsof`, within the lookup budget; without `lsof` it finds nothing.
#[must_use]
pub fn listening_sockets_of(pids: &[u32]) -> Vec<ListeningSocket> {
    if pids.is_empty() {
        return Vec::new();
    }
    #[cfg(target_os = "linux")]
    {
        procfs::listening_sockets_of(pids)
    }
    #[cfg(not(target_os = "linux"))]
    {
        lsof::listening_sockets_of(pids)
    }
}

/// How many connections wait, not yet accepted, on the listening socket `inode`; `None` when
/// that cannot be told (no such listening socket, or no `/proc`).
#[must_use]
pub fn accept_queue(inode: u64) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        procfs::accept_queue(inode)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = inode;
        None
    }
}

/// Whether `pid` or a process below it waits for connections on the listening socket `inode`:
/// a thread blocked in `accept` on it, or an epoll instance watching it (an async runtime's
/// listener). `None` where that cannot be told (no `/proc`). A server that inherited the socket
/// holds it from its first instruction; this is what tells that it has come to serve it.
#[must_use]
#[allow(
    clippy::unnecessary_wraps,
    reason = "always an answer on Linux, never one without /proc"
)]
pub fn accepts_on(pid: u32, inode: u64) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        let mut pids = vec![pid];
        pids.extend(
            super::ProcessTree::read_below(pid)
                .descendants(pid)
                .iter()
                .map(|process| process.pid),
        );
        Some(pids.into_iter().any(|pid| procfs::accepts_on(pid, inode)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, inode);
        None
    }
}

/// How long one holder lookup may take before it gives up: the answer only decorates a message,
/// it must not hold up starting the server.
const LOOKUP_BUDGET: Duration = Duration::from_secs(1);

/// Longest command kept, in characters; a JVM's command line can run to kilobytes.
const MAX_COMMAND_CHARS: usize = 200;

/// Makes a command line safe to print: another user's process chooses its own arguments, and
/// they must not be able to move the cursor or recolour the terminal.
fn printable_command(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_COMMAND_CHARS + 3));
    for (count, c) in raw.trim().chars().enumerate() {
        if count == MAX_COMMAND_CHARS {
            out.push('…');
            break;
        }
        out.push(match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '?',
            c => c,
        });
    }
    out
}

#[cfg(target_os = "linux")]
mod procfs {
    use std::collections::HashMap;
    use std::fs;
    use std::net::{IpAddr, SocketAddr};
    use std::path::Path;
    use std::time::Instant;

    use super::{Holder, LOOKUP_BUDGET, ListeningSocket, printable_command};

    /// `TCP_LISTEN` as `/proc/net/tcp` prints it.
    const LISTEN_STATE: &str = "0A";

    pub(super) fn holders(ports: &[u16]) -> HashMap<u16, Holder> {
        let mut wanted = HashMap::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            // A kernel without IPv6 has no tcp6 table; that is not an error.
            if let Ok(text) = fs::read_to_string(table) {
                listening_inodes(&text, ports, &mut wanted);
            }
        }
        let mut found = HashMap::new();
        if wanted.is_empty() {
            return found;
        }
        let mut remaining: Vec<u16> = wanted.values().copied().collect();
        remaining.sort_unstable();
        remaining.dedup();

        let deadline = Instant::now() + LOOKUP_BUDGET;
        let Ok(processes) = fs::read_dir("/proc") else {
            return found;
        };
        for process in processes.flatten() {
            if Instant::now() > deadline {
                break;
            }
            let Some(pid) = process
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // Another user's fd folder answers EACCES unless we are root: skip it quietly.
            let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(target) = fs::read_link(fd.path()) else {
                    continue;
                };
                let Some(inode) = target.to_str().and_then(socket_inode) else {
                    continue;
                };
                let Some(&port) = wanted.get(&inode) else {
                    continue;
                };
                if let Some(at) = remaining.iter().position(|&p| p == port) {
                    remaining.swap_remove(at);
                    found.insert(
                        port,
                        Holder {
                            pid,
                            command: command_of(&process.path()),
                        },
                    );
                    if remaining.is_empty() {
                        return found;
                    }
                }
            }
        }
        found
    }

    pub(super) fn socket_holders(inode: u64, uid: u32) -> Vec<Holder> {
        let mut found = Vec::new();
        let Ok(processes) = fs::read_dir("/proc") else {
            return found;
        };
        for process in processes.flatten() {
            let Some(pid) = process
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // The owner first: another user's descriptors are not ours to read, even as root.
            if crate::os::process_uid(pid) != Some(uid) {
                continue;
            }
            if socket_inodes(&process.path()).contains(&inode) {
                found.push(Holder {
                    pid,
                    command: command_of(&process.path()),
                });
            }
        }
        found.sort_by_key(|holder| holder.pid);
        found
    }

    /// One process of [`super::accepts_on`]: its threads' current system calls, then its epoll
    /// instances' watched descriptors.
    pub(super) fn accepts_on(pid: u32, inode: u64) -> bool {
        let process = format!("/proc/{pid}");
        let is_socket = |fd: &str| {
            fs::read_link(format!("{process}/fd/{fd}"))
                .ok()
                .and_then(|link| socket_inode(link.to_str()?))
                == Some(inode)
        };
        if let Ok(tasks) = fs::read_dir(format!("{process}/task")) {
            for task in tasks.flatten() {
                // `NR ARG0 ARG1 …`: the call a blocked thread is in, its arguments in hex.
                let Ok(call) = fs::read_to_string(task.path().join("syscall")) else {
                    continue;
                };
                let mut fields = call.split_whitespace();
                let Some(Ok(number)) = fields.next().map(str::parse::<libc::c_long>) else {
                    continue;
                };
                let mut args =
                    fields.map(|arg| u64::from_str_radix(arg.trim_start_matches("0x"), 16));
                let (Some(Ok(first)), Some(Ok(second))) = (args.next(), args.next()) else {
                    continue;
                };
                let waits = if number == libc::SYS_accept || number == libc::SYS_accept4 {
                    is_socket(&first.to_string())
                } else if is_poll(number) {
                    polled_fds(pid, first, second)
                        .iter()
                        .any(|fd| is_socket(&fd.to_string()))
                } else {
                    false
                };
                if waits {
                    return true;
                }
            }
        }
        let Ok(fds) = fs::read_dir(format!("{process}/fd")) else {
            return false;
        };
        for fd in fds.flatten() {
            let is_epoll = fs::read_link(fd.path())
                .is_ok_and(|link| link.as_os_str() == "anon_inode:[eventpoll]");
            if !is_epoll {
                continue;
            }
            let name = fd.file_name();
            let Ok(info) =
                fs::read_to_string(format!("{process}/fdinfo/{}", name.to_string_lossy()))
            else {
                continue;
            };
            // `tfd:        7 events:       19 data: …`: one line per watched descriptor.
            let watched = info
                .lines()
                .filter_map(|line| line.strip_prefix("tfd:")?.split_whitespace().next());
            if watched.into_iter().any(&is_socket) {
                return true;
            }
        }
        false
    }

    /// Whether system call `number` is `poll` or `ppoll`, whose first arguments are an array of
    /// `struct pollfd` and its length.
    fn is_poll(number: libc::c_long) -> bool {
        #[cfg(target_arch = "x86_64")]
        if number == libc::SYS_poll {
            return true;
        }
        number == libc::SYS_ppoll
    }

    /// The descriptors in the `pollfd` array at `address` (`count` of them) in `pid`'s memory:
    /// readable where the thread's system call is (the caller's own child, or any process of
    /// root's).
    fn polled_fds(pid: u32, address: u64, count: u64) -> Vec<i32> {
        use std::os::unix::fs::FileExt as _;
        // `struct pollfd`: an `int` descriptor, then two `short`s.
        const SIZE: u64 = 8;
        let count = count.min(1024);
        let Ok(memory) = fs::File::open(format!("/proc/{pid}/mem")) else {
            return Vec::new();
        };
        let mut bytes = vec![0_u8; (count * SIZE) as usize];
        if memory.read_exact_at(&mut bytes, address).is_err() {
            return Vec::new();
        }
        bytes
            .chunks_exact(SIZE as usize)
            .filter_map(|entry| Some(i32::from_ne_bytes(entry[..4].try_into().ok()?)))
            .collect()
    }

    /// The inodes of the sockets in a `/proc/PID` folder's descriptor table.
    fn socket_inodes(process: &Path) -> Vec<u64> {
        let Ok(fds) = fs::read_dir(process.join("fd")) else {
            return Vec::new();
        };
        fds.flatten()
            .filter_map(|fd| socket_inode(fs::read_link(fd.path()).ok()?.to_str()?))
            .collect()
    }

    pub(super) fn listening_sockets_of(pids: &[u32]) -> Vec<ListeningSocket> {
        let mut held: HashMap<u64, u32> = HashMap::new();
        for &pid in pids {
            for inode in socket_inodes(Path::new(&format!("/proc/{pid}"))) {
                held.entry(inode).or_insert(pid);
            }
        }
        // A building server holds no socket: the tables are not read for it.
        if held.is_empty() {
            return Vec::new();
        }
        let mut found = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let Ok(text) = fs::read_to_string(table) else {
                continue;
            };
            for row in listen_rows(&text) {
                if let Some(&pid) = held.get(&row.inode) {
                    found.push(ListeningSocket {
                        pid,
                        addr: row.addr,
                        inode: row.inode,
                    });
                }
            }
        }
        found.sort_by_key(|socket| (socket.addr, socket.pid));
        found
    }

    pub(super) fn accept_queue(inode: u64) -> Option<u32> {
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|table| fs::read_to_string(table).ok())
            .find_map(|text| {
                listen_rows(&text)
                    .find(|row| row.inode == inode)
                    .map(|row| row.queued)
            })
    }

    /// One LISTEN row of a `/proc/net/tcp{,6}` table.
    pub(super) struct ListenRow {
        pub(super) addr: SocketAddr,
        pub(super) inode: u64,
        /// For a listening socket the kernel shows the accept queue's length as `rx_queue`.
        pub(super) queued: u32,
    }

    pub(super) fn listen_rows(table: &str) -> impl Iterator<Item = ListenRow> + '_ {
        table.lines().skip(1).filter_map(|line| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            if *fields.get(3)? != LISTEN_STATE {
                return None;
            }
            let inode = fields
                .get(9)?
                .parse::<u64>()
                .ok()
                .filter(|&inode| inode != 0)?;
            let queued = fields
                .get(4)?
                .split_once(':')
                .and_then(|(_, rx)| u32::from_str_radix(rx, 16).ok())?;
            Some(ListenRow {
                addr: local_address(fields.get(1)?)?,
                inode,
                queued,
            })
        })
    }

    /// `0100007F:1388` or the 32-digit IPv6 form: the address in the kernel's byte order, as
    /// 32-bit words printed in hex, then the port.
    pub(super) fn local_address(text: &str) -> Option<SocketAddr> {
        let (host, port) = text.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let mut bytes = Vec::with_capacity(16);
        for word in 0..host.len() / 8 {
            let word = u32::from_str_radix(host.get(word * 8..word * 8 + 8)?, 16).ok()?;
            bytes.extend_from_slice(&word.to_ne_bytes());
        }
        let ip = match bytes.len() {
            4 if host.len() == 8 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
            16 if host.len() == 32 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
            _ => return None,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// Adds the inode of every listening socket on one of `ports` in a `/proc/net/tcp{,6}` table.
    pub(super) fn listening_inodes(table: &str, ports: &[u16], into: &mut HashMap<u64, u16>) {
        for line in table.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state != LISTEN_STATE {
                continue;
            }
            let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok())
            else {
                continue;
            };
            if !ports.contains(&port) {
                continue;
            }
            // Inode 0 is a socket already being torn down: it is in no process's fd table.
            if let Ok(inode @ 1..) = inode.parse::<u64>() {
                into.insert(inode, port);
            }
        }
    }

    /// The inode in an fd link such as `socket:[123456]`.
    pub(super) fn socket_inode(link: &str) -> Option<u64> {
        link.strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    }

    fn command_of(process: &Path) -> String {
        if let Ok(raw) = fs::read(process.join("cmdline")) {
            let args: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            // A kernel thread or a zombie has an empty command line; its name is in `comm`.
            if !args.is_empty() {
                return printable_command(&args.join(" "));
            }
        }
        fs::read_to_string(process.join("comm"))
            .map(|comm| printable_command(&comm))
            .unwrap_or_default()
    }
}

/// The lookup for systems without socket information in `/proc`. Built on Linux too, so that it
/// is compiled and tested there (`lsof` runs on Linux as well).
#[cfg_attr(
    target_os = "linux",
    allow(
        dead_code,
        reason = "used on macOS and the BSDs; built on Linux only to test it"
    )
)]
mod lsof {
    use std::collections::HashMap;
    use std::fmt::Write as _;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::process::Command;
    use std::time::Instant;

    use super::{Holder, LOOKUP_BUDGET, ListeningSocket, output_within, printable_command};

    pub(super) fn holders(ports: &[u16]) -> HashMap<u16, Holder> {
        let Ok(lsof) = which::which("lsof") else {
            return HashMap::new();
        };
        let deadline = Instant::now() + LOOKUP_BUDGET;
        let mut list = String::new();
        for port in ports {
            let sep = if list.is_empty() { "" } else { "," };
            let _ = write!(list, "{sep}{port}");
        }
        let mut command = Command::new(lsof);
        command
            .arg("-nP")
            .arg(format!("-iTCP:{list}"))
            .arg("-sTCP:LISTEN")
            .arg("-Fpcn");
        let Some(output) = output_within(command, deadline) else {
            return HashMap::new();
        };
        let mut found = HashMap::new();
        for (port, pid, short_name) in parse(&output) {
            if !ports.contains(&port) || found.contains_key(&port) {
                continue;
            }
            // lsof's `c` field is the process name cut to 15 characters; `ps` has the arguments.
            let command = full_command(pid, deadline).unwrap_or(short_name);
            found.insert(port, Holder { pid, command });
        }
        found
    }

    pub(super) fn listening_sockets_of(pids: &[u32]) -> Vec<ListeningSocket> {
        let Ok(lsof) = which::which("lsof") else {
            return Vec::new();
        };
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let mut command = Command::new(lsof);
        // `-a`: the process and the socket conditions together, not either.
        command
            .args([
                "-nP",
                "-a",
                "-p",
                &list.join(","),
                "-iTCP",
                "-sTCP:LISTEN",
                "-Fpn",
            ])
            .env("LC_ALL", "C");
        let Some(output) = output_within(command, Instant::now() + LOOKUP_BUDGET) else {
            return Vec::new();
        };
        let mut found = listening_addrs(&output);
        found.sort_by_key(|socket| (socket.addr, socket.pid));
        found.dedup_by_key(|socket| socket.addr);
        found
    }

    /// The listening sockets in `lsof -F pn` output; lsof's `*` (any address) reads as the
    /// IPv4 wildcard, which is what it most often is.
    pub(super) fn listening_addrs(output: &str) -> Vec<ListeningSocket> {
        let mut found = Vec::new();
        let mut pid = None;
        for line in output.lines() {
            if let Some(value) = line.strip_prefix('p') {
                pid = value.parse::<u32>().ok();
            } else if let (Some(value), Some(pid)) = (line.strip_prefix('n'), pid) {
                let Some((host, port)) = value.rsplit_once(':') else {
                    continue;
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let ip = if host == "*" {
                    Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                } else {
                    host.parse().ok()
                };
                if let (Some(ip), Ok(port)) = (ip, port.parse::<u16>()) {
                    found.push(ListeningSocket {
                        pid,
                        addr: SocketAddr::new(ip, port),
                        inode: 0,
                    });
                }
            }
        }
        found
    }

    /// `(port, pid, command name)` for each listening socket in `lsof -F pcn` output.
    ///
    /// The output is one `p<pid>` line per process, followed by its `c<name>` line and by an
    /// `f<fd>` and `n<address>:<port>` pair per socket.
    pub(super) fn parse(output: &str) -> Vec<(u16, u32, String)> {
        let mut sockets = Vec::new();
        let mut pid = None;
        let mut name = String::new();
        for line in output.lines() {
            let Some(tag) = line.chars().next() else {
                continue;
            };
            let value = &line[tag.len_utf8()..];
            match tag {
                'p' => {
                    pid = value.parse::<u32>().ok();
                    name.clear();
                }
                'c' => name = printable_command(value),
                'n' => {
                    let port = value
                        .rsplit_once(':')
                        .and_then(|(_, port)| port.parse::<u16>().ok());
                    if let (Some(pid), Some(port)) = (pid, port) {
                        sockets.push((port, pid, name.clone()));
                    }
                }
                _ => {}
            }
        }
        sockets
    }

    fn full_command(pid: u32, deadline: Instant) -> Option<String> {
        let ps = which::which("ps").ok()?;
        let mut command = Command::new(ps);
        // `-ww`: no cut at the terminal width; `args=`: POSIX name, no header.
        command.args(["-ww", "-o", "args=", "-p", &pid.to_string()]);
        let args = printable_command(&output_within(command, deadline)?);
        (!args.is_empty()).then_some(args)
    }
}

/// Runs `command` and returns its standard output, or `None` if it cannot be run, fails, or is
/// still running at `deadline` (it is then killed).
#[cfg_attr(
    target_os = "linux",
    allow(dead_code, reason = "used by the lsof lookup, which Linux only tests")
)]
fn output_within(mut command: Command, deadline: Instant) -> Option<String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    // The pipe is read on a thread so that a stuck child cannot block us past the deadline.
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let read = stdout.read_to_string(&mut text).map(|_| text);
        let _ = sender.send(read);
    });
    let timeout = deadline.saturating_duration_since(Instant::now());
    let Ok(Ok(text)) = receiver.recv_timeout(timeout) else {
        // Also reached on timeout: the child must not outlive the lookup.
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    let status = child.wait().ok()?;
    // lsof exits 1 when it found nothing (or only some of the ports); the output still counts.
    (status.success() || status.code() == Some(1)).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn probe_flag_follows_the_os() {
        assert_eq!(probe_reuse_address(), cfg!(target_os = "linux"));
        assert!(listener_reuse_address());
    }

    #[test]
    fn own_listener_is_found() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let holder = port_holder(port).expect("holder of our own listener");
        assert_eq!(holder.pid, std::process::id());
        assert!(!holder.command.is_empty());
    }

    #[test]
    fn several_ports_in_one_lookup() {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = TcpListener::bind("127.0.0.1:0").expect("bind");
        let ports = [
            a.local_addr().expect("addr").port(),
            b.local_addr().expect("addr").port(),
        ];
        let found = port_holders(&ports);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.values().all(|h| h.pid == std::process::id()));
    }

    #[test]
    fn no_holder_for_a_closed_port() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        // Racy only if another process starts listening on it in between: harmless for the
        // assertion below because such a holder would not be us.
        assert!(port_holder(port).is_none_or(|h| h.pid != std::process::id()));
        assert!(port_holders(&[]).is_empty());
    }

    #[test]
    fn commands_are_made_printable() {
        assert_eq!(printable_command("node\tserver.js\n"), "node server.js");
        assert_eq!(printable_command("evil\u{1b}[2J"), "evil?[2J");
        let long = "x".repeat(MAX_COMMAND_CHARS + 10);
        let shown = printable_command(&long);
        assert_eq!(shown.chars().count(), MAX_COMMAND_CHARS + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn lsof_output_is_parsed() {
        let output =
            "p4242\ncnode\nf21\nn*:5000\nf22\nn[::1]:5001\np77\ncpython3\nf3\nn127.0.0.1:8000\n";
        assert_eq!(
            lsof::parse(output),
            vec![
                (5000, 4242, "node".to_owned()),
                (5001, 4242, "node".to_owned()),
                (8000, 77, "python3".to_owned()),
            ]
        );
        assert!(lsof::parse("").is_empty());
        assert!(lsof::parse("garbage\n\nn:notaport\n").is_empty());
    }

    #[test]
    fn lsof_lookup_finds_own_listener() {
        if which::which("lsof").is_err() {
            eprintln!("lsof not installed: skipped");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let found = lsof::holders(&[port]);
        let holder = found.get(&port).expect("lsof sees our listener");
        assert_eq!(holder.pid, std::process::id());
        assert!(!holder.command.is_empty());
    }

    #[test]
    fn slow_commands_are_cut_off() {
        let mut sleep = Command::new("sleep");
        sleep.arg("5");
        let started = Instant::now();
        assert!(output_within(sleep, Instant::now() + Duration::from_millis(100)).is_none());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_socket_has_an_inode_and_a_file_does_not() {
        use std::os::fd::AsFd as _;
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a_inode = socket_inode(a.as_fd()).expect("inode");
        assert_ne!(a_inode, socket_inode(b.as_fd()).expect("inode"));
        let file = tempfile::tempfile().expect("a temp file");
        let error = socket_inode(file.as_fd()).expect_err("not a socket");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn every_holder_of_a_socket_is_found_and_only_for_its_owner() {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        use std::os::unix::process::CommandExt as _;

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = socket_inode(listener.as_fd()).expect("inode");
        let me = rustix::process::geteuid().as_raw();
        let holders = socket_holders(inode, me);
        assert_eq!(
            holders.iter().map(|h| h.pid).collect::<Vec<_>>(),
            [std::process::id()],
            "{holders:?}"
        );

        // A child that inherits the socket holds it too, as a server's worker would.
        let fd = listener.as_raw_fd();
        let mut command = Command::new("sleep");
        command.arg("30");
        // SAFETY: fcntl only, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start sleep");
        let holders = socket_holders(inode, me);
        let _ = child.kill();
        let _ = child.wait();
        let mut expected = vec![std::process::id(), child.id()];
        expected.sort_unstable();
        assert_eq!(
            holders.iter().map(|h| h.pid).collect::<Vec<_>>(),
            expected,
            "{holders:?}"
        );
        let sleep = holders
            .iter()
            .find(|h| h.pid == child.id())
            .expect("the child");
        assert_eq!(sleep.command, "sleep 30");

        // Another account's processes are not looked into, so none of them is found.
        assert!(socket_holders(inode, me.wrapping_add(1)).is_empty());
        // Once closed, nothing holds it.
        drop(listener);
        assert!(socket_holders(inode, me).is_empty());
    }

    #[test]
    fn the_listeners_of_a_process_are_found_with_their_addresses() {
        use std::os::fd::AsFd as _;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        // A connected socket is not a listener, and must not be taken for one.
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let found = listening_sockets_of(&[std::process::id()]);
        let ours = found
            .iter()
            .find(|socket| socket.addr == addr)
            .unwrap_or_else(|| panic!("our listener in {found:?}"));
        assert_eq!(ours.pid, std::process::id());
        assert!(found.iter().all(|socket| socket.pid == std::process::id()));
        if cfg!(target_os = "linux") {
            let inode = socket_inode(listener.as_fd()).expect("inode");
            assert_eq!(ours.inode, inode);
            // The client's connection waits in the accept queue until accepted.
            assert_eq!(accept_queue(inode), Some(1));
            let _accepted = listener.accept().expect("accept");
            assert_eq!(accept_queue(inode), Some(0));
        }
        assert!(listening_sockets_of(&[]).is_empty());
        drop(listener);
        let found = listening_sockets_of(&[std::process::id()]);
        assert!(found.iter().all(|socket| socket.addr != addr), "{found:?}");
    }

    #[test]
    fn lsof_addresses_are_parsed() {
        let found =
            lsof::listening_addrs("p42\nf3\nn*:3000\nf4\nn[::1]:4000\np7\nn10.0.0.1:80\nnjunk\n");
        let addrs: Vec<(u32, String)> = found
            .iter()
            .map(|socket| (socket.pid, socket.addr.to_string()))
            .collect();
        assert_eq!(
            addrs,
            [
                (42, "0.0.0.0:3000".to_owned()),
                (42, "[::1]:4000".to_owned()),
                (7, "10.0.0.1:80".to_owned()),
            ]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_addresses_are_read() {
        let v4 = procfs::local_address("0100007F:0BB8").expect("v4");
        assert_eq!(v4.to_string(), "127.0.0.1:3000");
        let any = procfs::local_address("00000000:1388").expect("any");
        assert_eq!(any.to_string(), "0.0.0.0:5000");
        let v6 = procfs::local_address("00000000000000000000000001000000:1F40").expect("v6");
        assert_eq!(v6.to_string(), "[::1]:8000");
        assert!(procfs::local_address("0100007F").is_none());
        assert!(procfs::local_address("01007F:0050").is_none());
        let table = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1388 00000000:0000 0A 00000080:00000002 00:00000000 00000000  1000        0 111 1 0
   1: 0100007F:1389 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0
";
        let rows: Vec<(String, u64, u32)> = procfs::listen_rows(table)
            .map(|row| (row.addr.to_string(), row.inode, row.queued))
            .collect();
        assert_eq!(rows, [("127.0.0.1:5000".to_owned(), 111, 2)]);
    }

    #[cfg(target_os = "linux")]
    #[cfg(target_os = "linux")]
    #[test]
    fn proc_net_tables_are_parsed() {
        let table = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0
   1: 0100007F:1389 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0
   2: 00000000:1389 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 0 1 0
   3: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 333 1 0
";
        let mut found = HashMap::new();
        procfs::listening_inodes(table, &[5000, 5001, 8000], &mut found);
        assert_eq!(found, HashMap::from([(111, 5000), (333, 8000)]));
        assert_eq!(procfs::socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(procfs::socket_inode("pipe:[4242]"), None);
        assert_eq!(procfs::socket_inode("/dev/null"), None);
    }
}
