//! Sockets and who holds them.
