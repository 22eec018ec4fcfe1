//! Local mode (`--manifests DIR`): the same compile step over YAML/JSON files
//! instead of the API server, for the demo and end-to-end tests. The directory
//! is polled; statuses are logged (one JSON line per policy, and per
//! HTTPRoute/GRPCRoute with a Service parentRef, whose verdict changed)
//! instead of written.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use outrigger_api::gateway::{RouteObject, RouteVerdict, TrafficPolicy, TRAFFIC_KIND};
use outrigger_api::manifest::{parse_documents, Document};
use outrigger_api::policy::ResiliencePolicy;
use tokio_util::sync::CancellationToken;

use crate::compile::{compile_gateway, ObjectKey, Verdict};
use crate::index::CompiledIndex;
use crate::metrics::Metrics;

#[derive(Default, Debug)]
pub struct Manifests {
    pub policies: Vec<ResiliencePolicy>,
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    /// Gateway API HTTPRoutes and GRPCRoutes.
    pub routes: Vec<RouteObject>,
    /// BackendTrafficPolicies (XBackendTrafficPolicy): Services' retry budgets.
    pub traffic: Vec<TrafficPolicy>,
    /// Files that could not be used, with why; the rest still count.
    pub errors: Vec<String>,
}

/// Reads every `.yaml`, `.yml` and `.json` file under `dir` (sorted).
pub fn read_dir(dir: &Path) -> std::io::Result<Manifests> {
    ManifestFiles::default().read(dir)
}

/// The files of the directory as last parsed, keyed by path, with the
/// modification time and length they had: a poll that finds one file
/// changed parses that file only. Parsing is most of a pass (an edit of one
/// policy file among 1,000 Services' files spent about 100 ms parsing YAML
/// it had parsed before, on the path of every edit to the proxies).
#[derive(Default)]
pub struct ManifestFiles {
    files: HashMap<PathBuf, ParsedFile>,
}

struct ParsedFile {
    modified: SystemTime,
    len: u64,
    /// The file's objects, or why it was skipped whole.
    parsed: Result<Manifests, String>,
}

impl ManifestFiles {
    /// Every usable file's objects, in file-name order; files unchanged since
    /// the last call (same modification time and length) are not re-read.
    pub fn read(&mut self, dir: &Path) -> std::io::Result<Manifests> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        files.sort();
        // Files gone from the directory are forgotten.
        self.files
            .retain(|path, _| files.binary_search(path).is_ok());
        let mut manifests = Manifests::default();
        for file in files {
            // Metadata before contents: a write racing the read leaves a
            // stale stamp, so the next call reads the file again.
            let stamp = std::fs::metadata(&file)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            let unchanged = self.files.get(&file).is_some_and(|cached| {
                stamp
                    .is_some_and(|(modified, len)| cached.modified == modified && cached.len == len)
            });
            if !unchanged {
                let parsed = match std::fs::read_to_string(&file) {
                    Ok(text) => {
                        let mut one = Manifests::default();
                        // A broken file is skipped whole, so half its objects
                        // never apply.
                        add_documents(&mut one, &text).map(|()| one)
                    }
                    Err(err) => Err(err.to_string()),
                };
                let Some((modified, len)) = stamp else {
                    // No stamp to recognise it by next time: used, not kept.
                    self.files.remove(&file);
                    manifests.add(&file, &parsed);
                    continue;
                };
                let entry = ParsedFile {
                    modified,
                    len,
                    parsed,
                };
                self.files.insert(file.clone(), entry);
            }
            let parsed = &self.files[&file].parsed;
            manifests.add(&file, parsed);
        }
        Ok(manifests)
    }
}

impl Manifests {
    /// Appends one file's objects, or its error.
    fn add(&mut self, file: &Path, parsed: &Result<Manifests, String>) {
        match parsed {
            Ok(one) => {
                self.policies.extend_from_slice(&one.policies);
                self.services.extend_from_slice(&one.services);
                self.slices.extend_from_slice(&one.slices);
                self.routes.extend_from_slice(&one.routes);
                self.traffic.extend_from_slice(&one.traffic);
            }
            Err(err) => self.errors.push(format!("{}: {err}", file.display())),
        }
    }
}

fn add_documents(manifests: &mut Manifests, text: &str) -> Result<(), String> {
    let mut policies = Vec::new();
    let mut services = Vec::new();
    let mut slices = Vec::new();
    let mut routes = Vec::new();
    let mut traffic = Vec::new();
    for document in parse_documents(text).map_err(|e| e.to_string())? {
        match document {
            Document::Policy(policy) => {
                let mut value = serde_json::to_value(&policy).map_err(|e| e.to_string())?;
                // Files carry no generation; the API server would start at 1.
                if value["metadata"].get("generation").is_none() {
                    value["metadata"]["generation"] = 1.into();
                }
                policies.push(serde_json::from_value(value).map_err(|e| e.to_string())?);
            }
            Document::Other {
                kind, raw, name, ..
            } => {
                let what = || format!("{kind} {}", name.clone().unwrap_or_default());
                match kind.as_str() {
                    "Service" => services
                        .push(serde_json::from_value(raw).map_err(|e| format!("{}: {e}", what()))?),
                    "EndpointSlice" => slices
                        .push(serde_json::from_value(raw).map_err(|e| format!("{}: {e}", what()))?),
                    "HTTPRoute" | "GRPCRoute" => {
                        let mut route = RouteObject::from_value(&raw)?;
                        // The API server would refuse or prune these; a file
                        // keeps them, and the translation would ignore them.
                        for field in route.unknown_fields(&raw) {
                            tracing::warn!(route = %route.label(), field = %field, "unknown field ignored");
                        }
                        // Files carry no generation; the API server would start at 1.
                        route.generation.get_or_insert(1);
                        routes.push(route);
                    }
                    kind if kind == TRAFFIC_KIND => traffic.push(TrafficPolicy::from_value(&raw)?),
                    _ => {}
                }
            }
        }
    }
    manifests.policies.extend(policies);
    manifests.services.extend(services);
    manifests.slices.extend(slices);
    manifests.routes.extend(routes);
    manifests.traffic.extend(traffic);
    Ok(())
}

fn fingerprint(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime, u64)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.modified().ok()?, meta.len()))
        })
        .collect();
    entries.sort();
    entries
}

/// Compiles `dir` now and whenever its files change, until `stop`.
pub async fn run(
    dir: PathBuf,
    poll: Duration,
    index: Arc<CompiledIndex>,
    metrics: Arc<Metrics>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut seen = None;
    let mut files = ManifestFiles::default();
    let mut last_verdicts: BTreeMap<ObjectKey, Verdict> = BTreeMap::new();
    let mut last_routes: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    loop {
        let print = fingerprint(&dir);
        if seen.as_ref() != Some(&print) {
            seen = Some(print);
            let manifests = files.read(&dir)?;
            for error in &manifests.errors {
                metrics
                    .reconcile_errors
                    .with_label_values(&["manifest"])
                    .inc();
                tracing::error!(error = %error, "manifest skipped");
            }
            let compiled = compile_gateway(
                &manifests.policies,
                &manifests.services,
                &manifests.slices,
                &manifests.routes,
                &manifests.traffic,
            );
            // Publish the view before saying so: a reader of the report then
            // finds the view already current.
            let verdicts = compiled.verdicts.clone();
            let route_verdicts = compiled.route_verdicts.clone();
            index.store(compiled);
            report(&verdicts, &mut last_verdicts);
            report_routes(&route_verdicts, &mut last_routes);
            metrics.reconciles.inc();
            ready.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Prints `status.proxies` per policy whenever acknowledgements change it
/// (cluster mode writes it into the status instead).
pub async fn report_proxies(
    hub: Arc<crate::policy_server::Hub>,
    acked: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let mut last = std::collections::HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            // A burst of acks makes one report (as cluster mode debounces).
            _ = acked.notified() => tokio::time::sleep(Duration::from_millis(50)).await,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let counts: std::collections::HashMap<String, (u32, u32)> = hub
            .proxy_counts()
            .into_iter()
            .map(|(policy, tally)| (policy, (tally.total, tally.current)))
            .collect();
        for (policy, (total, current)) in &counts {
            if last.get(policy) != Some(&(*total, *current)) {
                let line = serde_json::json!({"policy": policy, "proxies": {"total": total, "current": current}});
                println!("{line}");
            }
        }
        last = counts;
    }
}

/// Logs the status each policy would get, when it changes.
fn report(verdicts: &BTreeMap<ObjectKey, Verdict>, last: &mut BTreeMap<ObjectKey, Verdict>) {
    for (key, verdict) in verdicts {
        if last.get(key) != Some(verdict) {
            let line = serde_json::json!({"policy": key.to_string(), "status": verdict});
            println!("{line}");
        }
    }
    *last = verdicts.clone();
}

/// A route verdict as the status it stands for: per Service parentRef, the
/// Accepted and ResolvedRefs conditions.
pub fn route_status_json(verdict: &RouteVerdict) -> serde_json::Value {
    let condition = |v: &outrigger_api::gateway::Verdict| {
        serde_json::json!({
            "status": if v.ok { "True" } else { "False" },
            "reason": v.reason,
            "message": v.message,
        })
    };
    let parents: Vec<serde_json::Value> = verdict
        .parents
        .iter()
        .map(|p| {
            serde_json::json!({
                "parentRef": p.parent_ref,
                "controllerName": outrigger_api::gateway::CONTROLLER_NAME,
                "accepted": condition(&p.accepted),
                "resolvedRefs": condition(&p.resolved_refs),
            })
        })
        .collect();
    serde_json::json!({"generation": verdict.generation, "parents": parents})
}

/// Logs the status each route would get, when it changes.
fn report_routes(verdicts: &[RouteVerdict], last: &mut BTreeMap<String, serde_json::Value>) {
    let current: BTreeMap<String, serde_json::Value> = verdicts
        .iter()
        .map(|v| (v.label(), route_status_json(v)))
        .collect();
    for (route, status) in &current {
        if last.get(route) != Some(status) {
            println!("{}", serde_json::json!({"route": route, "status": status}));
        }
    }
    *last = current;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_policies_services_and_slices_and_skips_broken_files() {
        let dir = std::env::temp_dir().join(format!("outrigger-local-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n---\napiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: web, namespace: shop}\nspec: {targetRef: {name: web}}\n",
        )
        .unwrap();
        std::fs::write(dir.join("b.yaml"), "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: x}\nspec: {targetRef: {name: 7}}\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let m = read_dir(&dir).unwrap();
        assert_eq!((m.policies.len(), m.services.len()), (1, 1));
        assert_eq!(m.policies[0].metadata.generation, Some(1));
        assert_eq!(m.errors.len(), 1);
        assert!(m.errors[0].contains("b.yaml"), "{:?}", m.errors);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unchanged_files_are_not_parsed_again() {
        let dir =
            std::env::temp_dir().join(format!("outrigger-local-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let service = |name: &str| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{ports: [{{port: 80}}]}}\n")
        };
        let policy = |attempts: u32| {
            format!("apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: web, namespace: shop}}\nspec: {{targetRef: {{name: web}}, retry: {{attempts: {attempts}}}}}\n")
        };
        std::fs::write(dir.join("a-services.yaml"), service("web")).unwrap();
        std::fs::write(dir.join("b-policy.yaml"), policy(2)).unwrap();
        std::fs::write(dir.join("c-broken.yaml"), "kind: [").unwrap();
        let mut files = ManifestFiles::default();
        let first = files.read(&dir).unwrap();
        assert_eq!((first.services.len(), first.policies.len()), (1, 1));
        assert_eq!(first.errors.len(), 1, "{:?}", first.errors);

        // Rewritten with the same stamp (modification time and length): kept
        // as parsed, which proves the file was not read again.
        let stamp = |name: &str| {
            std::fs::metadata(dir.join(name))
                .unwrap()
                .modified()
                .unwrap()
        };
        let services_at = stamp("a-services.yaml");
        std::fs::write(dir.join("a-services.yaml"), service("xyz")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(dir.join("a-services.yaml"))
            .unwrap()
            .set_modified(services_at)
            .unwrap();
        // A changed file is parsed again; a broken one still reports.
        std::fs::write(dir.join("b-policy.yaml"), policy(3) + "\n").unwrap();
        let second = files.read(&dir).unwrap();
        assert_eq!(second.services[0].metadata.name.as_deref(), Some("web"));
        let retry = |m: &Manifests| m.policies[0].spec.retry.as_ref().map(|r| r.attempts);
        assert_eq!(retry(&second), Some(Some(3)));
        assert_eq!(second.errors, first.errors);

        // A new stamp, and a file gone.
        std::fs::File::options()
            .write(true)
            .open(dir.join("a-services.yaml"))
            .unwrap()
            .set_modified(services_at + Duration::from_secs(1))
            .unwrap();
        std::fs::remove_file(dir.join("c-broken.yaml")).unwrap();
        let third = files.read(&dir).unwrap();
        assert_eq!(third.services[0].metadata.name.as_deref(), Some("xyz"));
        assert!(third.errors.is_empty(), "{:?}", third.errors);
        assert_eq!(files.files.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_routes_and_reports_their_verdicts() {
        let dir =
            std::env::temp_dir().join(format!("outrigger-local-routes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: shop}\nspec: {ports: [{port: 80}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: checkout, namespace: shop}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: echo, port: 80}]\n  rules: [{backendRefs: [{name: missing, port: 80}]}]\n",
        )
        .unwrap();
        let m = read_dir(&dir).unwrap();
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        assert_eq!(m.routes.len(), 1);
        assert_eq!(m.routes[0].generation, Some(1));
        let compiled = compile_gateway(&m.policies, &m.services, &m.slices, &m.routes, &m.traffic);
        let status = route_status_json(&compiled.route_verdicts[0]);
        assert_eq!(status["parents"][0]["accepted"]["status"], "True");
        assert_eq!(
            status["parents"][0]["resolvedRefs"]["reason"],
            "BackendNotFound"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
