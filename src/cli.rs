//! Command-line interfaces of `cargo serve-safe` and `cargo portguard`, in cargo's own style:
//! cargo calls `cargo-serve-safe serve-safe ARGS`, so the word is the single subcommand of a
//! command named `cargo`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::generate::GenerateArgs;
use crate::output::Color;
use crate::scaffold::InitArgs;

/// `cargo serve-safe`.
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo", styles = clap_cargo_styles())]
pub(crate) enum ServeSafeCli {
    /// Run the package's server on a free port, refusing to start a second copy.
    #[command(name = "serve-safe", version)]
    ServeSafe(ServeSafeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeSafeArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// `cargo portguard`.
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo", styles = clap_cargo_styles())]
pub(crate) enum PortguardCli {
    /// Run and operate dev servers on ports that are really free.
    #[command(
        name = "portguard",
        version,
        subcommand_required = true,
        arg_required_else_help = true
    )]
    Portguard(PortguardArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PortguardArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    #[command(subcommand)]
    pub(crate) command: PortguardCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PortguardCommand {
    /// Run the server (the same as `cargo serve-safe`)
    Run(RunArgs),
    /// Show whether each instance runs, where, and how healthy it is (exit 3: not running)
    Status(StatusArgs),
    /// Stop a running instance gracefully: SIGTERM to its process group, then SIGKILL
    Stop(StopArgs),
    /// Stop the server and start it again under the same supervisor (and socket)
    Restart(InstanceArg),
    /// Show the log of a detached server
    Logs(LogsArgs),
    /// Add portguard to a server package: config, .env, cargo aliases, startup glue
    Init(InitArgs),
    /// Show the candidate ports, who holds the busy ones, and which one would be used
    Ports(ConfigQueryArgs),
    /// Show the effective configuration and where each value comes from
    Config(ConfigQueryArgs),
    /// Write systemd units, a Dockerfile and Kubernetes manifests from the configuration
    Generate(GenerateArgs),
}

/// `--instance NAME`, for commands that act on one instance.
#[derive(Debug, Clone, Args)]
pub(crate) struct InstanceArg {
    /// The instance (default: the only one with state here)
    #[arg(long, value_name = "NAME")]
    pub(crate) instance: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct StatusArgs {
    /// Only this instance (default: every instance of the workspace)
    #[arg(long, value_name = "NAME")]
    pub(crate) instance: Option<String>,
    /// Print one JSON object on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct StopArgs {
    /// The instance to stop (default: the only one running here)
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub(crate) instance: Option<String>,
    /// Stop every running instance of the workspace
    #[arg(long)]
    pub(crate) all: bool,
    /// Seconds to wait for a graceful stop before SIGKILL (default: the instance's
    /// `shutdown-timeout-ms`)
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) timeout: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    pub(crate) instance: InstanceArg,
    /// Keep printing what the server writes, until it stops
    #[arg(short, long)]
    pub(crate) follow: bool,
}

/// `ports` and `config`: the configuration `run` would use with the same flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConfigQueryArgs {
    /// Port to try first, as with `run --port`
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: Option<u16>,
    /// Apply the env.NAME table, as with `run --env`
    #[arg(long = "env", value_name = "NAME")]
    pub(crate) env: Option<String>,
    /// Print one JSON object on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

impl ConfigQueryArgs {
    /// The flags that take part in the configuration's precedence.
    pub(crate) fn flags(&self) -> crate::config::Flags<'_> {
        crate::config::Flags {
            env: self.env.as_deref(),
            port: self.port,
            bin: None,
        }
    }
}

/// Options every command takes, spelled as cargo spells them.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct CommonArgs {
    /// Path to Cargo.toml
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) manifest_path: Option<PathBuf>,
    /// Package with the server
    #[arg(short, long, value_name = "NAME", global = true)]
    pub(crate) package: Option<String>,
    /// Coloring
    #[arg(long, value_name = "WHEN", global = true)]
    pub(crate) color: Option<Color>,
    /// Do not print portguard's status lines
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// Say more about each step (which ports were tried, signals)
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,
}

/// `cargo serve-safe` and `cargo portguard run`.
// The flags mirror cargo's own (`--release`, `--all-features`, ...): an enum would not.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Default, Args)]
#[command(
    after_help = "Configuration: [package.metadata.portguard] in Cargo.toml, `.env`, and \
the PORT, FALLBACK_PORTS, MAX_PORT_ATTEMPTS, PORT_CHECK_TIMEOUT and PORTGUARD_* variables."
)]
pub(crate) struct RunArgs {
    /// Name of the bin target to run
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "example",
        help_heading = "Target Selection"
    )]
    pub(crate) bin: Option<String>,
    /// Name of the example target to run
    #[arg(long, value_name = "NAME", help_heading = "Target Selection")]
    pub(crate) example: Option<String>,
    /// Build in release mode, with optimizations
    #[arg(long, conflicts_with = "profile", help_heading = "Compilation Options")]
    pub(crate) release: bool,
    /// Build with the given profile
    #[arg(
        long,
        value_name = "PROFILE-NAME",
        help_heading = "Compilation Options"
    )]
    pub(crate) profile: Option<String>,
    /// Space or comma separated list of features to activate
    #[arg(
        short = 'F',
        long,
        value_name = "FEATURES",
        help_heading = "Feature Selection"
    )]
    pub(crate) features: Vec<String>,
    /// Activate all available features
    #[arg(long, help_heading = "Feature Selection")]
    pub(crate) all_features: bool,
    /// Do not activate the `default` feature
    #[arg(long, help_heading = "Feature Selection")]
    pub(crate) no_default_features: bool,
    /// Port to try first (overrides `preferred-port` and PORT)
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: Option<u16>,
    #[arg(
        long = "env",
        value_name = "NAME",
        help = "Apply the env.NAME table of [package.metadata.portguard] (or set PORTGUARD_ENV)"
    )]
    pub(crate) env: Option<String>,
    /// Run another copy beside the default instance, under this name
    #[arg(long, value_name = "NAME")]
    pub(crate) instance: Option<String>,
    /// Stop a running copy of the instance first (gracefully, then by force)
    #[arg(long)]
    pub(crate) force: bool,
    /// Run in the background: print the port once the server is ready, log to
    /// .portguard/INSTANCE.log
    #[arg(long)]
    pub(crate) detach: bool,
    /// With --detach, print one JSON object (a status entry) instead of the port
    #[arg(long, requires = "detach")]
    pub(crate) json: bool,
    /// Rebuild on save and swap the new build in while the old one serves (see Reload on save in
    /// the README)
    #[arg(long)]
    pub(crate) watch: bool,
    /// Run N copies of the server accepting on one socket (socket handoff only; default: 1)
    #[arg(long, value_name = "N", value_parser = parse_replicas)]
    pub(crate) replicas: Option<u32>,
    /// Arguments for the server itself
    #[arg(last = true, value_name = "SERVER_ARGS")]
    pub(crate) server_args: Vec<OsString>,
}

/// `--replicas N`: at least one server.
fn parse_replicas(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("0 replicas would run no server: use 1 or more".to_owned()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("`{text}` is not a number of replicas (such as 2)")),
    }
}

/// Seconds as a user writes them: `10`, `0.5`.
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("`{text}` is not a number of seconds (such as 10 or 0.5)"))
}

/// cargo's help colours, so the plugin's help reads like cargo's.
fn clap_cargo_styles() -> clap::builder::Styles {
    use anstyle::{AnsiColor, Effects};
    clap::builder::Styles::styled()
        .header(AnsiColor::Green.on_default().effects(Effects::BOLD))
        .usage(AnsiColor::Green.on_default().effects(Effects::BOLD))
        .literal(AnsiColor::Cyan.on_default().effects(Effects::BOLD))
        .placeholder(AnsiColor::Cyan.on_default())
        .error(AnsiColor::Red.on_default().effects(Effects::BOLD))
        .valid(AnsiColor::Cyan.on_default().effects(Effects::BOLD))
        .invalid(AnsiColor::Yellow.on_default().effects(Effects::BOLD))
}

/// Cargo passes the subcommand word first (`cargo-serve-safe serve-safe ...`); a user calling
/// the binary directly may leave it out.
#[must_use]
pub(crate) fn with_subcommand_word(args: Vec<OsString>, word: &str) -> Vec<OsString> {
    let mut args = args;
    if args.get(1).is_none_or(|first| first != word) {
        let at = 1.min(args.len());
        args.insert(at, OsString::from(word));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn clis_are_well_formed() {
        ServeSafeCli::command().debug_assert();
        PortguardCli::command().debug_assert();
    }

    #[test]
    fn subcommand_word_is_optional() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            with_subcommand_word(args(&["cargo-serve-safe", "--port", "1"]), "serve-safe"),
            args(&["cargo-serve-safe", "serve-safe", "--port", "1"])
        );
        assert_eq!(
            with_subcommand_word(args(&["cargo-serve-safe", "serve-safe"]), "serve-safe"),
            args(&["cargo-serve-safe", "serve-safe"])
        );
        assert_eq!(
            with_subcommand_word(args(&["x"]), "serve-safe"),
            args(&["x", "serve-safe"])
        );
    }
}
