//! Unix implementation of the [`crate::os`] API.

mod process;
mod sockets;
mod tree;

pub use process::*;
pub use sockets::*;
pub use tree::*;
