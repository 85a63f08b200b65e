//! Unix implementation of the [`crate::os`] API.

mod files;
mod process;
mod sockets;
mod tree;

pub use files::*;
pub use process::*;
pub use sockets::*;
pub use tree::*;
