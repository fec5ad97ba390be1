//! Stage 4: the register allows it — the service exists and is active, the
//! recipient provides it, the sender may ask for it (UZ annex 2 §21), the
//! payload matches its schema — and it carries no classified material
//! (UZ annex 2 §19). Replies and status updates are authorized against the
//! open request when recorded.
//!
//! An encrypted payload (`header.payload_encryption`, see
//! `mev_proto::confidential`) cannot be read by the broker, so it is not
//! checked against the service's schema: every other register check runs,
//! and the header must still name the service's request schema, but the
//! contents are the provider's to check once decrypted. Its digest and the
//! signature over the header that binds it were checked by the earlier
//! stages like any other. Only requests may carry one (for now): an
//! encrypted reply or status update is refused.

use super::decode::Refused;
use super::Context;
use mev_proto::envelope::Opened;
use mev_proto::pb::{Classification, Kind};
use mev_proto::{ErrorCode, Rejection};

pub fn run(ctx: &Context, opened: &Opened) -> Result<(), Box<Refused>> {
    let refuse = |r: Rejection| Box::new(Refused::of(opened, r));
    let h = &opened.header;
    // UZ annex 2 §19, KZ order §2: no state secrets or other protected secrets.
    match Classification::try_from(h.classification) {
        Ok(Classification::Secret) | Ok(Classification::TopSecret) => {
            return Err(refuse(Rejection::new(
                ErrorCode::ClassifiedMaterial,
                "header.classification: classified material may not be sent through the exchange (UZ annex 2 §19)",
            )))
        }
        _ => {}
    }
    for (field, id) in [
        ("header.sender", &h.sender),
        ("header.recipient", &h.recipient),
    ] {
        if ctx.register.agency(id).is_none() {
            return Err(refuse(Rejection::new(
                ErrorCode::UnknownAgency,
                format!("{field}: {id:?} is not a registered agency"),
            )));
        }
    }
    let encrypted = mev_proto::confidential::is_encrypted(h);
    if encrypted {
        if !matches!(opened.kind(), Kind::Request | Kind::Reply) {
            return Err(refuse(Rejection::new(
                ErrorCode::InvalidField,
                "header.payload_encryption: only a request's or a reply's payload may be encrypted",
            )));
        }
        mev_proto::confidential::check_header(h).map_err(refuse)?;
    }
    if opened.kind() == Kind::Request {
        // An encrypted payload is checked as an empty one: the schema's name
        // is checked, its contents cannot be (the broker cannot read them).
        let payload: &[u8] = if encrypted {
            &[]
        } else {
            &opened.envelope.payload
        };
        let service = ctx.register.authorize_request(h, payload).map_err(refuse)?;
        // The documents requested are ones the service provides through the
        // exchange (UZ annex 1, appendix 2, column 10; RU 963 §6).
        for (i, doc) in h.documents.iter().enumerate() {
            if service.document(&doc.code).is_none() {
                return Err(refuse(Rejection::new(
                    ErrorCode::InvalidField,
                    format!(
                        "header.documents[{i}].code: {:?} is not a document of service {}",
                        doc.code, service.number
                    ),
                )));
            }
        }
    }
    Ok(())
}
