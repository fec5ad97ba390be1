//! The shape of `register.toml` as serde reads it, before validation.
//!
//! Enumerated values (kinds, statuses) are read as strings so a wrong one is
//! reported as a problem naming its entry rather than stopping the parse.
//! Agencies and services are arrays of tables (`[[agencies]]`, `[[services]]`)
//! keyed by an `id`/`number` field, so a reused id or registry number is
//! detected instead of being a TOML syntax error.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::value::Datetime;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegister {
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    pub agencies: Vec<RawAgency>,
    #[serde(default)]
    pub services: Vec<RawService>,
}

/// `[policies.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub kind: String,
    pub days: Option<u32>,
    pub hours: Option<u32>,
    pub seconds: Option<u32>,
}

/// `[[agencies]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgency {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub jurisdiction: RawJurisdiction,
}

/// An agency's `jurisdiction = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJurisdiction {
    pub time_zone: String,
    pub calendar: String,
}

/// `[[services]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub number: String,
    pub name: String,
    pub regulation: Option<String>,
    pub provider: String,
    #[serde(default)]
    pub consumers: Vec<RawConsumer>,
    pub request_schema: String,
    pub reply_schema: String,
    pub deadline: String,
    pub archive_deadline: Option<String>,
    pub status: String,
    pub abolished_on: Option<Datetime>,
    pub abolished_reason: Option<String>,
    #[serde(default)]
    pub changes: Vec<RawChange>,
    #[serde(default)]
    pub documents: Vec<RawDocument>,
}

/// One of a service's `consumers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsumer {
    pub agency: String,
    pub legal_basis: String,
}

/// One of a service's `changes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChange {
    pub date: Datetime,
    pub substance: String,
}

/// One of a service's `documents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDocument {
    pub code: String,
    pub title: String,
}
