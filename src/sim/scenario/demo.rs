//! The demo workload: nodes of mixed types join over a few seconds; pods arrive as a Poisson
//! process and leave after a random lifetime; each is bound to the node with the most room under
//! its advertised capacity, as the scheduler does with the extended resource (a pod with no room
//! anywhere waits, unbound, and is retried every second).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::Workload;
use super::world::World;
use crate::sim::progress::Progress;

const NAMESPACE: &str = "demo";

/// The node with the most room left (ties: first by name), if any has room.
fn pick_node(world: &World) -> Option<String> {
    world
        .nodes
        .keys()
        .filter_map(|n| {
            let cap = world.cluster.node_capacity(n)?;
            let room = cap.saturating_sub(world.cluster.node_pod_count(n));
            (room > 0).then_some((room, n))
        })
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
        .map(|(_, n)| n.clone())
}

pub(super) async fn play(
    world: &mut World,
    workload: &Workload,
    deadline: Instant,
    progress: Option<&Progress>,
) {
    let Workload::Demo {
        instance_types,
        nodes,
        join_over,
        pods_per_sec,
        arrivals,
        lifetime,
    } = workload
    else {
        return;
    };
    if let Some(p) = progress {
        p.set_phase("pods come and go");
    }
    let start = Instant::now();
    let join_every = join_over.div_f64(f64::from((*nodes).max(1)));
    let mut joined = 0u32;
    let mut next_arrival = start;
    let arrivals_end = start + *arrivals;
    // Deletions due, by time; pods waiting for a node, with their lifetimes.
    let mut leaving: BTreeMap<(Instant, u64), String> = BTreeMap::new();
    let mut unbound: VecDeque<(String, Duration)> = VecDeque::new();
    let mut next_retry = start;
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while joined < *nodes && start + join_every * joined <= now {
            let t = instance_types[joined as usize % instance_types.len().max(1)];
            world.launch_node(t);
            joined += 1;
        }
        while next_arrival <= now && next_arrival < arrivals_end {
            seq += 1;
            let span = lifetime.1.saturating_sub(lifetime.0).as_secs_f64();
            let life = lifetime.0 + Duration::from_secs_f64(world.rng.next_f64() * span);
            unbound.push_back((format!("demo-{seq:05}"), life));
            // Exponential inter-arrival times: a Poisson process.
            let gap = -(1.0 - world.rng.next_f64()).ln() / pods_per_sec.max(0.001);
            next_arrival += Duration::from_secs_f64(gap);
        }
        if now >= next_retry {
            while let Some((name, life)) = unbound.front().cloned() {
                let Some(node) = pick_node(world) else { break };
                unbound.pop_front();
                world.cluster.bind_pod(NAMESPACE, &name, &node);
                seq += 1;
                leaving.insert((now + life, seq), name);
            }
            next_retry = now + Duration::from_secs(1);
        }
        while let Some(entry) = leaving.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let name = entry.remove();
            world.cluster.delete_pod(NAMESPACE, &name);
        }
        if let Some(p) = progress {
            let (live, annotated) = world.cluster.pod_counts();
            p.set_pods(annotated, live);
            p.set_sim_time(world.cluster.elapsed());
        }
        let done = joined == *nodes
            && next_arrival >= arrivals_end
            && leaving.is_empty()
            && unbound.is_empty();
        if done || now >= deadline {
            return;
        }
        let mut next = [
            (joined < *nodes).then(|| start + join_every * joined),
            (next_arrival < arrivals_end).then_some(next_arrival),
            leaving.first_key_value().map(|(k, _)| k.0),
            (!unbound.is_empty()).then_some(next_retry),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(1));
        next = next.max(now + Duration::from_millis(1));
        tokio::time::sleep_until(next).await;
    }
}
