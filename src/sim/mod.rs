//! Simulation: the production controller against an in-process cluster and a simulated EC2, on
//! tokio's virtual clock (a 5-minute scenario takes seconds) and reproducible from a seed.
//!
//! - [`ec2`]: the simulated EC2 (limits, subnets, throttling, latency, consistency, faults).
//! - [`cluster`]: the simulated Kubernetes API (objects, watches, annotation preconditions).
//! - [`rng`]: the seeded randomness everything draws from.

pub mod cluster;
pub mod ec2;
pub mod rng;
