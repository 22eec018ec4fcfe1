//! The policy stream between the operator and the proxies: JSON lines over a
//! long-lived HTTP/2 response (curl-able), one stream per subscription.
//!
//! ```text
//! GET  /v1/watch?destination=payments.shop.svc.cluster.local:8080&proxy=ID
//! GET  /v1/watch?inbound=shop/payments&proxy=ID
//! GET  /v1/watch?pod=shop/payments-7d9c-x2k:8080&proxy=ID
//!   ← {"type":"snapshot","version":7,"destination":{...}}     full state, newest only
//!   ← {"type":"heartbeat","version":7}                        every few seconds
//! POST /v1/ack  {"proxy":"ID","subscription":"...","version":7}
//! ```
//!
//! Every snapshot is complete (no deltas), so a proxy that missed some only
//! ever needs the latest; versions increase monotonically per operator run.

use serde::{Deserialize, Serialize};

use crate::policy::ResiliencePolicySpec;

pub const WATCH_PATH: &str = "/v1/watch";
pub const ACK_PATH: &str = "/v1/ack";

/// What a proxy subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "name")]
pub enum Subscription {
    /// An outbound destination by authority: a Service name in any of its DNS
    /// spellings, or ClusterIP, with a port.
    Destination(String),
    /// The inbound policy of the pod's own Service, as `namespace/service`
    /// (a proxy told its Service with `--service-name`).
    Inbound(String),
    /// The inbound policy for one port of a pod, as `namespace/pod:port`: the
    /// operator finds the Service whose EndpointSlices list that pod with that
    /// port, so an injected proxy needs to know only its own pod.
    Pod(String),
}

impl Subscription {
    /// The query string that requests this subscription.
    pub fn query(&self) -> String {
        match self {
            Subscription::Destination(authority) => format!("destination={authority}"),
            Subscription::Inbound(service) => format!("inbound={service}"),
            Subscription::Pod(pod_port) => format!("pod={pod_port}"),
        }
    }

    /// The subscription for traffic to `port` of pod `namespace/pod`.
    pub fn pod(namespace: &str, pod: &str, port: u16) -> Self {
        Subscription::Pod(format!("{namespace}/{pod}:{port}"))
    }

    /// A stable short name (for logs, files and metric labels).
    pub fn key(&self) -> String {
        match self {
            Subscription::Destination(authority) => format!("dst:{authority}"),
            Subscription::Inbound(service) => format!("in:{service}"),
            Subscription::Pod(pod_port) => format!("pod:{pod_port}"),
        }
    }
}

/// `namespace/pod:port` split into its parts, if it has that shape.
pub fn parse_pod_port(value: &str) -> Option<(&str, &str, u16)> {
    let (namespace, rest) = value.split_once('/')?;
    let (pod, port) = rest.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    (!namespace.is_empty() && !pod.is_empty()).then_some((namespace, pod, port))
}

/// One line of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum StreamMessage {
    Snapshot(Box<Snapshot>),
    /// Keeps idle streams (and the proxies' liveness checks) alive.
    Heartbeat {
        version: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub version: u64,
    /// `None`: the operator knows no Service by that name; the proxy falls
    /// back to DNS and its own defaults.
    pub destination: Option<DestinationSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationSnapshot {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The Service port the subscription named.
    pub port: u16,
    /// Ready endpoints, `ip:port`, sorted.
    pub endpoints: Vec<String>,
    pub policy: Option<PolicySnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySnapshot {
    /// `namespace/name` of the ResiliencePolicy.
    pub name: String,
    pub generation: Option<i64>,
    /// The effective spec: defaults filled in.
    pub spec: ResiliencePolicySpec,
}

/// A proxy's report that it applied a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub proxy: String,
    pub subscription: Subscription,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json_lines() {
        let m = StreamMessage::Heartbeat { version: 3 };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"heartbeat","version":3}"#
        );
        let s = StreamMessage::Snapshot(Box::new(Snapshot {
            version: 4,
            destination: None,
        }));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"type":"snapshot","version":4,"destination":null}"#
        );
        let ack = Ack {
            proxy: "p".into(),
            subscription: Subscription::Destination("web:80".into()),
            version: 4,
        };
        assert_eq!(
            serde_json::to_string(&ack).unwrap(),
            r#"{"proxy":"p","subscription":{"kind":"destination","name":"web:80"},"version":4}"#
        );
    }

    #[test]
    fn pod_subscriptions_name_namespace_pod_and_port() {
        let s = Subscription::pod("shop", "web-1", 8080);
        assert_eq!(s.query(), "pod=shop/web-1:8080");
        assert_eq!(s.key(), "pod:shop/web-1:8080");
        assert_eq!(
            parse_pod_port("shop/web-1:8080"),
            Some(("shop", "web-1", 8080))
        );
        for bad in [
            "shop/web-1",
            "web-1:80",
            "/web:80",
            "shop/:80",
            "shop/w:0",
            "shop/w:x",
        ] {
            assert_eq!(parse_pod_port(bad), None, "{bad}");
        }
    }
}
