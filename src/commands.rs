//! The commands `app` dispatches to. Each is a thin layer: it reads its arguments, asks the
//! domain modules (`instance`, `supervise`, `port`, `config`, `project`), and says what happened.
//! No command imports another.

pub(crate) mod config;
pub(crate) mod generate;
pub(crate) mod init;
pub(crate) mod logs;
pub(crate) mod ports;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod stop;
