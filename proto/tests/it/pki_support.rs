//! A tiny test CA on rcgen, shared by the integration tests of mev-proto.
#![allow(dead_code)]

use chrono::{Days, NaiveDate, Utc};
use mev_proto::trust::TrustStore;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertifiedIssuer, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

/// The throwaway RSA test key (see tests/data/README.md).
pub const RSA_KEY_PEM: &str = include_str!("../data/rsa2048.pem");

pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

pub fn days_from_today(days: i64) -> NaiveDate {
    let t = today();
    if days >= 0 {
        t.checked_add_days(Days::new(days.unsigned_abs())).unwrap()
    } else {
        t.checked_sub_days(Days::new(days.unsigned_abs())).unwrap()
    }
}

fn set_validity(params: &mut CertificateParams, from: NaiveDate, to: NaiveDate) {
    use chrono::Datelike;
    params.not_before = date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = date_time_ymd(to.year(), to.month() as u8, to.day() as u8);
}

/// Random positive serial with a non-zero first byte (so DER keeps it as is).
pub fn random_serial() -> Vec<u8> {
    let mut s = vec![0u8; 16];
    SystemRandom::new().fill(&mut s).unwrap();
    s[0] = (s[0] & 0x7f).max(1);
    s
}

pub struct TestCa {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

/// What to put in a leaf certificate.
pub struct Leaf {
    pub agency: Option<String>,
    pub key: KeyPair,
    pub from_days: i64,
    pub to_days: i64,
    pub key_usages: Vec<KeyUsagePurpose>,
}

impl Leaf {
    pub fn new(agency: &str, alg: &'static rcgen::SignatureAlgorithm) -> Leaf {
        Leaf::with_key(agency, KeyPair::generate_for(alg).unwrap())
    }

    pub fn with_key(agency: &str, key: KeyPair) -> Leaf {
        Leaf {
            agency: Some(agency.to_owned()),
            key,
            from_days: -1,
            to_days: 30,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
        }
    }
}

/// An issued leaf: DER certificate, PKCS#8 PEM key, serial bytes.
pub struct Issued {
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    pub serial: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, days_from_today(-10), days_from_today(3650));
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn cert_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    pub fn store(&self) -> TrustStore {
        TrustStore::new(&[self.cert_der()]).unwrap()
    }

    pub fn issue(&self, leaf: Leaf) -> Issued {
        let mut params = CertificateParams::default();
        let cn = leaf.agency.clone().unwrap_or_else(|| "anonymous".into());
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(agency) = &leaf.agency {
            let uri = format!("{}{agency}", mev_proto::trust::AGENCY_URI_PREFIX);
            params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        }
        params.key_usages = leaf.key_usages;
        params.use_authority_key_identifier_extension = true;
        set_validity(
            &mut params,
            days_from_today(leaf.from_days),
            days_from_today(leaf.to_days),
        );
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&leaf.key, &self.issuer).unwrap();
        Issued {
            cert_der: cert.der().to_vec(),
            key_pem: leaf.key.serialize_pem(),
            serial,
        }
    }

    pub fn crl(&self, serials: &[&[u8]]) -> Vec<u8> {
        let revocation_time = {
            use chrono::Datelike;
            let d = days_from_today(-1);
            date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
        };
        let next = {
            use chrono::Datelike;
            let d = days_from_today(7);
            date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
        };
        CertificateRevocationListParams {
            this_update: revocation_time,
            next_update: next,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .der()
        .to_vec()
    }
}

impl TestCa {
    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, days_from_today(-10), days_from_today(365));
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TestCa {
            issuer: CertifiedIssuer::signed_by(params, key, &self.issuer).unwrap(),
        }
    }
}

/// The serial (DER integer contents) of a certificate.
pub fn serial_of(cert_der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).unwrap();
    cert.raw_serial().to_vec()
}
