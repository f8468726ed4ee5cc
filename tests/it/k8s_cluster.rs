//! `KubeCluster`'s writes on a real kube-apiserver, acting as the controller's ServiceAccount
//! with exactly the RBAC of the rendered base (deploy/kustomize/base).

use k8s_openapi::api::core::v1::{ConfigMap, Node, NodeStatus, Pod, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use winipam::crd::{AddressCounts, CooldownRecord, NodeAddressPool, NodeAddressPoolStatus};
use winipam::k8s::views::PRIVATE_IPV4_ADDRESS;
use winipam::k8s::{
    AnnotateOutcome, Cluster, ClusterError, EnsureOutcome, EventSeverity, KubeCluster, ObjectKind,
    ObjectRef,
};

use crate::k8s_support::{K8sEnv, node, pod, string_map};

fn cluster(env: &K8sEnv) -> KubeCluster {
    KubeCluster::new(env.controller.clone(), Some("winipam-test-0".into()))
}

async fn annotations(
    client: &Client,
    ns: &str,
    name: &str,
) -> std::collections::BTreeMap<String, String> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("read the pod")
        .metadata
        .annotations
        .unwrap_or_default()
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().expect("a created pod has a uid")
}

#[tokio::test]
async fn annotates_with_and_without_an_annotations_map_and_keeps_the_others() {
    let env = K8sEnv::new("k8s-annotate").await;
    let c = cluster(&env);

    let with_map = env
        .create_pod(pod(
            "with-map",
            Some("n1"),
            Some(&[("team", "a"), ("x/y", "z")]),
        ))
        .await;
    let outcome = c
        .annotate_pod(
            &env.ns,
            "with-map",
            &uid_of(&with_map),
            "10.0.37.15/19",
            true,
        )
        .await
        .unwrap();
    assert_eq!(outcome, AnnotateOutcome::Written);
    assert_eq!(
        annotations(&env.admin, &env.ns, "with-map").await,
        string_map(&[
            ("team", "a"),
            ("x/y", "z"),
            (PRIVATE_IPV4_ADDRESS, "10.0.37.15/19")
        ])
    );

    let without_map = env.create_pod(pod("without-map", Some("n1"), None)).await;
    assert_eq!(without_map.metadata.annotations, None);
    let outcome = c
        .annotate_pod(
            &env.ns,
            "without-map",
            &uid_of(&without_map),
            "10.0.0.7/32",
            false,
        )
        .await
        .unwrap();
    assert_eq!(outcome, AnnotateOutcome::Written);
    assert_eq!(
        annotations(&env.admin, &env.ns, "without-map").await,
        string_map(&[(PRIVATE_IPV4_ADDRESS, "10.0.0.7/32")])
    );
}

#[tokio::test]
async fn never_overwrites_an_existing_annotation() {
    let env = K8sEnv::new("k8s-no-overwrite").await;
    let c = cluster(&env);
    let p = env
        .create_pod(pod("p", Some("n1"), Some(&[("team", "a")])))
        .await;
    let uid = uid_of(&p);
    assert_eq!(
        c.annotate_pod(&env.ns, "p", &uid, "10.0.0.1/19", true)
            .await
            .unwrap(),
        AnnotateOutcome::Written
    );
    assert_eq!(
        c.annotate_pod(&env.ns, "p", &uid, "10.0.0.2/19", true)
            .await
            .unwrap(),
        AnnotateOutcome::AlreadyAnnotated("10.0.0.1/19".into())
    );
    // Written by someone else before the pod reached us.
    let q = env
        .create_pod(pod(
            "q",
            Some("n1"),
            Some(&[(PRIVATE_IPV4_ADDRESS, "10.9.9.9/19")]),
        ))
        .await;
    assert_eq!(
        c.annotate_pod(&env.ns, "q", &uid_of(&q), "10.0.0.3/19", true)
            .await
            .unwrap(),
        AnnotateOutcome::AlreadyAnnotated("10.9.9.9/19".into())
    );
    assert_eq!(
        annotations(&env.admin, &env.ns, "p")
            .await
            .get(PRIVATE_IPV4_ADDRESS),
        Some(&"10.0.0.1/19".to_string())
    );
    assert_eq!(
        annotations(&env.admin, &env.ns, "q")
            .await
            .get(PRIVATE_IPV4_ADDRESS),
        Some(&"10.9.9.9/19".to_string())
    );
}

/// The pod is deleted and re-created under the same name between our read (which gave us the
/// old UID) and our write: the write must not land on the new pod.
#[tokio::test]
async fn a_write_for_an_old_uid_never_reaches_a_recreated_pod() {
    let env = K8sEnv::new("k8s-uid").await;
    let c = cluster(&env);
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), &env.ns);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    // Re-created with and without an annotations map: the first patch fails on the UID test
    // in one case and on the missing map in the other.
    for (name, annotations_of_new) in [("same-name", Some(&[("team", "b")][..])), ("bare", None)] {
        let old = env
            .create_pod(pod(name, Some("n1"), Some(&[("team", "a")])))
            .await;
        pods.delete(name, &now).await.expect("delete the pod");
        let new = env
            .create_pod(pod(name, Some("n1"), annotations_of_new))
            .await;
        assert_ne!(uid_of(&old), uid_of(&new));

        let outcome = c
            .annotate_pod(&env.ns, name, &uid_of(&old), "10.0.0.9/19", true)
            .await
            .unwrap();
        assert_eq!(outcome, AnnotateOutcome::PodGone, "{name}");
        assert_eq!(
            annotations(&env.admin, &env.ns, name)
                .await
                .get(PRIVATE_IPV4_ADDRESS),
            None,
            "{name}: the new pod got the old pod's address"
        );
        // The new UID still works.
        assert_eq!(
            c.annotate_pod(
                &env.ns,
                name,
                &uid_of(&new),
                "10.0.0.10/19",
                annotations_of_new.is_some()
            )
            .await
            .unwrap(),
            AnnotateOutcome::Written
        );
    }
    // No pod of that name at all.
    assert_eq!(
        c.annotate_pod(&env.ns, "never-existed", "uid-x", "10.0.0.11/19", false)
            .await
            .unwrap(),
        AnnotateOutcome::PodGone
    );
}

/// What the apiserver answers for the two refusals the annotation write relies on. Printed so
/// the run log shows it; asserted so a change of behaviour is noticed.
#[tokio::test]
async fn the_apiserver_answers_422_for_a_failed_test_and_a_missing_path() {
    let env = K8sEnv::new("k8s-jsonpatch").await;
    let p = env.create_pod(pod("p", Some("n1"), None)).await;
    let pods: Api<Pod> = Api::namespaced(env.controller.clone(), &env.ns);
    let refusal = |ops: serde_json::Value| {
        let pods = pods.clone();
        async move {
            let patch: Patch<()> = Patch::Json(serde_json::from_value(ops).unwrap());
            match pods.patch("p", &PatchParams::default(), &patch).await {
                Err(kube::Error::Api(status)) => *status,
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    };
    let failed_test = refusal(json!([
        {"op": "test", "path": "/metadata/uid", "value": "not-the-uid"},
        {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}},
    ]))
    .await;
    eprintln!(
        "failed test op: {} {} {:?}",
        failed_test.code, failed_test.reason, failed_test.message
    );
    assert_eq!(failed_test.code, 422);

    let missing_path = refusal(json!([
        {"op": "test", "path": "/metadata/uid", "value": uid_of(&p)},
        {"op": "add", "path": "/metadata/annotations/a~1b", "value": "c"},
    ]))
    .await;
    eprintln!(
        "missing path: {} {} {:?}",
        missing_path.code, missing_path.reason, missing_path.message
    );
    assert_eq!(missing_path.code, 422);

    // `test` with null passes on a missing member: the absence check the write relies on.
    let patch: Patch<()> = Patch::Json(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/annotations", "value": null},
            {"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}},
        ]))
        .unwrap(),
    );
    pods.patch("p", &PatchParams::default(), &patch)
        .await
        .expect("test null on a missing member passes");
    let present = refusal(json!([
        {"op": "test", "path": "/metadata/annotations/k", "value": null},
        {"op": "add", "path": "/metadata/annotations/k", "value": "w"},
    ]))
    .await;
    eprintln!(
        "test null on a present member: {} {} {:?}",
        present.code, present.reason, present.message
    );
    assert_eq!(present.code, 422);
}

#[tokio::test]
async fn node_capacity_is_written_and_removed_on_the_status() {
    let env = K8sEnv::new("k8s-capacity").await;
    let c = cluster(&env);
    let nodes: Api<Node> = Api::all(env.admin.clone());
    let with_status = env.unique("cap-a");
    let mut n = node(&with_status, &[("kubernetes.io/os", "windows")], None);
    n.status = Some(NodeStatus {
        capacity: Some([("cpu".to_string(), Quantity("4".into()))].into()),
        ..NodeStatus::default()
    });
    env.create_node(n).await;
    let capacity = |name: String| {
        let nodes = nodes.clone();
        async move {
            nodes
                .get(&name)
                .await
                .unwrap()
                .status
                .and_then(|s| s.capacity)
                .unwrap_or_default()
        }
    };

    c.set_node_capacity(&with_status, Some(9)).await.unwrap();
    let cap = capacity(with_status.clone()).await;
    assert_eq!(cap.get(PRIVATE_IPV4_ADDRESS), Some(&Quantity("9".into())));
    assert_eq!(cap.get("cpu"), Some(&Quantity("4".into())));

    c.set_node_capacity(&with_status, Some(144)).await.unwrap();
    let cap = capacity(with_status.clone()).await;
    assert_eq!(cap.get(PRIVATE_IPV4_ADDRESS), Some(&Quantity("144".into())));

    c.set_node_capacity(&with_status, None).await.unwrap();
    let cap = capacity(with_status.clone()).await;
    assert_eq!(cap.get(PRIVATE_IPV4_ADDRESS), None);
    assert_eq!(cap.get("cpu"), Some(&Quantity("4".into())));
    // Removing what is not there is not an error.
    c.set_node_capacity(&with_status, None).await.unwrap();

    // A node without any status yet.
    let bare = env.unique("cap-b");
    env.create_node(node(&bare, &[], None)).await;
    c.set_node_capacity(&bare, Some(14)).await.unwrap();
    assert_eq!(
        capacity(bare.clone()).await.get(PRIVATE_IPV4_ADDRESS),
        Some(&Quantity("14".into()))
    );

    let missing = c
        .set_node_capacity(&env.unique("no-such-node"), Some(1))
        .await;
    assert!(
        matches!(missing, Err(ClusterError::NotFound(_))),
        "{missing:?}"
    );
}

fn status(cooldowns: &[(&str, &str)], used: u32) -> NodeAddressPoolStatus {
    NodeAddressPoolStatus {
        instance_id: Some("i-0abc".into()),
        mode: Some("secondary".into()),
        capacity: Some(9),
        counts: AddressCounts {
            used,
            free: 3,
            cooling: cooldowns.len() as u32,
            pending: 0,
        },
        cooldowns: cooldowns
            .iter()
            .map(|(a, u)| CooldownRecord {
                address: a.to_string(),
                until: u.to_string(),
            })
            .collect(),
        ..NodeAddressPoolStatus::default()
    }
}

#[tokio::test]
async fn node_address_pool_is_created_owned_written_and_read_back() {
    let env = K8sEnv::new("k8s-pool").await;
    let c = cluster(&env);
    let name = env.unique("pool-node");
    let created = env
        .create_node(node(&name, &[("kubernetes.io/os", "windows")], None))
        .await;
    let uid = created.metadata.uid.clone().unwrap();

    assert_eq!(
        c.ensure_pool_object(&name, &uid).await.unwrap(),
        EnsureOutcome::Created
    );
    assert_eq!(
        c.ensure_pool_object(&name, &uid).await.unwrap(),
        EnsureOutcome::Existed
    );
    let pools: Api<NodeAddressPool> = Api::all(env.admin.clone());
    let owners = pools
        .get(&name)
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("Node", uid.as_str())
    );

    let first = status(&[("10.0.0.5", "2026-01-01T00:00:30Z")], 2);
    c.write_pool_status(&name, &first).await.unwrap();
    let read = c.read_pool_statuses().await.unwrap();
    let mine: Vec<_> = read.iter().filter(|r| r.node == name).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].status, first);
    assert_eq!(mine[0].owner_uid.as_deref(), Some(uid.as_str()));

    // A later status without cool-downs clears them (a merge patch would keep them).
    let second = status(&[], 1);
    c.write_pool_status(&name, &second).await.unwrap();
    let stored = pools.get(&name).await.unwrap().status.unwrap();
    assert_eq!(stored, second);
    assert!(stored.cooldowns.is_empty());

    // The node is deleted and re-created under the same name: the pool follows the new node.
    let new_uid = "00000000-0000-0000-0000-000000000001";
    assert_eq!(
        c.ensure_pool_object(&name, new_uid).await.unwrap(),
        EnsureOutcome::Adopted
    );
    let owners = pools
        .get(&name)
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].uid, new_uid);
    assert_eq!(pools.get(&name).await.unwrap().status.unwrap(), second);

    let missing = c.write_pool_status(&env.unique("no-pool"), &second).await;
    assert!(
        matches!(missing, Err(ClusterError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn events_are_published_and_repeats_are_counted() {
    let env = K8sEnv::new("k8s-events").await;
    let c = cluster(&env);
    let p = env.create_pod(pod("waiting", Some("n1"), None)).await;
    let object = ObjectRef {
        kind: ObjectKind::Pod,
        name: "waiting".into(),
        namespace: Some(env.ns.clone()),
        uid: uid_of(&p),
    };
    let note = "No free address on node n1 yet; the pool is growing.";
    c.publish_event(&object, EventSeverity::Warning, "IPAllocationPending", note)
        .await
        .unwrap();
    c.publish_event(&object, EventSeverity::Warning, "IPAllocationPending", note)
        .await
        .unwrap();
    let events: Api<K8sEvent> = Api::namespaced(env.admin.clone(), &env.ns);
    let list = events.list(&ListParams::default()).await.unwrap().items;
    let ours: Vec<_> = list
        .iter()
        .filter(|e| e.reason.as_deref() == Some("IPAllocationPending"))
        .collect();
    assert_eq!(ours.len(), 1, "{list:?}");
    let e = ours[0];
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.note.as_deref(), Some(note));
    assert_eq!(e.reporting_controller.as_deref(), Some("winipam"));
    assert_eq!(e.reporting_instance.as_deref(), Some("winipam-test-0"));
    let regarding = e.regarding.as_ref().unwrap();
    assert_eq!(regarding.uid.as_deref(), Some(uid_of(&p).as_str()));
    assert_eq!(regarding.kind.as_deref(), Some("Pod"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));

    // A cluster-scoped object's Events go to `default`.
    let node_name = env.unique("event-node");
    let n = env
        .create_node(node(&node_name, &[], Some("garbage")))
        .await;
    let node_ref = ObjectRef {
        kind: ObjectKind::Node,
        name: node_name.clone(),
        namespace: None,
        uid: n.metadata.uid.clone().unwrap(),
    };
    c.publish_event(
        &node_ref,
        EventSeverity::Warning,
        "NoInstanceId",
        "providerID `garbage` names no EC2 instance",
    )
    .await
    .unwrap();
    let defaults: Api<K8sEvent> = Api::namespaced(env.admin.clone(), "default");
    let found = defaults
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node_name.as_str())
                && e.reason.as_deref() == Some("NoInstanceId")
        });
    assert!(found);
}

/// No wildcards and no secrets: things outside SPEC section 11 are refused.
#[tokio::test]
async fn the_controller_account_has_no_more_than_it_needs() {
    let env = K8sEnv::new("k8s-rbac").await;
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    let secrets: Api<Secret> = Api::namespaced(env.controller.clone(), &env.ns);
    assert!(forbidden(
        secrets.list(&ListParams::default()).await.map(|_| ())
    ));
    let other_cm: Api<ConfigMap> = Api::namespaced(env.controller.clone(), &env.ns);
    assert!(forbidden(other_cm.get("not-winipam").await.map(|_| ())));
    // Listing every ConfigMap (no name selector) is refused; the named one is allowed.
    assert!(forbidden(
        other_cm.list(&ListParams::default()).await.map(|_| ())
    ));
    let named = ListParams::default().fields("metadata.name=winipam");
    assert!(other_cm.list(&named).await.is_ok());
    let kube_system: Api<ConfigMap> = Api::namespaced(env.controller.clone(), "kube-system");
    assert!(forbidden(kube_system.get("coredns").await.map(|_| ())));
    let vpc_cni = ListParams::default().fields("metadata.name=amazon-vpc-cni");
    assert!(kube_system.list(&vpc_cni).await.is_ok());
    // Nodes are read, never written except their status.
    let nodes: Api<Node> = Api::all(env.controller.clone());
    let node_name = env.unique("rbac-node");
    env.create_node(node(&node_name, &[], None)).await;
    let label = json!({"metadata": {"labels": {"x": "y"}}});
    assert!(forbidden(
        nodes
            .patch(&node_name, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .map(|_| ())
    ));
    // Pods are never deleted.
    env.create_pod(pod("keep", Some("n1"), None)).await;
    let pods: Api<Pod> = Api::namespaced(env.controller.clone(), &env.ns);
    assert!(forbidden(
        pods.delete("keep", &DeleteParams::default())
            .await
            .map(|_| ())
    ));
}
