//! What a node's NodeAddressPool status last said, kept in typed form. A worker compares it with
//! its pool on every pass (no allocation, no formatting) and formats a status only to write
//! one; the same record answers "does the written status list this address as used?", which an
//! annotation must wait for (SPEC 5.3, 6.3: a new leader cools down what the status lists as
//! used and no pod holds).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::worker::ReadyNode;
use crate::ipam::{Mode, NodePool, PoolCounts, Timestamp};

/// Where the node stands, as far as the status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Init,
    Parked,
    Ready,
}

/// Everything a status is built from, except the conditions' transition times.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Published {
    pub(crate) stage: Stage,
    pub(crate) blocked: bool,
    pub(crate) subnet_held: bool,
    /// When the last EC2 error happened (the record itself is in the worker's state).
    pub(crate) error_at: Option<Timestamp>,
    /// Set in the Ready stage.
    pub(crate) pool: Option<PoolFacts>,
}

/// What the status says about a ready node's pool.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PoolFacts {
    pub(crate) instance_id: String,
    pub(crate) instance_type: String,
    pub(crate) eni_id: String,
    pub(crate) subnet_id: String,
    pub(crate) subnet_cidr: Ipv4Net,
    pub(crate) mode: Mode,
    pub(crate) capacity: u32,
    pub(crate) counts: PoolCounts,
    pub(crate) prefixes: Vec<Ipv4Net>,
    /// Sorted (the pool keeps them in address order).
    pub(crate) used: Vec<Ipv4Addr>,
    pub(crate) cooldowns: Vec<(Ipv4Addr, Timestamp)>,
}

impl PoolFacts {
    pub(crate) fn of(ready: &ReadyNode, now: Timestamp) -> PoolFacts {
        let pool = &ready.pool;
        PoolFacts {
            instance_id: ready.instance.instance_id.clone(),
            instance_type: ready.instance.instance_type.clone(),
            eni_id: ready.instance.primary_eni.eni_id.clone(),
            subnet_id: ready.subnet.subnet_id.clone(),
            subnet_cidr: ready.subnet.cidr,
            mode: pool.mode(),
            capacity: pool.capacity(now),
            counts: pool.counts(now),
            prefixes: pool.prefixes_iter().collect(),
            used: pool.used_iter().collect(),
            cooldowns: pool.cooldowns_iter(now).collect(),
        }
    }

    /// `PoolFacts::of(ready, now) == *self`, without building it.
    pub(crate) fn same_as(&self, ready: &ReadyNode, now: Timestamp) -> bool {
        let pool = &ready.pool;
        self.counts == pool.counts(now)
            && self.used.iter().copied().eq(pool.used_iter())
            && self.cooldowns.iter().copied().eq(pool.cooldowns_iter(now))
            && self.prefixes.iter().copied().eq(pool.prefixes_iter())
            && self.capacity == pool.capacity(now)
            && self.mode == pool.mode()
            && self.subnet_cidr == ready.subnet.cidr
            && self.instance_id == ready.instance.instance_id
            && self.instance_type == ready.instance.instance_type
            && self.eni_id == ready.instance.primary_eni.eni_id
            && self.subnet_id == ready.subnet.subnet_id
    }

    /// The status lists `addr` as used.
    pub(crate) fn lists(&self, addr: Ipv4Addr) -> bool {
        self.used.binary_search(&addr).is_ok()
    }

    /// Every address a pod of `pool` holds is listed as used (both sides are sorted).
    pub(crate) fn lists_all_used(&self, pool: &NodePool) -> bool {
        let mut listed = self.used.iter().copied().peekable();
        pool.used_iter().all(|addr| {
            while listed.next_if(|l| *l < addr).is_some() {}
            listed.next_if_eq(&addr).is_some()
        })
    }
}

/// `a.b.c.d`, several times cheaper than `Ipv4Addr`'s `Display` (which pads through
/// `core::fmt`): every address in use is formatted on each status write.
pub(crate) fn ip_text(addr: Ipv4Addr) -> String {
    let mut s = String::with_capacity(15);
    push_ip(&mut s, addr);
    s
}

/// `a.b.c.d/len`.
pub(crate) fn net_text(net: Ipv4Net) -> String {
    let mut s = String::with_capacity(18);
    push_ip(&mut s, net.addr());
    s.push('/');
    push_u8(&mut s, net.prefix_len());
    s
}

fn push_ip(s: &mut String, addr: Ipv4Addr) {
    for (i, octet) in addr.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        push_u8(s, octet);
    }
}

fn push_u8(s: &mut String, v: u8) {
    if v >= 100 {
        s.push(char::from(b'0' + v / 100));
    }
    if v >= 10 {
        s.push(char::from(b'0' + v / 10 % 10));
    }
    s.push(char::from(b'0' + v % 10));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_matches_display() {
        for v in 0..=255u8 {
            let addr = Ipv4Addr::new(v, 255 - v, v / 3, v.wrapping_mul(7));
            assert_eq!(ip_text(addr), addr.to_string());
        }
        for (a, len) in [("10.64.0.16", 28), ("0.0.0.0", 0), ("192.168.255.240", 32)] {
            let net = Ipv4Net::new(a.parse().unwrap(), len).unwrap();
            assert_eq!(net_text(net), net.to_string());
        }
    }

    fn facts(used: &[&str]) -> PoolFacts {
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
        }
    }

    fn prefix_pool() -> NodePool {
        use crate::ipam::{Config, EniSnapshot, InstanceTypeLimits};
        let eni = EniSnapshot {
            eni_id: "eni-1".into(),
            subnet_id: "subnet-1".into(),
            primary_ip: Ipv4Addr::new(10, 0, 0, 4),
            secondary_ips: vec![],
            prefixes: vec!["10.0.0.16/28".parse().unwrap()],
        };
        let limits = InstanceTypeLimits {
            instance_type: "m5.xlarge".into(),
            ipv4_per_interface: 15,
            nitro: true,
        };
        NodePool::new(limits, Config::default(), &eni)
    }

    #[test]
    fn lists_all_used_is_a_subset_test() {
        use crate::ipam::{AdoptOutcome, PodUid};
        let now = Timestamp(1_000_000);
        let mut pool = prefix_pool();
        let adopt = |pool: &mut NodePool, uid: &str, addr: &str| {
            let outcome = pool.adopt(&PodUid(uid.into()), addr.parse().unwrap(), now);
            assert_eq!(outcome, AdoptOutcome::Ok);
        };
        let written = facts(&["10.0.0.16", "10.0.0.17", "10.0.0.20"]);
        assert!(written.lists_all_used(&pool), "nothing used");
        adopt(&mut pool, "a", "10.0.0.17");
        adopt(&mut pool, "b", "10.0.0.20");
        assert!(written.lists_all_used(&pool), "a subset");
        assert!(!facts(&[]).lists_all_used(&pool));
        assert!(
            !facts(&["10.0.0.17"]).lists_all_used(&pool),
            "the last one missing"
        );
        assert!(
            !facts(&["10.0.0.20"]).lists_all_used(&pool),
            "the first one missing"
        );
        adopt(&mut pool, "c", "10.0.0.18");
        assert!(!written.lists_all_used(&pool), "10.0.0.18 is not listed");
        assert!(written.lists("10.0.0.16".parse().unwrap()));
        assert!(!written.lists("10.0.0.18".parse().unwrap()));
    }
}
