//! Addresses a pool may hand out next, for the write-ahead record: the controller lists them in
//! the node's status before pods arrive ("ahead"), so a pod that finds one needs no status
//! write of its own, only its annotation. A new leader treats a listed address as possibly in
//! use (it cools down from the leader's start unless a live pod's annotation names it).

use std::net::Ipv4Addr;

use super::capacity::ADDRESSES_PER_PREFIX;
use super::pool::{AddressKind, AssignOutcome, Assignment, NodePool, prefix_addrs};
use super::tally::AddrState;
use super::types::{Mode, Timestamp};
use super::uid::PodUid;

impl NodePool {
    /// `addr` could be handed out now: free, and of a kind this mode hands out.
    pub fn may_hand_out_now(&self, addr: Ipv4Addr, now: Timestamp) -> bool {
        self.addr_state(addr, now) == AddrState::Free && self.kind_handed_out(addr, now).is_some()
    }

    /// Addresses the ENI could still take: its free slots, each one address (secondary mode)
    /// or a /28 (prefix mode). A new leader that holds back `n` listed addresses replaces them
    /// from here (an Assign); beyond it, new pods wait out the hold.
    pub fn room(&self) -> usize {
        let per_slot = match self.mode() {
            Mode::Prefix => ADDRESSES_PER_PREFIX,
            Mode::Secondary => 1,
        };
        self.free_slots().saturating_mul(per_slot) as usize
    }

    /// Some pod's annotation names `addr`.
    pub fn is_held(&self, addr: Ipv4Addr) -> bool {
        self.holders.contains_key(&addr)
    }

    /// The kind `addr` is handed out as in this mode, if it is handed out at all.
    fn kind_handed_out(&self, addr: Ipv4Addr, now: Timestamp) -> Option<AddressKind> {
        let secondary = self.ips.contains(&addr);
        match self.mode() {
            Mode::Prefix if self.prefix_of(addr).is_some() => Some(AddressKind::Prefix),
            Mode::Prefix if secondary && self.fallback_active(now) => Some(AddressKind::Secondary),
            Mode::Secondary if secondary => Some(AddressKind::Secondary),
            _ => None,
        }
    }

    /// Up to `n` addresses to list ahead, none of `listed` (sorted): free ones in the order
    /// [`NodePool::assign`] takes them (prefix mode: the /28 with the fewest free first), but
    /// the last `reserve` free ones not listed (a new leader hands those out at once). Cooling
    /// ones are [`NodePool::cooling_candidates`].
    pub fn ahead_candidates(
        &self,
        n: usize,
        listed: &[Ipv4Addr],
        reserve: usize,
        now: Timestamp,
    ) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        if n == 0 || self.gone {
            return out;
        }
        let wanted = |a: Ipv4Addr| listed.binary_search(&a).is_err();
        let free = |a: &Ipv4Addr| self.addr_state(*a, now) == AddrState::Free;
        if self.mode() == Mode::Prefix {
            let mut nets: Vec<_> = (self.prefix_tallies(now))
                .filter(|(_, t)| t.free > 0)
                .map(|(net, t)| (t.free, net))
                .collect();
            nets.sort_unstable();
            for (_, net) in nets {
                out.extend(prefix_addrs(net).filter(free).filter(|a| wanted(*a)));
                if out.len() >= n + reserve {
                    break;
                }
            }
        }
        if self.mode() == Mode::Secondary || self.fallback_active(now) {
            out.extend(self.ips.iter().copied().filter(free).filter(|a| wanted(*a)));
        }
        out.truncate(out.len().saturating_sub(reserve).min(n));
        out
    }

    /// Up to `n` cooling addresses to list ahead, none of `listed` (sorted), the soonest free
    /// first; none part of a release in flight, all of a kind this mode hands out. Listed in the
    /// status that records their pod's going, they are handed out with no status write of their
    /// own once their cool-down ends.
    pub fn cooling_candidates(
        &self,
        n: usize,
        listed: &[Ipv4Addr],
        now: Timestamp,
    ) -> Vec<Ipv4Addr> {
        if n == 0 || self.gone {
            return Vec::new();
        }
        let mut cooling: Vec<(Timestamp, Ipv4Addr)> = (self.cooling.iter())
            .filter(|(a, _)| listed.binary_search(a).is_err())
            .filter(|(a, _)| self.addr_state(**a, now) == AddrState::Cooling)
            .filter(|(a, _)| !self.releasing(**a) && self.kind_handed_out(**a, now).is_some())
            .map(|(a, until)| (*until, *a))
            .collect();
        cooling.sort_unstable();
        cooling.into_iter().take(n).map(|(_, a)| a).collect()
    }

    /// As [`NodePool::assign`], taking first a free address of `preferred` (sorted: the
    /// addresses a written status lists ahead, whose annotation needs no status write).
    pub fn assign_preferring(
        &mut self,
        uid: &PodUid,
        preferred: &[Ipv4Addr],
        now: Timestamp,
    ) -> AssignOutcome {
        if self.address_of(uid).is_some() || self.gone {
            return self.assign(uid, now);
        }
        let pick = preferred.iter().copied().find_map(|addr| {
            (self.addr_state(addr, now) == AddrState::Free)
                .then(|| self.kind_handed_out(addr, now))
                .flatten()
                .map(|kind| Assignment { addr, kind })
        });
        match pick {
            Some(assignment) => {
                self.hold(uid.clone(), assignment.addr);
                AssignOutcome::Assigned(assignment)
            }
            None => self.assign(uid, now),
        }
    }
}
