//! The objects of the simulated cluster, kept compact: S4 holds 150,000 pods, so a pod is a few
//! dozen bytes here (numeric UID, shared node name, annotation only when written) and is turned
//! into a [`PodView`] only when a watch or a caller needs one.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::crd::NodeAddressPoolStatus;
use crate::ipam::PodUid;
use crate::k8s::{ConfigMapView, EventSeverity, NodeView, ObjectKind, PodPhase, PodView};
use crate::sim::rng::SplitMix64;

/// A node as the workload creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    /// The EC2 instance id its providerID names (`aws:///<zone>/<id>`); `None`: no providerID.
    pub instance_id: Option<String>,
    /// `node.kubernetes.io/instance-type`.
    pub instance_type: Option<String>,
    /// `kubernetes.io/os=windows`.
    pub windows: bool,
}

pub(super) struct SimNode {
    pub name: Arc<str>,
    pub uid: String,
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub windows: bool,
    /// `status.capacity["vpc.amazonaws.com/PrivateIPv4Address"]`.
    pub capacity: Option<String>,
    /// Live pods bound to it (for the workload's scheduler).
    pub pods: u32,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// The keys of its taints that mark a node on its way out.
    pub leaving_taints: Vec<String>,
}

impl SimNode {
    pub fn view(&self) -> NodeView {
        NodeView {
            name: self.name.to_string(),
            uid: self.uid.clone(),
            instance_id: self.instance_id.clone(),
            instance_type: self.instance_type.clone(),
            windows: self.windows,
            opt_out: None,
            advertised_capacity: self.capacity.clone(),
            // No kubelet: the simulated nodes do not advertise pods.
            max_pods: None,
            deleting: false,
            unschedulable: self.unschedulable,
            leaving_taints: self.leaving_taints.clone(),
        }
    }
}

pub(super) struct SimPod {
    pub uid: u64,
    pub node: Arc<str>,
    pub phase: PodPhase,
    pub host_network: bool,
    pub annotation: Option<Box<str>>,
    /// Virtual milliseconds since the cluster started, when the pod was bound.
    pub bound_at_ms: u64,
}

impl SimPod {
    pub fn view(&self, namespace: &str, name: &str) -> PodView {
        PodView {
            uid: PodUid::new(&uid_string(self.uid)),
            namespace: namespace.into(),
            name: name.into(),
            node_name: Arc::clone(&self.node),
            phase: self.phase,
            host_network: self.host_network,
            deleting: false,
            ip_annotation: self.annotation.clone(),
            has_annotations: self.annotation.is_some(),
        }
    }
}

/// A Kubernetes-looking UID (8-4-4-4-12 hex) for a counter value: the last group is the value
/// itself, so distinct values give distinct UIDs; the rest is a hash, for looks.
pub fn uid_string(n: u64) -> String {
    let h = SplitMix64::new(n).next_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h >> 4) & 0xfff,
        (h >> 40) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

/// A pod as the assertions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub phase: PodPhase,
    pub host_network: bool,
    pub annotation: Option<String>,
}

/// One Event, folded like the apiserver's event recorder does (same object and reason: the count
/// goes up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub kind: ObjectKind,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub severity: EventSeverity,
    pub reason: String,
    /// The note of the first occurrence.
    pub note: String,
    pub count: u32,
}

/// Events beyond this many distinct (object, reason) pairs are only counted (memory of long
/// runs with many pods).
const MAX_EVENT_RECORDS: usize = 20_000;

#[derive(Default)]
pub(super) struct Events {
    records: Vec<EventRecord>,
    index: BTreeMap<(String, String), usize>,
    pub by_reason: BTreeMap<String, u64>,
    pub dropped: u64,
}

impl Events {
    /// Records one occurrence; returns whether it created a new Event (else: a count patch).
    pub fn record(&mut self, rec: EventRecord) -> bool {
        *self.by_reason.entry(rec.reason.clone()).or_default() += 1;
        let key = (rec.uid.clone(), rec.reason.clone());
        if let Some(&i) = self.index.get(&key) {
            self.records[i].count += 1;
            return false;
        }
        if self.records.len() >= MAX_EVENT_RECORDS {
            self.dropped += 1;
            return true;
        }
        self.index.insert(key, self.records.len());
        self.records.push(rec);
        true
    }

    pub fn records(&self) -> &[EventRecord] {
        &self.records
    }
}

/// A NodeAddressPool object: its owner and its status.
pub(super) struct PoolObject {
    pub owner_uid: String,
    pub status: Option<NodeAddressPoolStatus>,
}

/// Requests the cluster served, by kind (writes unless named otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestCounts {
    /// Annotation patches received (whatever their outcome).
    pub annotate: u64,
    pub annotate_written: u64,
    pub annotate_pod_gone: u64,
    pub annotate_already: u64,
    /// `status.capacity` patches of nodes.
    pub node_capacity: u64,
    /// NodeAddressPool creations (or adoptions).
    pub pool_create: u64,
    pub pool_status: u64,
    /// Lists of every NodeAddressPool (a read).
    pub pool_list: u64,
    /// Reads of one NodeAddressPool.
    pub pool_get: u64,
    pub event_create: u64,
    pub event_patch: u64,
    /// Requests refused by an injected fault.
    pub faulted: u64,
}

impl RequestCounts {
    /// Every write request.
    pub fn writes(&self) -> u64 {
        self.annotate
            + self.node_capacity
            + self.pool_create
            + self.pool_status
            + self.event_create
            + self.event_patch
    }
}

/// The cluster's objects.
pub(super) struct Store {
    pub rng: SplitMix64,
    pub next_uid: u64,
    pub nodes: BTreeMap<String, SimNode>,
    /// Namespace names; a pod's namespace is its index here.
    pub namespaces: Vec<String>,
    /// Pods by namespace index, then name.
    pub pods: Vec<BTreeMap<Box<str>, SimPod>>,
    pub config_maps: BTreeMap<(String, String), ConfigMapView>,
    pub pools: BTreeMap<String, PoolObject>,
    pub events: Events,
    pub counts: RequestCounts,
    /// (bound at, time to IP) in virtual milliseconds, per annotation written.
    pub time_to_ip: Vec<(u32, u32)>,
    pub live_pods: u64,
    pub annotated_pods: u64,
    /// Pods created since the start.
    pub created_pods: u64,
}

impl Store {
    pub fn new(seed: u64) -> Self {
        Store {
            rng: SplitMix64::new(seed),
            // Distinct from pod numbering of other seeds is not needed; start past 0 for looks.
            next_uid: 1,
            nodes: BTreeMap::new(),
            namespaces: Vec::new(),
            pods: Vec::new(),
            config_maps: BTreeMap::new(),
            pools: BTreeMap::new(),
            events: Events::default(),
            counts: RequestCounts::default(),
            time_to_ip: Vec::new(),
            live_pods: 0,
            annotated_pods: 0,
            created_pods: 0,
        }
    }

    pub fn new_uid(&mut self) -> u64 {
        let uid = self.next_uid;
        self.next_uid += 1;
        uid
    }

    pub fn namespace_index(&self, namespace: &str) -> Option<usize> {
        self.namespaces.iter().position(|n| n == namespace)
    }

    pub fn namespace_index_or_insert(&mut self, namespace: &str) -> usize {
        match self.namespace_index(namespace) {
            Some(i) => i,
            None => {
                self.namespaces.push(namespace.to_string());
                self.pods.push(BTreeMap::new());
                self.namespaces.len() - 1
            }
        }
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&SimPod> {
        self.pods[self.namespace_index(namespace)?].get(name)
    }

    pub fn pod_mut(&mut self, namespace: &str, name: &str) -> Option<&mut SimPod> {
        let ns = self.namespace_index(namespace)?;
        self.pods[ns].get_mut(name)
    }

    /// Every pod as a view, in (namespace, name) order.
    pub fn pod_views(&self) -> Vec<PodView> {
        let mut out = Vec::with_capacity(self.live_pods as usize);
        for (ns, pods) in self.namespaces.iter().zip(&self.pods) {
            for (name, pod) in pods {
                out.push(pod.view(ns, name));
            }
        }
        out
    }

    /// Windows nodes as views (the node watch's selector), in name order.
    pub fn windows_node_views(&self) -> Vec<NodeView> {
        self.nodes
            .values()
            .filter(|n| n.windows)
            .map(SimNode::view)
            .collect()
    }

    pub fn pod_infos(&self) -> Vec<PodInfo> {
        let mut out = Vec::with_capacity(self.live_pods as usize);
        for (ns, pods) in self.namespaces.iter().zip(&self.pods) {
            for (name, pod) in pods {
                out.push(PodInfo {
                    namespace: ns.clone(),
                    name: name.to_string(),
                    uid: uid_string(pod.uid),
                    node: pod.node.to_string(),
                    phase: pod.phase,
                    host_network: pod.host_network,
                    annotation: pod.annotation.as_deref().map(str::to_string),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_look_like_kubernetes_uids_and_are_distinct() {
        let a = uid_string(1);
        let b = uid_string(2);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(a.ends_with("000000000001"), "{a}");
    }

    #[test]
    fn events_fold_by_object_and_reason() {
        let mut events = Events::default();
        let rec = |uid: &str, reason: &str| EventRecord {
            kind: ObjectKind::Pod,
            namespace: Some("ns".into()),
            name: "p".into(),
            uid: uid.into(),
            severity: EventSeverity::Warning,
            reason: reason.into(),
            note: "first".into(),
            count: 1,
        };
        assert!(events.record(rec("u1", "A")));
        assert!(!events.record(rec("u1", "A")));
        assert!(events.record(rec("u1", "B")));
        assert!(events.record(rec("u2", "A")));
        assert_eq!(events.records().len(), 3);
        assert_eq!(events.records()[0].count, 2);
        assert_eq!(events.by_reason["A"], 3);
    }
}
