//! `mev register ...`: the register's commands.
//!
//! `mev register check [PATH]` loads and validates a register (a directory or
//! its `register.toml`), prints each problem on its own line naming the
//! entry, or a summary when it is clean. Exit status 0 when clean, 1 when not.

use clap::{Args, Subcommand};
use mev_broker::register::Register;
use std::path::PathBuf;
use std::process::ExitCode;

/// `mev register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// What to do with the register.
    #[command(subcommand)]
    pub cmd: RegisterCommand,
}

/// The register's subcommands.
#[derive(Debug, Subcommand)]
pub enum RegisterCommand {
    /// Validate a register: every entry and cross-reference, and its payload schemas.
    Check {
        /// The register directory (holding register.toml, payloads/, calendars/) or its register.toml.
        #[arg(default_value = "schemas/")]
        path: PathBuf,
    },
}

/// Runs a register subcommand; the exit code tells whether the register is clean.
pub fn run(args: RegisterArgs) -> anyhow::Result<ExitCode> {
    match args.cmd {
        RegisterCommand::Check { path } => Ok(check(&path)),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Register::load(path) {
        Ok(register) => {
            println!("{}", summary(&register));
            ExitCode::SUCCESS
        }
        Err(e) => {
            for problem in e.problems() {
                println!("{problem}");
            }
            eprintln!(
                "mev: the register at {} has {} problem(s)",
                path.display(),
                e.problems().len()
            );
            ExitCode::from(1)
        }
    }
}

/// `schemas/register.toml: 15 agencies, 11 services (10 active, 1 abolished), ...`.
fn summary(register: &Register) -> String {
    let services = register.services().count();
    let active = register.services().filter(|s| s.is_active()).count();
    format!(
        "{}: {} agencies, {services} services ({active} active, {} abolished), {} schemas, {} deadline policies",
        register.path().display(),
        register.agencies().count(),
        services - active,
        register.schemas().count(),
        register.policies().count(),
    )
}
