//! HTTP on both sides of the proxy: serving a client connection (HTTP/1.1 or
//! HTTP/2, with the limits that protect the proxy), the upstream clients
//! (an HTTP/1.1 keep-alive pool per target, a shared HTTP/2 connection
//! per target), the body type
//! and its end-of-body hooks, hop-by-hop headers, and the responses the proxy
//! makes itself. Knows nothing of policy: the request path is handed in.
#![forbid(unsafe_code)]

pub mod body;
pub mod body_end;
pub mod client;
pub mod connect_time;
pub mod error_response;
pub mod h1_pool;
pub mod h2_connection;
pub mod h2_pool;
pub mod headers;
mod idle;
pub mod replay;
pub mod send_error;
pub mod server;
