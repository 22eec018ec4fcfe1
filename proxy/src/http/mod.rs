//! HTTP proxying: serving client connections, forwarding requests upstream.

pub mod body;
pub mod body_end;
pub mod client;
pub mod error_response;
pub mod forward;
pub mod h1_pool;
pub mod headers;
pub mod server;
pub mod upgrade;
