//! Taking a node over from another IPAM (the VPC Resource Controller's Windows IPAM switched
//! off, issue 17).
//!
//! Invariant: no address is handed out that the other controller may still name, take off the
//! ENI, or be giving to one of its own pods. When its IPAM is switched off it keeps its warm
//! addresses on the ENI, and calls it had queued may still run after the switch: an
//! UnassignPrivateIpAddresses of a warm address we would see as free, or an
//! AssignPrivateIpAddresses whose addresses it then writes into its pods' annotations. Neither
//! is visible in the describe we hold at the switch. So at the hand-over every address no pod
//! names cools for the cool-down (at least [`HANDOVER_HOLD`]); addresses that join the ENI
//! during the hold (its late assigns) cool until the hold ends too; and once the hold ends
//! none of them is handed out before a describe begun after the hold says it is still there.
//! Pods meanwhile get addresses winipam assigns itself (cooling addresses count in `total`, not
//! in `free`, so the plan asks EC2 for new ones while capacity allows).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use super::pool::{NodePool, prefix_addrs};
use super::types::Timestamp;

/// The shortest hold after a hand-over, whatever the configured cool-down (even 0 s): a bound
/// on how long the other controller's queued EC2 calls may still run after it let go.
pub const HANDOVER_HOLD: Duration = Duration::from_secs(30);

/// How far an unconfirmed hand-over address's cool-down is pushed on each pass once the hold
/// ended and the confirming describe has not come back yet.
const CONFIRM_STEP: Duration = Duration::from_secs(1);

/// A hand-over in progress: its addresses and when their hold ends.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handover {
    pub(crate) until: Option<Timestamp>,
    pub(crate) addrs: BTreeSet<Ipv4Addr>,
    /// The cool-down ends pushed past the hold while waiting for the confirming describe,
    /// taken back when it comes (unless a release since made the cool-down longer).
    pub(crate) pushed: BTreeMap<Ipv4Addr, Timestamp>,
}

impl NodePool {
    /// The other IPAM let go of this node at `now`: every address on the ENI that no pod names
    /// cools until the hold ends, and a describe is asked for at once (to see what it left).
    /// Returns how many addresses are held.
    pub fn foreign_let_go(&mut self, now: Timestamp) -> usize {
        let until = now.plus(self.config.cooldown.max(HANDOVER_HOLD));
        let addrs: Vec<Ipv4Addr> = self
            .ips
            .iter()
            .copied()
            .chain(self.prefixes.iter().flat_map(|n| prefix_addrs(*n)))
            .filter(|a| !self.holders.contains_key(a))
            .collect();
        for addr in &addrs {
            self.restore_cooldown(*addr, until);
        }
        self.handover.addrs.extend(addrs.iter().copied());
        self.handover.until = Some(self.handover.until.map_or(until, |t| t.max(until)));
        self.needs_describe = true;
        addrs.len()
    }

    /// A hand-over hold is in force (its addresses not yet confirmed by a describe).
    pub fn handing_over(&self) -> bool {
        self.handover.until.is_some()
    }

    /// An address joined the ENI through a describe: during a hand-over it may be the other
    /// controller's late assign, so it cools until the hold ends.
    pub(crate) fn handover_joined(&mut self, addr: Ipv4Addr) {
        if let Some(until) = self.handover.until {
            self.restore_cooldown(addr, until);
            self.handover.addrs.insert(addr);
        }
    }

    /// A describe begun at `began` was applied: once it began after the hold, what it shows
    /// is the truth for the hand-over's addresses, which are then ordinary ones.
    pub(crate) fn handover_described(&mut self, began: Option<Timestamp>) {
        if let (Some(until), Some(began)) = (self.handover.until, began)
            && began >= until
        {
            let done = std::mem::take(&mut self.handover);
            for (addr, end) in done.pushed {
                if self.cooling.get(&addr) == Some(&end) {
                    self.cooling.remove(&addr);
                }
            }
        }
    }

    /// Per pass: once the hold ended, ask for the describe that confirms it and keep its
    /// addresses from being handed out until that describe is applied.
    pub(crate) fn handover_advance(&mut self, now: Timestamp) {
        let Some(until) = self.handover.until else {
            return;
        };
        if until > now {
            return;
        }
        if !matches!(self.in_flight, Some((super::plan::Action::Describe, _))) {
            self.needs_describe = true;
        }
        let next = now.plus(CONFIRM_STEP);
        let addrs: Vec<Ipv4Addr> = self.handover.addrs.iter().copied().collect();
        for addr in addrs {
            if !self.holders.contains_key(&addr) && self.on_eni(addr) {
                self.restore_cooldown(addr, next);
                if self.cooling.get(&addr) == Some(&next) {
                    self.handover.pushed.insert(addr, next);
                }
            }
        }
    }
}
