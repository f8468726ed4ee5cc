//! `KubeCluster`'s watches on a real kube-apiserver, as the controller's ServiceAccount: trimmed
//! views, Applied/Deleted, the first Resynced, and the name-selected ConfigMaps (which RBAC with
//! `resourceNames` must allow).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use winipam::k8s::{Cluster, KubeCluster, NodeView, PodPhase, PodView, WatchEvent};

use crate::k8s_support::{K8sEnv, meta, next_within, node, pod, string_map};

fn cluster(env: &K8sEnv) -> KubeCluster {
    KubeCluster::new(env.controller.clone(), None)
}

/// Items of `stream` until `done` says so (or panics after `secs`).
async fn until<S, T>(stream: &mut S, secs: u64, mut done: impl FnMut(&T) -> bool) -> Vec<T>
where
    S: Stream<Item = T> + Unpin,
    T: std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(item)) => {
                let stop = done(&item);
                seen.push(item);
                if stop {
                    return seen;
                }
            }
            Ok(None) => panic!("the stream ended; seen {seen:?}"),
            Err(_) => panic!("not done within {secs} s; seen {seen:?}"),
        }
    }
}

/// Everything `stream` yields during `secs`.
async fn during<S, T>(stream: &mut S, secs: u64) -> Vec<T>
where
    S: Stream<Item = T> + Unpin,
{
    let mut seen = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(secs));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return seen,
            item = stream.next() => match item {
                Some(item) => seen.push(item),
                None => return seen,
            },
        }
    }
}

fn names<T>(events: &[WatchEvent<T>], name: impl Fn(&T) -> &str) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            WatchEvent::Applied(v) => format!("applied {}", name(v)),
            WatchEvent::Deleted(v) => format!("deleted {}", name(v)),
            WatchEvent::Resynced(vs) => format!("resynced {}", vs.len()),
        })
        .collect()
}

#[tokio::test]
async fn node_watch_sees_windows_nodes_by_either_label_as_views() {
    let env = K8sEnv::new("k8s-watch-nodes").await;
    let c = cluster(&env);
    let mut nodes = Box::pin(c.watch_nodes());
    let first = next_within(&mut nodes, 20).await;
    assert!(matches!(first, WatchEvent::Resynced(_)), "{first:?}");

    let ga = env.unique("ga");
    let beta = env.unique("beta");
    let linux = env.unique("linux");
    let plain = env.unique("plain");
    env.create_node(node(
        &ga,
        &[
            ("kubernetes.io/os", "windows"),
            ("node.kubernetes.io/instance-type", "m5.large"),
        ],
        Some("aws:///us-west-2a/i-0123456789abcdef0"),
    ))
    .await;
    env.create_node(node(
        &beta,
        &[
            ("beta.kubernetes.io/os", "windows"),
            ("beta.kubernetes.io/instance-type", "c5.xlarge"),
        ],
        Some("garbage"),
    ))
    .await;
    // The GA label says linux: the beta label does not count.
    env.create_node(node(
        &linux,
        &[
            ("kubernetes.io/os", "linux"),
            ("beta.kubernetes.io/os", "windows"),
        ],
        None,
    ))
    .await;
    env.create_node(node(&plain, &[], None)).await;

    let mut got: BTreeMap<String, NodeView> = BTreeMap::new();
    let seen = until(&mut nodes, 20, |e| {
        if let WatchEvent::Applied(v) = e
            && (v.name == ga || v.name == beta)
        {
            got.insert(v.name.clone(), v.clone());
        }
        got.len() == 2
    })
    .await;
    let all = names(&seen, |v| &v.name);
    assert!(
        !all.iter()
            .any(|n| n.ends_with(&linux) || n.ends_with(&plain)),
        "{all:?}"
    );
    let g = &got[&ga];
    assert_eq!(g.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert_eq!(g.instance_type.as_deref(), Some("m5.large"));
    assert!(g.windows && !g.deleting);
    assert!(!g.uid.is_empty());
    let b = &got[&beta];
    assert_eq!(b.instance_id, None);
    assert_eq!(b.instance_type.as_deref(), Some("c5.xlarge"));
    assert!(b.windows);

    let admin_nodes: Api<Node> = Api::all(env.admin.clone());
    // The beta-only node gets the GA label: it moves between the two watches but never looks
    // deleted.
    let label = |os: &str| json!({"metadata": {"labels": {"kubernetes.io/os": os}}});
    admin_nodes
        .patch(
            &beta,
            &PatchParams::default(),
            &Patch::Merge(&label("windows")),
        )
        .await
        .unwrap();
    let moved = during(&mut nodes, 3).await;
    let moved_names = names(&moved, |v| &v.name);
    assert!(
        moved_names.contains(&format!("applied {beta}")),
        "{moved_names:?}"
    );
    assert!(
        !moved_names.contains(&format!("deleted {beta}")),
        "{moved_names:?}"
    );

    // Relabelled linux: gone for us.
    admin_nodes
        .patch(&ga, &PatchParams::default(), &Patch::Merge(&label("linux")))
        .await
        .unwrap();
    until(
        &mut nodes,
        20,
        |e| matches!(e, WatchEvent::Deleted(v) if v.name == ga),
    )
    .await;
    // Deleted.
    admin_nodes
        .delete(&beta, &DeleteParams::default())
        .await
        .unwrap();
    until(
        &mut nodes,
        20,
        |e| matches!(e, WatchEvent::Deleted(v) if v.name == beta),
    )
    .await;
}

#[tokio::test]
async fn pod_watch_sees_bound_pods_only_as_views() {
    let env = K8sEnv::new("k8s-watch-pods").await;
    let c = cluster(&env);
    let mut pods = Box::pin(c.watch_pods());
    let first = next_within(&mut pods, 20).await;
    assert!(matches!(first, WatchEvent::Resynced(_)), "{first:?}");

    env.create_pod(pod("unbound", None, None)).await;
    let bound = env
        .create_pod(pod("bound", Some("win-1"), Some(&[("a", "b")])))
        .await;
    let uid = bound.metadata.uid.clone().unwrap();
    let mine = |v: &PodView| *v.namespace == *env.ns;

    let seen = until(
        &mut pods,
        20,
        |e| matches!(e, WatchEvent::Applied(v) if mine(v)),
    )
    .await;
    let Some(WatchEvent::Applied(view)) = seen.last() else {
        panic!("{seen:?}")
    };
    assert_eq!(
        view,
        &PodView {
            uid: uid.as_str().into(),
            namespace: env.ns.as_str().into(),
            name: "bound".into(),
            node_name: "win-1".into(),
            phase: PodPhase::Pending,
            host_network: false,
            deleting: false,
            ip_annotation: None,
            has_annotations: true,
        }
    );
    // The apiserver's UID comes back exactly, as the annotation patch's precondition needs it.
    assert_eq!(view.uid.to_string(), uid);

    assert_eq!(
        c.annotate_pod(&env.ns, "bound", &uid, "10.0.0.4/19", true)
            .await
            .unwrap(),
        winipam::k8s::AnnotateOutcome::Written
    );
    until(&mut pods, 20, |e| {
        matches!(e, WatchEvent::Applied(v) if mine(v) && v.ip_annotation.as_deref() == Some("10.0.0.4/19"))
    })
    .await;

    let admin_pods: Api<Pod> = Api::namespaced(env.admin.clone(), &env.ns);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    admin_pods.delete("bound", &now).await.unwrap();
    let seen = until(
        &mut pods,
        20,
        |e| matches!(e, WatchEvent::Deleted(v) if mine(v)),
    )
    .await;
    let mine_only: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Applied(v) | WatchEvent::Deleted(v) if mine(v) => Some(&*v.name),
            _ => None,
        })
        .collect();
    assert!(!mine_only.contains(&"unbound"), "{mine_only:?}");
    // A fresh watch lists the current state: the unbound pod is not in it, the deleted one neither.
    let mut again = Box::pin(c.watch_pods());
    match next_within(&mut again, 20).await {
        WatchEvent::Resynced(all) => assert!(!all.iter().any(mine), "{all:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn config_watch_follows_the_one_config_map() {
    let env = K8sEnv::new("k8s-watch-config").await;
    let c = cluster(&env);
    let mut config = Box::pin(c.watch_config(&env.ns, "winipam"));
    assert_eq!(next_within(&mut config, 20).await, None);

    let cms: Api<ConfigMap> = Api::namespaced(env.admin.clone(), &env.ns);
    // Another ConfigMap in the namespace is not seen.
    let other = ConfigMap {
        metadata: meta("other"),
        data: Some(string_map(&[("windows-warm-ip-target", "9")])),
        ..ConfigMap::default()
    };
    cms.create(&PostParams::default(), &other).await.unwrap();
    let cm = ConfigMap {
        metadata: meta("winipam"),
        data: Some(string_map(&[("windows-warm-ip-target", "5")])),
        ..ConfigMap::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let view = next_within(&mut config, 20)
        .await
        .expect("the ConfigMap exists");
    assert_eq!(view.name, "winipam");
    assert_eq!(view.namespace, env.ns);
    assert!(!view.uid.is_empty());
    assert_eq!(view.data, string_map(&[("windows-warm-ip-target", "5")]));

    let change = json!({"data": {"windows-warm-ip-target": "7", "ip-cooldown-seconds": "60"}});
    cms.patch("winipam", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    let view = next_within(&mut config, 20).await.expect("still exists");
    assert_eq!(
        view.data,
        string_map(&[
            ("ip-cooldown-seconds", "60"),
            ("windows-warm-ip-target", "7")
        ])
    );

    cms.delete("winipam", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(next_within(&mut config, 20).await, None);
}

/// The only test that touches kube-system/amazon-vpc-cni (it is cluster-wide state).
#[tokio::test]
async fn foreign_ipam_watch_follows_enable_windows_ipam() {
    let env = K8sEnv::new("k8s-watch-foreign").await;
    let c = cluster(&env);
    let cms: Api<ConfigMap> = Api::namespaced(env.admin.clone(), "kube-system");
    let _ = cms.delete("amazon-vpc-cni", &DeleteParams::default()).await;
    // The watch hands out the ConfigMap; the switch is read with the controller's own parser.
    let mut foreign = Box::pin(
        c.watch_foreign_ipam()
            .map(|view| view.is_some_and(|v| winipam::k8s::views::foreign_ipam_enabled(&v.data))),
    );
    assert!(!next_within(&mut foreign, 20).await);

    let cm = ConfigMap {
        metadata: meta("amazon-vpc-cni"),
        data: Some(string_map(&[("enable-windows-ipam", "true")])),
        ..ConfigMap::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(next_within(&mut foreign, 20).await);

    let off = json!({"data": {"enable-windows-ipam": "false"}});
    cms.patch(
        "amazon-vpc-cni",
        &PatchParams::default(),
        &Patch::Merge(&off),
    )
    .await
    .unwrap();
    assert!(!next_within(&mut foreign, 20).await);

    let on = json!({"data": {"enable-windows-ipam": "True"}});
    cms.patch(
        "amazon-vpc-cni",
        &PatchParams::default(),
        &Patch::Merge(&on),
    )
    .await
    .unwrap();
    assert!(next_within(&mut foreign, 20).await);

    cms.delete("amazon-vpc-cni", &DeleteParams::default())
        .await
        .unwrap();
    assert!(!next_within(&mut foreign, 20).await);
}
