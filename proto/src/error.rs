//! Stable error codes carried in receipts.
//!
//! A code, once published, never changes meaning: add new variants with new
//! numbers, never renumber or reuse one. Ranges: 1xx format and §14 contents,
//! 2xx signatures and certificates, 3xx the register, 4xx exchange state,
//! 5xx the exchange itself.

use std::fmt;

/// A stable numeric outcome code, as carried in `ReceiptEntry.code`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Accepted.
    Ok = 0,
    /// The bytes are not a decodable envelope.
    Malformed = 100,
    /// The envelope decodes but its header does not.
    MalformedHeader = 101,
    /// The payload's SHA-256 differs from the one in the signed header.
    PayloadDigestMismatch = 102,
    /// A mandatory field is missing (UZ annex 2 §14, reply rules).
    MissingField = 110,
    /// A field is present but invalid.
    InvalidField = 111,
    /// A message id or `in_reply_to` that is not a canonical lowercase UUID
    /// (version 4 or 7, hyphenated, no braces): ids are compared as UUIDs.
    NonCanonicalId = 112,
    /// A header field only the exchange may set (`replay`) came from an agency.
    ReservedField = 113,
    /// The message exceeds the maximum size.
    TooLarge = 120,
    /// A repeated field has more items than allowed.
    TooManyItems = 121,
    /// The sending time is too far in the past or the future.
    StaleTimestamp = 122,
    /// The signature does not verify.
    BadSignature = 200,
    /// The signature algorithm is not supported.
    UnsupportedAlgorithm = 201,
    /// The certificate does not chain to a trusted CA.
    UntrustedCertificate = 202,
    /// The certificate has expired.
    CertificateExpired = 203,
    /// The certificate is not yet valid.
    CertificateNotYetValid = 204,
    /// The certificate is on a loaded CRL.
    CertificateRevoked = 205,
    /// The certificate is bound to another agency than the sender.
    CertificateAgencyMismatch = 206,
    /// The certificate does not allow digital signatures, or is otherwise unusable.
    CertificateUsage = 207,
    /// No certificate was supplied.
    MissingCertificate = 208,
    /// The signer is not a currently authorised official of the sending
    /// agency in the register (UZ annex 2 §13, §14 item 7; KZ §11).
    OfficialNotAuthorised = 209,
    /// `header.official` names another official than the one who signed.
    OfficialMismatch = 210,
    /// The sender is not the agency of the RabbitMQ account that published
    /// the message (AMQP `user_id`).
    SenderNotAccount = 211,
    /// No service with that registry number.
    UnknownService = 300,
    /// The service is abolished (UZ annex 1 §16).
    ServiceAbolished = 301,
    /// The recipient is not the provider of the service.
    WrongRecipient = 302,
    /// The sender may not ask for this service (UZ annex 2 §21).
    SenderNotAllowed = 303,
    /// The payload does not match the service's schema.
    SchemaMismatch = 304,
    /// The sender or recipient is not a registered agency.
    UnknownAgency = 305,
    /// Classified material may not travel through the exchange (UZ annex 2 §19).
    ClassifiedMaterial = 310,
    /// `header.deadline_policy` names another policy than the one approved
    /// for this interaction (Tatarstan §2.7).
    DeadlinePolicyNotApproved = 311,
    /// The reply deadline cannot be computed: no working-day calendar of the
    /// provider's jurisdiction covers the date (the register must be updated).
    NoCalendar = 312,
    /// The same message id was seen with different contents.
    DuplicateConflict = 400,
    /// A reply to a request the exchange does not know or has closed.
    UnknownRequest = 401,
    /// A reply from an agency that was not asked.
    ReplyFromWrongAgency = 402,
    /// A copy of a message already accepted: acknowledged again, not forwarded again.
    Duplicate = 404,
    /// The sender exceeded its rate limit.
    RateLimited = 410,
    /// The message kind may not be sent by an agency.
    KindNotAllowed = 420,
    /// The publishing RabbitMQ account is not mapped to an agency and the
    /// message bears no verifiable signature: nobody to answer (journal only).
    Unattributed = 430,
    /// The exchange failed internally; the message may be resent.
    Internal = 500,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::Ok,
        ErrorCode::Malformed,
        ErrorCode::MalformedHeader,
        ErrorCode::PayloadDigestMismatch,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::NonCanonicalId,
        ErrorCode::ReservedField,
        ErrorCode::TooLarge,
        ErrorCode::TooManyItems,
        ErrorCode::StaleTimestamp,
        ErrorCode::BadSignature,
        ErrorCode::UnsupportedAlgorithm,
        ErrorCode::UntrustedCertificate,
        ErrorCode::CertificateExpired,
        ErrorCode::CertificateNotYetValid,
        ErrorCode::CertificateRevoked,
        ErrorCode::CertificateAgencyMismatch,
        ErrorCode::CertificateUsage,
        ErrorCode::MissingCertificate,
        ErrorCode::OfficialNotAuthorised,
        ErrorCode::OfficialMismatch,
        ErrorCode::SenderNotAccount,
        ErrorCode::UnknownService,
        ErrorCode::ServiceAbolished,
        ErrorCode::WrongRecipient,
        ErrorCode::SenderNotAllowed,
        ErrorCode::SchemaMismatch,
        ErrorCode::UnknownAgency,
        ErrorCode::ClassifiedMaterial,
        ErrorCode::DeadlinePolicyNotApproved,
        ErrorCode::NoCalendar,
        ErrorCode::DuplicateConflict,
        ErrorCode::UnknownRequest,
        ErrorCode::ReplyFromWrongAgency,
        ErrorCode::Duplicate,
        ErrorCode::RateLimited,
        ErrorCode::KindNotAllowed,
        ErrorCode::Unattributed,
        ErrorCode::Internal,
    ];

    /// The number on the wire.
    pub fn as_code(self) -> u32 {
        self as u32
    }

    /// The code for a number, if it is one we know.
    pub fn from_code(code: u32) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.as_code() == code)
    }

    /// A short stable name, for logs, metrics and reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Ok => "ok",
            ErrorCode::Malformed => "malformed",
            ErrorCode::MalformedHeader => "malformed_header",
            ErrorCode::PayloadDigestMismatch => "payload_digest_mismatch",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::NonCanonicalId => "non_canonical_id",
            ErrorCode::ReservedField => "reserved_field",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::TooManyItems => "too_many_items",
            ErrorCode::StaleTimestamp => "stale_timestamp",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::UnsupportedAlgorithm => "unsupported_algorithm",
            ErrorCode::UntrustedCertificate => "untrusted_certificate",
            ErrorCode::CertificateExpired => "certificate_expired",
            ErrorCode::CertificateNotYetValid => "certificate_not_yet_valid",
            ErrorCode::CertificateRevoked => "certificate_revoked",
            ErrorCode::CertificateAgencyMismatch => "certificate_agency_mismatch",
            ErrorCode::CertificateUsage => "certificate_usage",
            ErrorCode::MissingCertificate => "missing_certificate",
            ErrorCode::OfficialNotAuthorised => "official_not_authorised",
            ErrorCode::OfficialMismatch => "official_mismatch",
            ErrorCode::SenderNotAccount => "sender_not_account",
            ErrorCode::UnknownService => "unknown_service",
            ErrorCode::ServiceAbolished => "service_abolished",
            ErrorCode::WrongRecipient => "wrong_recipient",
            ErrorCode::SenderNotAllowed => "sender_not_allowed",
            ErrorCode::SchemaMismatch => "schema_mismatch",
            ErrorCode::UnknownAgency => "unknown_agency",
            ErrorCode::ClassifiedMaterial => "classified_material",
            ErrorCode::DeadlinePolicyNotApproved => "deadline_policy_not_approved",
            ErrorCode::NoCalendar => "no_calendar",
            ErrorCode::DuplicateConflict => "duplicate_conflict",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::ReplyFromWrongAgency => "reply_from_wrong_agency",
            ErrorCode::Duplicate => "duplicate",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::KindNotAllowed => "kind_not_allowed",
            ErrorCode::Unattributed => "unattributed",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_code(), self.name())
    }
}

/// A refusal: a stable code and a human-readable reason naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Rejection {
    pub code: ErrorCode,
    pub reason: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Rejection {
            code,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_code()), "{code} twice");
            assert_eq!(ErrorCode::from_code(code.as_code()), Some(*code));
        }
        assert_eq!(ErrorCode::from_code(9999), None);
    }

    #[test]
    fn published_numbers_never_change() {
        // Pinned: these numbers are on the wire and in auditors' archives.
        assert_eq!(ErrorCode::Malformed.as_code(), 100);
        assert_eq!(ErrorCode::MissingField.as_code(), 110);
        assert_eq!(ErrorCode::BadSignature.as_code(), 200);
        assert_eq!(ErrorCode::CertificateRevoked.as_code(), 205);
        assert_eq!(ErrorCode::UnknownService.as_code(), 300);
        assert_eq!(ErrorCode::ClassifiedMaterial.as_code(), 310);
        assert_eq!(ErrorCode::DuplicateConflict.as_code(), 400);
        assert_eq!(ErrorCode::Internal.as_code(), 500);
    }
}
