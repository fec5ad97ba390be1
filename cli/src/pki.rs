//! `mev pki`: the development PKI on disk (see [`mev_devpki`]).

use mev_devpki::{init, issue, revoke, KeyAlg, PkiPaths};
use std::path::PathBuf;
use std::process::ExitCode;

/// The key algorithm of an issued certificate, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Alg {
    Ed25519,
    P256,
}

impl From<Alg> for KeyAlg {
    fn from(a: Alg) -> KeyAlg {
        match a {
            Alg::Ed25519 => KeyAlg::Ed25519,
            Alg::P256 => KeyAlg::P256,
        }
    }
}

/// `mev pki` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Create a development CA (ca.crt, ca.key, an empty crl.pem).
    Init {
        /// The PKI directory.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Replace an existing CA (every certificate it issued becomes untrusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue an agency certificate and key (agencies/AGENCY.crt and .key).
    Issue {
        /// The PKI directory.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// The agency id, as in the register (e.g. UZ-GNK).
        #[arg(long)]
        agency: String,
        /// The key algorithm.
        #[arg(long, value_enum, default_value_t = Alg::Ed25519)]
        alg: Alg,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Revoke an agency's current certificate (adds it to crl.pem).
    Revoke {
        /// The PKI directory.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// The agency id.
        #[arg(long)]
        agency: String,
    },
}

/// Runs a `mev pki` subcommand, printing what it wrote.
pub fn run(cmd: PkiCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PkiCommand::Init { dir, force } => {
            for path in init(&dir, force)? {
                println!("wrote {}", path.display());
            }
        }
        PkiCommand::Issue {
            dir,
            agency,
            alg,
            days,
        } => {
            let files = issue(&dir, &agency, alg.into(), days)?;
            println!("wrote {}", files.cert.display());
            println!("wrote {}", files.key.display());
            println!(
                "issued {agency} ({alg:?}, {days} days), serial {}",
                files.serial
            );
        }
        PkiCommand::Revoke { dir, agency } => {
            let (serial, count) = revoke(&dir, &agency)?;
            println!("wrote {}", PkiPaths::new(&dir).crl().display());
            println!("revoked {agency}, serial {serial}; the CRL lists {count} serial(s)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
