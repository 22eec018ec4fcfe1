//! The operator's parts, one module per concern; `main.rs` wires them into the
//! `outrigger-operator` binary. A library so that tests and fuzz targets can
//! drive the parts (e.g. the webhook's review handler) directly.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cluster;
pub mod compile;
pub mod crd;
pub mod index;
pub mod leader;
pub mod local;
pub mod metrics;
pub mod policy_server;
pub mod proxy_reports;
pub mod reference;
pub mod route_status;
pub mod route_watch;
pub mod status;
pub mod tls;
pub mod webhook;
