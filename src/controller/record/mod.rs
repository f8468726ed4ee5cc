//! The NodeAddressPool status as winipam's write-ahead record, both ways: what a worker last
//! wrote, in typed form ([`Published`]); the status made from it ([`render`]); what a new
//! leader reads back from it ([`restore`]); and the rules that make writes wait for it
//! ([`rules`]: an annotation for a status that lists its address as used, a release for one that
//! lists its slots, SPEC 5.3, 6.3). All of it is pure: the worker's `status` module does the
//! writing.
//!
//! A worker compares the typed record with its pool on every pass (no allocation, no
//! formatting) and formats a status only to write one.

pub(crate) mod ahead;
mod render;
mod restore;
pub(crate) mod rules;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ipam::{Action, InstanceInfo, Mode, NodePool, PoolCounts, SubnetInfo, Timestamp};

pub(crate) use render::{render, restore_conditions, rfc3339};
pub(crate) use restore::{Restored, restore};

#[cfg(test)]
mod test_support;

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
    /// Listed ahead by the previous worker: possibly in use, as `used` (sorted).
    pub(crate) ahead: Vec<Ipv4Addr>,
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
    /// Addresses the worker may hand out next (sorted, see `ahead`): an annotation naming one
    /// needs no status write of its own, and a new leader treats them as possibly in use.
    pub(crate) ahead: Vec<Ipv4Addr>,
}

impl PoolFacts {
    /// `ahead`: what to list ahead (`ahead::ahead`), sorted.
    pub(crate) fn of(
        pool: &NodePool,
        instance: &InstanceInfo,
        subnet: &SubnetInfo,
        ahead: Vec<Ipv4Addr>,
        now: Timestamp,
    ) -> PoolFacts {
        PoolFacts {
            instance_id: instance.instance_id.clone(),
            instance_type: instance.instance_type.clone(),
            eni_id: instance.primary_eni.eni_id.clone(),
            subnet_id: subnet.subnet_id.clone(),
            subnet_cidr: subnet.cidr,
            mode: pool.mode(),
            capacity: pool.capacity(now),
            counts: pool.counts(now),
            prefixes: pool.prefixes_iter().collect(),
            used: pool.used_iter().collect(),
            cooldowns: pool.cooldowns_iter(now).collect(),
            releasing: pool.releasing_slots(now),
            ahead,
        }
    }

    /// `PoolFacts::of(pool, instance, subnet, ahead, now) == *self`, without building it.
    pub(crate) fn same_as(
        &self,
        pool: &NodePool,
        instance: &InstanceInfo,
        subnet: &SubnetInfo,
        ahead: &[Ipv4Addr],
        now: Timestamp,
    ) -> bool {
        self.counts == pool.counts(now)
            && self.ahead == ahead
            && self.used.iter().copied().eq(pool.used_iter())
            && self.cooldowns.iter().copied().eq(pool.cooldowns_iter(now))
            && self.releasing == pool.releasing_slots(now)
            && self.prefixes.iter().copied().eq(pool.prefixes_iter())
            && self.capacity == pool.capacity(now)
            && self.mode == pool.mode()
            && self.subnet_cidr == subnet.cidr
            && self.instance_id == instance.instance_id
            && self.instance_type == instance.instance_type
            && self.eni_id == instance.primary_eni.eni_id
            && self.subnet_id == subnet.subnet_id
    }

    /// The status lists `addr` as used.
    pub(crate) fn lists(&self, addr: Ipv4Addr) -> bool {
        self.used.binary_search(&addr).is_ok()
    }

    /// The status lists `addr` ahead.
    pub(crate) fn lists_ahead(&self, addr: Ipv4Addr) -> bool {
        self.ahead.binary_search(&addr).is_ok()
    }

    /// Every address a pod of `pool` holds is listed as used.
    #[cfg(test)]
    pub(crate) fn lists_all_used(&self, pool: &NodePool) -> bool {
        is_subset(pool.used_iter(), &self.used)
    }

    /// Every address a pod of `pool` holds is covered (used or ahead): its annotation, or
    /// its pod's going, needs no write at once.
    pub(crate) fn covers_all_used(&self, pool: &NodePool) -> bool {
        pool.used_iter()
            .all(|a| self.lists(a) || self.lists_ahead(a))
    }

    /// A new leader reading this status after a crash would hold back, for the orphan hold,
    /// more addresses than the ENI has room to replace (`NodePool::room`), and some of them are
    /// addresses of pods that went since it was written. Each such address is listed as used
    /// (or ahead) and no pod of `pool` holds it; written again, a gone pod's address becomes a
    /// cool-down record that ends on time. On a node at its ENI's limit this writes each
    /// going at once, as before the addresses listed ahead: in the chart test, a leader killed
    /// just after a scale-down left new pods on full nodes waiting 75 s instead of 29 s.
    pub(crate) fn holds_back_beyond_room(&self, pool: &NodePool) -> bool {
        let unheld = |a: &&Ipv4Addr| pool.on_eni(**a) && !pool.is_held(**a);
        let gone = self.used.iter().filter(unheld).count();
        gone > 0 && gone + self.ahead.iter().filter(unheld).count() > pool.room()
    }

    /// Every cool-down record of `pool` running at `now` is covered: listed as a record, or
    /// its address listed as used (the pod that went) or ahead. A deletion needs no write.
    pub(crate) fn covers_all_cooling(&self, pool: &NodePool, now: Timestamp) -> bool {
        let mut listed = self.cooldowns.iter().copied().peekable();
        pool.cooldowns_iter(now).all(|record| {
            while listed.next_if(|l| *l < record).is_some() {}
            listed.next_if_eq(&record).is_some()
                || self.lists(record.0)
                || self.lists_ahead(record.0)
        })
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
