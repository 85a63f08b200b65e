//! The signals a supervisor answers, delivered as ordinary values on a thread of their own.

use anyhow::{Context as _, Result};
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook::iterator::Signals;

/// Ctrl-C, `kill` and a closed terminal all mean "stop the server gracefully".
pub(crate) const STOP: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Stop the server and start it again, as nodemon and the seed's scripts do.
pub(crate) const RESTART: i32 = SIGUSR2;

/// Calls `deliver` with each of `signals` as it arrives, from a background thread.
///
/// Installed before the server starts, so a Ctrl-C during the build is never lost.
///
/// # Errors
/// When the handlers cannot be installed.
pub(crate) fn listen(
    signals: &[i32],
    deliver: impl Fn(i32) + Send + 'static,
) -> Result<signal_hook::iterator::Handle> {
    let mut incoming = Signals::new(signals).context("could not install signal handlers")?;
    let handle = incoming.handle();
    std::thread::Builder::new()
        .name("portguard-signals".to_owned())
        .spawn(move || {
            for signal in incoming.forever() {
                deliver(signal);
            }
        })
        .context("could not start the signal thread")?;
    Ok(handle)
}

/// A signal's conventional name, for messages.
#[must_use]
pub(crate) fn name(signal: i32) -> String {
    signal_hook::low_level::signal_name(signal)
        .map_or_else(|| format!("signal {signal}"), str::to_owned)
}
