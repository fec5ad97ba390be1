//! The audit journal (issue 6): a demo run's journal verifies; flipping a
//! byte, deleting, reordering or truncating entries is detected and located;
//! a proof verifies offline and fails after tampering; `trace` shows a whole
//! request/reply history; `replay` re-delivers exactly the chosen range.
//! The journal is made by `mev demo --data DIR` (embedded transport, real
//! signatures), exactly as a user would.

use clap::Parser;
use mev_adapter::transport::embedded::Embedded;
use mev_adapter::transport::{Topology, Transport};
use mev_broker::audit::{self, InclusionProof, Verified};
use mev_broker::journal::entry::Entry;
use mev_broker::store::prelude::*;
use mev_broker::store::{Event, EventKind, OutboxEntry, Purpose, Store};
use mev_cli::demo::DemoArgs;
use mev_proto::crypto::RingVerifier;
use mev_proto::trust::TrustStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
struct Demo {
    #[command(flatten)]
    args: DemoArgs,
}

/// A journal left by `mev demo --requests 40 --data DIR`, copied fresh per test.
fn demo_journal() -> tempfile::TempDir {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let src = MADE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mev-journal-{}", uuid::Uuid::new_v4()));
        let register = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let demo = Demo::parse_from([
            "demo".as_ref(),
            "--requests".as_ref(),
            "40".as_ref(),
            "--data".as_ref(),
            dir.as_os_str(),
            "--register".as_ref(),
            register.as_os_str(),
        ]);
        let code = mev_cli::demo::run(demo.args).expect("the demo runs");
        assert_eq!(code, std::process::ExitCode::SUCCESS);
        dir
    });
    let copy = tempfile::tempdir().unwrap();
    for f in ["broker.redb", "ca.pem"] {
        std::fs::copy(src.join(f), copy.path().join(f)).unwrap();
    }
    copy
}

/// The id of the first request the journal records.
fn first_request(store: &Store) -> String {
    store
        .events()
        .unwrap()
        .into_iter()
        .find(|e| e.kind == EventKind::Received)
        .unwrap()
        .message_id
}

fn trust(dir: &Path) -> TrustStore {
    TrustStore::from_pem(&std::fs::read_to_string(dir.join("ca.pem")).unwrap()).unwrap()
}

fn verify(dir: &Path) -> Verified {
    let store = Store::open(dir).unwrap();
    audit::verify(
        &store,
        &RingVerifier::new(),
        Some(&trust(dir)),
        None,
        |_| {},
    )
    .unwrap()
}

fn entry_count(dir: &Path) -> u64 {
    Store::open(dir).unwrap().journal_head().unwrap().0
}

fn located(v: &Verified) -> u64 {
    let p = v.problem.as_ref().expect("tampering is detected");
    p.seq
        .unwrap_or_else(|| panic!("the problem names an entry: {p}"))
}

#[test]
fn a_demo_journal_verifies_with_every_signature_and_checkpoint() {
    let dir = demo_journal();
    let v = verify(dir.path());
    assert_eq!(v.problem, None);
    assert!(v.entries > 200, "{v:?}");
    assert!(
        v.signatures > 80,
        "40 requests, 40 replies, their receipts: {v:?}"
    );
    assert!(
        v.checkpoints >= 1,
        "the broker signs a checkpoint when it stops"
    );
    assert!(v.chains_checked);
    // Every kind of event is on the record.
    let events = Store::open(dir.path()).unwrap().events().unwrap();
    for kind in [
        EventKind::RegisterLoaded,
        EventKind::Received,
        EventKind::Rejected,
        EventKind::ReceiptSent,
        EventKind::Delivered,
        EventKind::ReplyReceived,
        EventKind::RequestClosed,
        EventKind::ReplyOnTime,
    ] {
        assert!(events.iter().any(|e| e.kind == kind), "{kind:?} recorded");
    }
}

#[test]
fn flipping_any_byte_of_an_entry_is_detected_and_located() {
    let dir = demo_journal();
    let n = entry_count(dir.path());
    // Entries with an envelope: flip a byte in the head and one in the envelope;
    // and the last entry, which no later entry links to.
    let store = Store::open(dir.path()).unwrap();
    let mut targets = Vec::new();
    let mut k = n / 3;
    while targets.len() < 2 {
        let bytes = store.journal_entry(k).unwrap().unwrap();
        let e = Entry::decode(&bytes).unwrap();
        if !e.envelope.is_empty() {
            targets.push((k, 20)); // inside the JSON head
            targets.push((k, bytes.len() - 10)); // inside the signed envelope
        }
        k += 1;
    }
    targets.push((n - 1, 30));
    drop(store);
    for (seq, offset) in targets {
        let copy = demo_journal();
        let store = Store::open(copy.path()).unwrap();
        let mut bytes = store.journal_entry(seq).unwrap().unwrap();
        bytes[offset] ^= 0x01;
        store.tamper_journal_entry(seq, Some(&bytes)).unwrap();
        drop(store);
        let v = verify(copy.path());
        assert_eq!(
            located(&v),
            seq,
            "byte {offset} of entry {seq}: {:?}",
            v.problem
        );
    }
}

#[test]
fn deleting_an_entry_is_detected_and_located() {
    let dir = demo_journal();
    let k = entry_count(dir.path()) / 2;
    Store::open(dir.path())
        .unwrap()
        .tamper_journal_entry(k, None)
        .unwrap();
    let v = verify(dir.path());
    assert_eq!(located(&v), k);
    assert!(v.problem.unwrap().what.contains("missing"));
}

#[test]
fn reordering_two_entries_is_detected_and_located() {
    let dir = demo_journal();
    let (a, b) = (10, 17);
    let store = Store::open(dir.path()).unwrap();
    let ea = store.journal_entry(a).unwrap().unwrap();
    let eb = store.journal_entry(b).unwrap().unwrap();
    store.tamper_journal_entry(a, Some(&eb)).unwrap();
    store.tamper_journal_entry(b, Some(&ea)).unwrap();
    drop(store);
    let v = verify(dir.path());
    assert_eq!(located(&v), a);
    assert!(v.problem.unwrap().what.contains("reordered"));
}

#[test]
fn truncating_the_log_is_detected_and_located() {
    let dir = demo_journal();
    let n = entry_count(dir.path());
    let store = Store::open(dir.path()).unwrap();
    for k in n - 5..n {
        store.tamper_journal_entry(k, None).unwrap();
    }
    drop(store);
    let v = verify(dir.path());
    assert_eq!(located(&v), n - 5);
    assert!(v.problem.unwrap().what.contains("truncated"));
}

#[test]
fn a_proof_verifies_offline_and_fails_after_tampering() {
    let dir = demo_journal();
    let store = Store::open(dir.path()).unwrap();
    let request = first_request(&store);
    let proof = audit::prove(&store, &request, None).unwrap();
    drop(store);
    // Offline: only the proof's JSON and the CA.
    let json = serde_json::to_string(&proof).unwrap();
    let proof: InclusionProof = serde_json::from_str(&json).unwrap();
    let ca = trust(dir.path());
    let entry = audit::check_proof(&proof, &RingVerifier::new(), Some(&ca)).unwrap();
    assert_eq!(entry.head.event.message_id, request);
    assert!(
        !entry.envelope.is_empty(),
        "the signed request is in the proof"
    );

    let mut bad_entry = proof.clone();
    let flip = bad_entry.entry.len() - 3;
    let c = if &bad_entry.entry[flip..flip + 1] == "0" {
        "1"
    } else {
        "0"
    };
    bad_entry.entry.replace_range(flip..flip + 1, c);
    let mut bad_path = proof.clone();
    bad_path.path[0] = "00".repeat(32);
    let mut bad_root = proof.clone();
    bad_root.checkpoint.root = "11".repeat(32);
    let mut bad_index = proof.clone();
    bad_index.index += 1;
    let mut bad_signature = proof.clone();
    bad_signature.checkpoint.size += 1;
    for (what, p) in [
        ("entry", bad_entry),
        ("path", bad_path),
        ("root", bad_root),
        ("index", bad_index),
        ("checkpoint size", bad_signature),
    ] {
        assert!(
            audit::check_proof(&p, &RingVerifier::new(), Some(&ca)).is_err(),
            "a proof with an altered {what} fails"
        );
    }
    // Signed by a broker of another CA: the signature holds, the chain does not.
    let other = mev_devpki::DevPki::new().unwrap().trust_store().unwrap();
    assert!(audit::check_proof(&proof, &RingVerifier::new(), Some(&other)).is_err());
}

#[test]
fn trace_shows_a_whole_request_and_reply_history() {
    let dir = demo_journal();
    let store = Store::open(dir.path()).unwrap();
    let events = store.events().unwrap();
    let reply = events
        .iter()
        .find(|e| e.kind == EventKind::ReplyReceived)
        .unwrap();
    let request = reply.in_reply_to.clone();
    let trace = audit::trace(&store, &request, None).unwrap();
    let kinds: Vec<EventKind> = trace.iter().map(|e| e.head.event.kind).collect();
    for k in [
        EventKind::Received,
        EventKind::Delivered,
        EventKind::ReplyReceived,
        EventKind::RequestClosed,
    ] {
        assert!(kinds.contains(&k), "{k:?} in the trace: {kinds:?}");
    }
    // The reply's own delivery back to the requester is part of it.
    assert!(trace
        .iter()
        .any(|e| e.head.event.kind == EventKind::Delivered
            && e.head.event.message_id == reply.message_id));
    assert!(trace.windows(2).all(|w| w[0].head.seq < w[1].head.seq));
    assert!(
        trace[0].head.sender_local.contains('('),
        "local time with its zone: {}",
        trace[0].head.sender_local
    );
}

#[tokio::test]
async fn replay_redelivers_exactly_the_chosen_range() {
    let dir = demo_journal();
    let store = Store::open(dir.path()).unwrap();
    let events = store.events().unwrap();
    let accepted: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Received | EventKind::ReplyReceived))
        .collect();
    let from = accepted[accepted.len() / 4].at_ms;
    let to = accepted[3 * accepted.len() / 4].at_ms;
    let expected: BTreeMap<String, Vec<u8>> = accepted
        .iter()
        .filter(|e| (from..to).contains(&e.at_ms))
        .map(|e| {
            (
                e.message_id.clone(),
                store.envelope(&e.message_id).unwrap().unwrap(),
            )
        })
        .collect();
    assert!(!expected.is_empty());

    let transport = Embedded::new("replay");
    transport.declare_inbox("AUDIT").await.unwrap();
    let queue = transport.names().inbox_queue("AUDIT");
    let messages = audit::replay_range(&store, from, to).unwrap();
    mev_cli::audit::replay(&transport, &queue, messages)
        .await
        .unwrap();
    let depth = transport.queue_depth(&queue).await.unwrap().messages;
    assert_eq!(
        depth as usize,
        expected.len(),
        "exactly the range, each once"
    );
    let mut consumer = transport.consume(&queue, 1024).await.unwrap();
    let mut got = BTreeMap::new();
    for _ in 0..expected.len() {
        let d = consumer.next().await.unwrap();
        let env: mev_proto::Envelope = prost::Message::decode(d.body.as_slice()).unwrap();
        let h: mev_proto::pb::Header = prost::Message::decode(env.header.as_slice()).unwrap();
        got.insert(h.message_id, d.body.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(
        got, expected,
        "the original signed bytes of exactly those messages"
    );
}

#[test]
fn the_cli_verifies_and_names_the_first_bad_entry() {
    let dir = demo_journal();
    let mev = env!("CARGO_BIN_EXE_mev");
    let run = |args: &[&str]| {
        let out = Command::new(mev).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let data = dir.path().to_str().unwrap();
    let ca = dir.path().join("ca.pem");
    let (code, out) = run(&[
        "audit",
        "verify",
        "--data",
        data,
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("journal verified"), "{out}");

    let store = Store::open(dir.path()).unwrap();
    let request = first_request(&store);
    drop(store);
    let (code, out) = run(&["audit", "trace", "--data", data, &request]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("Received") && out.contains("ReplyReceived"),
        "{out}"
    );
    let proof = dir.path().join("proof.json");
    let (code, out) = run(&[
        "audit",
        "prove",
        "--data",
        data,
        &request,
        "--out",
        proof.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&[
        "audit",
        "check-proof",
        proof.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("proof holds"), "{out}");
    let export = dir.path().join("export.jsonl");
    let (code, _) = run(&[
        "audit",
        "export",
        "--data",
        data,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0));
    let lines = std::fs::read_to_string(&export).unwrap().lines().count() as u64;
    assert_eq!(lines, entry_count(dir.path()));

    let store = Store::open(dir.path()).unwrap();
    let mut bytes = store.journal_entry(7).unwrap().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    store.tamper_journal_entry(7, Some(&bytes)).unwrap();
    drop(store);
    let (code, out) = run(&["audit", "verify", "--data", data]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("TAMPERED: entry 7"), "{out}");
}

#[test]
fn sealed_segments_chain_keep_the_history_verifiable_and_betray_tampering() {
    let dir = demo_journal();
    let segs = dir.path().join("segments");
    let n = entry_count(dir.path());
    let store = Store::open(dir.path()).unwrap();
    let request = first_request(&store);
    let first = mev_broker::audit::segment::seal(&store, n / 3, &segs, 1).unwrap();
    let second = mev_broker::audit::segment::seal(&store, 2 * n / 3, &segs, 2).unwrap();
    assert_eq!(
        store.journal_entry(0).unwrap(),
        None,
        "sealed bodies left the live store"
    );
    assert!(store.journal_entry(n - 1).unwrap().is_some());
    // A sealed entry is still traced and proved, from the segments.
    let proof = audit::prove(&store, &request, Some(&segs)).unwrap();
    audit::check_proof(&proof, &RingVerifier::new(), Some(&trust(dir.path()))).unwrap();
    assert!(!audit::trace(&store, &request, Some(&segs))
        .unwrap()
        .is_empty());
    drop(store);

    let check = |segments: Option<&Path>| {
        let store = Store::open(dir.path()).unwrap();
        audit::verify(
            &store,
            &RingVerifier::new(),
            Some(&trust(dir.path())),
            segments,
            |_| {},
        )
        .unwrap()
    };
    let v = check(Some(&segs));
    assert_eq!(v.problem, None);
    assert_eq!((v.segments, v.entries), (2, n));
    let v = check(None);
    assert_eq!(v.problem, None);
    assert_eq!(v.unchecked_sealed, 2 * n / 3);

    // A flipped byte inside the first segment is found and located.
    let original = std::fs::read(&first).unwrap();
    let mut bytes = original.clone();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();
    let v = check(Some(&segs));
    let p = v.problem.expect("detected");
    assert_eq!(p.seq, Some(n / 3 - 1), "{p}");
    // Removing a segment breaks the chain.
    std::fs::write(&first, &original).unwrap();
    std::fs::remove_file(&first).unwrap();
    let v = check(Some(&segs));
    assert!(v.problem.is_some());
    let _ = second;
}

#[test]
fn the_journal_is_not_sealed_past_an_envelope_the_outbox_still_publishes() {
    // The outbox publishes each envelope from the journal entry that keeps
    // it (the one copy in the store), so sealing stops short of the oldest.
    let dir = demo_journal();
    let segs = dir.path().join("segments");
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.outbox_depth().unwrap(),
        0,
        "the demo delivered everything"
    );
    let pending = store
        .write(|t| {
            let entry = t.journal().append_with(
                &Event {
                    message_id: "waiting".into(),
                    recipient: "RU-FNS".into(),
                    ..Event::new(1, EventKind::Received)
                },
                b"an envelope for an agency that is offline",
            )?;
            t.outbox().enqueue(
                &OutboxEntry {
                    to: "RU-FNS".into(),
                    message_id: "waiting".into(),
                    purpose: Purpose::Forward,
                    entry: Some(entry),
                },
                b"an envelope for an agency that is offline",
            )?;
            Ok(entry)
        })
        .unwrap();
    let (size, _) = store.journal_head().unwrap();
    assert!(size > pending);
    let err = mev_broker::audit::segment::seal(&store, pending + 1, &segs, 1).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "entry {pending} holds an envelope still waiting in the outbox"
        )),
        "{err}"
    );
    assert!(store.journal_entry(0).unwrap().is_some(), "nothing sealed");
    mev_broker::audit::segment::seal(&store, pending, &segs, 1).unwrap();
    let read = store.outbox_next(0, 10, 10, |_| false).unwrap();
    assert_eq!(
        read.items[0].2.as_deref(),
        Some(&b"an envelope for an agency that is offline"[..])
    );
}
