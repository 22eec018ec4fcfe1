//! Outrigger sidecar proxy.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod connection;
pub mod destination;
pub mod forward;
pub mod init;
pub mod listener;
pub mod readiness_wait;
pub mod state;
pub mod telemetry;
pub mod upgrade;
