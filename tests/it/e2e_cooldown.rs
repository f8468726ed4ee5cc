//! End to end, giving addresses back (SPEC 5.3, 6.2): the address of a deleted or finished pod
//! cools down before anyone gets it again, and is handed out again after.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::support::e2e::{Env, assert_distinct, eventually};

const COOLDOWN: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freed_addresses_are_reused_only_after_the_cooldown() {
    let env = Env::new("e2e-cooldown").await;
    env.set_config(&[("ip-cooldown-seconds", "6")]).await;
    let node = env.add_node("n0", "m5.large").await;
    let winipam = env.start("winipam-0").await;

    // Fill the node: 9 pods, capacity 9.
    let names: Vec<String> = (0..9).map(|i| format!("pod-{i}")).collect();
    for name in &names {
        env.create_pod(name, &node.name).await;
    }
    let pods = env.wait_annotated(&names, Duration::from_secs(20)).await;
    env.wait_eni_len(&node, 9, Duration::from_secs(10)).await;

    // Two pods deleted, one finished (its address goes too: release-terminal-pods).
    let freed: BTreeSet<Ipv4Addr> = ["pod-0", "pod-1", "pod-2"]
        .iter()
        .map(|n| pods[*n].address().expect("an address"))
        .collect();
    let released_at = Instant::now();
    env.delete_pod("pod-0").await;
    env.delete_pod("pod-1").await;
    env.set_pod_phase("pod-2", "Succeeded").await;
    // Three new pods at once. The ENI is full (6 used + 3 cooling = capacity): they can only
    // get the freed addresses, and only once their cool-down is over.
    let fresh: Vec<String> = (0..3).map(|i| format!("new-{i}")).collect();
    for name in &fresh {
        env.create_pod(name, &node.name).await;
    }

    // The status covers the freed addresses all along: a pod's going is not written at once
    // (the address stays listed as used by the gone pod; a new leader would cool it from its
    // start), and the cool-down records follow within the coalescing interval (10 s), by
    // which time this 6 s cool-down may be over.
    let status = env.pool(&node.name).await.and_then(|p| p.status);
    let status = status.expect("a status");
    let covered: BTreeSet<Ipv4Addr> = (status.used_addresses.iter())
        .chain(status.cooldowns.iter().map(|r| &r.address))
        .filter_map(|a| a.parse().ok())
        .collect();
    assert!(
        freed.is_subset(&covered),
        "freed {freed:?}, covered {covered:?}"
    );
    // The three goings are three events the controller sees in its own time (CI once read 2
    // right after the writes): wait for them, well inside the cool-down.
    let labels = [("node", node.name.as_str()), ("state", "cooling")];
    eventually("3 cooling addresses", Duration::from_secs(4), || async {
        match winipam.metric("winipam_node_ips", &labels).await {
            Some(3.0) => Ok(()),
            other => Err(format!("cooling {other:?}, want 3")),
        }
    })
    .await;

    // Before the cool-down ends nobody has an address.
    tokio::time::sleep_until((released_at + COOLDOWN - Duration::from_secs(1)).into()).await;
    let now = env.pods().await;
    for name in &fresh {
        assert_eq!(
            now[name].annotation, None,
            "{name} got an address too early"
        );
    }

    // After it, the three get exactly the freed addresses.
    let after = env.wait_annotated(&fresh, Duration::from_secs(15)).await;
    let waited = released_at.elapsed();
    assert!(waited >= COOLDOWN, "handed out after {waited:?}");
    let reused: BTreeSet<Ipv4Addr> = fresh
        .iter()
        .map(|n| after[n].address().expect("an address"))
        .collect();
    assert_eq!(reused, freed);
    // pod-2 (Succeeded) still exists but gave its address away: it is not live for IPAM.
    let live: Vec<_> = after.values().filter(|p| p.name != "pod-2").collect();
    assert_distinct(&live);
    assert_eq!(env.eni_ips(&node.eni_id).await.len(), 9);
    // They waited more than 5 s: each got an IPAllocationPending Event saying why.
    let events = env.events_about(&env.namespace, "new-0").await;
    let pending = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("IPAllocationPending"))
        .unwrap_or_else(|| panic!("no IPAllocationPending Event: {events:?}"));
    let note = pending.note.clone().unwrap_or_default();
    assert!(note.contains("cool-down"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooling_addresses_are_skipped_while_others_are_free() {
    let env = Env::new("e2e-cooldown-free").await;
    env.set_config(&[("ip-cooldown-seconds", "30")]).await;
    let node = env.add_node("n0", "m5.large").await;
    let _winipam = env.start("winipam-0").await;

    let names: Vec<String> = (0..3).map(|i| format!("pod-{i}")).collect();
    for name in &names {
        env.create_pod(name, &node.name).await;
    }
    let pods = env.wait_annotated(&names, Duration::from_secs(20)).await;
    let freed: BTreeSet<Ipv4Addr> = pods.values().filter_map(|p| p.address()).collect();
    for name in &names {
        env.delete_pod(name).await;
    }
    // Pods arriving during the cool-down get other addresses at once (the warm pool, then
    // growth): cooling addresses are never counted as free.
    let fresh: Vec<String> = (0..5).map(|i| format!("new-{i}")).collect();
    for name in &fresh {
        env.create_pod(name, &node.name).await;
    }
    let after = env.wait_annotated(&fresh, Duration::from_secs(15)).await;
    for name in &fresh {
        let addr = after[name].address().expect("an address");
        assert!(!freed.contains(&addr), "{name} got {addr}, still cooling");
    }
    assert_distinct(&after.values().collect::<Vec<_>>());
}
