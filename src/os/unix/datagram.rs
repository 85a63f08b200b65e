//! The datagram socket of the readiness protocol (`NOTIFY_SOCKET`), on Linux.

use std::io;
use std::os::unix::net::UnixDatagram;

/// A datagram socket bound to the abstract address `name` (Linux): no file, no folder, and no
/// limit but the 107 bytes of `sun_path` on the name alone. Anyone on the machine may send to
/// an abstract address, so every message carries its sender's credentials (`SO_PASSCRED`,
/// set before the bind, so that none arrives without them) for [`recv_from_own_user`].
///
/// # Errors
/// When the socket cannot be created or the name is taken or too long.
pub fn bind_abstract_datagram(name: &[u8]) -> io::Result<UnixDatagram> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::sockopt::set_socket_passcred(&socket, true)?;
    rustix::net::bind(&socket, &SocketAddrUnix::new_abstract_name(name)?)?;
    Ok(UnixDatagram::from(socket))
}

/// The next message, into `buffer`: `Some(length)` when this user's process (the same
/// effective uid) sent it, `None` for a message of anybody else's, which is dropped.
///
/// # Errors
/// When receiving fails.
pub fn recv_from_own_user(socket: &UnixDatagram, buffer: &mut [u8]) -> io::Result<Option<usize>> {
    use std::mem::MaybeUninit;

    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        socket,
        &mut [io::IoSliceMut::new(buffer)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let me = rustix::process::geteuid();
    let ours = control.drain().any(|message| {
        matches!(message, RecvAncillaryMessage::ScmCredentials(sender) if sender.uid == me)
    });
    Ok(ours.then_some(received.bytes.min(buffer.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_to_an_abstract_address_says_who_sent_it() {
        let name = format!("portguard-test-{}", std::process::id());
        let socket = bind_abstract_datagram(name.as_bytes()).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        let address = {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
        };
        sender.send_to_addr(b"READY=1", &address).unwrap();
        let mut buffer = [0_u8; 64];
        let length = recv_from_own_user(&socket, &mut buffer).unwrap();
        assert_eq!(
            length.map(|length| &buffer[..length]),
            Some(&b"READY=1"[..])
        );
        assert!(
            bind_abstract_datagram(name.as_bytes()).is_err(),
            "an abstract name is taken while bound"
        );
    }
}
