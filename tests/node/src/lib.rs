//! A test node for one machine: runs the Pods of a (test) Kubernetes API
//! server as local processes, each pod in its own network namespace on a
//! bridge the node owns, and does the EndpointSlice controller's and
//! kube-proxy's jobs for them. See docs/architecture.md, "Testing on one
//! machine", for what is simulated and what is not.
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod apps;
pub mod controllers;
pub mod deployments;
pub mod endpointslices;
pub mod env;
pub mod images;
pub mod jobs;
pub mod kubeproxy;
pub mod network;
pub mod node;
pub mod probes;
pub mod runtime;
pub mod sandbox;
pub mod status;
pub mod volumes;
