//! Unix implementation of the [`crate::os`] API.

mod process;
mod sockets;

pub use process::*;
pub use sockets::*;
