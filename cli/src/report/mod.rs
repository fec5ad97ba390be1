//! Quality reports from the broker's recorded events (`mev report`): the
//! quality of the exchange per participant that the operator reports
//! (RU Government resolution No. 963 of 23.06.2021, §9, §11) and monitors
//! quarterly (UZ Cabinet of Ministers resolution No. 120 of 13.05.2015, §3).
//!
//! `mev report sla --data DIR (--from DATE --to DATE | --quarter 2026Q3)
//! [--tz ZONE] [--by agency|service] [--format csv|json|html] [--out FILE]`
//!
//! - [`period`] — the days covered, in UTC unless `--tz` names a zone;
//! - [`sla`] — the counting, rows and total (what counts where is documented there);
//! - [`csv`], [`html`] (with SVG charts) and JSON (serde) — the outputs.
//!
//! The store is opened, read, and closed; a running broker holds it locked,
//! so report on a copy of its data directory.

pub mod csv;
pub mod html;
pub mod period;
pub mod sla;
mod svg;

use anyhow::Context as _;
use chrono::NaiveDate;
use chrono_tz::Tz;
use mev_broker::store::prelude::*;
use mev_broker::store::{Event, Store, StoreError};
use period::{Period, PeriodError, Quarter};
use sla::By;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `mev report` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ReportCommand {
    /// Service levels per agency or service over a period: requests, replies
    /// by kind, on time, late, breached, at risk, late dispatches, median and
    /// 95th-percentile reply time (RU 963 §9, §11; UZ resolution No. 120 §3).
    Sla(SlaArgs),
}

/// `mev report sla` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SlaArgs {
    /// The broker's data directory (holding broker.redb).
    #[arg(long)]
    pub data: PathBuf,
    /// The period's first day, YYYY-MM-DD (inclusive).
    #[arg(long, value_name = "DATE", value_parser = period::parse_date,
          required_unless_present = "quarter", requires = "to", conflicts_with = "quarter")]
    pub from: Option<NaiveDate>,
    /// The period's last day, YYYY-MM-DD (inclusive).
    #[arg(long, value_name = "DATE", value_parser = period::parse_date,
          required_unless_present = "quarter", requires = "from", conflicts_with = "quarter")]
    pub to: Option<NaiveDate>,
    /// A calendar quarter instead of --from/--to, e.g. 2026Q3 (July to September).
    #[arg(long, value_name = "YYYYQn", value_parser = period::parse_quarter)]
    pub quarter: Option<Quarter>,
    /// The time zone the period's days are counted in (IANA name); the
    /// journal's times are UTC.
    #[arg(long, value_name = "ZONE", default_value = "UTC", value_parser = period::parse_zone)]
    pub tz: Tz,
    /// One row per agency (the provider answerable) or per service.
    #[arg(long, value_enum, default_value_t = By::Agency)]
    pub by: By,
    /// The output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Write the report here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A header row, a row per agency or service, the total row.
    Csv,
    /// The report as a structured document.
    Json,
    /// A self-contained page with SVG charts, for screen and paper.
    Html,
}

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no broker store at {} (pass the broker's data directory, the one holding broker.redb)", .0.display())]
    NoStore(PathBuf),
    #[error("the store at {} is open in another process (a running broker?): report on a copy of its data directory", .0.display())]
    Busy(PathBuf),
    #[error("reading the store at {}", .path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Period(#[from] PeriodError),
    #[error("encoding the report as JSON")]
    Json(#[from] serde_json::Error),
}

/// Every event in the journal of the store in `data`, which must exist.
pub fn load_events(data: &Path) -> Result<Vec<Event>, ReportError> {
    let file = data.join("broker.redb");
    if !file.is_file() {
        return Err(ReportError::NoStore(file));
    }
    let wrap = |source: StoreError| match source {
        source if source.is_in_use() => ReportError::Busy(file.clone()),
        source => ReportError::Store {
            path: file.clone(),
            source,
        },
    };
    let store = Store::open(data).map_err(wrap)?;
    store.events().map_err(wrap)
}

impl SlaArgs {
    /// The period the options name.
    pub fn period(&self) -> Result<Period, PeriodError> {
        match (self.quarter, self.from, self.to) {
            (Some(q), _, _) => Period::quarter(q, self.tz),
            (None, Some(from), Some(to)) => Period::days(from, to, self.tz),
            // clap requires one or the other; say so if called otherwise.
            _ => Err(PeriodError::BadQuarter(String::new())),
        }
    }
}

/// The SLA report as text in the chosen format.
pub fn sla_text(args: &SlaArgs) -> Result<(sla::SlaReport, String), ReportError> {
    let period = args.period()?;
    let events = load_events(&args.data)?;
    let report = sla::build(&events, &period, args.by, chrono::Utc::now());
    let text = match args.format {
        Format::Csv => csv::render(&report),
        Format::Json => {
            let mut t = serde_json::to_string_pretty(&report)?;
            t.push('\n');
            t
        }
        Format::Html => html::render(&report),
    };
    Ok((report, text))
}

/// `mev report`.
pub fn run(cmd: ReportCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReportCommand::Sla(args) => {
            let (report, text) = sla_text(&args)?;
            match &args.out {
                Some(path) => {
                    std::fs::write(path, &text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "mev report: {} ({} to {}, days in {}): {} rows by {}, {} requests, written to {}",
                        report.period.label,
                        report.period.first_day,
                        report.period.last_day,
                        report.period.time_zone,
                        report.rows.len(),
                        report.by.name(),
                        report.total.requests,
                        path.display()
                    );
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes())
                        .and_then(|()| out.flush())
                        .context("writing the report to standard output")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
