//! Simulation: the production controller against an in-process cluster and a simulated EC2, on
//! tokio's virtual clock (a 5-minute scenario takes seconds) and reproducible from a seed.
//!
//! - [`ec2`]: the simulated EC2 (limits, subnets, throttling, latency, consistency, faults).
//! - [`cluster`]: the simulated Kubernetes API (objects, watches, annotation preconditions).
//! - [`lease`]: a Lease shared by simulated replicas, for leader failover.
//! - [`scenario`]: the workloads of SPEC 12 (demo, S1-S4) and the run that measures them.
//! - [`vpcrc`]: the model of the VPC Resource Controller, the baseline.
//! - [`report`], [`plot`], [`progress`]: the table, the JSON, the SVG and the progress line.
//! - [`rng`]: the seeded randomness everything draws from.

pub mod chaos;
pub mod cli;
pub mod cluster;
pub mod ec2;
pub mod lease;
pub mod plot;
pub mod progress;
pub mod provision;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod vpcrc;
