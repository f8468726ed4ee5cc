//! What a node's NodeAddressPool status last said, kept in typed form. A worker compares it with
//! its pool on every pass (no allocation, no formatting) and formats a status only to write
//! one; the same record answers "does the written status list this address as used?", which an
//! annotation must wait for (SPEC 5.3, 6.3: a new leader cools down what the status lists as
//! used and no pod holds).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff;

use super::status::rfc3339;
use super::worker::ReadyNode;
use crate::crd::{AddressCounts, CooldownRecord, Ec2ErrorRecord, NodeAddressPoolStatus};
use crate::ec2::Ec2Error;
use crate::ipam::{Action, Mode, NodePool, PoolCounts, Timestamp};

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
    /// Before the pool is rebuilt (Init, Parked): the previous leader's records, written back
    /// unchanged. Without them a process that dies before its rebuild ends erases them, and the
    /// next leader hands out, within their cool-down, addresses whose pods went meanwhile.
    pub(crate) kept: Option<KeptRecords>,
}

/// Addresses in use and running cool-down records read from the status at start, both sorted.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct KeptRecords {
    pub(crate) used: Vec<Ipv4Addr>,
    pub(crate) cooldowns: Vec<(Ipv4Addr, Timestamp)>,
    pub(crate) releasing: Vec<Ipv4Net>,
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
    /// Slots being given back to EC2 (sorted): a release goes out only once a written status
    /// lists its slots.
    pub(crate) releasing: Vec<Ipv4Net>,
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
            releasing: pool.releasing_slots(now),
        }
    }

    /// `PoolFacts::of(ready, now) == *self`, without building it.
    pub(crate) fn same_as(&self, ready: &ReadyNode, now: Timestamp) -> bool {
        let pool = &ready.pool;
        self.counts == pool.counts(now)
            && self.used.iter().copied().eq(pool.used_iter())
            && self.cooldowns.iter().copied().eq(pool.cooldowns_iter(now))
            && self.releasing == pool.releasing_slots(now)
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

    /// Every address a pod of `pool` holds is listed as used.
    pub(crate) fn lists_all_used(&self, pool: &NodePool) -> bool {
        is_subset(pool.used_iter(), &self.used)
    }

    /// Every cool-down record of `pool` running at `now` is listed (expired ones may be).
    pub(crate) fn lists_all_cooling(&self, pool: &NodePool, now: Timestamp) -> bool {
        is_subset(pool.cooldowns_iter(now), &self.cooldowns)
    }

    /// Every slot `pool` is giving back is listed (ones past their grace may be).
    pub(crate) fn lists_all_releasing(&self, pool: &NodePool, now: Timestamp) -> bool {
        is_subset(pool.releasing_slots(now).into_iter(), &self.releasing)
    }

    /// Every slot of the release `action` is listed: its call may go out.
    pub(crate) fn lists_release(&self, action: &Action) -> bool {
        match action {
            Action::ReleaseIps(ips) => ips
                .iter()
                .all(|ip| self.releasing.binary_search(&Ipv4Net::from(*ip)).is_ok()),
            Action::ReleasePrefixes(nets) => nets
                .iter()
                .all(|net| self.releasing.binary_search(net).is_ok()),
            _ => true,
        }
    }
}

/// Every item of `items` is in `listed` (both sorted).
fn is_subset<T: Ord + Copy>(items: impl Iterator<Item = T>, listed: &[T]) -> bool {
    let mut listed = listed.iter().copied().peekable();
    items.into_iter().all(|item| {
        while listed.next_if(|l| *l < item).is_some() {}
        listed.next_if_eq(&item).is_some()
    })
}

/// The status saying `new`. `previous` is the last status written and its record: the texts
/// of addresses, /28s, cool-down records and conditions that did not change are moved from it
/// rather than formatted again (formatting every address in use was most of a write's cost).
///
/// After a failed write, [`restore_conditions`] gives the conditions back; the texts are made
/// again next time.
pub(crate) fn render(
    new: &Published,
    previous: Option<(&Published, &mut NodeAddressPoolStatus)>,
    last_error: Option<&(Ec2Error, Timestamp)>,
    now: Timestamp,
) -> NodeAddressPoolStatus {
    let mut none = NodeAddressPoolStatus::default();
    let (old, last) = match previous {
        Some((old, last)) => (Some(old), last),
        None => (None, &mut none),
    };
    let mut status = NodeAddressPoolStatus::default();
    if let Some(facts) = &new.pool {
        let old_facts = old.and_then(|o| o.pool.as_ref());
        let (old_prefixes, old_used, old_cooldowns) = match old_facts {
            Some(f) => (&f.prefixes[..], &f.used[..], &f.cooldowns[..]),
            None => (&[][..], &[][..], &[][..]),
        };
        status.instance_id = Some(facts.instance_id.clone());
        status.instance_type = Some(facts.instance_type.clone());
        status.eni_id = Some(facts.eni_id.clone());
        status.subnet_id = Some(facts.subnet_id.clone());
        status.subnet_cidr = Some(net_text(facts.subnet_cidr));
        status.mode = Some(facts.mode.to_string());
        status.capacity = Some(facts.capacity);
        status.counts = AddressCounts {
            used: facts.counts.used,
            free: facts.counts.free,
            cooling: facts.counts.cooling,
            pending: facts.counts.pending,
        };
        status.prefixes = reuse(
            old_prefixes,
            std::mem::take(&mut last.prefixes),
            &facts.prefixes,
            net_text,
        );
        status.used_addresses = reuse(
            old_used,
            std::mem::take(&mut last.used_addresses),
            &facts.used,
            ip_text,
        );
        status.cooldowns = reuse(
            old_cooldowns,
            std::mem::take(&mut last.cooldowns),
            &facts.cooldowns,
            |(addr, until)| CooldownRecord {
                address: ip_text(addr),
                until: rfc3339(until),
            },
        );
        status.releasing = facts.releasing.iter().map(|n| net_text(*n)).collect();
    } else if let Some(kept) = &new.kept {
        status.used_addresses = kept.used.iter().map(|a| ip_text(*a)).collect();
        status.cooldowns = kept
            .cooldowns
            .iter()
            .map(|&(addr, until)| CooldownRecord {
                address: ip_text(addr),
                until: rfc3339(until),
            })
            .collect();
        status.releasing = kept.releasing.iter().map(|n| net_text(*n)).collect();
    }
    status.conditions = match old {
        Some(old) if condition_inputs(old) == condition_inputs(new) => {
            std::mem::take(&mut last.conditions)
        }
        _ => conditions(new, &last.conditions, now),
    };
    status.last_ec2_error = last_error.map(|(e, at)| Ec2ErrorRecord {
        operation: e.class.label().to_string(),
        code: e
            .code
            .clone()
            .unwrap_or_else(|| e.class.label().to_string()),
        message: e.message.clone(),
        time: rfc3339(*at),
    });
    status
}

/// After a failed write of `attempt` (rendered for `new`): the conditions it took from the
/// last written status go back there.
pub(crate) fn restore_conditions(
    written: (&Published, &mut NodeAddressPoolStatus),
    new: &Published,
    attempt: NodeAddressPoolStatus,
) {
    let (old, last) = written;
    if condition_inputs(old) == condition_inputs(new) {
        last.conditions = attempt.conditions;
    }
}

/// What the conditions are made of.
fn condition_inputs(p: &Published) -> (Stage, bool, bool, Option<(Mode, u32, &str)>) {
    let pool = p
        .pool
        .as_ref()
        .map(|f| (f.mode, f.capacity, f.subnet_id.as_str()));
    (p.stage, p.blocked, p.subnet_held, pool)
}

/// The texts of `new` (sorted), moving the text of every item `old` (sorted, `old_texts[i]` the
/// text of `old[i]`) also has, and making the others.
fn reuse<T: Ord + Copy, S>(
    old: &[T],
    old_texts: Vec<S>,
    new: &[T],
    make: impl Fn(T) -> S,
) -> Vec<S> {
    if old.len() != old_texts.len() {
        return new.iter().map(|&item| make(item)).collect();
    }
    let mut olds = old.iter().copied().zip(old_texts).peekable();
    new.iter()
        .map(|&item| {
            while olds.next_if(|(o, _)| *o < item).is_some() {}
            match olds.next_if(|(o, _)| *o == item) {
                Some((_, text)) => text,
                None => make(item),
            }
        })
        .collect()
}

/// The conditions for `p`; one whose status did not change keeps its transition time from
/// `previous`.
fn conditions(p: &Published, previous: &[Condition], now: Timestamp) -> Vec<Condition> {
    let mut conditions = Vec::new();
    let (blocked, subnet_held) = (p.blocked, p.subnet_held);
    match &p.pool {
        Some(facts) => {
            conditions.push(condition(
                "Ready",
                !blocked && !subnet_held,
                if blocked {
                    "Blocked"
                } else if subnet_held {
                    "SubnetExhausted"
                } else {
                    "PoolReady"
                },
                format!("{} mode, capacity {}", facts.mode, facts.capacity),
                now,
            ));
            conditions.push(condition(
                "SubnetExhausted",
                subnet_held,
                if subnet_held {
                    "InsufficientFreeAddressesInSubnet"
                } else {
                    "AddressesAvailable"
                },
                format!("subnet {}", facts.subnet_id),
                now,
            ));
            conditions.push(condition(
                "Unsupported",
                false,
                "Supported",
                String::new(),
                now,
            ));
        }
        None => {
            let parked = p.stage == Stage::Parked;
            conditions.push(condition(
                "Ready",
                false,
                if parked {
                    "Unsupported"
                } else {
                    "Initializing"
                },
                "see the node's Events".to_string(),
                now,
            ));
            conditions.push(condition(
                "Unsupported",
                parked,
                if parked {
                    "NotManageable"
                } else {
                    "Initializing"
                },
                "see the node's Events".to_string(),
                now,
            ));
        }
    }
    conditions.push(condition(
        "Blocked",
        blocked,
        if blocked {
            "ForeignIPAMEnabled"
        } else {
            "NotBlocked"
        },
        if blocked {
            "kube-system/amazon-vpc-cni has enable-windows-ipam: \"true\"".to_string()
        } else {
            String::new()
        },
        now,
    ));
    for c in &mut conditions {
        if let Some(old) = previous.iter().find(|o| o.type_ == c.type_)
            && old.status == c.status
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    conditions
}

fn condition(type_: &str, ok: bool, reason: &str, message: String, now: Timestamp) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: Time(
            jiff::Timestamp::from_millisecond(now.as_millis() as i64).unwrap_or_default(),
        ),
        observed_generation: None,
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
            releasing: Vec::new(),
        }
    }

    fn ready(used: &[&str], cooling: &[(&str, u64)], blocked: bool) -> Published {
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

    #[test]
    fn render_reuses_texts_and_says_the_same_as_from_scratch() {
        let t0 = Timestamp(1_795_219_200_000);
        let t1 = Timestamp(1_795_219_260_000);
        let a = ready(
            &["10.0.0.17", "10.0.0.20"],
            &[("10.0.0.18", 1_795_219_230_000)],
            false,
        );
        let b = ready(
            &["10.0.0.16", "10.0.0.20", "10.0.0.21"],
            &[
                ("10.0.0.17", 1_795_219_290_000),
                ("10.0.0.18", 1_795_219_230_000),
            ],
            false,
        );
        let mut written = render(&a, None, None, t0);
        assert_eq!(written.used_addresses, ["10.0.0.17", "10.0.0.20"]);
        assert_eq!(written.cooldowns[0].until, "2026-11-21T00:00:30Z");
        let incremental = render(&b, Some((&a, &mut written)), None, t1);
        // Same conditions (moved over, transition times of t0); the rest as from scratch.
        let mut scratch = render(&b, None, None, t0);
        assert_eq!(incremental, scratch);
        assert_eq!(
            incremental.used_addresses,
            ["10.0.0.16", "10.0.0.20", "10.0.0.21"]
        );
        // Blocked: that condition's transition time moves, the others keep theirs.
        let c = ready(&["10.0.0.16"], &[], true);
        let blocked = render(&c, Some((&b, &mut scratch)), None, t1);
        let time = |s: &NodeAddressPoolStatus, type_: &str| {
            let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
            (c.status.clone(), c.last_transition_time.0.as_millisecond())
        };
        assert_eq!(
            time(&blocked, "Blocked"),
            ("True".into(), 1_795_219_260_000)
        );
        assert_eq!(time(&blocked, "Ready"), ("False".into(), 1_795_219_260_000));
        assert_eq!(
            time(&blocked, "Unsupported"),
            ("False".into(), 1_795_219_200_000)
        );
        assert_eq!(blocked.used_addresses, ["10.0.0.16"]);
        assert!(blocked.cooldowns.is_empty());
    }

    #[test]
    fn a_failed_write_gives_the_conditions_back() {
        let t0 = Timestamp(1_795_219_200_000);
        let a = ready(&["10.0.0.17"], &[], false);
        let b = ready(&["10.0.0.17", "10.0.0.18"], &[], false);
        let mut written = render(&a, None, None, t0);
        let conditions = written.conditions.clone();
        let attempt = render(&b, Some((&a, &mut written)), None, Timestamp(t0.0 + 5000));
        assert!(written.conditions.is_empty(), "moved into the attempt");
        restore_conditions((&a, &mut written), &b, attempt);
        assert_eq!(written.conditions, conditions);
        // The texts were moved out: the next render makes them again.
        let again = render(&b, Some((&a, &mut written)), None, Timestamp(t0.0 + 9000));
        assert_eq!(again.used_addresses, ["10.0.0.17", "10.0.0.18"]);
        assert_eq!(again.conditions, conditions);
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
            let outcome = pool.adopt(&PodUid::new(uid), addr.parse().unwrap(), now);
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

        // Cool-down records: a new one is missing until listed; an expired one need not be.
        let mut written = written;
        assert!(written.lists_all_cooling(&pool, now));
        pool.release(&PodUid::new("a"), now);
        let records = pool.cooldowns(now);
        assert_eq!(records.len(), 1);
        assert!(!written.lists_all_cooling(&pool, now));
        written.cooldowns = records.clone();
        assert!(written.lists_all_cooling(&pool, now));
        let later = Timestamp(records[0].1.0 + 1);
        assert!(facts(&[]).lists_all_cooling(&pool, later));
    }
}
