//! Unix implementation of the [`crate::os`] API.

mod files;
mod locks;
mod owner;
// Abstract socket addresses and `SO_PASSCRED` are Linux's own.
#[cfg(target_os = "linux")]
mod datagram;
mod process;
mod sockets;
mod tree;

#[cfg(target_os = "linux")]
pub use datagram::*;
pub use files::*;
pub use locks::*;
pub use owner::*;
pub use process::*;
pub use sockets::*;
pub use tree::*;
