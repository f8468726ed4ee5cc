//! The IPAM decisions as pure code: capacity, configuration, the per-node pool and its plan.
//!
//! Nothing here imports kube, the AWS SDK or tokio, and nothing reads a clock: time comes in as a
//! [`Timestamp`] value. That keeps every decision unit- and property-testable without I/O.

pub mod types;

pub use types::*;
