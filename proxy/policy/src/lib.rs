//! The policy the proxy enforces: loaded from a file (or, later, the control
//! plane), swapped atomically, and matched to destinations.
#![forbid(unsafe_code)]

mod endpoints;
mod file_source;
mod matcher;

pub use endpoints::EndpointIndex;
pub use file_source::{activate, load_policy_file, watch_policy_file, LoadedFile, PolicyLoadError};
pub use matcher::{DestinationMatcher, ServiceRef};

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use outrigger_api::manifest::PolicyManifest;
use serde::Serialize;

/// One loaded generation of policy. Immutable: requests hold an `Arc` to the
/// generation they started with, so a reload never changes a request mid-flight.
#[derive(Debug, Serialize)]
pub struct ActivePolicy {
    /// Increases by one on every successful load; 0 means built-in defaults.
    pub version: u64,
    /// Where this generation came from (`defaults`, `file:/path`).
    pub source: String,
    /// SHA-256 of the loaded document text, to tell identical reloads apart.
    pub checksum: String,
    #[serde(serialize_with = "serialize_unix_time")]
    pub loaded_at: SystemTime,
    pub policies: Vec<PolicyManifest>,
    /// Endpoints from Service/EndpointSlice documents in the same source.
    pub endpoints: EndpointIndex,
}

impl ActivePolicy {
    pub fn defaults() -> Self {
        ActivePolicy {
            version: 0,
            source: "defaults".into(),
            checksum: String::new(),
            loaded_at: SystemTime::now(),
            policies: Vec::new(),
            endpoints: EndpointIndex::default(),
        }
    }
}

fn serialize_unix_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    s.serialize_f64(secs)
}

/// Holds the active policy behind an atomic swap: readers never block.
pub struct PolicyStore {
    current: ArcSwap<ActivePolicy>,
}

impl PolicyStore {
    pub fn new(initial: ActivePolicy) -> Arc<Self> {
        Arc::new(PolicyStore {
            current: ArcSwap::from_pointee(initial),
        })
    }

    pub fn current(&self) -> Arc<ActivePolicy> {
        self.current.load_full()
    }

    pub fn replace(&self, policy: ActivePolicy) {
        self.current.store(Arc::new(policy));
    }
}
