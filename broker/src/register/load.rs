//! Loading `register.toml`: reading and parsing it, compiling the payload
//! schemas, listing the calendars, then checking every entry (see
//! `validate`), collecting all problems before giving up.

use super::calendar::Calendars;
use super::error::{Problem, RegisterError};
use super::model::Service;
use super::raw::RawRegister;
use super::schema::Schemas;
use super::validate::{agencies, blank, entry_name, policies, service, Known};
use super::Register;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The register file inside a register directory.
pub const REGISTER_FILE: &str = "register.toml";

/// Loads the register at `path`: a directory holding `register.toml`, or
/// the file itself (its directory then holds `payloads/` and `calendars/`).
pub(crate) fn load(path: &Path) -> Result<Register, RegisterError> {
    let (dir, file) = if path.is_dir() {
        (path.to_path_buf(), path.join(REGISTER_FILE))
    } else {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (dir, path.to_path_buf())
    };
    let file_entry = file.display().to_string();
    let text = std::fs::read_to_string(&file).map_err(|e| {
        let message = format!("cannot read the register: {e}");
        RegisterError::new(vec![Problem::caused(
            file_entry.clone(),
            message,
            Box::new(e),
        )])
    })?;
    let raw: RawRegister = toml::from_str(&text).map_err(|e| {
        let message = match e.span() {
            Some(span) => {
                let (line, column) = line_column(&text, span.start);
                format!("line {line}, column {column}: {}", e.message().trim())
            }
            None => e.message().trim().to_owned(),
        };
        RegisterError::new(vec![Problem::caused(
            file_entry.clone(),
            message,
            Box::new(e),
        )])
    })?;

    let mut problems = Vec::new();
    let schemas = Schemas::compile(&dir.join("payloads"), &mut problems);
    let loaded = load_calendars(&dir.join("calendars"), &mut problems);
    let calendars = loaded
        .as_ref()
        .map(|c| c.names().map(str::to_owned).collect::<BTreeSet<String>>());
    // References are checked against what is declared, valid or not, so one
    // bad entry is reported once rather than at every reference to it.
    let declared_policies: HashSet<String> = raw.policies.keys().cloned().collect();
    let declared_agencies: HashSet<String> = raw.agencies.iter().map(|a| a.id.clone()).collect();
    let policies = policies(raw.policies, &mut problems);
    let (agencies, agency_index) = agencies(raw.agencies, calendars.as_ref(), &mut problems);
    let known = Known {
        agencies: &declared_agencies,
        policies: &declared_policies,
        schemas: &schemas,
    };
    let mut services: Vec<Service> = Vec::new();
    let mut service_index: HashMap<String, usize> = HashMap::new();
    // Number -> name of the first service given it, valid or not.
    let mut numbers: HashMap<String, String> = HashMap::new();
    for (i, raw) in raw.services.into_iter().enumerate() {
        let entry = entry_name("services", &raw.number, i);
        if let Some(first) = numbers.get(&raw.number) {
            problems.push(Problem::new(
                &entry,
                format!(
                    "registry number reused (already given to {first:?}); a number, even an \
                     abolished service's, is never given to another service (UZ annex 1 §17)"
                ),
            ));
            continue;
        }
        if !blank(&raw.number) {
            numbers.insert(raw.number.clone(), raw.name.clone());
        }
        if let Some(service) = service(raw, &entry, &known, &mut problems) {
            service_index.insert(service.number.clone(), services.len());
            services.push(service);
        }
    }
    if !problems.is_empty() {
        return Err(RegisterError::new(problems));
    }
    Ok(Register {
        path: file,
        agencies,
        agency_index,
        services,
        service_index,
        policies,
        schemas,
        calendars: loaded.unwrap_or_default(),
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The working-day calendars in `dir`, if the directory exists.
fn load_calendars(dir: &Path, problems: &mut Vec<Problem>) -> Option<Calendars> {
    if !dir.is_dir() {
        return None;
    }
    match Calendars::load(dir) {
        Ok(c) => Some(c),
        Err(e) => {
            let message = e.to_string();
            problems.push(Problem::caused("calendars", message, Box::new(e)));
            Some(Calendars::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_of_an_offset() {
        assert_eq!(line_column("ab\ncd\nef", 4), (2, 2));
        assert_eq!(line_column("x", 0), (1, 1));
    }
}
