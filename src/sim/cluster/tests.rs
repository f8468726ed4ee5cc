use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;

use super::*;
use crate::k8s::{
    AnnotateOutcome, Cluster, ClusterError, EnsureOutcome, EventSeverity, ObjectRef, PodView,
};

pub(super) fn node(name: &str) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        instance_id: Some(format!("i-{:017x}", name.len())),
        instance_type: Some("m5.large".into()),
        windows: true,
    }
}

fn cluster() -> SimCluster {
    SimCluster::new(SimClusterConfig::instant(1))
}

#[tokio::test(start_paused = true)]
async fn annotation_is_written_once_for_the_right_uid_only() {
    let c = cluster();
    c.add_node(node("n1"));
    let uid = c.bind_pod("ns", "p", "n1");
    assert_eq!(
        c.annotate_pod("ns", "p", "wrong-uid", "10.0.0.5/19", true)
            .await
            .unwrap(),
        AnnotateOutcome::PodGone
    );
    assert_eq!(c.pod_annotation("ns", "p"), None);
    assert_eq!(
        c.annotate_pod("ns", "p", &uid, "10.0.0.5/19", true)
            .await
            .unwrap(),
        AnnotateOutcome::Written
    );
    // Never overwritten, whoever asks.
    assert_eq!(
        c.annotate_pod("ns", "p", &uid, "10.0.0.6/19", true)
            .await
            .unwrap(),
        AnnotateOutcome::AlreadyAnnotated("10.0.0.5/19".into())
    );
    assert_eq!(c.pod_annotation("ns", "p").as_deref(), Some("10.0.0.5/19"));
    // Re-created under the same name: the old UID no longer matches.
    let new_uid = c.bind_pod("ns", "p", "n1");
    assert_ne!(new_uid, uid);
    assert_eq!(
        c.annotate_pod("ns", "p", &uid, "10.0.0.5/19", true)
            .await
            .unwrap(),
        AnnotateOutcome::PodGone
    );
    assert_eq!(c.pod_annotation("ns", "p"), None);
    assert!(c.delete_pod("ns", "p"));
    assert_eq!(
        c.annotate_pod("ns", "p", &new_uid, "10.0.0.7/19", true)
            .await
            .unwrap(),
        AnnotateOutcome::PodGone
    );
    let counts = c.request_counts();
    assert_eq!(
        (
            counts.annotate,
            counts.annotate_written,
            counts.annotate_already,
            counts.annotate_pod_gone
        ),
        (5, 1, 1, 3)
    );
    assert_eq!(c.time_to_ip().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn watches_list_first_then_follow_changes() {
    let c = cluster();
    c.add_node(node("n1"));
    c.add_node(NodeSpec {
        windows: false,
        ..node("linux")
    });
    let uid = c.bind_pod("ns", "p1", "n1");
    let mut nodes = c.watch_nodes().boxed();
    let mut pods = c.watch_pods().boxed();
    let WatchEvent::Resynced(listed) = nodes.next().await.unwrap() else {
        panic!("nodes: list first");
    };
    // Only Windows nodes, as the real watch's label selectors.
    assert_eq!(listed.iter().map(|n| &n.name).collect::<Vec<_>>(), ["n1"]);
    let WatchEvent::Resynced(listed) = pods.next().await.unwrap() else {
        panic!("pods: list first");
    };
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].uid.to_string(), uid);

    c.annotate_pod("ns", "p1", &uid, "10.0.0.9/19", true)
        .await
        .unwrap();
    let WatchEvent::Applied(view) = pods.next().await.unwrap() else {
        panic!("annotation: applied");
    };
    assert_eq!(view.ip_annotation.as_deref(), Some("10.0.0.9/19"));
    c.set_node_capacity("n1", Some(9)).await.unwrap();
    let WatchEvent::Applied(view) = nodes.next().await.unwrap() else {
        panic!("capacity: applied");
    };
    assert_eq!(view.advertised_capacity.as_deref(), Some("9"));
    assert_eq!(c.node_capacity("n1"), Some(9));

    c.delete_pod("ns", "p1");
    let WatchEvent::Deleted(PodView { uid: gone, .. }) = pods.next().await.unwrap() else {
        panic!("deleted");
    };
    assert_eq!(gone.to_string(), uid);
    c.bind_pod("ns", "p2", "n1");
    let _ = pods.next().await;
    c.relist_pods();
    let WatchEvent::Resynced(all) = pods.next().await.unwrap() else {
        panic!("relist");
    };
    assert_eq!(all.iter().map(|p| &*p.name).collect::<Vec<_>>(), ["p2"]);
    // list 1 + applied 1 + deleted 1 + applied 1 + relist 1
    assert_eq!(c.pod_events_delivered(), 5);
}

#[tokio::test(start_paused = true)]
async fn requests_take_a_few_virtual_milliseconds() {
    let c = SimCluster::new(SimClusterConfig::default());
    c.add_node(node("n1"));
    let start = tokio::time::Instant::now();
    for _ in 0..20 {
        c.set_node_capacity("n1", Some(9)).await.unwrap();
    }
    let each = start.elapsed() / 20;
    assert!(
        each >= Duration::from_millis(1) && each <= Duration::from_millis(10),
        "{each:?}"
    );
    assert_eq!(c.request_counts().node_capacity, 20);
    assert!(matches!(
        c.set_node_capacity("absent", Some(1)).await,
        Err(ClusterError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn injected_faults_refuse_or_lose_the_answer() {
    let c = cluster();
    c.add_node(node("n1"));
    let uid = c.bind_pod("ns", "p", "n1");
    let conflict = ClusterError::Conflict("injected".into());
    c.inject(WriteKind::Annotate, WriteFault::Refuse(conflict.clone()), 1);
    assert_eq!(
        c.annotate_pod("ns", "p", &uid, "10.0.0.5/19", true).await,
        Err(conflict)
    );
    assert_eq!(c.pod_annotation("ns", "p"), None);
    let timeout = ClusterError::Transport("injected timeout".into());
    c.inject(
        WriteKind::Annotate,
        WriteFault::ApplyThenFail(timeout.clone()),
        1,
    );
    assert_eq!(
        c.annotate_pod("ns", "p", &uid, "10.0.0.5/19", true).await,
        Err(timeout)
    );
    // The write happened although the caller saw an error.
    assert_eq!(c.pod_annotation("ns", "p").as_deref(), Some("10.0.0.5/19"));
    assert_eq!(c.request_counts().faulted, 2);
    // Faults are used up.
    assert!(matches!(
        c.annotate_pod("ns", "p", &uid, "10.0.0.5/19", true).await,
        Ok(AnnotateOutcome::AlreadyAnnotated(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn config_and_foreign_ipam_watches() {
    let c = cluster();
    let mut config = c.watch_config("winipam-system", "winipam").boxed();
    let mut foreign = c.watch_foreign_ipam().boxed();
    assert_eq!(config.next().await, Some(None));
    assert_eq!(foreign.next().await, Some(None));
    let data = BTreeMap::from([("warm-ip-target".to_string(), "5".to_string())]);
    c.set_config_map("winipam-system", "winipam", data.clone());
    c.set_config_map("other", "winipam", BTreeMap::new());
    let seen = config.next().await.unwrap().unwrap();
    assert_eq!(seen.data, data);
    c.set_config_map(
        "kube-system",
        "amazon-vpc-cni",
        BTreeMap::from([("enable-windows-ipam".to_string(), "true".to_string())]),
    );
    let seen = foreign.next().await.unwrap().unwrap();
    assert!(crate::k8s::views::foreign_ipam_enabled(&seen.data));
    c.delete_config_map("kube-system", "amazon-vpc-cni");
    assert_eq!(foreign.next().await, Some(None));
    c.delete_config_map("winipam-system", "winipam");
    assert_eq!(config.next().await, Some(None));
}

#[tokio::test(start_paused = true)]
async fn pool_objects_follow_their_node() {
    let c = cluster();
    let uid = c.add_node(node("n1"));
    assert_eq!(
        c.ensure_pool_object("n1", &uid).await.unwrap(),
        EnsureOutcome::Created
    );
    assert_eq!(
        c.ensure_pool_object("n1", &uid).await.unwrap(),
        EnsureOutcome::Existed
    );
    let status = NodeAddressPoolStatus {
        capacity: Some(9),
        ..Default::default()
    };
    c.write_pool_status("n1", &status).await.unwrap();
    assert_eq!(
        c.read_pool_statuses().await.unwrap(),
        vec![crate::k8s::PoolRead {
            node: "n1".to_string(),
            owner_uid: Some(uid.clone()),
            status: status.clone(),
        }]
    );
    // A node re-created under the same name: the object is adopted.
    let uid2 = c.add_node(node("n1"));
    assert_eq!(
        c.ensure_pool_object("n1", &uid2).await.unwrap(),
        EnsureOutcome::Adopted
    );
    // Deleting the node garbage-collects its pool.
    assert!(c.delete_node("n1"));
    assert!(!c.pool_object_exists("n1"));
    assert!(matches!(
        c.write_pool_status("n1", &status).await,
        Err(ClusterError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn events_are_folded_and_counted() {
    let c = cluster();
    let object = ObjectRef {
        kind: crate::k8s::ObjectKind::Node,
        name: "n1".into(),
        namespace: None,
        uid: "u1".into(),
    };
    for _ in 0..3 {
        c.publish_event(&object, EventSeverity::Warning, "SubnetExhausted", "full")
            .await
            .unwrap();
    }
    let events = c.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].count, 3);
    assert_eq!(c.event_counts()["SubnetExhausted"], 3);
    let counts = c.request_counts();
    assert_eq!((counts.event_create, counts.event_patch), (1, 2));
}
