//! Fuzzing of what the views read from API objects: providerIDs, OS and instance-type labels,
//! capacity, phase, the address annotation, the foreign IPAM switch; Node/Pod/ConfigMap JSON
//! both shaped (every field present with mutated values) and arbitrary.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::pod_fields::PodFields;
use super::views::*;
use crate::fuzz_support::{damage, json_value, padding};

/// The rule of SPEC 2, written apart from the parser: the last `/` segment is `i-` and 1 to 32
/// hex digits.
fn oracle_instance_id(provider_id: &str) -> Option<String> {
    let last = provider_id.rsplit('/').next().unwrap_or(provider_id);
    let hex = last.strip_prefix("i-")?;
    let ok = (1..=32).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit());
    ok.then(|| last.to_owned())
}

fn provider_id() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        "[0-9a-f]{1,32}".prop_map(|h| format!("i-{h}")),
        "[0-9a-f]{17}".prop_map(|h| format!("i-{h}")),
        "[0-9a-f]{33,40}".prop_map(|h| format!("i-{h}")),
        "[0-9A-Fa-f]{1,20}".prop_map(|h| format!("i-{h}")),
        "[0-9a-z]{1,20}".prop_map(|h| format!("i-{h}")),
        "\\PC{0,20}".prop_map(|h| format!("i-{h}")),
        Just("i-".to_owned()),
        Just("I-0abc".to_owned()),
        Just("fargate-ip-10-0-0-1".to_owned()),
        Just("i-٠١٢".to_owned()),
    ];
    let prefix = prop::sample::select(vec![
        "aws:///us-west-2a/",
        "aws:///",
        "aws://",
        "",
        "gce://p/z/",
        "aws:///us-west-2a/i-0abc/",
    ]);
    prop_oneof![
        4 => (prefix, id, padding()).prop_map(|(p, i, pad)| format!("{p}{i}{pad}")),
        1 => any::<String>(),
    ]
}

fn label_value() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        prop::sample::select(vec!["windows", "linux", "Windows", "windows ", ""])
            .prop_map(str::to_owned),
        "\\PC{0,10}",
    ])
}

/// A Node as the API sends it, each field present or not, with mutated values.
fn node_json() -> impl Strategy<Value = Value> {
    (
        (label_value(), label_value(), label_value(), label_value()),
        prop::option::of(provider_id()),
        prop::option::of(prop_oneof!["[0-9]{1,4}".boxed(), "\\PC{0,8}".boxed()]),
        any::<bool>(),
        prop::option::of("\\PC{0,10}"),
    )
        .prop_map(
            |((os, beta, itype, beta_itype), pid, capacity, deleting, name)| {
                let mut labels = serde_json::Map::new();
                for (key, value) in [
                    (OS_LABEL, os),
                    (BETA_OS_LABEL, beta),
                    (INSTANCE_TYPE_LABEL, itype),
                    (BETA_INSTANCE_TYPE_LABEL, beta_itype),
                ] {
                    if let Some(v) = value {
                        labels.insert(key.to_owned(), json!(v));
                    }
                }
                let mut node = json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": { "name": name, "uid": "u", "labels": labels },
                    "spec": { "providerID": pid },
                });
                if let Some(c) = capacity {
                    node["status"] = json!({ "capacity": { PRIVATE_IPV4_ADDRESS: c } });
                }
                if deleting {
                    node["metadata"]["deletionTimestamp"] = json!("2026-01-02T03:04:05Z");
                }
                node
            },
        )
}

fn pod_json() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![
            prop::sample::select(vec!["Pending", "Running", "Succeeded", "Failed", "Unknown", ""])
                .prop_map(str::to_owned),
            "\\PC{0,10}"
        ]),
        prop::option::of(prop_oneof![Just(String::new()), "[a-z0-9.-]{1,20}", "\\PC{0,10}"]),
        prop::option::of("\\PC{0,30}"),
        prop::option::of(any::<bool>()),
        prop::option::of("[a-z0-9-]{0,10}"),
    )
        .prop_map(|(phase, node_name, annotation, host_network, uid)| {
            let annotations = annotation.map(|a| json!({ PRIVATE_IPV4_ADDRESS: a }));
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": "p", "namespace": "ns", "uid": uid, "annotations": annotations },
                "spec": { "containers": [], "nodeName": node_name, "hostNetwork": host_network },
                "status": { "phase": phase },
            })
        })
}

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "uid",
    "labels",
    "annotations",
    "deletionTimestamp",
    "spec",
    "providerID",
    "nodeName",
    "hostNetwork",
    "containers",
    "status",
    "phase",
    "capacity",
    "data",
    OS_LABEL,
    PRIVATE_IPV4_ADDRESS,
    "enable-windows-ipam",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn provider_ids_match_the_oracle(pid in provider_id()) {
        prop_assert_eq!(instance_id_from_provider_id(&pid), oracle_instance_id(&pid), "{:?}", pid);
    }

    /// The foreign IPAM switch reads what Go's strconv.ParseBool reads as true.
    #[test]
    fn foreign_ipam_switch(core in prop_oneof![
        prop::sample::select(vec!["1", "t", "T", "true", "TRUE", "True", "0", "f", "false", "tRUE", "yes", "on", ""]).prop_map(str::to_owned),
        any::<String>(),
    ], pad in padding()) {
        let value = format!("{pad}{core}{pad}");
        let data = BTreeMap::from([("enable-windows-ipam".to_owned(), value.clone())]);
        let go_true = matches!(value.trim(), "1" | "t" | "T" | "true" | "TRUE" | "True");
        prop_assert_eq!(foreign_ipam_enabled(&data), go_true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

    /// Every field of the view is what the object says, by the rules of SPEC 2.
    #[test]
    fn node_view_of_shaped_nodes(value in node_json()) {
        let node: Node = serde_json::from_value(value.clone()).expect("a well-formed node");
        let view = node_view(&node);
        let label = |k: &str| value["metadata"]["labels"][k].as_str().map(str::to_owned);
        let windows = match label(OS_LABEL) {
            Some(os) => os == "windows",
            None => label(BETA_OS_LABEL).as_deref() == Some("windows"),
        };
        prop_assert_eq!(view.windows, windows);
        prop_assert_eq!(view.instance_type, label(INSTANCE_TYPE_LABEL).or_else(|| label(BETA_INSTANCE_TYPE_LABEL)));
        prop_assert_eq!(view.instance_id, value["spec"]["providerID"].as_str().and_then(oracle_instance_id));
        prop_assert_eq!(
            view.advertised_capacity.as_deref(),
            value["status"]["capacity"][PRIVATE_IPV4_ADDRESS].as_str()
        );
        prop_assert_eq!(view.deleting, value["metadata"].get("deletionTimestamp").is_some());
    }

    #[test]
    fn pod_view_of_shaped_pods(value in pod_json()) {
        let pod: PodFields = serde_json::from_value(value.clone()).expect("a well-formed pod");
        let view = pod_view(&pod);
        let node_name = value["spec"]["nodeName"].as_str().filter(|n| !n.is_empty());
        let bound = node_name.is_some() && value["metadata"]["uid"].is_string();
        prop_assert_eq!(view.is_some(), bound);
        if let Some(v) = view {
            prop_assert_eq!(Some(&*v.node_name), node_name);
            prop_assert_eq!(
                v.ip_annotation.as_deref(),
                value["metadata"]["annotations"][PRIVATE_IPV4_ADDRESS].as_str()
            );
            let phase = match value["status"]["phase"].as_str() {
                None | Some("Pending") => PodPhase::Pending,
                Some("Running") => PodPhase::Running,
                Some("Succeeded") => PodPhase::Succeeded,
                Some("Failed") => PodPhase::Failed,
                Some(_) => PodPhase::Unknown,
            };
            prop_assert_eq!(v.phase, phase);
            prop_assert_eq!(v.host_network, value["spec"]["hostNetwork"] == true);
        }
    }

    /// Arbitrary JSON, and damaged shaped objects: decoding fails or the views are built; no panic.
    #[test]
    fn arbitrary_objects(
        value in json_value(KEYS),
        shaped in prop_oneof![node_json(), pod_json()],
        how in any::<u8>(), at in 0.0..1.0f64, byte in any::<u8>(),
    ) {
        let damaged = damage(&serde_json::to_vec(&shaped).unwrap(), how, at, byte);
        for text in [serde_json::to_vec(&value).unwrap(), damaged] {
            if let Ok(node) = serde_json::from_slice::<Node>(&text) {
                let view = node_view(&node);
                if let Some(id) = &view.instance_id {
                    prop_assert!(id.starts_with("i-"));
                }
            }
            if let Ok(pod) = serde_json::from_slice::<PodFields>(&text)
                && let Some(view) = pod_view(&pod)
            {
                prop_assert!(!view.node_name.is_empty());
            }
            if let Ok(cm) = serde_json::from_slice::<ConfigMap>(&text) {
                let view = config_map_view(&cm);
                foreign_ipam_enabled(&view.data);
                let _ = crate::ipam::Config::parse(&view.data);
            }
        }
    }
}
