//! Certificate, CRL and serial making, shared by the on-disk PKI and [`DevPki`](super::DevPki).

use super::{KeyAlg, PkiError};
use chrono::{Datelike, Days, NaiveDate, Utc};
use mev_proto::trust::AGENCY_URI_PREFIX;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};

/// What to put in an agency certificate ([`DevPki::issue_with`](super::DevPki::issue_with)).
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// The agency the certificate names (`None`: no agency SAN URI).
    pub agency: Option<String>,
    /// The key algorithm.
    pub alg: KeyAlg,
    /// First day of validity, in days from today (negative: in the past).
    pub from_days: i64,
    /// Last day of validity, in days from today.
    pub until_days: i64,
    /// Whether keyUsage includes digitalSignature (otherwise keyAgreement only).
    pub digital_signature: bool,
}

impl CertSpec {
    /// A normal certificate for `agency`: valid from yesterday for a year.
    pub fn new(agency: &str, alg: KeyAlg) -> Self {
        CertSpec {
            agency: Some(agency.to_owned()),
            alg,
            from_days: -1,
            until_days: 365,
            digital_signature: true,
        }
    }

    /// The same, valid from `from_days` to `until_days` days from today.
    pub fn valid_days(mut self, from_days: i64, until_days: i64) -> Self {
        self.from_days = from_days;
        self.until_days = until_days;
        self
    }
}

/// The serial (DER integer contents) of a certificate.
pub fn serial_of(cert_der: &[u8]) -> Result<Vec<u8>, x509_parser::error::X509Error> {
    use x509_parser::nom::Err;
    match x509_parser::parse_x509_certificate(cert_der) {
        Ok((_, cert)) => Ok(cert.raw_serial().to_vec()),
        Err(Err::Error(e) | Err::Failure(e)) => Err(e),
        Err(Err::Incomplete(_)) => Err(x509_parser::error::X509Error::InvalidCertificate),
    }
}

pub(crate) fn check_agency_id(id: &str) -> Result<(), PkiError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && id.len() <= 64 && id.chars().all(ok_char) {
        Ok(())
    } else {
        Err(PkiError::BadAgencyId(id.to_owned()))
    }
}

/// A random positive serial (16 bytes, about 120 random bits; first byte non-zero).
pub(crate) fn random_serial() -> Vec<u8> {
    let mut s = uuid::Uuid::new_v4().into_bytes().to_vec();
    s[0] = (s[0] & 0x7f).max(1);
    s
}

pub(crate) fn day(offset: i64) -> NaiveDate {
    let today = Utc::now().date_naive();
    let d = Days::new(offset.unsigned_abs());
    let shifted = if offset >= 0 {
        today.checked_add_days(d)
    } else {
        today.checked_sub_days(d)
    };
    shifted.unwrap_or(today)
}

/// rcgen's time at midnight UTC of `offset` days from today.
macro_rules! rcgen_day {
    ($offset:expr) => {{
        let d = day($offset);
        date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    }};
}

pub(crate) fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "mev development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen_day!(-1);
    params.not_after = rcgen_day!(3650);
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params
}

/// Makes a leaf certificate to `spec`: (DER, key, serial).
pub(crate) fn make_leaf<S: rcgen::SigningKey>(
    ca: &Issuer<'_, S>,
    spec: &CertSpec,
) -> Result<(Vec<u8>, KeyPair, Vec<u8>), PkiError> {
    let key = KeyPair::generate_for(spec.alg.rcgen())?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let cn = spec.agency.clone().unwrap_or_else(|| "no agency".into());
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(agency) = &spec.agency {
        let uri = format!("{AGENCY_URI_PREFIX}{agency}");
        params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    }
    params.key_usages = if spec.digital_signature {
        vec![KeyUsagePurpose::DigitalSignature]
    } else {
        vec![KeyUsagePurpose::KeyAgreement]
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen_day!(spec.from_days);
    params.not_after = rcgen_day!(spec.until_days);
    let serial = random_serial();
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.der().to_vec(), key, serial))
}

pub(crate) fn crl<S: rcgen::SigningKey>(
    ca: &Issuer<'_, S>,
    serials: &[Vec<u8>],
) -> Result<rcgen::CertificateRevocationList, PkiError> {
    let now = Utc::now().timestamp().unsigned_abs();
    let params = CertificateRevocationListParams {
        this_update: rcgen_day!(-1),
        next_update: rcgen_day!(30),
        // Seconds since the epoch: increases with every CRL made.
        crl_number: SerialNumber::from(now),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: rcgen_day!(-1),
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(ca)?)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    mev_proto::envelope::hex(bytes)
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}
