//! The `mev` command-line tool: the broker (`mev broker`, from `mev-broker`)
//! and the tools of this crate's library (see `lib.rs`): demo, pki, register,
//! audit, report, status, deploy. Exits 2 on an error, saying why.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mev",
    version,
    about = "mev: the interagency electronic exchange"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the exchange end to end: a broker and K agencies, N requests, a summary.
    Demo(mev_cli::demo::DemoArgs),
    /// Run the broker: consume the ingress, check, route, receipt.
    Broker(BrokerArgs),
    /// A running broker's queues, open requests and deadlines (from its HTTP endpoint).
    Status(mev_cli::status::StatusArgs),
    /// Development PKI: a CA and agency certificates
    Pki {
        #[command(subcommand)]
        cmd: mev_cli::pki::PkiCommand,
    },
    /// The Unified Register of services: check it.
    Register(mev_cli::register::RegisterArgs),
    /// The audit journal: verify, trace, export, prove, check a proof, seal, replay.
    Audit {
        #[command(subcommand)]
        cmd: mev_cli::audit::AuditCommand,
    },
    /// Quality reports from the broker's journal (RU 963 §9, §11; UZ resolution No. 120 §3).
    Report {
        #[command(subcommand)]
        cmd: mev_cli::report::ReportCommand,
    },
    /// Deployment files: RabbitMQ definitions with per-agency accounts.
    Deploy {
        #[command(subcommand)]
        cmd: mev_cli::deploy::DeployCommand,
    },
}

#[derive(clap::Args)]
struct BrokerArgs {
    /// The config file (TOML); see --print-default-config.
    #[arg(long, required_unless_present = "print_default_config")]
    config: Option<std::path::PathBuf>,
    /// Print the default config, with comments, and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn broker(args: BrokerArgs) -> anyhow::Result<ExitCode> {
    use mev_broker::config::BrokerConfig;
    if args.print_default_config {
        print!("{}", BrokerConfig::default_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let path = args.config.unwrap_or_default();
    let config = BrokerConfig::load(&path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(mev_broker::server::run(config))?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Register(args) => mev_cli::register::run(args),
        Command::Pki { cmd } => mev_cli::pki::run(cmd),
        Command::Demo(args) => mev_cli::demo::run(args),
        Command::Broker(args) => broker(args),
        Command::Status(args) => mev_cli::status::run(args),
        Command::Audit { cmd } => mev_cli::audit::run(cmd),
        Command::Report { cmd } => mev_cli::report::run(cmd),
        Command::Deploy { cmd } => mev_cli::deploy::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mev: {e:#}");
            ExitCode::from(2)
        }
    }
}
