//! The development PKI: a CA, agency certificates and a CRL, on disk (the
//! `mev pki` command) or in memory ([`DevPki`], for the demo and tests).
//!
//! Not a production CA: real deployments use the national certification
//! authorities (KZ order §11, UZ annex 2 §13). What it makes has the shape
//! [`mev_proto::trust`] expects: an agency certificate carries the SAN URI
//! `urn:mev:agency:<ID>`, keyUsage digitalSignature and CN = the agency id.
//!
//! On disk, in `--dir`: `ca.crt`, `ca.key` (0600), `crl.pem` (the CA-signed
//! CRL), `revoked.txt` (the revoked serials, one per line, so revocations
//! accumulate), and `agencies/<ID>.crt`, `agencies/<ID>.key` (0600). Private
//! keys are created with mode 0600, never chmod-ed afterwards, and every file
//! is written to a temporary name and renamed into place.

mod certs;
mod dev;
mod disk;

pub use certs::{serial_of, CertSpec};
pub use dev::DevPki;
pub use disk::{init, issue, revoke, IssuedFiles, PkiPaths};

use mev_proto::crypto::IdentityError;
use mev_proto::trust::TrustError;
use std::path::PathBuf;

/// The key algorithm of an agency certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    /// Ed25519.
    Ed25519,
    /// ECDSA on P-256 with SHA-256.
    P256,
}

impl KeyAlg {
    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlg::Ed25519 => &rcgen::PKCS_ED25519,
            KeyAlg::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }
}

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `init` found a CA and was not told to replace it.
    #[error("a CA already exists in {}; pass --force to replace it", .0.display())]
    CaExists(PathBuf),
    /// There is no CA in the directory.
    #[error("no CA in {}: {} is missing; run `mev pki init` first", dir.display(), key.display())]
    NoCa {
        /// The PKI directory.
        dir: PathBuf,
        /// The missing CA key file.
        key: PathBuf,
    },
    /// A key or certificate file does not load.
    #[error("{} does not load", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM file does not parse.
    #[error("{} is not PEM", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: pem::PemError,
    },
    /// A certificate file does not parse.
    #[error("{} is not a certificate", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: x509_parser::error::X509Error,
    },
    /// A file holds something other than what it should.
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The agency id cannot go into a certificate or a file name.
    #[error("invalid agency id {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit")]
    BadAgencyId(String),
    /// The requested validity is out of range.
    #[error("validity of {0} days: use 1 to 3650")]
    BadValidity(u32),
    /// rcgen could not make a key, certificate or CRL.
    #[error("certificate generation failed")]
    Rcgen(#[from] rcgen::Error),
    /// A generated key could not be loaded as a signer.
    #[error("a generated key does not load as an identity")]
    Identity(#[from] IdentityError),
    /// A generated certificate or CRL was refused by the trust store.
    #[error("the trust store refused a generated certificate")]
    Trust(#[from] TrustError),
}
