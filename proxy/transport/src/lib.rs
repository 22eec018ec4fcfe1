//! Bytes on sockets: connecting upstream (timeouts, TCP_NODELAY, SO_MARK),
//! the original destination of a redirected connection, protocol detection
//! from a connection's first bytes (and their replay), byte counting, and
//! opaque TCP forwarding. Knows nothing of HTTP or policy.
#![forbid(unsafe_code)]

pub mod accept;
pub mod connect;
pub mod counted_io;
pub mod detect;
pub mod original_dst;
pub mod prefixed_io;
pub mod tcp_forward;
