//! What the cluster tests do to the cluster and read from it: the image, the chart's values,
//! Windows nodes behind moto instances, the workload, and the waits on what follows.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::InstanceType;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub use crate::common::eni_ips;
use crate::image::build_offline;
use crate::support::{AMI, ANNOTATION, AZ, Cluster, eventually};
use crate::watch::PodWatch;

pub const RELEASE_NS: &str = "winipam-system";
pub const APPS: &str = "apps";
pub const RESOURCE: &str = "vpc.amazonaws.com/PrivateIPv4Address";
/// The chart's defaults: the controller's cool-down and the lease duration.
pub const COOL_DOWN: Duration = Duration::from_secs(30);
pub const LEASE: Duration = Duration::from_secs(15);

pub struct WindowsNode {
    pub name: String,
    pub eni_id: String,
    pub capacity: usize,
}

/// Waits until winipam has patched its CA into the webhook configuration `kind`.
pub fn assert_ca_patched(cluster: &Cluster, kind: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ca = cluster.kubectl(&[
            "get",
            kind,
            "winipam",
            "-o",
            "jsonpath={.webhooks[0].clientConfig.caBundle}",
        ]);
        if ca.len() > 100 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{kind} winipam has no CA bundle patched in: {ca:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A user's Windows pod that names an address is refused, by the guard that says `by`. After a
/// switch of guard the apiserver needs a moment to drop the deleted policy and to call the new
/// webhook (which, with failurePolicy Ignore, admits while it cannot be called), so server-side
/// dry runs wait for the guard first; then a real create must be refused.
pub fn assert_squatter_denied(cluster: &Cluster, by: &str) {
    let overrides = json!({
        "metadata": {"annotations": {ANNOTATION: "10.200.0.10"}},
        "spec": {"nodeSelector": {"kubernetes.io/os": "windows"}}
    })
    .to_string();
    let create = |dry_run: bool| {
        let mut args = vec![
            "-n",
            APPS,
            "run",
            "squatter",
            "--image=localhost/winipam-pause:1",
            "--overrides",
            &overrides,
        ];
        if dry_run {
            args.push("--dry-run=server");
        }
        let out = cluster.run("kubectl", &args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (admitted, stderr) = create(true);
        if !admitted && stderr.contains(by) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a user's pod with the annotation was not denied by {by}: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (admitted, stderr) = create(false);
    assert!(
        !admitted && stderr.contains(by),
        "a user's pod with the annotation was not denied by {by}: {stderr}"
    );
}

/// The image, assembled offline from the binary under test and imported into the node's
/// containerd under two tags (`e2e-1`, and `e2e-2` for the upgrade).
pub fn import_image(cluster: &Cluster, dir: &std::path::Path) {
    let archive = dir.join("winipam.tar");
    build_offline("localhost/winipam:e2e-1", &archive);
    cluster.ctr(&["images", "import", archive.to_str().expect("UTF-8 path")]);
    cluster.ctr(&[
        "images",
        "tag",
        "localhost/winipam:e2e-1",
        "localhost/winipam:e2e-2",
    ]);
}

/// The memory of winipam's pods, as the kubelet reads it from their cgroups (working set).
pub fn controller_memory(cluster: &Cluster) -> Vec<(String, u64)> {
    let node = cluster.var("WINIPAM_CLUSTER_NODE").to_owned();
    let summary: serde_json::Value = serde_json::from_str(&cluster.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
    ]))
    .expect("the kubelet's summary");
    summary["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["podRef"]["namespace"] == RELEASE_NS)
        .filter_map(|p| {
            Some((
                p["podRef"]["name"].as_str()?.to_owned(),
                p["memory"]["workingSetBytes"].as_u64()?,
            ))
        })
        .collect()
}

/// The chart's values: its defaults except the image and the EC2 endpoint, plus `extra`.
pub fn values_yaml(cluster: &Cluster, extra_env: &[(&str, &str)], extra: &str) -> String {
    let mut base = format!(
        r#"image:
  repository: localhost/winipam
  tag: e2e-1
  pullPolicy: Never
region: us-east-1
# Debug logs of the controller and its lease manager for a failed run (kept in the cluster's
# last-logs, and printed by a failed wait on a change of leader).
logLevel: info,winipam=debug,kube_lease_manager=debug
extraEnv:
  - name: WINIPAM_EC2_ENDPOINT
    value: {}
  - name: AWS_ACCESS_KEY_ID
    value: testing
  - name: AWS_SECRET_ACCESS_KEY
    value: testing
"#,
        cluster.var("WINIPAM_CLUSTER_EC2_ENDPOINT")
    );
    for (name, value) in extra_env {
        base.push_str(&format!("  - name: {name}\n    value: \"{value}\"\n"));
    }
    base + extra
}

/// A Deployment of Windows pods that says only `nodeSelector: kubernetes.io/os: windows`.
pub fn workload(replicas: usize) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "win", "namespace": APPS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "win"}},
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"app": "win"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "windows"},
                    "containers": [{"name": "app", "image": "localhost/winipam-pause:1"}]
                }
            }
        }
    })
}

/// Windows nodes (name, instance type, capacity), each behind a moto instance in a subnet of its own.
pub async fn add_windows_nodes(
    cluster: &Cluster,
    client: &Client,
    specs: &[(&str, &str, usize)],
) -> Vec<WindowsNode> {
    let ec2 = cluster.ec2();
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.200.0.0/16")
        .send()
        .await
        .expect("CreateVpc");
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_owned();
    let mut out = Vec::new();
    for (index, (name, instance_type, capacity)) in specs.iter().enumerate() {
        // A subnet per node: moto draws addresses at random from a subnet without looking at
        // other ENIs.
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.200.{}.0/20", index * 16))
            .availability_zone(AZ)
            .send()
            .await
            .expect("CreateSubnet");
        let subnet_id = subnet
            .subnet()
            .and_then(|s| s.subnet_id())
            .expect("subnet id");
        let run = ec2
            .run_instances()
            .image_id(AMI)
            .instance_type(InstanceType::from(*instance_type))
            .subnet_id(subnet_id)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("RunInstances");
        let instance = &run.instances()[0];
        let instance_id = instance.instance_id().expect("instance id");
        let eni_id = instance
            .network_interfaces()
            .iter()
            .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
            .and_then(|n| n.network_interface_id())
            .expect("primary ENI");
        create_node(client, name, instance_type, instance_id).await;
        out.push(WindowsNode {
            name: (*name).to_owned(),
            eni_id: eni_id.to_owned(),
            capacity: *capacity,
        });
    }
    for node in &out {
        wait_ready(client, &node.name).await;
    }
    out
}

/// A Windows Node that KWOK keeps Ready, for instance `instance_id` of `instance_type`.
pub async fn create_node(client: &Client, name: &str, instance_type: &str, instance_id: &str) {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "type": "kwok",
                "kubernetes.io/os": "windows",
                "kubernetes.io/hostname": name,
                "node.kubernetes.io/instance-type": instance_type,
            },
            "annotations": {"kwok.x-k8s.io/node": "fake"}
        },
        "spec": {"providerID": format!("aws:///{AZ}/{instance_id}")}
    }))
    .expect("a Node");
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create the Node");
}

pub async fn wait_ready(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        &format!("{name} Ready (KWOK)"),
        Duration::from_secs(60),
        || async {
            let n = nodes.get(name).await.map_err(|e| e.to_string())?;
            let ready = n
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(()).ok_or_else(|| "not Ready".to_owned())
        },
    )
    .await;
}

pub async fn wait_capacity(client: &Client, node: &WindowsNode) {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        &format!("{}'s advertised capacity", node.name),
        Duration::from_secs(60),
        || async {
            let n = nodes.get(&node.name).await.map_err(|e| e.to_string())?;
            let got = n
                .status
                .and_then(|s| s.capacity)
                .and_then(|c| c.get(RESOURCE).map(|q| q.0.clone()));
            (got.as_deref() == Some(node.capacity.to_string().as_str()))
                .then_some(())
                .ok_or(format!("capacity {got:?}"))
        },
    )
    .await;
}

/// Waits until `bound` pods are bound (no node above its capacity), the rest of `total` Pending,
/// and every bound pod annotated with an address on its node's ENI, no two the same.
pub async fn wait_placed(
    cluster: &Cluster,
    pods: &Api<Pod>,
    nodes: &[WindowsNode],
    capacity: usize,
    total: usize,
) {
    let bound_target = total.min(capacity);
    let ec2 = cluster.ec2();
    crate::support::eventually_in(
        cluster,
        &format!("{bound_target} of {total} pods bound and annotated"),
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let live: Vec<&Pod> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            if live.len() != total {
                return Err(format!("{} live pods", live.len()));
            }
            let mut per_node: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
            let mut unannotated = 0;
            for pod in &live {
                let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
                    continue;
                };
                let address = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION))
                    .and_then(|v| v.split('/').next()?.parse().ok());
                match address {
                    Some(a) => per_node.entry(node).or_default().push(a),
                    None => unannotated += 1,
                }
            }
            let bound: usize = per_node.values().map(Vec::len).sum::<usize>() + unannotated;
            if bound != bound_target || unannotated > 0 {
                return Err(format!(
                    "{bound} bound, {unannotated} of them not annotated"
                ));
            }
            for node in nodes {
                let held = per_node
                    .get(node.name.as_str())
                    .cloned()
                    .unwrap_or_default();
                assert!(
                    held.len() <= node.capacity,
                    "{} holds {} pods, capacity {}",
                    node.name,
                    held.len(),
                    node.capacity
                );
                let on_eni = eni_ips(&ec2, &node.eni_id).await;
                for address in &held {
                    if !on_eni.contains(address) {
                        return Err(format!(
                            "{address} of a pod on {} is not on its ENI",
                            node.name
                        ));
                    }
                }
            }
            let mut all: Vec<Ipv4Addr> = per_node.values().flatten().copied().collect();
            all.sort();
            let before = all.len();
            all.dedup();
            assert_eq!(before, all.len(), "an address named by two live pods");
            Ok(())
        },
    )
    .await;
}

/// Waits until no node's NodeAddressPool counts a cooling address.
pub async fn wait_no_cooling(client: &Client) {
    let pools: Api<winipam::crd::NodeAddressPool> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    // A pod's going is written with the next coalesced status (`--status-interval`), so a
    // status can still list a gone pod's address as used: the count of used addresses must
    // match the live annotated pods too, or the cool-downs have not even been written yet.
    eventually("the cool-downs over", COOL_DOWN * 4, || async {
        let list = pools
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let count = |key: &str| -> u64 {
            (list.items.iter())
                .filter_map(|p| serde_json::to_value(p).ok())
                .map(|p| p["status"]["counts"][key].as_u64().unwrap_or(0))
                .sum()
        };
        let (cooling, used) = (count("cooling"), count("used"));
        let live = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                (p.metadata.annotations.as_ref()).is_some_and(|a| a.contains_key(ANNOTATION))
            })
            .count() as u64;
        (cooling == 0 && used == live).then_some(()).ok_or(format!(
            "{cooling} cooling, {used} used, {live} annotated pods"
        ))
    })
    .await;
}

/// Every pod of the workload asks for the IP resource: the mutating webhook was reached for each
/// (with failurePolicy Ignore a miss admits the pod without it, and the scheduler then
/// overcommits its node).
pub async fn assert_every_pod_has_the_resource(pods: &Api<Pod>) {
    let list = pods.list(&ListParams::default()).await.expect("list pods");
    let missing: Vec<String> = list
        .items
        .iter()
        .filter(|p| {
            let limits = p
                .spec
                .as_ref()
                .and_then(|s| s.containers[0].resources.clone())
                .and_then(|r| r.limits);
            limits
                .and_then(|l| l.get(RESOURCE).map(|q| q.0.clone()))
                .as_deref()
                != Some("1")
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        missing.is_empty(),
        "the mutating webhook did not give these pods the resource: {missing:?}"
    );
}

/// Waits for the scheduler's FailedScheduling Event that names the IP resource.
pub async fn wait_failed_scheduling(client: &Client) {
    let events: Api<Event> = Api::namespaced(client.clone(), APPS);
    eventually(
        "FailedScheduling naming the resource",
        Duration::from_secs(30),
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("FailedScheduling")
                        && e.message.as_deref().unwrap_or("").contains(RESOURCE)
                })
                .then_some(())
                .ok_or_else(|| "no such event yet".to_owned())
        },
    )
    .await;
}

pub async fn wait_live(watch: &PodWatch, count: usize) {
    eventually(
        &format!("{count} pods left"),
        Duration::from_secs(60),
        || async {
            let live = watch.live().len();
            (live == count).then_some(()).ok_or(format!("{live} live"))
        },
    )
    .await;
}

pub async fn scale(deployments: &Api<Deployment>, replicas: usize) {
    deployments
        .patch(
            "win",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("scale the Deployment");
}

pub async fn lease(client: &Client) -> Lease {
    Api::<Lease>::namespaced(client.clone(), RELEASE_NS)
        .get("winipam")
        .await
        .expect("the winipam Lease")
}

/// The lease holder, once there is one (and it is not `not`).
pub async fn leader(client: &Client, not: Option<&str>) -> String {
    eventually("a leader", LEASE * 3, || async {
        let holder = lease_holder(client).await?;
        (Some(holder.as_str()) != not)
            .then_some(holder.clone())
            .ok_or(format!("holder {holder:?}"))
    })
    .await
}

/// The Lease's holder now; `Err` while there is none. A released Lease stays empty until the
/// other replicas' next look at it, up to a lease duration per change of holder (a rolling
/// upgrade can change it twice).
pub async fn lease_holder(client: &Client) -> Result<String, String> {
    let lease = Api::<Lease>::namespaced(client.clone(), RELEASE_NS)
        .get_opt("winipam")
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no Lease yet")?;
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    (!holder.is_empty())
        .then_some(holder)
        .ok_or_else(|| "no holder".to_owned())
}

/// The pod of a lease holder: winipam's identity is `POD_RANDOM` (a restarted container of the
/// same pod is another identity).
pub fn holder_pod(holder: &str) -> &str {
    holder.split('_').next().unwrap_or(holder)
}

/// Whether the lease time `t` (wall clock) is after the instant `since`.
pub fn renewed_after(t: k8s_openapi::jiff::Timestamp, since: Instant) -> bool {
    let now = k8s_openapi::jiff::Timestamp::now();
    let ago = since.elapsed();
    let since_wall = now - k8s_openapi::jiff::SignedDuration::try_from(ago).unwrap_or_default();
    t > since_wall
}

pub async fn annotations(pods: &Api<Pod>) -> BTreeMap<String, Option<String>> {
    pods.list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .map(|p| {
            let value = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION).cloned());
            (p.metadata.name.unwrap_or_default(), value)
        })
        .collect()
}
