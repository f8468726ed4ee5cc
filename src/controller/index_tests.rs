//! The index, tested by calling it: watch events in, routes and what it knows out.

use super::*;
use crate::controller::leaving::{Leaving, leaving};
use crate::k8s::{OptOut, PodPhase};

fn node(name: &str, uid: &str, windows: bool) -> NodeView {
    NodeView {
        name: name.into(),
        uid: uid.into(),
        instance_id: Some(format!("i-{uid}")),
        instance_type: Some("m5.xlarge".into()),
        windows,
        opt_out: None,
        advertised_capacity: None,
        max_pods: None,
        deleting: false,
        unschedulable: false,
        leaving_taints: Vec::new(),
    }
}

fn opted_out(name: &str, uid: &str, why: OptOut) -> NodeView {
    NodeView {
        opt_out: Some(why),
        ..node(name, uid, true)
    }
}

fn pod(uid: &str, namespace: &str, node: &str) -> PodView {
    PodView {
        uid: PodUid::new(uid),
        namespace: namespace.into(),
        name: uid.into(),
        node_name: node.into(),
        phase: PodPhase::Running,
        host_network: false,
        deleting: false,
        ip_annotation: None,
        has_annotations: false,
    }
}

fn names(index: &Index) -> Vec<&str> {
    index.nodes().map(|n| n.name.as_str()).collect()
}

fn uids_of(index: &Index, node: &str) -> Vec<String> {
    let mut uids: Vec<String> = (index.pods_of(node).iter())
        .map(|p| p.uid.to_string())
        .collect();
    uids.sort();
    uids
}

/// Short form of a route, for the tables.
fn short(route: &Route) -> String {
    match route {
        Route::NodeApplied(v) => format!("applied {}/{}", v.name, v.uid),
        Route::NodeGone(n) => format!("gone {n}"),
        Route::PodApplied(p) => format!("pod {} on {}", p.uid, p.node_name),
        Route::PodDeleted { node, uid } => format!("pod {uid} off {node}"),
        Route::PodsResynced => "pods resynced".into(),
    }
}

/// (event, routes, managed Windows nodes in the index after it)
type NodeCase = (
    WatchEvent<NodeView>,
    &'static [&'static str],
    &'static [&'static str],
);

fn run_node_cases(index: &mut Index, cases: impl IntoIterator<Item = NodeCase>) {
    for (i, (ev, routes, after)) in cases.into_iter().enumerate() {
        let got: Vec<String> = index.on_nodes(ev).iter().map(short).collect();
        assert_eq!(got, routes, "case {i}");
        assert_eq!(names(index), after, "case {i}");
    }
}

#[test]
fn node_events_keep_the_windows_nodes_and_route_each_change() {
    let cases: [NodeCase; 9] = [
        (
            WatchEvent::Applied(node("a", "1", true)),
            &["applied a/1"],
            &["a"],
        ),
        // A Linux node is not kept, and its name's worker (if any) stops.
        (
            WatchEvent::Applied(node("l", "2", false)),
            &["gone l"],
            &["a"],
        ),
        (
            WatchEvent::Applied(node("b", "3", true)),
            &["applied b/3"],
            &["a", "b"],
        ),
        // Re-created under the same name: routed with its new uid.
        (
            WatchEvent::Applied(node("a", "4", true)),
            &["applied a/4"],
            &["a", "b"],
        ),
        // A Windows node relabelled: it leaves.
        (
            WatchEvent::Applied(node("b", "3", false)),
            &["gone b"],
            &["a"],
        ),
        (WatchEvent::Deleted(node("a", "4", true)), &["gone a"], &[]),
        (WatchEvent::Deleted(node("x", "5", true)), &["gone x"], &[]),
        (
            WatchEvent::Applied(node("c", "6", true)),
            &["applied c/6"],
            &["c"],
        ),
        // A relist: what is absent goes first, then every Windows node in name order.
        (
            WatchEvent::Resynced(vec![
                node("e", "7", true),
                node("l", "2", false),
                node("d", "8", true),
            ]),
            &["gone c", "applied d/8", "applied e/7"],
            &["d", "e"],
        ),
    ];
    let mut index = Index::default();
    run_node_cases(&mut index, cases);
    assert_eq!(index.node("d").map(|n| n.uid.as_str()), Some("8"));
}

#[test]
fn opted_out_nodes_are_as_if_not_windows() {
    let cases: [NodeCase; 9] = [
        (
            WatchEvent::Applied(node("a", "1", true)),
            &["applied a/1"],
            &["a"],
        ),
        // Opted out from the start: never managed, no worker.
        (
            WatchEvent::Applied(opted_out("o", "2", OptOut::Label)),
            &["gone o"],
            &["a"],
        ),
        (
            WatchEvent::Applied(opted_out("auto", "3", OptOut::AutoMode)),
            &["gone auto"],
            &["a"],
        ),
        // A managed node labelled: it leaves, its worker stops.
        (
            WatchEvent::Applied(opted_out("a", "1", OptOut::Label)),
            &["gone a"],
            &[],
        ),
        // Changed again while opted out: still nothing.
        (
            WatchEvent::Applied(opted_out("a", "1", OptOut::Label)),
            &["gone a"],
            &[],
        ),
        // The label removed: managed again (a new worker rebuilds the pool).
        (
            WatchEvent::Applied(node("a", "1", true)),
            &["applied a/1"],
            &["a"],
        ),
        // A Linux node with the label is not Windows anyway.
        (
            WatchEvent::Applied(NodeView {
                opt_out: Some(OptOut::Label),
                ..node("l", "4", false)
            }),
            &["gone l"],
            &["a"],
        ),
        // A relist: the opted-out nodes go with the absent ones.
        (
            WatchEvent::Resynced(vec![
                opted_out("a", "1", OptOut::AutoMode),
                node("b", "5", true),
                opted_out("o", "2", OptOut::Label),
            ]),
            &["gone a", "applied b/5"],
            &["b"],
        ),
        (
            WatchEvent::Deleted(opted_out("o", "2", OptOut::Label)),
            &["gone o"],
            &["b"],
        ),
    ];
    let mut index = Index::default();
    index.apply_pod(pod("p1", "ns", "a"));
    run_node_cases(&mut index, cases);
    // The pods of an opted-out node stay known: opted in again, its worker gets them.
    assert_eq!(uids_of(&index, "a"), ["p1"]);
}

fn with(view: NodeView, deleting: bool, unschedulable: bool, taints: &[&str]) -> NodeView {
    NodeView {
        deleting,
        unschedulable,
        leaving_taints: taints.iter().map(|t| t.to_string()).collect(),
        ..view
    }
}

#[test]
fn a_leaving_node_stays_managed_and_its_worker_hears_each_change() {
    let cordoned = with(node("a", "1", true), false, true, &[]);
    let uncordoned = node("a", "1", true);
    let deleting = with(node("a", "1", true), true, true, &[]);
    // (event, routes, managed nodes, what the index says of "a" after it)
    type Case = (
        WatchEvent<NodeView>,
        &'static [&'static str],
        &'static [&'static str],
        Option<Leaving>,
    );
    let cases: [Case; 5] = [
        (
            WatchEvent::Applied(uncordoned.clone()),
            &["applied a/1"],
            &["a"],
            None,
        ),
        (
            WatchEvent::Applied(cordoned.clone()),
            &["applied a/1"],
            &["a"],
            Some(Leaving::Cordoned),
        ),
        (
            WatchEvent::Applied(uncordoned),
            &["applied a/1"],
            &["a"],
            None,
        ),
        (
            WatchEvent::Resynced(vec![cordoned]),
            &["applied a/1"],
            &["a"],
            Some(Leaving::Cordoned),
        ),
        (
            WatchEvent::Applied(deleting),
            &["applied a/1"],
            &["a"],
            Some(Leaving::Deleting),
        ),
    ];
    let mut index = Index::default();
    for (i, (ev, routes, after, says)) in cases.into_iter().enumerate() {
        let got = index.on_nodes(ev);
        let short_routes: Vec<String> = got.iter().map(short).collect();
        assert_eq!(short_routes, routes, "case {i}");
        assert_eq!(names(&index), after, "case {i}");
        // The route carries the signals to the worker, and the index keeps them.
        for route in &got {
            if let Route::NodeApplied(v) = route {
                assert_eq!(leaving(v), says, "case {i}: routed");
            }
        }
        assert_eq!(index.node("a").and_then(leaving), says, "case {i}: kept");
    }
}

#[test]
fn pod_events_keep_the_bound_pods_of_every_node() {
    // (event, routes, pods of n1, pods of n2 after it)
    type Case = (
        WatchEvent<PodView>,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );
    let cases: [Case; 9] = [
        (
            WatchEvent::Applied(pod("p1", "ns", "n1")),
            &["pod p1 on n1"],
            &["p1"],
            &[],
        ),
        (
            WatchEvent::Applied(pod("p2", "ns", "n1")),
            &["pod p2 on n1"],
            &["p1", "p2"],
            &[],
        ),
        // Pods of nodes not (yet) known as Windows are kept: the node may turn out to be.
        (
            WatchEvent::Applied(pod("p3", "other", "n2")),
            &["pod p3 on n2"],
            &["p1", "p2"],
            &["p3"],
        ),
        // Applied again, as it was (KWOK's or a kubelet's status update): nothing to route.
        (
            WatchEvent::Applied(pod("p1", "ns", "n1")),
            &[],
            &["p1", "p2"],
            &["p3"],
        ),
        // Changed (a new view): routed, and still one entry.
        (
            WatchEvent::Applied(PodView {
                deleting: true,
                ..pod("p1", "ns", "n1")
            }),
            &["pod p1 on n1"],
            &["p1", "p2"],
            &["p3"],
        ),
        (
            WatchEvent::Deleted(pod("p2", "ns", "n1")),
            &["pod p2 off n1"],
            &["p1"],
            &["p3"],
        ),
        (
            WatchEvent::Deleted(pod("p9", "ns", "n1")),
            &["pod p9 off n1"],
            &["p1"],
            &["p3"],
        ),
        (
            WatchEvent::Deleted(pod("p3", "other", "n2")),
            &["pod p3 off n2"],
            &["p1"],
            &[],
        ),
        // A relist replaces everything.
        (
            WatchEvent::Resynced(vec![pod("p4", "ns", "n2"), pod("p5", "ns", "n2")]),
            &["pods resynced"],
            &[],
            &["p4", "p5"],
        ),
    ];
    let mut index = Index::default();
    for (i, (ev, routes, n1, n2)) in cases.into_iter().enumerate() {
        let got: Vec<String> = index.on_pods(ev).iter().map(short).collect();
        assert_eq!(got, routes, "case {i}");
        assert_eq!(uids_of(&index, "n1"), n1, "case {i}");
        assert_eq!(uids_of(&index, "n2"), n2, "case {i}");
    }
    // A node with no pod left has no entry at all.
    assert!(!index.pods.contains_key("n1"));
}

#[test]
fn pod_views_share_their_node_and_namespace_names() {
    let mut index = Index::default();
    index.apply_pod(pod("p1", "ns", "n1"));
    index.apply_pod(pod("p2", "ns", "n1"));
    let pods = index.pods_of("n1");
    assert!(Arc::ptr_eq(&pods[0].node_name, &pods[1].node_name));
    assert!(Arc::ptr_eq(&pods[0].namespace, &pods[1].namespace));
    index.resync_pods(vec![pod("p3", "ns", "n1"), pod("p4", "ns", "n1")]);
    let pods = index.pods_of("n1");
    assert!(Arc::ptr_eq(&pods[0].node_name, &pods[1].node_name));
    assert!(Arc::ptr_eq(&pods[0].namespace, &pods[1].namespace));
}

#[test]
fn synced_once_every_watch_has_listed() {
    type Step = (&'static str, fn(&mut Index));
    let steps: [Step; 4] = [
        ("nodes", |i| {
            i.resync_nodes(Vec::new());
        }),
        ("pods", |i| {
            i.resync_pods(Vec::new());
        }),
        ("config", Index::config_seen),
        ("foreign", Index::foreign_seen),
    ];
    // Whatever the order, synced exactly after the last of the four.
    for first in 0..steps.len() {
        let mut index = Index::default();
        let order: Vec<_> = (0..steps.len())
            .map(|k| (first + k) % steps.len())
            .collect();
        for (n, &k) in order.iter().enumerate() {
            assert!(!index.synced(), "before {}", steps[k].0);
            (steps[k].1)(&mut index);
            assert_eq!(index.synced(), n == steps.len() - 1, "after {}", steps[k].0);
        }
    }
    // Single events do not count as a listing.
    let mut index = Index::default();
    index.apply_node(node("a", "1", true));
    index.apply_pod(pod("p1", "ns", "a"));
    index.config_seen();
    index.foreign_seen();
    assert!(!index.synced());
}
