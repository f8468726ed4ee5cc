//! The controller: watches feed an index of Windows nodes and their pods; while this replica
//! leads, one worker task per node owns that node's pool (see `worker`). The wiring is thin on
//! purpose: decisions are in `crate::ipam`, I/O behind `crate::k8s::Cluster` and
//! `crate::ec2::Ec2Backend`, so the simulator runs this very code.

mod context;
mod dispatch;
mod ec2_ops;
mod init;
mod pods;
mod published;
pub mod reasons;
mod status;
mod worker;

pub use context::{Ctx, Settings};
pub use dispatch::Controller;
