//! Domain types shared by the pure core, the EC2 adapters and the controller.
//!
//! They know nothing of Kubernetes or the AWS SDK: adapters translate into and out of them.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

/// A point in time: milliseconds since the UNIX epoch. The core never reads a clock; callers pass
/// the time in (the real clock in production, a virtual one in simulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }
    pub fn as_millis(self) -> u64 {
        self.0
    }
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis() as u64))
    }
    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// How a node's pod addresses are carved out of its ENI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One secondary private IPv4 per pod.
    Secondary,
    /// /28 prefixes on the ENI, 16 pod addresses each.
    Prefix,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Secondary => "secondary",
            Mode::Prefix => "prefix",
        })
    }
}

/// What EC2 reports about one primary ENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniSnapshot {
    pub eni_id: String,
    pub subnet_id: String,
    /// The ENI's primary address (the node's own; never given to a pod).
    pub primary_ip: Ipv4Addr,
    /// Secondary private IPv4 addresses, primary excluded.
    pub secondary_ips: Vec<Ipv4Addr>,
    /// Delegated IPv4 prefixes (/28).
    pub prefixes: Vec<Ipv4Net>,
}

/// What EC2 reports about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub instance_id: String,
    pub instance_type: String,
    pub availability_zone: String,
    /// The primary ENI: device index 0 on network card 0.
    pub primary_eni: EniSnapshot,
}

/// What EC2 reports about a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetInfo {
    pub subnet_id: String,
    pub cidr: Ipv4Net,
    pub availability_zone: String,
    pub available_ips: u64,
}

/// Network limits of an instance type, as EC2 or the embedded table gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceTypeLimits {
    pub instance_type: String,
    /// IPv4 addresses per ENI, the primary included.
    pub ipv4_per_interface: u32,
    /// Nitro hypervisor or bare metal: prefix delegation is possible.
    pub nitro: bool,
}

/// Classes of EC2 failure, decided by the EC2 error code (never the message text). Each class has
/// one reaction in the pool and the controller (SPEC section 7).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ec2ErrorClass {
    /// `RequestLimitExceeded`: back off, lower the client rate for a while.
    Throttled,
    /// `InsufficientCidrBlocks`: the subnet has no free aligned /28.
    NoCidrBlock,
    /// `InsufficientFreeAddressesInSubnet`.
    SubnetFull,
    /// `PrivateIpAddressLimitExceeded`: our view of the ENI was stale; describe it.
    EniLimit,
    /// `InvalidNetworkInterfaceID.NotFound`, `InvalidInstanceID.NotFound`: the instance is gone.
    NotFound,
    /// Timeout or dropped connection on a mutating call: it may or may not have happened.
    UnknownOutcome,
    /// Any other code, kept with its message for the Event.
    Other { code: String, message: String },
}

impl Ec2ErrorClass {
    /// Short stable label for metrics (`reason` label values).
    pub fn label(&self) -> &'static str {
        match self {
            Ec2ErrorClass::Throttled => "throttled",
            Ec2ErrorClass::NoCidrBlock => "insufficient_cidr_blocks",
            Ec2ErrorClass::SubnetFull => "subnet_full",
            Ec2ErrorClass::EniLimit => "eni_limit",
            Ec2ErrorClass::NotFound => "not_found",
            Ec2ErrorClass::UnknownOutcome => "unknown_outcome",
            Ec2ErrorClass::Other { .. } => "other",
        }
    }
}
