//! What must hold at the end of a run, whatever the policy: every live pod has an address, no
//! address is named by two live pods, every address is on its node's ENI, and after things
//! settle no node holds more than its targets ask for (no leak).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::world::World;
use crate::ipam::capacity::{self, ADDRESSES_PER_PREFIX};
use crate::ipam::config::Targets;
use crate::ipam::{Config, Mode, parse_annotation};

/// Outcome of the final checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checks {
    pub live_pods: u64,
    /// Live pods (not hostNetwork, not finished) without an annotation.
    pub unannotated: u64,
    /// Addresses named by more than one live pod.
    pub duplicate_addresses: u64,
    /// Annotations naming an address that is not on the pod's node's ENI.
    pub off_eni: u64,
    /// Addresses held beyond what the targets ask for (secondary IPs, or 16 per idle /28).
    pub excess_addresses: u64,
    /// Nodes holding more than their targets ask for.
    pub nodes_over_target: u64,
}

impl Checks {
    pub fn ok(&self) -> bool {
        self.unannotated == 0
            && self.duplicate_addresses == 0
            && self.off_eni == 0
            && self.excess_addresses == 0
    }
}

/// Runs every check. `config` gives the targets the policy is held to (both policies default
/// to the same numbers: warm 3 / minimum 3 secondary, warm-ip 1 / minimum 3 prefix).
pub(super) fn check(world: &World, config: &Config) -> Checks {
    let mut out = Checks::default();
    let mut holders: HashMap<Ipv4Addr, u32> = HashMap::new();
    // Node name -> addresses its live pods use.
    let mut used: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    world
        .cluster
        .visit_pods(|node, phase, host_network, annotation| {
            if host_network || phase.is_terminal() {
                return;
            }
            out.live_pods += 1;
            let Some(addr) = annotation.and_then(parse_annotation) else {
                out.unannotated += 1;
                return;
            };
            *holders.entry(addr).or_default() += 1;
            match used.get_mut(node) {
                Some(list) => list.push(addr),
                None => {
                    used.insert(node.to_string(), vec![addr]);
                }
            }
        });
    out.duplicate_addresses = holders.values().filter(|&&n| n > 1).count() as u64;

    for (node, (instance_id, instance_type)) in &world.nodes {
        let Some(info) = world.ec2.instance(instance_id) else {
            continue;
        };
        let eni = &info.primary_eni;
        let on_eni = |a: &Ipv4Addr| {
            eni.secondary_ips.contains(a) || eni.prefixes.iter().any(|p| p.contains(a))
        };
        let node_used = used.get(node.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        out.off_eni += node_used.iter().filter(|a| !on_eni(a)).count() as u64;
        let Some(limits) = capacity::lookup(instance_type) else {
            continue;
        };
        let mode = capacity::effective_mode(&limits, config.requested_mode());
        let cap = capacity::pod_capacity(&limits, mode).pods;
        let excess = excess(
            mode,
            config.targets(mode, cap),
            &eni.secondary_ips,
            &eni.prefixes,
            node_used,
        );
        if excess > 0 {
            out.nodes_over_target += 1;
            out.excess_addresses += excess;
        }
    }
    out
}

/// Addresses a settled node holds beyond its targets (also the chaos mode's leak check).
pub(crate) fn excess(
    mode: Mode,
    targets: Targets,
    ips: &[Ipv4Addr],
    prefixes: &[Ipv4Net],
    used: &[Ipv4Addr],
) -> u64 {
    let used_in = |p: &Ipv4Net| used.iter().filter(|a| p.contains(*a)).count() as u32;
    match mode {
        Mode::Secondary => {
            let (warm, minimum) = match targets {
                Targets::Ips { warm, minimum } => (warm, minimum),
                Targets::Prefixes { .. } => (1, 0),
            };
            let total = ips.len() as u32;
            let used_ips = used.iter().filter(|a| ips.contains(a)).count() as u32;
            let free = total - used_ips;
            // SPEC 5.2: over = max(min(free - warm, total - minimum), 0); leftover /28s of a
            // mode switch with no pod in them are excess too.
            let over = (i64::from(free) - i64::from(warm))
                .min(i64::from(total) - i64::from(minimum))
                .max(0) as u64;
            let idle_prefixes = prefixes.iter().filter(|p| used_in(p) == 0).count() as u64;
            over + idle_prefixes * u64::from(ADDRESSES_PER_PREFIX)
        }
        Mode::Prefix => {
            let used_pfx: u32 = prefixes.iter().map(used_in).sum();
            let needed = match targets {
                Targets::Ips { warm, minimum } => (used_pfx + warm)
                    .div_ceil(ADDRESSES_PER_PREFIX)
                    .max(minimum.div_ceil(ADDRESSES_PER_PREFIX)),
                Targets::Prefixes { warm_prefixes } => {
                    prefixes.iter().filter(|p| used_in(p) > 0).count() as u32 + warm_prefixes
                }
            };
            let held = prefixes.len() as u32;
            let idle = prefixes.iter().filter(|p| used_in(p) == 0).count() as u32;
            // Only wholly unused /28s can go back: a partly used one beyond `needed` is
            // fragmentation, not a leak.
            let over = held.saturating_sub(needed).min(idle);
            let used_ips = used.iter().filter(|a| ips.contains(a)).count() as u64;
            u64::from(over) * u64::from(ADDRESSES_PER_PREFIX) + (ips.len() as u64 - used_ips)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn secondary_excess_follows_the_release_rule() {
        let targets = Targets::Ips {
            warm: 3,
            minimum: 3,
        };
        let ips: Vec<Ipv4Addr> = (10..20).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        // 10 held, 2 used: 8 free, 3 warm wanted: 5 too many.
        assert_eq!(excess(Mode::Secondary, targets, &ips, &[], &ips[..2]), 5);
        // 3 held, none used: the minimum keeps them.
        assert_eq!(excess(Mode::Secondary, targets, &ips[..3], &[], &[]), 0);
    }

    #[test]
    fn prefix_excess_counts_idle_prefixes_beyond_need() {
        let targets = Targets::Ips {
            warm: 1,
            minimum: 3,
        };
        let p: Vec<Ipv4Net> = ["10.0.1.0/28", "10.0.1.16/28", "10.0.1.32/28"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // 5 pods in the first /28: one /28 needed; the two idle ones are excess.
        let used: Vec<Ipv4Addr> = (0..5).map(|i| ip(&format!("10.0.1.{i}"))).collect();
        assert_eq!(excess(Mode::Prefix, targets, &[], &p, &used), 32);
        // Pods spread over all three: nothing can go back.
        let spread = [ip("10.0.1.1"), ip("10.0.1.17"), ip("10.0.1.33")];
        assert_eq!(excess(Mode::Prefix, targets, &[], &p, &spread), 0);
    }
}
