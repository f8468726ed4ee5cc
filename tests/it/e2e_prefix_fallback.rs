//! End to end with EC2 simulated in the controller process, on a subnet with no free /28
//! (`--simulated-ec2-fragmented-subnet`): in prefix mode with `prefix-fallback-to-secondary`,
//! EC2's `InsufficientCidrBlocks` turns into single secondary addresses for the node's pods
//! (SPEC 7), with a Warning Event that says so. Without the fallback the pods would wait.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::PostParams;

use crate::e2e_prefix_sim::node;
use crate::support::e2e::{Env, eventually};
use crate::support::winipam::Winipam;

/// The simulated subnet (`winipam::sim::provision::SUBNET`).
const SUBNET: &str = "10.80.0.0/16";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_free_prefix_falls_back_to_secondary_addresses_end_to_end() {
    let env = Env::new("e2e-prefix-fallback").await;
    env.set_config(&[
        ("enable-windows-prefix-delegation", "true"),
        ("prefix-fallback-to-secondary", "true"),
    ])
    .await;
    let mut options = env.options("winipam-fallback");
    options.extra_args.extend([
        "--simulated-ec2".to_owned(),
        "--simulated-ec2-fragmented-subnet".to_owned(),
    ]);
    let mut controller = Winipam::start(&options);
    controller.wait_ready(Duration::from_secs(30)).await;

    let name = "win-fallback";
    Api::<Node>::all(env.client.clone())
        .create(&PostParams::default(), &node(name, 0x77))
        .await
        .expect("create a node");
    let pods: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
    for pod in &pods {
        env.create_pod(pod, name).await;
    }
    let annotated = eventually("pods annotated", Duration::from_secs(60), || async {
        let states = env.pods().await;
        let values: Vec<String> = pods
            .iter()
            .filter_map(|p| states.get(p)?.annotation.clone())
            .collect();
        if values.len() == pods.len() {
            Ok(values)
        } else {
            Err(format!(
                "{} of {} annotated; log:\n{}",
                values.len(),
                pods.len(),
                controller.log()
            ))
        }
    })
    .await;

    // Secondary addresses, annotated as secondary mode annotates them (the subnet's length),
    // each distinct, in the subnet, and none of the addresses another ENI holds (offset 5 of
    // every /28).
    let subnet: Ipv4Net = SUBNET.parse().expect("the subnet");
    let addresses: BTreeSet<Ipv4Addr> = annotated
        .iter()
        .map(|value| {
            let ip = value
                .strip_suffix("/16")
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                .unwrap_or_else(|| panic!("not a secondary-address annotation: {value}"));
            assert!(subnet.contains(&ip), "{value}");
            assert_ne!(u32::from(ip) % 16, 5, "{value} is held by another ENI");
            ip
        })
        .collect();
    assert_eq!(addresses.len(), pods.len(), "{annotated:?}");

    // No /28 could be had: the pool lists none, and the node was told why.
    let pool = env.pool(name).await.expect("the NodeAddressPool");
    let prefixes = pool.status.map(|s| s.prefixes).unwrap_or_default();
    assert!(prefixes.is_empty(), "{prefixes:?}");
    let event = env
        .wait_event(
            "default",
            name,
            "InsufficientCidrBlocks",
            Duration::from_secs(10),
        )
        .await;
    let note = event.note.unwrap_or_default();
    assert!(note.contains("handing out secondary IPs"), "{note}");
    controller.stop().await;
}
