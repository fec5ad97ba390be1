//! Sign and verify, per algorithm.

use super::*;

pub(crate) struct CryptoRow {
    pub(crate) name: &'static str,
    pub(crate) envelope: usize,
    pub(crate) header: usize,
    pub(crate) signature: usize,
    pub(crate) sign_us: f64,
    pub(crate) seal_us: f64,
    pub(crate) verify_us: f64,
    pub(crate) open_verify_us: f64,
    pub(crate) open_verify_new_chain_us: f64,
}

/// A development CA like `DevPki`'s (ECDSA P-256), which can also certify the
/// P-384 and RSA keys `DevPki` does not issue. rcgen's default validity
/// (1975 to 4096) covers today.
pub(crate) fn crypto_ca() -> anyhow::Result<rcgen::CertifiedIssuer<'static, rcgen::KeyPair>> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mevbench CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    Ok(rcgen::CertifiedIssuer::self_signed(params, key)?)
}

/// An agency certificate for `key` (SAN URI `urn:mev:agency:<ID>`,
/// digitalSignature), as `DevPki` makes them.
pub(crate) fn crypto_leaf(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    agency: &str,
    key: &rcgen::KeyPair,
) -> anyhow::Result<Vec<u8>> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, agency);
    let uri = format!("{}{agency}", mev_proto::trust::AGENCY_URI_PREFIX);
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into()?)];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params.signed_by(key, ca)?.der().to_vec())
}

/// Microseconds per call of `f`: the median of `rounds` rounds of at least 100 ms.
pub(crate) fn per_op(
    rounds: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..20 {
        f()?;
    }
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let mut ops = 0u64;
        while ops < 10 || start.elapsed() < Duration::from_millis(100) {
            f()?;
            ops += 1;
        }
        samples.push(start.elapsed().as_secs_f64() * 1e6 / ops as f64);
    }
    Ok(median(samples))
}

pub(crate) fn crypto_part(fx: &Fixture, rounds: usize) -> anyhow::Result<Vec<CryptoRow>> {
    let ca = crypto_ca()?;
    let trust = TrustStore::new(&[ca.der().to_vec()])?;
    let verifier = RingVerifier::new();
    let limits = Limits::default();
    let agency = fx.consumer_id.as_str();
    let algs: [(&'static str, rcgen::KeyPair, SignatureAlgorithm); 5] = [
        (
            "Ed25519",
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
            SignatureAlgorithm::Ed25519,
        ),
        (
            "ECDSA P-256 SHA-256",
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            SignatureAlgorithm::EcdsaP256Sha256,
        ),
        (
            "ECDSA P-384 SHA-384",
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
            SignatureAlgorithm::EcdsaP384Sha384,
        ),
        (
            "RSA-2048 PKCS#1 v1.5",
            rcgen::KeyPair::from_pem(RSA_KEY_PEM)?,
            SignatureAlgorithm::RsaPkcs1Sha256,
        ),
        (
            "RSA-2048 PSS",
            rcgen::KeyPair::from_pem(RSA_KEY_PEM)?,
            SignatureAlgorithm::RsaPssSha256,
        ),
    ];
    let mut rows = Vec::new();
    for (name, key, alg) in algs {
        let cert = crypto_leaf(&ca, agency, &key)?;
        let signer = RingSigner::from_pkcs8_der_for(key.serialized_der(), alg)
            .with_context(|| format!("a {name} signer"))?;
        let identity = Identity::new(agency, Arc::new(signer), vec![cert]);
        let (header, payload) = fx
            .request_with(&fx.throughput, 0, fx.throughput.attachment_len)
            .into_parts(agency);
        let seal = || {
            mev_proto::envelope::seal(
                header.clone(),
                payload.clone(),
                identity.signer.as_ref(),
                &identity.certificate_chain,
            )
        };
        let env = seal()?;
        let bytes = env.encode_to_vec();
        let sig = env
            .signature
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        let now = chrono::Utc::now();
        let spki = trust
            .verify_certificate(&identity.certificate_chain, agency, now)
            .with_context(|| format!("the {name} certificate"))?
            .spki_der;
        // Once, checked: the envelope opens and verifies as the broker does.
        mev_proto::envelope::open(&bytes, &limits)
            .and_then(|o| o.verify(&trust, &verifier, now))
            .map_err(|r| anyhow::anyhow!("{name}: the sealed envelope does not verify: {r}"))?;
        let sign_us = per_op(rounds, || {
            std::hint::black_box(identity.signer.sign(std::hint::black_box(&env.header))?);
            Ok(())
        })?;
        let seal_us = per_op(rounds, || {
            std::hint::black_box(seal()?.encode_to_vec());
            Ok(())
        })?;
        let verify_us = per_op(rounds, || {
            verifier.verify(alg, &spki, std::hint::black_box(&env.header), &sig)?;
            Ok(())
        })?;
        let open_verify_us = per_op(rounds, || {
            let opened = mev_proto::envelope::open(std::hint::black_box(&bytes), &limits)
                .map_err(|r| anyhow::anyhow!("{r}"))?;
            opened
                .verify(&trust, &verifier, now)
                .map_err(|r| anyhow::anyhow!("{r}"))?;
            Ok(())
        })?;
        // The same with the trust store's memory of verified chains wiped
        // each time (loading CRLs does that): a certificate seen for the
        // first time, its path (the CA's ECDSA P-256 signature) checked.
        let open_verify_new_chain_us = per_op(rounds, || {
            trust.set_crls(Vec::new())?;
            let opened = mev_proto::envelope::open(std::hint::black_box(&bytes), &limits)
                .map_err(|r| anyhow::anyhow!("{r}"))?;
            opened
                .verify(&trust, &verifier, now)
                .map_err(|r| anyhow::anyhow!("{r}"))?;
            Ok(())
        })?;
        rows.push(CryptoRow {
            name,
            envelope: bytes.len(),
            header: env.header.len(),
            signature: sig.len(),
            sign_us,
            seal_us,
            verify_us,
            open_verify_us,
            open_verify_new_chain_us,
        });
    }
    Ok(rows)
}
