//! The mutating handler on AdmissionReview JSON: the patch is decoded and applied to the pod.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::*;
use crate::webhook::placement::OS_LABEL;
use crate::webhook::runtimeclass::{Lookup, NodeSelector};

/// RuntimeClasses from a table; a name mapped to `Err` fails its lookup.
struct FakeClasses(BTreeMap<&'static str, Lookup>);

impl RuntimeClassLookup for FakeClasses {
    fn node_selector<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lookup> {
        let answer = self.0.get(name).cloned().unwrap_or(Ok(None));
        Box::pin(async move { answer })
    }
}

fn classes() -> FakeClasses {
    let windows: NodeSelector = [(OS_LABEL.to_owned(), "windows".to_owned())].into();
    let linux: NodeSelector = [(OS_LABEL.to_owned(), "linux".to_owned())].into();
    FakeClasses(
        [
            ("windows-2022", Ok(Some(windows))),
            ("runc", Ok(Some(linux))),
            ("plain", Ok(None)),
            ("broken", Err("connection refused".to_owned())),
        ]
        .into(),
    )
}

fn pod(spec: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p", "namespace": "ns" },
        "spec": spec
    })
}

fn admission_review(operation: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "ns", "operation": operation,
            "userInfo": { "username": "alice" },
            "object": object, "oldObject": null
        }
    }))
    .unwrap()
}

/// Runs the handler; returns the response JSON and the pod with the patch applied.
async fn mutate(object: Value) -> (Value, Value) {
    let review = review(&admission_review("CREATE", object.clone()), &classes())
        .await
        .expect("a review");
    let response = serde_json::to_value(&review).unwrap();
    let response = response["response"].clone();
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    let mut patched = object;
    if let Some(bytes) = response.get("patch") {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes: Vec<u8> = serde_json::from_value(bytes.clone()).unwrap();
        let patch: Patch = serde_json::from_slice(&bytes).expect("a JSON patch");
        json_patch::patch(&mut patched, &patch).expect("the patch applies");
    }
    (response, patched)
}

fn windows_spec(container: Value) -> Value {
    json!({ "nodeSelector": { OS_LABEL: "windows" }, "containers": [container, { "name": "side" }] })
}

#[tokio::test]
async fn windows_pod_without_resources_gets_the_whole_map() {
    let (response, pod) = mutate(pod(windows_spec(json!({ "name": "app" })))).await;
    assert!(response.get("patch").is_some());
    assert_eq!(
        pod["spec"]["containers"][0]["resources"],
        json!({ "requests": { IP_RESOURCE: "1" }, "limits": { IP_RESOURCE: "1" } })
    );
    // Only the first container.
    assert_eq!(pod["spec"]["containers"][1], json!({ "name": "side" }));
}

#[tokio::test]
async fn existing_resources_are_kept() {
    let container = json!({ "name": "app", "resources": {
        "requests": { "cpu": "100m" }, "limits": { "memory": "1Gi" }
    }});
    let (_, pod) = mutate(pod(windows_spec(container))).await;
    assert_eq!(
        pod["spec"]["containers"][0]["resources"],
        json!({
            "requests": { "cpu": "100m", IP_RESOURCE: "1" },
            "limits": { "memory": "1Gi", IP_RESOURCE: "1" }
        })
    );
}

#[tokio::test]
async fn missing_requests_or_limits_map_is_created() {
    for (present, absent) in [("requests", "limits"), ("limits", "requests")] {
        let container = json!({ "name": "app", "resources": { present: { "cpu": "1" } } });
        let (_, pod) = mutate(pod(windows_spec(container))).await;
        let resources = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(
            resources[present],
            json!({ "cpu": "1", IP_RESOURCE: "1" }),
            "{present}"
        );
        assert_eq!(resources[absent], json!({ IP_RESOURCE: "1" }), "{absent}");
    }
    let empty = json!({ "name": "app", "resources": {} });
    let (_, pod) = mutate(pod(windows_spec(empty))).await;
    assert_eq!(
        pod["spec"]["containers"][0]["resources"],
        json!({ "requests": { IP_RESOURCE: "1" }, "limits": { IP_RESOURCE: "1" } })
    );
}

#[test]
fn the_slash_of_the_resource_name_is_escaped() {
    let container: Container = serde_json::from_value(json!({
        "name": "app", "resources": { "requests": {}, "limits": {} }
    }))
    .unwrap();
    let text = serde_json::to_string(&resource_patch(&container)).unwrap();
    assert!(
        text.contains(
            "/spec/containers/0/resources/requests/vpc.amazonaws.com~1PrivateIPv4Address"
        ),
        "{text}"
    );
    assert!(
        text.contains("/spec/containers/0/resources/limits/vpc.amazonaws.com~1PrivateIPv4Address")
    );
}

#[tokio::test]
async fn pods_left_alone_get_no_patch() {
    let cases = [
        (
            "linux",
            json!({ "nodeSelector": { OS_LABEL: "linux" }, "containers": [{ "name": "a" }] }),
        ),
        ("no placement", json!({ "containers": [{ "name": "a" }] })),
        (
            "hostNetwork",
            json!({ "hostNetwork": true, "nodeSelector": { OS_LABEL: "windows" }, "containers": [{ "name": "a" }] }),
        ),
        (
            "already requested",
            json!({ "nodeSelector": { OS_LABEL: "windows" },
                    "containers": [{ "name": "a", "resources": { "limits": { IP_RESOURCE: "1" } } }] }),
        ),
        (
            "runtime class for linux",
            json!({ "runtimeClassName": "runc", "containers": [{ "name": "a" }] }),
        ),
        (
            "runtime class without scheduling",
            json!({ "runtimeClassName": "plain", "containers": [{ "name": "a" }] }),
        ),
        (
            "unknown runtime class",
            json!({ "runtimeClassName": "nope", "containers": [{ "name": "a" }] }),
        ),
        // The lookup fails: admitted unchanged (failurePolicy Ignore semantics).
        (
            "runtime class lookup fails",
            json!({ "runtimeClassName": "broken", "containers": [{ "name": "a" }] }),
        ),
    ];
    for (name, spec) in cases {
        let object = pod(spec);
        let (response, patched) = mutate(object.clone()).await;
        assert!(response.get("patch").is_none(), "{name}: {response}");
        assert_eq!(patched, object, "{name}");
    }
}

#[tokio::test]
async fn windows_by_runtime_class_and_affinity() {
    let by_class =
        pod(json!({ "runtimeClassName": "windows-2022", "containers": [{ "name": "a" }] }));
    let (_, patched) = mutate(by_class).await;
    assert_eq!(
        patched["spec"]["containers"][0]["resources"]["limits"][IP_RESOURCE],
        "1"
    );

    let by_affinity = pod(json!({
        "containers": [{ "name": "a" }],
        "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{ "matchExpressions": [
                { "key": OS_LABEL, "operator": "In", "values": ["windows"] }
            ]}]
        }}}
    }));
    let (_, patched) = mutate(by_affinity).await;
    assert_eq!(
        patched["spec"]["containers"][0]["resources"]["requests"][IP_RESOURCE],
        "1"
    );
}

#[tokio::test]
async fn only_create_is_mutated() {
    let object = pod(windows_spec(json!({ "name": "app" })));
    let review = review(&admission_review("UPDATE", object), &classes())
        .await
        .unwrap();
    let response = serde_json::to_value(&review).unwrap()["response"].clone();
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
}

#[tokio::test]
async fn malformed_bodies_are_bad_requests() {
    let cases: [(&str, &[u8]); 4] = [
        ("not JSON", b"{not json"),
        ("empty", b""),
        ("no request", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
        ("request without uid", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#),
    ];
    for (name, body) in cases {
        let err = review(body, &classes()).await.expect_err(name);
        assert!(
            err.0.contains("AdmissionReview"),
            "{name}: the message names what was expected: {err}"
        );
    }
}
