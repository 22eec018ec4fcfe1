//! The sidecar injection webhook (a mutating admission webhook over HTTPS).

pub mod inject;
mod server;

pub use server::{review, serve};
