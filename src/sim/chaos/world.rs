//! The small world of a chaos run (a few Windows nodes, a few dozen pods, one subnet) and the
//! workload's and the people's actions on it. Faults and crashes are in `run`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use super::invariants::Tracker;
use crate::clock::{Clock, TokioClock};
use crate::ipam::{Timestamp, capacity, parse_annotation};
use crate::k8s::{FOREIGN_IPAM_CONFIG_MAP, FOREIGN_IPAM_NAMESPACE, PodPhase};
use crate::sim::cluster::{NodeSpec, PodInfo, SimCluster, SimClusterConfig};
use crate::sim::ec2::{ConsistencyModel, LatencyModel, SimEc2, SimEc2Config};
use crate::sim::scenario::world::EPOCH;

/// Most live pods at once.
const MAX_PODS: usize = 60;
const NAMESPACES: [&str; 2] = ["default", "apps"];

/// A node of the world.
#[derive(Debug, Clone)]
pub struct ChaosNode {
    pub instance_id: String,
    pub instance_type: String,
    pub eni: String,
    /// Cordoned or tainted as leaving (a replaced node joins without).
    pub leaving: bool,
}

pub struct ChaosWorld {
    pub cluster: SimCluster,
    pub ec2: SimEc2,
    pub clock: TokioClock,
    subnet: String,
    pub nodes: BTreeMap<String, ChaosNode>,
    pods_created: u64,
}

impl ChaosWorld {
    pub fn new(seed: u64, ec2_latency: bool, stale_describes: bool) -> ChaosWorld {
        let limits: crate::sim::ec2::LimitsSource = Arc::new(capacity::lookup);
        let ec2 = SimEc2::new(
            SimEc2Config {
                latency: if ec2_latency {
                    LatencyModel::default()
                } else {
                    LatencyModel::zero()
                },
                consistency: if stale_describes {
                    ConsistencyModel::default()
                } else {
                    ConsistencyModel::strong()
                },
                ..SimEc2Config::instant(seed)
            },
            limits,
        );
        let cidr = Ipv4Net::new(Ipv4Addr::new(10, 80, 0, 0), 20).unwrap_or_default();
        let subnet = ec2.add_subnet(cidr, "us-west-2a").unwrap_or_default();
        ChaosWorld {
            cluster: SimCluster::new(SimClusterConfig::instant(seed ^ 0xc105_7e12)),
            ec2,
            clock: TokioClock::starting_at(EPOCH),
            subnet,
            nodes: BTreeMap::new(),
            pods_created: 0,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A new instance of `instance_type` and its Windows node `name` (replacing any node of that
    /// name).
    pub fn launch(&mut self, name: &str, instance_type: &str) -> bool {
        let Ok(info) = self.ec2.add_instance(instance_type, &self.subnet) else {
            return false;
        };
        self.cluster.add_node(NodeSpec {
            name: name.to_string(),
            instance_id: Some(info.instance_id.clone()),
            instance_type: Some(instance_type.to_string()),
            windows: true,
        });
        self.nodes.insert(
            name.to_string(),
            ChaosNode {
                instance_id: info.instance_id,
                instance_type: instance_type.to_string(),
                eni: info.primary_eni.eni_id,
                leaving: false,
            },
        );
        true
    }

    /// Whether `addr` is on the node's ENI now.
    pub fn on_eni(&self, node: &ChaosNode, addr: Ipv4Addr) -> bool {
        self.ec2.instance(&node.instance_id).is_some_and(|i| {
            let eni = &i.primary_eni;
            eni.secondary_ips.contains(&addr) || eni.prefixes.iter().any(|p| p.contains(&addr))
        })
    }

    /// Live pods (not finished).
    fn live_pods(&self) -> Vec<PodInfo> {
        self.cluster
            .pods()
            .into_iter()
            .filter(|p| !p.phase.is_terminal())
            .collect()
    }

    /// Binds up to `count` pods, each to a node with room under its advertised capacity (as the
    /// scheduler does with the extended resource). Returns how many.
    pub fn create_pods(&mut self, count: u32, pick: u64, t: &mut Tracker) -> u32 {
        let mut made = 0;
        for i in 0..count {
            let live = self.live_pods();
            if live.len() >= MAX_PODS {
                break;
            }
            let mut per_node: BTreeMap<&str, u32> = BTreeMap::new();
            for p in &live {
                *per_node.entry(p.node.as_str()).or_default() += 1;
            }
            let room: Vec<&String> = self
                .nodes
                .keys()
                .filter(|n| {
                    let cap = self.cluster.node_capacity(n).unwrap_or(0);
                    per_node.get(n.as_str()).copied().unwrap_or(0) < cap
                })
                .collect();
            if room.is_empty() {
                break;
            }
            let node = room[((pick >> (i % 8)) as usize + i as usize) % room.len()].clone();
            self.bind(&node, t);
            made += 1;
        }
        made
    }

    /// Binds a new pod to `node` regardless of capacity (the first pods, before any is known).
    pub fn bind(&mut self, node: &str, t: &mut Tracker) {
        self.pods_created += 1;
        let ns = NAMESPACES[(self.pods_created % 2) as usize];
        let name = format!("pod-{}", self.pods_created);
        let uid = self.cluster.bind_pod(ns, &name, node);
        t.bound(&uid, node);
    }

    /// The pod `pick` chooses among the pods matching `filter`.
    fn choose(&self, pick: u64, filter: impl Fn(&PodInfo) -> bool) -> Option<PodInfo> {
        let pods: Vec<PodInfo> = self.cluster.pods().into_iter().filter(filter).collect();
        if pods.is_empty() {
            return None;
        }
        Some(pods[(pick % pods.len() as u64) as usize].clone())
    }

    /// Records that `pod`'s address goes back to its ENI (deleted, or finished while live).
    fn free(&self, pod: &PodInfo, t: &mut Tracker) {
        if pod.phase.is_terminal() {
            return;
        }
        let (Some(addr), Some(node)) = (
            pod.annotation.as_deref().and_then(parse_annotation),
            self.nodes.get(&pod.node),
        ) else {
            return;
        };
        t.freed(&node.eni, addr, self.now(), &pod.uid);
    }

    /// Deletes a pod (finished ones first half of the time: they wait for deletion). Returns
    /// what was deleted.
    pub fn delete_pod(&mut self, pick: u64, t: &mut Tracker) -> Option<String> {
        let pod = if pick.is_multiple_of(2) {
            self.choose(pick / 2, |p| p.phase.is_terminal())
                .or_else(|| self.choose(pick / 2, |_| true))
        } else {
            self.choose(pick / 2, |_| true)
        }?;
        self.free(&pod, t);
        self.cluster.delete_pod(&pod.namespace, &pod.name);
        Some(format!(
            "{}/{} {} {:?}",
            pod.namespace, pod.name, pod.uid, pod.annotation
        ))
    }

    /// Deletes a live pod and binds one of the same name (new UID) to the same node.
    pub fn recreate_pod(&mut self, pick: u64, t: &mut Tracker) -> Option<String> {
        let pod = self.choose(pick, |p| !p.phase.is_terminal())?;
        self.free(&pod, t);
        self.cluster.delete_pod(&pod.namespace, &pod.name);
        let uid = self.cluster.bind_pod(&pod.namespace, &pod.name, &pod.node);
        t.bound(&uid, &pod.node);
        Some(format!(
            "{}/{} {} -> {uid}",
            pod.namespace, pod.name, pod.uid
        ))
    }

    pub fn pod_succeeded(&mut self, pick: u64, t: &mut Tracker) -> Option<String> {
        let pod = self.choose(pick, |p| !p.phase.is_terminal())?;
        self.free(&pod, t);
        self.cluster
            .set_pod_phase(&pod.namespace, &pod.name, PodPhase::Succeeded);
        Some(format!("{}/{}", pod.namespace, pod.name))
    }

    /// The node's pods are deleted, the node and its instance go, and a node of the same name
    /// joins on a new instance of the same type.
    pub fn replace_node(&mut self, pick: u64, t: &mut Tracker) -> Option<String> {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let name = names
            .get((pick % names.len().max(1) as u64) as usize)?
            .clone();
        let old = self.nodes.get(&name)?.clone();
        for pod in self.cluster.pods().into_iter().filter(|p| p.node == name) {
            self.free(&pod, t);
            self.cluster.delete_pod(&pod.namespace, &pod.name);
        }
        self.cluster.delete_node(&name);
        self.ec2.remove_instance(&old.instance_id);
        self.launch(&name, &old.instance_type);
        Some(format!("{name} ({} -> new instance)", old.instance_id))
    }

    /// A person cordons the `pick`th node (`unschedulable`), taints it as leaving, or takes both
    /// away; its pods stay. Returns its name.
    pub fn node_exit(&mut self, pick: u64, unschedulable: bool, taints: &[&str]) -> Option<String> {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let name = names
            .get((pick % names.len().max(1) as u64) as usize)?
            .clone();
        self.cluster.set_node_leaving(&name, unschedulable, taints);
        self.nodes.get_mut(&name)?.leaving = unschedulable || !taints.is_empty();
        Some(name)
    }

    /// A person unassigns one address of a node's ENI by hand: one a live pod's annotation names
    /// (`used`), or one no pod names.
    pub fn manual_unassign(&mut self, used: bool, pick: u64, t: &mut Tracker) -> Option<String> {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let name = names
            .get((pick % names.len().max(1) as u64) as usize)?
            .clone();
        let node = self.nodes.get(&name)?.clone();
        let info = self.ec2.instance(&node.instance_id)?;
        let named: Vec<Ipv4Addr> = self
            .live_pods()
            .iter()
            .filter(|p| p.node == name)
            .filter_map(|p| p.annotation.as_deref().and_then(parse_annotation))
            .collect();
        // Secondary IPs only: a prefix's addresses cannot be unassigned one by one.
        let candidates: Vec<Ipv4Addr> = info
            .primary_eni
            .secondary_ips
            .iter()
            .copied()
            .filter(|a| named.contains(a) == used)
            .collect();
        let addr = *candidates.get((pick / 7 % candidates.len().max(1) as u64) as usize)?;
        self.ec2.manual_unassign(&node.eni, &[addr]).ok()?;
        t.manual(&node.eni, addr, self.now());
        Some(format!(
            "{addr} from {name} ({})",
            if used { "used" } else { "free" }
        ))
    }

    /// `kube-system/amazon-vpc-cni` with `enable-windows-ipam` on or off.
    pub fn foreign_ipam(&self, enabled: bool) {
        let mut data = BTreeMap::new();
        data.insert("enable-windows-ipam".to_string(), enabled.to_string());
        self.cluster
            .set_config_map(FOREIGN_IPAM_NAMESPACE, FOREIGN_IPAM_CONFIG_MAP, data);
    }
}
