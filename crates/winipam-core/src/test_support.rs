//! Test helpers: a small honest model of one ENI, and shortcuts to build pools.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::config::Config;
use super::plan::Action;
use super::pool::{AssignOutcome, NodePool};
use super::pool_ec2::Ec2Addresses;
use super::types::{Ec2ErrorClass, EniSnapshot, InstanceTypeLimits, Timestamp};
use super::uid::PodUid;

pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);

pub fn limits(ipv4_per_interface: u32, nitro: bool) -> InstanceTypeLimits {
    InstanceTypeLimits {
        instance_type: format!("test.{ipv4_per_interface}"),
        ipv4_per_interface,
        nitro,
    }
}

pub fn uid(n: usize) -> PodUid {
    PodUid::from(format!("uid-{n}"))
}

pub fn secs(s: u64) -> Timestamp {
    Timestamp(1_000_000 + s * 1000)
}

pub fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

pub fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test prefix")
}

/// A describe of the test ENI: secondary IPs `10.0.0.<n>` and the given /28s.
pub fn eni_snapshot(ips: &[u8], prefixes: &[&str]) -> EniSnapshot {
    EniSnapshot {
        eni_id: "eni-1".into(),
        subnet_id: "subnet-1".into(),
        primary_ip: PRIMARY,
        secondary_ips: ips.iter().map(|&i| ip(i)).collect(),
        prefixes: prefixes.iter().map(|p| net(p)).collect(),
    }
}

/// The secondary-IP or prefix config with the given ConfigMap pairs.
pub fn config(pairs: &[(&str, &str)]) -> Config {
    let data = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::parse(&data).expect("valid test config").config
}

/// An honest model of a primary ENI in a small subnet: it enforces the slot limit, picks the
/// lowest free addresses (so released ones come back), and keeps the state before its last
/// change so tests can serve a stale (eventually consistent) describe.
#[derive(Debug, Clone)]
pub struct FakeEni {
    pub slots: u32,
    pub ips: BTreeSet<Ipv4Addr>,
    pub prefixes: BTreeSet<Ipv4Net>,
    pub previous: Option<EniSnapshot>,
}

/// What the fake answered to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeAnswer {
    Assigned(Ec2Addresses),
    Released,
    Described(EniSnapshot),
}

impl FakeEni {
    pub fn new(limits: &InstanceTypeLimits) -> Self {
        FakeEni {
            slots: limits.ipv4_per_interface.saturating_sub(1),
            ips: BTreeSet::new(),
            prefixes: BTreeSet::new(),
            previous: None,
        }
    }

    pub fn snapshot(&self) -> EniSnapshot {
        EniSnapshot {
            eni_id: "eni-test".into(),
            subnet_id: "subnet-test".into(),
            primary_ip: PRIMARY,
            secondary_ips: self.ips.iter().copied().collect(),
            prefixes: self.prefixes.iter().copied().collect(),
        }
    }

    fn used_slots(&self) -> u32 {
        (self.ips.len() + self.prefixes.len()) as u32
    }

    fn remember(&mut self) {
        self.previous = Some(self.snapshot());
    }

    pub fn addresses(&self) -> BTreeSet<Ipv4Addr> {
        let mut all = self.ips.clone();
        for n in &self.prefixes {
            all.extend(super::pool::prefix_addrs(*n));
        }
        all
    }

    /// Performs `action` as EC2 would.
    pub fn execute(&mut self, action: &Action) -> Result<FakeAnswer, Ec2ErrorClass> {
        match action {
            Action::None => Err(Ec2ErrorClass::Other {
                code: "NoAction".into(),
                message: "nothing to do".into(),
            }),
            Action::Describe => Ok(FakeAnswer::Described(self.snapshot())),
            Action::AssignIps(n) => {
                if self.used_slots() + n > self.slots {
                    return Err(Ec2ErrorClass::EniLimit);
                }
                self.remember();
                let taken = self.addresses();
                let new: Vec<Ipv4Addr> = (5..=254u8)
                    .map(ip)
                    .filter(|a| !taken.contains(a))
                    .take(*n as usize)
                    .collect();
                if new.len() < *n as usize {
                    return Err(Ec2ErrorClass::SubnetFull);
                }
                self.ips.extend(new.iter().copied());
                Ok(FakeAnswer::Assigned(Ec2Addresses::Ips(new)))
            }
            Action::AssignPrefixes(k) => {
                if self.used_slots() + k > self.slots {
                    return Err(Ec2ErrorClass::EniLimit);
                }
                self.remember();
                let new: Vec<Ipv4Net> = (0..256u32)
                    .map(|i| {
                        Ipv4Net::new(
                            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + i * 16),
                            28,
                        )
                        .expect("/28")
                    })
                    .filter(|n| !self.prefixes.contains(n))
                    .take(*k as usize)
                    .collect();
                self.prefixes.extend(new.iter().copied());
                Ok(FakeAnswer::Assigned(Ec2Addresses::Prefixes(new)))
            }
            Action::ReleaseIps(ips) => {
                self.remember();
                for a in ips {
                    self.ips.remove(a);
                }
                Ok(FakeAnswer::Released)
            }
            Action::ReleasePrefixes(nets) => {
                self.remember();
                for n in nets {
                    self.prefixes.remove(n);
                }
                Ok(FakeAnswer::Released)
            }
        }
    }

    /// Plans, performs and applies EC2 calls until the pool wants nothing (all succeeding).
    /// Returns the actions taken.
    pub fn settle(&mut self, pool: &mut NodePool, now: Timestamp) -> Vec<Action> {
        let mut done = Vec::new();
        for _ in 0..100 {
            let action = pool.plan(now);
            if action == Action::None {
                return done;
            }
            pool.begin(&action, now);
            match self.execute(&action) {
                Ok(FakeAnswer::Assigned(added)) => {
                    pool.apply_assign_ok(&added, now);
                }
                Ok(FakeAnswer::Released) => pool.apply_release_ok(now),
                Ok(FakeAnswer::Described(snap)) => {
                    pool.apply_describe(&snap, now);
                }
                Err(class) => {
                    pool.apply_failure(&class, now);
                }
            }
            done.push(action);
        }
        panic!("pool did not settle in 100 calls: {done:?}");
    }
}

/// A new pool on an empty ENI, and its fake.
pub fn empty_pool(limits: InstanceTypeLimits, config: Config) -> (NodePool, FakeEni) {
    let eni = FakeEni::new(&limits);
    let pool = NodePool::new(limits, config, &eni.snapshot());
    (pool, eni)
}

/// Gives pods `range` an address each (the same again if they have one); those left without
/// one wait. Returns how many wait.
pub fn bind(pool: &mut NodePool, range: std::ops::Range<usize>, now: Timestamp) -> u32 {
    let mut waiting = 0;
    for n in range {
        if pool.assign(&uid(n), now) == AssignOutcome::Exhausted {
            waiting += 1;
        }
    }
    pool.set_waiting(waiting);
    waiting
}

/// (secondary IPs, /28s) the pool knows on its ENI.
pub fn on_eni(pool: &NodePool) -> (usize, usize) {
    (pool.secondary_ips().len(), pool.prefixes().len())
}
