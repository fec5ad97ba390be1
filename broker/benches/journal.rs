//! Benchmark (issue 6): the audit journal at 1,000,000 entries — how fast
//! entries are appended (in transactions of 256, as the pipeline commits a
//! batch: one fsync each) and how fast `mev audit verify` checks them (each
//! entry, the chain, the Merkle tree against the checkpoints, and the
//! Ed25519 signature of every envelope). Prints figures; asserts nothing
//! about time. `cargo bench -p mev-broker --bench journal`; `MEV_BENCH_ENTRIES`
//! changes the count.

use mev_broker::journal::audit;
use mev_broker::pki::{DevPki, KeyAlg};
use mev_broker::register::Register;
use mev_broker::store::{Event, EventKind, Store};
use mev_proto::crypto::RingVerifier;
use std::path::Path;
use std::time::Instant;

fn main() {
    let n: u64 = std::env::var("MEV_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let register = Register::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas"))
        .expect("register");
    let service = register
        .services()
        .find(|s| s.is_active() && !s.consumers.is_empty())
        .expect("a service")
        .clone();
    let consumer = service.consumers[0].agency.clone();
    let pki = DevPki::new().expect("pki");
    let identity = pki.issue(&consumer, KeyAlg::Ed25519).expect("identity");
    let broker = pki.issue("MEV-EXCHANGE", KeyAlg::Ed25519).expect("broker");
    let trust = pki.trust_store().expect("trust");
    // One realistic signed request; every entry carries a copy.
    let (header, payload) =
        mev_broker::demo::sample_request(&register, &service, 1, "Bench".into())
            .into_parts(&consumer);
    let envelope = prost::Message::encode_to_vec(
        &mev_proto::envelope::seal(
            header,
            payload,
            identity.signer.as_ref(),
            &identity.certificate_chain,
        )
        .expect("seal"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    store.set_zones(|| {
        register
            .agencies()
            .map(|a| (a.id.clone(), a.jurisdiction.time_zone))
            .collect()
    });
    println!(
        "journal benchmark: {n} entries, each with a {} B signed envelope, 256 per transaction",
        envelope.len()
    );

    let started = Instant::now();
    let now = chrono::Utc::now().timestamp_millis();
    let mut i = 0u64;
    let mut checkpoints = 0;
    while i < n {
        let end = (i + 256).min(n);
        store
            .write(|t| {
                for k in i..end {
                    let ev = Event {
                        at_ms: now + k as i64,
                        kind: EventKind::Received,
                        message_id: format!("0190c6e0-0000-7000-8000-{k:012}"),
                        sender: consumer.clone(),
                        recipient: service.provider.clone(),
                        service: service.number.clone(),
                        in_reply_to: String::new(),
                        code: 0,
                        reason: String::new(),
                        deadline_ms: None,
                        late_by_ms: None,
                    };
                    t.record_with(&ev, &envelope)?;
                }
                Ok(())
            })
            .expect("append");
        // A checkpoint every 100,000 entries, as the broker writes one every 10 s.
        let crossed = end / 100_000 != i / 100_000;
        i = end;
        if crossed || i == n {
            mev_broker::journal::checkpoint::write(&store, &broker, now).expect("checkpoint");
            checkpoints += 1;
        }
    }
    let append = started.elapsed().as_secs_f64();
    let size: u64 = std::fs::metadata(dir.path().join("broker.redb")).map_or(0, |m| m.len());
    println!(
        "  append: {n} entries in {append:.1} s = {:.0} entries/s ({:.0} fsyncs/s); store {:.0} MiB ({:.0} B/entry); {checkpoints} checkpoints",
        n as f64 / append,
        (n as f64 / 256.0) / append,
        size as f64 / 1048576.0,
        size as f64 / n as f64
    );

    for (label, tr) in [("keys only", None), ("chains to the CA", Some(&trust))] {
        let started = Instant::now();
        let v = audit::verify(&store, &RingVerifier::new(), tr, None, |_| {}).expect("verify");
        let secs = started.elapsed().as_secs_f64();
        assert!(v.problem.is_none(), "{:?}", v.problem);
        println!(
            "  verify ({label}): {} entries, {} signatures, {} checkpoints in {secs:.1} s = {:.0} entries/s",
            v.entries,
            v.signatures,
            v.checkpoints,
            v.entries as f64 / secs
        );
    }
    let started = Instant::now();
    let proof = audit::prove(
        &store,
        &format!("0190c6e0-0000-7000-8000-{:012}", n / 2),
        None,
    )
    .expect("prove");
    let prove = started.elapsed().as_secs_f64();
    let started = Instant::now();
    audit::check_proof(&proof, &RingVerifier::new(), Some(&trust)).expect("proof holds");
    println!(
        "  prove one entry of {n}: {:.0} ms ({} path hashes); check it offline: {:.2} ms",
        prove * 1e3,
        proof.path.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
}
