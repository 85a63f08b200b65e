//! Unix implementation of the [`crate::os`] API.

mod datagram;
mod process;
mod sockets;
mod tree;

pub use datagram::*;
pub use process::*;
pub use sockets::*;
pub use tree::*;
