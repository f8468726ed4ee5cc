//! The IPAM decisions as pure code: capacity, configuration, the per-node pool and its plan.
//!
//! Nothing here imports kube, the AWS SDK or tokio, and nothing reads a clock: time comes in as a
//! [`Timestamp`] value. That keeps every decision unit- and property-testable without I/O. It is a
//! crate of its own so that this is a fact of the build (its Cargo.toml has none of them), not a
//! rule kept by hand; the `winipam` crate re-exports it as `winipam::ipam`.
//!
//! How the controller drives one node's [`NodePool`]:
//! 1. build it from the first describe ([`NodePool::new`]), [`NodePool::adopt`] every annotated
//!    pod, [`NodePool::restore_cooldown`] the records of the NodeAddressPool status;
//! 2. for pods: [`NodePool::assign`] / [`NodePool::release`] / [`NodePool::set_waiting`];
//! 3. loop: `let a = pool.plan(now)`; if not `Action::None`, [`NodePool::begin`] it, call EC2,
//!    then `apply_assign_ok` / `apply_release_ok` / `apply_describe` / `apply_failure`;
//!    requeue at [`NodePool::next_wakeup`]. A release goes out only once a written status lists
//!    [`NodePool::releasing_slots`]; a rebuilt pool takes that list back with
//!    [`NodePool::restore_releasing`].

mod ahead;
pub mod annotation;
pub mod capacity;
pub mod config;
pub mod handover;
pub mod max_pods;
pub mod plan;
pub mod pool;
pub mod pool_ec2;
pub mod tally;
pub mod types;
pub mod uid;

#[cfg(test)]
mod handover_tests;
#[cfg(test)]
mod leaving_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod pool_ec2_tests;
#[cfg(test)]
mod pool_proptest;
#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod release_record_tests;
#[cfg(test)]
mod test_support;

pub use annotation::parse_annotation;
pub use capacity::{LimitsSource, PodCapacity, ResolvedLimits};
pub use config::{Config, ConfigError, ParsedConfig, Targets};
pub use max_pods::{MaxPodsMismatch, compare_max_pods, kubelet_max_pods};
pub use plan::Action;
pub use pool::{AddressKind, AdoptOutcome, AssignOutcome, Assignment, NodePool};
pub use pool_ec2::{DescribeOutcome, Ec2Addresses, FailureEffect, LostAddress};
pub use tally::PoolCounts;
pub use types::*;
pub use uid::PodUid;
