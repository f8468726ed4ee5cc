//! End to end, what winipam reads and writes in a node's `status.capacity` (SPEC 2; issue 16,
//! items 3 and 7): the extended resource comes back after something resets it to 0 or removes
//! it (a kubelet re-registering does), and a kubelet `--max-pods` that disagrees with the pod IP
//! capacity gets one Warning Event per change, with the value to set, and a per-node gauge.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::support::e2e::{Env, eventually};
use crate::support::winipam::Winipam;

const RESOURCE: &str = "vpc.amazonaws.com/PrivateIPv4Address";
const MAX_PODS_MISMATCH: &str = "MaxPodsMismatch";

/// Merge-patches the node's `status.capacity` with `capacity` (a `null` value removes a key),
/// as the admin client: what a kubelet registering again does. Returns the extended resource
/// as the patch left it.
async fn patch_capacity(env: &Env, node: &str, capacity: serde_json::Value) -> Option<String> {
    let patch = json!({"status": {"capacity": capacity}});
    let patched = Api::<Node>::all(env.client.clone())
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch the status of node {node}: {e}"));
    patched.status?.capacity?.get(RESOURCE).map(|q| q.0.clone())
}

async fn wait_capacity(env: &Env, node: &str, expected: &str, controller: &Winipam) {
    eventually(
        &format!("capacity {expected} on {node}"),
        Duration::from_secs(20),
        || async {
            match env.node_capacity(node).await {
                Some(v) if v == expected => Ok(()),
                other => Err(format!("{other:?}; log:\n{}", controller.log())),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_reset_to_zero_or_removed_is_written_back() {
    let env = Env::new("e2e-capacity-reset").await;
    let node = env.add_node("reset", "m5.large").await;
    let winipam = env.start("winipam-0").await;
    wait_capacity(&env, &node.name, "9", &winipam).await;

    let reset = patch_capacity(&env, &node.name, json!({ RESOURCE: "0" })).await;
    assert_eq!(reset.as_deref(), Some("0"));
    wait_capacity(&env, &node.name, "9", &winipam).await;

    let removed = patch_capacity(&env, &node.name, json!({ RESOURCE: null })).await;
    assert_eq!(removed, None);
    wait_capacity(&env, &node.name, "9", &winipam).await;
}

/// The `MaxPodsMismatch` Events about `node`, each counted with its series (the recorder folds
/// repeats of one Event into a series): (total emitted, notes).
async fn mismatch_events(env: &Env, node: &str) -> (i32, Vec<String>) {
    let events: Vec<Event> = env
        .events_about("default", node)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(MAX_PODS_MISMATCH))
        .collect();
    let total = events
        .iter()
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum();
    let notes = events.into_iter().filter_map(|e| e.note).collect();
    (total, notes)
}

async fn wait_gauges(controller: &Winipam, node: &str, max_pods: f64, mismatch: f64) {
    eventually(
        &format!("max-pods gauges {max_pods} / {mismatch} for {node}"),
        Duration::from_secs(20),
        || async {
            let labels = [("node", node)];
            let got = (
                controller
                    .metric("winipam_node_kubelet_max_pods", &labels)
                    .await,
                controller
                    .metric("winipam_node_max_pods_mismatch", &labels)
                    .await,
            );
            if got == (Some(max_pods), Some(mismatch)) {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pods_that_disagrees_with_the_ip_capacity_is_warned_once_per_change() {
    let env = Env::new("e2e-max-pods").await;
    let below = env.add_node("below", "m5.large").await;
    let above = env.add_node("above", "m5.large").await;
    let winipam = env.start("winipam-0").await;
    wait_capacity(&env, &below.name, "9", &winipam).await;
    wait_capacity(&env, &above.name, "9", &winipam).await;

    // Below: m5.large gives 9 pod IPs in secondary mode; a kubelet at 4 leaves 5 unused.
    patch_capacity(&env, &below.name, json!({"pods": "4"})).await;
    wait_gauges(&winipam, &below.name, 4.0, 1.0).await;
    let notes = eventually(
        "a MaxPodsMismatch Event",
        Duration::from_secs(20),
        || async {
            match mismatch_events(&env, &below.name).await {
                (0, _) => Err("none yet".to_string()),
                (_, notes) => Ok(notes),
            }
        },
    )
    .await;
    assert!(
        notes[0].contains("--max-pods is 4") && notes[0].contains("--max-pods=9 "),
        "{notes:?}"
    );
    assert!(
        notes[0].contains("5 addresses can never be used"),
        "{notes:?}"
    );
    // Resyncs every 3 s and passes for the other node: no second Event for the same values.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(mismatch_events(&env, &below.name).await.0, 1);

    // Agreement clears the gauge and sends nothing; a new disagreement is told again.
    patch_capacity(&env, &below.name, json!({"pods": "9"})).await;
    wait_gauges(&winipam, &below.name, 9.0, 0.0).await;
    assert_eq!(mismatch_events(&env, &below.name).await.0, 1);
    patch_capacity(&env, &below.name, json!({"pods": "5"})).await;
    wait_gauges(&winipam, &below.name, 5.0, 1.0).await;
    eventually(
        "a second MaxPodsMismatch Event",
        Duration::from_secs(20),
        || async {
            match mismatch_events(&env, &below.name).await {
                (2, _) => Ok(()),
                (n, notes) => Err(format!("{n}: {notes:?}")),
            }
        },
    )
    .await;

    // Above: the kubelet's default of 110 on a 9-address node.
    patch_capacity(&env, &above.name, json!({"pods": "110"})).await;
    wait_gauges(&winipam, &above.name, 110.0, 1.0).await;
    let notes = eventually(
        "an Event about the other node",
        Duration::from_secs(20),
        || async {
            match mismatch_events(&env, &above.name).await {
                (1, notes) => Ok(notes),
                (n, notes) => Err(format!("{n}: {notes:?}")),
            }
        },
    )
    .await;
    assert!(
        notes[0].contains("only 9 pod IPs") && notes[0].contains("--max-pods=9 "),
        "{notes:?}"
    );
    // The extended resource was left as it was throughout.
    for node in [&below, &above] {
        assert_eq!(env.node_capacity(&node.name).await.as_deref(), Some("9"));
    }
}
