//! The Unified Register: the shipped register loads clean; bad registers fail
//! naming the entry; requests and replies are authorized with the right
//! codes; `mev register check` exits 0 or 1.

use mev_broker::register::{DeadlinePolicy, Register, ServiceStatus};
use mev_proto::pb::reply_outcome::Outcome;
use mev_proto::pb::{Documents, Header, InsufficientData, Kind, Refusal, ReplyOutcome};
use mev_proto::ErrorCode;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/registers");

fn shipped() -> Register {
    match Register::load(&Path::new(ROOT).join("schemas")) {
        Ok(r) => r,
        Err(e) => panic!("the shipped register does not load:\n{e}"),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

/// The problems of a fixture that must fail, one string per problem.
fn problems(name: &str) -> Vec<String> {
    match Register::load(&fixture(name)) {
        Ok(_) => panic!("{name} loaded but should not"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

fn request(sender: &str, recipient: &str, service: &str, schema: &str) -> Header {
    Header {
        kind: Kind::Request as i32,
        sender: sender.into(),
        recipient: recipient.into(),
        service: service.into(),
        payload_schema: schema.into(),
        ..Default::default()
    }
}

const TAX_REQUEST: &str = "mev.payloads.tax.v1.TaxDebtCertificateRequest";
const TAX_REPLY: &str = "mev.payloads.tax.v1.TaxDebtCertificate";

fn tax_request() -> Header {
    request("UZ-DXM-YUNUSOBOD", "UZ-GNK", "UZ-00125", TAX_REQUEST)
}

fn sample(register: &Register, schema: &str) -> Vec<u8> {
    register
        .sample_payload(schema)
        .unwrap_or_else(|| panic!("no sample for {schema}"))
}

#[test]
fn shipped_register_loads_clean() {
    let r = shipped();
    assert!(r.agencies().count() >= 10);
    assert!(r.services().count() >= 8);
    let abolished = r.service("UZ-00019").expect("the abolished service");
    assert!(matches!(abolished.status, ServiceStatus::Abolished { .. }));
    let policy = |n: &str| r.service(n).and_then(|s| r.policy(&s.deadline)).copied();
    assert_eq!(
        policy("RU-30002"),
        Some(DeadlinePolicy::Realtime { seconds: 2 })
    );
    assert_eq!(
        policy("RU-20311"),
        Some(DeadlinePolicy::Hours { hours: 48 })
    );
    assert_eq!(policy("UZ-00125"), Some(DeadlinePolicy::NextWorkingDay));
    let archive = r.service("UZ-00518").expect("the archive service");
    assert!(archive.archive_deadline.is_some());
    let agency = r.agency("UZ-GNK").expect("the tax committee");
    assert_eq!(agency.jurisdiction.time_zone, chrono_tz::Asia::Tashkent);
}

#[test]
fn good_fixture_loads_from_its_file() {
    let r = Register::load(&fixture("good.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.services().count(), 1);
    assert_eq!(
        r.schemas().collect::<Vec<_>>(),
        ["mev.fixture.v1.Answer", "mev.fixture.v1.Ask"]
    );
}

#[test]
fn bad_registers_fail_naming_the_entry() {
    let cases = [
        ("reused-number.toml", "services[UZ-00002]", "reused"),
        (
            "unknown-agency.toml",
            "services[UZ-00001]",
            "\"UZ-Z\" is not a registered agency",
        ),
        (
            "unknown-agency.toml",
            "services[UZ-00001]",
            "\"UZ-Y\" is not a registered agency",
        ),
        (
            "unknown-schema.toml",
            "services[UZ-00001]",
            "mev.fixture.v1.Question",
        ),
        ("unknown-policy.toml", "services[UZ-00001]", "three-days"),
        ("self-ask.toml", "services[UZ-00001]", "may not ask itself"),
        ("bad-time-zone.toml", "agencies[UZ-A]", "Asia/Tashkant"),
        (
            "abolished-without-reason.toml",
            "services[UZ-00001]",
            "abolished_on",
        ),
        (
            "abolished-without-reason.toml",
            "services[UZ-00001]",
            "abolished_reason",
        ),
    ];
    for (file, entry, text) in cases {
        let found = problems(file);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(entry) && p.contains(text)),
            "{file}: no problem naming {entry} with {text:?} in {found:#?}"
        );
    }
    // One bad agency is one problem, not one more per reference to it.
    assert_eq!(problems("bad-time-zone.toml").len(), 1);
}

#[test]
fn a_new_service_needs_no_rebuild() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir(dir.path().join("payloads")).expect("payloads dir");
    let copy = |from: &Path, to: &str| {
        std::fs::copy(from, dir.path().join(to)).expect("copy");
    };
    copy(&fixture("good.toml"), "register.toml");
    copy(&fixture("payloads/fixture.proto"), "payloads/fixture.proto");
    let new_schema =
        "syntax = \"proto3\";\npackage mev.extra.v1;\nmessage Q { string pinfl = 1; }\n";
    std::fs::write(dir.path().join("payloads/extra.proto"), new_schema).expect("write");
    let new_service = r#"
[[services]]
number = "UZ-00002"
name = "A new service"
provider = "UZ-B"
consumers = [{ agency = "UZ-A", legal_basis = "Act No. 2" }]
request_schema = "mev.extra.v1.Q"
reply_schema = "mev.fixture.v1.Answer"
deadline = "next-working-day"
status = "active"
documents = [{ code = "NEW", title = "New" }]
"#;
    let mut text = std::fs::read_to_string(dir.path().join("register.toml")).expect("read");
    text.push_str(new_service);
    std::fs::write(dir.path().join("register.toml"), text).expect("write");
    let r = Register::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let header = request("UZ-A", "UZ-B", "UZ-00002", "mev.extra.v1.Q");
    let payload = sample(&r, "mev.extra.v1.Q");
    assert_eq!(
        r.authorize_request(&header, &payload)
            .map(|s| s.number.as_str()),
        Ok("UZ-00002")
    );
}

#[test]
fn calendar_names_are_checked_when_calendars_exist() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir(dir.path().join("payloads")).expect("payloads dir");
    std::fs::create_dir(dir.path().join("calendars")).expect("calendars dir");
    std::fs::write(dir.path().join("calendars/ru.toml"), "").expect("write");
    std::fs::copy(fixture("good.toml"), dir.path().join("register.toml")).expect("copy");
    std::fs::copy(
        fixture("payloads/fixture.proto"),
        dir.path().join("payloads/fixture.proto"),
    )
    .expect("copy");
    let err = Register::load(dir.path()).expect_err("calendar uz is missing");
    let text = err.to_string();
    assert!(
        text.contains("agencies[UZ-A]") && text.contains("calendars/uz.toml"),
        "{text}"
    );
}

#[test]
fn authorize_passes_a_good_request() {
    let r = shipped();
    let payload = sample(&r, TAX_REQUEST);
    let service = r
        .authorize_request(&tax_request(), &payload)
        .expect("authorized");
    assert_eq!(service.number, "UZ-00125");
}

#[test]
fn authorize_gives_each_code() {
    let r = shipped();
    let payload = sample(&r, TAX_REQUEST);
    let code = |h: &Header, p: &[u8]| {
        r.authorize_request(h, p)
            .map(|s| s.number.clone())
            .map_err(|e| e.code)
    };

    let mut h = tax_request();
    h.service = "UZ-99999".into();
    assert_eq!(code(&h, &payload), Err(ErrorCode::UnknownService));

    let h = request("UZ-DXM-YUNUSOBOD", "UZ-MVD", "UZ-00019", "anything");
    assert_eq!(code(&h, &payload), Err(ErrorCode::ServiceAbolished));

    let h = request("UZ-DXM-YUNUSOBOD", "UZ-KADASTR", "UZ-00125", TAX_REQUEST);
    assert_eq!(code(&h, &payload), Err(ErrorCode::WrongRecipient));

    // Registered, but not an allowed consumer of this service (UZ annex 2 §21).
    let h = request("UZ-ARXIV", "UZ-GNK", "UZ-00125", TAX_REQUEST);
    assert_eq!(code(&h, &payload), Err(ErrorCode::SenderNotAllowed));

    let h = request("UZ-NOBODY", "UZ-GNK", "UZ-00125", TAX_REQUEST);
    assert_eq!(code(&h, &payload), Err(ErrorCode::UnknownAgency));
    let h = request("UZ-DXM-YUNUSOBOD", "UZ-NOBODY", "UZ-00125", TAX_REQUEST);
    assert_eq!(code(&h, &payload), Err(ErrorCode::UnknownAgency));

    let mut h = tax_request();
    h.deadline_policy = "yesterday".into();
    assert_eq!(code(&h, &payload), Err(ErrorCode::InvalidField));
}

#[test]
fn authorize_checks_the_payload_against_the_request_schema() {
    let r = shipped();
    let good = sample(&r, TAX_REQUEST);
    let reason = |h: &Header, p: &[u8]| match r.authorize_request(h, p) {
        Err(e) if e.code == ErrorCode::SchemaMismatch => e.reason,
        other => panic!("expected a schema mismatch, got {other:?}"),
    };

    // The header names another schema than the register's.
    let mut h = tax_request();
    h.payload_schema = "mev.payloads.civil.v1.CivilRecordRequest".into();
    assert!(reason(&h, &good).contains("header.payload_schema"));

    // Truncated: field 1 says 5 bytes follow, 1 does.
    assert!(reason(&tax_request(), &[0x0a, 0x05, 0x01]).contains("does not decode"));

    // An unknown top-level field (number 99, varint).
    let mut extra = good.clone();
    extra.extend_from_slice(&[0x98, 0x06, 0x01]);
    assert!(reason(&tax_request(), &extra).contains("unknown field number 99"));

    // An unknown field nested in `taxpayer` (PersonId).
    let nested = [0x0a, 0x03, 0x98, 0x06, 0x01];
    let why = reason(&tax_request(), &nested);
    assert!(why.contains("taxpayer") && why.contains("99"), "{why}");

    // An enum number the schema does not define, in `taxpayer.kind`.
    let why = reason(&tax_request(), &[0x0a, 0x02, 0x08, 0x63]);
    assert!(why.contains("taxpayer.kind"), "{why}");
}

#[test]
fn sample_payloads_round_trip_through_authorize_and_check_reply() {
    let r = shipped();
    for service in r.services().filter(|s| s.is_active()) {
        let consumer = &service.consumers[0].agency;
        let header = request(
            consumer,
            &service.provider,
            &service.number,
            &service.request_schema,
        );
        let payload = sample(&r, &service.request_schema);
        assert!(!payload.is_empty());
        if let Err(e) = r.authorize_request(&header, &payload) {
            panic!("{}: {e}", service.number);
        }
        let reply = documents_reply(service, &service.reply_schema);
        if let Err(e) = r.check_reply(service, &reply, &sample(&r, &service.reply_schema)) {
            panic!("{}: {e}", service.number);
        }
    }
    assert_eq!(r.sample_payload("mev.payloads.nothing.v1.Nothing"), None);
}

fn documents_reply(service: &mev_broker::register::Service, schema: &str) -> Header {
    reply(service, schema, Outcome::Documents(Documents::default()))
}

fn reply(service: &mev_broker::register::Service, schema: &str, outcome: Outcome) -> Header {
    Header {
        kind: Kind::Reply as i32,
        sender: service.provider.clone(),
        service: service.number.clone(),
        payload_schema: schema.into(),
        reply: Some(ReplyOutcome {
            outcome: Some(outcome),
        }),
        ..Default::default()
    }
}

#[test]
fn check_reply_rules() {
    let r = shipped();
    let service = r.service("UZ-00125").expect("tax service");
    let good = sample(&r, TAX_REPLY);
    let code = |h: &Header, p: &[u8]| r.check_reply(service, h, p).map_err(|e| e.code);
    let mismatch = Err(ErrorCode::SchemaMismatch);

    assert_eq!(code(&documents_reply(service, TAX_REPLY), &good), Ok(()));
    assert_eq!(
        code(&documents_reply(service, TAX_REQUEST), &good),
        mismatch
    );
    assert_eq!(code(&documents_reply(service, TAX_REPLY), &[]), mismatch);
    assert_eq!(
        code(&documents_reply(service, TAX_REPLY), &[0x0a, 0x05, 0x01]),
        mismatch
    );

    let refusal = |partial| {
        Outcome::Refusal(Refusal {
            partial,
            legal_act: "Tax Code, art. 102".into(),
            reason: "tax secret".into(),
            refused_codes: vec!["TAX-DEBT-CERT".into()],
        })
    };
    // A full refusal carries no payload; a partial one may carry the rest.
    assert_eq!(code(&reply(service, "", refusal(false)), &[]), Ok(()));
    assert_eq!(
        code(&reply(service, TAX_REPLY, refusal(false)), &good),
        mismatch
    );
    assert_eq!(
        code(&reply(service, TAX_REPLY, refusal(true)), &good),
        Ok(())
    );
    assert_eq!(code(&reply(service, "", refusal(true)), &[]), Ok(()));
    let missing = Outcome::InsufficientData(InsufficientData {
        missing: vec!["birth date".into()],
    });
    assert_eq!(code(&reply(service, "", missing), &[]), Ok(()));

    let mut no_outcome = documents_reply(service, TAX_REPLY);
    no_outcome.reply = None;
    assert_eq!(code(&no_outcome, &good), Err(ErrorCode::MissingField));
}

#[test]
fn policy_for_follows_override_then_archive_flag() {
    let r = shipped();
    let service = r.service("UZ-00210").expect("civil registry service");
    let mut h = request("UZ-DXM-YUNUSOBOD", "UZ-ZAGS", "UZ-00210", "");
    assert_eq!(
        r.policy_for(service, &h).map(|p| p.0),
        Some("next-working-day")
    );
    h.archive = true;
    assert_eq!(
        r.policy_for(service, &h).map(|p| p.0),
        Some("archive-ten-working-days")
    );
    h.deadline_policy = "two-working-days".into();
    assert_eq!(
        r.policy_for(service, &h).map(|p| *p.1),
        Some(DeadlinePolicy::WorkingDays { days: 2 })
    );
}

fn mev(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mev"))
        .args(args)
        .current_dir(ROOT)
        .output()
        .expect("the mev binary runs")
}

#[test]
fn cli_check_passes_the_shipped_register() {
    let out = mev(&["register", "check", "schemas/"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("agencies") && stdout.contains("1 abolished"),
        "{stdout}"
    );
    // The default path is schemas/, and a register.toml file is accepted too.
    assert_eq!(mev(&["register", "check"]).status.code(), Some(0));
    assert_eq!(
        mev(&["register", "check", "schemas/register.toml"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn cli_check_fails_a_bad_register_naming_the_entry() {
    let path = fixture("reused-number.toml");
    let out = mev(&["register", "check", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("services[UZ-00002]")),
        "{stdout}"
    );
    let missing = mev(&["register", "check", "no/such/dir"]);
    assert_eq!(missing.status.code(), Some(1));
}
