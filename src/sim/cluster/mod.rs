//! An in-process Kubernetes cluster behind the [`Cluster`](crate::k8s::Cluster) trait: nodes,
//! pods, ConfigMaps, NodeAddressPool statuses and Events, with watches, a few milliseconds of
//! (virtual) API latency, counters of every request by kind, and hooks for faults.
//!
//! Annotation writes follow the real adapter's contract exactly: applied only to the pod with the
//! given UID (`PodGone` when it differs or the pod is gone) and only if the annotation is absent
//! (`AlreadyAnnotated`; never overwritten).
//!
//! Two faces: the workload's (create nodes, bind and delete pods, set phases and ConfigMaps) and
//! the assertions' (every pod's annotation, Events, counters, time-to-IP).

mod api;
mod faults;
mod store;
mod watch;

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::crd::NodeAddressPoolStatus;
use crate::k8s::{
    ConfigMapView, FOREIGN_IPAM_CONFIG_MAP, FOREIGN_IPAM_NAMESPACE, PodPhase, WatchEvent,
};

pub use faults::{ApiFaults, WriteFault, WriteKind, conflict, lost_answer_error, server_error};
pub use store::{EventRecord, NodeSpec, PodInfo, RequestCounts, uid_string};

use faults::{Outage, PlannedFault, RandomFaults};
use store::{SimNode, SimPod, Store};
use watch::Watchers;

/// Behaviour of the simulated apiserver.
#[derive(Debug, Clone, PartialEq)]
pub struct SimClusterConfig {
    pub seed: u64,
    /// Median time of a write request (log-normal around it).
    pub write_median: Duration,
    pub write_sigma: f64,
    /// No request takes longer.
    pub write_max: Duration,
}

impl Default for SimClusterConfig {
    fn default() -> Self {
        SimClusterConfig {
            seed: 1,
            write_median: Duration::from_millis(3),
            write_sigma: 0.4,
            write_max: Duration::from_millis(50),
        }
    }
}

impl SimClusterConfig {
    /// Requests take no time (unit tests).
    pub fn instant(seed: u64) -> Self {
        SimClusterConfig {
            seed,
            write_median: Duration::ZERO,
            write_sigma: 0.0,
            write_max: Duration::ZERO,
        }
    }
}

struct State {
    store: Store,
    watchers: Watchers,
    faults: VecDeque<PlannedFault>,
    /// Random write faults, once configured.
    random: Option<RandomFaults>,
    /// Watch subscribers cut off, while an outage lasts.
    outage: Option<Outage>,
}

struct Inner {
    config: SimClusterConfig,
    start: Instant,
    state: Mutex<State>,
}

/// The simulated cluster. Cheap to clone; clones share the objects.
#[derive(Clone)]
pub struct SimCluster {
    inner: Arc<Inner>,
}

impl SimCluster {
    /// An empty cluster whose clock starts now (tokio time: virtual under a paused runtime).
    pub fn new(config: SimClusterConfig) -> Self {
        let store = Store::new(config.seed);
        SimCluster {
            inner: Arc::new(Inner {
                config,
                start: Instant::now(),
                state: Mutex::new(State {
                    store,
                    watchers: Watchers::default(),
                    faults: VecDeque::new(),
                    random: None,
                    outage: None,
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.inner.start.elapsed().as_millis() as u64
    }

    // ----- the workload's side -----

    /// Creates a node (its watch event goes out at once). Returns its UID.
    pub fn add_node(&self, spec: NodeSpec) -> String {
        let mut st = self.lock();
        let State {
            store, watchers, ..
        } = &mut *st;
        let uid = uid_string(store.new_uid());
        let node = SimNode {
            name: Arc::from(spec.name.as_str()),
            uid: uid.clone(),
            instance_id: spec.instance_id,
            instance_type: spec.instance_type,
            windows: spec.windows,
            capacity: None,
            pods: 0,
            unschedulable: false,
            leaving_taints: Vec::new(),
        };
        // Replaced under the same name: watchers see the old one go first.
        if let Some(old) = store.nodes.get(&spec.name)
            && old.windows
        {
            watchers.node(WatchEvent::Deleted(old.view()));
        }
        if node.windows {
            watchers.node(WatchEvent::Applied(node.view()));
        }
        store.nodes.insert(spec.name, node);
        uid
    }

    /// Deletes a node; its NodeAddressPool goes with it (ownerReference). Its pods stay, as in
    /// Kubernetes until the pod GC runs; the workload deletes them. False if unknown.
    pub fn delete_node(&self, name: &str) -> bool {
        let mut st = self.lock();
        let State {
            store, watchers, ..
        } = &mut *st;
        let Some(node) = store.nodes.remove(name) else {
            return false;
        };
        if store
            .pools
            .get(name)
            .is_some_and(|p| p.owner_uid == node.uid)
        {
            store.pools.remove(name);
        }
        if node.windows {
            watchers.node(WatchEvent::Deleted(node.view()));
        }
        true
    }

    /// Cordons a node (`spec.unschedulable`) and sets the taints that mark a node on its way
    /// out (Karpenter's, the Cluster Autoscaler's), or takes both away (uncordon). Its pods
    /// stay. False if unknown.
    pub fn set_node_leaving(&self, name: &str, unschedulable: bool, taints: &[&str]) -> bool {
        let mut st = self.lock();
        let State {
            store, watchers, ..
        } = &mut *st;
        let Some(n) = store.nodes.get_mut(name) else {
            return false;
        };
        n.unschedulable = unschedulable;
        n.leaving_taints = taints.iter().map(|t| t.to_string()).collect();
        if n.windows {
            watchers.node(WatchEvent::Applied(n.view()));
        }
        true
    }

    /// Creates a pod already bound to `node` (Pending, no annotation). Returns its UID. A pod of
    /// the same name is replaced (deleted first, as a re-creation under the same name).
    pub fn bind_pod(&self, namespace: &str, name: &str, node: &str) -> String {
        self.create_pod(namespace, name, node, false)
    }

    /// A hostNetwork pod (winipam leaves it alone).
    pub fn bind_host_network_pod(&self, namespace: &str, name: &str, node: &str) -> String {
        self.create_pod(namespace, name, node, true)
    }

    fn create_pod(&self, namespace: &str, name: &str, node: &str, host_network: bool) -> String {
        self.delete_pod(namespace, name);
        let now = self.now_ms();
        let mut st = self.lock();
        let State {
            store, watchers, ..
        } = &mut *st;
        let node_name: Arc<str> = match store.nodes.get_mut(node) {
            Some(n) => {
                n.pods += 1;
                n.name.clone()
            }
            None => Arc::from(node),
        };
        let pod = SimPod {
            uid: store.new_uid(),
            node: node_name,
            phase: PodPhase::Pending,
            host_network,
            annotation: None,
            bound_at_ms: now,
        };
        let uid = uid_string(pod.uid);
        watchers.pod(WatchEvent::Applied(pod.view(namespace, name)));
        let ns = store.namespace_index_or_insert(namespace);
        store.pods[ns].insert(Box::from(name), pod);
        store.live_pods += 1;
        store.created_pods += 1;
        uid
    }

    /// Deletes a pod at once (a force delete: no graceful phase). False if unknown.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> bool {
        let mut st = self.lock();
        let State {
            store, watchers, ..
        } = &mut *st;
        let Some(ns) = store.namespace_index(namespace) else {
            return false;
        };
        let Some(pod) = store.pods[ns].remove(name) else {
            return false;
        };
        store.live_pods -= 1;
        if pod.annotation.is_some() {
            store.annotated_pods -= 1;
        }
        if let Some(n) = store.nodes.get_mut(&*pod.node) {
            n.pods = n.pods.saturating_sub(1);
        }
        watchers.pod(WatchEvent::Deleted(pod.view(namespace, name)));
        true
    }

    /// Sets a pod's phase (e.g. Succeeded). False if unknown.
    pub fn set_pod_phase(&self, namespace: &str, name: &str, phase: PodPhase) -> bool {
        self.update_pod(namespace, name, |p| p.phase = phase)
    }

    /// Writes the annotation as someone else would (tests: duplicates, foreign writers).
    pub fn set_pod_annotation(&self, namespace: &str, name: &str, value: &str) -> bool {
        self.update_pod(namespace, name, |p| p.annotation = Some(Box::from(value)))
    }

    fn update_pod(&self, namespace: &str, name: &str, change: impl FnOnce(&mut SimPod)) -> bool {
        let mut st = self.lock();
        let State {
            store, watchers, ..
        } = &mut *st;
        let Some(pod) = store.pod_mut(namespace, name) else {
            return false;
        };
        let had = pod.annotation.is_some();
        change(pod);
        let has = pod.annotation.is_some();
        let view = pod.view(namespace, name);
        match (had, has) {
            (false, true) => store.annotated_pods += 1,
            (true, false) => store.annotated_pods -= 1,
            _ => {}
        }
        watchers.pod(WatchEvent::Applied(view));
        true
    }

    /// Creates or replaces a ConfigMap.
    pub fn set_config_map(&self, namespace: &str, name: &str, data: BTreeMap<String, String>) {
        let mut st = self.lock();
        let State {
            store, watchers, ..
        } = &mut *st;
        let key = (namespace.to_string(), name.to_string());
        let uid = match store.config_maps.get(&key) {
            Some(cm) => cm.uid.clone(),
            None => uid_string(store.new_uid()),
        };
        let view = ConfigMapView {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid,
            data,
        };
        store.config_maps.insert(key, view.clone());
        watchers.config(namespace, name, Some(view.clone()));
        if namespace == FOREIGN_IPAM_NAMESPACE && name == FOREIGN_IPAM_CONFIG_MAP {
            watchers.foreign(Some(view));
        }
    }

    pub fn delete_config_map(&self, namespace: &str, name: &str) -> bool {
        let mut st = self.lock();
        let State {
            store, watchers, ..
        } = &mut *st;
        if store
            .config_maps
            .remove(&(namespace.to_string(), name.to_string()))
            .is_none()
        {
            return false;
        }
        watchers.config(namespace, name, None);
        if namespace == FOREIGN_IPAM_NAMESPACE && name == FOREIGN_IPAM_CONFIG_MAP {
            watchers.foreign(None);
        }
        true
    }

    // ----- faults -----

    /// Every pod watcher gets the complete set again, as after a watch restart (410 Gone).
    pub fn relist_pods(&self) {
        let mut st = self.lock();
        let views = st.store.pod_views();
        st.watchers.pod(WatchEvent::Resynced(views));
    }

    /// Every node watcher gets the complete set again.
    pub fn relist_nodes(&self) {
        let mut st = self.lock();
        let views = st.store.windows_node_views();
        st.watchers.node(WatchEvent::Resynced(views));
    }

    // ----- the assertions' side -----

    /// Every pod, in (namespace, name) order.
    pub fn pods(&self) -> Vec<PodInfo> {
        self.lock().store.pod_infos()
    }

    /// Calls `f(node, phase, host_network, annotation)` for every pod, without copying them
    /// (checks over 150,000 pods).
    pub fn visit_pods(&self, mut f: impl FnMut(&str, PodPhase, bool, Option<&str>)) {
        let st = self.lock();
        for pods in &st.store.pods {
            for pod in pods.values() {
                f(
                    &pod.node,
                    pod.phase,
                    pod.host_network,
                    pod.annotation.as_deref(),
                );
            }
        }
    }

    pub fn pod_annotation(&self, namespace: &str, name: &str) -> Option<String> {
        let st = self.lock();
        st.store
            .pod(namespace, name)?
            .annotation
            .as_deref()
            .map(str::to_string)
    }

    /// The node a pod is bound to.
    pub fn pod_node(&self, namespace: &str, name: &str) -> Option<String> {
        Some(self.lock().store.pod(namespace, name)?.node.to_string())
    }

    pub fn pod_uid(&self, namespace: &str, name: &str) -> Option<String> {
        Some(uid_string(self.lock().store.pod(namespace, name)?.uid))
    }

    /// (live pods, of which annotated).
    pub fn pod_counts(&self) -> (u64, u64) {
        let st = self.lock();
        (st.store.live_pods, st.store.annotated_pods)
    }

    /// Pods created since the start.
    pub fn pods_created(&self) -> u64 {
        self.lock().store.created_pods
    }

    /// The node's advertised pod-IP capacity, if written.
    pub fn node_capacity(&self, node: &str) -> Option<u32> {
        self.lock()
            .store
            .nodes
            .get(node)?
            .capacity
            .as_ref()?
            .parse()
            .ok()
    }

    /// Live pods bound to the node.
    pub fn node_pod_count(&self, node: &str) -> u32 {
        self.lock().store.nodes.get(node).map_or(0, |n| n.pods)
    }

    pub fn node_names(&self) -> Vec<String> {
        self.lock().store.nodes.keys().cloned().collect()
    }

    pub fn pool_status(&self, node: &str) -> Option<NodeAddressPoolStatus> {
        self.lock().store.pools.get(node)?.status.clone()
    }

    pub fn pool_object_exists(&self, node: &str) -> bool {
        self.lock().store.pools.contains_key(node)
    }

    /// Events, folded (first occurrence's note, count), in the order they first occurred.
    pub fn events(&self) -> Vec<EventRecord> {
        self.lock().store.events.records().to_vec()
    }

    /// Occurrences per reason (including Events beyond the kept records).
    pub fn event_counts(&self) -> BTreeMap<String, u64> {
        self.lock().store.events.by_reason.clone()
    }

    pub fn request_counts(&self) -> RequestCounts {
        self.lock().store.counts
    }

    /// Pod watch events handed out so far (every subscriber counted).
    pub fn pod_events_delivered(&self) -> u64 {
        self.lock().watchers.pod_events
    }

    /// (bound at, time to IP) in virtual milliseconds since the cluster started, one per
    /// annotation written through [`Cluster::annotate_pod`](crate::k8s::Cluster::annotate_pod).
    pub fn time_to_ip(&self) -> Vec<(u32, u32)> {
        self.lock().store.time_to_ip.clone()
    }

    /// Virtual time since the cluster started.
    pub fn elapsed(&self) -> Duration {
        self.inner.start.elapsed()
    }
}
