//! What the binaries do, as functions that return an exit code: parse, build the one context
//! every command runs in, dispatch, report. The binaries themselves only pass their arguments in
//! and exit with the answer.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::Parser as _;

use crate::cli::{self, CommonArgs, PortguardCli, PortguardCommand, ServeSafeCli};
use crate::commands::{config, generate, init, logs, ports, serve, status, stop};
use crate::context::Context;
use crate::supervise::build;
use crate::{exit_codes, output};

/// `cargo serve-safe`, given the process arguments (the program name first).
#[must_use]
pub fn serve_safe_main(args: Vec<OsString>) -> i32 {
    if let Some(code) = runner(&args) {
        return code;
    }
    let args = cli::with_subcommand_word(args, "serve-safe");
    match ServeSafeCli::try_parse_from(&args) {
        Ok(ServeSafeCli::ServeSafe(serve_safe)) => {
            run(args, Context::from_process, &serve_safe.common, |context| {
                serve::serve(context, &serve_safe.common, &serve_safe.run)
            })
        }
        Err(error) => clap_exit(&error),
    }
}

/// `cargo portguard`, given the process arguments (the program name first).
#[must_use]
pub fn portguard_main(args: Vec<OsString>) -> i32 {
    if let Some(code) = runner(&args) {
        return code;
    }
    portguard(args, Context::from_process)
}

/// A build for a reload runs portguard as cargo's runner, in place of the server (see
/// `supervise::build`): the answer, when these arguments are that.
fn runner(args: &[OsString]) -> Option<i32> {
    (args.get(1).is_some_and(|word| word == build::LAUNCH_WORD))
        .then(|| build::hand_over(&args[1..]))
}

/// `cargo portguard` run inside this process, for tests: `args` as for [`portguard_main`],
/// `vars` the whole environment the command sees and `cwd` its current folder (the process's
/// own are neither read nor changed). What the command prints goes to `stdout` and `stderr`,
/// written once it has finished; calls on other threads keep their output apart. Meant for
/// commands that start no server (`config`, `ports`, `status`, `init --dry-run`): a server
/// would inherit the process's streams, not these.
#[doc(hidden)]
#[must_use]
pub fn portguard_in(
    args: Vec<OsString>,
    vars: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let (code, out, err) =
        output::capture(|| portguard(args, |args| Context::new(vars, args, cwd)));
    match stdout.write_all(&out).and_then(|()| stderr.write_all(&err)) {
        Ok(()) => code,
        Err(_) => exit_codes::FAILURE,
    }
}

/// `cargo portguard` with the context `context` makes from the parsed arguments.
fn portguard(args: Vec<OsString>, context: impl FnOnce(Vec<OsString>) -> Context) -> i32 {
    let args = cli::with_subcommand_word(args, "portguard");
    let portguard = match PortguardCli::try_parse_from(&args) {
        Ok(PortguardCli::Portguard(portguard)) => portguard,
        Err(error) => return clap_exit(&error),
    };
    let common = &portguard.common;
    run(args, context, common, |context| match &portguard.command {
        PortguardCommand::Run(args) => serve::serve(context, common, args),
        PortguardCommand::Status(args) => status::status(context, common, args),
        PortguardCommand::Stop(args) => stop::stop(context, common, args),
        PortguardCommand::Restart(args) => stop::restart(context, common, args),
        PortguardCommand::Logs(args) => logs::logs(context, common, args),
        PortguardCommand::Init(args) => init::init(context, common, args),
        PortguardCommand::Ports(args) => ports::ports(context, common, args),
        PortguardCommand::Config(args) => config::config(context, common, args),
        PortguardCommand::Generate(args) => generate::generate(context, common, args),
    })
}

/// Builds the context, sets up output for it, runs a command, and turns its error into the
/// message and exit code the contract gives it.
fn run(
    args: Vec<OsString>,
    context: impl FnOnce(Vec<OsString>) -> Context,
    common: &CommonArgs,
    command: impl FnOnce(&Context) -> anyhow::Result<i32>,
) -> i32 {
    // The program name is the binary's; what follows is what the command was parsed from.
    let context = context(args.into_iter().skip(1).collect());
    output::init(common.color, common.quiet, common.verbose, &context.vars());
    match command(&context) {
        Ok(code) => code,
        Err(error) => {
            output::error_chain(&error);
            exit_codes::for_error(&error)
        }
    }
}

/// Help and version go to stdout with 0; usage errors to stderr with 2, as clap does.
fn clap_exit(error: &clap::Error) -> i32 {
    output::clap_error(error);
    error.exit_code()
}
