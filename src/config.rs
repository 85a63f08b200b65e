//! The effective configuration: `[package.metadata.portguard]` and friends, resolved in the
//! contract's order of precedence, each value remembering where it came from.
//!
//! Precedence, strongest first: command-line flags, the process environment, the `.env` file at
//! the package root, the `env.<NAME>` table, the package table, the workspace table, defaults.

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the chosen port reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Handoff {
    /// The server gets `PORT` and binds it itself.
    Env,
    /// portguard binds and passes the listening socket at fd 3 (systemd protocol).
    Socket,
}

/// An inclusive port range such as `6000-6099`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// Where a configuration value came from, for messages and `cargo portguard config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    /// `[workspace.metadata.portguard]` in this manifest.
    WorkspaceTable(PathBuf),
    /// `[package.metadata.portguard]` in this manifest.
    PackageTable(PathBuf),
    /// `[package.metadata.portguard.env.<name>]` (or the workspace's) in this manifest.
    EnvTable { manifest: PathBuf, name: String },
    /// A line of a `.env` file.
    DotEnv { path: PathBuf, line: usize },
    /// A variable of the process environment.
    EnvVar(String),
    /// A command-line flag such as `--port`.
    Flag(String),
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

/// The resolved configuration of one server package.
#[derive(Debug, Clone)]
pub struct Config {
    pub preferred_port: Sourced<u16>,
    pub fallback_ports: Sourced<Vec<u16>>,
    pub port_range: Sourced<Option<PortRange>>,
    pub max_attempts: Sourced<u32>,
    pub check_timeout: Sourced<Duration>,
    pub dynamic_port: Sourced<bool>,
    pub host: Sourced<IpAddr>,
    pub handoff: Sourced<Handoff>,
    pub shutdown_timeout: Sourced<Duration>,
    pub health_path: Sourced<Option<String>>,
    pub ready_timeout: Sourced<Duration>,
    pub bin: Sourced<Option<String>>,
    /// The selected `env.<NAME>` table, if any.
    pub env_name: Option<Sourced<String>>,
}

/// Everything configuration is made of, gathered by the caller so that resolution is pure.
pub struct Inputs<'a> {
    /// `[workspace.metadata.portguard]` (the whole `workspace.metadata` value) and its manifest.
    pub workspace_metadata: Option<(&'a serde_json::Value, &'a Path)>,
    /// `package.metadata` (the whole value) and the package's manifest.
    pub package_metadata: Option<(&'a serde_json::Value, &'a Path)>,
    /// The `.env` file to read, if it exists (`<package root>/.env`).
    pub dotenv: Option<&'a Path>,
    /// Reads a variable of the process environment.
    pub vars: &'a dyn Fn(&str) -> Option<OsString>,
    /// `--env NAME`.
    pub env_flag: Option<&'a str>,
    /// `--port N`.
    pub port_flag: Option<u16>,
    /// `--bin NAME`.
    pub bin_flag: Option<&'a str>,
}

/// A problem that does not stop the start, such as an unknown key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
