//! The policy server: proxies subscribe to destinations (and their own inbound
//! policy) and receive full snapshots as JSON lines on a long-lived HTTP/2
//! (or HTTP/1.1 chunked) response, and acknowledge what they applied.

pub mod auth;
mod hub;
mod resolve;
mod server;
mod tallies;

pub use hub::{ConnectedProxy, Hub, WatchState};
pub use resolve::resolve;
pub use server::{serve, ServerConfig};
