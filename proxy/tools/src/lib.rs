//! Tools around the sidecar, kept out of its library and binary: the
//! README's demo (a flaky upstream behind a real proxy, without and with a
//! policy) and the fault-injecting upstream that tests and benchmarks use.
#![forbid(unsafe_code)]

pub mod cli;
pub mod demo;
pub mod fault_upstream;
