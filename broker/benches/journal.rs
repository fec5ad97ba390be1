//! Benchmark (issue 6): the audit journal at 1,000,000 entries — how fast
//! entries are appended (in transactions of 256, as the pipeline commits a
//! batch: one fsync each) and how fast `mev audit verify` checks them (each
//! entry, the chain, the Merkle tree against the checkpoints, and the
//! Ed25519 signature of every envelope). Prints figures; asserts nothing
//! about time. `cargo bench -p mev-broker --bench journal`; `MEV_BENCH_ENTRIES`
//! changes the count.
//!
//! First, what one durable commit costs whatever it carries: the same
//! entries appended 1, 16 and 256 to a transaction, with the CPU (user and
//! system: the fsync's work in the kernel counts) and the bytes written per
//! entry and per commit. At low load every message is a transaction of its
//! own in each store, so this fixed cost is what a quiet exchange pays.

use mev_broker::audit;
use mev_broker::register::Register;
use mev_broker::store::prelude::*;
use mev_broker::store::{Event, EventKind, Store};
use mev_devpki::{DevPki, KeyAlg};
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
        mev_cli::demo::sample_request(&register, &service, 1, "Bench".into()).into_parts(&consumer);
    let envelope = prost::Message::encode_to_vec(
        &mev_proto::envelope::seal(
            header,
            payload,
            identity.signer.as_ref(),
            &identity.certificate_chain,
        )
        .expect("seal"),
    );
    let zones: std::collections::HashMap<_, _> = register
        .agencies()
        .map(|a| (a.id.clone(), a.jurisdiction.time_zone))
        .collect();
    let event = |k: u64, at_ms: i64| Event {
        at_ms,
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

    // Entries `keys` (their times from `now` on), in one durable commit.
    let append_to = |store: &Store, keys: std::ops::Range<u64>, now: i64| {
        store
            .write(|t| {
                for k in keys {
                    t.journal()
                        .append_with(&event(k, now + k as i64), &envelope)?;
                }
                Ok(())
            })
            .expect("append");
    };

    println!(
        "durable commits: {} B signed envelopes appended as journal entries, per transaction size",
        envelope.len()
    );
    for per_txn in [1u64, 16, 256] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        store.set_zones(|| zones.clone());
        let entries = if per_txn == 1 { 2_000 } else { 16_384 };
        let now = chrono::Utc::now().timestamp_millis();
        let append = |keys| append_to(&store, keys, now);
        let before = Usage::now();
        let mut i = 0;
        while i < entries {
            let end = (i + per_txn).min(entries);
            append(i..end);
            i = end;
        }
        let used = Usage::now().since(&before);
        print_commits(&format!("{per_txn:>3} per commit"), entries, per_txn, &used);

        // The floor for comparison: the same entries, byte for byte, appended
        // to a plain file, one write and one fdatasync per commit (what an
        // append-only log would pay, before any index).
        let mut bytes = Vec::new();
        store
            .journal_scan(0, |_, entry, _| {
                bytes.push(entry.to_vec());
                true
            })
            .expect("scan");
        let path = dir.path().join("plain.log");
        let mut file = std::fs::File::create(&path).expect("log file");
        let before = Usage::now();
        for group in bytes.chunks(per_txn as usize) {
            let mut buf = Vec::new();
            for entry in group {
                buf.extend_from_slice(&(entry.len() as u32).to_le_bytes());
                buf.extend_from_slice(entry);
            }
            std::io::Write::write_all(&mut file, &buf).expect("append");
            file.sync_data().expect("fdatasync");
        }
        let used = Usage::now().since(&before);
        print_commits(
            &format!("{per_txn:>3} per fdatasync, plain file"),
            bytes.len() as u64,
            per_txn,
            &used,
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    store.set_zones(|| zones.clone());
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
        append_to(&store, i..end, now);
        // A checkpoint every 100,000 entries, as the broker writes one every 10 s.
        let crossed = end / 100_000 != i / 100_000;
        i = end;
        if crossed || i == n {
            mev_broker::audit::checkpoints::write(&store, &broker, now).expect("checkpoint");
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

/// One line of the durable-commit figures.
fn print_commits(label: &str, entries: u64, per_commit: u64, used: &Used) {
    let commits = entries.div_ceil(per_commit) as f64;
    println!(
        "  {label}: {:>6.0} entries/s; per entry {:>5.0} µs CPU, {:>5.1} KB written; per commit {:>6.0} µs CPU, {:>6.1} KB written",
        entries as f64 / used.wall,
        used.cpu * 1e6 / entries as f64,
        used.written as f64 / 1024.0 / entries as f64,
        used.cpu * 1e6 / commits,
        used.written as f64 / 1024.0 / commits
    );
}

/// This process's CPU time (user and system) and bytes written to storage.
struct Usage {
    at: Instant,
    ticks: u64,
    written: u64,
}

/// What was used between two [`Usage`] readings.
struct Used {
    wall: f64,
    /// Seconds of CPU.
    cpu: f64,
    written: u64,
}

impl Usage {
    fn now() -> Usage {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let stat = read("/proc/self/stat");
        // After the command name: utime and stime are fields 14 and 15.
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let ticks = fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0);
        let written = read("/proc/self/io")
            .lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Usage {
            at: Instant::now(),
            ticks,
            written,
        }
    }

    fn since(&self, before: &Usage) -> Used {
        Used {
            wall: self.at.duration_since(before.at).as_secs_f64().max(1e-9),
            // /proc counts in clock ticks of 1/100 s (`CLK_TCK` on Linux).
            cpu: self.ticks.saturating_sub(before.ticks) as f64 / 100.0,
            written: self.written.saturating_sub(before.written),
        }
    }
}
