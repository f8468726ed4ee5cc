//! A leader told to stop steps down: each node's last status lists nothing ahead, so the next
//! leader holds nothing back. One whose lead goes while it steps down writes no last status:
//! the next leader may already have written newer records, which it would overwrite.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::path_tests::paused_runtime;
use super::policy::{WinipamProcess, spawn_controller};
use super::world::World;
use crate::controller::Settings;
use crate::server::Readiness;

const NS: &str = "default";

/// One leading process on a node with three annotated pods, its status listing addresses
/// ahead; then it is told to stop, and (`lead_goes`) its elector says at the same instant that
/// the lead went. Returns the node's status before and after the stop.
async fn stop(lead_goes: bool) -> (Vec<String>, Vec<String>) {
    let mut world = World::new(1, 1);
    // Prefix mode: a /28 leaves free addresses to list ahead beyond the warm target.
    world.enable_prefix_delegation();
    let (leader_tx, leader_rx) = watch::channel(true);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let controller = spawn_controller(
        Arc::new(world.cluster.clone()),
        world.ec2.clone(),
        world.clock,
        WinipamProcess {
            seed: 7,
            readiness: Readiness::default(),
            settings: Settings::default(),
        },
        leader_rx,
        async move {
            let _ = stop_rx.await;
        },
    );
    let node = world.launch_node("m5.xlarge").expect("a node");
    for i in 0..3 {
        world.cluster.bind_pod(NS, &format!("p-{i}"), &node);
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let annotated = (0..3)
        .filter(|i| {
            world
                .cluster
                .pod_annotation(NS, &format!("p-{i}"))
                .is_some()
        })
        .count();
    assert_eq!(annotated, 3, "the pods got their addresses");
    let ahead = |world: &World| {
        (world.cluster.pool_status(&node))
            .map(|s| s.ahead_addresses)
            .unwrap_or_default()
    };
    let before = ahead(&world);
    assert!(!before.is_empty(), "the status lists addresses ahead");

    let _ = stop_tx.send(());
    if lead_goes {
        let _ = leader_tx.send(false);
    }
    tokio::time::timeout(Duration::from_secs(60), controller)
        .await
        .expect("the controller stops")
        .expect("the controller task");
    (before, ahead(&world))
}

#[test]
fn a_leader_that_steps_down_lists_nothing_ahead() {
    paused_runtime().block_on(async {
        let (_, after) = stop(false).await;
        assert!(after.is_empty(), "still listed ahead: {after:?}");
    });
}

#[test]
fn a_leader_whose_lead_goes_while_it_steps_down_writes_no_last_status() {
    paused_runtime().block_on(async {
        let (before, after) = stop(true).await;
        assert_eq!(
            after, before,
            "a last status was written after the lead went"
        );
    });
}
