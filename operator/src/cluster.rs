//! Cluster mode: reflectors over ResiliencePolicies, Services and
//! EndpointSlices feed one recompute loop; the lease holder writes status.
//!
//! Watch errors (410 Gone, API 5xx, dropped connections) are absorbed by the
//! watchers' backoff and re-list; a failed status write is retried on the
//! next recompute (at the latest one resync later). One bad object only ever
//! costs its own status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use outrigger_api::gateway::{RouteKind, RouteObject, RouteVerdict, TrafficPolicy};
use outrigger_api::policy::ResiliencePolicy;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::compile::{compile_gateway, ObjectKey};
use crate::index::CompiledIndex;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::status::{acceptance_changed, desired_status};

/// Field manager for server-side apply of status.
pub const FIELD_MANAGER: &str = "outrigger-operator";

/// Changes within this window are folded into one recompute.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// A recompute at least this often, to retry failed status writes.
const RESYNC: Duration = Duration::from_secs(30);

pub struct Context {
    pub client: Client,
    pub index: Arc<CompiledIndex>,
    pub metrics: Arc<Metrics>,
    pub leadership: Arc<Leadership>,
    /// Set once every cache has listed its resources.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Pokes the recompute loop (e.g. when this replica becomes leader).
    pub trigger: Arc<Notify>,
    /// Poked on acknowledgements: they change `status.proxies`, never the
    /// view, so they wake a status-only pass (`recount`), not a recompute.
    pub acks: Arc<Notify>,
    pub reporter: Reporter,
    /// Acknowledgements, for `status.proxies`.
    pub hub: Arc<crate::policy_server::Hub>,
    /// This replica's name (its proxy report is counted from `hub`).
    pub identity: String,
}

pub struct Stores {
    pub policies: Store<ResiliencePolicy>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub pods: Store<Pod>,
    /// Other replicas' proxy reports (crate::proxy_reports); None with one replica.
    pub reports: Option<Store<Lease>>,
    /// HTTPRoute and GRPCRoute caches; empty with `--gateway-api=false`.
    pub routes: Vec<crate::route_watch::RouteCache>,
    /// XBackendTrafficPolicy (retry budgets); none with `--gateway-api=false`.
    pub traffic: Option<crate::route_watch::RouteCache>,
}

/// Service accounts of a Service's pods, from the watch caches.
pub struct CachedServiceAccounts {
    pub services: Store<Service>,
    pub pods: Store<Pod>,
}

impl crate::policy_server::auth::ServiceAccounts for CachedServiceAccounts {
    fn of_service(&self, namespace: &str, service: &str) -> Option<Vec<String>> {
        let key = kube::runtime::reflector::ObjectRef::<Service>::new(service).within(namespace);
        let service = self.services.get(&key)?;
        let selector = service.spec.as_ref()?.selector.clone().unwrap_or_default();
        if selector.is_empty() {
            return Some(Vec::new());
        }
        let mut accounts: Vec<String> = self
            .pods
            .state()
            .iter()
            .filter(|pod| pod.metadata.namespace.as_deref() == Some(namespace))
            .filter(|pod| {
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|pod| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".into())
            })
            .collect();
        accounts.sort();
        accounts.dedup();
        Some(accounts)
    }

    fn of_pod(&self, namespace: &str, pod: &str) -> Option<String> {
        let key = kube::runtime::reflector::ObjectRef::<Pod>::new(pod).within(namespace);
        let pod = self.pods.get(&key)?;
        Some(
            pod.spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        )
    }
}

/// Starts the reflectors (policies, Services, EndpointSlices, Pods and, with
/// several replicas, their proxy reports); each change pokes `trigger`
/// (Pods excepted: they matter only for authorization).
pub fn start_reflectors(
    client: &Client,
    trigger: Arc<Notify>,
    reports_namespace: Option<&str>,
    gateway_api: bool,
    stop: &CancellationToken,
) -> Stores {
    fn reflect<K>(
        api: Api<K>,
        config: watcher::Config,
        trigger: Arc<Notify>,
        stop: CancellationToken,
    ) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let (store, writer) = reflector::store();
        let stream = watcher(api, config)
            .default_backoff()
            // Every event pokes, not only applied objects: a deletion, or a
            // re-list that drops what vanished meanwhile (InitDone), changes
            // the store just as much.
            .reflect(writer);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    item = stream.next() => match item {
                        Some(Ok(_)) => trigger.notify_one(),
                        Some(Err(err)) => {
                            // The backoff already delays the retry.
                            tracing::warn!(kind = K::kind(&()).as_ref(), error = %err, "watch error");
                            trigger.notify_one();
                        }
                        None => return,
                    },
                }
            }
        });
        store
    }
    Stores {
        policies: reflect(
            Api::<ResiliencePolicy>::all(client.clone()),
            watcher::Config::default(),
            trigger.clone(),
            stop.clone(),
        ),
        services: reflect(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            trigger.clone(),
            stop.clone(),
        ),
        slices: reflect(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
            trigger.clone(),
            stop.clone(),
        ),
        // Pods change often and matter only for authorization: no recompute.
        pods: reflect(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            Arc::new(Notify::new()),
            stop.clone(),
        ),
        reports: reports_namespace.map(|namespace| {
            reflect(
                Api::<Lease>::namespaced(client.clone(), namespace),
                watcher::Config::default().labels(&format!("{}=true", crate::proxy_reports::LABEL)),
                trigger.clone(),
                stop.clone(),
            )
        }),
        routes: if gateway_api {
            crate::route_watch::start_all(client, trigger.clone(), stop)
        } else {
            Vec::new()
        },
        traffic: gateway_api.then(|| {
            crate::route_watch::start_traffic_policies(client, trigger.clone(), stop.clone())
        }),
    }
}

/// Waits for the caches, then recomputes on every change until `stop`.
pub async fn run(ctx: Arc<Context>, stores: Stores, stop: CancellationToken) -> anyhow::Result<()> {
    tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        synced = async {
            stores.policies.wait_until_ready().await?;
            stores.services.wait_until_ready().await?;
            stores.slices.wait_until_ready().await?;
            // Listed, or known to be absent (no CRD): never waits for a CRD
            // that does not exist.
            for routes in stores.routes.iter().chain(&stores.traffic) {
                routes.settled().await;
            }
            Ok::<_, kube::runtime::reflector::store::WriterDropped>(())
        } => synced?,
    }
    tracing::info!("caches synced");
    // Ready once proxies can be served the compiled view, not merely once the
    // caches hold it.
    recompute(&ctx, &stores).await;
    ctx.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    loop {
        let objects_changed = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = ctx.trigger.notified() => true,
            _ = ctx.acks.notified() => false,
            _ = tokio::time::sleep(RESYNC) => true,
        };
        tokio::time::sleep(DEBOUNCE).await;
        if objects_changed {
            recompute(&ctx, &stores).await;
        } else {
            recount(&ctx, &stores).await;
        }
    }
}

/// After acknowledgements only: `status.proxies` against the view last
/// published, which acks do not change. During an edit reaching thousands of
/// proxies, acks arrive by the thousand; each burst used to clone every
/// object out of the caches, re-parse the routes and recompile the view.
/// A follower writes no status, so it has nothing to do.
pub async fn recount(ctx: &Context, stores: &Stores) {
    if !ctx.leadership.is_leader() {
        return;
    }
    let compiled = ctx.index.load();
    let policies = stores.policies.state();
    let reports: Vec<Arc<Lease>> = stores.reports.as_ref().map_or(Vec::new(), |r| r.state());
    write_statuses(ctx, policies.iter().map(|p| &**p), &compiled, &reports).await;
}

/// One pass: compile the view from the caches, publish it, and (as leader)
/// bring every policy's status up to date.
pub async fn recompute(ctx: &Context, stores: &Stores) {
    let started = Instant::now();
    let policies: Vec<ResiliencePolicy> = stores
        .policies
        .state()
        .iter()
        .map(|p| (**p).clone())
        .collect();
    let services: Vec<Service> = stores
        .services
        .state()
        .iter()
        .map(|s| (**s).clone())
        .collect();
    let slices: Vec<EndpointSlice> = stores
        .slices
        .state()
        .iter()
        .map(|s| (**s).clone())
        .collect();
    let route_objects: Vec<Arc<kube::api::DynamicObject>> = stores
        .routes
        .iter()
        .flat_map(|cache| cache.objects())
        .collect();
    let routes = route_models(&route_objects);
    let traffic = traffic_models(stores.traffic.as_ref());
    for (kind, count) in [
        ("ResiliencePolicy", policies.len()),
        ("Service", services.len()),
        ("EndpointSlice", slices.len()),
        (
            "HTTPRoute",
            routes.iter().filter(|r| r.kind == RouteKind::Http).count(),
        ),
        (
            "GRPCRoute",
            routes.iter().filter(|r| r.kind == RouteKind::Grpc).count(),
        ),
    ] {
        ctx.metrics
            .objects
            .with_label_values(&[kind])
            .set(count as i64);
    }
    let compiled = compile_gateway(&policies, &services, &slices, &routes, &traffic);
    // Proxies first, statuses after: the leader's status writes are one API
    // request per changed policy (all of them after an edit of every
    // policy), and proxies need not wait for them. Counts taken right after
    // find proxies on the older generation, which the tallies tell apart.
    ctx.index.store(compiled);
    let compiled = ctx.index.load();
    if ctx.leadership.is_leader() {
        let reports: Vec<Arc<Lease>> = stores.reports.as_ref().map_or(Vec::new(), |r| r.state());
        write_statuses(ctx, &policies, &compiled, &reports).await;
        write_route_statuses(ctx, &stores.routes, &route_objects, &routes, &compiled).await;
    }
    ctx.metrics.reconciles.inc();
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
}

/// The routes the translation reads; one that does not parse is logged and
/// left out (it gets no status from us: we cannot tell its parentRefs).
fn route_models(objects: &[Arc<kube::api::DynamicObject>]) -> Vec<RouteObject> {
    parsed(objects, RouteObject::from_value)
}

/// The BackendTrafficPolicies the budgets are read from; one that does not
/// parse is logged and left out.
fn traffic_models(cache: Option<&crate::route_watch::RouteCache>) -> Vec<TrafficPolicy> {
    parsed(
        &cache.map(|c| c.objects()).unwrap_or_default(),
        TrafficPolicy::from_value,
    )
}

/// Gateway API objects read by `read`; one that does not parse is logged
/// (by kind, namespace and name) and left out.
fn parsed<T>(
    objects: &[Arc<kube::api::DynamicObject>],
    read: fn(&serde_json::Value) -> Result<T, String>,
) -> Vec<T> {
    objects
        .iter()
        .filter_map(|object| {
            let value = serde_json::to_value(&**object).ok()?;
            read(&value)
                .map_err(|err| {
                    let kind = object.types.as_ref().map_or("", |t| t.kind.as_str());
                    tracing::warn!(
                        object = %format!("{kind} {}/{}", object.namespace().unwrap_or_default(), object.name_any()),
                        error = %err,
                        "skipped: does not parse"
                    )
                })
                .ok()
        })
        .collect()
}

/// Every cached route's `status.parents` entries of ours, from its verdict
/// (none: entries of ours left from earlier parentRefs are removed). Routes
/// that did not parse (`parsed` lacks them) are left as they are.
async fn write_route_statuses(
    ctx: &Context,
    caches: &[crate::route_watch::RouteCache],
    objects: &[Arc<kube::api::DynamicObject>],
    parsed: &[RouteObject],
    compiled: &crate::compile::Compiled,
) {
    let parsed: std::collections::HashSet<(&str, &str, &str)> = parsed
        .iter()
        .map(|r| (r.kind.kind_name(), r.namespace.as_str(), r.name.as_str()))
        .collect();
    let now = Timestamp::now().to_string();
    let verdicts: std::collections::HashMap<(&str, &str, &str), &RouteVerdict> = compiled
        .route_verdicts
        .iter()
        .map(|v| {
            (
                (v.kind.kind_name(), v.namespace.as_str(), v.name.as_str()),
                v,
            )
        })
        .collect();
    for object in objects {
        let Some(kind) = object.types.as_ref().map(|t| t.kind.as_str()) else {
            continue;
        };
        let Some(cache) = caches.iter().find(|c| c.kind == kind) else {
            continue;
        };
        let namespace = object.namespace().unwrap_or_default();
        let name = object.name_any();
        if !parsed.contains(&(kind, namespace.as_str(), name.as_str())) {
            continue;
        }
        let parents = verdicts
            .get(&(kind, namespace.as_str(), name.as_str()))
            .map_or(&[][..], |v| v.parents.as_slice());
        let api = cache.api(&ctx.client, &namespace);
        match crate::route_status::write(&api, object, parents, &now).await {
            Ok(true) => ctx.metrics.status_writes.inc(),
            Ok(false) => {}
            Err(err) => {
                let reason = match &err {
                    kube::Error::Api(e) if e.code == 409 => "conflict",
                    kube::Error::Api(e) if e.code == 404 => "not-found",
                    kube::Error::Api(e) if e.code >= 500 => "server",
                    _ => "other",
                };
                ctx.metrics
                    .reconcile_errors
                    .with_label_values(&[reason])
                    .inc();
                tracing::warn!(route = %format!("{kind} {namespace}/{name}"), error = %err, "route status write failed; will retry");
            }
        }
    }
}

async fn write_statuses<'a>(
    ctx: &Context,
    policies: impl IntoIterator<Item = &'a ResiliencePolicy>,
    compiled: &crate::compile::Compiled,
    reports: &[Arc<Lease>],
) {
    let now = Timestamp::now();
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    // Ours from memory, the other replicas' from their live reports.
    let mut tallies = crate::proxy_reports::live_reports(reports, &ctx.identity, now);
    tallies.push(ctx.hub.proxy_counts());
    for policy in policies {
        let key = ObjectKey {
            namespace: policy.namespace().unwrap_or_default(),
            name: policy.name_any(),
        };
        let Some(verdict) = compiled.verdicts.get(&key) else {
            continue;
        };
        // A view compiled before this generation (an ack pass racing an
        // edit): the recompute on its way writes this one.
        if verdict.generation != policy.metadata.generation {
            continue;
        }
        let existing = policy.status.as_ref();
        let (total, current) =
            crate::proxy_reports::merge(&tallies, &key.to_string(), policy.metadata.generation);
        let proxies = Some(outrigger_api::policy::ProxyCount { total, current });
        let desired = desired_status(verdict, existing, proxies, now);
        if existing == Some(&desired) {
            continue;
        }
        let api: Api<ResiliencePolicy> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let patch = serde_json::json!({
            "apiVersion": "outrigger.dev/v1alpha1",
            "kind": "ResiliencePolicy",
            "status": desired,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&key.name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                ctx.metrics.status_writes.inc();
                if acceptance_changed(existing, &desired) {
                    publish_event(&recorder, policy, verdict).await;
                }
            }
            Err(err) => {
                let kind = match &err {
                    kube::Error::Api(e) if e.code == 409 => "conflict",
                    kube::Error::Api(e) if e.code == 404 => "not-found",
                    kube::Error::Api(e) if e.code >= 500 => "server",
                    _ => "other",
                };
                ctx.metrics
                    .reconcile_errors
                    .with_label_values(&[kind])
                    .inc();
                tracing::warn!(policy = %key, error = %err, "status write failed; will retry");
            }
        }
    }
}

async fn publish_event(
    recorder: &Recorder,
    policy: &ResiliencePolicy,
    verdict: &crate::compile::Verdict,
) {
    let event = Event {
        type_: if verdict.accepted.status {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: verdict.accepted.reason.into(),
        note: Some(verdict.accepted.message.clone()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &policy.object_ref(&())).await {
        // Events are a courtesy; a cluster that refuses them loses nothing else.
        tracing::debug!(error = %err, "could not publish event");
    }
}

/// Scripted API errors through kube's mock client (tower-test): there is no
/// API server in these tests; each request is answered by the script below.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tower_test::mock;

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn mock_client() -> (Client, Handle) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), handle)
    }

    fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    fn api_status(code: u16, reason: &str) -> serde_json::Value {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": format!("scripted {reason}"), "reason": reason, "code": code})
    }

    fn policy() -> ResiliencePolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "outrigger.dev/v1alpha1", "kind": "ResiliencePolicy",
            "metadata": {"name": "payments", "namespace": "shop", "generation": 1},
            "spec": {"targetRef": {"kind": "Service", "name": "payments"}}
        }))
        .unwrap()
    }

    fn context(client: Client) -> Context {
        let leadership = Arc::new(Leadership::default());
        leadership.force(true);
        Context {
            client,
            index: Arc::default(),
            metrics: Arc::default(),
            leadership,
            ready: Arc::new(AtomicBool::new(false)),
            trigger: Arc::new(Notify::new()),
            acks: Arc::new(Notify::new()),
            reporter: Reporter {
                controller: "test".into(),
                instance: None,
            },
            hub: crate::policy_server::Hub::new(
                Arc::default(),
                Arc::default(),
                "cluster.local".into(),
            ),
            identity: "test".into(),
        }
    }

    /// Answers status patches with the given statuses in turn, events with 201.
    fn serve_patches(mut handle: Handle, statuses: Vec<StatusCode>, patches: Arc<AtomicUsize>) {
        tokio::spawn(async move {
            let mut script = statuses.into_iter();
            while let Some((request, respond)) = handle.next_request().await {
                let path = request.uri().path().to_string();
                if path.ends_with("/resiliencepolicies/payments/status") {
                    assert_eq!(request.method(), http::Method::PATCH);
                    let query = request.uri().query().unwrap_or("");
                    assert!(query.contains("fieldManager=outrigger-operator"), "{query}");
                    patches.fetch_add(1, Ordering::SeqCst);
                    let status = script.next().unwrap_or(StatusCode::OK);
                    let body = if status.is_success() {
                        serde_json::to_value(policy()).unwrap()
                    } else {
                        api_status(status.as_u16(), "Scripted")
                    };
                    respond.send_response(json_response(status, body));
                } else if path.contains("/events") {
                    respond
                        .send_response(json_response(StatusCode::CREATED, serde_json::json!({})));
                } else {
                    panic!("unexpected request {} {path}", request.method());
                }
            }
        });
    }

    #[tokio::test]
    async fn status_write_conflict_and_server_error_are_retried() {
        let (client, handle) = mock_client();
        let patches = Arc::new(AtomicUsize::new(0));
        serve_patches(
            handle,
            vec![
                StatusCode::CONFLICT,
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::OK,
            ],
            patches.clone(),
        );
        let ctx = context(client);
        let policies = [policy()];
        let compiled = compile(&policies, &[], &[]);
        write_statuses(&ctx, &policies, &compiled, &[]).await;
        write_statuses(&ctx, &policies, &compiled, &[]).await;
        let errors = |kind: &str| {
            ctx.metrics
                .reconcile_errors
                .with_label_values(&[kind])
                .get()
        };
        assert_eq!((errors("conflict"), errors("server")), (1, 1));
        assert_eq!(ctx.metrics.status_writes.get(), 0);
        write_statuses(&ctx, &policies, &compiled, &[]).await;
        assert_eq!(ctx.metrics.status_writes.get(), 1);
        assert_eq!(patches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn followers_write_no_status() {
        let (client, handle) = mock_client();
        let patches = Arc::new(AtomicUsize::new(0));
        serve_patches(handle, vec![], patches.clone());
        let ctx = context(client);
        ctx.leadership.force(false);
        let stores = Stores {
            policies: store_of(vec![policy()]),
            services: store_of(vec![]),
            slices: store_of(vec![]),
            pods: store_of(vec![]),
            reports: None,
            // A route on the policy's Service: its status is not written
            // either (any request for it would fail the mock).
            routes: vec![crate::route_watch::RouteCache::listed(
                "HTTPRoute",
                vec![serde_json::from_value(serde_json::json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": "checkout", "namespace": "shop", "generation": 1},
                    "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "payments"}]}
                }))
                .unwrap()],
            )],
            traffic: None,
        };
        recompute(&ctx, &stores).await;
        assert_eq!(patches.load(Ordering::SeqCst), 0);
        let view = ctx.index.load();
        assert_eq!(view.verdicts.len(), 1, "the view is still compiled");
        assert_eq!(view.route_verdicts.len(), 1, "routes too");
        // A route status request would have failed on the mock.
        for kind in ["conflict", "not-found", "server", "other"] {
            assert_eq!(
                ctx.metrics
                    .reconcile_errors
                    .with_label_values(&[kind])
                    .get(),
                0
            );
        }
    }

    #[tokio::test]
    async fn acks_write_statuses_without_recompiling() {
        let (client, handle) = mock_client();
        let patches = Arc::new(AtomicUsize::new(0));
        serve_patches(handle, vec![], patches.clone());
        let ctx = context(client);
        let stores = |policy: ResiliencePolicy| Stores {
            policies: store_of(vec![policy]),
            services: store_of(vec![]),
            slices: store_of(vec![]),
            pods: store_of(vec![]),
            reports: None,
            routes: vec![],
            traffic: None,
        };
        let current = stores(policy());
        recompute(&ctx, &current).await;
        assert_eq!(patches.load(Ordering::SeqCst), 1);
        let view = ctx.index.load();
        // The cache still holds the policy without status (the mock API
        // server updates nothing), so every pass finds one to write.
        recount(&ctx, &current).await;
        assert_eq!(patches.load(Ordering::SeqCst), 2, "the status is written");
        assert_eq!(ctx.metrics.reconciles.get(), 1, "no recompute");
        assert!(
            Arc::ptr_eq(&view, &ctx.index.load()),
            "the view is untouched"
        );

        // A policy edited after the view was compiled: its status waits for
        // the recompute (it would carry the old generation's verdict).
        let mut edited = policy();
        edited.metadata.generation = Some(2);
        recount(&ctx, &stores(edited)).await;
        assert_eq!(patches.load(Ordering::SeqCst), 2);

        // A follower writes no status, so acks cost it nothing.
        ctx.leadership.force(false);
        recount(&ctx, &current).await;
        assert_eq!(patches.load(Ordering::SeqCst), 2);
        assert_eq!(ctx.metrics.reconciles.get(), 1);
    }

    fn store_of<K>(objects: Vec<K>) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        store
    }

    /// A watch that fails with 410 Gone (an expired resourceVersion) and a
    /// list that fails with 500 both end in a fresh, successful list.
    #[tokio::test]
    async fn watch_410_and_list_500_relist_and_recover() {
        let (client, mut handle) = mock_client();
        let policy_lists = Arc::new(AtomicUsize::new(0));
        let lists = policy_lists.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let path = request.uri().path().to_string();
                let query = request.uri().query().unwrap_or("").to_string();
                let is_watch = query.contains("watch=true");
                if !path.contains("resiliencepolicies") {
                    // Services and EndpointSlices: empty lists, watches that stay quiet.
                    tokio::spawn(async move {
                        if is_watch {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        let kind = if path.contains("endpointslices") {
                            "EndpointSliceList"
                        } else {
                            "ServiceList"
                        };
                        respond.send_response(json_response(StatusCode::OK, serde_json::json!(
                            {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})));
                    });
                    continue;
                }
                if is_watch {
                    let gone =
                        serde_json::json!({"type": "ERROR", "object": api_status(410, "Expired")});
                    let mut line = serde_json::to_vec(&gone).unwrap();
                    line.push(b'\n');
                    respond.send_response(Response::new(Body::from(line)));
                    continue;
                }
                let n = lists.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    respond.send_response(json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        api_status(500, "InternalError"),
                    ));
                } else {
                    respond.send_response(json_response(
                        StatusCode::OK,
                        serde_json::json!({
                        "kind": "ResiliencePolicyList", "apiVersion": "outrigger.dev/v1alpha1",
                        "metadata": {"resourceVersion": format!("{}", 10 + n)},
                        "items": [serde_json::to_value(policy()).unwrap()]}),
                    ));
                }
            }
        });
        let stop = CancellationToken::new();
        let stores = start_reflectors(&client, Arc::new(Notify::new()), None, false, &stop);
        tokio::time::timeout(Duration::from_secs(10), stores.policies.wait_until_ready())
            .await
            .expect("the store recovers from the 500")
            .unwrap();
        assert_eq!(stores.policies.state().len(), 1);
        // The 410 on the watch forces another list.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while policy_lists.load(Ordering::SeqCst) < 3 {
            assert!(std::time::Instant::now() < deadline, "no re-list after 410");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            stores.policies.state().len(),
            1,
            "the cache survives the re-list"
        );
        stop.cancel();
    }
}
