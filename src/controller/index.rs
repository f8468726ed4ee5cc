//! The dispatcher's index of Windows nodes and bound pods: everything the watches told us,
//! whether or not this replica leads, so a new leader starts from warm caches. Applying a watch
//! event is synchronous and returns where it goes ([`Route`]); the dispatcher delivers that to
//! the node workers. No channel, task or apiserver here: the index is tested by calling it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::ipam::PodUid;
use crate::k8s::{NodeView, PodView, WatchEvent};

/// winipam manages a Windows node unless its labels leave it to another IPAM (`winipam.dev/
/// managed: "false"`, EKS Auto Mode). An opted-out node is as if it were not Windows: it leaves
/// the index and its worker stops. Nothing it did is undone (addresses stay on the ENI, pods
/// keep their annotations, the advertised capacity and the NodeAddressPool stay), as the VPC
/// Resource Controller forgets a node it stops managing: releasing addresses that another IPAM
/// is about to take over, or that pods still use, would break running pods.
pub(crate) fn managed(view: &NodeView) -> bool {
    view.windows && view.opt_out.is_none()
}

/// What the dispatcher does after an event, in order.
#[derive(Debug)]
pub(crate) enum Route {
    /// A Windows node was listed, added or changed: its worker hears of it (a new one if the
    /// node is a new object under the same name), or one starts while leading.
    NodeApplied(NodeView),
    /// A node is no longer managed (deleted, or not Windows): its worker stops.
    NodeGone(String),
    /// To the worker of the pod's node, if there is one.
    PodApplied(Arc<PodView>),
    PodDeleted {
        node: Arc<str>,
        uid: PodUid,
    },
    /// Every pod was listed again: each worker gets its node's complete list.
    PodsResynced,
}

/// Everything the watches told us, whether or not we lead.
#[derive(Default)]
pub(crate) struct Index {
    nodes: BTreeMap<String, NodeView>,
    /// Bound pods by node name (all nodes: a node may turn out to be Windows later). A view is
    /// shared with the node's worker: one copy per pod, however many hold it.
    pods: HashMap<Arc<str>, HashMap<PodUid, Arc<PodView>>>,
    /// Every namespace seen, so pod views share one copy of each name.
    namespaces: HashSet<Arc<str>>,
    nodes_synced: bool,
    pods_synced: bool,
    config_seen: bool,
    foreign_seen: bool,
}

impl Index {
    /// Every watch has listed everything: a pool built now sees every annotation naming its
    /// addresses.
    pub(crate) fn synced(&self) -> bool {
        self.nodes_synced && self.pods_synced && self.config_seen && self.foreign_seen
    }

    pub(crate) fn config_seen(&mut self) {
        self.config_seen = true;
    }

    pub(crate) fn foreign_seen(&mut self) {
        self.foreign_seen = true;
    }

    /// The Windows nodes, by name.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.values()
    }

    pub(crate) fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.get(name)
    }

    /// The bound pods of `node`.
    pub(crate) fn pods_of(&self, node: &str) -> Vec<Arc<PodView>> {
        self.pods
            .get(node)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn on_nodes(&mut self, ev: WatchEvent<NodeView>) -> Vec<Route> {
        match ev {
            WatchEvent::Applied(view) => vec![self.apply_node(view)],
            WatchEvent::Deleted(view) => vec![self.delete_node(&view.name)],
            WatchEvent::Resynced(views) => self.resync_nodes(views),
        }
    }

    pub(crate) fn on_pods(&mut self, ev: WatchEvent<PodView>) -> Vec<Route> {
        match ev {
            WatchEvent::Applied(view) => self.apply_pod(view).into_iter().collect(),
            WatchEvent::Deleted(view) => vec![self.delete_pod(view)],
            WatchEvent::Resynced(views) => vec![self.resync_pods(views)],
        }
    }

    /// A node added or changed; one that is not managed (any more: not Windows, or opted out)
    /// leaves the index.
    pub(crate) fn apply_node(&mut self, view: NodeView) -> Route {
        if !managed(&view) {
            if let Some(why) = view.opt_out
                && self.nodes.contains_key(&view.name)
            {
                tracing::info!(node = %view.name, ?why, "node opted out: winipam stops managing it and leaves its addresses, annotations, capacity and NodeAddressPool as they are");
            }
            return self.delete_node(&view.name);
        }
        self.nodes.insert(view.name.clone(), view.clone());
        Route::NodeApplied(view)
    }

    pub(crate) fn delete_node(&mut self, name: &str) -> Route {
        if self.nodes.remove(name).is_some() {
            tracing::info!(node = name, "node no longer managed");
        }
        Route::NodeGone(name.to_string())
    }

    /// The complete set of nodes: those known before and absent (or no longer managed) now are
    /// gone (first), then every managed node is applied, in name order.
    pub(crate) fn resync_nodes(&mut self, views: Vec<NodeView>) -> Vec<Route> {
        let windows: BTreeMap<String, NodeView> = views
            .into_iter()
            .filter(managed)
            .map(|v| (v.name.clone(), v))
            .collect();
        let gone: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| !windows.contains_key(*n))
            .cloned()
            .collect();
        let mut routes: Vec<Route> = gone.iter().map(|name| self.delete_node(name)).collect();
        routes.extend(windows.into_values().map(|view| self.apply_node(view)));
        self.nodes_synced = true;
        routes
    }

    /// A pod added or changed. An event that changes nothing of its view (a condition, a
    /// container's state, a label: most of a pod's events) goes no further, since its worker
    /// already has the view: no message, no pass (#18, the controller's CPU per pod).
    pub(crate) fn apply_pod(&mut self, view: PodView) -> Option<Route> {
        let known = self
            .pods
            .get(&*view.node_name)
            .and_then(|m| m.get(&view.uid));
        if known.is_some_and(|known| **known == view) {
            return None;
        }
        let view = shared(&self.pods, &mut self.namespaces, view);
        self.pods
            .entry(Arc::clone(&view.node_name))
            .or_default()
            .insert(view.uid.clone(), Arc::clone(&view));
        Some(Route::PodApplied(view))
    }

    pub(crate) fn delete_pod(&mut self, view: PodView) -> Route {
        if let Some(m) = self.pods.get_mut(&*view.node_name) {
            m.remove(&view.uid);
            if m.is_empty() {
                self.pods.remove(&*view.node_name);
            }
        }
        Route::PodDeleted {
            node: view.node_name,
            uid: view.uid,
        }
    }

    /// The complete set of bound pods replaces what was known.
    pub(crate) fn resync_pods(&mut self, views: Vec<PodView>) -> Route {
        let mut pods: HashMap<Arc<str>, HashMap<PodUid, Arc<PodView>>> = HashMap::new();
        for view in views {
            let view = shared(&pods, &mut self.namespaces, view);
            pods.entry(Arc::clone(&view.node_name))
                .or_default()
                .insert(view.uid.clone(), view);
        }
        self.pods = pods;
        self.pods_synced = true;
        Route::PodsResynced
    }
}

/// `view`, ready to be kept: its node name and namespace point to the copies already known
/// (the watch decodes a fresh string for each pod; 150,000 pods share a few thousand names).
fn shared(
    pods: &HashMap<Arc<str>, HashMap<PodUid, Arc<PodView>>>,
    namespaces: &mut HashSet<Arc<str>>,
    mut view: PodView,
) -> Arc<PodView> {
    if let Some((node, _)) = pods.get_key_value(&*view.node_name) {
        view.node_name = Arc::clone(node);
    }
    match namespaces.get(&*view.namespace) {
        Some(ns) => view.namespace = Arc::clone(ns),
        None => {
            namespaces.insert(Arc::clone(&view.namespace));
        }
    }
    Arc::new(view)
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
