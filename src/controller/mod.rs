//! The controller: watches feed an index of Windows nodes and their pods; while this replica
//! leads, one worker task per node owns that node's pool (see `worker`). The wiring is thin on
//! purpose: decisions are in `crate::ipam`, I/O behind `crate::k8s::Cluster` and
//! `crate::ec2::Ec2Backend`, so the simulator runs this very code.
//!
//! - `dispatch`: the watches into `index` (nodes and pods, tested by calling it), delivered to
//!   the workers; configuration, the foreign-IPAM check, leadership, the periodic resync.
//! - `worker`: a node's task (its loop and messages); `pass`: what one pass reads, decides and
//!   writes, in order; `state`: the types a worker holds.
//! - What a pass calls: `init` (build the pool), `pods` (adopt, assign, annotate), `ec2_ops`
//!   (the EC2 call and its outcome), `status` (writing the NodeAddressPool), `gauges`,
//!   `max_pods` (the kubelet's max-pods against the IP capacity).
//! - Pure: `record` (the status as write-ahead record: render, restore, the rules writes wait
//!   for), `need` (what a pod needs), `leaving` (whether a node is on its way out), `reasons`
//!   (Event reasons).

mod context;
mod dispatch;
mod ec2_ops;
mod gauges;
mod index;
mod init;
mod leaving;
mod max_pods;
mod need;
mod pass;
mod pods;
pub mod reasons;
pub(crate) mod record;
mod state;
mod status;
mod worker;

#[cfg(test)]
pub(crate) use worker::RUN_FUTURE_BYTES;

pub use context::{Ctx, Settings};
pub use dispatch::Controller;
