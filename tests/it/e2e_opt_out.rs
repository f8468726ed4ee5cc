//! End to end, nodes left to another IPAM (README, Configuration): a Windows node labelled
//! `winipam.dev/managed: "false"` gets no capacity, no NodeAddressPool, no address and no Event,
//! while an unlabelled one beside it is managed; labelling a managed node stops winipam there
//! without undoing anything it did (its capacity, addresses and NodeAddressPool stay), and
//! managing it again restores what its NodeAddressPool records (the cool-downs).

use std::time::Duration;

use serde_json::json;

use crate::support::e2e::{Env, eventually};

const MANAGED_LABEL: &str = "winipam.dev/managed";

async fn label(env: &Env, node: &str, value: &str) {
    let patch = json!({"metadata": {"labels": {MANAGED_LABEL: value}}});
    env.patch_node(node, patch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_node_is_left_alone_and_labelling_a_managed_node_undoes_nothing() {
    let env = Env::new("e2e-optout").await;
    let managed = env.add_node("managed", "m5.large").await;
    let other = env.add_node("other", "m5.large").await;
    label(&env, &other.name, "false").await;
    env.create_pod("on-managed", &managed.name).await;
    env.create_pod("on-other", &other.name).await;
    let winipam = env.start("winipam-0").await;

    env.wait_annotated(&["on-managed".into()], Duration::from_secs(15))
        .await;
    assert_eq!(env.node_capacity(&managed.name).await.as_deref(), Some("9"));
    assert!(env.pool(&managed.name).await.is_some());
    // Both nodes came in the same listing; a resync (3 s here) later, still nothing for the
    // labelled one.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(env.node_capacity(&other.name).await, None);
    assert!(env.pool(&other.name).await.is_none(), "no NodeAddressPool");
    assert_eq!(env.pods().await["on-other"].annotation, None);
    assert!(env.eni_ips(&other.eni_id).await.is_empty(), "ENI untouched");
    let events = env.events_about("default", &other.name).await;
    assert!(events.is_empty(), "no Event about it: {events:?}");
    assert_eq!(
        winipam
            .metric("winipam_nodes", &[("state", "managed")])
            .await,
        Some(1.0)
    );

    // The managed node is labelled: its worker stops (its gauges go), nothing is undone.
    let before = env.eni_ips(&managed.eni_id).await;
    label(&env, &managed.name, "false").await;
    eventually(
        "the node's gauges gone",
        Duration::from_secs(10),
        || async {
            match winipam
                .metric("winipam_node_capacity_ips", &[("node", &managed.name)])
                .await
            {
                None => Ok(()),
                Some(v) => Err(format!("still {v}")),
            }
        },
    )
    .await;
    env.create_pod("late", &managed.name).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pods = env.pods().await;
    assert_eq!(pods["late"].annotation, None, "no address handed out");
    assert!(pods["on-managed"].annotation.is_some(), "annotation kept");
    assert_eq!(env.node_capacity(&managed.name).await.as_deref(), Some("9"));
    assert!(env.pool(&managed.name).await.is_some(), "pool kept");
    assert_eq!(
        env.eni_ips(&managed.eni_id).await,
        before,
        "nothing released"
    );

    // While the node is left alone its pod goes: its address is still listed as in use in the
    // NodeAddressPool, and nobody cooled it down.
    let gone = pods["on-managed"].address();
    env.delete_pod("on-managed").await;

    // Managed again once the label says so: the waiting pod gets an address, and the new
    // worker reads the records its predecessor left, so the address of the pod that went
    // while no worker ran cools down from now instead of being free at once.
    label(&env, &managed.name, "true").await;
    env.wait_annotated(&["late".into()], Duration::from_secs(15))
        .await;
    assert_ne!(env.pods().await["late"].address(), gone);
    let gone = gone.map(|a| a.to_string());
    eventually(
        "the address freed while the node was left alone cools down",
        Duration::from_secs(10),
        || async {
            let status = env.pool(&managed.name).await.and_then(|p| p.status);
            let status = status.ok_or("no status")?;
            status
                .cooldowns
                .iter()
                .any(|r| Some(&r.address) == gone.as_ref())
                .then_some(())
                .ok_or(format!("{gone:?} not cooling: {:?}", status.cooldowns))
        },
    )
    .await;
}
