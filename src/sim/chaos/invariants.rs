//! What must hold whatever fails (issue 9), checked after every step and at a few ticks in
//! between, and at quiescence:
//!
//! - `duplicate`: no address is named by two live pods (a pod whose address a person removed
//!   from its ENI by hand is broken anyway and reported; another node may get that address
//!   from EC2 again);
//! - `off-eni`: every live pod's annotation names an address on its node's ENI, unless a person
//!   removed it by hand (then a Warning Event on that pod is due by quiescence);
//! - `cool-down`: an address freed on an ENI (its pod deleted or finished) is not annotated on
//!   another pod of that ENI before its cool-down (the configuration in force) has passed;
//! - `unrecorded`: an annotation is written only while the node's stored NodeAddressPool
//!   status lists its address, as used or ahead (status before annotation, SPEC 5.3: a new
//!   leader rebuilds from that status, and one whose pod cache lags would hand the address
//!   out again);
//!
//! and at quiescence, also:
//! - `leak`: no node holds more than its targets ask for;
//! - `unannotated`: every live pod on a node whose live pods fit in its capacity has an address;
//! - `unreported`: every live pod naming an address not on its ENI has a Warning Event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use super::gate::Written;
use super::world::ChaosWorld;
use crate::controller::reasons;
use crate::ipam::{Config, Mode, Timestamp, capacity, parse_annotation};
use crate::sim::cluster::PodInfo;
use crate::sim::scenario::checks::excess;

/// An invariant that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

fn violation(invariant: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { invariant, detail })
}

/// An address that went back to its ENI's pool when its pod went.
#[derive(Debug, Clone)]
struct Freed {
    eni: String,
    addr: Ipv4Addr,
    at: Timestamp,
    pod: String,
}

/// What the invariants remember between checks.
#[derive(Default)]
pub struct Tracker {
    freed: Vec<Freed>,
    /// The cool-down of the configuration in force from each time on.
    cooldowns: Vec<(Timestamp, Duration)>,
    /// Addresses a person removed from an ENI by hand: (ENI, address) -> when.
    manual: BTreeMap<(String, Ipv4Addr), Timestamp>,
    /// How much of the annotation log has been checked.
    log_seen: usize,
    /// Pod UID -> node it was bound to.
    pod_nodes: HashMap<String, String>,
}

impl Tracker {
    pub fn bound(&mut self, uid: &str, node: &str) {
        self.pod_nodes.insert(uid.to_string(), node.to_string());
    }

    /// A pod naming `addr` on `eni` was deleted or finished at `at`.
    pub fn freed(&mut self, eni: &str, addr: Ipv4Addr, at: Timestamp, pod: &str) {
        self.freed.push(Freed {
            eni: eni.to_string(),
            addr,
            at,
            pod: pod.to_string(),
        });
    }

    /// `cooldown` is in force from `at` (pushed in time order).
    pub fn cooldown(&mut self, at: Timestamp, cooldown: Duration) {
        self.cooldowns.push((at, cooldown));
    }

    pub fn manual(&mut self, eni: &str, addr: Ipv4Addr, at: Timestamp) {
        self.manual.insert((eni.to_string(), addr), at);
    }

    fn removed_by_hand(&self, eni: &str, addr: Ipv4Addr) -> bool {
        self.manual.contains_key(&(eni.to_string(), addr))
    }

    /// The shortest cool-down in force at any time in `[from, to]` (all those set in the
    /// millisecond in force at `from` count: a takeover and the new leader's first read).
    pub(super) fn cooldown_between(&self, from: Timestamp, to: Timestamp) -> Duration {
        let start = self
            .cooldowns
            .iter()
            .rev()
            .find(|(t, _)| *t <= from)
            .map_or(from, |(t, _)| *t);
        self.cooldowns
            .iter()
            .filter(|(t, _)| *t >= start && *t <= to)
            .map(|(_, c)| *c)
            .min()
            .unwrap_or_default()
    }

    /// Everything checked after each step and tick.
    pub fn check(&mut self, world: &ChaosWorld, log: &[Written]) -> Result<(), Violation> {
        let pods = world.cluster.pods();
        self.check_log(world, log)?;
        check_duplicates(world, &pods, self)?;
        check_on_eni(world, &pods, self)
    }

    /// `unrecorded`, and `cool-down`: each annotation written since the last check against
    /// the addresses freed on that ENI.
    fn check_log(&mut self, world: &ChaosWorld, log: &[Written]) -> Result<(), Violation> {
        let new = log.get(self.log_seen..).unwrap_or_default();
        self.log_seen = log.len();
        for w in new {
            let Some(addr) = parse_annotation(&w.value) else {
                return violation(
                    "annotation",
                    format!(
                        "{}/{} was written {:?}, not an address",
                        w.namespace, w.name, w.value
                    ),
                );
            };
            if !w.recorded {
                return violation(
                    "unrecorded",
                    format!(
                        "{}/{} (UID {}) was annotated {addr} by process {} at {} while its \
                         node's stored status did not list the address",
                        w.namespace, w.name, w.uid, w.process, w.at.0
                    ),
                );
            }
            let Some(eni) = self
                .pod_nodes
                .get(&w.uid)
                .and_then(|node| world.nodes.get(node))
                .map(|n| n.eni.clone())
            else {
                continue;
            };
            for f in self.freed.iter().filter(|f| f.eni == eni && f.addr == addr) {
                if f.at > w.at || f.pod == w.uid {
                    continue;
                }
                let cooldown = self.cooldown_between(f.at, w.at);
                if w.at < f.at.plus(cooldown) && !self.removed_by_hand(&eni, addr) {
                    return violation(
                        "cool-down",
                        format!(
                            "{addr} on {eni} was freed at {} (pod {}) and written on {}/{} (UID {}) \
                             by process {} at {}: {} ms later, cool-down {} s",
                            f.at.0,
                            f.pod,
                            w.namespace,
                            w.name,
                            w.uid,
                            w.process,
                            w.at.0,
                            w.at.0 - f.at.0,
                            cooldown.as_secs()
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Live pods (not finished, not host network) with the address their annotation names.
fn live_addresses(pods: &[PodInfo]) -> impl Iterator<Item = (&PodInfo, Ipv4Addr)> {
    pods.iter()
        .filter(|p| !p.host_network && !p.phase.is_terminal())
        .filter_map(|p| Some((p, p.annotation.as_deref().and_then(parse_annotation)?)))
}

fn check_duplicates(world: &ChaosWorld, pods: &[PodInfo], t: &Tracker) -> Result<(), Violation> {
    let mut by_addr: BTreeMap<Ipv4Addr, Vec<&PodInfo>> = BTreeMap::new();
    for (pod, addr) in live_addresses(pods) {
        by_addr.entry(addr).or_default().push(pod);
    }
    for (addr, holders) in by_addr {
        if holders.len() < 2 {
            continue;
        }
        // A pod whose address was removed by hand from its ENI no longer holds it; EC2 may
        // give it to another node.
        let broken = |p: &&PodInfo| {
            world
                .nodes
                .get(&p.node)
                .is_some_and(|n| t.removed_by_hand(&n.eni, addr))
        };
        let nodes: BTreeSet<&str> = holders.iter().map(|p| p.node.as_str()).collect();
        if nodes.len() > 1 && holders.iter().filter(|p| !broken(p)).count() < 2 {
            continue;
        }
        let names: Vec<String> = holders
            .iter()
            .map(|p| {
                format!(
                    "{}/{} (UID {}, node {})",
                    p.namespace, p.name, p.uid, p.node
                )
            })
            .collect();
        return violation(
            "duplicate",
            format!("{addr} is named by {}", names.join(" and ")),
        );
    }
    Ok(())
}

fn check_on_eni(world: &ChaosWorld, pods: &[PodInfo], t: &Tracker) -> Result<(), Violation> {
    for (pod, addr) in live_addresses(pods) {
        let Some(node) = world.nodes.get(&pod.node) else {
            continue;
        };
        if world.on_eni(node, addr) || t.removed_by_hand(&node.eni, addr) {
            continue;
        }
        return violation(
            "off-eni",
            format!(
                "{}/{} (UID {}) names {addr}, which is not on node {}'s ENI {}",
                pod.namespace, pod.name, pod.uid, pod.node, node.eni
            ),
        );
    }
    Ok(())
}

/// The checks at quiescence (after the per-step ones), with the configuration in force.
/// `events`: every Event a process tried to record, as (object UID, reason).
pub fn check_quiescent(
    world: &ChaosWorld,
    config: &Config,
    events: &[(String, String)],
) -> Result<(), Violation> {
    let pods = world.cluster.pods();
    let reported: BTreeSet<&str> = events
        .iter()
        .filter(|(_, reason)| {
            reason == reasons::IP_REMOVED_FROM_ENI || reason == reasons::IP_NOT_ON_ENI
        })
        .map(|(uid, _)| uid.as_str())
        .collect();
    for (name, node) in &world.nodes {
        let Some(info) = world.ec2.instance(&node.instance_id) else {
            continue;
        };
        let eni = &info.primary_eni;
        let live: Vec<&PodInfo> = pods
            .iter()
            .filter(|p| &p.node == name && !p.host_network && !p.phase.is_terminal())
            .collect();
        let mut used = Vec::new();
        for pod in &live {
            let Some(addr) = pod.annotation.as_deref().and_then(parse_annotation) else {
                continue;
            };
            if world.on_eni(node, addr) {
                used.push(addr);
            } else if !reported.contains(pod.uid.as_str()) {
                return violation(
                    "unreported",
                    format!(
                        "{}/{} (UID {}) names {addr}, not on {}'s ENI, and has no Warning Event",
                        pod.namespace, pod.name, pod.uid, name
                    ),
                );
            }
        }
        let Some(limits) = capacity::lookup(&node.instance_type) else {
            continue;
        };
        let mode = capacity::effective_mode(&limits, config.requested_mode());
        // While the other mode's addresses drain (SPEC 4), its used ones take ENI slots: the
        // pods on them fit, and the current mode has the slots left.
        let in_other = |a: &Ipv4Addr| match mode {
            Mode::Prefix => eni.secondary_ips.contains(a),
            Mode::Secondary => eni.prefixes.iter().any(|p| p.contains(a)),
        };
        let other_pods = used.iter().filter(|a| in_other(a)).count() as u32;
        let other_slots = match mode {
            Mode::Prefix => other_pods,
            Mode::Secondary => eni
                .prefixes
                .iter()
                .filter(|p| used.iter().any(|a| p.contains(a)))
                .count() as u32,
        };
        let cap =
            other_pods + capacity::switch_capacity(capacity::pod_slots(&limits), mode, other_slots);
        let waiting = live.iter().filter(|p| p.annotation.is_none()).count();
        if waiting > 0 && live.len() <= cap as usize {
            return violation(
                "unannotated",
                format!(
                    "{waiting} of the {} live pods on {name} ({}, capacity {cap}) have no \
                     address; {}",
                    live.len(),
                    node.instance_type,
                    describe_node(world, name, &pods)
                ),
            );
        }
        // A node still leaving keeps no target: anything beyond its pods' addresses leaks.
        let over = excess(
            mode,
            config.node_targets(
                mode,
                capacity::pod_capacity(&limits, config.requested_mode()).pods,
                node.leaving,
            ),
            &eni.secondary_ips,
            &eni.prefixes,
            &used,
        );
        if over > 0 {
            return violation(
                "leak",
                format!(
                    "{name} ({}, {mode}{}) holds {over} addresses beyond its targets; {}",
                    node.instance_type,
                    if node.leaving { ", leaving" } else { "" },
                    describe_node(world, name, &pods)
                ),
            );
        }
    }
    Ok(())
}

/// The node's ENI, pods and NodeAddressPool status, for a failure report.
fn describe_node(world: &ChaosWorld, name: &str, pods: &[PodInfo]) -> String {
    let eni = world
        .nodes
        .get(name)
        .and_then(|n| world.ec2.instance(&n.instance_id))
        .map(|i| i.primary_eni);
    let pods: Vec<String> = pods
        .iter()
        .filter(|p| p.node == name)
        .map(|p| format!("{} {:?} {:?}", p.name, p.phase, p.annotation))
        .collect();
    format!(
        "ENI {:?}; pods [{}]; status {:?}",
        eni.map(|e| (e.secondary_ips, e.prefixes)),
        pods.join(", "),
        world.cluster.pool_status(name)
    )
}
