//! End to end, nodes on their way out (issue 16): a cordoned node keeps only its pods'
//! addresses (a freed one after its cool-down), says why in a `NodeLeaving` Event and
//! `winipam_node_leaving`, keeps its capacity; uncordoned, it returns to its targets. A
//! Karpenter disruption taint alone does the same.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::e2e::{Env, eventually};

const COOLDOWN: Duration = Duration::from_secs(6);
const SETTLE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_node_gives_back_its_free_addresses_until_uncordoned() {
    let env = Env::new("e2e-leaving").await;
    env.set_config(&[
        ("ip-cooldown-seconds", "6"),
        ("windows-minimum-ip-target", "8"),
    ])
    .await;
    let node = env.add_node("n0", "m5.large").await;
    let winipam = env.start("winipam-0").await;
    let names: Vec<String> = (0..3).map(|i| format!("pod-{i}")).collect();
    for name in &names {
        env.create_pod(name, &node.name).await;
    }
    env.wait_annotated(&names, SETTLE).await;
    // Minimum 8 with 3 pods (warm 3): 8 addresses.
    env.wait_eni_len(&node, 8, SETTLE).await;
    let labels = [("node", node.name.as_str())];
    let leaving = || winipam.metric("winipam_node_leaving", &labels);
    assert_eq!(leaving().await, Some(0.0));

    // One pod leaves, then the node is cordoned (kubectl cordon).
    env.delete_pod("pod-0").await;
    let cordoned_at = Instant::now();
    env.patch_node(&node.name, json!({"spec": {"unschedulable": true}}))
        .await;
    // At once: the 2 pods' addresses and the cooling one.
    env.wait_eni_len(&node, 3, Duration::from_secs(5)).await;
    let event = env
        .wait_event("default", &node.name, "NodeLeaving", Duration::from_secs(5))
        .await;
    let note = event.note.unwrap_or_default();
    assert!(note.contains("spec.unschedulable"), "{note}");
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(leaving().await, Some(1.0));
    // The cooling address stays until its cool-down ends, then goes: the pods' count, no more.
    tokio::time::sleep_until((cordoned_at + COOLDOWN - Duration::from_secs(2)).into()).await;
    assert_eq!(env.eni_ips(&node.eni_id).await.len(), 3, "released early");
    env.wait_eni_len(&node, 2, SETTLE).await;
    let pods = env.pods().await;
    assert!(pods["pod-1"].annotation.is_some() && pods["pod-2"].annotation.is_some());
    assert_eq!(env.node_capacity(&node.name).await.as_deref(), Some("9"));
    // It does not drift back while cordoned.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(env.eni_ips(&node.eni_id).await.len(), 2);

    // Uncordoned: the minimum applies again.
    env.patch_node(&node.name, json!({"spec": {"unschedulable": null}}))
        .await;
    env.wait_eni_len(&node, 8, Duration::from_secs(10)).await;
    eventually("the gauge back to 0", Duration::from_secs(5), || async {
        match leaving().await {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Karpenter's disruption taint alone (no cordon): the free addresses go again.
    let taint = json!({"key": "karpenter.sh/disrupted", "effect": "NoSchedule"});
    env.patch_node(&node.name, json!({"spec": {"taints": [taint]}}))
        .await;
    env.wait_eni_len(&node, 2, Duration::from_secs(10)).await;
    env.patch_node(&node.name, json!({"spec": {"taints": null}}))
        .await;
    env.wait_eni_len(&node, 8, Duration::from_secs(10)).await;
}
