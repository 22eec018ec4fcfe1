//! A pod's files: its directory under the node's state dir, `/etc/hosts`
//! (cluster DNS names of Services, since the node runs no DNS server), and
//! the volumes its containers mount.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Service, Volume};
use kube::Api;

use crate::sandbox::Bind;

/// The `/etc/hosts` of a pod: localhost, the pod itself, every Service's
/// ClusterIP under the names cluster DNS would give it (the short name only
/// for Services of the pod's own namespace, as the DNS search path would).
pub fn hosts_file(pod_ns: &str, hostname: &str, pod_ip: Ipv4Addr, services: &[Service]) -> String {
    let mut out = format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n{pod_ip}\t{hostname}\n");
    let mut entries: Vec<(String, String)> = services
        .iter()
        .filter_map(|svc| {
            let ip = svc.spec.as_ref()?.cluster_ip.as_deref()?;
            if ip.is_empty() || ip == "None" {
                return None;
            }
            let name = svc.metadata.name.as_deref()?;
            let ns = svc.metadata.namespace.as_deref()?;
            let mut names = vec![
                format!("{name}.{ns}.svc.cluster.local"),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}"),
            ];
            if ns == pod_ns {
                names.push(name.to_string());
            }
            Some((ip.to_string(), names.join(" ")))
        })
        .collect();
    entries.sort();
    for (ip, names) in entries {
        out.push_str(&format!("{ip}\t{names}\n"));
    }
    out
}

/// Writes in place (same inode), so the bind mounts see the new content.
pub fn write_in_place(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    // Truncating and writing is not atomic (a bind-mounted file cannot be
    // renamed over): skip it when nothing changed, so a reader never sees
    // the file empty for an EndpointSlice change.
    if std::fs::read(path).is_ok_and(|old| old == content.as_bytes()) {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    Ok(())
}

fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let chosen: Vec<(String, String)> = match items {
        Some(items) => items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, path) in chosen {
        let value = data
            .get(&key)
            .with_context(|| format!("key {key} not found"))?;
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(file, value)?;
    }
    Ok(())
}

async fn secret(client: &kube::Client, ns: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    let s: Secret = Api::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("secret {name}"))?;
    Ok(s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

async fn config_map(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let c: ConfigMap = Api::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("configmap {name}"))?;
    Ok(c.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect())
}

/// Fills `dir` for one volume: emptyDir stays empty; secrets and configMaps
/// are copied once at start (no refresh); a projected service-account token
/// comes from the TokenRequest API, bound to the pod (refreshed by
/// `refresh_tokens`); without that API the volume fails, and the pod with
/// it (no placeholder token).
async fn prepare(client: &kube::Client, pod: &Pod, volume: &Volume, dir: &Path) -> Result<()> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    std::fs::create_dir_all(dir)?;
    if let Some(s) = &volume.secret {
        let name = s.secret_name.as_deref().unwrap_or_default();
        write_items(dir, &secret(client, ns, name).await?, s.items.as_ref())?;
    } else if let Some(c) = &volume.config_map {
        write_items(
            dir,
            &config_map(client, ns, &c.name).await?,
            c.items.as_ref(),
        )?;
    } else if let Some(p) = &volume.projected {
        for source in p.sources.iter().flatten() {
            if let Some(t) = &source.service_account_token {
                let (token, _) = crate::apiserver::token(
                    client,
                    pod,
                    t.audience.as_deref(),
                    t.expiration_seconds,
                )
                .await?;
                std::fs::write(dir.join(&t.path), token)?;
            } else if let Some(s) = &source.secret {
                write_items(dir, &secret(client, ns, &s.name).await?, s.items.as_ref())?;
            } else if let Some(c) = &source.config_map {
                write_items(
                    dir,
                    &config_map(client, ns, &c.name).await?,
                    c.items.as_ref(),
                )?;
            } else {
                tracing::warn!(volume = %volume.name, "projected source not supported; left out");
            }
        }
    } else if volume.empty_dir.is_some() {
        // Writable by any user, as the kubelet makes it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
    } else {
        tracing::warn!(volume = %volume.name, "volume type not supported; an empty directory");
    }
    Ok(())
}

/// Creates every volume's directory under `pod_dir/volumes`.
pub async fn prepare_all(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
    access: Option<&crate::apiserver::Access>,
) -> Result<()> {
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        prepare(client, pod, volume, &volume_dir(pod_dir, &volume.name))
            .await
            .with_context(|| format!("volume {}", volume.name))?;
    }
    if let Some(access) = access.filter(|_| automount(pod)) {
        service_account(client, pod, &pod_dir.join(SERVICE_ACCOUNT_VOLUME), access).await?;
    }
    Ok(())
}

/// Where containers find the service account's files.
pub const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The node's own volume directory for them (beside `volumes/`).
const SERVICE_ACCOUNT_VOLUME: &str = "serviceaccount";

/// Whether the pod gets the service-account files: unless
/// `automountServiceAccountToken: false`.
fn automount(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.automount_service_account_token)
        .unwrap_or(true)
}

/// The files a cluster's service-account admission adds as a projected
/// volume: `ca.crt`, `namespace` and a token (1 h, bound to the pod). A token
/// the API server will not issue is left out (with a warning), so pods that
/// never call the API still run.
async fn service_account(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
    access: &crate::apiserver::Access,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.crt"), &access.ca_pem)?;
    std::fs::write(
        dir.join("namespace"),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    )?;
    match crate::apiserver::token(client, pod, None, Some(3600)).await {
        Ok((token, _)) => std::fs::write(dir.join("token"), token)?,
        Err(e) => tracing::warn!(
            pod = pod.metadata.name.as_deref().unwrap_or_default(),
            error = %format!("{e:#}"),
            "service-account token left out"
        ),
    }
    Ok(())
}

/// Rewrites the pod's tokens (its projected serviceAccountToken sources and
/// the service-account files) every `period` until `stop`, so none expires
/// while the pod runs (tokens live at least 10 minutes; this runs every 5).
pub async fn refresh_tokens(
    client: kube::Client,
    pod: Pod,
    pod_dir: PathBuf,
    period: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let sources = volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten());
            for t in sources.filter_map(|s| s.service_account_token.as_ref()) {
                match crate::apiserver::token(
                    &client,
                    &pod,
                    t.audience.as_deref(),
                    t.expiration_seconds,
                )
                .await
                {
                    Ok((token, _)) => {
                        let path = volume_dir(&pod_dir, &volume.name).join(&t.path);
                        if let Err(e) = write_in_place(&path, &token) {
                            tracing::warn!(error = %e, "token not refreshed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "token not refreshed"),
                }
            }
        }
        let sa = pod_dir.join(SERVICE_ACCOUNT_VOLUME).join("token");
        if sa.exists() {
            if let Ok((token, _)) = crate::apiserver::token(&client, &pod, None, Some(3600)).await {
                let _ = write_in_place(&sa, &token);
            }
        }
    }
}

fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// The container's bind mounts: `/etc/hosts`, then its volumeMounts.
pub fn binds(pod_dir: &Path, container: &Container) -> Vec<Bind> {
    let mut out = vec![Bind {
        source: pod_dir.join("etc-hosts"),
        target: PathBuf::from("/etc/hosts"),
        read_only: false,
    }];
    for m in container.volume_mounts.iter().flatten() {
        let mut source = volume_dir(pod_dir, &m.name);
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            source = source.join(sub);
        }
        out.push(Bind {
            source,
            target: PathBuf::from(&m.mount_path),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    let sa = pod_dir.join(SERVICE_ACCOUNT_VOLUME);
    let mounted = out
        .iter()
        .any(|b| b.target == Path::new(SERVICE_ACCOUNT_PATH));
    if sa.exists() && !mounted {
        out.push(Bind {
            source: sa,
            target: PathBuf::from(SERVICE_ACCOUNT_PATH),
            read_only: true,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ns: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip}
        }))
        .unwrap()
    }

    #[test]
    fn services_get_their_dns_names_short_only_in_the_same_namespace() {
        let hosts = hosts_file(
            "shop",
            "client",
            Ipv4Addr::new(10, 77, 1, 3),
            &[
                svc("web", "shop", "10.96.0.10"),
                svc("db", "other", "10.96.0.11"),
                svc("headless", "shop", "None"),
            ],
        );
        assert!(hosts.contains("10.77.1.3\tclient\n"));
        assert!(
            hosts.contains("10.96.0.10\tweb.shop.svc.cluster.local web.shop.svc web.shop web\n")
        );
        assert!(hosts.contains("10.96.0.11\tdb.other.svc.cluster.local db.other.svc db.other\n"));
        assert!(!hosts.contains("headless"));
    }
}
