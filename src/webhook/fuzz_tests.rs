//! Fuzzing of the admission webhooks from raw request bytes: shaped AdmissionReviews (every
//! operation, user, annotation change and scheduling constraint), damaged ones and arbitrary
//! JSON. Whatever the body, the answer is a 400 or a well-formed AdmissionReview for the
//! request's uid; the mutating webhook never denies and its patch applies to the pod; the
//! validating webhook denies exactly the annotation writes of others; and no pod that a Linux
//! node could run gets the IP resource.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::PodSpec;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::placement::{BETA_OS_LABEL, IP_RESOURCE, Injection, OS_LABEL, injection};
use super::runtimeclass::{Lookup, RuntimeClassLookup};
use super::validate::IP_ANNOTATION;
use super::{mutate, validate};
use crate::fuzz_support::{damage, json_value};

const CONTROLLER: &str = "system:serviceaccount:winipam-system:winipam";

/// RuntimeClasses: `windows*` select Windows, `linux*` Linux, `broken*` fail, others nothing.
struct Classes;

impl RuntimeClassLookup for Classes {
    fn node_selector<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lookup> {
        let os = |v: &str| Ok(Some([(OS_LABEL.to_owned(), v.to_owned())].into()));
        let answer = match name {
            n if n.starts_with("windows") => os("windows"),
            n if n.starts_with("linux") => os("linux"),
            n if n.starts_with("broken") => Err("lookup failed".to_owned()),
            _ => Ok(None),
        };
        Box::pin(async move { answer })
    }
}

/// Label keys and values the scheduling constraints use; the Linux nodes of the soundness
/// check take every combination of them.
const KEYS: [&str; 3] = [OS_LABEL, BETA_OS_LABEL, "zone"];
const VALUES: [&str; 4] = ["windows", "linux", "a", "5"];
const OPERATORS: [&str; 7] = ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "in"];

fn requirement() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(KEYS.to_vec()),
        prop::sample::select(OPERATORS.to_vec()),
        prop::option::of(prop::collection::vec(
            prop::sample::select(VALUES.to_vec()),
            0..3,
        )),
    )
        .prop_map(
            |(key, operator, values)| json!({ "key": key, "operator": operator, "values": values }),
        )
}

fn pod_spec() -> impl Strategy<Value = Value> {
    let selector = prop::option::of(prop::collection::btree_map(
        prop::sample::select(KEYS.to_vec()),
        prop::sample::select(VALUES.to_vec()),
        0..3,
    ));
    let terms = prop::option::of(prop::collection::vec(
        prop::option::of(prop::collection::vec(requirement(), 0..3)),
        0..3,
    ));
    let resources = prop::option::of(prop_oneof![
        Just(json!({})),
        Just(json!({ "requests": null, "limits": { "cpu": "1" } })),
        Just(json!({ "requests": { "memory": "1Gi" } })),
        Just(json!({ "limits": { IP_RESOURCE: "1" } })),
        Just(json!({ "requests": { IP_RESOURCE: "2" }, "limits": {} })),
    ]);
    let containers = prop::collection::vec(resources, 0..3);
    let runtime_class = prop::option::of(prop::sample::select(vec![
        "windows-2022",
        "linux-runc",
        "broken",
        "plain",
        "",
    ]));
    (selector, terms, containers, runtime_class, prop::option::of(any::<bool>())).prop_map(
        |(selector, terms, containers, runtime_class, host_network)| {
            let containers: Vec<Value> = containers
                .into_iter()
                .enumerate()
                .map(|(i, r)| json!({ "name": format!("c{i}"), "resources": r }))
                .collect();
            let mut spec = json!({
                "containers": containers, "nodeSelector": selector,
                "runtimeClassName": runtime_class, "hostNetwork": host_network,
            });
            if let Some(terms) = terms {
                let terms: Vec<Value> = terms
                    .into_iter()
                    .map(|exprs| json!({ "matchExpressions": exprs }))
                    .collect();
                spec["affinity"] = json!({ "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": terms }
                }});
            }
            spec
        },
    )
}

fn pod(spec: Value, annotation: Option<String>) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p", "namespace": "ns", "annotations": annotation.map(|a| json!({ IP_ANNOTATION: a, "x": "y" })) },
        "spec": spec,
    })
}

fn admission_review() -> impl Strategy<Value = Value> {
    let annotation = prop::option::of(prop_oneof![
        Just("10.0.0.5/19".to_owned()),
        Just("10.0.0.6/19".to_owned()),
        "\\PC{0,12}",
    ]);
    let uid = prop_oneof![
        "[a-f0-9-]{0,36}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
    ];
    let user = prop::option::of(prop_oneof![
        Just(CONTROLLER.to_owned()),
        Just("alice".to_owned()),
        Just(format!("{CONTROLLER} ")),
        "\\PC{0,10}",
    ]);
    let operation =
        prop::sample::select(vec!["CREATE", "UPDATE", "DELETE", "CONNECT", "create", ""]);
    (
        uid,
        operation,
        user,
        pod_spec(),
        annotation.clone(),
        annotation,
        any::<bool>(),
    )
        .prop_map(|(uid, operation, user, spec, old, new, with_old)| {
            let old_object = if with_old {
                pod(spec.clone(), old)
            } else {
                Value::Null
            };
            json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": uid,
                    "kind": { "group": "", "version": "v1", "kind": "Pod" },
                    "resource": { "group": "", "version": "v1", "resource": "pods" },
                    "name": "p", "namespace": "ns", "operation": operation,
                    "userInfo": { "username": user },
                    "object": pod(spec, new), "oldObject": old_object,
                }
            })
        })
}

/// Answers `body` with both handlers and checks what must hold of any answer.
fn check_both(body: &[u8]) -> Result<(), TestCaseError> {
    let allowed = vec![CONTROLLER.to_owned()];
    let validated = validate::review(body, &allowed, None);
    let mutated = futures::executor::block_on(mutate::review(body, &Classes));
    for (result, mutating) in [(validated, false), (mutated, true)] {
        // A body the handlers cannot read is answered 400 with a message naming the review.
        let review = match result {
            Ok(review) => review,
            Err(bad) => {
                prop_assert!(bad.0.contains("AdmissionReview"), "{}", bad.0);
                continue;
            }
        };
        let out = serde_json::to_value(&review).expect("a review serializes");
        prop_assert_eq!(&out["apiVersion"], "admission.k8s.io/v1");
        prop_assert_eq!(&out["kind"], "AdmissionReview");
        // serde_json skips fields a type ignores without checking their escapes, so a body
        // the handler reads may still not be a JSON value (a lone surrogate in such a field).
        let Ok(input) = serde_json::from_slice::<Value>(body) else {
            continue;
        };
        let (request, response) = (&input["request"], &out["response"]);
        prop_assert!(response["uid"].is_string());
        prop_assert_eq!(&response["uid"], &request["uid"]);
        if mutating {
            check_mutation(request, response)?;
        } else {
            check_validation(request, response)?;
        }
    }
    Ok(())
}

fn check_mutation(request: &Value, response: &Value) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        &response["allowed"],
        true,
        "the mutating webhook never denies"
    );
    let Some(patch) = response.get("patch") else {
        return Ok(());
    };
    prop_assert_eq!(&request["operation"], "CREATE");
    prop_assert_eq!(&response["patchType"], "JSONPatch");
    let bytes: Vec<u8> = serde_json::from_value(patch.clone()).expect("patch bytes");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
    let mut pod = request["object"].clone();
    let applied = json_patch::patch(&mut pod, &patch);
    prop_assert!(applied.is_ok(), "{:?} on {}", applied, request["object"]);
    let resources = &pod["spec"]["containers"][0]["resources"];
    prop_assert_eq!(&resources["requests"][IP_RESOURCE], "1");
    prop_assert_eq!(&resources["limits"][IP_RESOURCE], "1");
    Ok(())
}

fn check_validation(request: &Value, response: &Value) -> Result<(), TestCaseError> {
    let annotation = |o: &Value| {
        o["metadata"]["annotations"][IP_ANNOTATION]
            .as_str()
            .map(str::to_owned)
    };
    let (old, new) = match request["operation"].as_str() {
        Some("CREATE") => (None, annotation(&request["object"])),
        Some("UPDATE") => (
            annotation(&request["oldObject"]),
            annotation(&request["object"]),
        ),
        _ => {
            prop_assert_eq!(&response["allowed"], true);
            return Ok(());
        }
    };
    let expect = old == new || request["userInfo"]["username"] == CONTROLLER;
    prop_assert_eq!(&response["allowed"], expect, "{:?} -> {:?}", old, new);
    if !expect {
        prop_assert_eq!(&response["status"]["code"], 403);
        let message = response["status"]["message"].as_str().unwrap_or_default();
        prop_assert!(message.contains(IP_ANNOTATION), "{}", message);
    }
    Ok(())
}

/// Kubernetes' meaning of one requirement on a node's labels.
fn requirement_matches(labels: &BTreeMap<&str, &str>, r: &Value) -> bool {
    let values: Vec<&str> = r["values"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let label = r["key"].as_str().and_then(|k| labels.get(k).copied());
    let number = |s: &str| s.parse::<i64>().ok();
    match r["operator"].as_str() {
        Some("In") => label.is_some_and(|l| values.contains(&l)),
        Some("NotIn") => label.is_none_or(|l| !values.contains(&l)),
        Some("Exists") => label.is_some(),
        Some("DoesNotExist") => label.is_none(),
        Some(op @ ("Gt" | "Lt")) => match (
            label.and_then(number),
            values.first().and_then(|v| number(v)),
        ) {
            (Some(l), Some(v)) if values.len() == 1 => {
                if op == "Gt" {
                    l > v
                } else {
                    l < v
                }
            }
            _ => false,
        },
        // The apiserver rejects any other operator: such a pod never runs.
        _ => false,
    }
}

/// Could the scheduler put a pod with this spec on a node with these labels?
fn schedulable_on(spec: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    let selector_ok = spec["nodeSelector"].as_object().is_none_or(|s| {
        s.iter()
            .all(|(k, v)| labels.get(k.as_str()).copied() == v.as_str())
    });
    let terms = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    let affinity_ok = match terms.as_array() {
        None => true,
        // Terms are ORed; an empty term matches no node.
        Some(terms) => terms.iter().any(|t| {
            let exprs = t["matchExpressions"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            !exprs.is_empty() && exprs.iter().all(|r| requirement_matches(labels, r))
        }),
    };
    selector_ok && affinity_ok
}

/// Every Linux node a kubelet may register: `kubernetes.io/os=linux`, the beta OS label absent
/// (recent kubelets) or `linux` (older ones: a kubelet sets both labels to its own OS), any
/// other labels.
fn linux_nodes() -> Vec<BTreeMap<&'static str, &'static str>> {
    let choices: Vec<Option<&str>> = std::iter::once(None)
        .chain(VALUES.iter().copied().map(Some))
        .collect();
    let mut nodes = Vec::new();
    for beta in [None, Some("linux")] {
        for zone in &choices {
            let mut labels = BTreeMap::from([(OS_LABEL, "linux")]);
            if let Some(b) = beta {
                labels.insert(BETA_OS_LABEL, b);
            }
            if let Some(z) = zone {
                labels.insert("zone", z);
            }
            nodes.push(labels);
        }
    }
    nodes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6_000, ..ProptestConfig::default() })]

    #[test]
    fn shaped_admission_reviews(review in admission_review()) {
        check_both(&serde_json::to_vec(&review).unwrap())?;
    }

    #[test]
    fn damaged_and_arbitrary_bodies(
        review in admission_review(),
        how in any::<u8>(), at in 0.0..1.0f64, byte in any::<u8>(),
        value in json_value(&["apiVersion", "kind", "request", "uid", "operation", "object",
            "oldObject", "userInfo", "username", "metadata", "annotations", IP_ANNOTATION, "spec",
            "containers", "resources", "requests", "nodeSelector", OS_LABEL]),
        bytes in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        check_both(&damage(&serde_json::to_vec(&review).unwrap(), how, at, byte))?;
        check_both(&serde_json::to_vec(&value).unwrap())?;
        check_both(&serde_json::to_vec(&json!({ "request": value })).unwrap())?;
        check_both(&bytes)?;
    }

    /// The placement rules never send the IP resource to a pod a Linux node could run.
    #[test]
    fn injection_only_for_pods_no_linux_node_can_run(spec in pod_spec()) {
        let typed: PodSpec = serde_json::from_value(spec.clone()).expect("a pod spec");
        let decision = injection(&typed);
        if matches!(decision, Injection::Inject(_)) {
            for node in linux_nodes() {
                prop_assert!(!schedulable_on(&spec, &node), "{:?} injects, yet {:?} runs {}", decision, node, spec);
            }
        }
    }
}

/// Found by `damaged_and_arbitrary_bodies`: a review of another apiVersion was answered, and
/// the answer repeated that apiVersion, which the apiserver cannot read. Only v1 is registered.
#[test]
fn review_of_another_api_version_is_a_bad_request() {
    for (api_version, kind) in [
        (" dmission.k8s.io/v1", "AdmissionReview"),
        ("admission.k8s.io/v1beta1", "AdmissionReview"),
        ("admission.k8s.io/v1", "Admissionreview"),
        ("", ""),
    ] {
        let body = serde_json::to_vec(&json!({
            "apiVersion": api_version, "kind": kind,
            "request": {
                "uid": "u", "kind": { "group": "", "version": "v1", "kind": "Pod" },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "operation": "CREATE", "userInfo": {},
                "object": pod(json!({ "containers": [{ "name": "a" }] }), None),
            }
        }))
        .unwrap();
        let err = validate::review(&body, &[], None).expect_err(api_version);
        assert!(
            err.0.contains("not an admission.k8s.io/v1 AdmissionReview"),
            "{err}"
        );
        let err =
            futures::executor::block_on(mutate::review(&body, &Classes)).expect_err(api_version);
        assert!(err.0.contains(api_version), "{err}");
    }
}
