//! The order of a pod's writes on the simulated cluster: an annotation never names an address
//! that the node's written NodeAddressPool status does not list as used or ahead (a new leader
//! relies on those lists to cool down addresses whose pods went while no controller ran, or
//! that a pod its cache does not show yet may hold), also while status writes fail.

use std::time::Duration;

use super::policy::{PolicyKind, Running};
use super::world::World;
use crate::ipam::parse_annotation;
use crate::k8s::ClusterError;
use crate::sim::cluster::{WriteFault, WriteKind};

const NS: &str = "default";

/// (pods annotated, annotated pods whose address the written status does not list).
fn annotated_and_unlisted(world: &World, node: &str) -> (usize, Vec<String>) {
    let listed: Vec<String> = (world.cluster.pool_status(node))
        .map(|s| [s.used_addresses, s.ahead_addresses].concat())
        .unwrap_or_default();
    let mut annotated = 0;
    let mut unlisted = Vec::new();
    for pod in world.cluster.pods() {
        let Some(value) = pod.annotation.as_deref() else {
            continue;
        };
        annotated += 1;
        let addr = parse_annotation(value).expect("winipam writes addresses");
        if !listed.contains(&addr.to_string()) {
            unlisted.push(format!("{} {value}", pod.name));
        }
    }
    (annotated, unlisted)
}

/// Lets `total` of simulated time pass in small steps, checking the order at every step.
async fn run_checking(world: &World, node: &str, total: Duration) -> usize {
    let step = Duration::from_millis(50);
    let mut annotated = 0;
    for _ in 0..(total.as_millis() / step.as_millis()) {
        tokio::time::sleep(step).await;
        let (n, unlisted) = annotated_and_unlisted(world, node);
        assert!(
            unlisted.is_empty(),
            "annotations name addresses the status does not list: {unlisted:?}"
        );
        annotated = n;
    }
    annotated
}

#[test]
fn annotations_wait_for_a_status_that_lists_their_address() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut world = World::new(1, 1);
        world.enable_prefix_delegation();
        let run = Running::start(PolicyKind::Winipam, &world, 1);
        let node = world.launch_node("m5.xlarge").unwrap();
        for i in 0..3 {
            world.cluster.bind_pod(NS, &format!("first-{i}"), &node);
        }
        assert_eq!(
            run_checking(&world, &node, Duration::from_secs(10)).await,
            3
        );

        // The apiserver refuses the next five status writes: new pods that find an address
        // listed ahead are annotated all the same (the status that covers them was written
        // before they came).
        world.cluster.inject(
            WriteKind::PoolStatus,
            WriteFault::Refuse(ClusterError::Transport("injected".into())),
            5,
        );
        let writes_before = world.cluster.request_counts().pool_status;
        for i in 0..2 {
            world.cluster.bind_pod(NS, &format!("second-{i}"), &node);
        }
        assert_eq!(run_checking(&world, &node, Duration::from_secs(3)).await, 5);

        // More pods than the status lists ahead: those beyond it wait for a status that
        // covers their addresses, written once the refusals end.
        for i in 0..14 {
            world.cluster.bind_pod(NS, &format!("third-{i}"), &node);
        }
        let early = run_checking(&world, &node, Duration::from_secs(3)).await;
        assert!((5..19).contains(&early), "{early} annotated");
        // Retried after 1 s, 2 s, 4 s, 8 s, then 10 s (the status interval): the sixth write
        // lands, then the annotations.
        assert_eq!(
            run_checking(&world, &node, Duration::from_secs(60)).await,
            19
        );
        let writes = world.cluster.request_counts().pool_status - writes_before;
        assert!(
            writes >= 6,
            "{writes} status writes: five refused, then some landed"
        );
        run.stop().await;
    });
}
