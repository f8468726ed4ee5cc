//! End to end on a real control plane, with EC2 simulated inside the controller process
//! (`winipam run --simulated-ec2`): three Nitro nodes in prefix mode and 60 pods. Every pod gets
//! a `<ip>/32` annotation inside a /28 that its node's NodeAddressPool lists, no address twice,
//! and each node advertises `(ipv4_per_interface - 1) * 16`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use winipam::crd::NodeAddressPool;

use crate::support::e2e::{Env, pod_on};
use crate::support::winipam::Winipam;

const ANNOTATION: &str = "vpc.amazonaws.com/PrivateIPv4Address";
const INSTANCE_TYPE: &str = "m5.large";
/// m5.large: 10 IPv4 addresses per ENI, so 9 /28s.
const PREFIX_CAPACITY: &str = "144";

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

pub(crate) fn node(name: &str, instance: u32) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: labels(&[
                ("kubernetes.io/os", "windows"),
                ("node.kubernetes.io/instance-type", INSTANCE_TYPE),
            ]),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(format!("aws:///us-west-2a/i-{instance:017x}")),
            ..NodeSpec::default()
        }),
        ..Node::default()
    }
}

#[tokio::test]
async fn prefix_mode_with_simulated_ec2_gives_every_pod_a_32_in_its_nodes_prefixes() {
    // The controller runs as its ServiceAccount with the rendered RBAC, like every e2e test.
    let env = Env::new("e2e-prefix-sim").await;
    let client = env.client.clone();
    env.set_config(&[("enable-windows-prefix-delegation", "true")])
        .await;
    let mut options = env.options("winipam-sim-ec2");
    options.extra_args.push("--simulated-ec2".to_owned());
    let mut controller = Winipam::start(&options);
    controller.wait_ready(Duration::from_secs(30)).await;

    let nodes: Vec<String> = (1..=3).map(|i| format!("win-{i}")).collect();
    let node_api = Api::<Node>::all(client.clone());
    for (i, name) in nodes.iter().enumerate() {
        node_api
            .create(&PostParams::default(), &node(name, i as u32 + 1))
            .await
            .expect("create a node");
    }
    let pods = env.pods_api();
    for i in 0..60 {
        pods.create(
            &PostParams::default(),
            &pod_on(&format!("p{i:02}"), &nodes[i % 3]),
        )
        .await
        .expect("create a pod");
    }

    // Every pod annotated, and every node's pool status listing the /28s its pods use.
    let pools = Api::<NodeAddressPool>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    let (annotations, prefixes) = loop {
        let listed = pods.list(&Default::default()).await.expect("list pods");
        let annotations: Vec<(String, String)> = listed
            .items
            .iter()
            .filter_map(|p| {
                let value = p.metadata.annotations.as_ref()?.get(ANNOTATION)?;
                Some((p.spec.as_ref()?.node_name.clone()?, value.clone()))
            })
            .collect();
        let mut prefixes: BTreeMap<String, Vec<Ipv4Net>> = BTreeMap::new();
        for name in &nodes {
            if let Ok(pool) = pools.get(name).await {
                let listed = pool
                    .status
                    .map(|s| s.prefixes)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                prefixes.insert(name.clone(), listed);
            }
        }
        let covered = annotations.iter().all(|(node, value)| {
            let ip: Option<Ipv4Addr> = value.strip_suffix("/32").and_then(|v| v.parse().ok());
            ip.is_some_and(|ip| {
                prefixes
                    .get(node)
                    .is_some_and(|nets| nets.iter().any(|n| n.contains(&ip)))
            })
        });
        if annotations.len() == 60 && covered {
            break (annotations, prefixes);
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s: {} of 60 pods annotated, prefixes {prefixes:?}; controller log:\n{}",
            annotations.len(),
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let distinct: BTreeSet<&String> = annotations.iter().map(|(_, v)| v).collect();
    assert_eq!(
        distinct.len(),
        60,
        "an address given twice: {annotations:?}"
    );
    for (node, value) in &annotations {
        assert!(value.ends_with("/32"), "{node}: {value}");
    }
    for name in &nodes {
        let nets = &prefixes[name];
        assert!(!nets.is_empty(), "{name} has no /28");
        assert!(
            nets.iter().all(|n| n.prefix_len() == 28),
            "{name}: {nets:?}"
        );
        // 20 pods + warm 1 on each node: two /28s.
        assert_eq!(nets.len(), 2, "{name}: {nets:?}");
        let capacity = node_api
            .get(name)
            .await
            .expect("get node")
            .status
            .and_then(|s| s.capacity)
            .and_then(|c| c.get(ANNOTATION).map(|q| q.0.clone()));
        assert_eq!(capacity.as_deref(), Some(PREFIX_CAPACITY), "{name}");
    }
    // The /28s of different nodes never overlap.
    let all: Vec<Ipv4Net> = prefixes.values().flatten().copied().collect();
    let unique: BTreeSet<Ipv4Net> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "{prefixes:?}");
}
