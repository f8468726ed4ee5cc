//! Migration back to the real VPC Resource Controller (issue 17, item 3), as the README tells
//! it: winipam serves Windows pods on two nodes while the VPC Resource Controller runs with its
//! Windows IPAM off, its webhooks registered as the default chart renders them;
//! `enable-windows-ipam` goes to "true" (winipam pauses); winipam stays installed until no
//! address it freed can still be in its cool-down, then it is uninstalled (process stopped,
//! webhook configurations removed), with pods created and deleted throughout. Every tick checks
//! that no address is named by two live pods, that every pod's address is on its node's ENI,
//! that no address freed less than a cool-down ago is handed out again (by either controller:
//! winipam's hand-back guard keeps the VPC Resource Controller off winipam's cooling ones), and
//! that each node advertises a capacity between 1 and what its ENI holds.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff;
use kube::Api;
use kube::api::ListParams;
use winipam::crd::NodeAddressPool;

use crate::support::e2e::{Env, PodState, TestNode, assert_distinct, eventually};
use crate::support::migration::{
    CAPACITY_M5_LARGE, assert_addresses, create_and_wait, patch_windows_ipam,
    start_winipam_default_chart, uninstall_winipam, wait_blocked, webhook_calls,
};
use crate::support::vpcrc::{VpcRc, give_kubelet_status, set_windows_ipam};
use crate::webhook_support::wait_until_injecting;

/// The cool-down both controllers keep by default (the VPC Resource Controller's is fixed).
const COOLDOWN: Duration = Duration::from_secs(30);
/// How long winipam stays installed after it paused, at least (README, "Going back"): an
/// address of a pod deleted while the VPC Resource Controller was still taking the node over
/// is one winipam's record lists as used; the guard keeps it for one cool-down after that.
const HOLD: Duration = Duration::from_secs(60);
/// The hand-back guard of the default chart.
const HAND_BACK_HOOK: &str = "vpc-rc-hand-back.winipam.dev";

/// What the ticks saw, and what broke a guarantee.
#[derive(Default)]
struct Ledger {
    /// Address of each pod deleted by the test, and when.
    freed: BTreeMap<Ipv4Addr, (String, Instant)>,
    /// Pods seen with an address, and the address.
    seen: BTreeMap<String, Ipv4Addr>,
    /// Guarantees broken, in the words of the check.
    broken: Vec<String>,
    ticks: usize,
}

/// One check of every guarantee.
async fn tick(env: &Env, nodes: &[TestNode], ledger: &Mutex<Ledger>) {
    let capacity: u32 = CAPACITY_M5_LARGE.parse().expect("a number");
    let pods = env.pods().await;
    assert_distinct(&pods.values().collect::<Vec<&PodState>>());
    let mut broken = Vec::new();
    let mut missing = Vec::new();
    for node in nodes {
        match env.node_capacity(&node.name).await {
            Some(c) if c.parse::<u32>().is_ok_and(|c| (1..=capacity).contains(&c)) => {}
            other => broken.push(format!("{} advertises {other:?}", node.name)),
        }
        let on_eni = env.eni_ips(&node.eni_id).await;
        // Pods read before the ENI: an address a pod names is on the ENI from before the
        // annotation until after the pod is gone.
        for pod in pods.values().filter(|p| p.node == node.name) {
            if let Some(addr) = pod.address()
                && !on_eni.contains(&addr)
            {
                missing.push((pod.name.clone(), addr, node.name.clone()));
            }
        }
    }
    // ... and only a pod still there after the ENI was read had it all along: one deleted in
    // between may have lost its address already (the VPC Resource Controller, taking a node
    // over, releases at once what no pod in its cache names; CI saw it).
    if !missing.is_empty() {
        let after = env.pods().await;
        for (name, addr, node) in missing {
            if after.get(&name).and_then(PodState::address) == Some(addr) {
                broken.push(format!("{name} has {addr}, not on {node}'s ENI"));
            }
        }
    }
    let mut ledger = ledger.lock().expect("the ledger");
    for pod in pods.values() {
        let Some(addr) = pod.address() else { continue };
        if ledger.seen.insert(pod.name.clone(), addr).is_some() {
            continue;
        }
        // A pod first seen with its address only after the test deleted it (annotated between
        // two ticks, still listed while it terminates) is the same holder, not a reuse.
        if let Some((gone, at)) = ledger.freed.get(&addr)
            && at.elapsed() < COOLDOWN
            && *gone != pod.name
        {
            broken.push(format!(
                "{} got {addr} {:?} after {gone}, which had it, was deleted",
                pod.name,
                at.elapsed()
            ));
        }
    }
    ledger.ticks += 1;
    ledger.broken.extend(broken);
}

/// winipam serving `count` m5.large nodes, the VPC Resource Controller running beside it with
/// its Windows IPAM off (as an admin has it before going back).
async fn winipam_serving(
    env: &Env,
    count: usize,
) -> (
    crate::support::winipam::Winipam,
    crate::webhook_support::FileCerts,
    VpcRc,
    Vec<TestNode>,
) {
    set_windows_ipam(&env.client, false).await;
    let mut nodes = Vec::new();
    for i in 0..count {
        let node = env.add_node(&format!("n{i}"), "m5.large").await;
        give_kubelet_status(&env.client, &node.name).await;
        nodes.push(node);
    }
    let (winipam, certs) = start_winipam_default_chart(env).await;
    wait_blocked(&winipam, 0.0).await;
    env.wait_capacity(&nodes, CAPACITY_M5_LARGE, Duration::from_secs(60))
        .await;
    let vpcrc = VpcRc::start(env).await;
    wait_until_injecting(&env.pods_api()).await;
    (winipam, certs, vpcrc, nodes)
}

/// Deletes `name`, noting its address as freed now.
async fn delete_noting(env: &Env, ledger: &Mutex<Ledger>, name: &str) {
    let addr = env.pods().await.get(name).and_then(PodState::address);
    env.delete_pod(name).await;
    if let Some(addr) = addr {
        let mut ledger = ledger.lock().expect("the ledger");
        ledger.freed.insert(addr, (name.to_owned(), Instant::now()));
    }
}

/// Cool-down records still running in any NodeAddressPool, as "node address until".
async fn running_cooldowns(env: &Env) -> Vec<String> {
    let pools = Api::<NodeAddressPool>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .expect("list the NodeAddressPools");
    let now = jiff::Timestamp::now();
    let mut running = Vec::new();
    for pool in pools {
        let node = pool.metadata.name.unwrap_or_default();
        for record in pool.status.map(|s| s.cooldowns).unwrap_or_default() {
            match record.until.parse::<jiff::Timestamp>() {
                Ok(until) if until <= now => {}
                _ => running.push(format!("{node} {} {}", record.address, record.until)),
            }
        }
    }
    running
}

/// Rounds of the churn, half a second apart: the switch in round 2, winipam uninstalled
/// (after the hold) before round `UNINSTALL_AT`.
const ROUNDS: usize = 12;
const SWITCH_AT: usize = 2;
const UNINSTALL_AT: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_the_real_vpc_resource_controller_leaves_no_pod_without_an_address() {
    let started = Instant::now();
    let env = Env::new("vpcrc-back").await;
    let (mut winipam, _certs, mut vpcrc, nodes) = winipam_serving(&env, 2).await;
    let before = create_and_wait(&env, &nodes, "before", 3).await;
    let ledger = Mutex::new(Ledger::default());
    // Freed by winipam just before the switch: the VPC Resource Controller sees them as warm,
    // and winipam's guard keeps it off them for their cool-down.
    for name in [&before[0], &before[3]] {
        delete_noting(&env, &ledger, name).await;
    }
    let setup = started.elapsed();
    let denied_before = webhook_calls(&env, &[HAND_BACK_HOOK.to_owned()], "UPDATE").await;

    let done = AtomicBool::new(false);
    let switched_at = Mutex::<Option<Instant>>::new(None);
    let held = Mutex::new(Duration::ZERO);
    // Pods created and deleted on both nodes, half a second apart, before, during and after
    // the hold.
    let churn = async {
        let mut live = Vec::new();
        for round in 0..ROUNDS {
            if round == UNINSTALL_AT {
                // README: winipam stays until no address it freed may still be cooling.
                let paused = switched_at
                    .lock()
                    .expect("the switch time")
                    .expect("the switch happened");
                tokio::time::sleep(HOLD.saturating_sub(paused.elapsed())).await;
                eventually(
                    "no cool-down running in any NodeAddressPool",
                    COOLDOWN,
                    || async {
                        match running_cooldowns(&env).await {
                            running if running.is_empty() => Ok(()),
                            running => Err(format!("{running:?}")),
                        }
                    },
                )
                .await;
                *held.lock().expect("the hold") = paused.elapsed();
                uninstall_winipam(&env, &mut winipam).await;
            }
            live.extend(
                env.create_windows_pods(&nodes, &format!("churn{round}"), 1)
                    .await,
            );
            if round == SWITCH_AT {
                patch_windows_ipam(&env, true).await;
                wait_blocked(&winipam, 1.0).await;
                *switched_at.lock().expect("the switch time") = Some(Instant::now());
            }
            if round >= 2 {
                for n in 0..nodes.len() {
                    let name = format!("churn{}-{n}-0", round - 2);
                    delete_noting(&env, &ledger, &name).await;
                    live.retain(|l| *l != name);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        live
    };
    let watch = async {
        while !done.load(Ordering::Relaxed) {
            tick(&env, &nodes, &ledger).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let work = async {
        let live = churn.await;
        env.wait_annotated(&live, Duration::from_secs(60)).await;
        let after = create_and_wait(&env, &nodes, "after", 1).await;
        done.store(true, Ordering::Relaxed);
        (live, after)
    };
    let ((churned, after), ()) = tokio::join!(work, watch);
    let switch = switched_at
        .lock()
        .expect("the switch time")
        .expect("the switch happened");
    let settled = switch.elapsed();
    tick(&env, &nodes, &ledger).await;
    let denied = webhook_calls(&env, &[HAND_BACK_HOOK.to_owned()], "UPDATE").await;

    let pods = assert_addresses(&env, &nodes).await;
    for name in before[1..3]
        .iter()
        .chain(&before[4..])
        .chain(&churned)
        .chain(&after)
    {
        assert!(pods[name].annotation.is_some(), "{name} has an address");
    }
    let ledger = ledger.into_inner().expect("the ledger");
    eprintln!(
        "migration back: set-up {setup:?}; winipam held {:?} after the switch; switched and \
         settled (every pod annotated) in {settled:?}; {} ticks; {} pods live; the VPC Resource \
         Controller's EC2 calls {:?}; the hand-back guard's calls by rejected, before {:?}, \
         after {:?}; broken: {:?}",
        held.into_inner().expect("the hold"),
        ledger.ticks,
        pods.len(),
        vpcrc.proxy.calls(),
        denied_before,
        denied,
        ledger.broken
    );
    // While paused, winipam's ENI view and records stand still: the addresses the VPC Resource
    // Controller assigns or reuses meanwhile are not faults to report on its pods.
    let false_alarms: Vec<String> = Api::<Event>::namespaced(env.client.clone(), &env.namespace)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            matches!(
                e.reason.as_deref(),
                Some("IPNotOnENI") | Some("DuplicateIPAnnotation")
            )
        })
        .map(|e| {
            format!(
                "{:?} on {:?}: {:?}",
                e.reason,
                e.regarding.and_then(|r| r.name),
                e.note
            )
        })
        .collect();
    assert!(ledger.ticks > 10, "the guarantees were checked throughout");
    assert!(false_alarms.is_empty(), "{false_alarms:#?}");
    assert!(ledger.broken.is_empty(), "{:#?}", ledger.broken);
    vpcrc.stop(&env.client).await;
}
