//! The corpus: lengths, repeated fields, UTF-8, sizes, unknown fields, certificates.

use super::*;

#[tokio::test]
pub(crate) async fn wrong_lengths_are_refused_and_nothing_is_forwarded() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let good = c.sealed();
    let env = Envelope::decode(good.as_slice()).unwrap();
    let header_field = len_field(1, &env.header);
    let payload_field = len_field(2, &env.payload);
    assert!(good.starts_with(&cat(&[&header_field, &payload_field])));

    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "truncated inside the header field",
            good[..header_field.len() / 2].to_vec(),
            ErrorCode::Malformed,
        ),
        (
            "truncated inside the signature",
            good[..good.len() - 7].to_vec(),
            ErrorCode::Malformed,
        ),
        (
            "a header length 1 MiB past the end",
            cat(&[&[0x0a], &varint(1 << 20), &env.header[..64]]),
            ErrorCode::Malformed,
        ),
        (
            "a header length of 2^64-1",
            cat(&[&[0x0a], &[0xff; 9], &[0x01], b"abc"]),
            ErrorCode::Malformed,
        ),
        (
            "a varint of 11 bytes",
            cat(&[&[0x0a], &[0x80; 10], &[0x00], b"abc"]),
            ErrorCode::Malformed,
        ),
        (
            "a payload length past the end",
            cat(&[
                &header_field,
                &[0x12],
                &varint(env.payload.len() as u64 + 1000),
                &env.payload,
            ]),
            ErrorCode::Malformed,
        ),
        (
            "unknown groups nested 200 deep",
            cat(&[&key(15, 3).repeat(200), &key(15, 4).repeat(200)]),
            ErrorCode::Malformed,
        ),
        (
            "a wire type that does not exist",
            cat(&[&header_field, &key(9, 7), b"xyz"]),
            ErrorCode::Malformed,
        ),
        // The envelope decodes, the header does not: nothing names a sender.
        (
            "the signed header cut 3 bytes short",
            {
                let h = header_bytes_with(c.header(), &c.payload(), &[]);
                sign_bytes(&c.consumer, h[..h.len() - 3].to_vec(), c.payload())
            },
            ErrorCode::MalformedHeader,
        ),
        (
            "an applicant whose name runs past the applicant's end",
            {
                let inner = cat(&[&key(3, 2), &varint(200), b"Aliyev"]);
                let h = header_bytes_with(c.header(), &c.payload(), &len_field(9, &inner));
                sign_bytes(&c.consumer, h, c.payload())
            },
            ErrorCode::MalformedHeader,
        ),
        // Zero bytes decode as an empty envelope whose (empty) header claims
        // no payload digest: refused at the digest, attributable to no one.
        ("zero bytes", Vec::new(), ErrorCode::PayloadDigestMismatch),
    ];
    for (name, bytes, code) in cases {
        c.case(name, bytes, Expect::Garbage(code)).await;
    }
    // Cut exactly before the signature: a whole header naming its sender,
    // and no signature.
    let unsigned = cat(&[&header_field, &payload_field]);
    let consumer = c.cast.consumer.clone();
    c.case(
        "cut exactly before the signature",
        unsigned,
        Expect::Refused(ErrorCode::MissingField, consumer.clone()),
    )
    .await;
    // A payload one byte short of what the signed header's digest says (a
    // new message: the adapter surfaces one receipt per digest).
    let mut other = Envelope::decode(c.sealed().as_slice()).unwrap();
    other.payload.pop();
    let short = other.encode_to_vec();
    c.case(
        "the payload cut one byte short",
        short,
        Expect::Refused(ErrorCode::PayloadDigestMismatch, consumer),
    )
    .await;
    c.finish().await;
}

#[tokio::test]
pub(crate) async fn huge_repeated_fields_are_refused_with_too_many_items() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let max = Limits::default().max_repeated;
    let consumer = c.cast.consumer.clone();

    let mut h = c.header();
    h.documents = vec![h.documents[0].clone(); max + 1];
    let bytes = Exchange::seal_as(&c.consumer, h, c.payload());
    c.case(
        "one document more than the limit",
        bytes,
        Expect::Refused(ErrorCode::TooManyItems, consumer.clone()),
    )
    .await;

    // A million empty documents: 2 MB on the wire, under the size limit.
    let h = header_bytes_with(c.header(), &c.payload(), &[0x52, 0x00].repeat(1_000_000));
    let bytes = sign_bytes(&c.consumer, h, c.payload());
    c.case(
        "a million documents",
        bytes,
        Expect::Refused(ErrorCode::TooManyItems, consumer.clone()),
    )
    .await;

    let mut nine = c.consumer.clone();
    nine.certificate_chain = vec![c.consumer.certificate_chain[0].clone(); 9];
    let bytes = Exchange::seal_as(&nine, c.header(), c.payload());
    c.case(
        "a certificate chain of 9",
        bytes,
        Expect::Refused(ErrorCode::TooManyItems, consumer),
    )
    .await;

    // A reply listing more missing items than the limit, from the provider.
    let provider = c.ex.pki.issue(&c.cast.provider, KeyAlg::Ed25519).unwrap();
    let mut h = c.ex.reply_header(
        &c.cast.provider,
        &c.cast.consumer,
        &c.cast.service.number,
        &uuid::Uuid::new_v4().to_string(),
    );
    h.reply = Some(mev_proto::pb::ReplyOutcome {
        outcome: Some(mev_proto::pb::reply_outcome::Outcome::InsufficientData(
            mev_proto::pb::InsufficientData {
                missing: vec!["applicant.birth_date".into(); max + 1],
            },
        )),
    });
    let bytes = Exchange::seal_as(&provider, h, Vec::new());
    c.case(
        "insufficient data listing one item more than the limit",
        bytes,
        Expect::Refused(ErrorCode::TooManyItems, c.cast.provider.clone()),
    )
    .await;
    c.finish().await;
}

/// `Limits::max_repeated` is "the most items accepted in any repeated
/// field": the lists inside replies too (`reply.refusal.refused_codes`,
/// `reply.documents.provided`), so a reply refusing 100,000 codes is refused.
#[tokio::test]
pub(crate) async fn every_repeated_field_in_a_reply_is_limited() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    // An open request to the provider without an adapter, answered by it.
    let mut h = within(
        "send_request",
        c.ex.adapter(&c.cast.consumer)
            .send_request(c.ex.request(&c.target, "documents")),
    )
    .await
    .unwrap();
    assert!(mev_tests::receipt(&mut h).await.accepted);
    c.receipts += 1;
    c.forwards += 1;
    let provider = c.ex.pki.issue(&c.target.provider, KeyAlg::Ed25519).unwrap();
    let mut reply = c.ex.reply_header(
        &c.target.provider,
        &c.cast.consumer,
        &c.target.number,
        &h.message_id,
    );
    reply.reply = Some(mev_proto::pb::ReplyOutcome {
        outcome: Some(mev_proto::pb::reply_outcome::Outcome::Refusal(
            mev_proto::pb::Refusal {
                partial: false,
                legal_act: "Law 123".into(),
                reason: "no consent".into(),
                refused_codes: vec!["X".into(); 100_000],
            },
        )),
    });
    let bytes = Exchange::seal_as(&provider, reply, Vec::new());
    let before = c.ex.counters();
    c.ex.publish_raw(bytes).await;
    let after =
        c.ex.counters_when("the reply processed", |s| {
            refusals(s) > refusals(&before) || s.forwarded > before.forwarded
        })
        .await;
    assert_eq!(
        rejected(&after, ErrorCode::TooManyItems),
        1,
        "the reply is refused: {after:?}"
    );
    c.ex.cleanup().await;
}

#[tokio::test]
pub(crate) async fn invalid_utf8_in_strings_is_refused() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let payload = c.payload();
    // Field numbers from proto/mev/v1/envelope.proto.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("header.sender: 0xff 0xfe", len_field(4, b"\xff\xfeUZ-MFC")),
        (
            "header.message_id: an overlong '/'",
            len_field(1, b"\xc0\xaf"),
        ),
        (
            "header.official.full_name: a UTF-16 surrogate",
            len_field(8, &len_field(1, b"Karimova \xed\xa0\x80")),
        ),
        (
            "header.documents[1].code: a lone continuation byte",
            len_field(10, &len_field(1, b"TAX-\x80")),
        ),
        (
            "header.applicant.full_name: truncated multibyte",
            len_field(9, &len_field(3, b"\xd0\x90\xd0")),
        ),
    ];
    for (name, extra) in cases {
        let h = header_bytes_with(c.header(), &payload, &extra);
        let bytes = sign_bytes(&c.consumer, h, payload.clone());
        c.case(name, bytes, Expect::Garbage(ErrorCode::MalformedHeader))
            .await;
    }
    // In the payload: a string field of the service's schema (the sample's
    // first top-level field holding printable ASCII text — a name, a number —
    // is a string, not bytes or a message) spoiled in place.
    let spoiled = spoil_first_text_field(&payload).expect("a text field in the sample payload");
    let bytes = Exchange::seal_as(&c.consumer, c.header(), spoiled);
    let consumer = c.cast.consumer.clone();
    c.case(
        "a payload string with invalid UTF-8",
        bytes,
        Expect::Refused(ErrorCode::SchemaMismatch, consumer),
    )
    .await;
    c.finish().await;
}

/// Replaces the first byte of the first top-level length-delimited field of
/// `payload` that holds printable ASCII text by 0xff.
pub(crate) fn spoil_first_text_field(payload: &[u8]) -> Option<Vec<u8>> {
    let mut i = 0;
    while i < payload.len() {
        let (k, n) = read_varint(&payload[i..])?;
        i += n;
        match k & 7 {
            0 => i += read_varint(&payload[i..])?.1,
            1 => i += 8,
            5 => i += 4,
            2 => {
                let (len, n) = read_varint(&payload[i..])?;
                i += n;
                let body = payload.get(i..i + len as usize)?;
                if body.len() >= 3 && body.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
                    let mut out = payload.to_vec();
                    out[i] = 0xff;
                    return Some(out);
                }
                i += len as usize;
            }
            _ => return None,
        }
    }
    None
}

pub(crate) fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[tokio::test]
pub(crate) async fn oversized_messages_are_refused_unread() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let max = Limits::default().max_message_bytes;
    // A signed request exactly `size` bytes long: padded in the applicant's
    // attached application (a header field, so the payload stays valid).
    let sized = |c: &Corpus, service: &Service, size: usize| -> Vec<u8> {
        let header = c.ex.request_header(&c.cast.consumer, service);
        let payload = c.ex.request_payload(service);
        let mut pad = 0;
        for _ in 0..20 {
            let mut h = header.clone();
            if let Some(app) = h.applicant.as_mut().and_then(|a| a.application.as_mut()) {
                app.content = vec![b'%'; pad];
            }
            let bytes = Exchange::seal_as(&c.consumer, h, payload.clone());
            match bytes.len().cmp(&size) {
                std::cmp::Ordering::Equal => return bytes,
                std::cmp::Ordering::Less => pad += size - bytes.len(),
                // Length prefixes grew by a byte: take it back.
                std::cmp::Ordering::Greater => pad -= bytes.len() - size,
            }
        }
        panic!("no padding makes a message of exactly {size} bytes");
    };
    let target = c.target.clone();
    c.case(
        "one byte over the limit",
        sized(&c, &target, max + 1),
        Expect::Garbage(ErrorCode::TooLarge),
    )
    .await;
    c.case(
        "16 MiB",
        sized(&c, &target, 16 * 1024 * 1024),
        Expect::Garbage(ErrorCode::TooLarge),
    )
    .await;
    // Exactly at the limit is accepted: it round trips to the provider.
    let service = c.cast.service.clone();
    let consumer = c.cast.consumer.clone();
    c.case(
        "exactly at the limit",
        sized(&c, &service, max),
        Expect::Accepted(consumer),
    )
    .await;
    c.finish().await;
}

#[tokio::test]
pub(crate) async fn unknown_fields_are_accepted_in_the_header_and_refused_in_the_payload() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let consumer = c.cast.consumer.clone();
    let service = c.cast.service.clone();
    let payload = c.ex.request_payload(&service);
    // Unknown header fields (a number far past the schema's, each wire
    // type): signed, accepted, forwarded intact — the provider's adapter
    // verifies the signature over the very bytes the consumer signed.
    let unknown = cat(&[
        &len_field(99, b"a field from a newer protocol"),
        &key(100, 0),
        &varint(1 << 40),
        &key(101, 1),
        &[7; 8],
        &key(102, 5),
        &[9; 4],
        &key(103, 3),
        &len_field(1, b"in a group"),
        &key(103, 4),
    ]);
    let h = header_bytes_with(
        c.ex.request_header(&c.cast.consumer, &service),
        &payload,
        &unknown,
    );
    let bytes = sign_bytes(&c.consumer, h, payload.clone());
    c.case(
        "unknown header fields",
        bytes,
        Expect::Accepted(consumer.clone()),
    )
    .await;
    // Unknown envelope fields, outside the signature: skipped.
    let bytes = Exchange::seal_as(
        &c.consumer,
        c.ex.request_header(&c.cast.consumer, &service),
        payload.clone(),
    );
    let bytes = cat(&[&bytes, &len_field(42, b"unsigned extra")]);
    c.case(
        "an unknown envelope field",
        bytes,
        Expect::Accepted(consumer.clone()),
    )
    .await;
    // Unknown payload fields: refused by the strict schema check.
    let bytes = Exchange::seal_as(
        &c.consumer,
        c.header(),
        cat(&[&c.payload(), &len_field(999, b"smuggled")]),
    );
    c.case(
        "an unknown payload field",
        bytes,
        Expect::Refused(ErrorCode::SchemaMismatch, consumer.clone()),
    )
    .await;
    // Unknown enum numbers in the header are invalid fields.
    let mut h = c.header();
    h.classification = 99;
    let bytes = Exchange::seal_as(&c.consumer, h, c.payload());
    c.case(
        "an unknown classification number",
        bytes,
        Expect::Refused(ErrorCode::InvalidField, consumer),
    )
    .await;
    c.finish().await;
}

#[tokio::test]
pub(crate) async fn a_valid_certificate_of_another_agency_does_not_sign_for_the_sender() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let consumer = c.cast.consumer.clone();
    // The outsider's own, genuine certificate (trusted CA, valid, bound to
    // the outsider) signing a request in the consumer's name.
    let outsider = c.ex.pki.issue(&c.cast.outsider, KeyAlg::Ed25519).unwrap();
    let bytes = Exchange::seal_as(&outsider, c.header(), c.payload());
    c.case(
        "the outsider's certificate on the consumer's request",
        bytes,
        Expect::Refused(ErrorCode::CertificateAgencyMismatch, consumer.clone()),
    )
    .await;
    // The consumer's certificate shown, the outsider's key signing.
    let mut borrowed = outsider.clone();
    borrowed.certificate_chain = c.consumer.certificate_chain.clone();
    let bytes = Exchange::seal_as(&borrowed, c.header(), c.payload());
    c.case(
        "the consumer's certificate, the outsider's signature",
        bytes,
        Expect::Refused(ErrorCode::BadSignature, consumer.clone()),
    )
    .await;
    // The consumer's certificate appended after the outsider's own.
    let mut both = outsider.clone();
    both.certificate_chain
        .extend(c.consumer.certificate_chain.iter().cloned());
    let bytes = Exchange::seal_as(&both, c.header(), c.payload());
    c.case(
        "the consumer's certificate behind the outsider's",
        bytes,
        Expect::Refused(ErrorCode::CertificateAgencyMismatch, consumer),
    )
    .await;
    // A reply in the provider's name to a request it really has open.
    let (_, rep) =
        c.ex.round_trip(&c.cast.consumer, &c.cast.service, "documents")
            .await;
    c.receipts += 2;
    c.forwards += 2;
    c.settle("a round trip").await;
    let h = c.ex.reply_header(
        &c.cast.provider,
        &c.cast.consumer,
        &c.cast.service.number,
        &rep.header.in_reply_to,
    );
    let bytes = Exchange::seal_as(&outsider, h, Vec::new());
    let provider = c.cast.provider.clone();
    c.case(
        "the outsider's certificate on the provider's reply",
        bytes,
        Expect::Refused(ErrorCode::CertificateAgencyMismatch, provider),
    )
    .await;
    c.finish().await;
}
