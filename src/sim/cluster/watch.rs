//! Watch fan-out of the simulated cluster: every subscriber gets the complete current set first
//! (`Resynced`, as after a list), then each change as it happens; a forced relist sends the
//! complete set again (what a real watch does after `410 Gone`).

use futures::Stream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::store::Store;
use crate::k8s::{
    ConfigMapView, FOREIGN_IPAM_CONFIG_MAP, FOREIGN_IPAM_NAMESPACE, NodeView, PodView, WatchEvent,
};

/// One ConfigMap watcher: the object it watches and where its states go.
pub(super) struct ConfigWatcher {
    pub namespace: String,
    pub name: String,
    pub tx: UnboundedSender<Option<ConfigMapView>>,
}

#[derive(Default)]
pub(super) struct Watchers {
    pub nodes: Vec<UnboundedSender<WatchEvent<NodeView>>>,
    pub pods: Vec<UnboundedSender<WatchEvent<PodView>>>,
    pub configs: Vec<ConfigWatcher>,
    pub foreign: Vec<UnboundedSender<Option<ConfigMapView>>>,
    /// Pod watch events handed to subscribers (a relist counts one per pod listed).
    pub pod_events: u64,
}

/// Sends to every live subscriber and forgets those that went away.
fn fan_out<T: Clone>(subs: &mut Vec<UnboundedSender<T>>, item: T) -> usize {
    subs.retain(|tx| !tx.is_closed());
    for tx in subs.iter() {
        // A receiver dropped since the retain above: nothing to deliver.
        let _ = tx.send(item.clone());
    }
    subs.len()
}

impl Watchers {
    pub fn node(&mut self, event: WatchEvent<NodeView>) {
        fan_out(&mut self.nodes, event);
    }

    pub fn pod(&mut self, event: WatchEvent<PodView>) {
        let per_subscriber = match &event {
            WatchEvent::Resynced(all) => all.len() as u64,
            _ => 1,
        };
        let subscribers = fan_out(&mut self.pods, event);
        self.pod_events += per_subscriber * subscribers as u64;
    }

    pub fn config(&mut self, namespace: &str, name: &str, state: Option<ConfigMapView>) {
        self.configs.retain(|w| !w.tx.is_closed());
        for w in &self.configs {
            if w.namespace == namespace && w.name == name {
                let _ = w.tx.send(state.clone());
            }
        }
    }

    /// `kube-system/amazon-vpc-cni` changed (`None`: deleted).
    pub fn foreign(&mut self, state: Option<ConfigMapView>) {
        fan_out(&mut self.foreign, state);
    }

    /// Sends every subscriber the complete current state, as after a relist; returns the pod
    /// watch events that makes (one per pod per subscriber; the caller counts them where its
    /// subscribers are counted).
    pub fn relist(&mut self, store: &Store) -> u64 {
        let mut pod_events = 0;
        if !self.nodes.is_empty() {
            fan_out(
                &mut self.nodes,
                WatchEvent::Resynced(store.windows_node_views()),
            );
        }
        if !self.pods.is_empty() {
            let views = store.pod_views();
            let per_subscriber = views.len() as u64;
            let subscribers = fan_out(&mut self.pods, WatchEvent::Resynced(views));
            pod_events = per_subscriber * subscribers as u64;
        }
        self.configs.retain(|w| !w.tx.is_closed());
        for w in &self.configs {
            let key = (w.namespace.clone(), w.name.clone());
            let _ = w.tx.send(store.config_maps.get(&key).cloned());
        }
        if !self.foreign.is_empty() {
            let key = (
                FOREIGN_IPAM_NAMESPACE.to_string(),
                FOREIGN_IPAM_CONFIG_MAP.to_string(),
            );
            fan_out(&mut self.foreign, store.config_maps.get(&key).cloned());
        }
        pod_events
    }

    /// Moves every subscriber (not the counters) into `other`.
    pub fn move_subscribers_into(&mut self, other: &mut Watchers) {
        other.nodes.append(&mut self.nodes);
        other.pods.append(&mut self.pods);
        other.configs.append(&mut self.configs);
        other.foreign.append(&mut self.foreign);
    }
}

/// A channel whose receiver is the stream handed to the subscriber.
pub(super) fn channel<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    unbounded_channel()
}

/// The receiver as a stream. It ends only if the cluster is dropped.
pub(super) fn stream<T: Send + 'static>(
    mut rx: UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
