//! winipam: pod IPv4 address management for Windows nodes on AWS.
//!
//! - [`ipam`]: the pure decisions (capacity, configuration, the per-node pool and its plan): the
//!   `winipam-core` crate (crates/winipam-core), whose dependencies hold no I/O.
//! - [`controller`]: watches, per-node workers, rebuild, resync: the wiring of the decisions to
//!   the cluster and EC2.
//! - [`k8s`]: the controller's view of Kubernetes as one trait, and its kube-rs adapter.
//! - [`ec2`]: EC2 behind a backend trait (aws-sdk-ec2, or the simulator), with the process-wide
//!   client: rate limits, batching, caches, metrics.
//! - [`sim`]: the simulated parts (EC2 on tokio's virtual clock) for benchmarks and fault tests.
//! - [`scale`]: the driver and watcher of the real-apiserver scale harness (`scripts/scale.sh`).
//! - [`crd`]: the NodeAddressPool custom resource.
//! - [`webhook`]: the admission webhooks (IP resource injection, annotation guard) over TLS.
//! - [`leader`], [`server`], [`metrics`], [`telemetry`], [`shutdown`]: the process around them,
//!   shared by [`run`] (the `winipam run` command) and the simulator; none of them imports `run`.
//! - [`clock`]: where "now" comes from (system clock, or tokio's virtual clock in simulation).

pub mod clock;
pub mod controller;
pub mod crd;
pub mod ec2;
pub use winipam_core as ipam;
pub mod k8s;
pub mod leader;
pub mod metrics;
pub mod run;
pub mod scale;
pub mod server;
pub mod shutdown;
pub mod sim;
pub mod telemetry;
pub mod webhook;

#[cfg(test)]
mod core_fuzz_tests;
#[cfg(test)]
mod fuzz_support;
