//! Policy from a file: the same YAML/JSON documents a user would `kubectl apply`.
//! The file is polled (robust to editors' rename-on-save and to Kubernetes
//! ConfigMap symlink swaps); an invalid file keeps the last good policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use outrigger_api::gateway::{self, RouteKind, RouteObject};
use outrigger_api::manifest::{parse_documents, Document, PolicyManifest};
use outrigger_api::validate::validate_manifest;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::gateway_routes::{self, ComposedPolicies, RouteStanding};
use super::{conflicts, ActivePolicy, EndpointIndex, PolicyConflict, PolicyStore};
use outrigger_proxy_core::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("policy file {path}: policy {name} is invalid:\n{errors}")]
    Invalid {
        path: PathBuf,
        name: String,
        errors: String,
    },
}

/// The parsed, validated contents of a policy file.
pub struct LoadedFile {
    pub checksum: String,
    pub policies: Vec<PolicyManifest>,
    /// Policies that lose to another on the same Service and port.
    pub conflicts: Vec<PolicyConflict>,
    pub endpoints: EndpointIndex,
    /// HTTPRoutes/GRPCRoutes with a Service parent, per parent.
    pub routes: Vec<RouteStanding>,
    pub composed: ComposedPolicies,
}

pub fn load_policy_file(path: &Path) -> Result<LoadedFile, PolicyLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_policy_text(path, &text)
}

fn parse_policy_text(path: &Path, text: &str) -> Result<LoadedFile, PolicyLoadError> {
    let documents = parse_documents(text).map_err(|e| PolicyLoadError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut policies = Vec::new();
    let mut routes = Vec::new();
    let mut endpoints = EndpointIndex::default();
    for document in documents {
        match document {
            Document::Policy(policy) => {
                validate_manifest(&policy).map_err(|errors| PolicyLoadError::Invalid {
                    path: path.to_owned(),
                    name: policy.metadata.name.clone(),
                    errors: errors.to_string(),
                })?;
                policies.push(*policy);
            }
            // Gateway API routes (of that group: another API may have a
            // kind of the same name). A malformed one makes the file
            // invalid, as a malformed policy does.
            Document::Other {
                api_version,
                kind,
                name,
                raw,
            } if RouteKind::from_kind(&kind).is_some()
                && api_version.starts_with(&format!("{}/", gateway::GROUP)) =>
            {
                let route =
                    RouteObject::from_value(&raw).map_err(|message| PolicyLoadError::Invalid {
                        path: path.to_owned(),
                        name: format!("{kind} {}", name.unwrap_or_default()),
                        errors: message,
                    })?;
                // The API server would refuse or drop these; here they would
                // be ignored without a word (a misspelt `timeouts`, say).
                let unknown = route.unknown_fields(&raw);
                if !unknown.is_empty() {
                    tracing::warn!(
                        route = %route.label(),
                        "policy file {}: {} has fields Outrigger does not know, ignored: {}",
                        path.display(),
                        route.label(),
                        unknown.join(", "),
                    );
                }
                routes.push(route);
            }
            // Services and EndpointSlices give destinations their endpoints;
            // other kinds are not the proxy's business.
            Document::Other { kind, raw, .. } => {
                endpoints
                    .add(&kind, &raw)
                    .map_err(|message| PolicyLoadError::Parse {
                        path: path.to_owned(),
                        message,
                    })?;
            }
        }
    }
    let conflicts = conflicts(&policies);
    let (composed, routes) =
        gateway_routes::compose_file(&policies, &conflicts, &routes, &endpoints);
    Ok(LoadedFile {
        checksum: checksum(text),
        conflicts,
        policies,
        endpoints,
        routes,
        composed,
    })
}

fn checksum(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Installs a loaded file as the next policy generation, saying which
/// policies lost a conflict (a warning each, and the
/// `outrigger_policy_conflicts` gauge).
pub fn activate(store: &PolicyStore, metrics: &Metrics, path: &Path, loaded: LoadedFile) {
    let version = store.current().version + 1;
    let loaded_at = SystemTime::now();
    for c in &loaded.conflicts {
        let port = c
            .port
            .map_or("every port".to_string(), |p| format!("port {p}"));
        tracing::warn!(
            policy = %c.policy,
            winner = %c.winner,
            service = %c.service,
            port = c.port,
            "policies {} and {} both target Service {} ({port}): {} applies and {} is ignored \
             (the oldest policy wins, then the first by namespace/name, as the operator decides)",
            c.winner, c.policy, c.service, c.winner, c.policy,
        );
    }
    metrics.policy_conflicts.set(loaded.conflicts.len() as i64);
    for r in &loaded.routes {
        let parent = r.parent_ref.to_string();
        if !r.accepted.status {
            tracing::warn!(
                route = %r.route,
                parent = %parent,
                reason = %r.accepted.reason,
                "{} is not attached to {parent}: {} ({}); it applies nowhere",
                r.route, r.accepted.message, r.accepted.reason,
            );
        } else if !r.resolved_refs.status {
            tracing::warn!(
                route = %r.route,
                parent = %parent,
                reason = %r.resolved_refs.reason,
                "{} has backends that cannot be used: {} ({}); requests sent to them are \
                 answered 500",
                r.route, r.resolved_refs.message, r.resolved_refs.reason,
            );
        }
    }
    store.replace(ActivePolicy {
        version,
        source: format!("file:{}", path.display()),
        checksum: loaded.checksum,
        loaded_at,
        policies: loaded.policies,
        conflicts: loaded.conflicts,
        endpoints: loaded.endpoints,
        routes: loaded.routes,
        composed: loaded.composed,
    });
    metrics.policy_version.set(version as i64);
    metrics.policy_last_reload_ok.set(1);
    let unix = loaded_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    metrics.policy_loaded_timestamp.set(unix);
    tracing::info!(version, path = %path.display(), "policy loaded");
}

/// Polls the file until `stop`, activating each valid change.
pub async fn watch_policy_file(
    path: PathBuf,
    interval: Duration,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    // The text last attempted, good or bad: a bad file is reported once per edit.
    let mut last_seen = store.current().checksum.clone();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(source) => {
                let seen = format!("read-error:{source}");
                if seen != last_seen {
                    reject(
                        &metrics,
                        &PolicyLoadError::Read {
                            path: path.clone(),
                            source,
                        },
                    );
                    last_seen = seen;
                }
                continue;
            }
        };
        let sum = checksum(&text);
        if sum == last_seen {
            continue;
        }
        last_seen = sum;
        match parse_policy_text(&path, &text) {
            Ok(loaded) => activate(&store, &metrics, &path, loaded),
            Err(err) => reject(&metrics, &err),
        }
    }
}

fn reject(metrics: &Metrics, err: &PolicyLoadError) {
    metrics.policy_reload_errors.inc();
    metrics.policy_last_reload_ok.set(0);
    tracing::error!(error = %err, "policy rejected; the last good policy stays active");
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: payments, namespace: shop}
spec:
  targetRef: {kind: Service, name: payments}
  timeouts: {request: 2s}
"#;

    #[test]
    fn parse_error_names_the_file() {
        let err = parse_policy_text(Path::new("/p.yaml"), "kind: [")
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with("policy file /p.yaml: "),
            "{err}"
        );
    }

    #[test]
    fn invalid_policy_names_policy_and_field() {
        let bad = GOOD.replace("request: 2s", "request: 1s, backendRequest: 2s");
        let err = parse_policy_text(Path::new("/p.yaml"), &bad).err().unwrap();
        let text = err.to_string();
        assert!(text.contains("policy payments is invalid"), "{text}");
        assert!(text.contains("spec.timeouts.backendRequest"), "{text}");
    }

    #[tokio::test]
    async fn bad_edit_keeps_last_good_policy() {
        let dir = std::env::temp_dir().join(format!("outrigger-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let metrics = Metrics::new(10);
        let store = PolicyStore::new(ActivePolicy::defaults());
        activate(&store, &metrics, &path, load_policy_file(&path).unwrap());
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(watch_policy_file(
            path.clone(),
            Duration::from_millis(10),
            store.clone(),
            metrics.clone(),
            stop.clone(),
        ));

        std::fs::write(
            &path,
            "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nspec: 7\n",
        )
        .unwrap();
        wait_for(|| metrics.policy_reload_errors.get() == 1).await;
        assert_eq!(store.current().version, 1);
        assert_eq!(store.current().policies[0].metadata.name, "payments");
        assert_eq!(metrics.policy_last_reload_ok.get(), 0);

        std::fs::write(&path, GOOD.replace("2s", "3s")).unwrap();
        wait_for(|| store.current().version == 2).await;
        assert_eq!(metrics.policy_last_reload_ok.get(), 1);
        assert_eq!(
            metrics.policy_reload_errors.get(),
            1,
            "bad file reported once"
        );

        stop.cancel();
        watcher.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_conflict_is_counted_and_the_winner_applies() {
        let loser = GOOD.replace("name: payments, namespace", "name: zeta, namespace");
        let text = format!("{GOOD}---\n{}", loser.replace("2s", "9s"));
        let loaded = parse_policy_text(Path::new("/p.yaml"), &text).unwrap();
        let metrics = Metrics::new(10);
        let store = PolicyStore::new(ActivePolicy::defaults());
        activate(&store, &metrics, Path::new("/p.yaml"), loaded);
        assert_eq!(metrics.policy_conflicts.get(), 1);
        let active = store.current();
        assert_eq!(active.conflicts[0].policy, "shop/zeta");
        assert_eq!(active.conflicts[0].winner, "shop/payments");
        let service = crate::ServiceRef {
            namespace: "shop".into(),
            name: "payments".into(),
        };
        let chosen = active.policy_for(&service, 80).unwrap();
        assert_eq!(chosen.metadata.name, "payments");
        // A file without the conflict clears the gauge.
        activate(
            &store,
            &metrics,
            Path::new("/p.yaml"),
            parse_policy_text(Path::new("/p.yaml"), GOOD).unwrap(),
        );
        assert_eq!(metrics.policy_conflicts.get(), 0);
    }

    const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: pay, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: payments, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /charge}}]
    timeouts: {request: 5s}
    retry: {attempts: 1}
"#;

    const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: payments, namespace: shop}
spec:
  ports: [{name: http, port: 80}, {name: admin, port: 9000}]
"#;

    fn load(documents: &[&str]) -> ActivePolicy {
        let text = documents.join("---\n");
        let loaded = parse_policy_text(Path::new("/p.yaml"), &text).unwrap();
        let store = PolicyStore::new(ActivePolicy::defaults());
        activate(&store, &Metrics::new(10), Path::new("/p.yaml"), loaded);
        let current = store.current();
        drop(store);
        std::sync::Arc::into_inner(current).unwrap()
    }

    fn payments() -> crate::ServiceRef {
        crate::ServiceRef {
            namespace: "shop".into(),
            name: "payments".into(),
        }
    }

    #[test]
    fn routes_replace_the_policys_routes_on_their_port() {
        let active = load(&[GOOD, ROUTE, SERVICE]);
        assert_eq!(active.routes.len(), 1);
        assert!(active.routes[0].accepted.status, "{:?}", active.routes);
        assert!(active.routes[0].resolved_refs.status);
        let on_80 = active.policy_for(&payments(), 80).unwrap();
        assert_eq!(on_80.metadata.name, "payments", "the policy, composed");
        assert_eq!(
            on_80.metadata.annotations[crate::ROUTES_ANNOTATION],
            "HTTPRoute shop/pay"
        );
        let spec = &on_80.spec;
        assert!(spec.exclusive_routes);
        assert_eq!(spec.routes.len(), 1);
        assert_eq!(spec.routes[0].name.as_deref(), Some("pay/0"));
        assert_eq!(
            spec.routes[0].r#match.path_prefix.as_deref(),
            Some("/charge")
        );
        assert_eq!(
            spec.timeouts
                .as_ref()
                .unwrap()
                .request
                .map(|d| d.as_millis()),
            Some(2000),
            "the policy's own settings stay"
        );
        // Port 9000 has no route: the policy as written.
        let on_9000 = active.policy_for(&payments(), 9000).unwrap();
        assert!(!on_9000.spec.exclusive_routes);
        assert!(on_9000.spec.routes.is_empty());
        assert_eq!(on_9000, &active.policies[0]);
    }

    #[test]
    fn routes_without_a_policy_or_a_service_document() {
        let portless = ROUTE.replace(", port: 80}", "}");
        let active = load(&[&portless]);
        for port in [80, 8080] {
            let policy = active.policy_for(&payments(), port).unwrap();
            assert_eq!(policy.metadata.name, crate::ROUTES_ONLY_NAME);
            assert_eq!(policy.metadata.namespace.as_deref(), Some("shop"));
            assert_eq!(policy.spec.target_ref.name, "payments");
            assert_eq!(policy.spec.routes.len(), 1);
            assert!(policy.spec.retry.is_none(), "nothing else set");
        }
        let other = crate::ServiceRef {
            namespace: "shop".into(),
            name: "other".into(),
        };
        assert_eq!(active.policy_for(&other, 80), None);
    }

    #[test]
    fn a_route_not_accepted_is_listed_and_applies_nowhere() {
        let redirect = ROUTE.replace(
            "    retry: {attempts: 1}",
            "    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301}}]",
        );
        let wrong_port = ROUTE
            .replace("name: pay,", "name: elsewhere,")
            .replace("port: 80", "port: 81");
        let active = load(&[GOOD, &redirect, &wrong_port, SERVICE]);
        let standings: Vec<(&str, bool, &str)> = active
            .routes
            .iter()
            .map(|r| {
                (
                    r.route.as_str(),
                    r.accepted.status,
                    r.accepted.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            standings,
            [
                ("HTTPRoute shop/pay", false, "UnsupportedValue"),
                ("HTTPRoute shop/elsewhere", false, "NoMatchingParent"),
            ]
        );
        assert!(active.routes[0]
            .accepted
            .message
            .contains("RequestRedirect"));
        assert!(active.routes[1].accepted.message.contains("has no port 81"));
        assert_eq!(
            active.policy_for(&payments(), 80),
            Some(&active.policies[0])
        );
    }

    #[test]
    fn the_conflict_winner_is_the_policy_composed() {
        let loser = GOOD.replace("name: payments, namespace", "name: zeta, namespace");
        let active = load(&[&loser.replace("2s", "9s"), GOOD, ROUTE]);
        let composed = active.policy_for(&payments(), 80).unwrap();
        assert_eq!(composed.metadata.name, "payments");
        assert_eq!(composed.spec.routes.len(), 1);
    }

    #[test]
    fn route_documents_are_checked() {
        let bad = ROUTE
            .replace("value: /charge", "value: 7, extra: 1")
            .replace("type: PathPrefix, value: 7, extra: 1", "type: Prefix");
        let err = parse_policy_text(Path::new("/p.yaml"), &bad).err().unwrap();
        let text = err.to_string();
        assert!(text.contains("policy HTTPRoute pay is invalid"), "{text}");
        assert!(text.contains("Prefix"), "{text}");
        // Another API's kind of the same name is not ours.
        let foreign = ROUTE.replace("gateway.networking.k8s.io/v1", "example.com/v1");
        let loaded = parse_policy_text(Path::new("/p.yaml"), &foreign).unwrap();
        assert!(loaded.routes.is_empty());
        // What only routes set is refused in a policy.
        let policy = GOOD.replace(
            "  timeouts: {request: 2s}",
            "  routes: [{match: {pathRegex: /a.*}}]",
        );
        let err = parse_policy_text(Path::new("/p.yaml"), &policy)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("spec.routes[0].match.pathRegex: set by HTTPRoute/GRPCRoute only"),
            "{err}"
        );
    }

    /// The example of docs/gateway-api.md means what the text says.
    #[test]
    fn the_documented_example_holds() {
        use outrigger_api::defaults::with_defaults;
        use outrigger_api::policy::NonIdempotent;
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/gateway-api.md");
        let text = std::fs::read_to_string(&doc).unwrap();
        let example = text
            .split("```yaml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a yaml block in docs/gateway-api.md");
        let loaded = parse_policy_text(&doc, example).unwrap();
        let store = PolicyStore::new(ActivePolicy::defaults());
        activate(&store, &Metrics::new(10), &doc, loaded);
        let active = store.current();
        let composed = active.policy_for(&payments(), 80).unwrap();
        let spec = with_defaults(&composed.spec);
        assert!(spec.exclusive_routes);
        let ms = |r: &outrigger_api::policy::Route| {
            let t = r.timeouts.as_ref().unwrap();
            (
                t.request.map(|d| d.as_millis()),
                t.backend_request.map(|d| d.as_millis()),
            )
        };
        let [charge, rest] = &spec.routes[..] else {
            panic!("{:?}", spec.routes)
        };
        assert_eq!(charge.name.as_deref(), Some("checkout/charge"));
        assert_eq!(charge.r#match.method.as_deref(), Some("POST"));
        assert_eq!(ms(charge), (Some(10_000), Some(2_000)));
        let retry = charge.retry.as_ref().unwrap();
        assert_eq!(
            (retry.attempts, retry.codes.clone()),
            (Some(3), Some(vec![503]))
        );
        let backoff = retry.backoff.as_ref().unwrap();
        assert_eq!(
            (
                backoff.base.unwrap().as_millis(),
                backoff.max.unwrap().as_millis()
            ),
            (100, 1000)
        );
        assert_eq!(retry.non_idempotent, Some(NonIdempotent::IfIdempotencyKey));
        let weights: Vec<(&str, u32)> = charge
            .backends
            .iter()
            .map(|b| (b.name.as_str(), b.weight))
            .collect();
        assert_eq!(weights, [("payments-v1", 90), ("payments-v2", 10)]);
        assert_eq!(rest.name.as_deref(), Some("checkout/1"));
        assert_eq!(ms(rest), (Some(3_000), None));
        let retry = rest.retry.as_ref().unwrap();
        assert_eq!(
            (retry.attempts, retry.codes.clone()),
            (Some(2), Some(vec![502, 503, 504]))
        );
        assert_eq!(rest.backends[0].name, "payments-v1");
        let other = active.policy_for(&payments(), 8080).unwrap();
        assert!(other.spec.routes.is_empty() && !other.spec.exclusive_routes);
    }

    async fn wait_for(mut condition: impl FnMut() -> bool) {
        for _ in 0..500 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached within 5s");
    }
}
