//! Applying EC2's answers to a node's pool (SPEC 6.4 and 7): results of the call in flight,
//! failures by class, and describes (EC2 is the truth, within the eventual-consistency grace).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::plan::Action;
use super::pool::{NodePool, Slot, as_prefix, prefix_addrs};
use super::types::{Ec2ErrorClass, EniSnapshot, Timestamp};
use super::uid::PodUid;

/// A describe younger than our own change may not show it yet.
pub const DESCRIBE_GRACE: Duration = Duration::from_secs(60);
/// No new /28 for this long after `InsufficientCidrBlocks` (or /32 fallback for this long).
pub const NO_PREFIX_HOLD: Duration = Duration::from_secs(120);
/// No assign for this long after `InsufficientFreeAddressesInSubnet`.
pub const SUBNET_FULL_HOLD: Duration = Duration::from_secs(120);
/// First backoff after a throttled or failed call; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What EC2's assign call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ec2Addresses {
    Ips(Vec<Ipv4Addr>),
    Prefixes(Vec<Ipv4Net>),
}

/// How the pool reacted to a failed call, for the controller's Events and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureEffect {
    /// Nothing more for this node before `until` (the caller may add jitter).
    Backoff { until: Timestamp },
    /// No new /28 before `until`; pods wait for one.
    NoPrefixUntil { until: Timestamp },
    /// No new /28 before `until`; secondary IPs are handed out meanwhile.
    FallbackToSecondaryUntil { until: Timestamp },
    /// No assign before `until` (the subnet is full).
    NoAssignUntil { until: Timestamp },
    /// The next step is a describe.
    Redescribe,
    /// The instance is gone: nothing more until the node is deleted.
    NodeGone,
}

/// An address a pod holds that vanished from the ENI (someone unassigned it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostAddress {
    pub addr: Ipv4Addr,
    pub uids: Vec<PodUid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeOutcome {
    /// Held addresses no longer on the ENI: a Warning Event per pod.
    pub lost: Vec<LostAddress>,
    /// Slots (IPs or /28s) that joined the pool.
    pub added: u32,
    /// Slots that left the pool.
    pub removed: u32,
}

impl NodePool {
    /// Marks `action` as the call in flight. `Action::None` is ignored.
    pub fn begin(&mut self, action: &Action, now: Timestamp) {
        if *action != Action::None {
            self.in_flight = Some((action.clone(), now));
        }
    }

    /// The call in flight and when it began.
    pub fn in_flight(&self) -> Option<(&Action, Timestamp)> {
        self.in_flight.as_ref().map(|(a, t)| (a, *t))
    }

    pub fn needs_describe(&self) -> bool {
        self.needs_describe
    }

    /// The instance is gone (`*.NotFound`): the controller waits for the node's deletion.
    pub fn node_gone(&self) -> bool {
        self.gone
    }

    /// End of the throttle/failure backoff, if it is still running.
    pub fn backoff_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.backoff_until.filter(|t| *t > now)
    }

    /// Holds assigns until `until` (a sibling node found the shared subnet full). Never
    /// shortens a running hold.
    pub fn hold_assigns_until(&mut self, until: Timestamp) {
        self.no_assign_until = Some(self.no_assign_until.map_or(until, |t| t.max(until)));
    }

    /// The assign call succeeded. Only addresses not already known count as new (some
    /// emulators return the whole list, the primary address included). Returns the number of
    /// new slots.
    pub fn apply_assign_ok(&mut self, added: &Ec2Addresses, now: Timestamp) -> u32 {
        self.finish_ok();
        let mut new = 0;
        match added {
            Ec2Addresses::Ips(ips) => {
                for &ip in ips {
                    if ip != self.primary_ip && !self.on_eni(ip) && self.ips.insert(ip) {
                        self.recent.insert(Slot::Ip(ip), now);
                        new += 1;
                    }
                }
            }
            Ec2Addresses::Prefixes(nets) => {
                for net in nets.iter().filter_map(|n| as_prefix(*n)) {
                    if self.prefixes.insert(net) {
                        self.recent.insert(Slot::Prefix(net), now);
                        new += 1;
                    }
                }
            }
        }
        new
    }

    /// The release call in flight succeeded: its addresses leave the pool.
    pub fn apply_release_ok(&mut self, now: Timestamp) {
        let done = self.in_flight.as_ref().map(|(a, _)| a.clone());
        self.finish_ok();
        if let Some(action) = done {
            self.forget_released(&action, now);
        }
    }

    fn finish_ok(&mut self) {
        self.in_flight = None;
        self.failures = 0;
        self.backoff_until = None;
    }

    /// Every slot of the release is marked as changed now, even one a describe had already
    /// taken out of the pool: a stale describe may still show it, and must not bring it back.
    fn forget_released(&mut self, action: &Action, now: Timestamp) {
        match action {
            Action::ReleaseIps(ips) => {
                for ip in ips {
                    self.ips.remove(ip);
                    self.recent.insert(Slot::Ip(*ip), now);
                }
            }
            Action::ReleasePrefixes(nets) => {
                for net in nets {
                    self.prefixes.remove(net);
                    self.recent.insert(Slot::Prefix(*net), now);
                }
            }
            _ => {}
        }
    }

    /// The call in flight failed with `class` (SPEC 7).
    pub fn apply_failure(&mut self, class: &Ec2ErrorClass, now: Timestamp) -> FailureEffect {
        let action = self.in_flight.take().map(|(a, _)| a);
        let was_describe = action == Some(Action::Describe);
        match class {
            Ec2ErrorClass::NotFound => {
                self.gone = true;
                FailureEffect::NodeGone
            }
            // A describe that timed out changed nothing: retry it after a backoff.
            Ec2ErrorClass::Throttled | Ec2ErrorClass::Other { .. } => self.back_off(now),
            Ec2ErrorClass::UnknownOutcome if was_describe => self.back_off(now),
            Ec2ErrorClass::UnknownOutcome => {
                // A release may have happened: stop counting those addresses now (handing one
                // out could break a pod); a describe after the grace brings back any that stayed.
                if let Some(action) = action {
                    self.forget_released(&action, now);
                }
                self.needs_describe = true;
                FailureEffect::Redescribe
            }
            Ec2ErrorClass::EniLimit => {
                self.needs_describe = true;
                FailureEffect::Redescribe
            }
            Ec2ErrorClass::NoCidrBlock => {
                let until = now.plus(NO_PREFIX_HOLD);
                self.no_prefix_until = Some(until);
                if self.config.prefix_fallback_to_secondary {
                    FailureEffect::FallbackToSecondaryUntil { until }
                } else {
                    FailureEffect::NoPrefixUntil { until }
                }
            }
            Ec2ErrorClass::SubnetFull => {
                let until = now.plus(SUBNET_FULL_HOLD);
                self.hold_assigns_until(until);
                FailureEffect::NoAssignUntil { until }
            }
        }
    }

    fn back_off(&mut self, now: Timestamp) -> FailureEffect {
        self.failures = self.failures.saturating_add(1);
        let until = now.plus(backoff_delay(self.failures, self.jitter_seed));
        self.backoff_until = Some(until);
        FailureEffect::Backoff { until }
    }

    /// A describe of the primary ENI (asked for by the plan, or the periodic resync). EC2 is the
    /// truth: slots gone from the ENI leave the pool, new ones join as free; a slot we changed
    /// ourselves less than [`DESCRIBE_GRACE`] ago keeps our view.
    pub fn apply_describe(&mut self, eni: &EniSnapshot, now: Timestamp) -> DescribeOutcome {
        // Only a describe of our own says when it began (a resync's may be older).
        let began = match self.in_flight {
            Some((Action::Describe, at)) => Some(at),
            _ => None,
        };
        if began.is_some() {
            self.finish_ok();
        }
        self.needs_describe = false;
        self.primary_ip = eni.primary_ip;
        let in_grace = |recent: &std::collections::BTreeMap<Slot, Timestamp>, slot: Slot| {
            recent
                .get(&slot)
                .is_some_and(|at| now.since(*at) < DESCRIBE_GRACE)
        };
        let seen_ips: BTreeSet<Ipv4Addr> = eni
            .secondary_ips
            .iter()
            .copied()
            .filter(|ip| *ip != eni.primary_ip)
            .collect();
        let seen_prefixes: BTreeSet<Ipv4Net> =
            eni.prefixes.iter().filter_map(|p| as_prefix(*p)).collect();
        let mut out = DescribeOutcome::default();

        let gone_ips: Vec<Ipv4Addr> = self
            .ips
            .iter()
            .copied()
            .filter(|ip| !seen_ips.contains(ip) && !in_grace(&self.recent, Slot::Ip(*ip)))
            .collect();
        for ip in gone_ips {
            self.ips.remove(&ip);
            self.report_lost(ip, &mut out);
            out.removed += 1;
        }
        let gone_prefixes: Vec<Ipv4Net> = self
            .prefixes
            .iter()
            .copied()
            .filter(|n| !seen_prefixes.contains(n) && !in_grace(&self.recent, Slot::Prefix(*n)))
            .collect();
        for net in gone_prefixes {
            self.prefixes.remove(&net);
            for addr in prefix_addrs(net) {
                self.report_lost(addr, &mut out);
            }
            out.removed += 1;
        }
        for ip in seen_ips {
            if !self.ips.contains(&ip) && !in_grace(&self.recent, Slot::Ip(ip)) {
                self.ips.insert(ip);
                self.handover_joined(ip);
                out.added += 1;
            }
        }
        for net in seen_prefixes {
            if !self.prefixes.contains(&net) && !in_grace(&self.recent, Slot::Prefix(net)) {
                self.prefixes.insert(net);
                for addr in prefix_addrs(net) {
                    self.handover_joined(addr);
                }
                out.added += 1;
            }
        }
        self.handover_described(began);
        out
    }

    /// Slots we are giving back to EC2: the release in flight (or waiting to go out) and those
    /// given back less than [`DESCRIBE_GRACE`] ago, as /32s and /28s, sorted. The status lists
    /// them before the call goes out: a next leader whose first describe is older than the
    /// release would otherwise count them as free (SPEC 6.3, 6.4).
    pub fn releasing_slots(&self, now: Timestamp) -> Vec<Ipv4Net> {
        let mut out: Vec<Ipv4Net> = match &self.in_flight {
            Some((Action::ReleaseIps(ips), _)) => ips.iter().map(|ip| Ipv4Net::from(*ip)).collect(),
            Some((Action::ReleasePrefixes(nets), _)) => nets.clone(),
            _ => Vec::new(),
        };
        for (slot, at) in &self.recent {
            if now.since(*at) >= DESCRIBE_GRACE {
                continue;
            }
            match *slot {
                Slot::Ip(ip) if !self.ips.contains(&ip) => out.push(Ipv4Net::from(ip)),
                Slot::Prefix(net) if !self.prefixes.contains(&net) => out.push(net),
                _ => {}
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// On a rebuild: the slots the previous leader listed as releasing leave the pool as if
    /// released now with an unknown outcome (its call may have landed after the describe this
    /// pool was built from); a describe [`DESCRIBE_GRACE`] later brings back any that stayed.
    /// A slot a pod's address is in is kept: no release gives back an address in use. Returns
    /// how many slots left the pool.
    pub fn restore_releasing(&mut self, slots: &[Ipv4Net], now: Timestamp) -> u32 {
        let mut left = 0;
        for net in slots {
            let slot = if net.prefix_len() == 32 {
                Slot::Ip(net.addr())
            } else if let Some(prefix) = as_prefix(*net) {
                Slot::Prefix(prefix)
            } else {
                continue;
            };
            let in_use = match slot {
                Slot::Ip(ip) => self.holders.contains_key(&ip),
                Slot::Prefix(prefix) => prefix_addrs(prefix).any(|a| self.holders.contains_key(&a)),
            };
            if in_use {
                continue;
            }
            let removed = match slot {
                Slot::Ip(ip) => self.ips.remove(&ip),
                Slot::Prefix(prefix) => self.prefixes.remove(&prefix),
            };
            self.recent.insert(slot, now);
            left += u32::from(removed);
        }
        left
    }

    /// The release planned and begun is dropped before its call went out (winipam was paused
    /// meanwhile): its slots are free again.
    pub fn abandon_release(&mut self) {
        if matches!(
            self.in_flight,
            Some((Action::ReleaseIps(_) | Action::ReleasePrefixes(_), _))
        ) {
            self.in_flight = None;
        }
    }

    fn report_lost(&self, addr: Ipv4Addr, out: &mut DescribeOutcome) {
        let uids = self.holders_of(addr);
        if !uids.is_empty() {
            out.lost.push(LostAddress { addr, uids });
        }
    }
}

/// Exponential backoff with jitter (SPEC 7): `BACKOFF_BASE * 2^(failures-1)`, capped at
/// `BACKOFF_MAX`, then scaled into its upper half, `[d/2, d]`, by a fraction drawn from `seed`
/// (the node's) and the failure count. Nodes throttled by the same burst retry spread out
/// instead of together, which would refill EC2's account bucket only to drain it at once again.
/// Pure: the same node and count give the same delay, so a simulated run replays from its seed.
pub fn backoff_delay(failures: u32, seed: u64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let cap = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
    cap.mul_f64(0.5 + 0.5 * unit_fraction(seed ^ u64::from(failures).rotate_left(32)))
}

/// A node's jitter seed: FNV-1a of its ENI id (stable across restarts and platforms).
pub fn jitter_seed(eni_id: &str) -> u64 {
    eni_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64 of `x` (the step after state `x`), as a fraction in [0, 1): the jitter of the
/// per-node backoff here and of the EC2 client's throttle retries.
pub fn unit_fraction(x: u64) -> f64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
