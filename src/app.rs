//! What the binaries do, as functions that return an exit code: parse, dispatch, report.
//! The binaries themselves only pass their arguments in and exit with the answer.

use std::ffi::OsString;

use clap::Parser as _;

use crate::cli::{self, PortguardCli, PortguardCommand, RunArgs, ServeSafeCli};
use crate::{exit_codes, output, serve};

/// `cargo serve-safe`, given the process arguments.
#[must_use]
pub fn serve_safe_main(args: Vec<OsString>) -> i32 {
    match ServeSafeCli::try_parse_from(cli::with_subcommand_word(args, "serve-safe")) {
        Ok(ServeSafeCli::ServeSafe(run)) => run_serve(&run),
        Err(error) => clap_exit(&error),
    }
}

/// `cargo portguard`, given the process arguments.
#[must_use]
pub fn portguard_main(args: Vec<OsString>) -> i32 {
    match PortguardCli::try_parse_from(cli::with_subcommand_word(args, "portguard")) {
        Ok(PortguardCli::Portguard(portguard)) => match portguard.command {
            PortguardCommand::Run(run) => run_serve(&run),
        },
        Err(error) => clap_exit(&error),
    }
}

fn run_serve(args: &RunArgs) -> i32 {
    output::init(args.common.color, args.common.quiet, args.common.verbose);
    report(serve::serve(args, &|name| std::env::var_os(name)))
}

fn report(result: anyhow::Result<i32>) -> i32 {
    match result {
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
