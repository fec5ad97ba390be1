//! Revocation from CRL files and the per-agency rate limit (issue 8, items 3
//! and 6), over the real RabbitMQ.
//!
//! - A CRL file is reloaded on an interval, as `mev broker` does with
//!   `[pki] crls` / `crl_refresh_secs`: once the file names a certificate,
//!   messages signed with it are refused (`CertificateRevoked`) without a
//!   restart; a half-written file keeps the previous CRLs in force.
//! - The rate limit refuses an agency's requests past its burst with
//!   `RateLimited` (410) in a signed receipt, forwards none of them, leaves
//!   other agencies' budgets alone, admits again once tokens refill, and never
//!   throttles replies (UZ annex 2 §27: uninterrupted operation for all).

use mev_adapter::ReceiptInfo;
use mev_broker::pipeline::ratelimit::RateLimiter;
use mev_devpki::{serial_of, DevPki, KeyAlg};
use mev_proto::ErrorCode;
use mev_tests::{receipt, reply, reply_by_applicant_name, within, Cast, Exchange, Setup};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_subscriber::util::SubscriberInitExt;

/// How often the broker in these tests re-reads its CRL file.
const CRL_REFRESH: Duration = Duration::from_millis(200);

/// Writes `crl_der` as a PEM CRL file, atomically (write, then rename), as an
/// operator's CRL distribution job should.
fn write_crl(path: &Path, crl_der: &[u8]) {
    let pem = pem::encode(&pem::Pem::new("X509 CRL", crl_der.to_vec()));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pem).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What a `tracing` subscriber writes, kept to be read by the test.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Sends a request from the consumer signed with `identity`; its receipt.
async fn send_signed_by(
    ex: &Exchange,
    cast: &Cast,
    identity: &mev_proto::crypto::Identity,
) -> (ReceiptInfo, mev_adapter::RequestHandle) {
    let header = ex.request_header(&cast.consumer, &cast.service);
    let bytes = Exchange::seal_as(identity, header, ex.request_payload(&cast.service));
    let mut h = within("send", ex.adapter(&cast.consumer).send_raw(bytes))
        .await
        .expect("sent");
    (receipt(&mut h).await, h)
}

#[tokio::test]
async fn a_certificate_revoked_in_the_crl_file_is_refused_without_a_restart() {
    let register = mev_tests::load_register();
    let cast = Cast::choose(&register);
    let pki = DevPki::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crl_file = dir.path().join("ca.crl");
    write_crl(&crl_file, &pki.crl_der(&[]).unwrap());
    let setup = Setup {
        pki: Some(pki),
        crl_files: Some((vec![crl_file.clone()], CRL_REFRESH)),
        ..Setup::default()
    };
    let ex =
        Exchange::start_setup(&cast.attached(), reply_by_applicant_name(), setup, |_, c| c).await;

    // A second certificate of the consumer, good while the file names nothing.
    let second = ex.pki.issue(&cast.consumer, KeyAlg::Ed25519).unwrap();
    let (r, h) = send_signed_by(&ex, &cast, &second).await;
    assert!(r.accepted, "before revocation: {r:?}");
    reply(h).await;

    // The operator's CRL job writes a new file naming it; the broker keeps running.
    let serial = serial_of(&second.certificate_chain[0]).unwrap();
    write_crl(
        &crl_file,
        &ex.pki.crl_der(std::slice::from_ref(&serial)).unwrap(),
    );
    let started = Instant::now();
    let refused = loop {
        let (r, _) = send_signed_by(&ex, &cast, &second).await;
        if !r.accepted {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the revoked certificate was still accepted 10 s after the CRL file changed"
        );
        tokio::time::sleep(CRL_REFRESH / 2).await;
    };
    assert_eq!(
        refused.code,
        ErrorCode::CertificateRevoked.as_code(),
        "{refused:?}"
    );
    eprintln!(
        "revocation took effect {:?} after the file changed",
        started.elapsed()
    );

    // A torn write (an operator's copy cut short) keeps the previous CRLs.
    // Not "still revoked after a while": still revoked after the refresh
    // read the torn file and said so. The refresh task runs on this test's
    // thread (a current-thread runtime), where its warning is captured.
    let log = Captured::default();
    let _capture = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_ansi(false)
        .with_writer(log.clone())
        .finish()
        .set_default();
    std::fs::write(&crl_file, "-----BEGIN X509 CRL-----\nMIIB").unwrap();
    within(
        "the CRL refresh to read the torn file and keep the previous CRLs",
        async {
            while !log
                .text()
                .contains("CRL refresh failed; keeping the previous CRLs")
            {
                tokio::time::sleep(CRL_REFRESH / 4).await;
            }
        },
    )
    .await;
    let (r, _) = send_signed_by(&ex, &cast, &second).await;
    assert_eq!(
        r.code,
        ErrorCode::CertificateRevoked.as_code(),
        "a broken CRL file must not un-revoke: {r:?}"
    );

    // The consumer's own certificate, never revoked, still works.
    ex.round_trip(&cast.consumer, &cast.service, "documents")
        .await;
    ex.cleanup().await;
}

#[tokio::test]
async fn an_agency_over_its_rate_is_refused_and_others_are_not_starved() {
    const PER_SECOND: f64 = 2.0;
    const BURST: u32 = 5;
    const SENT: usize = 20;
    let register = mev_tests::load_register();
    let cast = Cast::choose(&register);
    // A second consumer of the same service, with a budget of its own.
    let other = cast
        .service
        .consumers
        .iter()
        .map(|c| c.agency.clone())
        .find(|id| *id != cast.consumer && *id != cast.provider)
        .expect("a second agency allowed to request the service");
    let setup = Setup {
        rate_limit: Some(Arc::new(RateLimiter::new(PER_SECOND, BURST))),
        ..Setup::default()
    };
    let mut agencies = cast.attached().to_vec();
    agencies.push(other.as_str());
    let ex = Exchange::start_setup(&agencies, reply_by_applicant_name(), setup, |_, c| c).await;

    // The consumer sends 20 at once: a burst of 5 (and what refills meanwhile) passes.
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..SENT {
        let h = within(
            "send",
            ex.adapter(&cast.consumer)
                .send_request(ex.request(&cast.service, "documents")),
        )
        .await
        .expect("sent");
        handles.push(h);
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    for mut h in handles {
        let r = receipt(&mut h).await;
        if r.accepted {
            accepted.push(h);
        } else {
            assert_eq!(r.code, ErrorCode::RateLimited.as_code(), "{r:?}");
            assert!(r.reason.contains("messages a second"), "{r:?}");
            refused += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let most = BURST as usize + (elapsed * PER_SECOND).ceil() as usize;
    eprintln!(
        "{} accepted, {refused} refused in {elapsed:.2} s (at most {most} allowed)",
        accepted.len()
    );
    assert!(
        accepted.len() >= BURST as usize && accepted.len() <= most,
        "{} accepted; the burst is {BURST} and at most {most} fit in {elapsed:.2} s",
        accepted.len()
    );
    assert_eq!(accepted.len() + refused, SENT);

    // Every admitted request is answered: the provider's replies (as many as
    // the burst, at once) are not throttled.
    let n = accepted.len();
    for h in accepted {
        reply(h).await;
    }
    // Nothing refused was forwarded.
    assert_eq!(ex.handled_count(&cast.provider), n);

    // Another agency's budget is untouched by the consumer's flood.
    for _ in 0..BURST {
        let mut h = within(
            "send",
            ex.adapter(&other)
                .send_request(ex.request(&cast.service, "documents")),
        )
        .await
        .expect("sent");
        let r = receipt(&mut h).await;
        assert!(r.accepted, "{other} is within its own budget: {r:?}");
        reply(h).await;
    }

    // Tokens refill: after a second, the consumer may send again.
    tokio::time::sleep(Duration::from_secs_f64(1.5 / PER_SECOND * 2.0)).await;
    ex.round_trip(&cast.consumer, &cast.service, "documents")
        .await;
    let snap = ex
        .counters_when("the refusals counted", |s| {
            s.rejected.get(&ErrorCode::RateLimited.as_code()).copied() == Some(refused as u64)
        })
        .await;
    assert_eq!(snap.rejected.len(), 1, "{:?}", snap.rejected);
    ex.cleanup().await;
}
