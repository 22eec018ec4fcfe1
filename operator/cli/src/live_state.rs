//! Live resilience state of a destination as one proxy sees it: its circuit
//! breaker and outlier ejections, read from the proxy's own `/metrics`
//! (the operator does not collect them). Reached through the API server's
//! pod proxy on the sidecar's admin port, as `kubectl get --raw
//! /api/v1/namespaces/NS/pods/POD:4191/proxy/metrics` does.

use std::collections::BTreeMap;

use outrigger_api::sidecar::ADMIN_PORT;

use crate::connect::Kube;

/// One destination label's state in one proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationState {
    /// `outrigger_circuit_state`: 0 closed, 1 open, 2 half-open.
    pub circuit: Option<i64>,
    /// `outrigger_ejected_endpoints`: endpoints ejected right now.
    pub ejected: Option<i64>,
}

/// The states of the outbound destinations of Service `name.namespace`
/// (metrics label `NAME.NS.svc.DOMAIN:PORT`), by label, from the text of
/// a proxy's `/metrics`.
pub fn parse(metrics: &str, namespace: &str, name: &str) -> BTreeMap<String, DestinationState> {
    let prefix = format!("{name}.{namespace}.svc.");
    let mut states: BTreeMap<String, DestinationState> = BTreeMap::new();
    for line in metrics.lines() {
        let (family, rest) = match line.split_once('{') {
            Some(split) => split,
            None => continue,
        };
        if family != "outrigger_circuit_state" && family != "outrigger_ejected_endpoints" {
            continue;
        }
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |key: &str| {
            labels.split(',').find_map(|pair| {
                pair.strip_prefix(key)?
                    .strip_prefix("=\"")?
                    .strip_suffix('"')
                    .map(str::to_string)
            })
        };
        if label("direction").as_deref() != Some("outbound") {
            continue;
        }
        let Some(destination) = label("destination").filter(|d| d.starts_with(&prefix)) else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let state = states.entry(destination).or_default();
        if family == "outrigger_circuit_state" {
            state.circuit = Some(value as i64);
        } else {
            state.ejected = Some(value as i64);
        }
    }
    states
}

/// A state in words: `closed, 0 ejected`.
pub fn describe(state: &DestinationState) -> String {
    let circuit = match state.circuit {
        Some(0) => "breaker closed",
        Some(1) => "breaker OPEN",
        Some(2) => "breaker half-open",
        Some(_) => "breaker in an unknown state",
        None => "no breaker",
    };
    match state.ejected {
        Some(n) => format!("{circuit}, {n} endpoint(s) ejected"),
        None => circuit.to_string(),
    }
}

/// The proxy's `/metrics` in pod `namespace/pod`.
pub async fn fetch(kube: &Kube, namespace: &str, pod: &str) -> anyhow::Result<String> {
    let uri = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{ADMIN_PORT}/proxy/metrics");
    let request = http::Request::get(uri).body(Vec::new())?;
    match kube.client.request_text(request).await {
        Ok(text) => Ok(text),
        // The API server's answer in a line, not its whole Status.
        Err(kube::Error::Api(status)) => Err(anyhow::anyhow!("{} {}", status.code, status.message)),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_and_ejections_of_the_services_ports_only() {
        let metrics = "\
# HELP outrigger_circuit_state Circuit breaker state: 0 closed, 1 open, 2 half-open
# TYPE outrigger_circuit_state gauge
outrigger_circuit_state{destination=\"web.shop.svc.cluster.local:80\",direction=\"outbound\"} 1
outrigger_circuit_state{destination=\"web.shop.svc.cluster.local:80\",direction=\"inbound\"} 0
outrigger_circuit_state{destination=\"webx.shop.svc.cluster.local:80\",direction=\"outbound\"} 2
outrigger_ejected_endpoints{destination=\"web.shop.svc.cluster.local:80\",direction=\"outbound\"} 2
outrigger_ejected_endpoints{destination=\"web.shop.svc.cluster.local:9090\",direction=\"outbound\"} 0
outrigger_requests_total{destination=\"web.shop.svc.cluster.local:80\",direction=\"outbound\"} 7
";
        let states = parse(metrics, "shop", "web");
        assert_eq!(states.len(), 2, "{states:?}");
        let port80 = &states["web.shop.svc.cluster.local:80"];
        assert_eq!(describe(port80), "breaker OPEN, 2 endpoint(s) ejected");
        let port9090 = &states["web.shop.svc.cluster.local:9090"];
        assert_eq!(describe(port9090), "no breaker, 0 endpoint(s) ejected");
        assert!(parse(metrics, "shop", "api").is_empty());
    }
}
