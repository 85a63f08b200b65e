//! Choosing a port: candidates in the configured order, a check that a port is really free,
//! and the bind that becomes the handed-over socket.
//!
//! "Free" is stricter than "bindable on the host". For a loopback or wildcard host, a listener
//! on any of `0.0.0.0`, `::`, `127.0.0.1` or `::1` makes the port busy: a browser resolving
//! `localhost` may try `::1` before `127.0.0.1` (or the other way round) and would silently
//! reach that other server. Those addresses are probed with short-lived sockets *before* the
//! real bind, because on Linux a probe overlapping our own listener would fail against it.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use rustix::io::Errno;
use socket2::{Domain, Protocol, Socket, Type};

use crate::os;
pub use crate::os::Holder;
use crate::output::Inert;
use crate::reserve::{Claim, Reservation, Reservations};

/// Backlog of the real listening socket: the common server default (e.g. hyper, actix), large
/// enough that a burst of browser connections during startup is not refused.
const BACKLOG: i32 = 1024;

/// How many OS-assigned ports are tried when each one turns out to be held on another loopback
/// or wildcard address. A collision is rare, several in a row means something is wrong.
const DYNAMIC_ATTEMPTS: usize = 8;

/// What a port is on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortState {
    /// It can be bound, and nothing else answers for it on loopback.
    Free,
    /// Another socket listens on it (on the host or, for a loopback or wildcard host, on another
    /// loopback or wildcard address). `holder` is who, where that could be found out.
    Busy { holder: Option<Holder> },
    /// The OS refuses it to this user (typically a port below 1024 without privileges).
    NotPermitted,
    /// It cannot be bound for another reason (the host address is not on this machine, no file
    /// descriptors left, ...). The message says why.
    Unavailable(String),
    /// Another portguard of this user holds it for a running instance (see [`crate::reserve`]).
    Reserved { by: String },
}

impl PortState {
    #[must_use]
    pub fn is_free(&self) -> bool {
        matches!(self, PortState::Free)
    }
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortState::Free => f.write_str("free"),
            PortState::Busy { holder: None } => f.write_str("busy"),
            PortState::Busy {
                holder: Some(holder),
            } => write!(f, "busy: {holder}"),
            PortState::NotPermitted => f.write_str("not permitted"),
            PortState::Unavailable(why) => write!(f, "unavailable: {why}"),
            PortState::Reserved { by } => write!(f, "reserved by {}", Inert(by)),
        }
    }
}

/// A candidate that was tried and not taken, and why.
///
/// `port` is 0 when asking the OS for a port failed before any port was assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub port: u16,
    pub state: PortState,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == 0 {
            write!(f, "OS-assigned port {}", self.state)
        } else {
            write!(f, "{} {}", self.port, self.state)
        }
    }
}

/// The port chosen by [`select`].
#[derive(Debug)]
pub struct Selection {
    pub port: u16,
    /// The bound, listening socket when `select` was asked to keep it; `None` when it was
    /// released so that the server can bind the port itself.
    pub listener: Option<TcpListener>,
    /// The candidates tried before `port`, in order, with the reason each was passed over.
    pub skipped: Vec<Skipped>,
    /// `port` came from the OS after all candidates failed.
    pub dynamic: bool,
    /// This user's reservation of `port`, to hold for as long as the instance runs.
    pub reservation: Option<Reservation>,
}

/// No candidate was free (and no OS-assigned port either, if that was allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoFreePort {
    /// Every port tried, in order, with why it was not taken.
    pub skipped: Vec<Skipped>,
}

impl fmt::Display for NoFreePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.skipped.is_empty() {
            f.write_str("no free port: no port to try")
        } else {
            write!(f, "no free port: {}", describe_skipped(&self.skipped))
        }
    }
}

impl std::error::Error for NoFreePort {}

/// Whether `port` is free on `host`, by the rules of this module. Nothing stays bound.
#[must_use]
pub fn check(host: IpAddr, port: u16) -> PortState {
    match probe_all(host, port, false) {
        Ok(()) => PortState::Free,
        Err(state) => with_holder(port, state),
    }
}

/// Takes the first free port among `candidates` (duplicates are tried once), or, when all are
/// taken and `dynamic` is set, a port from the OS that passes the same checks.
///
/// With `keep_socket` the winning socket stays open, listening, in the result; without it the
/// socket is closed before returning, and the port is free for the server to bind.
///
/// # Errors
/// [`NoFreePort`] listing every port tried and why it was not taken.
pub fn select(
    host: IpAddr,
    candidates: &[u16],
    dynamic: bool,
    keep_socket: bool,
    reservations: Option<&Reservations>,
) -> Result<Selection, NoFreePort> {
    let mut skipped = Vec::new();
    let mut tried = HashSet::new();
    let mut chosen = None;
    let mut scout = Scout::default();

    for &port in candidates {
        if !tried.insert(port) {
            continue;
        }
        match reserve_and_bind(&mut scout, host, port, reservations) {
            Ok((listener, reservation)) => {
                chosen = Some((port, listener, false, reservation));
                break;
            }
            Err(state) => skipped.push(Skipped { port, state }),
        }
    }

    if chosen.is_none() && dynamic {
        for _ in 0..DYNAMIC_ATTEMPTS {
            let port = match os_assigned_port(host) {
                Ok(port) => port,
                Err(state) => {
                    // The host itself is the problem: another attempt would fail the same way.
                    skipped.push(Skipped { port: 0, state });
                    break;
                }
            };
            if !tried.insert(port) {
                continue;
            }
            match reserve_and_bind(&mut scout, host, port, reservations) {
                Ok((listener, mut reservation)) => {
                    if let Some(reservation) = &mut reservation {
                        // A port the OS picked rarely comes again: keep no file for it.
                        reservation.remove_when_released();
                    }
                    chosen = Some((port, listener, true, reservation));
                    break;
                }
                Err(state) => skipped.push(Skipped { port, state }),
            }
        }
    }

    // Who holds the busy ports is for messages, and costs a look at the process table: the
    // caller asks with `fill_holders` when it prints them, off the path to a running server.
    match chosen {
        Some((port, listener, dynamic, reservation)) => Ok(Selection {
            port,
            listener: keep_socket.then_some(listener),
            skipped,
            dynamic,
            reservation,
        }),
        None => Err(NoFreePort { skipped }),
    }
}

/// The reservation first (a lock, no traffic), then the bind: a port another portguard holds is
/// skipped even when its server has not bound it yet.
fn reserve_and_bind(
    scout: &mut Scout,
    host: IpAddr,
    port: u16,
    reservations: Option<&Reservations>,
) -> Result<(TcpListener, Option<Reservation>), PortState> {
    // Most skipped candidates are busy, and one bind tells so for less than opening and
    // locking a reservation file. Before the reservation only where probes set SO_REUSEADDR:
    // there a probe cannot get in the way of a server that binds the port at the same moment
    // (std, tokio and socket2 listeners set it too), so a port reserved for a server about to
    // bind it stays safe.
    let scouted = reservations.is_none() || os::probe_reuse_address();
    if scouted {
        scout.check(SocketAddr::new(host, port))?;
    }
    let reservation = match reservations.map(|r| r.claim(port)).transpose() {
        Ok(Some(Claim::Taken(by))) => return Err(PortState::Reserved { by }),
        Ok(Some(Claim::Ours(reservation))) => Some(reservation),
        Ok(None) => None,
        Err(error) => {
            return Err(PortState::Unavailable(format!(
                "cannot reserve it: {error}"
            )));
        }
    };
    // A port that turns out busy is given back at once, by dropping the reservation.
    let listener = bind_checked(host, port, scouted)?;
    let reservation = reservation.map(|mut reservation| {
        // An unlabelled reservation still holds the port; others just cannot say whose it is.
        let _ = reservation.label();
        reservation
    });
    Ok((listener, reservation))
}

/// Who of this user's portguards holds `port` now, from the runtime folder `dir` (see
/// [`crate::runtime::RuntimeDir::locate`]); nobody when there is none.
#[must_use]
pub fn reservation_holder(dir: Option<&crate::runtime::RuntimeDir>, port: u16) -> Option<String> {
    crate::reserve::holder(dir?.path(), port)
}

/// The passed-over candidates in one line: `5000 busy: pid 4242 `node server.js`; 5001 busy;
/// 80 not permitted`.
#[must_use]
pub fn describe_skipped(skipped: &[Skipped]) -> String {
    skipped
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The probes, then the real bind and listen; busy states come without a holder.
/// `host_probed`: a probe of `host` itself has just passed, so only the others are left.
fn bind_checked(host: IpAddr, port: u16, host_probed: bool) -> Result<TcpListener, PortState> {
    probe_all(host, port, host_probed)?;
    let addr = SocketAddr::new(host, port);
    let socket =
        bound_socket(addr, os::listener_reuse_address(), false).map_err(|e| classify(addr, &e))?;
    socket.listen(BACKLOG).map_err(|e| classify(addr, &e))?;
    Ok(socket.into())
}

/// Tests `port` on `host` and, for a loopback or wildcard host, on the other loopback and
/// wildcard addresses (only on those with `host_probed`). Every socket is closed before this
/// returns.
fn probe_all(host: IpAddr, port: u16, host_probed: bool) -> Result<(), PortState> {
    if port == 0 {
        // Binding port 0 would succeed on any port the OS picks and say nothing about port 0.
        return Err(PortState::Unavailable(
            "port 0 is not a port one can listen on".to_owned(),
        ));
    }
    // The host first: if it is not on this machine, that is the answer, not a detail.
    if !host_probed {
        probe(SocketAddr::new(host, port), true)?;
    }
    if is_local_or_wildcard(host) {
        for other in cross_addresses() {
            if other != host {
                probe(SocketAddr::new(other, port), false)?;
            }
        }
    }
    Ok(())
}

/// The addresses where a listener answers a browser asking for `localhost`.
fn cross_addresses() -> [IpAddr; 4] {
    [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]
}

fn is_local_or_wildcard(host: IpAddr) -> bool {
    // `::ffff:127.0.0.1` is 127.0.0.1 to the kernel.
    let host = host.to_canonical();
    host.is_loopback() || host.is_unspecified()
}

/// One unbound socket that tells busy candidates with one `bind` each: a failed bind leaves
/// it unbound, ready for the next candidate, so a run of busy ports costs one system call a
/// port instead of four (socket, option, bind, close). A bind that succeeds closes it: the
/// port may be free, and the full checks follow.
#[derive(Default)]
struct Scout {
    /// The socket, and whether it is IPv6.
    socket: Option<(Socket, bool)>,
}

impl Scout {
    /// `Err` for a port that cannot be had on `addr` (as [`probe`] says it); `Ok` when it may.
    fn check(&mut self, addr: SocketAddr) -> Result<(), PortState> {
        let socket = match self.socket.take() {
            Some((socket, v6)) if v6 == addr.is_ipv6() => socket,
            _ => unbound_socket(addr, os::probe_reuse_address(), true)
                .map_err(|e| classify(addr, &e))?,
        };
        match socket.bind(&addr.into()) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.socket = Some((socket, addr.is_ipv6()));
                Err(classify(addr, &e))
            }
        }
    }
}

/// Binds and at once closes a socket on `addr`. On the host (`required`) every failure counts;
/// elsewhere an address or family this machine does not have is simply not a conflict.
fn probe(addr: SocketAddr, required: bool) -> Result<(), PortState> {
    // IPV6_V6ONLY: a v6 probe must test v6 only; the v4 addresses have probes of their own, and
    // a dual-stack `::` probe would mistake an unrelated v4 listener for a v6 one.
    match bound_socket(addr, os::probe_reuse_address(), true) {
        Ok(_socket) => Ok(()),
        Err(e) if !required && not_applicable(&e) => Ok(()),
        Err(e) => Err(classify(addr, &e)),
    }
}

/// A TCP socket bound to `addr`, not listening. `v6_only` is applied to IPv6 addresses only;
/// when false the OS default stands (dual-stack `::` on most systems).
fn bound_socket(addr: SocketAddr, reuse_address: bool, v6_only: bool) -> io::Result<Socket> {
    let socket = unbound_socket(addr, reuse_address, v6_only)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A TCP socket for `addr`'s family with the options of [`bound_socket`], not yet bound.
fn unbound_socket(addr: SocketAddr, reuse_address: bool, v6_only: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if reuse_address {
        socket.set_reuse_address(true)?;
    }
    if v6_only && addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Asks the OS for a free port on `host`. The socket is closed at once: keeping it would make
/// the cross-address probes collide with it.
fn os_assigned_port(host: IpAddr) -> Result<u16, PortState> {
    let addr = SocketAddr::new(host, 0);
    // Without SO_REUSEADDR, so that the OS picks a port nobody has bound, not even in TIME_WAIT.
    let socket = bound_socket(addr, false, false).map_err(|e| classify(addr, &e))?;
    socket
        .local_addr()
        .ok()
        .and_then(|local| local.as_socket())
        .map(|local| local.port())
        .ok_or_else(|| PortState::Unavailable(format!("{addr}: the OS assigned no port")))
}

fn not_applicable(e: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(e),
        Some(Errno::ADDRNOTAVAIL | Errno::AFNOSUPPORT)
    )
}

fn classify(addr: SocketAddr, e: &io::Error) -> PortState {
    match Errno::from_io_error(e) {
        Some(Errno::ADDRINUSE) => PortState::Busy { holder: None },
        // EPERM as well: a security module (SELinux, AppArmor, a seccomp filter) refusing the
        // bind is a refusal too, not a busy port.
        Some(Errno::ACCESS | Errno::PERM) => PortState::NotPermitted,
        _ => PortState::Unavailable(format!("cannot bind {addr}: {e}")),
    }
}

fn with_holder(port: u16, state: PortState) -> PortState {
    match state {
        PortState::Busy { holder: None } => PortState::Busy {
            holder: os::port_holder(port),
        },
        other => other,
    }
}

/// Adds who holds each busy port, in one look at the process table for all of them.
pub fn fill_holders(skipped: &mut [Skipped]) {
    let busy: Vec<u16> = skipped
        .iter()
        .filter(|s| matches!(s.state, PortState::Busy { holder: None }))
        .map(|s| s.port)
        .collect();
    if busy.is_empty() {
        return;
    }
    let holders = os::port_holders(&busy);
    for entry in skipped.iter_mut() {
        if let PortState::Busy { holder } = &mut entry.state
            && holder.is_none()
        {
            *holder = holders.get(&entry.port).cloned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real bind after the same checks as [`check`], as a start makes it.
    fn bind(host: IpAddr, port: u16) -> Result<TcpListener, PortState> {
        bind_checked(host, port, false).map_err(|state| with_holder(port, state))
    }
    use std::net::TcpStream;
    use std::os::fd::AsRawFd as _;
    use std::time::Instant;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn the_scout_tells_busy_ports_with_one_socket_and_lets_free_ones_through() {
        let busy: Vec<(TcpListener, u16)> = (0..3).map(|_| listen_on(LOCALHOST).unwrap()).collect();
        let mut scout = Scout::default();
        let mut sockets = Vec::new();
        for (_, port) in &busy {
            let state = scout.check(SocketAddr::new(LOCALHOST, *port)).unwrap_err();
            assert!(matches!(state, PortState::Busy { .. }), "{state}");
            sockets.push(scout.socket.as_ref().map(|(socket, _)| socket.as_raw_fd()));
        }
        assert!(
            sockets[0].is_some(),
            "a failed bind keeps the socket for the next port"
        );
        assert!(
            sockets.iter().all(|fd| *fd == sockets[0]),
            "one socket for all: {sockets:?}"
        );
        let (held, free) = listen_on(LOCALHOST).unwrap();
        drop(held);
        scout.check(SocketAddr::new(LOCALHOST, free)).unwrap();
        assert!(
            scout.socket.is_none(),
            "a socket that bound is closed, not kept"
        );
        // And the port it bound for a moment is free again.
        TcpListener::bind((LOCALHOST, free)).unwrap();
    }

    /// A listener on an OS-assigned port of `addr`, and the port.
    fn listen_on(addr: IpAddr) -> io::Result<(TcpListener, u16)> {
        let listener = TcpListener::bind(SocketAddr::new(addr, 0))?;
        let port = listener.local_addr()?.port();
        Ok((listener, port))
    }

    fn busy_listener() -> (TcpListener, u16) {
        listen_on(LOCALHOST).expect("bind 127.0.0.1:0")
    }

    /// A port that was free a moment ago (the OS rarely hands the same one out again soon).
    fn free_port() -> u16 {
        busy_listener().1
    }

    fn is_busy(state: &PortState) -> bool {
        matches!(state, PortState::Busy { .. })
    }

    #[test]
    fn free_port_is_free_and_taken() {
        let port = free_port();
        assert_eq!(check(LOCALHOST, port), PortState::Free);
        let selection = select(LOCALHOST, &[port], false, true, None).expect("select");
        assert_eq!(selection.port, port);
        assert!(!selection.dynamic);
        assert!(selection.skipped.is_empty());
        let listener = selection.listener.expect("kept socket");
        assert_eq!(listener.local_addr().expect("addr").port(), port);
    }

    #[test]
    fn own_listener_is_busy_with_our_pid() {
        let (_listener, port) = busy_listener();
        match check(LOCALHOST, port) {
            PortState::Busy {
                holder: Some(holder),
            } => {
                assert_eq!(holder.pid, std::process::id());
                assert!(!holder.command.is_empty());
            }
            other => panic!("expected busy with holder, got {other:?}"),
        }
        assert!(is_busy(&bind(LOCALHOST, port).expect_err("busy")));
    }

    #[test]
    fn wildcard_v4_listener_blocks_loopback() {
        let (_listener, port) = listen_on(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).expect("bind");
        assert!(is_busy(&check(LOCALHOST, port)));
        assert!(is_busy(&check(IpAddr::V6(Ipv6Addr::LOCALHOST), port)));
    }

    #[test]
    fn v6_loopback_listener_blocks_v4_loopback() {
        let Ok((_listener, port)) = listen_on(IpAddr::V6(Ipv6Addr::LOCALHOST)) else {
            eprintln!("::1 is not available here: skipped");
            return;
        };
        let state = check(LOCALHOST, port);
        assert!(is_busy(&state), "{state:?}");
        let error = select(LOCALHOST, &[port], false, false, None).expect_err("busy on ::1");
        assert_eq!(error.skipped.len(), 1);
    }

    #[test]
    fn v6_wildcard_listener_blocks_v4_loopback() {
        let Ok((_listener, port)) = listen_on(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) else {
            eprintln!("IPv6 is not available here: skipped");
            return;
        };
        assert!(is_busy(&check(LOCALHOST, port)));
    }

    #[test]
    fn specific_non_loopback_host_is_not_cross_checked() {
        // A listener on ::1 must not block a host that a browser asking for localhost never
        // reaches. Only testable when the machine has a non-loopback IPv4 address of its own.
        let Some(own) = own_non_loopback_v4() else {
            eprintln!("no non-loopback IPv4 address: skipped");
            return;
        };
        let Ok((_listener, port)) = listen_on(IpAddr::V6(Ipv6Addr::LOCALHOST)) else {
            eprintln!("::1 is not available here: skipped");
            return;
        };
        assert_eq!(check(own, port), PortState::Free);
    }

    fn own_non_loopback_v4() -> Option<IpAddr> {
        // Connecting a UDP socket sends nothing; it only makes the kernel pick a source address.
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.connect("192.0.2.1:9").ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
    }

    #[test]
    fn busy_preferred_falls_back() {
        let (_listener, busy) = busy_listener();
        let free = free_port();
        let mut selection = select(LOCALHOST, &[busy, free], true, false, None).expect("select");
        assert_eq!(selection.port, free);
        assert!(!selection.dynamic);
        assert!(selection.listener.is_none());
        assert_eq!(selection.skipped.len(), 1);
        assert_eq!(selection.skipped[0].port, busy);
        assert_eq!(
            selection.skipped[0].state,
            PortState::Busy { holder: None },
            "no lookup yet"
        );
        fill_holders(&mut selection.skipped);
        match &selection.skipped[0].state {
            PortState::Busy {
                holder: Some(holder),
            } => assert_eq!(holder.pid, std::process::id()),
            other => panic!("expected busy with holder, got {other:?}"),
        }
    }

    #[test]
    fn all_busy_dynamic_takes_an_os_port() {
        let listeners: Vec<_> = (0..3).map(|_| busy_listener()).collect();
        let ports: Vec<u16> = listeners.iter().map(|(_, p)| *p).collect();
        let selection = select(LOCALHOST, &ports, true, true, None).expect("select");
        assert!(selection.dynamic);
        assert!(!ports.contains(&selection.port));
        assert_eq!(selection.skipped.len(), 3);
        let listener = selection.listener.expect("kept socket");
        assert_eq!(listener.local_addr().expect("addr").port(), selection.port);
    }

    #[test]
    fn all_busy_without_dynamic_is_an_error_naming_each_port() {
        let listeners: Vec<_> = (0..3).map(|_| busy_listener()).collect();
        let ports: Vec<u16> = listeners.iter().map(|(_, p)| *p).collect();
        let error = select(LOCALHOST, &ports, false, false, None).expect_err("all busy");
        assert_eq!(error.skipped.len(), 3);
        let message = error.to_string();
        assert!(message.starts_with("no free port: "), "{message}");
        for port in ports {
            assert!(message.contains(&format!("{port} busy")), "{message}");
        }
    }

    #[test]
    fn duplicate_candidates_are_tried_once() {
        let (_listener, busy) = busy_listener();
        let error = select(LOCALHOST, &[busy, busy, busy], false, false, None).expect_err("busy");
        assert_eq!(error.skipped.len(), 1);
    }

    #[test]
    fn no_candidates() {
        let error = select(LOCALHOST, &[], false, false, None).expect_err("nothing to try");
        assert_eq!(error.to_string(), "no free port: no port to try");
        let selection = select(LOCALHOST, &[], true, false, None).expect("dynamic");
        assert!(selection.dynamic);
    }

    #[test]
    fn kept_socket_accepts_a_connection() {
        let port = free_port();
        let selection = select(LOCALHOST, &[port], false, true, None).expect("select");
        let listener = selection.listener.expect("kept socket");
        let client = TcpStream::connect((LOCALHOST, port)).expect("connect");
        let (_server, peer) = listener.accept().expect("accept");
        assert_eq!(peer, client.local_addr().expect("addr"));
    }

    #[test]
    fn released_port_can_be_bound_again() {
        let port = free_port();
        let selection = select(LOCALHOST, &[port], false, false, None).expect("select");
        assert!(selection.listener.is_none());
        TcpListener::bind((LOCALHOST, port)).expect("port released");
    }

    #[test]
    fn kept_socket_excludes_a_second_bind() {
        let port = free_port();
        let selection = select(LOCALHOST, &[port], false, true, None).expect("select");
        assert!(selection.listener.is_some());
        assert!(TcpListener::bind((LOCALHOST, port)).is_err());
        assert!(is_busy(&check(LOCALHOST, port)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn time_wait_leftovers_are_not_busy() {
        use std::io::Read as _;
        let (listener, port) = busy_listener();
        let mut client = TcpStream::connect((LOCALHOST, port)).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        // The side that closes first keeps the connection in TIME_WAIT on the server's port.
        drop(server);
        let mut buf = [0; 1];
        assert_eq!(client.read(&mut buf).expect("eof"), 0);
        drop(client);
        drop(listener);
        assert_eq!(check(LOCALHOST, port), PortState::Free);
        bind(LOCALHOST, port).expect("bind over TIME_WAIT");
    }

    #[test]
    fn address_not_on_this_machine_is_unavailable() {
        // 192.0.2.0/24 is TEST-NET-1, reserved for documentation: never a local address.
        let host: IpAddr = "192.0.2.1".parse().expect("ip");
        let port = free_port();
        assert!(matches!(check(host, port), PortState::Unavailable(_)));
        let error = select(host, &[port], true, false, None).expect_err("host not local");
        assert_eq!(error.skipped.len(), 2);
        assert_eq!(error.skipped[1].port, 0);
        assert!(
            error.to_string().contains("OS-assigned port unavailable"),
            "{error}"
        );
    }

    #[test]
    fn port_zero_is_not_a_candidate() {
        assert!(matches!(check(LOCALHOST, 0), PortState::Unavailable(_)));
    }

    #[test]
    fn errors_are_classified() {
        let addr = SocketAddr::new(LOCALHOST, 80);
        let errno = |e: Errno| io::Error::from_raw_os_error(e.raw_os_error());
        assert_eq!(
            classify(addr, &errno(Errno::ACCESS)),
            PortState::NotPermitted
        );
        assert_eq!(classify(addr, &errno(Errno::PERM)), PortState::NotPermitted);
        assert_eq!(
            classify(addr, &errno(Errno::ADDRINUSE)),
            PortState::Busy { holder: None }
        );
        assert!(matches!(
            classify(addr, &errno(Errno::MFILE)),
            PortState::Unavailable(m) if m.starts_with("cannot bind 127.0.0.1:80: ")
        ));
        assert!(not_applicable(&errno(Errno::ADDRNOTAVAIL)));
        assert!(not_applicable(&errno(Errno::AFNOSUPPORT)));
        assert!(!not_applicable(&errno(Errno::ADDRINUSE)));
    }

    #[test]
    fn privileged_port_is_not_permitted_for_a_user() {
        if crate::os::effective_uid() == 0 {
            eprintln!("running as root: every port is permitted, skipped");
            return;
        }
        // Port 1 is below every system's unprivileged limit unless an admin lowered it to 0.
        let state = check(LOCALHOST, 1);
        assert!(
            matches!(state, PortState::NotPermitted | PortState::Free),
            "{state:?}"
        );
    }

    #[test]
    fn loopback_and_wildcard_hosts() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_local_or_wildcard(host.parse().expect("ip")), "{host}");
        }
        for host in ["192.168.1.10", "fe80::1", "10.0.0.1"] {
            assert!(!is_local_or_wildcard(host.parse().expect("ip")), "{host}");
        }
    }

    #[test]
    fn skipped_ports_are_described() {
        let skipped = vec![
            Skipped {
                port: 5000,
                state: PortState::Busy {
                    holder: Some(Holder {
                        pid: 4242,
                        command: "node server.js".to_owned(),
                    }),
                },
            },
            Skipped {
                port: 5001,
                state: PortState::Busy { holder: None },
            },
            Skipped {
                port: 80,
                state: PortState::NotPermitted,
            },
            Skipped {
                port: 5002,
                state: PortState::Busy {
                    holder: Some(Holder {
                        pid: 7,
                        command: String::new(),
                    }),
                },
            },
        ];
        assert_eq!(
            describe_skipped(&skipped),
            "5000 busy: pid 4242 `node server.js`; 5001 busy; 80 not permitted; 5002 busy: pid 7"
        );
        assert_eq!(describe_skipped(&[]), "");
        let error = NoFreePort { skipped };
        assert!(
            error
                .to_string()
                .starts_with("no free port: 5000 busy: pid 4242")
        );
    }

    #[test]
    fn timing_with_ten_busy_candidates() {
        let listeners: Vec<_> = (0..10).map(|_| busy_listener()).collect();
        let ports: Vec<u16> = listeners.iter().map(|(_, p)| *p).collect();
        let started = Instant::now();
        let selection = select(LOCALHOST, &ports, true, false, None).expect("select");
        let with_holders = started.elapsed();
        assert_eq!(selection.skipped.len(), 10);
        assert!(selection.dynamic);

        let started = Instant::now();
        for &port in &ports {
            assert!(bind_checked(LOCALHOST, port, false).is_err());
        }
        let probes_only = started.elapsed();
        eprintln!(
            "select, 10 busy + dynamic: {with_holders:?} in all, {probes_only:?} of it probes \
             (holder lookup is the rest)"
        );
    }
}
