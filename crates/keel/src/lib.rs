//! The `keel` command's building blocks that are worth testing on their own:
//! the demo (a workload through the chaos upstream and the gateway) and the
//! benchmarks.

pub mod batch;
pub mod bench;
pub mod client;
pub mod demo;

pub use client::Client;
