//! Memory: a flood of hostile messages, and the resident set it leaves.

use super::*;

/// The process's resident and peak resident set, in KiB.
pub(crate) fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Makes the `i`th message of one hostile kind.
pub(crate) type MakeMessage = Box<dyn Fn(u64) -> Vec<u8>>;

/// The hostile kinds of the memory run, cycled through; every 50th message
/// is one of the two big ones.
pub(crate) struct Mix {
    pub(crate) small: Vec<(ErrorCode, MakeMessage)>,
    pub(crate) big: Vec<(ErrorCode, Arc<[u8]>)>,
}

impl Mix {
    pub(crate) fn new(c: &Corpus) -> Mix {
        let consumer = c.consumer.clone();
        let outsider = c.ex.pki.issue(&c.cast.outsider, KeyAlg::Ed25519).unwrap();
        let good = c.sealed();
        let payload = c.payload();
        // A fresh valid header each time (new id), so nothing is a duplicate.
        let fresh = {
            let h = c.header();
            move |i: u64| {
                let mut h = h.clone();
                h.message_id = uuid::Uuid::new_v4().to_string();
                h.applicant.as_mut().unwrap().full_name = format!("Applicant {i}");
                h
            }
        };
        let mut small: Vec<(ErrorCode, MakeMessage)> = Vec::new();
        small.push((
            ErrorCode::Malformed,
            Box::new(move |i| {
                // Pseudo-random bytes behind an impossible wire type.
                let mut b = vec![0x0f];
                let mut x = i.wrapping_mul(6364136223846793005).wrapping_add(1);
                for _ in 0..300 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b.push((x >> 33) as u8);
                }
                b
            }),
        ));
        {
            // Cut anywhere inside the header field (whose length then runs
            // past the end).
            let good = good.clone();
            let field = len_field(1, &Envelope::decode(good.as_slice()).unwrap().header).len();
            small.push((
                ErrorCode::Malformed,
                Box::new(move |i| good[..1 + (i as usize % (field - 1))].to_vec()),
            ));
        }
        small.push((
            ErrorCode::Malformed,
            Box::new(|_| cat(&[&key(15, 3).repeat(150), &key(15, 4).repeat(150)])),
        ));
        {
            let (fresh, consumer, payload) = (fresh.clone(), consumer.clone(), payload.clone());
            small.push((
                ErrorCode::MalformedHeader,
                Box::new(move |i| {
                    let h = header_bytes_with(fresh(i), &payload, &len_field(4, b"\xff\xfe"));
                    sign_bytes(&consumer, h, payload.clone())
                }),
            ));
        }
        {
            let (fresh, consumer, payload) = (fresh.clone(), consumer.clone(), payload.clone());
            small.push((
                ErrorCode::TooManyItems,
                Box::new(move |i| {
                    let mut h = fresh(i);
                    h.documents = vec![h.documents[0].clone(); 300];
                    Exchange::seal_as(&consumer, h, payload.clone())
                }),
            ));
        }
        {
            let (fresh, payload) = (fresh.clone(), payload.clone());
            small.push((
                ErrorCode::CertificateAgencyMismatch,
                Box::new(move |i| Exchange::seal_as(&outsider, fresh(i), payload.clone())),
            ));
        }
        {
            let (fresh, consumer, payload) = (fresh.clone(), consumer.clone(), payload.clone());
            small.push((
                ErrorCode::PayloadDigestMismatch,
                Box::new(move |i| {
                    let bytes = Exchange::seal_as(&consumer, fresh(i), payload.clone());
                    let mut env = Envelope::decode(bytes.as_slice()).unwrap();
                    env.payload.push(0);
                    env.encode_to_vec()
                }),
            ));
        }
        {
            let (fresh, consumer) = (fresh.clone(), consumer.clone());
            small.push((
                ErrorCode::BadSignature,
                Box::new(move |i| {
                    let bytes = Exchange::seal_as(&consumer, fresh(i), payload.clone());
                    let mut env = Envelope::decode(bytes.as_slice()).unwrap();
                    env.signature.as_mut().unwrap().value[3] ^= 0x40;
                    env.encode_to_vec()
                }),
            ));
        }
        // The big ones are the same bytes each time: refused before the
        // dedup index, so a repeat is as hostile as the first.
        let many_docs = {
            let h = header_bytes_with(fresh(0), &c.payload(), &[0x52, 0x00].repeat(1_500_000));
            sign_bytes(&consumer, h, c.payload())
        };
        let oversized = {
            let mut env = Envelope::decode(good.as_slice()).unwrap();
            env.payload = vec![0x55; Limits::default().max_message_bytes];
            env.encode_to_vec()
        };
        Mix {
            small,
            big: vec![
                (ErrorCode::TooManyItems, many_docs.into()),
                (ErrorCode::TooLarge, oversized.into()),
            ],
        }
    }

    /// The `i`th message and the code it must be refused with.
    pub(crate) fn message(&self, i: u64) -> (ErrorCode, Arc<[u8]>) {
        if i % 50 == 49 {
            let (code, bytes) = &self.big[(i / 50) as usize % self.big.len()];
            (*code, bytes.clone())
        } else {
            let (code, make) = &self.small[i as usize % self.small.len()];
            (*code, make(i).into())
        }
    }
}

/// Publishes messages `from..to` of `mix` in batches and waits until the
/// broker has refused them all; returns the bytes published and the bytes
/// the journal keeps of them (at most 64 KiB of each refused message, 4 KiB
/// of garbage).
pub(crate) async fn flood(ex: &Exchange, mix: &Mix, from: u64, to: u64) -> (u64, u64) {
    let before = ex.counters();
    let mut expected = std::collections::BTreeMap::<u32, u64>::new();
    let (mut sent, mut kept) = (0u64, 0u64);
    let mut i = from;
    while i < to {
        let end = (i + 50).min(to);
        let batch: Vec<Outgoing> = (i..end)
            .map(|j| {
                let (code, body) = mix.message(j);
                *expected.entry(code.as_code()).or_default() += 1;
                sent += body.len() as u64;
                // Nobody can be held to what does not decode far enough to
                // name its sender: the journal keeps less of it.
                let keep = match code {
                    ErrorCode::Malformed | ErrorCode::MalformedHeader | ErrorCode::TooLarge => {
                        KEEP_GARBAGE
                    }
                    _ => KEEP_REFUSED,
                };
                kept += body.len().min(keep) as u64;
                Outgoing {
                    route: Route::Ingress,
                    body,
                    message_id: String::new(),
                }
            })
            .collect();
        for r in within(
            "a hostile batch published",
            ex.transport.publish_batch(batch),
        )
        .await
        {
            r.expect("published");
        }
        i = end;
    }
    let n = to - from;
    let deadline = tokio::time::Instant::now() + 4 * WAIT;
    let after = loop {
        let s = ex.counters();
        if refusals(&s) >= refusals(&before) + n {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker refused {} of {n} in time",
            refusals(&s) - refusals(&before)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (code, count) in expected {
        let got = after.rejected.get(&code).copied().unwrap_or(0)
            - before.rejected.get(&code).copied().unwrap_or(0);
        assert_eq!(got, count, "refusals with code {code}");
    }
    assert_eq!(after.forwarded, before.forwarded, "nothing forwarded");
    (sent, kept)
}

/// 2,000 hostile messages (300 B to 4 MiB; every 50th is one of the two
/// big kinds, a 3 MB header of 1.5 million documents or an oversized 4 MiB
/// envelope: about 150 MB in all) leave the broker's memory bounded by what
/// its journal keeps.
///
/// The broker runs in this process with an in-memory store, and the journal
/// deliberately keeps every refused message (its first 64 KiB at most, 4 KiB
/// of garbage) with
/// its event and, where the sender is known, its signed receipt; memory must
/// grow with that and with nothing else. That costs more than the kept bytes:
/// redb rounds a large value's allocation up to a power of two (up to 2x),
/// the in-memory backend and redb's page cache each hold every page (2x),
/// copy-on-write keeps superseded pages until later commits free them and
/// B-tree pages are half empty after splits (up to 2x each); measured, the
/// growth is 5 to 10 times the kept bytes for every kind in the mix. Allowed:
/// 12 x the kept bytes plus 48 MiB (allocator slack after the big decodes,
/// lapin's buffers, the consumer's adapter recording ~1,000 receipts). Keeping
/// the hostile bytes themselves (~150 MB) or one decoded million-document
/// header (~100 MB) would cross it.
///
/// It reads the resident set of the whole process, which the other tests of
/// this binary (faults, 10,000 requests) would grow while it runs; so it runs
/// alone, in a process of its own: this binary started again with only this
/// test (see [`alone`]).
#[tokio::test]
pub(crate) async fn memory_stays_bounded_under_2000_hostile_messages() {
    const N: u64 = 2000;
    if !alone("hostile::memory::memory_stays_bounded_under_2000_hostile_messages").await {
        return;
    }
    let _serial = SERIAL.lock().await;
    let c = Corpus::start().await;
    let mix = Mix::new(&c);
    // Warm up: every kind twice, big ones included, and a round trip.
    flood(&c.ex, &mix, 0, 200).await;
    c.ex.round_trip(&c.cast.consumer, &c.cast.service, "documents")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss0, hwm0) = rss_kib();
    let (sent, kept) = flood(&c.ex, &mix, 200, 200 + N).await;
    c.ex.round_trip(&c.cast.consumer, &c.cast.service, "documents")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss1, hwm1) = rss_kib();
    let growth = rss1.saturating_sub(rss0);
    let bound = 12 * kept / 1024 + 48 * 1024;
    eprintln!(
        "{N} hostile messages, {:.1} MiB published, {:.1} MiB kept by the journal: \
         VmRSS {rss0} -> {rss1} KiB (growth {growth} KiB, bound {bound} KiB), \
         VmHWM {hwm0} -> {hwm1} KiB",
        sent as f64 / 1048576.0,
        kept as f64 / 1048576.0
    );
    assert!(
        growth < bound,
        "RSS grew by {growth} KiB for {N} hostile messages (bound {bound} KiB)"
    );
    assert_eq!(c.ex.inbox_depth(&c.bystander()).await, 0);
    c.ex.cleanup().await;
}

/// Set in the process [`alone`] starts.
const ALONE: &str = "MEV_TEST_ALONE";

/// Whether the calling test should run its body here: true in the process
/// this starts; otherwise starts this test binary again with only `test`
/// (exact name, one thread), waits for it (bounded), passes its output on
/// and fails unless exactly that one test ran and passed; then false.
pub(crate) async fn alone(test: &str) -> bool {
    if std::env::var_os(ALONE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = std::process::Command::new(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    let pid = child.id();
    // Read in threads, so a full pipe cannot stall the child.
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut text);
            }
            text
        })
    };
    let (stdout, stderr) = (
        read(stdout.map(|p| Box::new(p) as _)),
        read(stderr.map(|p| Box::new(p) as _)),
    );
    let limit = 10 * WAIT;
    let waited =
        tokio::time::timeout(limit, tokio::task::spawn_blocking(move || child.wait())).await;
    let status = match waited {
        Ok(Ok(Ok(status))) => status,
        Ok(other) => panic!("waiting for {test} alone in process {pid}: {other:?}"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("{test} alone in its own process (pid {pid}) did not finish within {limit:?}")
        }
    };
    let out = std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Passed on with a prefix: the closing count of `scripts/test` sums the
    // lines that begin with "test result:", and this run is counted once, here.
    for line in stdout
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        println!("[alone] {line}");
    }
    assert!(
        out.status.success(),
        "{test} alone in its own process failed ({})",
        out.status
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("test result: ok. 1 passed; 0 failed")),
        "{test} did not run alone in its own process (no \"1 passed\" in its output)"
    );
    false
}
