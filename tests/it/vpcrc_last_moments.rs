//! The last moments of the forward switch (issue 17, item 2): when its Windows IPAM is switched
//! off, the VPC Resource Controller keeps its warm addresses on the ENI, and EC2 calls it had
//! queued still run after the switch. The EC2 proxy holds its UnassignPrivateIpAddresses and
//! AssignPrivateIpAddresses back so that they land after winipam took over; winipam must never
//! hand a pod an address the VPC Resource Controller then takes off the ENI, nor one it was
//! still assigning to its own pods (`winipam_core::handover`).

use std::time::{Duration, Instant};

use crate::support::e2e::{Env, PodState, assert_distinct, eventually};
use crate::support::migration::{
    CAPACITY_M5_LARGE, assert_addresses, create_and_wait, install_winipam, switch_off,
    vpcrc_serving,
};

/// How long the VPC Resource Controller's address calls are held back.
const LATE: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vpc_resource_controllers_late_calls_never_reach_a_winipam_pod() {
    let started = Instant::now();
    let env = Env::new("vpcrc-late").await;
    let (mut vpcrc, nodes) = vpcrc_serving(&env, 1).await;
    let node = &nodes[0];
    let before = create_and_wait(&env, &nodes, "before", 6).await;
    let (mut winipam, _certs) = install_winipam(&env).await;

    // Its pods go: their addresses cool in the VPC Resource Controller for 30 s, then its warm
    // pool is over target and it gives the excess back (held back by the proxy).
    for name in &before[1..] {
        env.delete_pod(name).await;
    }
    vpcrc.proxy.delay("UnassignPrivateIpAddresses", LATE);
    vpcrc.proxy.delay("AssignPrivateIpAddresses", LATE);
    let unassigns = |v: &crate::support::vpcrc::VpcRc| {
        v.proxy
            .calls()
            .get("UnassignPrivateIpAddresses")
            .copied()
            .unwrap_or(0)
    };
    let released_before = unassigns(&vpcrc);
    eventually(
        "the VPC Resource Controller releases its excess warm addresses",
        Duration::from_secs(90),
        || async {
            if unassigns(&vpcrc) > released_before {
                Ok(())
            } else {
                Err(format!("calls {:?}", vpcrc.proxy.calls()))
            }
        },
    )
    .await;
    // Its release is on its way to EC2; pods created now may still get its annotation or
    // make it assign more (also held back).
    let eni_at_switch = env.eni_ips(&node.eni_id).await;
    let during = env.create_windows_pods(&nodes, "during", 2).await;
    let switch_started = Instant::now();
    switch_off(&env, &winipam).await;
    let switched = switch_started.elapsed();

    // winipam fills the node while the late calls land; every 200 ms every live pod's address
    // is distinct and on the ENI.
    let capacity: usize = CAPACITY_M5_LARGE.parse().expect("a number");
    let after = env
        .create_windows_pods(&nodes, "after", capacity - 1 - during.len())
        .await;
    let mut ticks = 0;
    let watch_until = Instant::now() + LATE * 2;
    let all: Vec<String> = before[..1]
        .iter()
        .chain(&during)
        .chain(&after)
        .cloned()
        .collect();
    let annotated = loop {
        let pods = env.pods().await;
        let live: Vec<&PodState> = pods.values().collect();
        assert_distinct(&live);
        let on_eni = env.eni_ips(&node.eni_id).await;
        for pod in &live {
            if let Some(addr) = pod.address() {
                assert!(
                    on_eni.contains(&addr),
                    "{} has {addr}, which the VPC Resource Controller took off the ENI \
                     (on it at the switch: {eni_at_switch:?}; now: {on_eni:?})",
                    pod.name
                );
            }
        }
        ticks += 1;
        let done = all
            .iter()
            .all(|n| pods.get(n).is_some_and(|p| p.annotation.is_some()));
        if done && Instant::now() > watch_until {
            break switch_started.elapsed();
        }
        assert!(
            switch_started.elapsed() < Duration::from_secs(120),
            "not all annotated within 120 s of the switch: {:?}",
            all.iter()
                .filter(|n| pods.get(*n).is_none_or(|p| p.annotation.is_none()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_addresses(&env, &nodes).await;
    eprintln!(
        "last moments of the switch: winipam resumed {switched:?} after the patch; the {} pods \
         of the node annotated {annotated:?} after it; {ticks} checks; the VPC Resource \
         Controller's EC2 calls {:?} (each address call held back {LATE:?}); test {:?}",
        all.len(),
        vpcrc.proxy.calls(),
        started.elapsed()
    );
    winipam.stop().await;
    vpcrc.stop(&env.client).await;
}
