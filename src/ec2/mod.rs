//! The EC2 layer: one [`Ec2Backend`] trait with a method per raw EC2 request, the real backend on
//! the AWS SDK ([`aws::AwsEc2`]), and the process-wide [`client::Ec2Client`] the controller talks
//! to (rate limits, batching, caches, metrics, reading Assign results against known addresses).
//!
//! The simulated EC2 (`crate::sim::ec2::SimEc2`) implements the same trait, so the simulator runs
//! the very client code production runs.

pub mod aws;
mod batch;
mod cache;
pub mod classify;
pub mod client;
pub mod metrics;
mod precedence;
pub mod ratelimit;

use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use crate::ipam::{Ec2ErrorClass, InstanceInfo, InstanceTypeLimits, SubnetInfo};

pub use client::{Ec2Client, Ec2ClientConfig};
pub use ratelimit::Urgency;

/// The EC2 actions winipam calls (SPEC section 7), named as EC2 names them: these names are the
/// `operation` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    DescribeInstances,
    DescribeSubnets,
    DescribeInstanceTypes,
    AssignPrivateIpAddresses,
    UnassignPrivateIpAddresses,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::DescribeInstances,
        Operation::DescribeSubnets,
        Operation::DescribeInstanceTypes,
        Operation::AssignPrivateIpAddresses,
        Operation::UnassignPrivateIpAddresses,
    ];

    /// The EC2 action name.
    pub fn name(self) -> &'static str {
        match self {
            Operation::DescribeInstances => "DescribeInstances",
            Operation::DescribeSubnets => "DescribeSubnets",
            Operation::DescribeInstanceTypes => "DescribeInstanceTypes",
            Operation::AssignPrivateIpAddresses => "AssignPrivateIpAddresses",
            Operation::UnassignPrivateIpAddresses => "UnassignPrivateIpAddresses",
        }
    }

    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Mutating calls take tokens from the mutating bucket, and an unknown outcome of one of them
    /// means the ENI may have changed.
    pub fn is_mutating(self) -> bool {
        matches!(
            self,
            Operation::AssignPrivateIpAddresses | Operation::UnassignPrivateIpAddresses
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed EC2 request, classified by its EC2 error code (see [`classify::classify`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct Ec2Error {
    pub class: Ec2ErrorClass,
    /// The EC2 error code; `None` when EC2 gave no answer (timeout, connection failure).
    pub code: Option<String>,
    pub message: String,
}

impl Ec2Error {
    /// An error EC2 answered with: classified by its code.
    pub fn from_code(code: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Ec2Error {
            class: classify::classify(code, &message),
            code: Some(code.to_string()),
            message,
        }
    }

    /// No (readable) answer from EC2: timeout, dropped connection, unreadable response. On a
    /// mutating call the change may or may not have been made, so the outcome is unknown and the
    /// next step must be a describe, never a blind retry. On a describe nothing changed; the error
    /// is `Other` with the pseudo-code `kind` (`Timeout`, `Transport`), which is not an EC2 code
    /// (`code` stays `None`).
    pub fn no_answer(op: Operation, kind: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let class = if op.is_mutating() {
            Ec2ErrorClass::UnknownOutcome
        } else {
            Ec2ErrorClass::Other {
                code: kind.to_string(),
                message: message.clone(),
            }
        };
        Ec2Error {
            class,
            code: None,
            message,
        }
    }

    /// A failure on our side before anything reached EC2 (bad configuration, a batch task that
    /// died): nothing changed.
    pub fn local(kind: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Ec2Error {
            class: Ec2ErrorClass::Other {
                code: kind.to_string(),
                message: message.clone(),
            },
            code: None,
            message,
        }
    }

    /// The resource is absent from EC2's answer (an instance missing from a batched describe).
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Ec2Error {
            class: Ec2ErrorClass::NotFound,
            code: Some(code.to_string()),
            message: message.into(),
        }
    }

    pub fn is_throttled(&self) -> bool {
        self.class == Ec2ErrorClass::Throttled
    }

    fn describe(&self) -> String {
        match &self.code {
            Some(code) => format!("EC2 error {code}: {}", self.message),
            None => format!(
                "EC2 request failed ({}): {}",
                self.class.label(),
                self.message
            ),
        }
    }
}

/// Where a backend that retries internally reports each throttled attempt (see
/// [`Ec2Backend::report_throttles_to`]).
pub type ThrottleSink = Arc<dyn Fn(Operation) + Send + Sync>;

/// One raw EC2 request per method. Implemented by the real SDK backend and the simulated EC2;
/// the [`Ec2Client`] adds rate limits, batching and caching on top of either.
///
/// Ids that EC2 does not know fail the whole request (`InvalidInstanceID.NotFound` and friends),
/// as EC2 does; the client splits batches to find the missing ones.
pub trait Ec2Backend: Send + Sync + 'static {
    /// `DescribeInstances` by id. Each instance's primary ENI is the attachment with device index
    /// 0 on network card 0; other ENIs are ignored. Instances without one (terminated) are left out.
    fn describe_instances(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<InstanceInfo>, Ec2Error>> + Send;

    /// `DescribeSubnets` by id.
    fn describe_subnets(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<SubnetInfo>, Ec2Error>> + Send;

    /// `DescribeInstanceTypes` by name (at most 100 a call, EC2's limit).
    fn describe_instance_types(
        &self,
        types: &[String],
    ) -> impl Future<Output = Result<Vec<InstanceTypeLimits>, Ec2Error>> + Send;

    /// `AssignPrivateIpAddresses` with `SecondaryPrivateIpAddressCount`: the addresses as EC2
    /// returned them (an emulator may return every address of the ENI).
    fn assign_private_ips(
        &self,
        eni: &str,
        count: u32,
    ) -> impl Future<Output = Result<Vec<Ipv4Addr>, Ec2Error>> + Send;

    /// `AssignPrivateIpAddresses` with `Ipv4PrefixCount`: the /28 prefixes EC2 returned.
    fn assign_prefixes(
        &self,
        eni: &str,
        count: u32,
    ) -> impl Future<Output = Result<Vec<Ipv4Net>, Ec2Error>> + Send;

    /// `UnassignPrivateIpAddresses` with `PrivateIpAddresses`.
    fn unassign_private_ips(
        &self,
        eni: &str,
        ips: &[Ipv4Addr],
    ) -> impl Future<Output = Result<(), Ec2Error>> + Send;

    /// `UnassignPrivateIpAddresses` with `Ipv4Prefixes`.
    fn unassign_prefixes(
        &self,
        eni: &str,
        prefixes: &[Ipv4Net],
    ) -> impl Future<Output = Result<(), Ec2Error>> + Send;

    /// A backend that retries throttled describes internally (the SDK does) reports every
    /// throttled attempt to `sink` and returns true: the client then does not count the final
    /// `Throttled` error a second time, nor retry describes on top. Backends that do not retry
    /// keep this default: the client counts each `Throttled` error it receives and retries.
    fn report_throttles_to(&self, sink: ThrottleSink) -> bool {
        let _ = sink;
        false
    }
}
