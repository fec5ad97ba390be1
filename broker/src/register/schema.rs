//! The registered data formats (RU 963 §6, §7; Tatarstan §2.7): the payload
//! schemas in `<register dir>/payloads/*.proto`, compiled with protox when the
//! register loads (so a new schema needs no rebuild), and the strict check of
//! a payload against one of them with prost-reflect.

use super::error::Problem;
use prost_reflect::{DescriptorPool, DynamicMessage, ExtensionDescriptor, Kind, Value};
use std::path::Path;

/// The field option giving a plausible example value for a field, used by
/// [`Schemas::sample`]; declared in `payloads/options.proto`.
pub(crate) const EXAMPLE_OPTION: &str = "mev.payloads.v1.example";

/// The compiled payload schemas.
#[derive(Debug, Clone)]
pub(crate) struct Schemas {
    pool: DescriptorPool,
    /// The messages declared in the payload files (not imports from `google/`), sorted.
    names: Vec<String>,
    example: Option<ExtensionDescriptor>,
    /// Whether every payload file compiled; if not, references to schemas are not checked.
    pub(crate) complete: bool,
}

impl Schemas {
    /// Compiles every `*.proto` file directly in `dir`, recording a problem
    /// per file that fails (the others are still compiled).
    pub(crate) fn compile(dir: &Path, problems: &mut Vec<Problem>) -> Schemas {
        let mut schemas = Schemas {
            pool: DescriptorPool::new(),
            names: Vec::new(),
            example: None,
            complete: false,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                let message = format!(
                    "cannot read the payload schema directory {}: {e}",
                    dir.display()
                );
                problems.push(Problem::caused("payloads", message, Box::new(e)));
                return schemas;
            }
        };
        let mut files: Vec<String> = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".proto") {
                        files.push(name);
                    }
                }
                Err(e) => {
                    let message = format!("cannot list {}: {e}", dir.display());
                    problems.push(Problem::caused("payloads", message, Box::new(e)));
                }
            }
        }
        files.sort();
        let mut compiler = match protox::Compiler::new([dir]) {
            Ok(c) => c,
            Err(e) => {
                let message = format!("cannot set up the schema compiler: {e}");
                problems.push(Problem::caused("payloads", message, Box::new(e)));
                return schemas;
            }
        };
        let before = problems.len();
        for file in &files {
            if let Err(e) = compiler.open_file(file) {
                let message = format!("does not compile: {e}");
                problems.push(Problem::caused(
                    format!("payloads/{file}"),
                    message,
                    Box::new(e),
                ));
            }
        }
        schemas.complete = problems.len() == before;
        schemas.pool = compiler.descriptor_pool();
        schemas.names = schemas
            .pool
            .all_messages()
            .filter(|m| !m.parent_file().name().starts_with("google/") && !m.is_map_entry())
            .map(|m| m.full_name().to_owned())
            .collect();
        schemas.names.sort();
        schemas.example = schemas.pool.get_extension_by_name(EXAMPLE_OPTION);
        schemas.check_examples(problems);
        schemas
    }

    /// The descriptor pool of every compiled file.
    pub(crate) fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The messages declared in the payload files.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Whether `name` is a message declared in the payload files.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.names
            .binary_search_by(|n| n.as_str().cmp(name))
            .is_ok()
    }

    /// Decodes `bytes` as `schema`, refusing anything the schema does not
    /// describe: undecodable bytes, unknown fields and unknown enum numbers,
    /// at any depth. The error names the offending field path.
    pub(crate) fn decode_strict(
        &self,
        schema: &str,
        bytes: &[u8],
    ) -> Result<DynamicMessage, String> {
        let desc = self
            .pool
            .get_message_by_name(schema)
            .ok_or_else(|| format!("schema {schema} is not registered"))?;
        let message = DynamicMessage::decode(desc, bytes)
            .map_err(|e| format!("does not decode as {schema}: {e}"))?;
        check_known(&message, schema)?;
        Ok(message)
    }

    /// The example value declared on a field, if any.
    pub(crate) fn example_of(&self, field: &prost_reflect::FieldDescriptor) -> Option<String> {
        let ext = self.example.as_ref()?;
        let options = field.options();
        if !options.has_extension(ext) {
            return None;
        }
        match options.get_extension(ext).as_ref() {
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Every declared example must parse as a value of its field's type.
    fn check_examples(&self, problems: &mut Vec<Problem>) {
        for name in &self.names {
            let Some(desc) = self.pool.get_message_by_name(name) else {
                continue;
            };
            for field in desc.fields() {
                if let Some(example) = self.example_of(&field) {
                    if let Err(e) = parse_example(&field.kind(), &example) {
                        problems.push(Problem::new(
                            format!("payloads: {}", field.full_name()),
                            format!("example {example:?}: {e}"),
                        ));
                    }
                }
            }
        }
    }
}

/// Parses an example value (always written as a string) for a field of `kind`.
pub(crate) fn parse_example(kind: &Kind, example: &str) -> Result<Value, String> {
    fn num<T: std::str::FromStr>(s: &str, f: impl Fn(T) -> Value) -> Result<Value, String>
    where
        T::Err: std::fmt::Display,
    {
        s.parse::<T>()
            .map(f)
            .map_err(|e| format!("not a number of the field's type ({e})"))
    }
    match kind {
        Kind::String => Ok(Value::String(example.to_owned())),
        Kind::Bytes => Ok(Value::Bytes(example.as_bytes().to_vec().into())),
        Kind::Bool => example
            .parse::<bool>()
            .map(Value::Bool)
            .map_err(|_| "not true or false".to_owned()),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => num(example, Value::I32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => num(example, Value::I64),
        Kind::Uint32 | Kind::Fixed32 => num(example, Value::U32),
        Kind::Uint64 | Kind::Fixed64 => num(example, Value::U64),
        Kind::Float => num(example, Value::F32),
        Kind::Double => num(example, Value::F64),
        Kind::Enum(e) => e
            .get_value_by_name(example)
            .map(|v| Value::EnumNumber(v.number()))
            .ok_or_else(|| format!("not a value of {}", e.full_name())),
        Kind::Message(m) => Err(format!(
            "a message field ({}) takes no example",
            m.full_name()
        )),
    }
}

/// Refuses unknown fields and unknown enum numbers in `message`, recursively.
fn check_known(message: &DynamicMessage, path: &str) -> Result<(), String> {
    if let Some(unknown) = message.unknown_fields().next() {
        return Err(format!(
            "{path}: unknown field number {} (not in the registered schema)",
            unknown.number()
        ));
    }
    for (field, value) in message.fields() {
        let path = format!("{path}.{}", field.name());
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                continue;
            };
            let value_kind = entry.map_entry_value_field().kind();
            if let Value::Map(map) = value {
                for (key, v) in map {
                    check_value(v, &value_kind, &format!("{path}[{key:?}]"))?;
                }
            }
        } else {
            check_value(value, &field.kind(), &path)?;
        }
    }
    Ok(())
}

fn check_value(value: &Value, kind: &Kind, path: &str) -> Result<(), String> {
    match (value, kind) {
        (Value::Message(m), _) => check_known(m, path),
        (Value::List(items), _) => {
            for (i, item) in items.iter().enumerate() {
                check_value(item, kind, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::EnumNumber(n), Kind::Enum(e)) if e.get_value(*n).is_none() => Err(format!(
            "{path}: {n} is not a value of {} (not in the registered schema)",
            e.full_name()
        )),
        _ => Ok(()),
    }
}
