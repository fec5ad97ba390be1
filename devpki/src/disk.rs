//! The on-disk development PKI behind `mev pki`: `init`, `issue`, `revoke`.

use super::certs::{ca_params, check_agency_id, crl, hex, make_leaf, serial_of, unhex, CertSpec};
use super::{KeyAlg, PkiError};
use rcgen::{CertifiedIssuer, Issuer, KeyPair};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file layout of an on-disk development PKI.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    /// The PKI directory.
    pub dir: PathBuf,
}

impl PkiPaths {
    /// The layout under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PkiPaths { dir: dir.into() }
    }
    /// The CA certificate (PEM): the trust anchor to configure.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The CA private key (PEM, 0600).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The CA-signed CRL (PEM).
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    /// The revoked serials, hex, one per line (with the agency after a space).
    pub fn revoked(&self) -> PathBuf {
        self.dir.join("revoked.txt")
    }
    /// An agency's certificate (PEM).
    pub fn agency_cert(&self, agency: &str) -> PathBuf {
        self.dir.join("agencies").join(format!("{agency}.crt"))
    }
    /// An agency's private key (PEM, 0600).
    pub fn agency_key(&self, agency: &str) -> PathBuf {
        self.dir.join("agencies").join(format!("{agency}.key"))
    }
}

/// What `issue` wrote.
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    /// The certificate file.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
    /// The certificate's serial, hex.
    pub serial: String,
}

/// Creates a development CA in `dir`: `ca.crt`, `ca.key` and an empty
/// `crl.pem`. Refuses to replace an existing CA unless `force`; replacing it
/// also forgets the old CA's revocations.
pub fn init(dir: &Path, force: bool) -> Result<Vec<PathBuf>, PkiError> {
    let paths = PkiPaths::new(dir);
    if !force && (paths.ca_key().exists() || paths.ca_cert().exists()) {
        return Err(PkiError::CaExists(dir.to_owned()));
    }
    create_dir(dir)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let ca = CertifiedIssuer::self_signed(ca_params(), key)?;
    write_file(&paths.ca_key(), ca.key().serialize_pem().as_bytes(), true)?;
    write_file(&paths.ca_cert(), ca.pem().as_bytes(), false)?;
    write_file(&paths.revoked(), b"", false)?;
    write_file(&paths.crl(), crl(&ca, &[])?.pem()?.as_bytes(), false)?;
    Ok(vec![
        paths.ca_cert(),
        paths.ca_key(),
        paths.crl(),
        paths.revoked(),
    ])
}

/// Issues (or re-issues) the certificate of `agency` from the CA in `dir`,
/// valid from yesterday for `validity_days`, with a new key.
pub fn issue(
    dir: &Path,
    agency: &str,
    alg: KeyAlg,
    validity_days: u32,
) -> Result<IssuedFiles, PkiError> {
    check_agency_id(agency)?;
    if !(1..=3650).contains(&validity_days) {
        return Err(PkiError::BadValidity(validity_days));
    }
    let paths = PkiPaths::new(dir);
    let ca = load_ca(&paths)?;
    let spec = CertSpec::new(agency, alg).valid_days(-1, i64::from(validity_days));
    let (cert_der, key, serial) = make_leaf(&ca, &spec)?;
    let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", cert_der));
    create_dir(&paths.dir.join("agencies"))?;
    write_file(
        &paths.agency_key(agency),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    write_file(&paths.agency_cert(agency), cert_pem.as_bytes(), false)?;
    Ok(IssuedFiles {
        cert: paths.agency_cert(agency),
        key: paths.agency_key(agency),
        serial: hex(&serial),
    })
}

/// Revokes the current certificate of `agency`: adds its serial to
/// `revoked.txt` and rewrites `crl.pem`. Returns the serial (hex) and how
/// many serials the CRL now lists.
pub fn revoke(dir: &Path, agency: &str) -> Result<(String, usize), PkiError> {
    check_agency_id(agency)?;
    let paths = PkiPaths::new(dir);
    let ca = load_ca(&paths)?;
    let cert_path = paths.agency_cert(agency);
    let cert_der = read_pem(&cert_path, "CERTIFICATE")?;
    let serial = serial_of(&cert_der).map_err(|source| PkiError::Certificate {
        path: cert_path.clone(),
        source,
    })?;
    let serial_hex = hex(&serial);

    let revoked_path = paths.revoked();
    let mut listed = match std::fs::read_to_string(&revoked_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(io_error(&revoked_path, source)),
    };
    let mut serials = Vec::new();
    for (n, line) in listed.lines().enumerate() {
        let Some(token) = line.split_whitespace().next() else {
            continue;
        };
        serials.push(unhex(token).ok_or_else(|| PkiError::Malformed {
            path: revoked_path.clone(),
            reason: format!("line {}: {token:?} is not a hex serial", n + 1),
        })?);
    }
    if !serials.contains(&serial) {
        serials.push(serial);
        listed.push_str(&format!("{serial_hex} {agency}\n"));
        write_file(&revoked_path, listed.as_bytes(), false)?;
    }
    write_file(&paths.crl(), crl(&ca, &serials)?.pem()?.as_bytes(), false)?;
    Ok((serial_hex, serials.len()))
}

fn load_ca(paths: &PkiPaths) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key_path = paths.ca_key();
    let key_pem = match std::fs::read_to_string(&key_path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PkiError::NoCa {
                dir: paths.dir.clone(),
                key: key_path,
            })
        }
        Err(e) => return Err(io_error(&key_path, e)),
    };
    let key = KeyPair::from_pem(&key_pem).map_err(|source| PkiError::Load {
        path: key_path,
        source,
    })?;
    let cert_path = paths.ca_cert();
    let cert_der = read_pem(&cert_path, "CERTIFICATE")?;
    Issuer::from_ca_cert_der(&cert_der.into(), key).map_err(|source| PkiError::Load {
        path: cert_path,
        source,
    })
}

fn read_pem(path: &Path, tag: &str) -> Result<Vec<u8>, PkiError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let block = pem::parse(&text).map_err(|source| PkiError::Pem {
        path: path.to_owned(),
        source,
    })?;
    if block.tag() != tag {
        return Err(PkiError::Malformed {
            path: path.to_owned(),
            reason: format!("expected a PEM {tag}, found {}", block.tag()),
        });
    }
    Ok(block.into_contents())
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))
}

/// Writes `bytes` to `path` through a temporary file renamed into place;
/// `private` files are created with mode 0600.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), PkiError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_owned(),
        source,
    }
}
