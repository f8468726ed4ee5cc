//! A node on its way out in the simulator (issue 16): cordoned, its ENI shrinks to what its pods
//! use within seconds of simulated time (cooling addresses after their cool-down); uncordoned,
//! it grows back to its targets. The production controller runs against the simulated cluster
//! and EC2, as in the scenarios.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::policy::{CONFIG_NAME, CONFIG_NAMESPACE, PolicyKind, Running};
use super::world::World;
use crate::controller::reasons;
use crate::ipam::config::{KEY_MINIMUM_IP, KEY_PREFIX_DELEGATION, KEY_WARM_IP};

const NAMESPACE: &str = "apps";
const CORDON_TAINT: &str = "node.kubernetes.io/unschedulable";

/// (secondary IPs, /28s) on the node's primary ENI.
fn on_eni(world: &World, node: &str) -> (usize, usize) {
    let eni = world
        .nodes
        .get(node)
        .and_then(|(id, _)| world.ec2.instance(id))
        .map(|i| i.primary_eni);
    eni.map_or((0, 0), |e| (e.secondary_ips.len(), e.prefixes.len()))
}

/// Simulated time until `node`'s ENI holds `want`, or `None` after `limit`.
async fn until_eni(
    world: &World,
    node: &str,
    want: (usize, usize),
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while on_eni(world, node) != want {
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(start.elapsed())
}

async fn all_annotated(world: &World) -> bool {
    for _ in 0..600 {
        let (live, annotated) = world.cluster.pod_counts();
        if live == annotated {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Plays: `pods` pods on one `instance_type` node under `config`; the node's ENI settles at
/// `settled`; one pod leaves and the node is cordoned; the ENI holds `cordoned` at once (the
/// left pod's address cooling), `drained` after the cool-down; uncordoned, `settled` again.
/// Returns the simulated seconds each shrink and the regrowth took.
async fn cordon_and_uncordon(
    instance_type: &str,
    config: &[(&str, &str)],
    pods: usize,
    settled: (usize, usize),
    cordoned: (usize, usize),
    drained: (usize, usize),
    signal: (bool, &[&str]),
) -> [f64; 3] {
    let mut world = World::new(16, 1);
    let data: BTreeMap<String, String> = (config.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    world
        .cluster
        .set_config_map(CONFIG_NAMESPACE, CONFIG_NAME, data);
    let node = world.launch_node(instance_type).expect("instance launched");
    for n in 0..pods {
        world.cluster.bind_pod(NAMESPACE, &format!("p{n}"), &node);
    }
    let running = Running::start(PolicyKind::Winipam, &world, 16);
    assert!(all_annotated(&world).await, "every pod gets an address");
    let limit = Duration::from_secs(30);
    assert!(
        until_eni(&world, &node, settled, limit).await.is_some(),
        "settled at the targets: {:?}",
        on_eni(&world, &node)
    );

    // A pod leaves (its address cools down), then the node is cordoned.
    world.cluster.delete_pod(NAMESPACE, "p0");
    let (unschedulable, taints) = signal;
    assert!(world.cluster.set_node_leaving(&node, unschedulable, taints));
    let shrink = until_eni(&world, &node, cordoned, Duration::from_secs(5)).await;
    let shrink = shrink.unwrap_or_else(|| panic!("cordoned: {:?}", on_eni(&world, &node)));
    // Cool-down 30 s: the left pod's address goes once it ends, not before.
    let drain = until_eni(&world, &node, drained, Duration::from_secs(40)).await;
    let drain = drain.unwrap_or_else(|| panic!("drained: {:?}", on_eni(&world, &node)));
    if drained != cordoned {
        assert!(
            drain >= Duration::from_secs(20),
            "cooling kept until its end: {drain:?}"
        );
    }
    // The pods still running keep their addresses; the capacity stays advertised.
    let (live, annotated) = world.cluster.pod_counts();
    assert_eq!((live, annotated), (pods as u64 - 1, pods as u64 - 1));
    assert!(world.cluster.node_capacity(&node).is_some_and(|c| c > 0));
    let leaving: Vec<_> = (world.cluster.events().into_iter())
        .filter(|e| e.reason == reasons::NODE_LEAVING && e.name == node)
        .collect();
    assert_eq!(leaving.len(), 1, "one NodeLeaving Event: {leaving:?}");
    assert_eq!(leaving[0].count, 1);

    // Uncordoned: the targets apply again.
    assert!(world.cluster.set_node_leaving(&node, false, &[]));
    let grow = until_eni(&world, &node, settled, Duration::from_secs(5)).await;
    let grow = grow.unwrap_or_else(|| panic!("uncordoned: {:?}", on_eni(&world, &node)));
    running.stop().await;
    [shrink, drain, grow].map(|d| d.as_secs_f64())
}

fn play(f: impl std::future::Future<Output = [f64; 3]>) -> [f64; 3] {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(f)
}

#[test]
fn a_cordoned_node_gives_back_its_secondary_ips_and_takes_them_again_when_uncordoned() {
    // m5.xlarge, secondary IPs, minimum 10 and warm 4: 3 pods hold 10 addresses. Cordoned with
    // one pod gone: its 2 pods and the cooling address, then the 2 pods alone.
    let config = [(KEY_MINIMUM_IP, "10"), (KEY_WARM_IP, "4")];
    let cordon: (bool, &[&str]) = (true, &[CORDON_TAINT]);
    let [shrink, drain, grow] = play(cordon_and_uncordon(
        "m5.xlarge",
        &config,
        3,
        (10, 0),
        (3, 0),
        (2, 0),
        cordon,
    ));
    eprintln!("secondary: shrunk in {shrink} s, drained in {drain} s, grown back in {grow} s");
    assert!(shrink < 3.0 && grow < 3.0, "{shrink} {grow}");
}

#[test]
fn a_node_karpenter_disrupts_gives_back_whole_prefixes() {
    // Prefix mode, minimum 40: three /28s for 5 pods. Karpenter's taint alone (no cordon):
    // the two idle /28s go at once, the one in use stays until its last address has cooled.
    let config = [(KEY_PREFIX_DELEGATION, "true"), (KEY_MINIMUM_IP, "40")];
    let disrupted: (bool, &[&str]) = (false, &["karpenter.sh/disrupted"]);
    let [shrink, _, grow] = play(cordon_and_uncordon(
        "m5.xlarge",
        &config,
        5,
        (0, 3),
        (0, 1),
        (0, 1),
        disrupted,
    ));
    assert!(shrink < 3.0 && grow < 3.0, "{shrink} {grow}");
}
