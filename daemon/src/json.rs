//! JSON at the daemon's edges: storage [`Value`] ↔ `serde_json::Value`, and the JSON shape of
//! a stored event (what `log dump` prints and what is published upstream).
//!
//! Lossless: object members keep their order (`preserve_order`), integers stay integers
//! (`i64`, or `u64` above `i64::MAX`), floats round-trip through their shortest form.

use edgecap_storage::{Event, Value};
use serde_json::{Map, Number, Value as Json};

use crate::clock;

/// JSON → storage value.
pub fn to_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(to_value).collect()),
        Json::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
        }
    }
}

/// Storage value → JSON.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::Number((*i).into()),
        Value::UInt(u) => Json::Number((*u).into()),
        Value::Float(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Object(members) => {
            let mut map = Map::with_capacity(members.len());
            for (k, v) in members {
                map.insert(k.clone(), to_json(v));
            }
            Json::Object(map)
        }
    }
}

/// The JSON object of a stored event: `seq`, `ts`, `kind`, `source`, `value`, plus the time
/// details (`mono_ms`, `boot_id`, `clock_synced`). With `device`, the upstream payload.
pub fn event_json(event: &Event, device: Option<&str>) -> Json {
    let mut map = Map::new();
    if let Some(device) = device {
        map.insert("device".into(), Json::String(device.to_string()));
    }
    map.insert("seq".into(), event.seq.into());
    map.insert(
        "ts".into(),
        Json::String(clock::format_rfc3339_ms(event.wall_ms)),
    );
    map.insert("kind".into(), Json::String(event.kind.as_str().into()));
    map.insert("source".into(), Json::String(event.source.to_string()));
    map.insert("value".into(), to_json(&event.value));
    map.insert("mono_ms".into(), event.mono_ms.into());
    map.insert(
        "boot_id".into(),
        Json::String(clock::boot_id_hex(&event.boot_id)),
    );
    map.insert("clock_synced".into(), Json::Bool(event.clock_synced));
    Json::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_lossless() {
        let text = r#"{"z":1,"a":[null,true,-5,18446744073709551615,21.5,"s"],"m":{"k":0.1}}"#;
        let json: Json = serde_json::from_str(text).unwrap();
        assert_eq!(
            serde_json::to_string(&to_json(&to_value(&json))).unwrap(),
            text
        );
    }
}
