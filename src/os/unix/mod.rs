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

/// Whether `condition` comes true within 10 s, looked at every 10 ms: for tests of processes
/// that change state on their own time.
#[cfg(test)]
fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}
