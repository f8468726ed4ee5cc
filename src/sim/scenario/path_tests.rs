//! Production paths that only a failing EC2 reaches, on the simulated cluster and EC2 (issue 16,
//! item 7): each test fails if its path breaks.
//! - `DescribeInstanceTypes` failing: the node is sized from the embedded table.
//! - `InsufficientFreeAddressesInSubnet` on one node: its siblings in the subnet hold their
//!   assigns too, until the hold ends, instead of each learning it from EC2 again.

use std::time::Duration;

use super::policy::{PolicyKind, Running};
use super::world::World;
use crate::controller::reasons;
use crate::ec2::Operation;
use crate::sim::ec2::Fault;

const NS: &str = "default";

/// A single-threaded runtime with paused time: a simulated run is reproducible from its seed.
pub(super) fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

pub(super) fn annotated(world: &World, pods: &[String]) -> usize {
    pods.iter()
        .filter(|p| world.cluster.pod_annotation(NS, p).is_some())
        .count()
}

fn bind(world: &World, node: &str, prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            world.cluster.bind_pod(NS, &name, node);
            name
        })
        .collect()
}

#[test]
fn a_failing_describe_instance_types_falls_back_to_the_embedded_table() {
    paused_runtime().block_on(async {
        let mut world = World::new(1, 1);
        // Every lookup refused (an IAM policy without ec2:DescribeInstanceTypes).
        world.ec2.inject(
            Operation::DescribeInstanceTypes,
            Fault::error("UnauthorizedOperation"),
            100,
        );
        let run = Running::start(PolicyKind::Winipam, &world, 1);
        let node = world.launch_node("m5.xlarge").expect("a node");
        let pods = bind(&world, &node, "p", 4);
        tokio::time::sleep(Duration::from_secs(10)).await;

        assert!(
            world.ec2.pending_faults() < 100,
            "DescribeInstanceTypes was never asked"
        );
        // m5.xlarge in the table: 15 IPv4 addresses per ENI, so 14 pod IPs.
        assert_eq!(world.cluster.node_capacity(&node), Some(14));
        assert_eq!(annotated(&world, &pods), 4);
        let unsupported = world
            .cluster
            .events()
            .into_iter()
            .filter(|e| e.reason == reasons::UNSUPPORTED_INSTANCE_TYPE)
            .count();
        assert_eq!(unsupported, 0);
        run.stop().await;
    });
}

#[test]
fn a_full_subnet_holds_the_assigns_of_sibling_nodes_until_the_hold_ends() {
    paused_runtime().block_on(async {
        let mut world = World::new(1, 2);
        let run = Running::start(PolicyKind::Winipam, &world, 1);
        let a = world.launch_node("m5.xlarge").expect("node a");
        let b = world.launch_node("m5.xlarge").expect("node b");
        // Both warm pools filled (3 free addresses each).
        tokio::time::sleep(Duration::from_secs(10)).await;

        world.ec2.inject(
            Operation::AssignPrivateIpAddresses,
            Fault::error("InsufficientFreeAddressesInSubnet"),
            1,
        );
        let on_a = bind(&world, &a, "a", 5);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(world.ec2.pending_faults(), 0, "node a never asked for more");
        let assigns = world.ec2.calls(Operation::AssignPrivateIpAddresses);
        let exhausted: Vec<String> = world
            .cluster
            .events()
            .into_iter()
            .filter(|e| e.reason == reasons::SUBNET_EXHAUSTED)
            .map(|e| e.name)
            .collect();
        assert_eq!(exhausted, std::slice::from_ref(&a));

        // Node b, in the same subnet, needs more too: it serves what it has and asks EC2 for
        // nothing while the hold runs (2 minutes from a's failure).
        let on_b = bind(&world, &b, "b", 5);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(
            world.ec2.calls(Operation::AssignPrivateIpAddresses),
            assigns,
            "an assign went out during the subnet's hold"
        );
        assert_eq!(annotated(&world, &on_a), 3);
        assert_eq!(annotated(&world, &on_b), 3);

        // After the hold both grow again and every pod gets its address.
        tokio::time::sleep(Duration::from_secs(45)).await;
        assert!(world.ec2.calls(Operation::AssignPrivateIpAddresses) >= assigns + 2);
        assert_eq!(annotated(&world, &on_a), 5);
        assert_eq!(annotated(&world, &on_b), 5);
        run.stop().await;
    });
}
