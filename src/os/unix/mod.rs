//! Unix implementation of the [`crate::os`] API.

mod files;
mod locks;
mod owner;
mod process;
mod sockets;
mod tree;

pub use files::*;
pub use locks::*;
pub use owner::*;
pub use process::*;
pub use sockets::*;
pub use tree::*;
