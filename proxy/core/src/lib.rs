//! What every layer of the proxy shares: addresses and destinations, the
//! direction of traffic, the typed cause of a proxy-made answer, and the
//! metrics registry. Depends on no other part of the proxy.
#![forbid(unsafe_code)]

pub mod addr;
pub mod direction;
pub mod error;
pub mod metrics;
