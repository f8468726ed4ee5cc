//! The real VPC Resource Controller in the rig (issue 17): with `enable-windows-ipam: "true"` it
//! advertises `vpc.amazonaws.com/PrivateIPv4Address` on Windows nodes, its mutating webhook puts
//! the resource on Windows pods, and it annotates each pod with an address of its node's ENI.
//! The ground the migration tests stand on; also measures its start and time to annotate.

use std::time::{Duration, Instant};

use crate::support::e2e::{Env, assert_distinct};
use crate::support::vpcrc::{VpcRc, give_kubelet_status, set_windows_ipam};
use crate::webhook_support::wait_until_injecting;

/// m5.large: 10 addresses per ENI, the primary one the node's own.
const CAPACITY_M5_LARGE: &str = "9";
const PODS_PER_NODE: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_vpc_resource_controller_serves_windows_pods_on_two_nodes() {
    let env = Env::new("vpcrc-serves").await;
    set_windows_ipam(&env.client, true).await;
    let nodes = [
        env.add_node("a", "m5.large").await,
        env.add_node("b", "m5.large").await,
    ];
    for node in &nodes {
        give_kubelet_status(&env.client, &node.name).await;
    }
    let mut vpcrc = VpcRc::start(&env).await;
    let started = Instant::now();

    env.wait_capacity(&nodes, CAPACITY_M5_LARGE, Duration::from_secs(60))
        .await;
    let advertised = started.elapsed();

    // The apiserver picks the webhook registration up within moments.
    wait_until_injecting(&env.pods_api()).await;
    let created = Instant::now();
    let names = env.create_windows_pods(&nodes, "pod", PODS_PER_NODE).await;
    let pods = env.wait_annotated(&names, Duration::from_secs(90)).await;
    let annotated = created.elapsed();

    let live: Vec<_> = names.iter().map(|n| &pods[n]).collect();
    assert_distinct(&live);
    for node in &nodes {
        let on_eni = env.eni_ips(&node.eni_id).await;
        for pod in live.iter().filter(|p| p.node == node.name) {
            let addr = pod.address().unwrap_or_else(|| {
                panic!(
                    "{}: annotation {:?} is no address",
                    pod.name, pod.annotation
                )
            });
            assert!(
                on_eni.contains(&addr),
                "{} has {addr}, not a secondary address of {}'s ENI: {on_eni:?}",
                pod.name,
                node.name
            );
            assert!(
                node.subnet_cidr.contains(&addr),
                "{addr} outside the node's subnet"
            );
        }
    }
    let calls = vpcrc.proxy.calls();
    assert!(
        calls.get("AssignPrivateIpAddresses").copied().unwrap_or(0) > 0,
        "its addresses came through the proxy: {calls:?}"
    );
    eprintln!(
        "VPC Resource Controller: serving {:.1} s after start, capacity on both nodes {:.1} s later, \
         {} pods annotated {:.1} s after the first create; EC2 calls {calls:?}, refused {:?}",
        vpcrc.startup.as_secs_f64(),
        advertised.as_secs_f64(),
        names.len(),
        annotated.as_secs_f64(),
        vpcrc.proxy.refused()
    );
    vpcrc.stop(&env.client).await;
}
