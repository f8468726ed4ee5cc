//! winipam: pod IPv4 address management for Windows nodes on AWS.
//!
//! - [`ipam`]: the pure decisions (capacity, configuration, the per-node pool and its plan).
//! - [`clock`]: where "now" comes from (system clock, or tokio's virtual clock in simulation).

pub mod clock;
pub mod crd;
pub mod error;
pub mod ipam;
pub mod k8s;
pub mod leader;
pub mod metrics;
pub mod run;
pub mod server;
pub mod telemetry;
