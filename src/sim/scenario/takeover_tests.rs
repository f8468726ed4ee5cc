//! A new leader after a crash writes a node's first status when a pod needs it, and the other
//! nodes' first statuses at the coalescing interval, as later ones (`rules::first_may_wait`):
//! the pods of the takeover wait for no status of a node that has none of them. The crash is
//! a lead that goes with no step-down: the statuses keep what they list ahead.

use std::time::Duration;

use tokio::sync::watch;

use super::path_tests::paused_runtime;
use super::policy::spawn_on_world;
use super::world::World;
use crate::server::Readiness;

const NS: &str = "default";
const NODES: usize = 3;

/// A leading process; its lead goes when the sender says so (or is dropped).
fn start(world: &World, seed: u64) -> watch::Sender<bool> {
    let (leader_tx, leader_rx) = watch::channel(true);
    spawn_on_world(
        world,
        seed,
        Readiness::default(),
        leader_rx,
        std::future::pending(),
    );
    leader_tx
}

#[test]
fn a_new_leader_writes_first_the_status_of_the_node_whose_pod_waits() {
    paused_runtime().block_on(async {
        let mut world = World::new(1, NODES as u32);
        let first = start(&world, 7);
        let nodes: Vec<String> = (0..NODES)
            .map(|_| world.launch_node("m5.xlarge").expect("a node"))
            .collect();
        for (i, node) in nodes.iter().enumerate() {
            world.cluster.bind_pod(NS, &format!("p-{i}"), node);
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        let annotated =
            |world: &World, name: &str| world.cluster.pod_annotation(NS, name).is_some();
        assert!((0..NODES).all(|i| annotated(&world, &format!("p-{i}"))));
        // The lead goes with no step-down, as in a crash: the statuses keep what they list
        // ahead. The next leader takes over.
        let _ = first.send(false);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = world.cluster.request_counts().pool_status;
        let _next = start(&world, 8);
        world.cluster.bind_pod(NS, "new", &nodes[0]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(annotated(&world, "new"), "the new pod got its address");
        let early = world.cluster.request_counts().pool_status - before;
        assert_eq!(
            early, 1,
            "status writes before the interval: only the new pod's node's"
        );
        tokio::time::sleep(Duration::from_secs(40)).await;
        let all = world.cluster.request_counts().pool_status - before;
        assert!(
            all >= NODES as u64,
            "every node's first status is written by the interval: {all}"
        );
    });
}
