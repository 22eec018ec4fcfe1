use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults;

/// Policy attachment (Gateway API style): the Service the policy targets, in
/// the policy's own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.kind == 'Service'", "message": "targetRef.kind must be Service"},
    {"rule": "self.group == '' || self.group == 'core'", "message": "targetRef.group must be \"\" (core)"}
]))]
pub struct TargetRef {
    /// API group of the target: "" (or "core"). Default "".
    #[serde(default)]
    pub group: String,
    /// Kind of the target: Service. Default Service.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Name of the Service (a DNS-1123 label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Only calls to this Service port. Default: all ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
}

fn default_kind() -> String {
    defaults::TARGET_KIND.to_string()
}

impl TargetRef {
    /// All ports of the named Service.
    pub fn service(name: impl Into<String>) -> TargetRef {
        TargetRef {
            name: name.into(),
            ..TargetRef::default()
        }
    }
}

/// Unnamed, so not valid until a name is set; the group and kind are the defaults.
impl Default for TargetRef {
    fn default() -> Self {
        TargetRef {
            group: defaults::TARGET_GROUP.to_string(),
            kind: default_kind(),
            name: String::new(),
            port: None,
        }
    }
}
