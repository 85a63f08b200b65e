//! What the binaries do, as functions that return an exit code: parse, dispatch, report.
//! The binaries themselves only pass their arguments in and exit with the answer.

use std::ffi::OsString;

use clap::Parser as _;

use crate::cli::{self, CommonArgs, PortguardCli, PortguardCommand, ServeSafeCli};
use crate::serve::Vars;
use crate::{exit_codes, logs, output, scaffold, serve, status, stop};

/// `cargo serve-safe`, given the process arguments.
#[must_use]
pub fn serve_safe_main(args: Vec<OsString>) -> i32 {
    match ServeSafeCli::try_parse_from(cli::with_subcommand_word(args, "serve-safe")) {
        Ok(ServeSafeCli::ServeSafe(serve_safe)) => run(&serve_safe.common, |vars| {
            serve::serve(&serve_safe.common, &serve_safe.run, vars)
        }),
        Err(error) => clap_exit(&error),
    }
}

/// `cargo portguard`, given the process arguments.
#[must_use]
pub fn portguard_main(args: Vec<OsString>) -> i32 {
    let portguard = match PortguardCli::try_parse_from(cli::with_subcommand_word(args, "portguard"))
    {
        Ok(PortguardCli::Portguard(portguard)) => portguard,
        Err(error) => return clap_exit(&error),
    };
    let common = &portguard.common;
    run(common, |vars| match &portguard.command {
        PortguardCommand::Run(args) => serve::serve(common, args, vars),
        PortguardCommand::Status(args) => status::status(common, args, vars),
        PortguardCommand::Stop(args) => stop::stop(common, args, vars),
        PortguardCommand::Restart(args) => stop::restart(common, args, vars),
        PortguardCommand::Logs(args) => logs::logs(common, args, vars),
        PortguardCommand::Init(args) => scaffold::init(common, args, vars),
        PortguardCommand::Ports(args) => crate::ports::ports(common, args, vars),
        PortguardCommand::Config(args) => crate::config::report::config(common, args, vars),
        PortguardCommand::Generate(args) => crate::generate::generate(common, args, vars),
    })
}

/// Sets up output, runs a command against the real environment, and turns its error into
/// the message and exit code the contract gives it.
fn run(common: &CommonArgs, command: impl FnOnce(Vars<'_>) -> anyhow::Result<i32>) -> i32 {
    output::init(common.color, common.quiet, common.verbose);
    match command(&|name| std::env::var_os(name)) {
        Ok(code) => code,
        Err(error) => {
            output::error_chain(&error);
            exit_codes::for_error(&error)
        }
    }
}

/// Help and version go to stdout with 0; usage errors to stderr with 2, as clap does.
fn clap_exit(error: &clap::Error) -> i32 {
    let _ = error.print();
    error.exit_code()
}
