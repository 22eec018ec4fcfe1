//! Who may subscribe. Proxies present a bearer token: in a cluster, their
//! projected service-account token (audience `outrigger`), verified with the
//! TokenReview API and cached briefly; in local mode, optionally a shared
//! token. Authorization: a proxy may watch the inbound policy only of Services
//! in its own namespace; any authenticated proxy may watch outbound
//! destinations (any pod may reach any Service unless a NetworkPolicy says
//! otherwise, and that is enforced on the data path, not here).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use kube::Client;
use outrigger_api::stream::{parse_pod_port, Subscription};
use sha2::{Digest, Sha256};

pub use outrigger_api::sidecar::TOKEN_AUDIENCE as AUDIENCE;
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 10_000;
/// TokenReviews sent at once. Each one in flight can be a connection to the
/// API server (HTTP/1.1) and a task holding a request: after an operator
/// restart every proxy reconnects at once, and without a bound the operator
/// opened a connection per proxy (the 10k-proxy benchmark ran out of file
/// descriptors). The rest wait their turn, in order.
const MAX_CONCURRENT_REVIEWS: usize = 32;
/// How long one TokenReview may take. kube's client retries 429, 503 and
/// 504 with backoff growing to minutes: without a bound, an API server
/// shedding load would hold every review slot and every connecting proxy.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// A proxy's verified identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// 401: no or unacceptable credentials.
    Unauthenticated(String),
    /// 403: authenticated, not allowed this subscription.
    Forbidden(String),
}

impl Denied {
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Unauthenticated(_) => "unauthenticated",
            Denied::Forbidden(_) => "forbidden",
        }
    }
}

/// Which service accounts run the pods behind a Service (cluster mode: from
/// the Service and Pod watch caches).
pub trait ServiceAccounts: Send + Sync {
    /// `None` when the Service does not exist.
    fn of_service(&self, namespace: &str, service: &str) -> Option<Vec<String>>;
    /// The service account pod `namespace/pod` runs as; `None` when there is
    /// no such pod.
    fn of_pod(&self, namespace: &str, pod: &str) -> Option<String>;
}

/// Review verdicts by token digest, with when they were made.
type ReviewCache = Mutex<HashMap<[u8; 32], (Result<Identity, String>, Instant)>>;
/// Reviews under way, by token digest: requests presenting a token that is
/// being reviewed wait for that verdict instead of asking again (a proxy
/// opens its streams at once; after an operator restart every proxy does).
/// An entry lives only while its review runs.
type InFlight = Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>;

// One per operator: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Authenticator {
    /// Local mode and tests without auth.
    None,
    /// Local mode: one token shared by every proxy.
    SharedToken(String),
    TokenReview {
        client: Client,
        cache: ReviewCache,
        in_flight: InFlight,
        /// Bounds the reviews in flight (MAX_CONCURRENT_REVIEWS).
        permits: tokio::sync::Semaphore,
        accounts: Option<Box<dyn ServiceAccounts>>,
    },
}

impl Authenticator {
    /// `accounts`, when given, narrows inbound subscriptions to proxies
    /// running as a service account of the Service's own pods.
    pub fn token_review(client: Client, accounts: Option<Box<dyn ServiceAccounts>>) -> Self {
        Authenticator::TokenReview {
            client,
            cache: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            permits: tokio::sync::Semaphore::new(MAX_CONCURRENT_REVIEWS),
            accounts,
        }
    }

    /// Checks the `Authorization` header value (if any) for `subscription`.
    pub async fn check(
        &self,
        authorization: Option<&str>,
        subscription: &Subscription,
    ) -> Result<Option<Identity>, Denied> {
        let token = || {
            authorization
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Denied::Unauthenticated("missing bearer token".into()))
        };
        let (identity, accounts) = match self {
            Authenticator::None => return Ok(None),
            Authenticator::SharedToken(expected) => {
                let given = token()?;
                // Compare digests: equal length, no early exit on a prefix.
                if Sha256::digest(given.as_bytes()) != Sha256::digest(expected.as_bytes()) {
                    return Err(Denied::Unauthenticated("invalid token".into()));
                }
                return Ok(None);
            }
            Authenticator::TokenReview {
                client,
                cache,
                in_flight,
                permits,
                accounts,
            } => (
                review(client, cache, in_flight, permits, token()?)
                    .await
                    .map_err(Denied::Unauthenticated)?,
                accounts.as_deref(),
            ),
        };
        authorize(&identity, subscription, accounts)?;
        Ok(Some(identity))
    }
}

pub fn authorize(
    identity: &Identity,
    subscription: &Subscription,
    accounts: Option<&dyn ServiceAccounts>,
) -> Result<(), Denied> {
    let service = match subscription {
        Subscription::Destination(_) => return Ok(()),
        Subscription::Pod(pod_port) => return authorize_pod(identity, pod_port, accounts),
        Subscription::Inbound(service) => service,
    };
    let (namespace, name) = service.split_once('/').unwrap_or(("", service));
    let who = format!("{}/{}", identity.namespace, identity.service_account);
    if namespace != identity.namespace {
        return Err(Denied::Forbidden(format!(
            "{who} may not watch the inbound policy of {service}: other namespace"
        )));
    }
    if let Some(accounts) = accounts {
        let runs_as = accounts.of_service(namespace, name).unwrap_or_default();
        if !runs_as.contains(&identity.service_account) {
            return Err(Denied::Forbidden(format!(
                "{who} may not watch the inbound policy of {service}: no pod of that Service runs as {}",
                identity.service_account
            )));
        }
    }
    Ok(())
}

/// A pod's inbound policy is for proxies of that namespace running as the
/// pod's own service account (with the Pod watch cache; without it, the
/// namespace alone decides).
fn authorize_pod(
    identity: &Identity,
    pod_port: &str,
    accounts: Option<&dyn ServiceAccounts>,
) -> Result<(), Denied> {
    let (namespace, pod) = parse_pod_port(pod_port).map_or(("", ""), |(ns, pod, _)| (ns, pod));
    let who = format!("{}/{}", identity.namespace, identity.service_account);
    if namespace != identity.namespace {
        return Err(Denied::Forbidden(format!(
            "{who} may not watch the inbound policy of pod {namespace}/{pod}: other namespace"
        )));
    }
    if let Some(accounts) = accounts {
        match accounts.of_pod(namespace, pod) {
            Some(account) if account == identity.service_account => {}
            Some(account) => {
                return Err(Denied::Forbidden(format!(
                    "{who} may not watch the inbound policy of pod {namespace}/{pod}: it runs as {account}"
                )))
            }
            None => {
                return Err(Denied::Forbidden(format!(
                    "{who} may not watch the inbound policy of pod {namespace}/{pod}: no such pod"
                )))
            }
        }
    }
    Ok(())
}

fn cached(cache: &ReviewCache, key: &[u8; 32]) -> Option<Result<Identity, String>> {
    let cache = cache.lock().expect("not poisoned");
    let (verdict, at) = cache.get(key)?;
    (at.elapsed() < CACHE_TTL).then(|| verdict.clone())
}

async fn review(
    client: &Client,
    cache: &ReviewCache,
    in_flight: &InFlight,
    permits: &tokio::sync::Semaphore,
    token: &str,
) -> Result<Identity, String> {
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if let Some(verdict) = cached(cache, &key) {
        return verdict;
    }
    let gate = in_flight
        .lock()
        .expect("not poisoned")
        .entry(key)
        .or_default()
        .clone();
    let _turn = gate.lock().await;
    // Whoever held the gate before may have cached the verdict.
    let outcome = match cached(cache, &key) {
        Some(verdict) => verdict,
        None => {
            let _permit = permits.acquire().await.expect("never closed");
            ask(client, cache, key, token).await
        }
    };
    let mut in_flight = in_flight.lock().expect("not poisoned");
    if in_flight.get(&key).is_some_and(|g| Arc::ptr_eq(g, &gate)) {
        in_flight.remove(&key);
    }
    outcome
}

async fn ask(
    client: &Client,
    cache: &ReviewCache,
    key: [u8; 32],
    token: &str,
) -> Result<Identity, String> {
    let api: Api<TokenReview> = Api::all(client.clone());
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec![AUDIENCE.to_string()]),
        },
        ..TokenReview::default()
    };
    // The API server failing is not the proxy's fault: not cached.
    let reviewed =
        tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &request))
            .await
            .map_err(|_| format!("token review unanswered within {REVIEW_TIMEOUT:?}"))?
            .map_err(|e| format!("token review failed: {e}"))?;
    let verdict = verdict(&reviewed);
    let mut cache = cache.lock().expect("not poisoned");
    if cache.len() >= CACHE_MAX {
        cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
    }
    cache.insert(key, (verdict.clone(), Instant::now()));
    verdict
}

fn verdict(review: &TokenReview) -> Result<Identity, String> {
    let status = review.status.clone().unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(status
            .error
            .unwrap_or_else(|| "token not authenticated".into()));
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == AUDIENCE))
    {
        return Err(format!("token is not for audience {AUDIENCE}"));
    }
    let username = status.user.and_then(|u| u.username).unwrap_or_default();
    match username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((namespace, service_account)) => Ok(Identity {
            namespace: namespace.into(),
            service_account: service_account.into(),
        }),
        None => Err(format!("{username} is not a service account")),
    }
}

/// TokenReview answered by kube's mock client (tower-test): there is no API
/// server here; the script plays its part.
#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower_test::mock;

    /// A fake TokenReview endpoint: "good-shop" is shop/payments, "good-other"
    /// is other/x, "wrong-audience" authenticates for another audience,
    /// anything else is unauthenticated.
    fn authenticator() -> (Authenticator, Arc<AtomicUsize>) {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                assert_eq!(
                    request.uri().path(),
                    "/apis/authentication.k8s.io/v1/tokenreviews"
                );
                counted.fetch_add(1, Ordering::SeqCst);
                let body = http_body_util::BodyExt::collect(request.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(review["spec"]["audiences"], json!(["outrigger"]));
                let status = match review["spec"]["token"].as_str().unwrap() {
                    "good-shop" => json!({"authenticated": true, "audiences": ["outrigger"],
                        "user": {"username": "system:serviceaccount:shop:payments"}}),
                    "good-other" => json!({"authenticated": true, "audiences": ["outrigger"],
                        "user": {"username": "system:serviceaccount:other:x"}}),
                    "wrong-audience" => json!({"authenticated": true, "audiences": ["kubernetes"],
                        "user": {"username": "system:serviceaccount:shop:payments"}}),
                    _ => json!({"authenticated": false, "error": "token expired"}),
                };
                let mut out = review.clone();
                out["status"] = status;
                respond.send_response(Response::new(Body::from(serde_json::to_vec(&out).unwrap())));
            }
        });
        (
            Authenticator::token_review(
                Client::new(service, "default"),
                Some(Box::new(FakeAccounts)),
            ),
            calls,
        )
    }

    /// shop/payments runs as `payments`; shop/cart as `cart`.
    struct FakeAccounts;
    impl ServiceAccounts for FakeAccounts {
        fn of_service(&self, namespace: &str, service: &str) -> Option<Vec<String>> {
            (namespace == "shop").then(|| vec![service.to_string()])
        }
        /// Pod `payments-1` of shop runs as `payments`, `cart-1` as `cart`.
        fn of_pod(&self, namespace: &str, pod: &str) -> Option<String> {
            let (account, _) = pod.split_once('-')?;
            (namespace == "shop").then(|| account.to_string())
        }
    }

    fn inbound(service: &str) -> Subscription {
        Subscription::Inbound(service.into())
    }

    /// An API server that never answers (or whose answers the client keeps
    /// retrying) fails the review after REVIEW_TIMEOUT, uncached.
    #[tokio::test(start_paused = true)]
    async fn an_unanswered_review_fails_after_its_timeout() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let held = tokio::spawn(async move {
            let mut pending = Vec::new();
            while let Some(request) = handle.next_request().await {
                pending.push(request);
            }
        });
        let auth = Authenticator::token_review(Client::new(service, "default"), None);
        let started = tokio::time::Instant::now();
        let outcome = auth
            .check(Some("Bearer good-shop"), &inbound("shop/payments"))
            .await;
        assert_eq!(
            outcome,
            Err(Denied::Unauthenticated(
                "token review unanswered within 10s".into()
            ))
        );
        assert_eq!(started.elapsed(), REVIEW_TIMEOUT);
        held.abort();
    }

    /// A proxy opens its streams at once (and after an operator restart,
    /// every proxy does): concurrent requests with one token make one review.
    #[tokio::test]
    async fn concurrent_requests_with_one_token_share_one_review() {
        let (auth, calls) = authenticator();
        let payments = inbound("shop/payments");
        let checks = (0..5).map(|_| auth.check(Some("Bearer good-shop"), &payments));
        for outcome in futures_util::future::join_all(checks).await {
            assert!(outcome.unwrap().is_some());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let checks = (0..3).map(|_| auth.check(Some("Bearer nope"), &payments));
        for outcome in futures_util::future::join_all(checks).await {
            assert!(matches!(outcome, Err(Denied::Unauthenticated(_))));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "refusals are shared too");
    }

    #[tokio::test]
    async fn tokens_are_reviewed_mapped_and_authorized() {
        let (auth, calls) = authenticator();
        let identity = auth
            .check(Some("Bearer good-shop"), &inbound("shop/payments"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            identity,
            Identity {
                namespace: "shop".into(),
                service_account: "payments".into()
            }
        );
        // Cached: a second check makes no second review.
        auth.check(Some("Bearer good-shop"), &inbound("shop/payments"))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let cases = [
            (
                None,
                inbound("shop/payments"),
                Denied::Unauthenticated("missing bearer token".into()),
            ),
            (
                Some("Basic abc"),
                inbound("shop/payments"),
                Denied::Unauthenticated("missing bearer token".into()),
            ),
            (
                Some("Bearer expired"),
                inbound("shop/payments"),
                Denied::Unauthenticated("token expired".into()),
            ),
            (
                Some("Bearer wrong-audience"),
                inbound("shop/payments"),
                Denied::Unauthenticated("token is not for audience outrigger".into()),
            ),
        ];
        for (header, subscription, expected) in cases {
            assert_eq!(
                auth.check(header, &subscription).await.unwrap_err(),
                expected,
                "{header:?}"
            );
        }
        let denied = auth
            .check(Some("Bearer good-other"), &inbound("shop/payments"))
            .await
            .unwrap_err();
        assert!(
            matches!(denied, Denied::Forbidden(ref m) if m.contains("other/x may not watch the inbound policy of shop/payments")),
            "{denied:?}"
        );
        let denied = auth
            .check(Some("Bearer good-shop"), &inbound("shop/cart"))
            .await
            .unwrap_err();
        assert!(
            matches!(denied, Denied::Forbidden(ref m) if m.contains("no pod of that Service runs as payments")),
            "{denied:?}"
        );
        // Outbound destinations are open to any authenticated proxy.
        let dst = Subscription::Destination("payments.shop.svc.cluster.local:80".into());
        assert!(auth.check(Some("Bearer good-other"), &dst).await.is_ok());
    }

    #[tokio::test]
    async fn a_pods_inbound_policy_is_for_its_own_service_account() {
        let (auth, _) = authenticator();
        let own = Subscription::pod("shop", "payments-1", 8080);
        assert!(auth.check(Some("Bearer good-shop"), &own).await.is_ok());
        for (token, subscription, why) in [
            (
                "good-other",
                own.clone(),
                "other/x may not watch the inbound policy of pod shop/payments-1: other namespace",
            ),
            (
                "good-shop",
                Subscription::pod("shop", "cart-1", 8080),
                "it runs as cart",
            ),
            (
                "good-shop",
                Subscription::pod("shop", "nobody", 8080),
                "no such pod",
            ),
        ] {
            let denied = auth
                .check(Some(&format!("Bearer {token}")), &subscription)
                .await
                .unwrap_err();
            assert!(
                matches!(denied, Denied::Forbidden(ref m) if m.contains(why)),
                "{subscription:?}: {denied:?}"
            );
        }
    }

    #[tokio::test]
    async fn shared_token_for_local_mode() {
        let auth = Authenticator::SharedToken("s3cret".into());
        let dst = Subscription::Destination("a.b:80".into());
        assert!(auth.check(Some("Bearer s3cret"), &dst).await.is_ok());
        assert!(matches!(
            auth.check(Some("Bearer s3cre"), &dst).await,
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.check(None, &dst).await,
            Err(Denied::Unauthenticated(_))
        ));
    }
}
