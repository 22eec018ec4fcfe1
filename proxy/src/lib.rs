//! Outrigger sidecar proxy.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod connect;
pub mod connection;
pub mod control;
pub mod counted_io;
pub mod demo;
pub mod destination;
pub mod detect;
pub mod engine;
pub mod fault_upstream;
pub mod http;
pub mod init;
pub mod listener;
pub mod original_dst;
pub mod policy;
pub mod prefixed_io;
pub mod readiness_wait;
pub mod route_memo;
pub mod state;
pub mod tcp_forward;
pub mod telemetry;
