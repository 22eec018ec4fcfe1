//! A container's environment: `value`s (with `$(VAR)` references), the
//! downward API fields a sidecar needs, secret and configMap keys, `envFrom`.

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;

/// What `fieldRef`s resolve against besides the pod object.
pub struct Facts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub node_name: &'a str,
}

/// PATH of every container: the node's binaries first (images are local
/// programs, see images.rs).
pub fn path(bin_dir: &std::path::Path) -> String {
    format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        bin_dir.display()
    )
}

fn field(facts: &Facts, path: &str) -> Result<String> {
    let meta = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "spec.nodeName" => facts.node_name.to_string(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_string(),
        other => {
            if let Some(key) = other
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(key).cloned())
                    .unwrap_or_default()
            } else {
                bail!("fieldRef {other} is not supported")
            }
        }
    })
}

/// `$(NAME)` replaced by an earlier variable's value; unknown ones kept, `$$`
/// escapes, as Kubernetes does.
pub fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

async fn key(
    client: &kube::Client,
    ns: &str,
    secret: bool,
    name: &str,
    key: &str,
) -> Result<String> {
    let value = if secret {
        let s: Secret = Api::namespaced(client.clone(), ns).get(name).await?;
        s.data.and_then(|d| {
            d.get(key)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        })
    } else {
        let c: ConfigMap = Api::namespaced(client.clone(), ns).get(name).await?;
        c.data.and_then(|d| d.get(key).cloned())
    };
    value.with_context(|| format!("key {key} not in {name}"))
}

/// The environment of `container`, in order (later entries win).
pub async fn resolve(
    client: &kube::Client,
    facts: &Facts<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>> {
    let ns = facts.pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let pairs: Vec<(String, String)> = if let Some(s) = &from.secret_ref {
            let s: Secret = Api::namespaced(client.clone(), ns).get(&s.name).await?;
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect()
        } else if let Some(c) = &from.config_map_ref {
            let c: ConfigMap = Api::namespaced(client.clone(), ns).get(&c.name).await?;
            c.data.unwrap_or_default().into_iter().collect()
        } else {
            Vec::new()
        };
        env.extend(pairs.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(v) = &var.value {
            expand(v, &env)
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                field(facts, &f.field_path)?
            } else if let Some(s) = &from.secret_key_ref {
                key(client, ns, true, &s.name, &s.key).await?
            } else if let Some(c) = &from.config_map_key_ref {
                key(client, ns, false, &c.name, &c.key).await?
            } else {
                bail!("env {}: valueFrom source not supported", var.name)
            }
        } else {
            String::new()
        };
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_escapes_and_unknowns_stay() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$$(A) $(B) $", &env), "$(A) $(B) $");
    }

    #[test]
    fn downward_fields_resolve() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "labels": {"app": "web"}},
            "spec": {"containers": [], "serviceAccountName": "sa"}
        }))
        .unwrap();
        let facts = Facts {
            pod: &pod,
            pod_ip: Ipv4Addr::new(10, 77, 1, 2),
            host_ip: Ipv4Addr::new(10, 77, 1, 1),
            node_name: "node",
        };
        assert_eq!(field(&facts, "metadata.name").unwrap(), "p");
        assert_eq!(field(&facts, "metadata.namespace").unwrap(), "n");
        assert_eq!(field(&facts, "status.podIP").unwrap(), "10.77.1.2");
        assert_eq!(field(&facts, "spec.serviceAccountName").unwrap(), "sa");
        assert_eq!(field(&facts, "spec.nodeName").unwrap(), "node");
        assert_eq!(field(&facts, "metadata.labels['app']").unwrap(), "web");
        assert!(field(&facts, "status.phase").is_err());
    }
}
