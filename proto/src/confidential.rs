//! Optional payload confidentiality: a request's payload encrypted to the
//! recipient agency's key, so that the exchange routes the message and checks
//! its signature and digest but cannot read the personal data inside.
//!
//! ## Keys
//! Each agency that wants to receive encrypted payloads holds a long-term
//! X25519 *agreement key* ([`AgreementKey`], a PKCS#8 PEM as `openssl genpkey
//! -algorithm X25519` writes it) and publishes its public half
//! ([`RecipientKey`], a `PUBLIC KEY` PEM as `openssl pkey -pubout` writes it)
//! to the agencies that send to it. A sender keeps the recipients' public keys
//! in a [`RecipientKeys`] map (the adapter's config). The agreement key is a
//! separate key from the signing key: signing certificates say who sent a
//! message, agreement keys only who can read it.
//!
//! ## Encryption (`X25519_HKDF_SHA256_AES_256_GCM`)
//! 1. The sender makes an ephemeral X25519 key (ring's
//!    `agreement::EphemeralPrivateKey`, one per message) and agrees a shared
//!    secret with the recipient's public key. ring refuses a low-order
//!    recipient key (an all-zero secret).
//! 2. HKDF-SHA256 (ring): salt = ephemeral public key ‖ recipient public key;
//!    info = a fixed label ‖ message id ‖ sender ‖ recipient ‖ service (each
//!    length-prefixed); output: a 256-bit AES-GCM key, used for this one
//!    message.
//! 3. AES-256-GCM (ring) with a random 96-bit nonce; the additional
//!    authenticated data is a label ‖ message id ‖ sender ‖ recipient
//!    (length-prefixed). A ciphertext therefore decrypts only inside the
//!    message it was made for: another agency that copies it into a request
//!    of its own (signed by itself, with its own id) gets nothing decrypted
//!    back, nor does anyone who moves it to another message.
//! 4. The header's [`PayloadEncryption`] records the algorithm, the ephemeral
//!    public key, the nonce and the recipient key's id (SHA-256 of the
//!    public key). The header is signed, and `payload_sha256` is the digest
//!    of the *ciphertext*: the exchange checks the digest and the signature
//!    as for any message; a changed ciphertext fails the digest, a changed
//!    digest or encryption field fails the signature.
//!
//! The recipient repeats the agreement with its static key and the ephemeral
//! public key from the header, derives the same key and opens the ciphertext
//! ([`AgreementKey::open`]); a ciphertext for another key, another message or
//! with a changed byte does not open.
//!
//! ## Why a second crate for the recipient's key
//! ring (0.17) offers X25519 only as `EphemeralPrivateKey`: it cannot be
//! loaded from bytes or stored, and `agree_ephemeral` consumes it, so ring
//! cannot hold a recipient's long-term key (nor does it offer RSA encryption
//! or static ECDH on any curve). The recipient's side of the agreement uses
//! `x25519-dalek`'s `StaticSecret` (zeroized on drop; non-contributory, i.e.
//! low-order, ephemeral keys are refused). Everything else — the sender's
//! ephemeral agreement, HKDF, AES-GCM, random numbers — is ring.
//!
//! ## What stays readable
//! Only the payload is encrypted. The header stays in clear: the exchange
//! routes, checks and records by it, and UZ annex 2 §14 puts the applicant's
//! details there. The broker cannot check an encrypted payload against the
//! service's schema (it checks the schema's name only); the provider should
//! decode what it decrypts strictly. Only requests may be encrypted for now.

use crate::error::{ErrorCode, Rejection};
use crate::pb::{Header, PayloadEncryption, PayloadEncryptionAlgorithm};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, agreement, hkdf};
use std::collections::BTreeMap;
use std::fmt;

/// The one algorithm there is.
pub const ALGORITHM: PayloadEncryptionAlgorithm =
    PayloadEncryptionAlgorithm::X25519HkdfSha256Aes256Gcm;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const KDF_LABEL: &[u8] = b"mev/v1 payload X25519-HKDF-SHA256-AES-256-GCM";
const AAD_LABEL: &[u8] = b"mev/v1 payload aad";
/// DER of a PKCS#8 v1 X25519 private key (RFC 8410 §7) before the 32 key bytes.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
];
/// DER of an X25519 SubjectPublicKeyInfo (RFC 8410 §4) before the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
];

/// Why a payload could not be encrypted or decrypted, or a key loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfidentialError {
    /// The header says the payload is not encrypted.
    #[error("the payload is not encrypted")]
    NotEncrypted,
    /// An algorithm this code does not know.
    #[error("payload encryption algorithm {0} is not supported")]
    UnsupportedAlgorithm(i32),
    /// The header's encryption fields are malformed.
    #[error("header.payload_encryption: {0}")]
    Malformed(&'static str),
    /// Encrypted to another key than ours (by the key id in the header).
    #[error("the payload is encrypted to another agreement key")]
    OtherKey,
    /// The ciphertext does not open: changed, moved to another message, or
    /// made for another key.
    #[error(
        "the payload does not decrypt (changed, moved from another message, or for another key)"
    )]
    Decrypt,
    /// A key that cannot be used: wrong encoding, wrong type, low order.
    #[error("agreement key: {0}")]
    BadKey(String),
    /// The header lacks what the encryption binds.
    #[error("header.{0} must be set before the payload is encrypted")]
    Unbound(&'static str),
    /// The system's random number generator or a ring primitive failed.
    #[error("encryption failed")]
    Crypto,
}

/// An agency's own long-term X25519 agreement key (private), for decrypting
/// the payloads sent to it.
pub struct AgreementKey {
    secret: x25519_dalek::StaticSecret,
    public: RecipientKey,
}

impl fmt::Debug for AgreementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgreementKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl AgreementKey {
    /// A new random key (from the system's generator, via ring).
    pub fn generate() -> Result<AgreementKey, ConfidentialError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| ConfidentialError::Crypto)?;
        Ok(AgreementKey::from_bytes(bytes))
    }

    /// The key from its 32 raw bytes (RFC 7748; clamped when used).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> AgreementKey {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = RecipientKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        AgreementKey { secret, public }
    }

    /// The key from a PKCS#8 (v1, RFC 8410) DER document.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<AgreementKey, ConfidentialError> {
        let bytes = der
            .strip_prefix(&PKCS8_PREFIX[..])
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
            .ok_or_else(|| {
                ConfidentialError::BadKey("not a PKCS#8 v1 X25519 private key".into())
            })?;
        Ok(AgreementKey::from_bytes(bytes))
    }

    /// The key from a `PRIVATE KEY` PEM (as `openssl genpkey -algorithm X25519` writes).
    pub fn from_pem(pem_text: &str) -> Result<AgreementKey, ConfidentialError> {
        let p = pem::parse(pem_text).map_err(|e| ConfidentialError::BadKey(e.to_string()))?;
        if p.tag() != "PRIVATE KEY" {
            return Err(ConfidentialError::BadKey(format!(
                "expected a PRIVATE KEY PEM, found {}",
                p.tag()
            )));
        }
        AgreementKey::from_pkcs8_der(p.contents())
    }

    /// The key as a PKCS#8 `PRIVATE KEY` PEM (keep it as secret as a signing key).
    pub fn to_pkcs8_pem(&self) -> String {
        let mut der = PKCS8_PREFIX.to_vec();
        der.extend_from_slice(self.secret.as_bytes());
        pem::encode(&pem::Pem::new("PRIVATE KEY", der))
    }

    /// The public half, to give to the agencies that send to this one.
    pub fn public_key(&self) -> RecipientKey {
        self.public
    }

    /// Decrypts the payload of a message whose header says it is encrypted
    /// (the header as verified: call this after the signature check).
    pub fn open(&self, header: &Header, ciphertext: &[u8]) -> Result<Vec<u8>, ConfidentialError> {
        let enc = header
            .payload_encryption
            .as_ref()
            .ok_or(ConfidentialError::NotEncrypted)?;
        let (ephemeral, nonce) = check_fields(enc)?;
        if enc.recipient_key_id.as_slice() != self.public.key_id() {
            return Err(ConfidentialError::OtherKey);
        }
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(ephemeral));
        if !shared.was_contributory() {
            return Err(ConfidentialError::BadKey(
                "the ephemeral public key is of low order".into(),
            ));
        }
        let key = derive_key(shared.as_bytes(), &ephemeral, &self.public.0, header)?;
        let mut in_out = ciphertext.to_vec();
        let len = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad(header)),
                &mut in_out,
            )
            .map_err(|_| ConfidentialError::Decrypt)?
            .len();
        in_out.truncate(len);
        Ok(in_out)
    }
}

/// An agency's X25519 public agreement key: what a sender encrypts to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecipientKey([u8; KEY_LEN]);

impl fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecipientKey({})", crate::envelope::hex(&self.0))
    }
}

impl RecipientKey {
    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> RecipientKey {
        RecipientKey(bytes)
    }

    /// The key from an X25519 SubjectPublicKeyInfo (RFC 8410) DER.
    pub fn from_spki_der(der: &[u8]) -> Result<RecipientKey, ConfidentialError> {
        der.strip_prefix(&SPKI_PREFIX[..])
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
            .map(RecipientKey)
            .ok_or_else(|| ConfidentialError::BadKey("not an X25519 public key".into()))
    }

    /// The key from a `PUBLIC KEY` PEM (as `openssl pkey -pubout` writes).
    pub fn from_pem(pem_text: &str) -> Result<RecipientKey, ConfidentialError> {
        let p = pem::parse(pem_text).map_err(|e| ConfidentialError::BadKey(e.to_string()))?;
        if p.tag() != "PUBLIC KEY" {
            return Err(ConfidentialError::BadKey(format!(
                "expected a PUBLIC KEY PEM, found {}",
                p.tag()
            )));
        }
        RecipientKey::from_spki_der(p.contents())
    }

    /// The key as a `PUBLIC KEY` PEM, to publish.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem::encode(&pem::Pem::new("PUBLIC KEY", der))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// SHA-256 of the raw key: how a header names the key it is encrypted to.
    pub fn key_id(&self) -> [u8; 32] {
        crate::envelope::sha256(&self.0)
    }
}

/// The public agreement keys of the agencies a sender may encrypt to, by agency id.
#[derive(Debug, Clone, Default)]
pub struct RecipientKeys(BTreeMap<String, RecipientKey>);

impl RecipientKeys {
    /// No keys.
    pub fn new() -> RecipientKeys {
        RecipientKeys::default()
    }

    /// Sets `agency`'s key (replacing an earlier one).
    pub fn insert(&mut self, agency: impl Into<String>, key: RecipientKey) {
        self.0.insert(agency.into(), key);
    }

    /// The same map with `agency`'s key set.
    pub fn with(mut self, agency: impl Into<String>, key: RecipientKey) -> RecipientKeys {
        self.insert(agency, key);
        self
    }

    /// `agency`'s key, if known.
    pub fn get(&self, agency: &str) -> Option<&RecipientKey> {
        self.0.get(agency)
    }

    /// How many agencies have a key here.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no agency has a key here.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether the header says the payload is encrypted.
pub fn is_encrypted(header: &Header) -> bool {
    header.payload_encryption.is_some()
}

/// Encrypts `plaintext` to `recipient` for the message `header` describes,
/// records how in `header.payload_encryption`, and returns the ciphertext
/// (the payload to seal). The header's message id, sender, recipient and
/// service must be final: they are bound into the key and the ciphertext.
pub fn encrypt_payload(
    header: &mut Header,
    plaintext: &[u8],
    recipient: &RecipientKey,
) -> Result<Vec<u8>, ConfidentialError> {
    for (field, value) in [
        ("message_id", &header.message_id),
        ("sender", &header.sender),
        ("recipient", &header.recipient),
    ] {
        if value.is_empty() {
            return Err(ConfidentialError::Unbound(field));
        }
    }
    let rng = SystemRandom::new();
    let ephemeral = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng)
        .map_err(|_| ConfidentialError::Crypto)?;
    let ephemeral_public: [u8; KEY_LEN] = ephemeral
        .compute_public_key()
        .map_err(|_| ConfidentialError::Crypto)?
        .as_ref()
        .try_into()
        .map_err(|_| ConfidentialError::Crypto)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)
        .map_err(|_| ConfidentialError::Crypto)?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, recipient.0);
    let key = agreement::agree_ephemeral(ephemeral, &peer, |shared| {
        derive_key(shared, &ephemeral_public, &recipient.0, header)
    })
    // ring refuses a malformed or low-order recipient key (all-zero secret).
    .map_err(|_| ConfidentialError::BadKey("the recipient's public key is unusable".into()))??;
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(aad(header)),
        &mut in_out,
    )
    .map_err(|_| ConfidentialError::Crypto)?;
    header.payload_encryption = Some(PayloadEncryption {
        algorithm: ALGORITHM as i32,
        ephemeral_public_key: ephemeral_public.to_vec(),
        nonce: nonce.to_vec(),
        recipient_key_id: recipient.key_id().to_vec(),
    });
    Ok(in_out)
}

/// What the exchange can check of an encrypted payload without reading it:
/// if the header says it is encrypted, a known algorithm and well-formed
/// fields. `Ok` for a plaintext payload.
pub fn check_header(header: &Header) -> Result<(), Rejection> {
    match header.payload_encryption.as_ref() {
        None => Ok(()),
        Some(enc) => check_fields(enc).map(drop).map_err(|e| {
            let code = match e {
                ConfidentialError::UnsupportedAlgorithm(_) => ErrorCode::UnsupportedAlgorithm,
                _ => ErrorCode::InvalidField,
            };
            Rejection::new(code, e.to_string())
        }),
    }
}

fn check_fields(
    enc: &PayloadEncryption,
) -> Result<([u8; KEY_LEN], [u8; NONCE_LEN]), ConfidentialError> {
    if enc.algorithm != ALGORITHM as i32 {
        return Err(ConfidentialError::UnsupportedAlgorithm(enc.algorithm));
    }
    let ephemeral = <[u8; KEY_LEN]>::try_from(enc.ephemeral_public_key.as_slice())
        .map_err(|_| ConfidentialError::Malformed("ephemeral_public_key: 32 bytes expected"))?;
    let nonce = <[u8; NONCE_LEN]>::try_from(enc.nonce.as_slice())
        .map_err(|_| ConfidentialError::Malformed("nonce: 12 bytes expected"))?;
    if enc.recipient_key_id.len() != 32 {
        return Err(ConfidentialError::Malformed(
            "recipient_key_id: 32 bytes expected",
        ));
    }
    Ok((ephemeral, nonce))
}

/// Appends `part` with its length (u32, big-endian) in front, so that
/// concatenated parts cannot be re-split differently.
fn push_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
    out.extend_from_slice(part);
}

fn aad(header: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    for part in [
        AAD_LABEL,
        header.message_id.as_bytes(),
        header.sender.as_bytes(),
        header.recipient.as_bytes(),
    ] {
        push_part(&mut out, part);
    }
    out
}

/// The message's AES-256-GCM key: HKDF-SHA256 over the shared secret, salted
/// with both public keys, its info binding the message.
fn derive_key(
    shared: &[u8],
    ephemeral_public: &[u8; KEY_LEN],
    recipient_public: &[u8; KEY_LEN],
    header: &Header,
) -> Result<aead::LessSafeKey, ConfidentialError> {
    let mut salt = Vec::with_capacity(2 * KEY_LEN);
    salt.extend_from_slice(ephemeral_public);
    salt.extend_from_slice(recipient_public);
    let mut info = Vec::with_capacity(160);
    for part in [
        KDF_LABEL,
        header.message_id.as_bytes(),
        header.sender.as_bytes(),
        header.recipient.as_bytes(),
        header.service.as_bytes(),
    ] {
        push_part(&mut info, part);
    }
    let info = [info.as_slice()];
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(shared);
    let okm = prk
        .expand(&info, &aead::AES_256_GCM)
        .map_err(|_| ConfidentialError::Crypto)?;
    Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            message_id: "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b".into(),
            sender: "UZ-CONSUMER".into(),
            recipient: "UZ-PROVIDER".into(),
            service: "UZ-SVC-0001".into(),
            ..Default::default()
        }
    }

    const SECRET: &[u8] = b"PINFL 31234567890123; Karimov Aziz; born 1990-04-12";

    #[test]
    fn round_trip() {
        let key = AgreementKey::generate().unwrap();
        let mut h = header();
        let ct = encrypt_payload(&mut h, SECRET, &key.public_key()).unwrap();
        assert_eq!(ct.len(), SECRET.len() + 16);
        assert!(!ct.windows(SECRET.len()).any(|w| w == SECRET));
        assert!(is_encrypted(&h));
        check_header(&h).unwrap();
        assert_eq!(key.open(&h, &ct).unwrap(), SECRET);
        // Each message has its own ephemeral key and nonce.
        let mut h2 = header();
        let ct2 = encrypt_payload(&mut h2, SECRET, &key.public_key()).unwrap();
        assert_ne!(ct, ct2);
        assert_ne!(h.payload_encryption, h2.payload_encryption);
        // An empty payload round-trips too.
        let mut h3 = header();
        let ct3 = encrypt_payload(&mut h3, b"", &key.public_key()).unwrap();
        assert_eq!(key.open(&h3, &ct3).unwrap(), b"");
    }

    #[test]
    fn wrong_key_does_not_open() {
        let key = AgreementKey::generate().unwrap();
        let other = AgreementKey::generate().unwrap();
        let mut h = header();
        let ct = encrypt_payload(&mut h, SECRET, &key.public_key()).unwrap();
        assert_eq!(other.open(&h, &ct), Err(ConfidentialError::OtherKey));
        // With the key id forged to name the other key, AES-GCM still refuses.
        let mut forged = h.clone();
        forged.payload_encryption.as_mut().unwrap().recipient_key_id =
            other.public_key().key_id().to_vec();
        assert_eq!(other.open(&forged, &ct), Err(ConfidentialError::Decrypt));
    }

    #[test]
    fn changed_ciphertext_or_fields_do_not_open() {
        let key = AgreementKey::generate().unwrap();
        let mut h = header();
        let ct = encrypt_payload(&mut h, SECRET, &key.public_key()).unwrap();
        for i in [0, ct.len() / 2, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert_eq!(key.open(&h, &bad), Err(ConfidentialError::Decrypt));
        }
        let mut bad = h.clone();
        bad.payload_encryption.as_mut().unwrap().nonce[0] ^= 1;
        assert_eq!(key.open(&bad, &ct), Err(ConfidentialError::Decrypt));
        let mut bad = h.clone();
        bad.payload_encryption
            .as_mut()
            .unwrap()
            .ephemeral_public_key[0] ^= 1;
        assert!(key.open(&bad, &ct).is_err());
        assert_eq!(
            key.open(&header(), &ct),
            Err(ConfidentialError::NotEncrypted)
        );
    }

    #[test]
    fn bound_to_the_message_id_sender_recipient_and_service() {
        let key = AgreementKey::generate().unwrap();
        let mut h = header();
        let ct = encrypt_payload(&mut h, SECRET, &key.public_key()).unwrap();
        let moved: [fn(&mut Header); 4] = [
            |h| h.message_id = "0190a1b2-c3d4-7e5f-8a6b-000000000000".into(),
            |h| h.sender = "UZ-OTHER".into(),
            |h| h.recipient = "UZ-PROVIDER2".into(),
            |h| h.service = "UZ-SVC-0002".into(),
        ];
        for change in moved {
            let mut other = h.clone();
            change(&mut other);
            assert_eq!(key.open(&other, &ct), Err(ConfidentialError::Decrypt));
        }
        // Length prefixes: moving a character between adjacent fields changes the binding.
        let mut shifted = h.clone();
        shifted.sender = "UZ-CONSUMERU".into();
        shifted.recipient = "Z-PROVIDER".into();
        assert_eq!(key.open(&shifted, &ct), Err(ConfidentialError::Decrypt));
    }

    #[test]
    fn header_fields_are_checked() {
        let key = AgreementKey::generate().unwrap();
        let mut h = header();
        encrypt_payload(&mut h, SECRET, &key.public_key()).unwrap();
        let mut bad = h.clone();
        bad.payload_encryption.as_mut().unwrap().algorithm = 7;
        assert_eq!(
            check_header(&bad).unwrap_err().code,
            ErrorCode::UnsupportedAlgorithm
        );
        let mut bad = h.clone();
        bad.payload_encryption.as_mut().unwrap().nonce.pop();
        assert_eq!(
            check_header(&bad).unwrap_err().code,
            ErrorCode::InvalidField
        );
        let mut bad = h;
        bad.payload_encryption
            .as_mut()
            .unwrap()
            .ephemeral_public_key = vec![];
        assert_eq!(
            check_header(&bad).unwrap_err().code,
            ErrorCode::InvalidField
        );
        check_header(&header()).unwrap();
        let mut unbound = header();
        unbound.message_id.clear();
        assert_eq!(
            encrypt_payload(&mut unbound, SECRET, &key.public_key()),
            Err(ConfidentialError::Unbound("message_id"))
        );
    }

    #[test]
    fn low_order_keys_are_refused() {
        // The all-zero point has order 1: ring refuses to agree with it.
        let mut h = header();
        assert!(matches!(
            encrypt_payload(&mut h, SECRET, &RecipientKey::from_bytes([0; 32])),
            Err(ConfidentialError::BadKey(_))
        ));
        // And the recipient refuses a low-order ephemeral key.
        let key = AgreementKey::generate().unwrap();
        let mut h = header();
        let ct = encrypt_payload(&mut h, SECRET, &key.public_key()).unwrap();
        h.payload_encryption.as_mut().unwrap().ephemeral_public_key = vec![0; 32];
        assert!(matches!(
            key.open(&h, &ct),
            Err(ConfidentialError::BadKey(_))
        ));
    }

    #[test]
    fn keys_round_trip_through_pem() {
        let key = AgreementKey::generate().unwrap();
        let again = AgreementKey::from_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let public = RecipientKey::from_pem(&key.public_key().to_pem()).unwrap();
        assert_eq!(public, key.public_key());
        assert!(RecipientKey::from_pem(&key.to_pkcs8_pem()).is_err());
        assert!(AgreementKey::from_pem(&public.to_pem()).is_err());
        assert!(!format!("{key:?}").contains(&crate::envelope::hex(key.secret.as_bytes())));
    }

    /// A key pair made by `openssl genpkey -algorithm X25519` and `openssl pkey -pubout`.
    #[test]
    fn reads_openssl_keys() {
        let key = AgreementKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\n\
             MC4CAQAwBQYDK2VuBCIEIHg3qd64sgUhVvOCrwejK200FFiBsEv1ASv54tiO4hhR\n\
             -----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let public = RecipientKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\n\
             MCowBQYDK2VuAyEAdY3soF7eRbXN2evXHg+zLCHzMQisqEsNynmLgiiwD3Q=\n\
             -----END PUBLIC KEY-----\n",
        )
        .unwrap();
        assert_eq!(key.public_key(), public);
    }

    /// RFC 7748 §6.1: Alice's private key, Bob's public key, their shared
    /// secret; ring's side of the agreement matches dalek's (checked by
    /// decrypting what ring's ephemeral side encrypted, in `round_trip`).
    #[test]
    fn rfc7748_vector() {
        let hex = |s: &str| -> [u8; 32] {
            let mut out = [0u8; 32];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
            }
            out
        };
        let alice = AgreementKey::from_bytes(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            alice.public_key().as_bytes(),
            &hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let bob = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = alice
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(bob));
        assert_eq!(
            shared.as_bytes(),
            &hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        );
    }
}
