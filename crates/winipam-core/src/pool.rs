//! The address pool of one node: what is on its ENI, who uses what, what cools down.
//!
//! This file owns the state and the pod-facing operations (assign, adopt, release). Applying EC2
//! results is in `pool_ec2.rs`, deciding the next EC2 call in `plan.rs`. Nothing here does I/O or
//! reads a clock: every operation that depends on time takes `now`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::capacity::{self, ADDRESSES_PER_PREFIX};
use super::config::{Config, Targets};
use super::plan::Action;
use super::tally::AddrState;
use super::types::{EniSnapshot, InstanceTypeLimits, Mode, Timestamp};
use super::uid::PodUid;

/// How an address was carved out of the ENI; decides the annotation's prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKind {
    /// A secondary private IP: annotated with the subnet's prefix length (`10.0.37.15/19`).
    Secondary,
    /// An address inside a delegated /28: annotated `/32`.
    Prefix,
}

impl AddressKind {
    /// The annotation value for `addr` (SPEC 2): `<ip>/<subnet length>` or `<ip>/32`.
    pub fn annotation(self, addr: Ipv4Addr, subnet_prefix_len: u8) -> String {
        match self {
            AddressKind::Secondary => format!("{addr}/{subnet_prefix_len}"),
            AddressKind::Prefix => format!("{addr}/32"),
        }
    }
}

/// An address given to a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub addr: Ipv4Addr,
    pub kind: AddressKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignOutcome {
    /// A free address, now held by the pod.
    Assigned(Assignment),
    /// The pod already held this address (assign is idempotent per UID).
    Existing(Assignment),
    /// Nothing free: the pod waits (count it in [`NodePool::set_waiting`]).
    Exhausted,
}

/// Result of recording an address that an existing annotation names (restart rebuild).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdoptOutcome {
    Ok,
    /// Not on the ENI: a Warning Event; the address is recorded as held, so it is never handed
    /// out even if it appears on the ENI later.
    NotOnEni,
    /// Other live pods name the same address: Events for all; it stays blocked until every one
    /// of them is gone.
    Duplicate(Vec<PodUid>),
}

/// How long an address the previous leader listed as used, and no pod in our cache holds, is
/// kept from reuse at least (see [`NodePool::cool_released_while_away`]): a bound on how far a
/// pod cache may lag at a failover, as [`super::pool_ec2::DESCRIBE_GRACE`] bounds EC2's.
pub const ORPHAN_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

/// One ENI slot: a secondary IP or a /28 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Slot {
    Ip(Ipv4Addr),
    Prefix(Ipv4Net),
}

/// The pool of one node. See the module docs of `ipam` for the rules it follows.
#[derive(Debug, Clone)]
pub struct NodePool {
    pub(crate) limits: InstanceTypeLimits,
    pub(crate) config: Config,
    pub(crate) primary_ip: Ipv4Addr,
    /// Secondary IPs confirmed on the ENI (by a successful assign or a describe).
    pub(crate) ips: BTreeSet<Ipv4Addr>,
    /// /28 prefixes confirmed on the ENI.
    pub(crate) prefixes: BTreeSet<Ipv4Net>,
    pub(crate) by_uid: BTreeMap<PodUid, Ipv4Addr>,
    /// How many pods name each address in `by_uid` (more than one: duplicate annotations).
    /// A count, not the UIDs: every address in use is here, and the UIDs of an address are
    /// only asked for when it has duplicates (a scan of `by_uid`, which is small per node).
    pub(crate) holders: BTreeMap<Ipv4Addr, u32>,
    /// Addresses in use per /28-aligned block (keyed by its first address), kept with
    /// `holders`: a /28's tally, asked several times per pass, reads its count here instead of
    /// walking every address in use.
    pub(crate) used_per_block: BTreeMap<Ipv4Addr, u32>,
    /// Addresses more than one pod names, kept with `holders` (a gauge set on every pass).
    pub(crate) shared: usize,
    /// Cool-down end per released address; an address is cooling while its end is in the future.
    pub(crate) cooling: BTreeMap<Ipv4Addr, Timestamp>,
    /// Slots we added or removed ourselves, and when: a describe younger than the change may not
    /// show it yet (EC2 describes are eventually consistent).
    pub(crate) recent: BTreeMap<Slot, Timestamp>,
    /// Addresses whose last holder let go since the controller last wrote the node's status
    /// ([`NodePool::mark_published`]): that status may list one as used, but for the pod before,
    /// so it does not vouch for a pod that holds it now.
    pub(crate) let_go_since_published: BTreeSet<Ipv4Addr>,
    /// Addresses the previous leader's status listed as used that no pod was seen holding at
    /// the rebuild, while they cool down: a pod our cache showed without its annotation may
    /// hold one (see [`NodePool::possible_holder_left`]).
    pub(crate) orphans: BTreeSet<Ipv4Addr>,
    /// Addresses another IPAM left on the ENI when it let go, held until a describe confirms
    /// them (`handover.rs`).
    pub(crate) handover: super::handover::Handover,
    pub(crate) in_flight: Option<(Action, Timestamp)>,
    pub(crate) needs_describe: bool,
    pub(crate) waiting: u32,
    /// Consecutive throttled/failed calls, for the exponential backoff.
    pub(crate) failures: u32,
    /// Spreads this node's backoff delays from other nodes' ([`super::pool_ec2::backoff_delay`]).
    pub(crate) jitter_seed: u64,
    pub(crate) backoff_until: Option<Timestamp>,
    /// After `InsufficientCidrBlocks`: no new /28 before this (or /32 fallback if configured).
    pub(crate) no_prefix_until: Option<Timestamp>,
    /// After `InsufficientFreeAddressesInSubnet`: no assign of any kind before this.
    pub(crate) no_assign_until: Option<Timestamp>,
    pub(crate) gone: bool,
    /// The node is on its way out (cordoned, draining, being deleted): no targets apply
    /// ([`Config::node_targets`]).
    pub(crate) leaving: bool,
}

impl NodePool {
    /// A pool for a node whose instance type has `limits`, starting from what a describe of its
    /// primary ENI returned.
    pub fn new(limits: InstanceTypeLimits, config: Config, eni: &EniSnapshot) -> Self {
        NodePool {
            limits,
            config,
            primary_ip: eni.primary_ip,
            ips: eni
                .secondary_ips
                .iter()
                .copied()
                .filter(|ip| *ip != eni.primary_ip)
                .collect(),
            prefixes: eni.prefixes.iter().filter_map(|p| as_prefix(*p)).collect(),
            by_uid: BTreeMap::new(),
            holders: BTreeMap::new(),
            used_per_block: BTreeMap::new(),
            shared: 0,
            cooling: BTreeMap::new(),
            recent: BTreeMap::new(),
            let_go_since_published: BTreeSet::new(),
            orphans: BTreeSet::new(),
            handover: Default::default(),
            in_flight: None,
            needs_describe: false,
            waiting: 0,
            failures: 0,
            jitter_seed: super::pool_ec2::jitter_seed(&eni.eni_id),
            backoff_until: None,
            no_prefix_until: None,
            no_assign_until: None,
            gone: false,
            leaving: false,
        }
    }

    // ----- configuration and mode -----

    /// The mode this node runs in (prefix only on Nitro).
    pub fn mode(&self) -> Mode {
        capacity::effective_mode(&self.limits, self.config.requested_mode())
    }

    /// Prefix delegation is asked for but the node is not Nitro (Warning Event).
    pub fn mode_downgraded(&self) -> bool {
        self.mode() != self.config.requested_mode()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn limits(&self) -> &InstanceTypeLimits {
        &self.limits
    }

    /// New configuration. A mode switch needs nothing more: the plan releases the old mode's
    /// free addresses, its used ones drain as their pods go.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// New limits (EC2 answered after the table was used).
    pub fn set_limits(&mut self, limits: InstanceTypeLimits) {
        self.limits = limits;
    }

    /// Pods bound to the node that have no address yet: the surge term of the plan.
    pub fn set_waiting(&mut self, pods: u32) {
        self.waiting = pods;
    }

    pub fn waiting(&self) -> u32 {
        self.waiting
    }

    /// Prefix mode is handing out /32 secondary IPs because the subnet has no free /28.
    pub fn fallback_active(&self, now: Timestamp) -> bool {
        self.mode() == Mode::Prefix
            && self.config.prefix_fallback_to_secondary
            && self.no_prefix_until.is_some_and(|t| t > now)
    }

    /// The node is on its way out (or back): while it is, the plan keeps only what its pods
    /// use and wait for, and releases the rest as it stops cooling.
    pub fn set_leaving(&mut self, leaving: bool) {
        self.leaving = leaving;
    }

    pub fn leaving(&self) -> bool {
        self.leaving
    }

    /// Targets for this node, capped by its capacity now; none while it is leaving.
    pub fn targets(&self, now: Timestamp) -> Targets {
        (self.config).node_targets(self.mode(), self.capacity(now), self.leaving)
    }

    // ----- pods -----

    /// Gives `uid` an address: the same one again if it has one; in prefix mode one from the
    /// /28 with the fewest free addresses (packing, so whole /28s can be released). Never an
    /// address in use, cooling, being released or not confirmed on the ENI.
    pub fn assign(&mut self, uid: &PodUid, now: Timestamp) -> AssignOutcome {
        if let Some(&addr) = self.by_uid.get(uid) {
            return AssignOutcome::Existing(Assignment {
                addr,
                kind: self.kind_of(addr),
            });
        }
        if self.gone {
            return AssignOutcome::Exhausted;
        }
        let picked = match self.mode() {
            Mode::Prefix => self.pick_in_prefixes(now).or_else(|| {
                self.fallback_active(now)
                    .then(|| self.pick_secondary(now))
                    .flatten()
            }),
            Mode::Secondary => self.pick_secondary(now),
        };
        match picked {
            Some(assignment) => {
                self.hold(uid.clone(), assignment.addr);
                AssignOutcome::Assigned(assignment)
            }
            None => AssignOutcome::Exhausted,
        }
    }

    fn pick_secondary(&self, now: Timestamp) -> Option<Assignment> {
        self.ips
            .iter()
            .copied()
            .find(|&ip| self.addr_state(ip, now) == AddrState::Free)
            .map(|addr| Assignment {
                addr,
                kind: AddressKind::Secondary,
            })
    }

    fn pick_in_prefixes(&self, now: Timestamp) -> Option<Assignment> {
        // Counting first (one walk over the /28s) and looking at addresses only in the one /28
        // chosen: this runs for every waiting pod on every pass.
        let (_, net) = self
            .prefix_tallies(now)
            .filter(|(_, t)| t.free > 0)
            .map(|(net, t)| (t.free, net))
            .min()?;
        prefix_addrs(net)
            .find(|&a| self.addr_state(a, now) == AddrState::Free)
            .map(|addr| Assignment {
                addr,
                kind: AddressKind::Prefix,
            })
    }

    /// Records that an existing annotation gives `addr` to `uid` (restart rebuild). The
    /// annotation is the truth: if `uid` held another address, that one is released.
    pub fn adopt(&mut self, uid: &PodUid, addr: Ipv4Addr, now: Timestamp) -> AdoptOutcome {
        match self.by_uid.get(uid) {
            Some(&held) if held == addr => {}
            Some(_) => {
                self.release(uid, now);
                self.hold(uid.clone(), addr);
            }
            None => self.hold(uid.clone(), addr),
        }
        let others: Vec<PodUid> = if self.holders.get(&addr).is_some_and(|n| *n > 1) {
            self.holders_of(addr)
                .into_iter()
                .filter(|u| u != uid)
                .collect()
        } else {
            Vec::new()
        };
        if !others.is_empty() {
            AdoptOutcome::Duplicate(others)
        } else if !self.on_eni(addr) {
            AdoptOutcome::NotOnEni
        } else {
            AdoptOutcome::Ok
        }
    }

    /// The pod is gone (or terminal): its address cools down until `now + cooldown`, once no
    /// other pod names it. Returns the address the pod held.
    pub fn release(&mut self, uid: &PodUid, now: Timestamp) -> Option<Ipv4Addr> {
        let addr = self.unhold(uid)?;
        if !self.holders.contains_key(&addr) {
            self.restore_cooldown(addr, now.plus(self.config.cooldown));
        }
        Some(addr)
    }

    /// Releases (to cool-down) the address of every holder `live` says is gone: a pod deleted
    /// while releases were paused (foreign IPAM) is otherwise never given back (SPEC 6.4:
    /// addresses held by pods that no longer exist are freed). Returns how many.
    pub fn release_gone(&mut self, live: impl Fn(&PodUid) -> bool, now: Timestamp) -> usize {
        let gone: Vec<PodUid> = self.by_uid.keys().filter(|u| !live(u)).cloned().collect();
        for uid in &gone {
            self.release(uid, now);
        }
        gone.len()
    }

    /// Takes back an address whose annotation was certainly never written (the patch was
    /// refused): no pod can have seen it, so it is free again at once.
    pub fn cancel(&mut self, uid: &PodUid) -> Option<Ipv4Addr> {
        self.unhold(uid)
    }

    /// A cool-down record read back after a restart. Never shortens a cool-down.
    pub fn restore_cooldown(&mut self, addr: Ipv4Addr, until: Timestamp) {
        let entry = self.cooling.entry(addr).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// After a restart or failover: `used` were held by pods when the previous leader last wrote
    /// the status. Those on the ENI that no pod holds as far as our cache shows either lost
    /// their pod while no controller watched, at a time nobody knows, or belong to a live pod
    /// whose annotation has not reached our cache yet (a watch that lagged or relisted at the
    /// failover). They cool down from `now`, for at least [`ORPHAN_HOLD`] whatever the
    /// configured cool-down (even 0 s): long enough for the cache to catch up, or for an
    /// annotation write to such a pod to find its address (the write never overwrites, and
    /// the address is then adopted). Call it after every annotation was adopted. Returns how
    /// many.
    pub fn cool_released_while_away(&mut self, used: &[Ipv4Addr], now: Timestamp) -> usize {
        let orphans: Vec<Ipv4Addr> = used
            .iter()
            .copied()
            .filter(|a| !self.holders.contains_key(a) && self.on_eni(*a))
            .collect();
        for addr in &orphans {
            self.restore_cooldown(*addr, now.plus(self.config.cooldown.max(ORPHAN_HOLD)));
        }
        self.orphans.extend(orphans.iter().copied());
        orphans.len()
    }

    /// A pod we never saw with an address went away. If our pod cache lagged at the rebuild
    /// (events lost across a relist), it may have been the holder of an address the previous
    /// leader annotated: its cool-down starts again now, so it is never shortened (SPEC 5.3).
    /// Orphans taken up by a pod or done cooling are forgotten.
    pub fn possible_holder_left(&mut self, now: Timestamp) {
        let mut orphans = std::mem::take(&mut self.orphans);
        orphans.retain(|a| {
            !self.holders.contains_key(a) && self.cooling.get(a).is_some_and(|u| *u > now)
        });
        for addr in &orphans {
            self.restore_cooldown(*addr, now.plus(self.config.cooldown));
        }
        self.orphans = orphans;
    }

    /// Forgets expired cool-downs and describe-grace records (bookkeeping only: every decision
    /// already compares with `now`).
    pub fn advance(&mut self, now: Timestamp) {
        self.handover_advance(now);
        self.cooling.retain(|_, until| *until > now);
        if !self.orphans.is_empty() {
            let cooling = &self.cooling;
            self.orphans.retain(|a| cooling.contains_key(a));
        }
        self.recent
            .retain(|_, at| now.since(*at) < super::pool_ec2::DESCRIBE_GRACE);
    }

    pub(crate) fn hold(&mut self, uid: PodUid, addr: Ipv4Addr) {
        if let Some(previous) = self.by_uid.insert(uid, addr) {
            self.drop_holder(previous);
        }
        let n = self.holders.entry(addr).or_insert(0);
        *n += 1;
        match *n {
            1 => *self.used_per_block.entry(block_of(addr)).or_default() += 1,
            2 => self.shared += 1,
            _ => {}
        }
    }

    fn unhold(&mut self, uid: &PodUid) -> Option<Ipv4Addr> {
        let addr = self.by_uid.remove(uid)?;
        self.drop_holder(addr);
        Some(addr)
    }

    fn drop_holder(&mut self, addr: Ipv4Addr) {
        let Some(n) = self.holders.get_mut(&addr) else {
            return;
        };
        *n = n.saturating_sub(1);
        match *n {
            1 => self.shared = self.shared.saturating_sub(1),
            0 => {
                self.holders.remove(&addr);
                self.let_go_since_published.insert(addr);
                let block = block_of(addr);
                if let Some(count) = self.used_per_block.get_mut(&block) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.used_per_block.remove(&block);
                    }
                }
            }
            _ => {}
        }
    }

    /// A status was written from this pool as it is now.
    pub fn mark_published(&mut self) {
        self.let_go_since_published.clear();
    }

    /// `addr` has not changed hands since the last status written from this pool: if that
    /// status lists it as used, it lists it for the pod holding it now.
    pub fn same_holder_since_published(&self, addr: Ipv4Addr) -> bool {
        !self.let_go_since_published.contains(&addr)
    }

    /// Some address let go since the last status was written is held again: a status must be
    /// written before that pod's annotation.
    pub fn changed_hands_since_published(&self) -> bool {
        (self.let_go_since_published.iter()).any(|a| self.holders.contains_key(a))
    }

    // ----- queries -----

    pub fn address_of(&self, uid: &PodUid) -> Option<Ipv4Addr> {
        self.by_uid.get(uid).copied()
    }

    /// UIDs whose annotation names `addr` (more than one: a duplicate).
    pub fn holders_of(&self, addr: Ipv4Addr) -> Vec<PodUid> {
        if !self.holders.contains_key(&addr) {
            return Vec::new();
        }
        self.by_uid
            .iter()
            .filter(|(_, a)| **a == addr)
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// Addresses pods hold (their annotations name them), in address order: written to the
    /// NodeAddressPool status for [`NodePool::cool_released_while_away`].
    pub fn used_addresses(&self) -> Vec<Ipv4Addr> {
        self.holders.keys().copied().collect()
    }

    /// Addresses pods hold, in address order, without copying them.
    pub fn used_iter(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.holders.keys().copied()
    }

    /// How many addresses more than one live pod names (a gauge, set on every pass).
    pub fn duplicate_count(&self) -> usize {
        self.shared
    }

    /// Addresses named by more than one live pod.
    pub fn duplicates(&self) -> Vec<Ipv4Addr> {
        self.holders
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(a, _)| *a)
            .collect()
    }

    pub fn secondary_ips(&self) -> Vec<Ipv4Addr> {
        self.ips.iter().copied().collect()
    }

    pub fn prefixes(&self) -> Vec<Ipv4Net> {
        self.prefixes.iter().copied().collect()
    }

    /// Cool-down records still running, for the NodeAddressPool status.
    pub fn cooldowns(&self, now: Timestamp) -> Vec<(Ipv4Addr, Timestamp)> {
        self.cooldowns_iter(now).collect()
    }

    /// [`NodePool::cooldowns`] without copying them.
    pub fn cooldowns_iter(
        &self,
        now: Timestamp,
    ) -> impl Iterator<Item = (Ipv4Addr, Timestamp)> + '_ {
        self.cooling
            .iter()
            .filter(move |(_, until)| **until > now)
            .map(|(a, u)| (*a, *u))
    }

    /// /28 prefixes on the ENI, in address order, without copying them.
    pub fn prefixes_iter(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.prefixes.iter().copied()
    }

    /// The address is on the ENI as we know it (a secondary IP or inside a /28).
    pub fn on_eni(&self, addr: Ipv4Addr) -> bool {
        self.ips.contains(&addr) || self.prefix_of(addr).is_some()
    }

    pub(crate) fn prefix_of(&self, addr: Ipv4Addr) -> Option<Ipv4Net> {
        let net = Ipv4Net::new(addr, 28).ok()?.trunc();
        self.prefixes.contains(&net).then_some(net)
    }

    pub(crate) fn kind_of(&self, addr: Ipv4Addr) -> AddressKind {
        if self.prefix_of(addr).is_some() {
            AddressKind::Prefix
        } else {
            AddressKind::Secondary
        }
    }
}

/// The first address of the /28-aligned block holding `addr`.
pub(crate) fn block_of(addr: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & !(ADDRESSES_PER_PREFIX - 1))
}

/// All 16 addresses of a /28 (network and broadcast included: EC2 routes all of them).
pub(crate) fn prefix_addrs(net: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let first = u32::from(net.network());
    (0..ADDRESSES_PER_PREFIX).map(move |i| Ipv4Addr::from(first.wrapping_add(i)))
}

/// A /28 as EC2 gives it, or `None` for anything that is not one.
pub(crate) fn as_prefix(net: Ipv4Net) -> Option<Ipv4Net> {
    (net.prefix_len() == 28).then(|| net.trunc())
}
