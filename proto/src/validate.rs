//! Validation of decoded messages: the mandatory contents of a request
//! (UZ annex 2 §14), the reply rules (Tatarstan §3.9–3.13, UZ annex 2 §18),
//! and size limits on repeated fields. Every error names the exact field.

use crate::error::{ErrorCode, Rejection};
use crate::limits::Limits;
use crate::pb::{reply_outcome::Outcome, Classification, Header, Kind, Signature};

fn missing(field: &str, why: &str) -> Rejection {
    Rejection::new(ErrorCode::MissingField, format!("{field}: missing; {why}"))
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Rejection {
    Rejection::new(ErrorCode::InvalidField, format!("{field}: {why}"))
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn check_uuid(field: &str, value: &str) -> Result<(), Rejection> {
    if blank(value) {
        return Err(missing(field, "a message id (UUID) is required"));
    }
    uuid::Uuid::parse_str(value)
        .map(|_| ())
        .map_err(|e| invalid(field, format_args!("not a UUID ({e})")))
}

/// Rejects headers whose repeated fields are larger than `limits` allow.
pub(crate) fn check_repeated_limits(
    header: &Header,
    signature: Option<&Signature>,
    limits: &Limits,
) -> Result<(), Rejection> {
    let too_many = |field: &str, n: usize| {
        Rejection::new(
            ErrorCode::TooManyItems,
            format!("{field}: {n} items; the limit is {}", limits.max_repeated),
        )
    };
    if header.documents.len() > limits.max_repeated {
        return Err(too_many("header.documents", header.documents.len()));
    }
    let reply_list = match header.reply.as_ref().and_then(|r| r.outcome.as_ref()) {
        Some(Outcome::InsufficientData(d)) => {
            Some(("header.reply.insufficient_data.missing", d.missing.len()))
        }
        Some(Outcome::Refusal(r)) => {
            Some(("header.reply.refusal.refused_codes", r.refused_codes.len()))
        }
        Some(Outcome::Documents(d)) => Some(("header.reply.documents.provided", d.provided.len())),
        _ => None,
    };
    if let Some((field, n)) = reply_list {
        if n > limits.max_repeated {
            return Err(too_many(field, n));
        }
    }
    if let Some(sig) = signature {
        if sig.certificate_chain.len() > 8 {
            return Err(Rejection::new(
                ErrorCode::TooManyItems,
                format!(
                    "signature.certificate_chain: {} certificates; the limit is 8",
                    sig.certificate_chain.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Validates a header by its kind. The envelope's signature presence is
/// checked when verifying; this checks what the header itself must say.
pub fn validate(header: &Header) -> Result<(), Rejection> {
    check_uuid("header.message_id", &header.message_id)?;
    if blank(&header.sender) {
        return Err(missing(
            "header.sender",
            "the sending agency is required (UZ annex 2 §14 item 1)",
        ));
    }
    if blank(&header.recipient) {
        return Err(missing(
            "header.recipient",
            "the receiving agency is required (UZ annex 2 §14 item 2)",
        ));
    }
    if header.sender == header.recipient {
        return Err(invalid(
            "header.recipient",
            "an agency may not send to itself",
        ));
    }
    match header.sent_at.as_ref() {
        None => {
            return Err(missing(
                "header.sent_at",
                "the date the message was sent is required (UZ annex 2 §14 item 6)",
            ))
        }
        Some(t) if crate::time::from_wire(t).is_none() => {
            return Err(invalid("header.sent_at", "not a valid time"))
        }
        Some(_) => {}
    }
    if header.classification == Classification::Unspecified as i32 {
        return Err(missing(
            "header.classification",
            "a classification marking is required (UZ annex 2 §19)",
        ));
    }
    if Classification::try_from(header.classification).is_err() {
        return Err(invalid("header.classification", "unknown marking"));
    }
    match Kind::try_from(header.kind) {
        Ok(Kind::Request) => validate_request(header),
        Ok(Kind::Reply) => validate_reply(header),
        Ok(Kind::Status) => validate_status(header),
        Ok(Kind::Receipt) | Ok(Kind::Notice) => Ok(()),
        Ok(Kind::Unspecified) => Err(missing("header.kind", "the message kind is required")),
        Err(_) => Err(invalid(
            "header.kind",
            format_args!("unknown kind {}", header.kind),
        )),
    }
}

fn validate_official(header: &Header) -> Result<(), Rejection> {
    let why = "the official who prepared and sent it is required (UZ annex 2 §14 item 7)";
    let official = header
        .official
        .as_ref()
        .ok_or_else(|| missing("header.official", why))?;
    if blank(&official.full_name) {
        return Err(missing("header.official.full_name", why));
    }
    if blank(&official.position) {
        return Err(missing("header.official.position", why));
    }
    Ok(())
}

/// The mandatory contents of a request, UZ annex 2 §14 items 1–7.
fn validate_request(header: &Header) -> Result<(), Rejection> {
    if blank(&header.service) {
        return Err(missing(
            "header.service",
            "the service's unique registry number is required (UZ annex 2 §14 item 3)",
        ));
    }
    let why = "the applicant with identification data is required (UZ annex 2 §14 item 4)";
    let applicant = header
        .applicant
        .as_ref()
        .ok_or_else(|| missing("header.applicant", why))?;
    if blank(&applicant.id_number) {
        return Err(missing("header.applicant.id_number", why));
    }
    if blank(&applicant.full_name) {
        return Err(missing("header.applicant.full_name", why));
    }
    let why = "the applicant's own application must be attached (UZ annex 2 §14 item 4)";
    let application = applicant
        .application
        .as_ref()
        .ok_or_else(|| missing("header.applicant.application", why))?;
    if application.content.is_empty() {
        return Err(missing("header.applicant.application.content", why));
    }
    if header.documents.is_empty() {
        return Err(missing(
            "header.documents",
            "the list of documents and data requested is required (UZ annex 2 §14 item 5)",
        ));
    }
    for (i, doc) in header.documents.iter().enumerate() {
        if blank(&doc.code) {
            return Err(missing(
                &format!("header.documents[{i}].code"),
                "each requested document needs its code (UZ annex 2 §14 item 5)",
            ));
        }
    }
    validate_official(header)?;
    if blank(&header.payload_schema) {
        return Err(missing(
            "header.payload_schema",
            "the payload's schema is required to check it against the register",
        ));
    }
    if !header.in_reply_to.is_empty() {
        return Err(invalid(
            "header.in_reply_to",
            "a request does not answer another message",
        ));
    }
    if header.reply.is_some() {
        return Err(invalid(
            "header.reply",
            "a request carries no reply outcome",
        ));
    }
    if let Some(t) = header.application_received_at.as_ref() {
        if crate::time::from_wire(t).is_none() {
            return Err(invalid(
                "header.application_received_at",
                "not a valid time",
            ));
        }
    }
    Ok(())
}

/// A reply names the request it answers and says which of the four kinds it
/// is (Tatarstan §3.9–3.13); a refusal cites the legal act (UZ annex 2 §18, §20).
fn validate_reply(header: &Header) -> Result<(), Rejection> {
    check_uuid("header.in_reply_to", &header.in_reply_to)?;
    validate_official(header)?;
    let outcome = header
        .reply
        .as_ref()
        .and_then(|r| r.outcome.as_ref())
        .ok_or_else(|| {
            missing(
                "header.reply",
                "a reply carries documents, a refusal, not-held or insufficient-data",
            )
        })?;
    match outcome {
        Outcome::Documents(_) => {
            if blank(&header.payload_schema) {
                return Err(missing(
                    "header.payload_schema",
                    "a reply with documents names its payload schema",
                ));
            }
        }
        Outcome::Refusal(r) => {
            if blank(&r.legal_act) {
                return Err(missing(
                    "header.reply.refusal.legal_act",
                    "a refusal cites the legal act (Tatarstan §3.11, UZ annex 2 §18)",
                ));
            }
            if blank(&r.reason) {
                return Err(missing(
                    "header.reply.refusal.reason",
                    "a refusal is motivated (UZ annex 2 §18)",
                ));
            }
            if r.partial && r.refused_codes.is_empty() {
                return Err(missing(
                    "header.reply.refusal.refused_codes",
                    "a partial refusal names the refused documents",
                ));
            }
        }
        Outcome::NotHeld(n) => {
            if blank(&n.reason) {
                return Err(missing(
                    "header.reply.not_held.reason",
                    "why the document is not held (Tatarstan §3.12)",
                ));
            }
        }
        Outcome::InsufficientData(d) => {
            if d.missing.is_empty() || d.missing.iter().any(|m| blank(m)) {
                return Err(missing(
                    "header.reply.insufficient_data.missing",
                    "what exact information is missing (Tatarstan §3.13)",
                ));
            }
        }
    }
    Ok(())
}

/// A status update about an application (KZ order §5.1, §8).
fn validate_status(header: &Header) -> Result<(), Rejection> {
    validate_official(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::*;

    pub(crate) fn good_request() -> Header {
        Header {
            message_id: uuid::Uuid::new_v4().to_string(),
            kind: Kind::Request as i32,
            sender: "UZ-MFC".into(),
            recipient: "UZ-GNK".into(),
            service: "UZ-00125".into(),
            sent_at: Some(crate::time::to_wire(chrono::Utc::now())),
            official: Some(Official {
                full_name: "Karimova Dilnoza".into(),
                position: "Chief specialist".into(),
                id: String::new(),
            }),
            applicant: Some(Applicant {
                id_number: "31203851234567".into(),
                id_kind: "PINFL".into(),
                full_name: "Aliyev Bobur".into(),
                birth_date: "1985-03-12".into(),
                application: Some(Attachment {
                    name: "application.pdf".into(),
                    media_type: "application/pdf".into(),
                    content: b"%PDF-1.7".to_vec(),
                }),
            }),
            documents: vec![RequestedDocument {
                code: "TAX-DEBT".into(),
                title: "Tax debt certificate".into(),
            }],
            payload_schema: "mev.payloads.v1.TaxDebtRequest".into(),
            classification: Classification::PersonalData as i32,
            ..Default::default()
        }
    }

    fn good_reply(outcome: reply_outcome::Outcome) -> Header {
        Header {
            message_id: uuid::Uuid::new_v4().to_string(),
            kind: Kind::Reply as i32,
            in_reply_to: uuid::Uuid::new_v4().to_string(),
            sender: "UZ-GNK".into(),
            recipient: "UZ-MFC".into(),
            service: "UZ-00125".into(),
            sent_at: Some(crate::time::to_wire(chrono::Utc::now())),
            official: Some(Official {
                full_name: "Tursunov Akmal".into(),
                position: "Inspector".into(),
                id: String::new(),
            }),
            payload_schema: "mev.payloads.v1.TaxDebtReply".into(),
            classification: Classification::PersonalData as i32,
            reply: Some(ReplyOutcome {
                outcome: Some(outcome),
            }),
            ..Default::default()
        }
    }

    fn field_of(r: Rejection) -> String {
        r.reason.split(':').next().unwrap_or_default().to_string()
    }

    #[test]
    fn a_complete_request_passes() {
        validate(&good_request()).unwrap();
    }

    /// UZ annex 2 §14: each mandatory item, removed, is named in the error.
    #[test]
    fn each_missing_section_14_field_is_named() {
        type Strip = fn(&mut Header);
        let cases: &[(&str, Strip)] = &[
            ("header.message_id", |h| h.message_id.clear()),
            ("header.sender", |h| h.sender.clear()),
            ("header.recipient", |h| h.recipient.clear()),
            ("header.service", |h| h.service.clear()),
            ("header.sent_at", |h| h.sent_at = None),
            ("header.applicant", |h| h.applicant = None),
            ("header.applicant.id_number", |h| {
                h.applicant.as_mut().unwrap().id_number.clear()
            }),
            ("header.applicant.full_name", |h| {
                h.applicant.as_mut().unwrap().full_name.clear()
            }),
            ("header.applicant.application", |h| {
                h.applicant.as_mut().unwrap().application = None
            }),
            ("header.applicant.application.content", |h| {
                h.applicant
                    .as_mut()
                    .unwrap()
                    .application
                    .as_mut()
                    .unwrap()
                    .content
                    .clear()
            }),
            ("header.documents", |h| h.documents.clear()),
            ("header.documents[0].code", |h| h.documents[0].code.clear()),
            ("header.official", |h| h.official = None),
            ("header.official.full_name", |h| {
                h.official.as_mut().unwrap().full_name.clear()
            }),
            ("header.official.position", |h| {
                h.official.as_mut().unwrap().position.clear()
            }),
            ("header.payload_schema", |h| h.payload_schema.clear()),
            ("header.classification", |h| h.classification = 0),
        ];
        for (field, strip) in cases {
            let mut h = good_request();
            strip(&mut h);
            let err = validate(&h).expect_err(field);
            assert_eq!(err.code, ErrorCode::MissingField, "{field}: {err}");
            assert_eq!(field_of(err), *field);
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut h = good_request();
        h.message_id = "not-a-uuid".into();
        let err = validate(&h).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert_eq!(field_of(err), "header.message_id");

        let mut h = good_request();
        h.recipient = h.sender.clone();
        assert_eq!(field_of(validate(&h).unwrap_err()), "header.recipient");

        let mut h = good_request();
        h.kind = 77;
        assert_eq!(field_of(validate(&h).unwrap_err()), "header.kind");
    }

    #[test]
    fn reply_rules() {
        use reply_outcome::Outcome as O;
        validate(&good_reply(O::Documents(Documents::default()))).unwrap();
        validate(&good_reply(O::NotHeld(NotHeld {
            reason: "no record".into(),
            possible_holder: "UZ-ARCHIVE".into(),
        })))
        .unwrap();
        let cases = [
            (
                O::Refusal(Refusal {
                    partial: false,
                    legal_act: String::new(),
                    reason: "x".into(),
                    refused_codes: vec![],
                }),
                "header.reply.refusal.legal_act",
            ),
            (
                O::Refusal(Refusal {
                    partial: true,
                    legal_act: "Law 123".into(),
                    reason: "x".into(),
                    refused_codes: vec![],
                }),
                "header.reply.refusal.refused_codes",
            ),
            (
                O::NotHeld(NotHeld::default()),
                "header.reply.not_held.reason",
            ),
            (
                O::InsufficientData(InsufficientData { missing: vec![] }),
                "header.reply.insufficient_data.missing",
            ),
        ];
        for (outcome, field) in cases {
            let err = validate(&good_reply(outcome)).unwrap_err();
            assert_eq!(field_of(err), field);
        }
        let mut h = good_reply(O::Documents(Documents::default()));
        h.reply = None;
        assert_eq!(field_of(validate(&h).unwrap_err()), "header.reply");
        let mut h = good_reply(O::Documents(Documents::default()));
        h.in_reply_to.clear();
        assert_eq!(field_of(validate(&h).unwrap_err()), "header.in_reply_to");
    }

    #[test]
    fn repeated_limits() {
        let mut h = good_request();
        h.documents = vec![h.documents[0].clone(); 300];
        let err = check_repeated_limits(&h, None, &Limits::default()).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooManyItems);
    }
}
