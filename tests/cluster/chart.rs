//! winipam as a cluster admin runs it: the image on a real kubelet, installed by `helm install`
//! with the chart's defaults (only the image and the EC2 endpoint differ), Windows nodes from
//! KWOK backed by moto instances, and the real scheduler placing a Deployment of Windows pods by
//! the capacity winipam advertises. One test, in phases that build on each other: install,
//! scale past capacity, scale down and up, upgrade while scaling, kill the leader in a burst,
//! drain to nothing, uninstall.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};

use crate::common::eventually_then;
use crate::logtap::LogTap;
use crate::ops::*;
use crate::support::{Cluster, eventually, percentile};
use crate::watch::PodWatch;

/// Secondary-mode capacity of the instance types used: one ENI, (IPs per ENI - 1).
const NODES: [(&str, &str, usize); 2] = [("win-m5", "m5.large", 9), ("win-c5", "c5.xlarge", 14)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_on_a_real_node() {
    let _turn = crate::support::turn().await;
    let cluster = Cluster::start();
    eprintln!(
        "MEASURE cluster up (node Ready) in {:.1} s",
        cluster.up_in.as_secs_f64()
    );
    let client = cluster.client().await;

    let dir = tempfile::tempdir().expect("a temp dir");
    import_image(&cluster, dir.path());

    let nodes = add_windows_nodes(&cluster, &client, &NODES).await;
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, values_yaml(&cluster, &[], "")).expect("write the values");
    let chart = crate::support::repo_root().join("deploy/helm/winipam");
    let chart = chart.to_str().expect("UTF-8 path");
    let values = values.to_str().expect("UTF-8 path");

    // --- install: both replicas Ready through their probes, one leads, webhooks served.
    let started = Instant::now();
    cluster.helm(&[
        "install",
        "winipam",
        chart,
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--values",
        values,
        "--wait",
        "--timeout",
        "180s",
    ]);
    eprintln!(
        "MEASURE helm install --wait: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let deployment: Deployment = Api::namespaced(client.clone(), RELEASE_NS)
        .get("winipam")
        .await
        .expect("the winipam Deployment");
    let status = deployment.status.expect("Deployment status");
    assert_eq!(status.ready_replicas, Some(2), "both replicas Ready");
    let first_leader = leader(&client, None).await;
    eprintln!("leader: {first_leader}");
    assert_ca_patched(&cluster, "mutatingwebhookconfiguration");
    for node in &nodes {
        wait_capacity(&client, node).await;
    }

    cluster.kubectl(&["create", "namespace", APPS]);
    // The chart's default guard, the apiserver's ValidatingAdmissionPolicy, denies a user's pod
    // that names an address.
    assert_squatter_denied(&cluster, "ValidatingAdmissionPolicy");

    // --- past capacity: the scheduler places only what the advertised capacity allows.
    let watch = PodWatch::start(client.clone(), APPS).await;
    let capacity: usize = nodes.iter().map(|n| n.capacity).sum();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), APPS);
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(workload(capacity + 7)).expect("a Deployment"),
        )
        .await
        .expect("create the Deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), APPS);
    wait_placed(&cluster, &pods, &nodes, capacity, capacity + 7).await;
    for pod in pods.list(&ListParams::default()).await.expect("list pods") {
        let limits = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].resources.clone())
            .and_then(|r| r.limits);
        assert_eq!(
            limits
                .and_then(|l| l.get(RESOURCE).map(|q| q.0.clone()))
                .as_deref(),
            Some("1"),
            "the mutating webhook did not give {:?} the resource",
            pod.metadata.name
        );
    }
    wait_failed_scheduling(&client).await;
    watch.assert_no_shared_address();

    // --- down and up again: freed addresses come back only after their cool-down.
    scale(&deployments, 6).await;
    wait_live(&watch, 6).await;
    scale(&deployments, capacity).await;
    wait_placed(&cluster, &pods, &nodes, capacity, capacity).await;
    watch.assert_no_shared_address();

    // --- upgrade to a new tag while the Deployment scales. The cool-downs of the scale-down end
    // first: a pod that waits for a cooling address on a full node waits the cool-down (30 s),
    // upgrade or not, and the 30 s bound below is about the change of leader.
    scale(&deployments, 4).await;
    wait_live(&watch, 4).await;
    wait_no_cooling(&client).await;
    let tap = LogTap::start(&cluster);
    let upgrade_start = Instant::now();
    let upgrade = cluster
        .command(cluster.var("WINIPAM_HELM_BIN"))
        .args([
            "upgrade",
            "winipam",
            chart,
            "--namespace",
            RELEASE_NS,
            "--values",
            values,
            "--set",
            "image.tag=e2e-2",
            "--wait",
            "--timeout",
            "180s",
        ])
        .spawn()
        .expect("helm upgrade");
    tokio::time::sleep(Duration::from_secs(2)).await;
    scale(&deployments, capacity).await;
    let upgrade = tokio::task::spawn_blocking(move || {
        let mut upgrade = upgrade;
        upgrade.wait()
    })
    .await
    .expect("join")
    .expect("wait for helm upgrade");
    assert!(upgrade.success(), "helm upgrade failed");
    let second_leader = eventually_then(
        "a leader of the new ReplicaSet",
        LEASE * 6,
        || {
            let client = client.clone();
            let first = first_leader.clone();
            async move {
                let holder = lease_holder(&client).await?;
                let pod: Pod = Api::namespaced(client, RELEASE_NS)
                    .get(holder_pod(&holder))
                    .await
                    .map_err(|e| e.to_string())?;
                let image = pod
                    .spec
                    .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
                    .unwrap_or_default();
                (holder != first && image.ends_with(":e2e-2"))
                    .then_some(holder.clone())
                    .ok_or(format!("{holder} runs {image}"))
            }
        },
        || tap.print(&cluster, 300),
    )
    .await;
    wait_placed(&cluster, &pods, &nodes, capacity, capacity).await;
    let upgrade_waits: Vec<(String, Duration)> = watch
        .pods()
        .into_iter()
        .filter(|p| p.created >= upgrade_start)
        .filter_map(|p| {
            Some((
                p.name.clone(),
                p.annotated?.saturating_duration_since(p.bound?),
            ))
        })
        .collect();
    eprintln!(
        "MEASURE upgrade while scaling: {} pods, longest bound -> annotated {:?}",
        upgrade_waits.len(),
        upgrade_waits
            .iter()
            .map(|(_, w)| *w)
            .max()
            .unwrap_or_default()
    );
    let slow: Vec<_> = upgrade_waits
        .iter()
        .filter(|(_, wait)| *wait > Duration::from_secs(30))
        .cloned()
        .collect();
    // Pods of this phase wait milliseconds when the hand-over holds nothing back: a wait of
    // seconds is worth the replicas' logs even when it passes.
    if upgrade_waits
        .iter()
        .any(|(_, wait)| *wait > Duration::from_secs(5))
    {
        tap.print(&cluster, 400);
    }
    drop(tap);
    assert!(
        slow.is_empty(),
        "pods waited more than 30 s for an address during the upgrade: {slow:?}"
    );
    watch.assert_no_shared_address();
    eprintln!("leader after the upgrade: {second_leader}");

    // --- the leader's container killed through the CRI in the middle of a burst: once the
    // burst's pods are admitted, while their addresses are being handed out. (Killed before the
    // pods are admitted, a replica's webhook endpoint can be dead when the apiserver calls it;
    // with failurePolicy Ignore such a pod goes without the IP resource and the scheduler
    // overcommits the node: the price of Ignore, documented in the chart.)
    scale(&deployments, 5).await;
    wait_live(&watch, 5).await;
    scale(&deployments, capacity).await;
    wait_live(&watch, capacity).await;
    assert_every_pod_has_the_resource(&pods).await;
    let leader_pod: Pod = Api::namespaced(client.clone(), RELEASE_NS)
        .get(holder_pod(&second_leader))
        .await
        .expect("the leader pod");
    let container = leader_pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().and_then(|c| c.container_id.clone()))
        .expect("the leader's container id");
    let container = container.trim_start_matches("containerd://");
    let tap = LogTap::start(&cluster);
    let killed = Instant::now();
    cluster.ctr(&["tasks", "kill", "--signal", "SIGKILL", container]);
    let third_leader = eventually_then(
        "a leader after the kill",
        LEASE * 3,
        || {
            let client = client.clone();
            async move {
                let lease = lease(&client).await;
                let spec = lease.spec.unwrap_or_default();
                let renewed = spec.renew_time.map(|t| t.0);
                let holder = spec.holder_identity.unwrap_or_default();
                // A holder that renewed after the kill leads (the standby, or the restarted pod).
                match renewed {
                    Some(t) if renewed_after(t, killed) => Ok(holder),
                    _ => Err(format!(
                        "lease held by {holder}, not renewed since the kill"
                    )),
                }
            }
        },
        || tap.print(&cluster, 300),
    )
    .await;
    drop(tap);
    wait_placed(&cluster, &pods, &nodes, capacity, capacity).await;
    eprintln!(
        "MEASURE leader killed: {third_leader} leads, every pod annotated {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    watch.assert_no_shared_address();

    // --- nothing leaks: with no pods, each ENI shrinks to the minimum target (3) once the
    // cool-downs end.
    scale(&deployments, 0).await;
    wait_live(&watch, 0).await;
    let ec2 = cluster.ec2();
    for node in &nodes {
        eventually(
            &format!("{}'s ENI back to 3 addresses", node.name),
            COOL_DOWN * 4,
            || async {
                let ips = eni_ips(&ec2, &node.eni_id).await;
                (ips.len() == 3)
                    .then_some(())
                    .ok_or(format!("{} secondary addresses: {ips:?}", ips.len()))
            },
        )
        .await;
    }
    watch.assert_no_shared_address();
    watch.assert_cool_downs(COOL_DOWN, Duration::from_secs(1));
    let waits = watch.waits();
    eprintln!(
        "MEASURE pod created -> annotated over {} pods: p50 {:?} p99 {:?} max {:?}",
        waits.len(),
        percentile(&waits, 50),
        percentile(&waits, 99),
        waits.last().copied().unwrap_or_default()
    );

    eprintln!(
        "MEASURE controller memory (kubelet, working set): {:?}",
        controller_memory(&cluster)
    );

    // --- the guard of older clusters: the validating webhook, served through its Service with
    // the self-managed certificate, denies the same pod.
    cluster.helm(&[
        "upgrade",
        "winipam",
        chart,
        "--namespace",
        RELEASE_NS,
        "--values",
        values,
        "--set",
        "image.tag=e2e-2",
        "--set",
        "annotationGuard=webhook",
        "--wait",
        "--timeout",
        "180s",
    ]);
    assert_ca_patched(&cluster, "validatingwebhookconfiguration");
    assert_squatter_denied(
        &cluster,
        "admission webhook \"ip-annotation.winipam.dev\" denied",
    );

    // --- uninstall: the pods and their annotations stay; no winipam pod does.
    scale(&deployments, 4).await;
    wait_placed(&cluster, &pods, &nodes, capacity, 4).await;
    let before: BTreeMap<String, Option<String>> = annotations(&pods).await;
    cluster.helm(&[
        "uninstall",
        "winipam",
        "--namespace",
        RELEASE_NS,
        "--wait",
        "--timeout",
        "120s",
    ]);
    let release_pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NS);
    eventually("no winipam pod left", Duration::from_secs(60), || async {
        let left = release_pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        left.items
            .is_empty()
            .then_some(())
            .ok_or(format!("{} left", left.items.len()))
    })
    .await;
    assert_eq!(
        annotations(&pods).await,
        before,
        "uninstall changed the workload's pods"
    );

    drop(watch);
    cluster.stop();
}
