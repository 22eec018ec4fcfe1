//! Files of Kubernetes-style documents: the YAML or JSON a user would
//! `kubectl apply`. ResiliencePolicies are parsed; other kinds pass through.
//!
//! Policies are read from a JSON value rather than straight from the YAML
//! parser, because serde_yaml turns any scalar into a string where one is
//! expected (`value: 2`, even `null`); the API server would refuse those, and
//! a file that works locally but not on the cluster would be a trap. Line and
//! column come from going back to the text when something is wrong.

mod locate;
mod sources;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_path_to_error::Segment;

use crate::policy::{ResiliencePolicySpec, ResiliencePolicyStatus};
use sources::{Entry, Format};

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

impl PolicyManifest {
    /// A policy with this name, the served apiVersion and kind, and no status.
    pub fn new(name: impl Into<String>, spec: ResiliencePolicySpec) -> PolicyManifest {
        PolicyManifest {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            metadata: Metadata {
                name: name.into(),
                ..Metadata::default()
            },
            spec,
            status: None,
        }
    }
}

/// Object metadata: what Outrigger reads, plus whatever else kubectl wrote.
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
    /// Anything else `kubectl get -o yaml` prints (uid, resourceVersion, ...),
    /// kept so such output is accepted as it is.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// Boxed: a policy is far larger than the other variant.
    Policy(Box<PolicyManifest>),
    /// Any other kind (Service, EndpointSlice, ...), untouched.
    Other {
        api_version: String,
        kind: String,
        name: Option<String>,
        raw: Value,
    },
}

impl Document {
    pub fn kind(&self) -> &str {
        match self {
            Document::Policy(policy) => &policy.kind,
            Document::Other { kind, .. } => kind,
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Document::Policy(policy) => Some(&policy.metadata.name),
            Document::Other { name, .. } => name.as_deref(),
        }
    }
}

/// Which document an error is about, as a user would find it in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentId {
    /// 1-based position among the file's non-empty documents.
    pub index: usize,
    /// 0-based position in a `kind: List`'s items.
    pub item: Option<usize>,
    /// metadata.name, when the document has one.
    pub name: Option<String>,
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.index)?;
        if let Some(item) = self.item {
            write!(f, " items[{item}]")?;
        }
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text is not well-formed YAML or JSON.
    #[error("not valid {format}: {message}")]
    Syntax {
        format: &'static str,
        message: String,
    },
    /// A well-formed document that cannot be used, e.g.
    /// `document 2 (payments): spec.retry.attempts: invalid type: string "x", expected u32 at line 9 column 15`.
    #[error("{document}: {message}")]
    Document {
        document: DocumentId,
        message: String,
    },
}

/// Parses multi-document YAML (`---`; empty documents are skipped), one or
/// more JSON objects, and `kind: List` documents, whose items count as
/// documents of their own.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, ManifestError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (format, entries) = sources::split(text)?;
    entries
        .into_iter()
        .map(|entry| to_document(text, format, entry))
        .collect()
}

fn to_document(text: &str, format: Format, entry: Entry) -> Result<Document, ManifestError> {
    let string = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let value = entry.value;
    let name = value.get("metadata").and_then(|m| string(m, "name"));
    let fail = |message: String| ManifestError::Document {
        document: DocumentId {
            index: entry.index,
            item: entry.item,
            name: name.clone(),
        },
        message,
    };
    let (Some(api_version), Some(kind)) = (string(&value, "apiVersion"), string(&value, "kind"))
    else {
        return Err(fail(if value.is_object() {
            "apiVersion and kind are required".into()
        } else {
            "expected a mapping with apiVersion and kind".into()
        }));
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
            "apiVersion: {api_version:?} is not served for {KIND} (use {API_VERSION})"
        )));
    }
    serde_path_to_error::deserialize(&value)
        .map(|policy| Document::Policy(Box::new(policy)))
        .map_err(|err| {
            let mut path = match entry.item {
                Some(index) => vec![
                    Segment::Map {
                        key: "items".into(),
                    },
                    Segment::Seq { index },
                ],
                None => Vec::new(),
            };
            path.extend(err.path().iter().cloned());
            let position = locate::position(text, format, entry.stream_index, &path);
            let mut message = match err.path().iter().next() {
                Some(_) => format!("{}: {}", err.path(), err.inner()),
                None => err.inner().to_string(),
            };
            if let Some((line, column)) = position {
                message += &format!(" at line {line} column {column}");
            }
            fail(message)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse_documents(text).unwrap_err().to_string()
    }

    const POLICY: &str = "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\n";

    #[test]
    fn type_errors_name_document_field_and_position() {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\n---\n{POLICY}\
             metadata: {{name: payments}}\nspec:\n  targetRef: {{name: payments}}\n  retry: {{attempts: x}}\n"
        );
        assert_eq!(
            error(&text),
            "document 2 (payments): spec.retry.attempts: invalid type: string \"x\", \
             expected u32 at line 10 column 21"
        );
    }

    #[test]
    fn unknown_fields_point_at_the_field() {
        let text =
            format!("{POLICY}metadata: {{name: p}}\nspec:\n  targetRef: {{name: p}}\n  retry:\n    attemps: 2\n");
        assert_eq!(
            error(&text),
            "document 1 (p): spec.retry.attemps: unknown field `attemps`, expected one of \
             `attempts`, `codes`, `on`, `backoff`, `budget`, `nonIdempotent`, \
             `maxBufferedBodyBytes`, `grpcCodes` at line 7 column 14"
        );
    }

    #[test]
    fn missing_fields_point_at_their_parent() {
        let text =
            format!("{POLICY}metadata: {{name: p}}\nspec:\n  targetRef: {{kind: Service}}\n");
        assert_eq!(
            error(&text),
            "document 1 (p): spec.targetRef: missing field `name` at line 5 column 14"
        );
        let text = format!("{POLICY}metadata: {{name: p}}\n");
        // The document itself, where it starts.
        assert_eq!(
            error(&text),
            "document 1 (p): missing field `spec` at line 1 column 1"
        );
    }

    #[test]
    fn scalars_are_not_coerced_to_strings() {
        let text = format!(
            "{POLICY}metadata: {{name: p}}\nspec:\n  targetRef: {{name: p}}\n  routes:\n  - match:\n      headers: [{{name: x-v, value: 2}}]\n"
        );
        assert_eq!(
            error(&text),
            "document 1 (p): spec.routes[0].match.headers[0].value: invalid type: integer `2`, \
             expected a string at line 8 column 36"
        );
    }

    #[test]
    fn json_errors_carry_positions_too() {
        let text = "{\n  \"apiVersion\": \"outrigger.dev/v1alpha1\",\n  \"kind\": \"ResiliencePolicy\",\n  \"metadata\": {\"name\": \"p\"},\n  \"spec\": {\"targetRef\": {\"name\": \"p\"}, \"mode\": \"Enforced\"}\n}\n";
        assert_eq!(
            error(text),
            "document 1 (p): spec.mode: unknown variant `Enforced`, expected `Enforce` or \
             `DryRun` at line 5 column 57"
        );
    }

    #[test]
    fn lists_and_other_kinds_pass_through() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}},
            {"apiVersion": "outrigger.dev/v1alpha1", "kind": "ResiliencePolicy",
             "metadata": {"name": "web", "uid": "123"}, "spec": {"targetRef": {"name": "web"}}}]}"#;
        let docs = parse_documents(text).unwrap();
        assert_eq!(
            docs.iter().map(Document::kind).collect::<Vec<_>>(),
            ["Service", "ResiliencePolicy"]
        );
        let Document::Policy(p) = &docs[1] else {
            panic!("{docs:?}")
        };
        assert_eq!(p.spec.target_ref.kind, "Service");
        assert_eq!(p.metadata.extra["uid"], "123");
    }

    #[test]
    fn list_item_errors_name_the_item() {
        let text = format!(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {{name: a}}\n- {}\n  metadata: {{name: b}}\n  spec: {{targetRef: {{name: b, port: x}}}}\n",
            POLICY.replace('\n', "\n  ").trim_end()
        );
        assert_eq!(
            error(&text),
            "document 1 items[1] (b): spec.targetRef.port: invalid type: string \"x\", \
             expected u16 at line 10 column 37"
        );
    }

    #[test]
    fn envelope_problems_are_reported() {
        assert_eq!(
            error("apiVersion: outrigger.dev/v2\nkind: ResiliencePolicy\nmetadata: {name: p}\n"),
            "document 1 (p): apiVersion: \"outrigger.dev/v2\" is not served for \
             ResiliencePolicy (use outrigger.dev/v1alpha1)"
        );
        assert_eq!(
            error("---\nkind: Service\n"),
            "document 1: apiVersion and kind are required"
        );
        assert_eq!(
            error("- a\n- b\n"),
            "document 1: expected a mapping with apiVersion and kind"
        );
        assert_eq!(
            error("a: [1\n"),
            "not valid YAML: did not find expected ',' or ']' at line 2 column 1, \
             while parsing a flow sequence at line 1 column 4"
        );
    }

    #[test]
    fn empty_documents_and_files_yield_nothing() {
        assert_eq!(parse_documents("").unwrap(), vec![]);
        assert_eq!(parse_documents("---\n# nothing\n---\n").unwrap(), vec![]);
    }
}
