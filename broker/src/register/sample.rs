//! Sample payloads: a valid message of a registered schema with every field
//! filled, for the demo and for tests. A field's value comes from its
//! `(mev.payloads.v1.example)` option when the schema declares one, otherwise
//! from its type (the first non-zero enum value, `1`, `true`, a short text).

use super::schema::{parse_example, Schemas};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};
use std::collections::HashMap;

/// Nested messages deeper than this are left empty (guards recursive schemas).
const MAX_DEPTH: usize = 6;

/// A sample message of `schema`, encoded; `None` if the schema is unknown.
pub(crate) fn sample(schemas: &Schemas, schema: &str) -> Option<Vec<u8>> {
    let desc = schemas.pool().get_message_by_name(schema)?;
    let message = fill(schemas, &desc, 0)?;
    Some(prost::Message::encode_to_vec(&message))
}

fn fill(schemas: &Schemas, desc: &MessageDescriptor, depth: usize) -> Option<DynamicMessage> {
    let mut message = DynamicMessage::new(desc.clone());
    if depth >= MAX_DEPTH {
        return Some(message);
    }
    for field in desc.fields() {
        // Of a real oneof only the first member is set; setting more would
        // just overwrite it.
        if let Some(oneof) = field.containing_oneof() {
            let first = oneof.fields().next().map(|f| f.number());
            if !oneof.is_synthetic() && first != Some(field.number()) {
                continue;
            }
        }
        let value = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                continue;
            };
            let key = map_key(single(schemas, &entry.map_entry_key_field(), depth)?)?;
            let value = single(schemas, &entry.map_entry_value_field(), depth)?;
            Value::Map(HashMap::from([(key, value)]))
        } else if field.is_list() {
            Value::List(vec![single(schemas, &field, depth)?])
        } else {
            single(schemas, &field, depth)?
        };
        message.try_set_field(&field, value).ok()?;
    }
    Some(message)
}

/// One value for `field` (an element, for a repeated field).
fn single(schemas: &Schemas, field: &FieldDescriptor, depth: usize) -> Option<Value> {
    let kind = field.kind();
    if let Kind::Message(m) = &kind {
        return fill(schemas, m, depth + 1).map(Value::Message);
    }
    if let Some(example) = schemas.example_of(field) {
        // Examples are checked when the register loads.
        return parse_example(&kind, &example).ok();
    }
    Some(match kind {
        Kind::String => Value::String(format!("sample {}", field.name().replace('_', " "))),
        Kind::Bytes => Value::Bytes(b"sample".to_vec().into()),
        Kind::Bool => Value::Bool(true),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(1),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(1),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(1),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(1),
        Kind::Float => Value::F32(1.0),
        Kind::Double => Value::F64(1.0),
        Kind::Enum(e) => {
            let number = e
                .values()
                .map(|v| v.number())
                .find(|n| *n != 0)
                .unwrap_or(0);
            Value::EnumNumber(number)
        }
        Kind::Message(_) => return None,
    })
}

fn map_key(value: Value) -> Option<MapKey> {
    Some(match value {
        Value::Bool(b) => MapKey::Bool(b),
        Value::I32(n) => MapKey::I32(n),
        Value::I64(n) => MapKey::I64(n),
        Value::U32(n) => MapKey::U32(n),
        Value::U64(n) => MapKey::U64(n),
        Value::String(s) => MapKey::String(s),
        _ => return None,
    })
}
