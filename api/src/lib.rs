//! Outrigger's policy model: the `ResiliencePolicy` spec users write, the files
//! that carry it, and its validation. No I/O.
#![forbid(unsafe_code)]

pub mod defaults;
pub mod duration;
pub mod gateway;
pub mod manifest;
pub mod policy;
pub mod semantics;
pub mod sidecar;
pub mod stream;
pub mod validate;
