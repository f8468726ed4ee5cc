//! The next EC2 call for a node (SPEC 5.2, 5.4, 7): deficit and surplus against the targets,
//! mode-switch leftovers, at most one call in flight, backoffs respected.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::capacity::ADDRESSES_PER_PREFIX;
use super::config::Targets;
use super::pool::NodePool;
use super::tally::AddrState;
use super::types::{Mode, Timestamp};

/// One EC2 call on the node's primary ENI, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    /// Describe the ENI (our view may be stale).
    Describe,
    /// `AssignPrivateIpAddresses` with `SecondaryPrivateIpAddressCount`.
    AssignIps(u32),
    /// `AssignPrivateIpAddresses` with `Ipv4PrefixCount`.
    AssignPrefixes(u32),
    /// `UnassignPrivateIpAddresses` with `PrivateIpAddresses`.
    ReleaseIps(Vec<Ipv4Addr>),
    /// `UnassignPrivateIpAddresses` with `Ipv4Prefixes`.
    ReleasePrefixes(Vec<Ipv4Net>),
}

/// Secondary-IP arithmetic of SPEC 5.2. `free` includes addresses being assigned; cooling
/// addresses count in `total` but never in `free`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpMaths {
    pub used: u32,
    pub free: u32,
    pub cooling: u32,
    pub waiting: u32,
    pub warm: u32,
    pub minimum: u32,
}

impl IpMaths {
    pub fn total(&self) -> u32 {
        self.used
            .saturating_add(self.free)
            .saturating_add(self.cooling)
    }

    /// max(waiting + warm - free, minimum - total, 0); the caller caps it by capacity.
    pub fn short(&self) -> u32 {
        self.waiting
            .saturating_add(self.warm)
            .saturating_sub(self.free)
            .max(self.minimum.saturating_sub(self.total()))
    }

    /// max(min(free - waiting - warm, total - minimum), 0).
    pub fn over(&self) -> u32 {
        let above_warm = i64::from(self.free) - i64::from(self.waiting) - i64::from(self.warm);
        let above_min = i64::from(self.total()) - i64::from(self.minimum);
        u32::try_from(above_warm.min(above_min).max(0)).unwrap_or(0)
    }
}

/// /28s needed in prefix mode with warm-ip/minimum-ip targets:
/// max(ceil((used + cooling + waiting + warm) / 16), ceil(minimum / 16)).
pub fn prefixes_needed(used: u32, cooling: u32, waiting: u32, warm: u32, minimum: u32) -> u32 {
    used.saturating_add(cooling)
        .saturating_add(waiting)
        .saturating_add(warm)
        .div_ceil(ADDRESSES_PER_PREFIX)
        .max(minimum.div_ceil(ADDRESSES_PER_PREFIX))
}

/// Whole free /28s needed with warm-prefix alone: the target, plus what the waiting pods take
/// beyond the free addresses of partly used /28s.
pub fn free_prefixes_needed(warm_prefixes: u32, waiting: u32, free_in_partial: u32) -> u32 {
    warm_prefixes.saturating_add(
        waiting
            .saturating_sub(free_in_partial)
            .div_ceil(ADDRESSES_PER_PREFIX),
    )
}

impl NodePool {
    /// The single next EC2 call. `Action::None` while a call is in flight, while backing off,
    /// or when the pool is where the targets want it.
    pub fn plan(&self, now: Timestamp) -> Action {
        if self.gone || self.in_flight.is_some() || self.backoff_until(now).is_some() {
            return Action::None;
        }
        if self.needs_describe {
            return Action::Describe;
        }
        match self.mode() {
            Mode::Secondary => self.plan_secondary(now),
            Mode::Prefix if self.fallback_active(now) => self.plan_fallback(now),
            Mode::Prefix => self.plan_prefix(now),
        }
    }

    /// Earliest time at which the plan may change by itself (a cool-down ends, a backoff or a
    /// hold expires), so the controller can requeue the node.
    pub fn next_wakeup(&self, now: Timestamp) -> Option<Timestamp> {
        self.cooling
            .values()
            .copied()
            .chain(self.backoff_until)
            .chain(self.no_prefix_until)
            .chain(self.no_assign_until)
            .filter(|t| *t > now)
            .min()
    }

    fn assign_allowed(&self, now: Timestamp) -> bool {
        self.no_assign_until.is_none_or(|t| t <= now)
    }

    fn ip_targets(&self, now: Timestamp) -> (u32, u32) {
        match self.targets(now) {
            Targets::Ips { warm, minimum } => (warm, minimum),
            // Warm-prefix drives /28s only; as addresses it asks for nothing beyond waiting pods.
            Targets::Prefixes { .. } => (0, 0),
        }
    }

    fn plan_secondary(&self, now: Timestamp) -> Action {
        let t = self.tally_ips(now);
        let (warm, minimum) = self.ip_targets(now);
        let maths = IpMaths {
            used: t.used,
            free: t.free + self.pending(),
            cooling: t.cooling,
            waiting: self.waiting,
            warm,
            minimum,
        };
        let room = self
            .capacity(now)
            .saturating_sub(maths.total())
            .min(self.free_slots());
        let short = maths.short().min(room);
        if short > 0 && self.assign_allowed(now) {
            return Action::AssignIps(short);
        }
        let leftovers = self.idle_prefixes(now);
        if !leftovers.is_empty() {
            return Action::ReleasePrefixes(leftovers);
        }
        let over = maths.over() as usize;
        if over > 0 {
            return Action::ReleaseIps(self.free_ips(now).into_iter().rev().take(over).collect());
        }
        Action::None
    }

    fn plan_prefix(&self, now: Timestamp) -> Action {
        let held = u32::try_from(self.prefixes.len()).unwrap_or(u32::MAX);
        let mut used = 0;
        let mut cooling = 0;
        let mut partial = 0;
        let mut free_in_partial = 0;
        for (_, t) in self.prefix_tallies(now) {
            used += t.used;
            cooling += t.cooling;
            if t.busy() {
                partial += 1;
                free_in_partial += t.free;
            }
        }
        let pending = self.pending() / ADDRESSES_PER_PREFIX;
        let (short, over) = match self.targets(now) {
            Targets::Ips { warm, minimum } => {
                let needed = prefixes_needed(used, cooling, self.waiting, warm, minimum);
                let have = held + pending;
                (needed.saturating_sub(have), have.saturating_sub(needed))
            }
            Targets::Prefixes { warm_prefixes } => {
                let needed = free_prefixes_needed(warm_prefixes, self.waiting, free_in_partial);
                let fully_free = held - partial + pending;
                (
                    needed.saturating_sub(fully_free),
                    fully_free.saturating_sub(needed),
                )
            }
        };
        let max_prefixes = self.capacity(now) / ADDRESSES_PER_PREFIX;
        let room = max_prefixes
            .saturating_sub(held + pending)
            .min(self.free_slots());
        let short = short.min(room);
        let prefix_allowed = self.no_prefix_until.is_none_or(|t| t <= now);
        if short > 0 && prefix_allowed && self.assign_allowed(now) {
            return Action::AssignPrefixes(short);
        }
        let leftovers = self.free_ips(now);
        if !leftovers.is_empty() {
            return Action::ReleaseIps(leftovers);
        }
        if over > 0 {
            let idle = self.idle_prefixes(now);
            return match idle
                .into_iter()
                .rev()
                .take(over as usize)
                .collect::<Vec<_>>()
            {
                nets if nets.is_empty() => Action::None,
                nets => Action::ReleasePrefixes(nets),
            };
        }
        Action::None
    }

    /// Prefix mode while the subnet has no free /28 and fallback is on: grow with secondary IPs
    /// by the address arithmetic, over /28 and secondary addresses together. Nothing is released
    /// meanwhile: the hold is short, and afterwards the free secondary IPs are leftovers.
    fn plan_fallback(&self, now: Timestamp) -> Action {
        let mut t = self.tally_ips(now);
        for (_, p) in self.prefix_tallies(now) {
            t.used += p.used;
            t.cooling += p.cooling;
            t.free += p.free;
        }
        let (warm, minimum) = self.ip_targets(now);
        let maths = IpMaths {
            used: t.used,
            free: t.free + self.pending(),
            cooling: t.cooling,
            waiting: self.waiting,
            warm,
            minimum,
        };
        let short = maths.short().min(self.free_slots());
        if short > 0 && self.assign_allowed(now) {
            return Action::AssignIps(short);
        }
        Action::None
    }

    /// Secondary IPs no pod uses and none cools down, in address order.
    fn free_ips(&self, now: Timestamp) -> Vec<Ipv4Addr> {
        self.ips
            .iter()
            .copied()
            .filter(|&ip| self.addr_state(ip, now) == AddrState::Free)
            .collect()
    }

    /// /28s without a used or cooling address, in address order.
    fn idle_prefixes(&self, now: Timestamp) -> Vec<Ipv4Net> {
        self.prefix_tallies(now)
            .filter(|(_, t)| !t.busy())
            .map(|(net, _)| net)
            .collect()
    }
}
