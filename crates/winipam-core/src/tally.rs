//! Counting a pool's addresses by state (used, cooling, being released, free): for the plan,
//! the capacity, the packing of /28s, the status and the metrics. Asked several times per
//! reconcile pass of every node, so the /28s are tallied in one walk over the sorted used and
//! cooling addresses.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::capacity::{self, ADDRESSES_PER_PREFIX};
use super::plan::Action;
use super::pool::{NodePool, prefix_addrs};
use super::types::{Mode, Timestamp};

/// Address counts for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolCounts {
    /// Addresses on the ENI held by pods (both modes, during a switch).
    pub used: u32,
    /// Addresses of the current mode a new pod can get now.
    pub free: u32,
    /// Addresses on the ENI waiting for their cool-down to end.
    pub cooling: u32,
    /// Addresses being assigned by the EC2 call in flight.
    pub pending: u32,
}

/// State of one ENI address at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrState {
    Used,
    Cooling,
    /// Part of the release call in flight: never handed out.
    Releasing,
    Free,
}

/// Tally of a set of addresses by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tally {
    pub used: u32,
    pub cooling: u32,
    pub releasing: u32,
    pub free: u32,
}

impl Tally {
    pub fn add(&mut self, state: AddrState) {
        match state {
            AddrState::Used => self.used += 1,
            AddrState::Cooling => self.cooling += 1,
            AddrState::Releasing => self.releasing += 1,
            AddrState::Free => self.free += 1,
        }
    }
    /// Held by a pod or cooling: the slot cannot be given back to EC2.
    pub fn busy(&self) -> bool {
        self.used + self.cooling > 0
    }
}

impl NodePool {
    pub(crate) fn addr_state(&self, addr: Ipv4Addr, now: Timestamp) -> AddrState {
        if self.holders.contains_key(&addr) {
            AddrState::Used
        } else if self.cooling.get(&addr).is_some_and(|until| *until > now) {
            AddrState::Cooling
        } else if self.releasing(addr) {
            AddrState::Releasing
        } else {
            AddrState::Free
        }
    }

    pub(crate) fn releasing(&self, addr: Ipv4Addr) -> bool {
        match &self.in_flight {
            Some((Action::ReleaseIps(ips), _)) => ips.contains(&addr),
            Some((Action::ReleasePrefixes(nets), _)) => nets.iter().any(|n| n.contains(&addr)),
            _ => false,
        }
    }

    pub(crate) fn tally_ips(&self, now: Timestamp) -> Tally {
        let mut t = Tally::default();
        for &ip in &self.ips {
            t.add(self.addr_state(ip, now));
        }
        t
    }

    /// The tally of every /28, in address order. Asked several times per pass (counts, plan,
    /// capacity, packing), so it reads the used count of each /28 from the pool's per-block
    /// counts and walks the few cooling addresses once alongside the sorted /28s, rather than
    /// looking up all 16 addresses of each.
    pub(crate) fn prefix_tallies(
        &self,
        now: Timestamp,
    ) -> impl Iterator<Item = (Ipv4Net, Tally)> + '_ {
        let mut cooling = self
            .cooling
            .iter()
            .filter(move |(addr, until)| **until > now && !self.holders.contains_key(addr))
            .map(|(addr, _)| *addr)
            .peekable();
        self.prefixes.iter().map(move |&net| {
            let (first, last) = (net.network(), net.broadcast());
            let cooling = count_within(&mut cooling, first, last);
            if self.release_overlaps(net) {
                // Rare (only while an Unassign is in flight): address by address.
                return (net, self.tally_prefix(net, now));
            }
            let used = self.used_per_block.get(&first).copied().unwrap_or(0);
            let tally = Tally {
                used,
                cooling,
                releasing: 0,
                free: ADDRESSES_PER_PREFIX.saturating_sub(used + cooling),
            };
            (net, tally)
        })
    }

    /// The states of a /28's 16 addresses, looked at one by one: the definition
    /// [`NodePool::prefix_tallies`] agrees with.
    pub(crate) fn tally_prefix(&self, net: Ipv4Net, now: Timestamp) -> Tally {
        let mut t = Tally::default();
        for a in prefix_addrs(net) {
            t.add(self.addr_state(a, now));
        }
        t
    }

    /// The release call in flight may cover addresses of `net`.
    fn release_overlaps(&self, net: Ipv4Net) -> bool {
        match &self.in_flight {
            Some((Action::ReleaseIps(ips), _)) => ips.iter().any(|a| net.contains(a)),
            Some((Action::ReleasePrefixes(nets), _)) => nets
                .iter()
                .any(|n| n.contains(&net.network()) || net.contains(&n.network())),
            _ => false,
        }
    }

    /// Addresses the call in flight is adding.
    pub(crate) fn pending(&self) -> u32 {
        match &self.in_flight {
            Some((Action::AssignIps(n), _)) => *n,
            Some((Action::AssignPrefixes(k), _)) => k.saturating_mul(ADDRESSES_PER_PREFIX),
            _ => 0,
        }
    }

    pub fn counts(&self, now: Timestamp) -> PoolCounts {
        let ips = self.tally_ips(now);
        let mut pfx = Tally::default();
        for (_, t) in self.prefix_tallies(now) {
            pfx.used += t.used;
            pfx.cooling += t.cooling;
            pfx.free += t.free;
        }
        let free = match self.mode() {
            Mode::Secondary => ips.free,
            Mode::Prefix if self.fallback_active(now) => pfx.free + ips.free,
            Mode::Prefix => pfx.free,
        };
        PoolCounts {
            used: ips.used + pfx.used,
            free,
            cooling: ips.cooling + pfx.cooling,
            pending: self.pending(),
        }
    }

    /// Pod capacity now (SPEC 4), mode-switch aware: slots still held by the other mode's used
    /// or cooling addresses are not available.
    pub fn capacity(&self, now: Timestamp) -> u32 {
        let mode = self.mode();
        let other_held = match mode {
            Mode::Secondary => self.prefix_tallies(now).filter(|(_, t)| t.busy()).count(),
            Mode::Prefix => self
                .ips
                .iter()
                .filter(|&&ip| {
                    matches!(
                        self.addr_state(ip, now),
                        AddrState::Used | AddrState::Cooling
                    )
                })
                .count(),
        };
        capacity::switch_capacity(
            capacity::pod_slots(&self.limits),
            mode,
            u32::try_from(other_held).unwrap_or(u32::MAX),
        )
    }

    /// ENI slots not taken by any secondary IP or /28 (as we know the ENI).
    pub(crate) fn free_slots(&self) -> u32 {
        let taken = self.ips.len() + self.prefixes.len();
        capacity::pod_slots(&self.limits).saturating_sub(u32::try_from(taken).unwrap_or(u32::MAX))
    }
}

/// How many of the next addresses of a sorted iterator fall in `first..=last`, skipping those
/// before `first` (the walk of [`NodePool::prefix_tallies`]).
fn count_within(
    addrs: &mut std::iter::Peekable<impl Iterator<Item = Ipv4Addr>>,
    first: Ipv4Addr,
    last: Ipv4Addr,
) -> u32 {
    while addrs.next_if(|a| *a < first).is_some() {}
    let mut n = 0;
    while addrs.next_if(|a| *a <= last).is_some() {
        n += 1;
    }
    n
}
