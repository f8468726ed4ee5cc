//! Records and pools for the tests of the status record.

use std::net::Ipv4Addr;

use super::{PoolFacts, Published, Stage};
use crate::ipam::{Config, EniSnapshot, InstanceTypeLimits, Mode, NodePool, PoolCounts, Timestamp};

/// The facts of a prefix-mode pool listing `used` as used, and nothing else.
pub(super) fn facts(used: &[&str]) -> PoolFacts {
    PoolFacts {
        instance_id: String::new(),
        instance_type: String::new(),
        eni_id: String::new(),
        subnet_id: String::new(),
        subnet_cidr: "10.0.0.0/16".parse().unwrap(),
        mode: Mode::Prefix,
        capacity: 0,
        counts: PoolCounts::default(),
        prefixes: Vec::new(),
        used: used.iter().map(|a| a.parse().unwrap()).collect(),
        cooldowns: Vec::new(),
        releasing: Vec::new(),
        ahead: Vec::new(),
    }
}

/// A ready node's record: `used`, cool-down records `(address, end in ms)`, one /28.
pub(super) fn ready(used: &[&str], cooling: &[(&str, u64)], blocked: bool) -> Published {
    let mut f = facts(used);
    f.prefixes = vec!["10.0.0.16/28".parse().unwrap()];
    f.cooldowns = cooling
        .iter()
        .map(|(a, until)| (a.parse().unwrap(), Timestamp(*until)))
        .collect();
    Published {
        stage: Stage::Ready,
        blocked,
        subnet_held: false,
        error_at: None,
        pool: Some(f),
        kept: None,
    }
}

/// A prefix-mode pool with one /28, 10.0.0.16/28, and nothing in use (30 s cool-down), on an
/// m5.xlarge (13 more /28s fit on its ENI).
pub(super) fn prefix_pool() -> NodePool {
    prefix_pool_on(15)
}

/// As [`prefix_pool`], on an ENI of `ipv4_per_interface` addresses (2: the /28 fills it).
pub(super) fn prefix_pool_on(ipv4_per_interface: u32) -> NodePool {
    let eni = EniSnapshot {
        eni_id: "eni-1".into(),
        subnet_id: "subnet-1".into(),
        primary_ip: Ipv4Addr::new(10, 0, 0, 4),
        secondary_ips: vec![],
        prefixes: vec!["10.0.0.16/28".parse().unwrap()],
    };
    let limits = InstanceTypeLimits {
        instance_type: "m5.xlarge".into(),
        ipv4_per_interface,
        nitro: true,
    };
    let config = Config {
        prefix_delegation: true,
        ..Config::default()
    };
    NodePool::new(limits, config, &eni)
}
