//! Clock, histograms and the CPU and disk use beside each figure.

use super::*;

/// When the bench started.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the bench started: the timestamps carried in relay messages.
pub(crate) fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `t` in nanoseconds since the bench started.
pub(crate) fn ns_of(t: tokio::time::Instant) -> u64 {
    u64::try_from(t.into_std().saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// A latency histogram in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) async fn step<F: std::future::Future>(what: &str, f: F) -> anyhow::Result<F::Output> {
    tokio::time::timeout(STEP, f)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {STEP:?} waiting for {what}"))
}

/// CPU time used so far (clock ticks): this process, RabbitMQ's Erlang VM
/// (`beam.smp`, if found), and the whole machine (busy and total).
#[derive(Clone, Copy)]
pub(crate) struct Cpu {
    pub(crate) at: Instant,
    pub(crate) own: u64,
    pub(crate) rabbit: Option<u64>,
    pub(crate) busy: u64,
    pub(crate) total: u64,
    /// Bytes this process caused to be written to storage (`/proc/self/io`).
    pub(crate) written: u64,
}

/// What was used between two [`Cpu`] readings.
#[derive(Clone, Copy, Default)]
pub(crate) struct CpuUse {
    /// Cores' worth of CPU this process used (1.0 = one core all the time).
    pub(crate) own: f64,
    /// The same for RabbitMQ.
    pub(crate) rabbit: Option<f64>,
    /// How busy the whole machine was (all its cores, every process).
    pub(crate) machine: f64,
    /// Megabytes this process wrote to storage.
    pub(crate) written_mb: f64,
}

/// Clock ticks per second of /proc (`CLK_TCK`, 100 on Linux).
pub(crate) const TICKS: f64 = 100.0;

impl Cpu {
    pub(crate) fn now() -> Cpu {
        fn process(pid: &str) -> Option<u64> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        }
        static RABBIT: OnceLock<Option<String>> = OnceLock::new();
        let rabbit = RABBIT.get_or_init(|| {
            std::fs::read_dir("/proc")
                .ok()?
                .filter_map(Result::ok)
                .find_map(|e| {
                    let pid = e.file_name().to_string_lossy().to_string();
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                    (comm.trim() == "beam.smp").then_some(pid)
                })
        });
        let (busy, total) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.to_string();
                let v: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                let total: u64 = v.iter().take(8).sum();
                let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                Some((total - idle, total))
            })
            .unwrap_or((0, 0));
        Cpu {
            at: Instant::now(),
            own: process("self").unwrap_or(0),
            rabbit: rabbit.as_deref().and_then(process),
            busy,
            total,
            written: std::fs::read_to_string("/proc/self/io")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("write_bytes:"))
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0),
        }
    }

    pub(crate) fn since(&self, before: &Cpu) -> CpuUse {
        let wall = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        CpuUse {
            own: self.own.saturating_sub(before.own) as f64 / TICKS / wall,
            rabbit: match (self.rabbit, before.rabbit) {
                (Some(a), Some(b)) => Some(a.saturating_sub(b) as f64 / TICKS / wall),
                _ => None,
            },
            machine: self.busy.saturating_sub(before.busy) as f64
                / self.total.saturating_sub(before.total).max(1) as f64,
            written_mb: self.written.saturating_sub(before.written) as f64 / 1e6,
        }
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CPU: this process {:.2} cores", self.own)?;
        if let Some(r) = self.rabbit {
            write!(f, ", RabbitMQ {r:.2} cores")?;
        }
        write!(
            f,
            "; machine {:.0}% busy; this process wrote {:.1} MB to disk",
            self.machine * 100.0,
            self.written_mb
        )
    }
}

/// A fixed schedule: message `k` is due at `start + k / rate`.
#[derive(Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) start: tokio::time::Instant,
    pub(crate) rate: f64,
    pub(crate) total: u64,
    /// Messages due before this are warm-up: sent, not recorded.
    pub(crate) warm_until: tokio::time::Instant,
}

impl Schedule {
    pub(crate) fn new(rate: f64, secs: u64) -> Schedule {
        let start = tokio::time::Instant::now() + Duration::from_millis(20);
        let warm = Duration::from_secs(secs)
            .div_f64(5.0)
            .min(Duration::from_secs(2));
        Schedule {
            start,
            rate,
            total: (rate * secs as f64).round().max(1.0) as u64,
            warm_until: start + warm,
        }
    }

    pub(crate) fn at(&self, k: u64) -> tokio::time::Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// Calls `send(k, due)` for every message in order, each as soon as it
    /// is due (never earlier; late if the caller is slow: the latency is
    /// measured from `due` all the same).
    pub(crate) async fn run<F, Fut>(&self, mut send: F) -> anyhow::Result<()>
    where
        F: FnMut(u64, tokio::time::Instant) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let mut k = 0u64;
        while k < self.total {
            tokio::time::sleep_until(self.at(k)).await;
            let now = tokio::time::Instant::now();
            while k < self.total && self.at(k) <= now {
                send(k, self.at(k)).await?;
                k += 1;
            }
        }
        Ok(())
    }
}

/// One open-loop step's outcome.
pub(crate) struct LatencyStep {
    pub(crate) offered: f64,
    pub(crate) sent: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) hist: Histogram<u64>,
    pub(crate) first_error: Option<String>,
    pub(crate) cpu: CpuUse,
    /// The broker's own timings (exchange steps only).
    pub(crate) broker: Option<BrokerTimes>,
    /// One way, scheduled send → the provider's handler (exchange steps only).
    pub(crate) oneway: Option<Histogram<u64>>,
}

/// What the broker's histograms saw between two readings.
pub(crate) struct BrokerTimes {
    /// A batch's processing: checks, one store transaction, acks (it does
    /// not include the wait for the batch to fill).
    pub(crate) routing: HistogramSnapshot,
    /// A request's acceptance to its reply's acceptance.
    pub(crate) reply: HistogramSnapshot,
    /// The broker store's checkpoints in between: how many, their time in
    /// all (s), and the longest since the store was opened (s).
    pub(crate) checkpoints: (u64, f64, f64),
}

impl BrokerTimes {
    pub(crate) fn between(
        after: &Counters,
        routing: &HistogramSnapshot,
        reply: &HistogramSnapshot,
        log_before: mev_store::wal::Stats,
        log_after: mev_store::wal::Stats,
    ) -> Self {
        fn delta(a: HistogramSnapshot, b: &HistogramSnapshot) -> HistogramSnapshot {
            HistogramSnapshot {
                cumulative: a
                    .cumulative
                    .iter()
                    .zip(&b.cumulative)
                    .map(|(x, y)| x.saturating_sub(*y))
                    .collect(),
                count: a.count.saturating_sub(b.count),
                sum: a.sum - b.sum,
                bounds: a.bounds,
            }
        }
        BrokerTimes {
            routing: delta(after.routing.snapshot(), routing),
            reply: delta(after.reply.snapshot(), reply),
            checkpoints: (
                log_after.checkpoints - log_before.checkpoints,
                log_after.checkpoint_secs - log_before.checkpoint_secs,
                log_after.checkpoint_max_secs,
            ),
        }
    }
}

impl std::fmt::Display for BrokerTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: Option<f64>| v.map_or("-".into(), |s| format!("{:.1}", s * 1e3));
        write!(
            f,
            "broker: batch processing mean {} ms (p99 ≈ {} ms); request accepted → reply \
             accepted mean {} ms (p99 ≈ {} ms); store checkpoints {} (mean {} ms, longest since \
             start {} ms)",
            ms(self.routing.mean()),
            ms(self.routing.quantile(0.99)),
            ms(self.reply.mean()),
            ms(self.reply.quantile(0.99)),
            self.checkpoints.0,
            ms((self.checkpoints.0 > 0).then(|| self.checkpoints.1 / self.checkpoints.0 as f64)),
            ms(Some(self.checkpoints.2)),
        )
    }
}

impl LatencyStep {
    /// The one-way `q` quantile (exchange steps), zero when not measured.
    pub(crate) fn oneway_q(&self, q: f64) -> Duration {
        self.oneway
            .as_ref()
            .filter(|h| !h.is_empty())
            .map_or(Duration::ZERO, |h| {
                Duration::from_micros(h.value_at_quantile(q))
            })
    }
    pub(crate) fn q(&self, q: f64) -> Duration {
        Duration::from_micros(self.hist.value_at_quantile(q))
    }
    pub(crate) fn max(&self) -> Duration {
        Duration::from_micros(self.hist.max())
    }
}
