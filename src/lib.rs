//! winipam: pod IPv4 address management for Windows nodes on AWS.
//!
//! - [`ipam`]: the pure decisions (capacity, configuration, the per-node pool and its plan).
//! - [`clock`]: where "now" comes from (system clock, or tokio's virtual clock in simulation).

pub mod clock;
pub mod ec2;
pub mod ipam;
pub mod sim;
