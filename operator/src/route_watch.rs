//! Watch caches for Gateway API routes (HTTPRoute, GRPCRoute of
//! `gateway.networking.k8s.io/v1`), read as `DynamicObject`s: the CRDs are the
//! cluster's, not ours, so they may be missing, and the operator keeps working
//! without them.
//!
//! A missing CRD answers the list with 404, a missing RBAC grant with 403.
//! Either is logged once, the watcher keeps retrying with its backoff (at
//! most 30 s apart), and the cache counts as settled and empty meanwhile, so
//! readiness never waits for a CRD that does not exist (or a grant not
//! given); a CRD installed or a grant given later is picked up by the next
//! retry.

use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

pub const GROUP: &str = "gateway.networking.k8s.io";
pub const VERSION: &str = "v1";

/// What the cache knows about its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrdState {
    /// No list has finished yet.
    Unknown,
    /// Listed: the cache holds every object.
    Listed,
    /// The API server does not serve the resource (404): no CRD.
    Absent,
    /// The operator may not list the resource (403): no RBAC grant.
    Forbidden,
}

/// One route kind's cache.
#[derive(Clone)]
pub struct RouteCache {
    /// "HTTPRoute" or "GRPCRoute".
    pub kind: &'static str,
    pub resource: ApiResource,
    pub store: Store<DynamicObject>,
    pub state: watch::Receiver<CrdState>,
}

impl RouteCache {
    /// The cached routes; none while the CRD is absent (a CRD deleted after
    /// a list leaves its last objects in the reflector's store).
    /// Each with its apiVersion and kind (list items need not carry them).
    pub fn objects(&self) -> Vec<Arc<DynamicObject>> {
        if *self.state.borrow() != CrdState::Listed {
            return Vec::new();
        }
        let types = kube::api::TypeMeta {
            api_version: self.resource.api_version.clone(),
            kind: self.resource.kind.clone(),
        };
        self.store
            .state()
            .into_iter()
            .map(|object| {
                if object.types.as_ref() == Some(&types) {
                    object
                } else {
                    let mut typed = (*object).clone();
                    typed.types = Some(types.clone());
                    Arc::new(typed)
                }
            })
            .collect()
    }

    /// Waits until the first list finished or the resource is known absent.
    pub async fn settled(&self) {
        let mut state = self.state.clone();
        // The sender lives as long as the watch task; if it is gone (stop),
        // there is nothing left to wait for.
        let _ = state.wait_for(|s| *s != CrdState::Unknown).await;
    }

    /// An API handle for one route of this kind (status writes).
    pub fn api(&self, client: &Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), namespace, &self.resource)
    }
}

impl RouteCache {
    /// A cache already listed with these objects (tests of the recompute).
    #[cfg(test)]
    pub(crate) fn listed(kind: &'static str, objects: Vec<DynamicObject>) -> RouteCache {
        let resource = resource(kind);
        let mut writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let (state_tx, state) = watch::channel(CrdState::Listed);
        // The sender may go: the state stays Listed.
        drop(state_tx);
        RouteCache {
            kind,
            resource,
            store: writer.as_reader(),
            state,
        }
    }
}

/// The resource of a route kind ("HTTPRoute", "GRPCRoute") in v1.
pub fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, kind))
}

/// The HTTP status of an API error (404, 403, ...), if the error is one.
fn api_code(err: &watcher::Error) -> Option<u16> {
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        },
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::NoResourceVersion => None,
    }
}

/// Starts the watch of one route kind; every change pokes `trigger`.
pub fn start(
    client: &Client,
    kind: &'static str,
    trigger: Arc<Notify>,
    stop: CancellationToken,
) -> RouteCache {
    start_resource(client, kind, resource(kind), trigger, stop)
}

/// BackendTrafficPolicy, as served today (`XBackendTrafficPolicy` of
/// `gateway.networking.x-k8s.io/v1alpha1`, the experimental channel): the
/// retry budgets of the Services it targets. Watched like the routes: a
/// cluster without its CRD keeps working.
pub fn start_traffic_policies(
    client: &Client,
    trigger: Arc<Notify>,
    stop: CancellationToken,
) -> RouteCache {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        outrigger_api::gateway::TRAFFIC_GROUP,
        "v1alpha1",
        outrigger_api::gateway::TRAFFIC_KIND,
    ));
    start_resource(
        client,
        outrigger_api::gateway::TRAFFIC_KIND,
        resource,
        trigger,
        stop,
    )
}

/// Starts the watch of `resource`; every change pokes `trigger`.
fn start_resource(
    client: &Client,
    kind: &'static str,
    resource: ApiResource,
    trigger: Arc<Notify>,
    stop: CancellationToken,
) -> RouteCache {
    let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let store = writer.as_reader();
    let (state_tx, state) = watch::channel(CrdState::Unknown);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let (group, version) = (resource.group.clone(), resource.version.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let item = tokio::select! {
                _ = stop.cancelled() => return,
                item = stream.next() => item,
            };
            match item {
                Some(Ok(event)) => {
                    if matches!(event, watcher::Event::InitDone) {
                        let was = state_tx.send_replace(CrdState::Listed);
                        if matches!(was, CrdState::Absent | CrdState::Forbidden) {
                            tracing::info!(kind, group, "listed: honoured from now on");
                        }
                    }
                    trigger.notify_one();
                }
                Some(Err(err)) if matches!(api_code(&err), Some(404 | 403)) => {
                    let now = if api_code(&err) == Some(404) {
                        CrdState::Absent
                    } else {
                        CrdState::Forbidden
                    };
                    let was = state_tx.send_replace(now);
                    // Logged once per change: the retries would repeat it
                    // every 30 s otherwise.
                    if was != now {
                        if now == CrdState::Absent {
                            tracing::warn!(
                                kind,
                                group,
                                version,
                                "the API server does not serve this kind (its CRD is not \
                                 installed): such routes are ignored; checking again with backoff"
                            );
                        } else {
                            tracing::warn!(
                                kind,
                                group,
                                version,
                                error = %err,
                                "not allowed to list this kind: such routes are ignored; \
                                 grant get, list and watch on it (and patch on its status) or run \
                                 with --gateway-api=false; checking again with backoff"
                            );
                        }
                        trigger.notify_one();
                    }
                }
                Some(Err(err)) => {
                    // The backoff already delays the retry.
                    tracing::warn!(kind, error = %err, "watch error");
                    trigger.notify_one();
                }
                None => return,
            }
        }
    });
    RouteCache {
        kind,
        resource,
        store,
        state,
    }
}

/// Both route kinds.
pub fn start_all(
    client: &Client,
    trigger: Arc<Notify>,
    stop: &CancellationToken,
) -> Vec<RouteCache> {
    ["HTTPRoute", "GRPCRoute"]
        .into_iter()
        .map(|kind| start(client, kind, trigger.clone(), stop.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use std::time::Duration;
    use tower_test::mock;

    fn json(status: StatusCode, body: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    /// HTTPRoute is not served (404), GRPCRoute is: the first settles as
    /// absent and empty, the second as listed; neither blocks the other.
    #[tokio::test]
    async fn a_missing_crd_settles_as_absent_and_the_other_kind_still_lists() {
        settles_with(404, CrdState::Absent).await;
    }

    /// Without an RBAC grant on HTTPRoutes (403): settled, empty, and the
    /// operator still gets ready.
    #[tokio::test]
    async fn a_forbidden_list_settles_as_forbidden() {
        settles_with(403, CrdState::Forbidden).await;
    }

    async fn settles_with(http_code: u16, expected: CrdState) {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let path = request.uri().path().to_string();
                let watch = request.uri().query().unwrap_or("").contains("watch=true");
                assert!(
                    path.starts_with("/apis/gateway.networking.k8s.io/v1/"),
                    "{path}"
                );
                if path.ends_with("/httproutes") {
                    respond.send_response(json(
                        StatusCode::from_u16(http_code).unwrap(),
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": "scripted", "reason": "Scripted",
                            "code": http_code}),
                    ));
                } else if watch {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        respond.send_response(Response::new(Body::empty()));
                    });
                } else {
                    respond.send_response(json(StatusCode::OK, serde_json::json!({
                        "kind": "GRPCRouteList", "apiVersion": "gateway.networking.k8s.io/v1",
                        "metadata": {"resourceVersion": "5"},
                        "items": [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
                                   "metadata": {"name": "g", "namespace": "shop", "resourceVersion": "4"},
                                   "spec": {}}]})));
                }
            }
        });
        let stop = CancellationToken::new();
        let caches = start_all(&client, Arc::new(Notify::new()), &stop);
        for cache in &caches {
            tokio::time::timeout(Duration::from_secs(10), cache.settled())
                .await
                .expect("settles");
        }
        let (http, grpc) = (&caches[0], &caches[1]);
        assert_eq!(*http.state.borrow(), expected);
        assert!(http.objects().is_empty());
        assert_eq!(*grpc.state.borrow(), CrdState::Listed);
        assert_eq!(grpc.objects().len(), 1);
        assert_eq!(grpc.objects()[0].metadata.name.as_deref(), Some("g"));
        assert_eq!(grpc.objects()[0].types.as_ref().unwrap().kind, "GRPCRoute");
        stop.cancel();
    }
}
