//! Outrigger sidecar proxy.
// Unsafe only where a C library call has no safe wrapper (`malloc_tuning`).
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod connection;
pub mod destination;
pub mod forward;
pub mod grpc_status;
pub mod init;
pub mod listener;
pub mod malloc_tuning;
pub mod readiness_wait;
pub mod state;
pub mod telemetry;
pub mod upgrade;
