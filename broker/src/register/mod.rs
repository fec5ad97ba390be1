//! The Unified Register of services, as data (UZ annex 1; Tatarstan §2.7, §2.9;
//! RU 963 §6, §7).
//!
//! The register says who may ask whom for what (UZ annex 2 §21), in which
//! formats, and within which deadline. It is loaded at start from a directory
//! (by default `schemas/`):
//!
//! - `register.toml`: deadline policies, agencies and services
//!   (see `schemas/README.md` for the format);
//! - `payloads/*.proto`: the payload schemas, compiled at run time, so adding
//!   an agency, a service or a schema needs no rebuild;
//! - `calendars/*.toml`, if present: the working-day calendars agencies name.
//!
//! Loading checks every entry and cross-reference and reports all problems at
//! once ([`RegisterError`]). At run time, [`Register::authorize_request`] and
//! [`Register::check_reply`] are the register's step of the broker pipeline.
//!
//! ## Layout
//! - [`model`]: the entries ([`Agency`], [`Service`], [`DeadlinePolicy`], ...).
//! - `raw`, `load`, `validate`: the TOML shape, loading, and the checks of each entry.
//! - `schema`, `sample`: payload schemas (strict decoding, sample payloads).
//! - [`calendar`]: the working-day calendars' file format and loading.
//!
//! `mev register check` is the `mev-cli` crate's `register` module.

pub mod calendar;
mod error;
mod load;
pub mod model;
mod raw;
mod sample;
mod schema;
#[cfg(test)]
mod tests;
mod validate;

pub use error::{Cause, Problem, RegisterError};
pub use load::REGISTER_FILE;
pub use model::{
    Agency, AgencyKind, Change, Consumer, DeadlinePolicy, Document, Jurisdiction, Service,
    ServiceStatus,
};

use mev_proto::pb::reply_outcome::Outcome;
use mev_proto::pb::Header;
use mev_proto::{ErrorCode, Rejection};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The loaded and validated register. Cheap to share behind an `Arc`; immutable.
#[derive(Debug, Clone)]
pub struct Register {
    path: PathBuf,
    agencies: Vec<Agency>,
    agency_index: HashMap<String, usize>,
    services: Vec<Service>,
    service_index: HashMap<String, usize>,
    policies: BTreeMap<String, DeadlinePolicy>,
    schemas: schema::Schemas,
    /// The working-day calendars of `calendars/` (empty if there is none).
    calendars: calendar::Calendars,
}

impl Register {
    /// Loads and validates the register at `path`: a directory holding
    /// `register.toml` (and `payloads/`, `calendars/`), or a `register.toml`
    /// file whose directory holds them. All problems are reported together.
    pub fn load(path: &Path) -> Result<Register, RegisterError> {
        load::load(path)
    }

    /// The working-day calendars agencies' jurisdictions name.
    pub fn calendars(&self) -> &calendar::Calendars {
        &self.calendars
    }

    /// The register file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The agency with this id.
    pub fn agency(&self, id: &str) -> Option<&Agency> {
        self.agency_index.get(id).map(|&i| &self.agencies[i])
    }

    /// Every agency, in register order.
    pub fn agencies(&self) -> impl Iterator<Item = &Agency> {
        self.agencies.iter()
    }

    /// The service with this registry number, active or abolished.
    pub fn service(&self, number: &str) -> Option<&Service> {
        self.service_index.get(number).map(|&i| &self.services[i])
    }

    /// Every service, active and abolished, in register order.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.iter()
    }

    /// The deadline policy with this name.
    pub fn policy(&self, name: &str) -> Option<&DeadlinePolicy> {
        self.policies.get(name)
    }

    /// Every deadline policy, by name.
    pub fn policies(&self) -> impl Iterator<Item = (&str, &DeadlinePolicy)> {
        self.policies.iter().map(|(name, p)| (name.as_str(), p))
    }

    /// The fully-qualified names of the messages declared in `payloads/*.proto`.
    pub fn schemas(&self) -> impl Iterator<Item = &str> {
        self.schemas.names()
    }

    /// The compiled payload schemas, e.g. to render a payload for a person.
    pub fn descriptor_pool(&self) -> &prost_reflect::DescriptorPool {
        self.schemas.pool()
    }

    /// The name and policy governing a request's reply deadline: the
    /// header's per-interaction override if it names one (Tatarstan §2.7),
    /// else the service's archive policy for an archive request (UZ annex 1
    /// §8, annex 2 §22), else the service's policy.
    pub fn policy_for<'a>(
        &'a self,
        service: &'a Service,
        header: &'a Header,
    ) -> Option<(&'a str, &'a DeadlinePolicy)> {
        let name = if header.deadline_policy.is_empty() {
            service.deadline_policy_name(header.archive)
        } else {
            header.deadline_policy.as_str()
        };
        self.policy(name).map(|p| (name, p))
    }

    /// Authorizes a request against the register, in this order: sender and
    /// recipient are registered agencies ([`ErrorCode::UnknownAgency`]); the
    /// service exists ([`ErrorCode::UnknownService`]) and is not abolished
    /// ([`ErrorCode::ServiceAbolished`], UZ annex 1 §16); the recipient is its
    /// provider ([`ErrorCode::WrongRecipient`]); the sender is an allowed
    /// consumer ([`ErrorCode::SenderNotAllowed`], UZ annex 2 §21); a deadline
    /// override names a known policy ([`ErrorCode::InvalidField`]); the
    /// payload is of the service's request schema, decodes, and carries no
    /// unknown fields or enum values at any depth ([`ErrorCode::SchemaMismatch`],
    /// RU 963 §6). The classification is not checked here: the pipeline does it.
    pub fn authorize_request(
        &self,
        header: &Header,
        payload: &[u8],
    ) -> Result<&Service, Rejection> {
        for (field, id) in [("sender", &header.sender), ("recipient", &header.recipient)] {
            if self.agency(id).is_none() {
                return Err(Rejection::new(
                    ErrorCode::UnknownAgency,
                    format!("header.{field}: {id:?} is not a registered agency"),
                ));
            }
        }
        let service = self.service(&header.service).ok_or_else(|| {
            Rejection::new(
                ErrorCode::UnknownService,
                format!(
                    "header.service: no service with registry number {:?}",
                    header.service
                ),
            )
        })?;
        if let ServiceStatus::Abolished { on, reason } = &service.status {
            return Err(Rejection::new(
                ErrorCode::ServiceAbolished,
                format!(
                    "header.service: {} was abolished on {on} ({reason}) (UZ annex 1 §16)",
                    service.number
                ),
            ));
        }
        if header.recipient != service.provider {
            return Err(Rejection::new(
                ErrorCode::WrongRecipient,
                format!(
                    "header.recipient: {} is provided by {}, not {}",
                    service.number, service.provider, header.recipient
                ),
            ));
        }
        if service.consumer(&header.sender).is_none() {
            return Err(Rejection::new(
                ErrorCode::SenderNotAllowed,
                format!(
                    "header.sender: {} is not an allowed consumer of {} (UZ annex 2 §21)",
                    header.sender, service.number
                ),
            ));
        }
        if !header.deadline_policy.is_empty() && self.policy(&header.deadline_policy).is_none() {
            return Err(Rejection::new(
                ErrorCode::InvalidField,
                format!(
                    "header.deadline_policy: {:?} is not a registered deadline policy",
                    header.deadline_policy
                ),
            ));
        }
        self.check_payload(&service.request_schema, header, payload)?;
        Ok(service)
    }

    /// Checks a reply's payload against the service's reply schema.
    ///
    /// - Documents: the payload is required, names the reply schema, and
    ///   decodes strictly against it.
    /// - A partial refusal (Tatarstan §3.11): the payload is either empty or
    ///   the documents not refused, checked as for Documents.
    /// - A full refusal, not held, insufficient data (Tatarstan §3.11–3.13):
    ///   the signed header says everything; the payload must be empty.
    ///
    /// Whenever `payload_schema` is set it must be the reply schema. A reply
    /// without an outcome is [`ErrorCode::MissingField`]; payload faults are
    /// [`ErrorCode::SchemaMismatch`].
    pub fn check_reply(
        &self,
        service: &Service,
        header: &Header,
        payload: &[u8],
    ) -> Result<(), Rejection> {
        let outcome = header
            .reply
            .as_ref()
            .and_then(|r| r.outcome.as_ref())
            .ok_or_else(|| {
                Rejection::new(
                    ErrorCode::MissingField,
                    "header.reply: a reply states its outcome",
                )
            })?;
        let payload_allowed = match outcome {
            Outcome::Documents(_) => {
                if payload.is_empty() {
                    return Err(Rejection::new(
                        ErrorCode::SchemaMismatch,
                        format!(
                            "payload: a reply with documents carries them as {}",
                            service.reply_schema
                        ),
                    ));
                }
                true
            }
            Outcome::Refusal(r) => r.partial,
            Outcome::NotHeld(_) | Outcome::InsufficientData(_) => false,
        };
        if payload.is_empty() {
            if !header.payload_schema.is_empty() && header.payload_schema != service.reply_schema {
                return Err(schema_name_mismatch(&service.reply_schema, header));
            }
            return Ok(());
        }
        if !payload_allowed {
            return Err(Rejection::new(
                ErrorCode::SchemaMismatch,
                "payload: a refusal, not-held or insufficient-data reply carries no payload \
                 (Tatarstan §3.11-3.13)",
            ));
        }
        if mev_proto::confidential::is_encrypted(header) {
            // Encrypted to the consumer: only the schema's name can be
            // checked; the consumer's adapter decodes the contents strictly.
            if !header.payload_schema.is_empty() && header.payload_schema != service.reply_schema {
                return Err(schema_name_mismatch(&service.reply_schema, header));
            }
            return Ok(());
        }
        self.check_payload(&service.reply_schema, header, payload)
    }

    /// A valid sample payload of `schema` with every field filled with a
    /// plausible value (the schema's declared examples where it has them);
    /// `None` if the schema is unknown.
    pub fn sample_payload(&self, schema: &str) -> Option<Vec<u8>> {
        sample::sample(&self.schemas, schema)
    }

    /// The header names `schema` and the payload decodes strictly against it.
    fn check_payload(
        &self,
        schema: &str,
        header: &Header,
        payload: &[u8],
    ) -> Result<(), Rejection> {
        if header.payload_schema != schema {
            return Err(schema_name_mismatch(schema, header));
        }
        self.schemas
            .decode_strict(schema, payload)
            .map(drop)
            .map_err(|e| Rejection::new(ErrorCode::SchemaMismatch, format!("payload: {e}")))
    }
}

fn schema_name_mismatch(expected: &str, header: &Header) -> Rejection {
    Rejection::new(
        ErrorCode::SchemaMismatch,
        format!(
            "header.payload_schema: {:?}; the register has {expected} for service {} (RU 963 §6)",
            header.payload_schema, header.service
        ),
    )
}
