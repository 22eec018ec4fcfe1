//! Splits a file into the documents it holds, as JSON values.

use serde::Deserialize;
use serde_json::Value;

use super::ManifestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Json,
    Yaml,
}

/// One document, or one item of a `kind: List`.
pub(super) struct Entry {
    pub value: Value,
    /// 1-based, among non-empty documents.
    pub index: usize,
    /// Position in the List's items.
    pub item: Option<usize>,
    /// 0-based position in the parser's document stream, empty ones included.
    pub stream_index: usize,
}

/// JSON when the whole text is JSON (one or more values): its errors are
/// clearer there, and tabs, which YAML forbids, are common in it. Otherwise
/// YAML, which also covers flow-style documents that merely look like JSON.
pub(super) fn split(text: &str) -> Result<(Format, Vec<Entry>), ManifestError> {
    let looks_like_json = text.trim_start().starts_with(['{', '[']);
    if looks_like_json {
        let json: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(text)
            .into_iter()
            .collect();
        if let Ok(values) = json {
            return Ok((Format::Json, entries(values.into_iter().enumerate())));
        }
    }
    let mut values = Vec::new();
    for (stream_index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        // Stop at the first error: after one, the stream may never end.
        let value = Value::deserialize(document).map_err(|e| ManifestError::Syntax {
            format: "YAML",
            message: e.to_string(),
        })?;
        values.push((stream_index, value));
    }
    Ok((Format::Yaml, entries(values.into_iter())))
}

fn entries(values: impl Iterator<Item = (usize, Value)>) -> Vec<Entry> {
    let mut entries = Vec::new();
    let documents = values.filter(|(_, value)| !value.is_null());
    for (n, (stream_index, value)) in documents.enumerate() {
        let entry = |value, item| Entry {
            value,
            index: n + 1,
            item,
            stream_index,
        };
        match list_items(value) {
            Ok(items) => entries.extend(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| entry(item, Some(i))),
            ),
            Err(value) => entries.push(entry(value, None)),
        }
    }
    entries
}

/// The items of a `kind: List`, or the value back when it is not one.
fn list_items(value: Value) -> Result<Vec<Value>, Value> {
    match value {
        Value::Object(mut map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
            match map.remove("items") {
                Some(Value::Array(items)) => Ok(items),
                other => {
                    if let Some(items) = other {
                        map.insert("items".into(), items);
                    }
                    Err(Value::Object(map))
                }
            }
        }
        other => Err(other),
    }
}
