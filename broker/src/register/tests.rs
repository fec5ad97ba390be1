//! Unit tests of the register's validation rules, each on a small register
//! written to a temporary directory.

use super::{Register, RegisterError};

const PROTO: &str = r#"syntax = "proto3";
package t.v1;
message Ask { string id = 1; repeated Item items = 2; map<string, Item> by_code = 3; }
message Item { Colour colour = 1; }
enum Colour { COLOUR_UNSPECIFIED = 0; RED = 1; }
message Answer { string text = 1; }
"#;

const AGENCIES: &str = r#"
[policies.day]
kind = "next_working_day"

[[agencies]]
id = "A"
name = "Agency A"
kind = "federal"
jurisdiction = { time_zone = "Europe/Moscow", calendar = "ru" }

[[agencies]]
id = "B"
name = "Agency B"
kind = "regional"
jurisdiction = { time_zone = "Europe/Moscow", calendar = "ru" }
"#;

const SERVICE: &str = r#"
[[services]]
number = "S-1"
name = "Service"
provider = "A"
consumers = [{ agency = "B", legal_basis = "Act 1" }]
request_schema = "t.v1.Ask"
reply_schema = "t.v1.Answer"
deadline = "day"
status = "active"
documents = [{ code = "D", title = "Document" }]
"#;

fn load(toml: &str, protos: &[(&str, &str)]) -> Result<Register, RegisterError> {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir(dir.path().join("payloads")).expect("payloads dir");
    for (name, text) in protos {
        std::fs::write(dir.path().join("payloads").join(name), text).expect("write proto");
    }
    std::fs::write(dir.path().join("register.toml"), toml).expect("write register");
    Register::load(dir.path())
}

/// The problems of a register that must fail, as displayed.
fn problems(toml: &str) -> Vec<String> {
    match load(toml, &[("t.proto", PROTO)]) {
        Ok(_) => panic!("loaded but should not:\n{toml}"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

fn has(problems: &[String], entry: &str, text: &str) -> bool {
    problems
        .iter()
        .any(|p| p.starts_with(entry) && p.contains(text))
}

/// Asserts the register fails with a problem on `entry` containing `text`.
fn fails(toml: &str, entry: &str, text: &str) {
    let found = problems(toml);
    assert!(
        has(&found, entry, text),
        "no {entry} / {text:?} in {found:#?}"
    );
}

fn service_with(from: &str, to: &str) -> String {
    assert!(SERVICE.contains(from), "{from}");
    format!("{AGENCIES}{}", SERVICE.replacen(from, to, 1))
}

#[test]
fn the_base_register_loads() {
    let r = load(&format!("{AGENCIES}{SERVICE}"), &[("t.proto", PROTO)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.schemas().count(), 3);
}

#[test]
fn policy_rules() {
    let with = |policy: &str| format!("{AGENCIES}{SERVICE}\n[policies.p]\n{policy}\n");
    fails(&with("kind = \"weeks\""), "policies.p", "unknown kind");
    fails(
        &with("kind = \"working_days\""),
        "policies.p",
        "needs `days`",
    );
    fails(
        &with("kind = \"hours\"\nhours = 0"),
        "policies.p",
        "at least 1",
    );
    fails(
        &with("kind = \"hours\"\nhours = 48\nseconds = 2"),
        "policies.p",
        "`seconds` does not apply",
    );
}

#[test]
fn agency_rules() {
    let extra = |agency: &str| format!("{AGENCIES}{SERVICE}\n[[agencies]]\n{agency}\n");
    let a = |id: &str, kind: &str, name: &str| {
        extra(&format!(
            "id = \"{id}\"\nname = \"{name}\"\nkind = \"{kind}\"\n\
             jurisdiction = {{ time_zone = \"Asia/Almaty\", calendar = \"kz\" }}"
        ))
    };
    fails(&a("A", "federal", "Again"), "agencies[A]", "used twice");
    fails(&a("C", "national", "C"), "agencies[C]", "kind \"national\"");
    fails(&a("C", "federal", " "), "agencies[C]", "name is empty");
    fails(&a("C D", "federal", "C"), "agencies[C D]", "without spaces");
}

#[test]
fn service_rules() {
    let s = "services[S-1]";
    fails(
        &service_with("\"active\"", "\"closed\""),
        s,
        "status \"closed\"",
    );
    fails(
        &service_with(
            "status = \"active\"",
            "status = \"active\"\nabolished_on = 2020-01-01",
        ),
        s,
        "an active service has no abolished_on",
    );
    fails(
        &service_with(
            "status = \"active\"",
            "status = \"abolished\"\nabolished_on = 2020-01-01T10:00:00Z\nabolished_reason = \"x\"",
        ),
        s,
        "not a plain date",
    );
    fails(
        &service_with("[{ agency = \"B\", legal_basis = \"Act 1\" }]", "[]"),
        s,
        "no consumers",
    );
    fails(
        &service_with("\"Act 1\"", "\" \""),
        s,
        "consumers[B]: no legal_basis",
    );
    fails(
        &service_with(
            "\"Act 1\" }",
            "\"Act 1\" }, { agency = \"B\", legal_basis = \"Act 2\" }",
        ),
        s,
        "consumers[B]: listed twice",
    );
    fails(
        &service_with("\"t.v1.Answer\"", "\"t.v1.Reply\""),
        s,
        "reply_schema \"t.v1.Reply\"",
    );
    fails(
        &service_with("[{ code = \"D\", title = \"Document\" }]", "[]"),
        s,
        "no documents",
    );
    fails(
        &service_with(
            "title = \"Document\" }",
            "title = \"Document\" }, { code = \"D\", title = \"Again\" }",
        ),
        s,
        "documents[D]: code listed twice",
    );
    let changes = "documents = [{ code = \"D\", title = \"Document\" }]\nchanges = [\
         { date = 2021-01-01, substance = \"b\" }, { date = 2020-01-01, substance = \" \" }]";
    let found = problems(&service_with(
        "documents = [{ code = \"D\", title = \"Document\" }]",
        changes,
    ));
    assert!(
        has(&found, s, "changes[#2]: not in date order"),
        "{found:#?}"
    );
    assert!(has(&found, s, "changes[#2]: the substance"), "{found:#?}");
    fails(
        &service_with(
            "deadline = \"day\"",
            "deadline = \"day\"\narchive_deadline = \"never\"",
        ),
        s,
        "archive_deadline \"never\"",
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let found = problems("[[agencies]]\nid = \"A\"\nname = \n");
    assert!(
        found.iter().any(|p| p.contains("register.toml: line 3")),
        "{found:#?}"
    );
    let found = problems(&format!("{AGENCIES}{SERVICE}colour = \"red\"\n"));
    assert!(
        found.iter().any(|p| p.contains("unknown field `colour`")),
        "{found:#?}"
    );
}

#[test]
fn schema_compile_errors_and_bad_examples_name_the_file_and_field() {
    let toml = format!("{AGENCIES}{SERVICE}");
    let err = load(
        &toml,
        &[
            ("t.proto", PROTO),
            ("broken.proto", "syntax = \"proto3\"; message {"),
        ],
    )
    .expect_err("broken.proto does not compile");
    assert!(
        err.to_string()
            .contains("payloads/broken.proto: does not compile"),
        "{err}"
    );
    let options = r#"syntax = "proto3"; package mev.payloads.v1;
import "google/protobuf/descriptor.proto";
extend google.protobuf.FieldOptions { string example = 50101; }"#;
    let bad = r#"syntax = "proto3"; package u.v1; import "options.proto";
message N { int32 year = 1 [(mev.payloads.v1.example) = "nineteen"]; }"#;
    let err = load(
        &toml,
        &[
            ("t.proto", PROTO),
            ("options.proto", options),
            ("u.proto", bad),
        ],
    )
    .expect_err("the example is not an int32");
    assert!(
        err.to_string()
            .contains("payloads: u.v1.N.year: example \"nineteen\""),
        "{err}"
    );
}

#[test]
fn strict_decoding_reaches_lists_and_maps() {
    let r = load(&format!("{AGENCIES}{SERVICE}"), &[("t.proto", PROTO)])
        .unwrap_or_else(|e| panic!("{e}"));
    let sample = r.sample_payload("t.v1.Ask").expect("a sample");
    assert!(r.schemas.decode_strict("t.v1.Ask", &sample).is_ok());
    // items[0].colour = 7, not a Colour.
    let list = [0x12, 0x02, 0x08, 0x07];
    let why = r
        .schemas
        .decode_strict("t.v1.Ask", &list)
        .expect_err("unknown enum value");
    assert!(why.contains("t.v1.Ask.items[0].colour"), "{why}");
    // by_code["k"] = Item with unknown field 9.
    let map = [0x1a, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, 0x48, 0x01];
    let why = r
        .schemas
        .decode_strict("t.v1.Ask", &map)
        .expect_err("unknown field");
    assert!(
        why.contains("by_code") && why.contains("unknown field number 9"),
        "{why}"
    );
}
