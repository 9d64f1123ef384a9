//! Conversions between database values and API values.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use uuid::Uuid;

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

pub fn opt_timestamp(time: Option<DateTime<Utc>>) -> Option<Timestamp> {
    time.map(timestamp)
}

/// A client's timestamp, if PostgreSQL can hold it.
pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?).filter(in_range)
}

/// Years 1 to 9999: what `google.protobuf.Timestamp` allows and PostgreSQL holds.
pub fn in_range(time: &DateTime<Utc>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&time.year())
}

pub fn id_string(id: Option<Uuid>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

/// Entity tag of a row: its last update time. Clients echo it back on
/// Update; a different value means someone changed the row meanwhile.
pub fn etag(updated_at: Option<DateTime<Utc>>) -> String {
    format!(
        "W/\"{}\"",
        updated_at.map(|t| t.timestamp_micros()).unwrap_or(0)
    )
}

/// Database text of a proto enum value: its name without the enum prefix
/// (`TENANT_STATUS_ACTIVE` → `ACTIVE`).
pub fn enum_to_db<'a>(name: &'a str, prefix: &str) -> &'a str {
    name.strip_prefix(prefix).unwrap_or(name)
}

/// Proto enum value of a database text (`ACTIVE` → `TENANT_STATUS_ACTIVE`);
/// unknown text maps to the `*_UNSPECIFIED` value.
pub fn enum_from_db<E: Default>(value: &str, prefix: &str, parse: fn(&str) -> Option<E>) -> E {
    parse(&format!("{prefix}{value}")).unwrap_or_default()
}

/// JSON `Value` → protobuf `Struct`. Only objects convert; anything else is
/// an empty struct.
pub fn json_to_struct(value: &serde_json::Value) -> prost_types::Struct {
    match json_to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        _ => prost_types::Struct::default(),
    }
}

fn json_to_value(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Protobuf `Struct` → JSON, failing on what JSON cannot hold (NaN,
/// infinities, unset values).
pub fn struct_to_json(s: &prost_types::Struct) -> Result<serde_json::Value, String> {
    let mut map = serde_json::Map::new();
    for (key, value) in &s.fields {
        map.insert(
            key.clone(),
            value_to_json(value).map_err(|e| format!("{key}: {e}"))?,
        );
    }
    Ok(serde_json::Value::Object(map))
}

fn value_to_json(value: &prost_types::Value) -> Result<serde_json::Value, String> {
    use prost_types::value::Kind;
    Ok(match &value.kind {
        None => return Err("value has no kind".into()),
        Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .ok_or("numbers must be finite")?,
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => serde_json::Value::Array(
            list.values
                .iter()
                .map(value_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => struct_to_json(s)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_json_round_trip() {
        let json = serde_json::json!({"a": 1.5, "b": [true, null, "x"], "c": {"d": "e"}});
        assert_eq!(struct_to_json(&json_to_struct(&json)).unwrap(), json);
    }

    #[test]
    fn non_finite_numbers_are_not_json() {
        let mut s = prost_types::Struct::default();
        s.fields.insert(
            "n".into(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
            },
        );
        assert!(struct_to_json(&s).is_err());
    }
}
