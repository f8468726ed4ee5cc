//! The account's rate limit serves first the nodes whose pods wait (`ec2::ratelimit`): a node
//! whose warm refill is queued behind other nodes' refills gets its Assign next once a pod on it
//! waits, instead of when its turn in the queue comes. #18's scale-out of 1,000 moto nodes showed
//! the failure: a pod waited 120 s while about 1,000 refills went out at 5/s.

use std::time::Duration;

use super::path_tests::{annotated, paused_runtime};
use super::policy::{PolicyKind, Running};
use super::world::World;
use crate::ec2::Operation;

const NS: &str = "default";
/// More nodes than the client's mutating burst (40): the later warm fills queue at 5/s.
const NODES: usize = 80;

#[test]
fn a_node_whose_pods_wait_gets_its_assign_before_the_refills_queued_earlier() {
    paused_runtime().block_on(async {
        let mut world = World::new(11, NODES as u32);
        let run = Running::start(PolicyKind::Winipam, &world, 11);
        let nodes: Vec<(String, String)> = (0..NODES)
            .map(|_| {
                let name = world.launch_node("m5.xlarge").expect("a node");
                let instance = world.nodes[&name].0.clone();
                (name, instance)
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let without_addresses = |world: &World| -> Vec<String> {
            (nodes.iter())
                .filter(|(_, id)| {
                    (world.ec2.instance(id)).is_some_and(|i| i.primary_eni.secondary_ips.is_empty())
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        // The last nodes whose warm fill still waits for a token: FIFO would serve them last.
        let queued = without_addresses(&world);
        assert!(
            queued.len() >= 20,
            "only {} warm fills still queued after 2 s",
            queued.len()
        );
        let waiting_on: Vec<String> = queued[queued.len() - 3..].to_vec();
        let pods: Vec<String> = (0..waiting_on.len()).map(|i| format!("p-{i}")).collect();
        for (pod, node) in pods.iter().zip(&waiting_on) {
            world.cluster.bind_pod(NS, pod, node);
        }
        let bound_at = tokio::time::Instant::now();
        let mut annotated_after = None;
        while bound_at.elapsed() < Duration::from_secs(30) {
            if annotated(&world, &pods) == pods.len() {
                annotated_after = Some(bound_at.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let still_queued = without_addresses(&world).len();
        let assigns = world.ec2.calls(Operation::AssignPrivateIpAddresses);
        let after = annotated_after.expect("the waiting pods were annotated within 30 s");
        // Three tokens at 5/s, the Assigns' latency and a pass: well under the 4 s the queue
        // ahead of them holds.
        assert!(
            after <= Duration::from_secs(2),
            "the waiting pods took {after:?}"
        );
        assert!(
            still_queued >= 5,
            "the other warm fills were not queued any more ({still_queued} left, {assigns} Assigns)"
        );
        run.stop().await;
    });
}
