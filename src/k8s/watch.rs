//! From kube-runtime watcher events to [`WatchEvent`]s of views.
//!
//! The watcher lists (`Init`, `InitApply`..., `InitDone`), then watches (`Apply`, `Delete`), and
//! relists after an error such as 410 Gone. The initial objects are buffered as views (never as
//! full objects) and handed over as one [`WatchEvent::Resynced`], so the consumer can drop entries
//! that vanished while the watch was down.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;

use futures::{Stream, StreamExt, future};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_fn};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::cluster::WatchEvent;
use super::views::NodeView;

/// Folds watcher events into view events.
#[derive(Debug)]
pub(crate) struct Relist<T> {
    buffer: Option<Vec<T>>,
}

impl<T> Default for Relist<T> {
    fn default() -> Self {
        Relist { buffer: None }
    }
}

impl<T> Relist<T> {
    pub(crate) fn on<K>(
        &mut self,
        event: Event<K>,
        map: impl Fn(&K) -> Option<T>,
    ) -> Option<WatchEvent<T>> {
        match event {
            Event::Init => {
                self.buffer = Some(Vec::new());
                None
            }
            Event::InitApply(obj) => {
                let view = map(&obj)?;
                match self.buffer.as_mut() {
                    Some(buffer) => {
                        buffer.push(view);
                        None
                    }
                    // Not expected outside a list; pass it on rather than lose it.
                    None => Some(WatchEvent::Applied(view)),
                }
            }
            Event::InitDone => Some(WatchEvent::Resynced(self.buffer.take().unwrap_or_default())),
            Event::Apply(obj) => map(&obj).map(WatchEvent::Applied),
            Event::Delete(obj) => map(&obj).map(WatchEvent::Deleted),
        }
    }
}

/// A never-ending stream of view events for `api` filtered by `config`, with kube-runtime's
/// default backoff; errors are logged and the watcher resumes (relisting when it must).
pub(crate) fn view_stream<K, T>(
    api: Api<K>,
    config: watcher::Config,
    map: fn(&K) -> Option<T>,
    what: &'static str,
) -> impl Stream<Item = WatchEvent<T>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    T: Send + 'static,
{
    watch_fn(api, config)
        .default_backoff()
        .scan(Relist::default(), move |relist, item| {
            let out = match item {
                Ok(event) => relist.on(event, map),
                Err(err) => {
                    tracing::warn!(watch = what, error = %err, "watch failed; retrying with backoff");
                    None
                }
            };
            future::ready(Some(out))
        })
        .filter_map(future::ready)
}

/// The state of the one object a name-selected watch follows (`None`: it does not exist).
pub(crate) fn single_object<T>(event: WatchEvent<T>) -> Option<T> {
    match event {
        WatchEvent::Applied(v) => Some(v),
        WatchEvent::Deleted(_) => None,
        WatchEvent::Resynced(vs) => vs.into_iter().next(),
    }
}

/// Windows nodes come from two watches with disjoint label selectors: `kubernetes.io/os=windows`,
/// and `beta.kubernetes.io/os=windows,!kubernetes.io/os` (the beta label counts only without the
/// GA one, SPEC section 2), so no node is listed or watched twice. This merges them into one
/// stream: nothing is emitted until both have listed (so the first `Resynced` is complete), a
/// relist of one source yields the union of both, and a deletion is checked before it is passed
/// on. A node moving from one selector to the other (its GA label added or removed) is deleted
/// from one watch and added to the other, in either order: a deletion the other source already
/// contradicts is dropped, and one it may not have caught up with yet is confirmed by reading
/// the node's labels ([`NodeStep::ConfirmDeleted`]).
#[derive(Debug, Default)]
pub(crate) struct NodeMerge {
    sources: [NodeSource; 2],
}

#[derive(Debug, Default)]
struct NodeSource {
    synced: bool,
    nodes: HashMap<String, NodeView>,
}

/// What the merged stream does with one event of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeStep {
    Emit(WatchEvent<NodeView>),
    /// Pass `Deleted` on unless the node still exists as a Windows node (then the other source
    /// will report it).
    ConfirmDeleted(NodeView),
}

impl NodeMerge {
    pub(crate) fn on(&mut self, source: usize, event: WatchEvent<NodeView>) -> Option<NodeStep> {
        let source = source.min(1);
        let other = 1 - source;
        let was_synced = self.all_synced();
        match event {
            WatchEvent::Applied(view) => {
                self.sources[source]
                    .nodes
                    .insert(view.name.clone(), view.clone());
                was_synced.then_some(NodeStep::Emit(WatchEvent::Applied(view)))
            }
            WatchEvent::Deleted(view) => {
                self.sources[source].nodes.remove(&view.name);
                let elsewhere = self.sources[other].nodes.contains_key(&view.name);
                (was_synced && !elsewhere).then_some(NodeStep::ConfirmDeleted(view))
            }
            WatchEvent::Resynced(views) => {
                let src = &mut self.sources[source];
                src.synced = true;
                src.nodes = views.into_iter().map(|v| (v.name.clone(), v)).collect();
                if !self.all_synced() {
                    return None;
                }
                let mut union: HashMap<&str, &NodeView> = HashMap::new();
                for v in self.sources[other].nodes.values() {
                    union.insert(&v.name, v);
                }
                // The source that just listed has the freshest copy.
                for v in self.sources[source].nodes.values() {
                    union.insert(&v.name, v);
                }
                let mut all: Vec<NodeView> = union.into_values().cloned().collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                Some(NodeStep::Emit(WatchEvent::Resynced(all)))
            }
        }
    }

    fn all_synced(&self) -> bool {
        self.sources.iter().all(|s| s.synced)
    }
}

/// Merges the two node watches (see [`NodeMerge`]). `still_windows(name)` reads the node and
/// says whether it exists and is a Windows node by the SPEC's labels rule; it should answer
/// `false` when it cannot tell (a spurious deletion only costs a re-initialisation, a lost one
/// would keep a gone node).
pub(crate) fn merge_node_streams<F, Fut>(
    ga: impl Stream<Item = WatchEvent<NodeView>> + Send + 'static,
    beta: impl Stream<Item = WatchEvent<NodeView>> + Send + 'static,
    still_windows: F,
) -> impl Stream<Item = WatchEvent<NodeView>> + Send + 'static
where
    F: Fn(String) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let input = futures::stream::select(ga.map(|e| (0, e)), beta.map(|e| (1, e)));
    let state = (Box::pin(input), NodeMerge::default(), still_windows);
    futures::stream::unfold(state, |(mut input, mut merge, still_windows)| async move {
        loop {
            let (source, event) = input.next().await?;
            match merge.on(source, event) {
                None => continue,
                Some(NodeStep::Emit(event)) => return Some((event, (input, merge, still_windows))),
                Some(NodeStep::ConfirmDeleted(view)) => {
                    if still_windows(view.name.clone()).await {
                        tracing::debug!(node = %view.name, "node moved between the label watches");
                        continue;
                    }
                    return Some((WatchEvent::Deleted(view), (input, merge, still_windows)));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nv(name: &str) -> NodeView {
        NodeView {
            name: name.into(),
            uid: format!("uid-{name}"),
            instance_id: None,
            instance_type: None,
            windows: true,
            opt_out: None,
            advertised_capacity: None,
            max_pods: None,
            deleting: false,
            unschedulable: false,
            leaving_taints: Vec::new(),
        }
    }

    fn id(x: &u32) -> Option<u32> {
        Some(*x)
    }

    #[test]
    fn relist_buffers_the_initial_list() {
        let mut r = Relist::default();
        assert_eq!(r.on(Event::Init, id), None);
        assert_eq!(r.on(Event::InitApply(1), id), None);
        assert_eq!(r.on(Event::InitApply(2), id), None);
        assert_eq!(
            r.on(Event::InitDone, id),
            Some(WatchEvent::Resynced(vec![1, 2]))
        );
        assert_eq!(r.on(Event::Apply(3), id), Some(WatchEvent::Applied(3)));
        assert_eq!(r.on(Event::Delete(1), id), Some(WatchEvent::Deleted(1)));
        // A relist (after 410 Gone) starts a fresh set.
        assert_eq!(r.on(Event::Init, id), None);
        assert_eq!(r.on(Event::InitApply(3), id), None);
        assert_eq!(
            r.on(Event::InitDone, id),
            Some(WatchEvent::Resynced(vec![3]))
        );
        // An empty list is still a complete set.
        assert_eq!(r.on(Event::Init, id), None);
        assert_eq!(
            r.on(Event::InitDone, id),
            Some(WatchEvent::Resynced(vec![]))
        );
    }

    #[test]
    fn relist_drops_objects_the_map_rejects() {
        let even = |x: &u32| x.is_multiple_of(2).then_some(*x);
        let mut r = Relist::default();
        r.on(Event::Init, even);
        r.on(Event::InitApply(1), even);
        r.on(Event::InitApply(2), even);
        assert_eq!(
            r.on(Event::InitDone, even),
            Some(WatchEvent::Resynced(vec![2]))
        );
        assert_eq!(r.on(Event::Apply(5), even), None);
    }

    #[test]
    fn single_object_follows_the_config_map() {
        assert_eq!(single_object(WatchEvent::Resynced(Vec::<u32>::new())), None);
        assert_eq!(single_object(WatchEvent::Resynced(vec![7])), Some(7));
        assert_eq!(single_object(WatchEvent::Applied(8)), Some(8));
        assert_eq!(single_object(WatchEvent::Deleted(8)), None);
    }

    fn emit(e: WatchEvent<NodeView>) -> Option<NodeStep> {
        Some(NodeStep::Emit(e))
    }

    #[test]
    fn node_merge_waits_for_both_lists() {
        let mut m = NodeMerge::default();
        assert_eq!(m.on(0, WatchEvent::Resynced(vec![nv("a")])), None);
        assert_eq!(m.on(0, WatchEvent::Applied(nv("b"))), None);
        assert_eq!(
            m.on(1, WatchEvent::Resynced(vec![nv("old")])),
            emit(WatchEvent::Resynced(vec![nv("a"), nv("b"), nv("old")]))
        );
        assert_eq!(
            m.on(1, WatchEvent::Applied(nv("c"))),
            emit(WatchEvent::Applied(nv("c")))
        );
        assert_eq!(
            m.on(0, WatchEvent::Deleted(nv("a"))),
            Some(NodeStep::ConfirmDeleted(nv("a")))
        );
        // A relist of one source is reported as the union of both.
        assert_eq!(
            m.on(0, WatchEvent::Resynced(vec![nv("b")])),
            emit(WatchEvent::Resynced(vec![nv("b"), nv("c"), nv("old")]))
        );
    }

    #[test]
    fn node_moving_between_selectors_is_not_reported_gone() {
        let mut m = NodeMerge::default();
        m.on(0, WatchEvent::Resynced(vec![]));
        m.on(1, WatchEvent::Resynced(vec![nv("n")]));
        // The node gets the GA label and appears in source 0 before it leaves source 1.
        assert_eq!(
            m.on(0, WatchEvent::Applied(nv("n"))),
            emit(WatchEvent::Applied(nv("n")))
        );
        assert_eq!(m.on(1, WatchEvent::Deleted(nv("n"))), None);
        // Or it leaves source 1 first: the deletion must be confirmed.
        m.on(1, WatchEvent::Applied(nv("m")));
        assert_eq!(
            m.on(1, WatchEvent::Deleted(nv("m"))),
            Some(NodeStep::ConfirmDeleted(nv("m")))
        );
    }

    fn merged(
        ga: Vec<WatchEvent<NodeView>>,
        beta: Vec<WatchEvent<NodeView>>,
        windows_now: &'static [&'static str],
    ) -> Vec<WatchEvent<NodeView>> {
        let stream = merge_node_streams(
            futures::stream::iter(ga),
            futures::stream::iter(beta),
            move |name: String| future::ready(windows_now.contains(&name.as_str())),
        );
        futures::executor::block_on(stream.collect())
    }

    #[test]
    fn a_deletion_is_dropped_when_the_node_is_still_windows() {
        let got = merged(
            vec![
                WatchEvent::Resynced(vec![nv("moving"), nv("gone")]),
                WatchEvent::Deleted(nv("moving")),
                WatchEvent::Deleted(nv("gone")),
            ],
            vec![WatchEvent::Resynced(vec![])],
            &["moving"],
        );
        let resynced = WatchEvent::Resynced(vec![nv("gone"), nv("moving")]);
        assert_eq!(got, vec![resynced, WatchEvent::Deleted(nv("gone"))]);
        // Nothing before both sources listed.
        let early = merged(
            vec![WatchEvent::Resynced(vec![]), WatchEvent::Applied(nv("x"))],
            vec![],
            &[],
        );
        assert!(early.is_empty(), "{early:?}");
    }
}
