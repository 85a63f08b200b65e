//! The integration tests, one binary: each module is an area of portguard, exercised through
//! the real binaries with real processes, sockets and signals. `support` holds what they share.

mod cli;
mod config;
mod deploy;
mod descriptors;
mod detach;
mod diagnose;
mod docs;
mod examples;
mod faults;
mod fixture_smoke;
mod generate;
mod in_process;
mod layers;
mod lock;
mod port;
mod ports;
mod project;
mod reload;
mod replicas;
mod reserve;
mod runtime;
mod scaffold;
mod scaffold_run;
// Accounts, `setpriv`, FIFOs made with mknod and /proc: the cross-user suite is Linux's.
#[cfg(target_os = "linux")]
mod security;
mod status;
mod stop;
mod supervise;
mod support;
mod wire;
mod workspace;
