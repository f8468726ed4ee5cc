//! Migration forward from the real VPC Resource Controller (issue 17, item 2), as the README
//! tells it: the VPC Resource Controller serves Windows pods; winipam is installed (controller
//! and webhooks) and waits; pods created while both run get their addresses from the VPC
//! Resource Controller, whose annotation writes winipam's validating webhook judges and allows;
//! `enable-windows-ipam` goes to "false"; pods created after get addresses from winipam. No
//! address is ever named by two live pods, every address is on its node's ENI, and the
//! capacity stays right.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::e2e::{Env, TestNode, assert_distinct, eventually};
use crate::support::migration::{
    CAPACITY_M5_LARGE, assert_addresses, create_and_wait, install_winipam, switch_off,
    vpcrc_serving, wait_blocked, webhook_calls,
};
use crate::support::winipam::Winipam;
use crate::webhook_support::{url_configurations, wait_until_injecting};

/// How often the apiserver called winipam's validating webhook for `operation`, by outcome.
async fn winipam_validations(env: &Env, operation: &str) -> BTreeMap<String, f64> {
    let hooks: Vec<String> = url_configurations(0)
        .1
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|h| h.name)
        .collect();
    webhook_calls(env, &hooks, operation).await
}

/// The field manager that wrote the pod's address annotation.
async fn annotation_writer(env: &Env, name: &str) -> Option<String> {
    let pod = env
        .pods_api()
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get pod {name}: {e}"));
    pod.metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|entry| {
            entry.fields_v1.as_ref().is_some_and(|f| {
                f.0.to_string()
                    .contains("f:vpc.amazonaws.com/PrivateIPv4Address")
            })
        })
        .and_then(|entry| entry.manager)
}

/// Switches the VPC Resource Controller off (as the README says) while pods are created and
/// deleted on every node: `CHURN_ROUNDS` rounds half a second apart, each creating one pod per
/// node and, from the third on, deleting the one created two rounds earlier. Meanwhile the
/// annotated live pods are checked every 100 ms for an address named twice. Returns the churn's
/// pods still live.
async fn switch_under_churn(env: &Env, nodes: &[TestNode], winipam: &Winipam) -> Vec<String> {
    const CHURN_ROUNDS: usize = 4;
    let done = std::sync::atomic::AtomicBool::new(false);
    let churn = async {
        let mut live = Vec::new();
        for round in 0..CHURN_ROUNDS {
            live.extend(
                env.create_windows_pods(nodes, &format!("churn{round}"), 1)
                    .await,
            );
            if round >= 2 {
                for n in 0..nodes.len() {
                    let name = format!("churn{}-{n}-0", round - 2);
                    env.delete_pod(&name).await;
                    live.retain(|l| *l != name);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        live
    };
    let switch = async {
        tokio::time::sleep(Duration::from_millis(750)).await;
        switch_off(env, winipam).await;
    };
    let watch = async {
        let mut checks = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let pods = env.pods().await;
            assert_distinct(&pods.values().collect::<Vec<_>>());
            checks += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        checks
    };
    let work = async {
        let out = tokio::join!(churn, switch);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    };
    let ((live, ()), checks) = tokio::join!(work, watch);
    assert!(checks > 0, "the addresses were watched");
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_from_the_real_vpc_resource_controller_leaves_no_pod_without_an_address() {
    let env = Env::new("vpcrc-forward").await;
    let (mut vpcrc, nodes) = vpcrc_serving(&env, 2).await;
    let before = create_and_wait(&env, &nodes, "before", 2).await;

    // winipam installed: it waits, and its validating webhook is in the apiserver's path.
    let (mut winipam, _certs) = install_winipam(&env).await;
    eventually(
        "the apiserver calls winipam's validating webhook",
        Duration::from_secs(30),
        || async {
            wait_until_injecting(&env.pods_api()).await;
            let calls = winipam_validations(&env, "CREATE").await;
            if calls.values().sum::<f64>() > 0.0 {
                Ok(())
            } else {
                Err(format!("{calls:?}"))
            }
        },
    )
    .await;
    let judged_before = winipam_validations(&env, "UPDATE").await;

    // While both run the VPC Resource Controller annotates, as its ServiceAccount, and winipam's
    // webhook allows it (issue 17: it used to deny those writes).
    let during = create_and_wait(&env, &nodes, "during", 2).await;
    let judged = winipam_validations(&env, "UPDATE").await;
    let allowed = judged.get("false").copied().unwrap_or(0.0)
        - judged_before.get("false").copied().unwrap_or(0.0);
    assert!(
        allowed >= during.len() as f64,
        "winipam's webhook judged and allowed the VPC Resource Controller's {} annotation writes: \
         before {judged_before:?}, after {judged:?}",
        during.len()
    );
    assert_eq!(
        judged.get("true"),
        judged_before.get("true"),
        "winipam's webhook denied nothing"
    );
    wait_blocked(&winipam, 1.0).await;
    assert_addresses(&env, &nodes).await;

    // The switch with pods created and deleted on both nodes around it, and the live pods'
    // addresses watched throughout.
    let churned = switch_under_churn(&env, &nodes, &winipam).await;
    let assigns_at_switch = vpcrc.proxy.calls().get("AssignPrivateIpAddresses").copied();
    env.wait_annotated(&churned, Duration::from_secs(60)).await;

    // One more per node: with the churn's cooling addresses the nodes are then full.
    let after = create_and_wait(&env, &nodes, "after", 1).await;
    let pods = assert_addresses(&env, &nodes).await;
    for name in before.iter().chain(&during).chain(&churned).chain(&after) {
        assert!(pods[name].annotation.is_some(), "{name} lost its address");
    }
    env.wait_capacity(&nodes, CAPACITY_M5_LARGE, Duration::from_secs(60))
        .await;

    // Who wrote each address: the VPC Resource Controller before the switch, winipam after.
    let vpcrc_writer = annotation_writer(&env, &before[0]).await;
    assert!(vpcrc_writer.is_some(), "{} has a writer", before[0]);
    for name in before.iter().chain(&during) {
        assert_eq!(annotation_writer(&env, name).await, vpcrc_writer, "{name}");
    }
    for name in &after {
        let writer = annotation_writer(&env, name).await;
        assert!(
            writer.is_some() && writer != vpcrc_writer,
            "{name} annotated by winipam, not by {vpcrc_writer:?}: {writer:?}"
        );
    }
    let calls = vpcrc.proxy.calls();
    let winipam_writer = annotation_writer(&env, &after[0]).await;
    eprintln!(
        "forward migration: {} pods before, {} during, {} live of the churn, {} after; winipam's webhook on UPDATE \
         {judged:?} (was {judged_before:?}); annotations by {vpcrc_writer:?} then {winipam_writer:?}; the VPC \
         Resource Controller's EC2 calls {calls:?} (AssignPrivateIpAddresses at the switch \
         {assigns_at_switch:?})",
        before.len(),
        during.len(),
        churned.len(),
        after.len()
    );
    winipam.stop().await;
    vpcrc.stop(&env.client).await;
}

/// An address the VPC Resource Controller freed in its last moments (its pod deleted just before
/// the switch) is not handed out by winipam inside the cool-down (SPEC 5.3, issue 17). The node
/// is filled to its capacity after the switch, so the last pod can only have that address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_freed_just_before_the_switch_cools_down_before_winipam_reuses_it() {
    const COOLDOWN: Duration = Duration::from_secs(30);
    let env = Env::new("vpcrc-cooldown").await;
    let (mut vpcrc, nodes) = vpcrc_serving(&env, 1).await;
    let before = create_and_wait(&env, &nodes, "before", 4).await;
    let (mut winipam, _certs) = install_winipam(&env).await;

    let gone = &before[0];
    let freed = env.pods().await[gone].address().expect("an annotated pod");
    env.delete_pod(gone).await;
    let freed_at = std::time::Instant::now();
    // Its release reaches the VPC Resource Controller before it is switched off.
    tokio::time::sleep(Duration::from_secs(1)).await;
    switch_off(&env, &winipam).await;

    let live = before.len() - 1;
    let capacity: usize = CAPACITY_M5_LARGE.parse().expect("a number");
    let after = env
        .create_windows_pods(&nodes, "after", capacity - live)
        .await;
    // When each pod was first seen annotated, counted from the release.
    let mut annotated_at = BTreeMap::new();
    let deadline = freed_at + COOLDOWN * 3;
    loop {
        for (name, pod) in env.pods().await {
            if pod.annotation.is_some() {
                annotated_at
                    .entry(name)
                    .or_insert_with(|| (pod.address(), freed_at.elapsed()));
            }
        }
        let missing: Vec<&String> = after
            .iter()
            .filter(|n| !annotated_at.contains_key(*n))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not annotated within {:?}: {missing:?}",
            COOLDOWN * 3
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_addresses(&env, &nodes).await;
    let reuse = annotated_at
        .iter()
        .find(|(name, (addr, _))| after.contains(name) && *addr == Some(freed));
    eprintln!(
        "cool-down across the switch: {freed} freed by deleting {gone}; reused by {reuse:?}; \
         the VPC Resource Controller's EC2 calls {:?}",
        vpcrc.proxy.calls()
    );
    if let Some((name, (_, at))) = reuse {
        assert!(
            *at >= COOLDOWN,
            "{name} got {freed} {at:?} after the VPC Resource Controller freed it, inside the \
             {COOLDOWN:?} cool-down"
        );
    }
    winipam.stop().await;
    vpcrc.stop(&env.client).await;
}
