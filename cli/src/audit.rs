//! `mev audit …`: the auditor's commands.

use anyhow::Context as _;
use mev_adapter::transport::amqp::{Amqp, AmqpConfig};
use mev_adapter::transport::{Outgoing, Route, Transport};
use mev_broker::audit::{self, InclusionProof};
use mev_broker::journal::entry::Entry;
use mev_broker::store::prelude::*;
use mev_broker::store::Store;
use mev_proto::crypto::RingVerifier;
use mev_proto::trust::TrustStore;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// The auditor's commands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every entry, the hash chain, the Merkle tree against every signed
    /// checkpoint, and every stored signature; names the first bad entry.
    Verify {
        /// The broker's data directory (holding broker.redb).
        #[arg(long)]
        data: PathBuf,
        /// Trusted CA certificates (PEM): also check that every signer's
        /// certificate chained to them and was bound to the signer at the time.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The sealed segment files (from `mev audit seal`), checked too.
        #[arg(long)]
        segments: Option<PathBuf>,
    },
    /// The whole history of a request and its reply, in local time.
    Trace {
        /// The broker's data directory (holding broker.redb; the broker stopped, or a copy).
        #[arg(long)]
        data: PathBuf,
        /// The message id (a request's, or any message's).
        message_id: String,
        /// Sealed segment files, for entries no longer in the live store.
        #[arg(long)]
        segments: Option<PathBuf>,
    },
    /// Entries as JSON lines.
    Export {
        /// The broker's data directory (holding broker.redb; the broker stopped, or a copy).
        #[arg(long)]
        data: PathBuf,
        /// From this time (RFC 3339, or a date = its UTC midnight).
        #[arg(long)]
        from: Option<String>,
        /// Before this time.
        #[arg(long)]
        to: Option<String>,
        /// Only entries whose sender or recipient is this agency.
        #[arg(long)]
        agency: Option<String>,
        /// Include each envelope (hex).
        #[arg(long)]
        envelopes: bool,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// An inclusion proof of the entry recording a message, as JSON.
    Prove {
        /// The broker's data directory (holding broker.redb; the broker stopped, or a copy).
        #[arg(long)]
        data: PathBuf,
        /// The message id (a request's, or any message's).
        message_id: String,
        /// Sealed segment files, for entries no longer in the live store.
        #[arg(long)]
        segments: Option<PathBuf>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a proof offline against its signed checkpoint.
    CheckProof {
        /// The proof (JSON, from `mev audit prove`).
        proof: PathBuf,
        /// Trusted CA certificates (PEM) that the broker's certificate must chain to.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Move entries up to a point out of the live store into a segment file
    /// that chains to the previous one (retention; the broker must be stopped).
    Seal {
        /// The broker's data directory (holding broker.redb; the broker stopped, or a copy).
        #[arg(long)]
        data: PathBuf,
        /// Seal the entries recorded before this time (RFC 3339 or a date).
        #[arg(long, conflicts_with = "upto")]
        before: Option<String>,
        /// Seal the entries before this sequence number.
        #[arg(long)]
        upto: Option<u64>,
        /// The directory of segment files.
        #[arg(long)]
        into: PathBuf,
    },
    /// Re-publish the messages accepted in a time range to a queue, marked as
    /// replays (AMQP message id `replay:<id>`; the bytes are the original,
    /// signed envelopes).
    Replay {
        /// The broker's data directory (holding broker.redb; the broker stopped, or a copy).
        #[arg(long)]
        data: PathBuf,
        /// From this time (RFC 3339, or a date = its UTC midnight).
        #[arg(long)]
        from: String,
        /// Before this time.
        #[arg(long)]
        to: String,
        /// The queue (it must exist).
        #[arg(long)]
        into: String,
        /// RabbitMQ (default: $AMQP_URL or the local one).
        #[arg(long)]
        amqp: Option<String>,
        /// For amqps://: the PEM CA that issued RabbitMQ's certificate.
        #[arg(long, env = "MEV_AMQP_TLS_CA")]
        tls_ca: Option<PathBuf>,
        /// A client certificate (PEM chain) for the TLS listener, with --tls-key.
        #[arg(long, env = "MEV_AMQP_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The client certificate's PKCS#8 key (PEM).
        #[arg(long, env = "MEV_AMQP_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

/// Parses RFC 3339 or a bare date (its UTC midnight) into ms since the epoch.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .timestamp_millis());
    }
    anyhow::bail!("{s:?}: use RFC 3339 (2026-11-22T10:00:00+05:00) or a date (2026-11-22)")
}

fn open_store(data: &Path) -> anyhow::Result<Store> {
    let file = data.join("broker.redb");
    if !file.is_file() {
        anyhow::bail!("no broker store at {}", file.display());
    }
    Store::open(data).with_context(|| format!("opening {}", file.display()))
}

fn load_trust(ca: &Option<PathBuf>) -> anyhow::Result<Option<TrustStore>> {
    match ca {
        None => Ok(None),
        Some(p) => {
            let pem =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Ok(Some(TrustStore::from_pem(&pem).context("CA certificates")?))
        }
    }
}

fn output(out: &Option<PathBuf>) -> anyhow::Result<Box<dyn std::io::Write>> {
    Ok(match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    })
}

/// Runs one audit command.
pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { data, ca, segments } => {
            let store = open_store(&data)?;
            let trust = load_trust(&ca)?;
            let started = Instant::now();
            let verifier = RingVerifier::new();
            let total = store.journal_head()?.0;
            let mut bar = Progress::new("verifying", total);
            let report = audit::verify(
                &store,
                &verifier,
                trust.as_ref(),
                segments.as_deref(),
                |n| bar.set(n),
            )?;
            bar.done();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{} entries, {} signatures{}, {} checkpoints, {} segments checked in {secs:.2} s ({:.0} entries/s)",
                report.entries,
                report.signatures,
                if report.chains_checked {
                    " (chains to the CA checked)"
                } else {
                    " (keys only; give --ca to check the chains)"
                },
                report.checkpoints,
                report.segments,
                report.entries as f64 / secs.max(1e-9)
            );
            if report.unchecked_sealed > 0 {
                println!(
                    "entries before {} are sealed in segment files; give --segments DIR to check them too",
                    report.unchecked_sealed
                );
            }
            match report.problem {
                None => {
                    println!("journal verified: nothing altered, removed, reordered or truncated");
                    Ok(ExitCode::SUCCESS)
                }
                Some(p) => {
                    println!("TAMPERED: {p}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Trace {
            data,
            message_id,
            segments,
        } => {
            let store = open_store(&data)?;
            let entries = audit::trace(&store, &message_id, segments.as_deref())?;
            if entries.is_empty() {
                println!("no journal entry is about {message_id}");
                return Ok(ExitCode::from(1));
            }
            for e in &entries {
                print_entry(e);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            data,
            from,
            to,
            agency,
            envelopes,
            out,
        } => {
            let store = open_store(&data)?;
            let from = from
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(i64::MIN);
            let to = to
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(i64::MAX);
            let mut w = output(&out)?;
            let mut n = 0u64;
            let mut failure = None;
            let mut bar = Progress::new("exporting", store.journal_head()?.0);
            store.journal_scan(0, |seq, bytes, _| {
                bar.set(seq + 1);
                let e = match Entry::decode(bytes) {
                    Ok(e) => e,
                    Err(e) => {
                        failure = Some(format!("entry {seq}: {e}"));
                        return false;
                    }
                };
                let ev = &e.head.event;
                if !(from..to).contains(&ev.at_ms) {
                    return true;
                }
                if let Some(a) = &agency {
                    if &ev.sender != a && &ev.recipient != a {
                        return true;
                    }
                }
                let mut v = match serde_json::to_value(&e.head) {
                    Ok(v) => v,
                    Err(err) => {
                        failure = Some(err.to_string());
                        return false;
                    }
                };
                if envelopes && !e.envelope.is_empty() {
                    v["envelope"] =
                        mev_broker::journal::checkpoint::to_hex_bytes(&e.envelope).into();
                }
                if let Err(err) = writeln!(w, "{v}") {
                    failure = Some(err.to_string());
                    return false;
                }
                n += 1;
                true
            })?;
            bar.done();
            if let Some(f) = failure {
                anyhow::bail!("export stopped: {f}");
            }
            w.flush()?;
            eprintln!("{n} entries exported");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Prove {
            data,
            message_id,
            segments,
            out,
        } => {
            let store = open_store(&data)?;
            let proof = audit::prove(&store, &message_id, segments.as_deref())?;
            let mut w = output(&out)?;
            serde_json::to_writer_pretty(&mut w, &proof)?;
            writeln!(w)?;
            w.flush()?;
            eprintln!(
                "entry {} of {} under the checkpoint signed by {}; {} path hashes",
                proof.index,
                proof.checkpoint.size,
                proof.checkpoint.broker,
                proof.path.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::CheckProof { proof, ca } => {
            let text = std::fs::read_to_string(&proof)
                .with_context(|| format!("reading {}", proof.display()))?;
            let proof: InclusionProof = serde_json::from_str(&text).context("the proof")?;
            let trust = load_trust(&ca)?;
            match audit::check_proof(&proof, &RingVerifier::new(), trust.as_ref()) {
                Ok(entry) => {
                    println!(
                        "proof holds: entry {} is in the journal of {} entries signed by {} ({})",
                        proof.index,
                        proof.checkpoint.size,
                        proof.checkpoint.broker,
                        if trust.is_some() {
                            "certificate checked against the CA"
                        } else {
                            "signature checked with the certificate in the proof; give --ca to check it"
                        }
                    );
                    print_entry(&entry);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("PROOF FAILS: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Seal {
            data,
            before,
            upto,
            into,
        } => {
            let store = open_store(&data)?;
            let upto = match (upto, before) {
                (Some(u), _) => u,
                (None, Some(t)) => {
                    let t = parse_time(&t)?;
                    let mut upto = store.journal_sealed_upto()?;
                    store.journal_scan(upto, |seq, bytes, _| match Entry::decode(bytes) {
                        Ok(e) if e.head.event.at_ms < t => {
                            upto = seq + 1;
                            true
                        }
                        _ => false,
                    })?;
                    // Not past an envelope the outbox still has to publish.
                    match store.outbox_oldest_entry()? {
                        Some(pending) if pending < upto => {
                            println!(
                                "entry {pending} holds an envelope still waiting in the outbox: sealing up to it"
                            );
                            pending
                        }
                        _ => upto,
                    }
                }
                (None, None) => anyhow::bail!("give --before TIME or --upto SEQ"),
            };
            let now = chrono::Utc::now().timestamp_millis();
            let path = mev_broker::audit::segment::seal(&store, upto, &into, now)?;
            println!("sealed entries up to {upto} into {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Replay {
            data,
            from,
            to,
            into,
            amqp,
            tls_ca,
            tls_cert,
            tls_key,
        } => {
            let tls = match &tls_ca {
                Some(ca) => Some(
                    mev_adapter::transport::amqp::AmqpTls::from_files(
                        ca,
                        tls_cert.as_deref().zip(tls_key.as_deref()),
                    )
                    .context("TLS files")?,
                ),
                None => None,
            };
            let store = open_store(&data)?;
            let messages = audit::replay_range(&store, parse_time(&from)?, parse_time(&to)?)?;
            let url = amqp
                .or_else(|| std::env::var("AMQP_URL").ok())
                .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let n = messages.len();
            rt.block_on(async {
                let transport = Amqp::new(
                    "mev-replay",
                    AmqpConfig {
                        tls,
                        ..AmqpConfig::new(url)
                    },
                );
                transport
                    .connect()
                    .await
                    .context("connecting to RabbitMQ")?;
                replay(&transport, &into, messages).await
            })?;
            println!("{n} messages replayed into {into}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A progress line with rate and percentage on a terminal's stderr, at most
/// five times a second; nothing when stderr is not a terminal.
struct Progress {
    what: &'static str,
    total: u64,
    started: Instant,
    shown: Instant,
    tty: bool,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Self {
        let now = Instant::now();
        Progress {
            what,
            total,
            started: now,
            shown: now,
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    fn set(&mut self, n: u64) {
        if !self.tty || self.shown.elapsed().as_millis() < 200 {
            return;
        }
        self.shown = Instant::now();
        self.draw(n);
    }

    fn draw(&self, n: u64) {
        let rate = n as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let pct = if self.total > 0 {
            (n as f64 / self.total as f64 * 100.0).min(100.0)
        } else {
            100.0
        };
        let filled = (pct / 5.0) as usize;
        eprint!(
            "\r{} [{}{}] {pct:5.1}% {n}/{} entries, {rate:.0}/s   ",
            self.what,
            "#".repeat(filled),
            " ".repeat(20 - filled.min(20)),
            self.total
        );
    }

    fn done(&self) {
        if self.tty {
            self.draw(self.total);
            eprintln!();
        }
    }
}

/// Publishes `messages` to queue `into`, marked as replays, confirms awaited.
pub async fn replay<T: Transport>(
    transport: &T,
    into: &str,
    messages: Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    for chunk in messages.chunks(256) {
        let batch = chunk
            .iter()
            .map(|(id, body)| Outgoing {
                route: Route::Queue(into.to_string()),
                body: body.as_slice().into(),
                message_id: format!("replay:{id}"),
            })
            .collect();
        for r in transport.publish_batch(batch).await {
            r.with_context(|| format!("publishing to {into}"))?;
        }
    }
    Ok(())
}

fn print_entry(e: &Entry) {
    let ev = &e.head.event;
    let when = if e.head.sender_local.is_empty() {
        e.head.at_utc.clone()
    } else {
        e.head.sender_local.clone()
    };
    let mut line = format!(
        "#{:<6} {when}  {:<18} {} -> {}",
        e.head.seq,
        format!("{:?}", ev.kind),
        if ev.sender.is_empty() {
            "?"
        } else {
            &ev.sender
        },
        if ev.recipient.is_empty() {
            "?"
        } else {
            &ev.recipient
        },
    );
    line.push_str(&format!("  message {}", ev.message_id));
    if !ev.in_reply_to.is_empty() {
        line.push_str(&format!(" (re {})", ev.in_reply_to));
    }
    if ev.code != 0 {
        line.push_str(&format!("  code {}", ev.code));
    }
    if !ev.reason.is_empty() {
        line.push_str(&format!("  {}", ev.reason));
    }
    if let Some(d) = ev
        .deadline_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
    {
        line.push_str(&format!(
            "  deadline {}",
            d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    if let Some(l) = ev.late_by_ms {
        line.push_str(&format!("  late by {:.1} s", l as f64 / 1000.0));
    }
    if !e.envelope.is_empty() {
        line.push_str(&format!("  [signed envelope, {} bytes]", e.envelope.len()));
    }
    println!("{line}");
}
