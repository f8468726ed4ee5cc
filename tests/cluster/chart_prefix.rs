//! Prefix mode through the chart and the real scheduler, and the time to an address at a steady
//! 20 pods/s. moto ignores /28 prefixes, so this test runs the controller with its in-process
//! simulated EC2 (`WINIPAM_SIMULATED_EC2`, EC2's latencies and throttling, instances taken from
//! the nodes' providerIDs): a simulation, labelled as such, for the EC2 side only. Only the
//! leader calls EC2 and no failover happens here, so the replicas' separate simulations do not
//! meet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::ops::{
    APPS, RELEASE_NS, WindowsNode, controller_memory, create_node, import_image, leader,
    values_yaml, wait_capacity, wait_failed_scheduling, wait_ready, workload,
};
use crate::support::{ANNOTATION, Cluster, eventually, percentile, turn};
use crate::watch::PodWatch;

/// Prefix-mode capacity: (IPs per ENI - 1) /28s of 16 addresses.
const NODES: [(&str, &str, usize); 2] = [
    ("win-m5-prefix", "m5.large", 144),
    ("win-c5-prefix", "c5.xlarge", 224),
];
const STEADY_PODS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_mode_at_a_steady_20_pods_per_second() {
    let _turn = turn().await;
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    import_image(&cluster, dir.path());
    let mut nodes = Vec::new();
    for (index, (name, instance_type, capacity)) in NODES.iter().enumerate() {
        create_node(&client, name, instance_type, &format!("i-0{index:016x}")).await;
        nodes.push(WindowsNode {
            name: (*name).to_owned(),
            eni_id: String::new(),
            capacity: *capacity,
        });
    }
    for node in &nodes {
        wait_ready(&client, &node.name).await;
    }
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        values_yaml(
            &cluster,
            &[("WINIPAM_SIMULATED_EC2", "true")],
            "config:\n  enable-windows-prefix-delegation: \"true\"\n",
        ),
    )
    .expect("write the values");
    let chart = crate::support::repo_root().join("deploy/helm/winipam");
    cluster.helm(&[
        "install",
        "winipam",
        chart.to_str().expect("UTF-8"),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--values",
        values.to_str().expect("UTF-8"),
        "--wait",
        "--timeout",
        "180s",
    ]);
    leader(&client, None).await;
    for node in &nodes {
        wait_capacity(&client, node).await;
    }

    // A steady 20 pods/s of bare Windows pods, placed by the scheduler.
    cluster.kubectl(&["create", "namespace", APPS]);
    let watch = PodWatch::start(client.clone(), APPS).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), APPS);
    let started = Instant::now();
    for i in 0..STEADY_PODS {
        let due = started + Duration::from_millis(50 * i as u64);
        tokio::time::sleep_until(due.into()).await;
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("steady-{i}"), "namespace": APPS},
            "spec": {
                "nodeSelector": {"kubernetes.io/os": "windows"},
                "containers": [{"name": "app", "image": "localhost/winipam-pause:1"}]
            }
        }))
        .expect("a Pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create a pod");
    }
    let rate = STEADY_PODS as f64 / started.elapsed().as_secs_f64();
    eventually(
        "every steady pod annotated",
        Duration::from_secs(120),
        || async {
            let annotated = watch
                .pods()
                .iter()
                .filter(|p| p.annotated.is_some())
                .count();
            (annotated == STEADY_PODS)
                .then_some(())
                .ok_or(format!("{annotated} annotated"))
        },
    )
    .await;
    let mut bound_to_annotated: Vec<Duration> = watch
        .pods()
        .iter()
        .filter_map(|p| Some(p.annotated?.saturating_duration_since(p.bound?)))
        .collect();
    bound_to_annotated.sort();
    let created_to_annotated = watch.waits();
    eprintln!(
        "MEASURE prefix mode, {STEADY_PODS} pods at {rate:.1}/s: created -> annotated p50 {:?} p99 {:?} max {:?}; bound -> annotated p50 {:?} p99 {:?}",
        percentile(&created_to_annotated, 50),
        percentile(&created_to_annotated, 99),
        created_to_annotated.last().copied().unwrap_or_default(),
        percentile(&bound_to_annotated, 50),
        percentile(&bound_to_annotated, 99),
    );

    // Past capacity: the rest of the capacity and 5 more, as a Deployment.
    let capacity: usize = nodes.iter().map(|n| n.capacity).sum();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), APPS);
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(workload(capacity - STEADY_PODS + 5)).expect("a Deployment"),
        )
        .await
        .expect("create the Deployment");
    eventually(
        "capacity full, 5 pods Pending",
        Duration::from_secs(180),
        || async {
            let list = pods
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
            let (mut pending, mut unannotated) = (0, 0);
            for pod in &list.items {
                match pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    Some(node) => {
                        *per_node.entry(node).or_default() += 1;
                        if pod
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(ANNOTATION))
                            .is_none()
                        {
                            unannotated += 1;
                        }
                    }
                    None => pending += 1,
                }
            }
            for node in &nodes {
                let held = per_node.get(&node.name).copied().unwrap_or_default();
                assert!(
                    held <= node.capacity,
                    "{} holds {held} pods, capacity {}",
                    node.name,
                    node.capacity
                );
            }
            (pending == 5 && unannotated == 0)
                .then_some(())
                .ok_or(format!(
                    "{pending} pending, {unannotated} bound and not annotated"
                ))
        },
    )
    .await;
    wait_failed_scheduling(&client).await;
    watch.assert_no_shared_address();
    eprintln!(
        "MEASURE controller memory at {capacity} pods (kubelet, working set): {:?}",
        controller_memory(&cluster)
    );
    drop(watch);
    cluster.stop();
}
