//! Unix implementation of the [`crate::os`] API.

// Abstract socket addresses and `SO_PASSCRED` are Linux's own.
#[cfg(target_os = "linux")]
mod datagram;
mod process;
mod sockets;
mod tree;

#[cfg(target_os = "linux")]
pub use datagram::*;
pub use process::*;
pub use sockets::*;
pub use tree::*;
