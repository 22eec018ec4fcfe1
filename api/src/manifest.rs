//! Files of Kubernetes-style documents: the YAML or JSON a user would
//! `kubectl apply`. ResiliencePolicies are parsed; other kinds pass through.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::{ResiliencePolicySpec, ResiliencePolicyStatus};

pub const API_VERSION: &str = "outrigger.dev/v1alpha1";
pub const KIND: &str = "ResiliencePolicy";

/// A ResiliencePolicy as written in a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyManifest {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ResiliencePolicySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ResiliencePolicyStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Anything else kubectl may leave (uid, resourceVersion, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Policy(Box<PolicyManifest>),
    Other {
        api_version: String,
        kind: String,
        name: Option<String>,
        raw: serde_json::Value,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid YAML or JSON: {0}")]
    Syntax(String),
    #[error("document {index}{}: {message}", name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Document {
        index: usize,
        name: Option<String>,
        message: String,
    },
}

/// Parses multi-document YAML (`---`), a JSON object, or a `kind: List`.
/// Document numbers in errors start at 1.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut values = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| ManifestError::Syntax(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let json: serde_json::Value =
            serde_json::to_value(&value).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        if json.get("kind").and_then(|k| k.as_str()) == Some("List") {
            if let Some(items) = json.get("items").and_then(|i| i.as_array()) {
                values.extend(items.iter().cloned());
                continue;
            }
        }
        values.push(json);
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| to_document(i + 1, value))
        .collect()
}

fn to_document(index: usize, value: serde_json::Value) -> Result<Document, ManifestError> {
    let text = |field: &str| value.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned);
    let fail = |message: String| ManifestError::Document {
        index,
        name: name.clone(),
        message,
    };
    let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
        return Err(fail("apiVersion and kind are required".into()));
    };
    if kind != KIND {
        return Ok(Document::Other {
            api_version,
            kind,
            name: name.clone(),
            raw: value,
        });
    }
    if api_version != API_VERSION {
        return Err(fail(format!(
            "apiVersion {api_version:?} is not served; use {API_VERSION:?}"
        )));
    }
    let policy: PolicyManifest = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        fail(format!("{path}: {}", e.into_inner()))
    })?;
    Ok(Document::Policy(Box::new(policy)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_document_and_field() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: payments}\nspec:\n  targetRef: {name: payments}\n  retry: {attempts: x}\n";
        let err = parse_documents(text).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "document 2 (payments): spec.retry.attempts: invalid type: string \"x\""
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let text = "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: p}\nspec:\n  targetRef: {name: p}\n  retry: {attemps: 2}\n";
        let err = parse_documents(text).unwrap_err().to_string();
        assert!(
            err.contains("spec.retry.attemps: unknown field `attemps`, expected one of `attempts`"),
            "{err}"
        );
    }

    #[test]
    fn other_kinds_and_lists_pass_through() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}},
            {"apiVersion": "outrigger.dev/v1alpha1", "kind": "ResiliencePolicy",
             "metadata": {"name": "web", "uid": "123"}, "spec": {"targetRef": {"name": "web"}}}]}"#;
        let docs = parse_documents(text).unwrap();
        assert!(matches!(&docs[0], Document::Other { kind, .. } if kind == "Service"));
        let Document::Policy(p) = &docs[1] else {
            panic!()
        };
        assert_eq!(p.spec.target_ref.kind, "Service");
        assert_eq!(p.metadata.extra["uid"], "123");
    }

    #[test]
    fn wrong_api_version_is_rejected() {
        let text = "apiVersion: outrigger.dev/v2\nkind: ResiliencePolicy\nmetadata: {name: p}\nspec: {targetRef: {name: p}}\n";
        let err = parse_documents(text).unwrap_err().to_string();
        assert!(err.contains("is not served"), "{err}");
    }
}
