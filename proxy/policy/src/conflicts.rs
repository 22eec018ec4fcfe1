//! Two policies for one Service and port in one policy file: the operator's
//! rule ([`semantics::arbitrate`]: the oldest wins, then the first by
//! namespace/name) decides which applies, and the loser is reported.

use outrigger_api::manifest::PolicyManifest;
use outrigger_api::semantics::{self, Claim, Standing};
use serde::Serialize;

/// A policy that applies nowhere because another claims its Service and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyConflict {
    /// The losing policy, `namespace/name`.
    pub policy: String,
    /// The policy that applies instead.
    pub winner: String,
    /// The Service, `namespace/name`.
    pub service: String,
    /// targetRef.port of both; `None`: the Service's ports no port-specific
    /// policy claims.
    pub port: Option<u16>,
    /// The loser's position among the file's policies.
    #[serde(skip)]
    pub index: usize,
}

fn namespace(policy: &PolicyManifest) -> &str {
    policy.metadata.namespace.as_deref().unwrap_or("default")
}

fn key(policy: &PolicyManifest) -> String {
    format!("{}/{}", namespace(policy), policy.metadata.name)
}

/// The conflicts among `policies` (all valid), in file order.
pub fn conflicts(policies: &[PolicyManifest]) -> Vec<PolicyConflict> {
    let claims: Vec<Claim<'_, &str>> = policies
        .iter()
        .map(|p| Claim {
            namespace: namespace(p),
            name: &p.metadata.name,
            // As `kubectl get -o yaml` prints it (RFC 3339, UTC, seconds), so
            // text order is time order.
            created: p
                .metadata
                .extra
                .get("creationTimestamp")
                .and_then(|t| t.as_str()),
            target: &p.spec.target_ref,
        })
        .collect();
    semantics::arbitrate(&claims)
        .into_iter()
        .enumerate()
        .filter_map(|(index, standing)| match standing {
            Standing::Accepted => None,
            Standing::Conflicted { winner } => {
                let loser = &policies[index];
                Some(PolicyConflict {
                    policy: key(loser),
                    winner: key(&policies[winner]),
                    service: format!("{}/{}", namespace(loser), loser.spec.target_ref.name),
                    port: loser.spec.target_ref.port,
                    index,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_api::manifest::{parse_documents, Document};

    fn policies(yaml: &str) -> Vec<PolicyManifest> {
        parse_documents(yaml)
            .unwrap()
            .into_iter()
            .filter_map(|d| match d {
                Document::Policy(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_first_by_name_wins_unless_one_is_older() {
        let ps = policies(
            r#"
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: zeta, namespace: shop}
spec: {targetRef: {name: payments}}
---
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: alpha, namespace: shop}
spec: {targetRef: {name: payments}}
---
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: port, namespace: shop}
spec: {targetRef: {name: payments, port: 80}}
---
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: a-port, namespace: shop, creationTimestamp: "2026-01-02T00:00:00Z"}
spec: {targetRef: {name: payments, port: 80}}
"#,
        );
        assert_eq!(
            conflicts(&ps),
            [
                PolicyConflict {
                    policy: "shop/zeta".into(),
                    winner: "shop/alpha".into(),
                    service: "shop/payments".into(),
                    port: None,
                    index: 0,
                },
                PolicyConflict {
                    policy: "shop/a-port".into(),
                    winner: "shop/port".into(),
                    service: "shop/payments".into(),
                    port: Some(80),
                    index: 3,
                },
            ]
        );
    }
}
