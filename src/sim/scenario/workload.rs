//! Plays a scenario's workload against the world while one policy runs, then measures.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::checks::check;
use super::measure;
use super::policy::{CONFIG_NAME, CONFIG_NAMESPACE, PolicyKind, Running};
use super::world::World;
use super::{Scenario, Workload};
use crate::ec2::Operation;
use crate::ipam::Config;
use crate::k8s::{FOREIGN_IPAM_CONFIG_MAP, FOREIGN_IPAM_NAMESPACE};
use crate::sim::progress::Progress;
use crate::sim::report::{ChurnStats, Distribution, Ec2Line, RebuildStats, RunResult, WaveStats};

/// Namespace of the workload's pods.
const NAMESPACE: &str = "apps";

/// EC2's account bucket for mutating calls (SPEC 12): the floor of a scale-out.
const EC2_MUTATING_BURST: f64 = 50.0;
const EC2_MUTATING_REFILL: f64 = 5.0;

fn expected_nodes(w: &Workload) -> u32 {
    match w {
        Workload::Demo { nodes, .. }
        | Workload::Wave { nodes, .. }
        | Workload::Churn { nodes, .. }
        | Workload::Restart { nodes, .. } => *nodes,
    }
}

/// The cluster's configuration, where each policy reads it.
fn configure(world: &World, scenario: &Scenario, policy: PolicyKind) {
    let flag = scenario.prefix_delegation.to_string();
    match policy {
        PolicyKind::Winipam => world.cluster.set_config_map(
            CONFIG_NAMESPACE,
            CONFIG_NAME,
            BTreeMap::from([("enable-windows-prefix-delegation".to_string(), flag)]),
        ),
        PolicyKind::VpcRcModel => world.cluster.set_config_map(
            FOREIGN_IPAM_NAMESPACE,
            FOREIGN_IPAM_CONFIG_MAP,
            BTreeMap::from([
                ("enable-windows-ipam".to_string(), "true".to_string()),
                ("enable-windows-prefix-delegation".to_string(), flag),
            ]),
        ),
    }
}

/// EC2 calls so far: (mutating, describe).
fn ec2_calls(world: &World) -> (u64, u64) {
    world
        .ec2
        .all_counts()
        .iter()
        .fold((0, 0), |(m, d), (op, c)| {
            if op.is_mutating() {
                (m + c.calls, d)
            } else {
                (m, d + c.calls)
            }
        })
}

fn progress_pods(world: &World, progress: Option<&Progress>) {
    if let Some(p) = progress {
        let (live, annotated) = world.cluster.pod_counts();
        p.set_pods(annotated, live);
        p.set_sim_time(world.cluster.elapsed());
    }
}

fn phase(progress: Option<&Progress>, name: &str) {
    if let Some(p) = progress {
        p.set_phase(name);
    }
}

/// Waits until every live pod has an address (false on timeout).
async fn wait_annotated(world: &World, deadline: Instant, progress: Option<&Progress>) -> bool {
    loop {
        progress_pods(world, progress);
        let (live, annotated) = world.cluster.pod_counts();
        if live == annotated {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lets simulated time pass, keeping the progress line current.
async fn pass(world: &World, d: Duration, progress: Option<&Progress>) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        progress_pods(world, progress);
        tokio::time::sleep_until((Instant::now() + Duration::from_secs(1)).min(end)).await;
    }
}

/// The nodes and the names of the live pods on each (the churn picks among them).
#[derive(Default)]
struct Placed {
    nodes: Vec<String>,
    pods: Vec<Vec<String>>,
}

/// Every node joins at once with its pods bound as it appears; waits for all addresses.
async fn wave(
    world: &mut World,
    instance_type: &str,
    nodes: u32,
    pods_per_node: u32,
    deadline: Instant,
    progress: Option<&Progress>,
) -> (WaveStats, Placed) {
    phase(progress, "nodes join, pods bound");
    let start_ms = world.cluster.elapsed().as_millis() as u64;
    let (mutating_before, _) = ec2_calls(world);
    let mut placed = Placed {
        nodes: Vec::new(),
        pods: Vec::new(),
    };
    for i in 0..nodes {
        let Some(node) = world.launch_node(instance_type) else {
            continue;
        };
        let names: Vec<String> = (0..pods_per_node)
            .map(|j| format!("app-{i:05}-{j:03}"))
            .collect();
        for name in &names {
            world.cluster.bind_pod(NAMESPACE, name, &node);
        }
        placed.nodes.push(node);
        placed.pods.push(names);
    }
    phase(progress, "waiting for addresses");
    wait_annotated(world, deadline, progress).await;
    let (mutating_after, _) = ec2_calls(world);
    let last_ms = world
        .cluster
        .time_to_ip()
        .iter()
        .filter(|(bound, _)| u64::from(*bound) >= start_ms)
        .map(|(bound, delay)| u64::from(*bound) + u64::from(*delay))
        .max()
        .unwrap_or(start_ms);
    let n = placed.nodes.len() as u64;
    let floor = (n as f64 - EC2_MUTATING_BURST) / EC2_MUTATING_REFILL;
    let stats = WaveStats {
        nodes: n,
        pods: n * u64::from(pods_per_node),
        all_annotated_s: (last_ms - start_ms) as f64 / 1000.0,
        floor_s: (floor > 0.0).then_some(floor),
        mutating_per_node: (mutating_after - mutating_before) as f64 / n.max(1) as f64,
    };
    (stats, placed)
}

/// `per_sec` replacements for `duration`: a random pod is deleted and a new one bound on its
/// node at the same instant (a ReplicaSet replacing it).
async fn churn(
    world: &mut World,
    placed: &mut Placed,
    per_sec: f64,
    duration: Duration,
    deadline: Instant,
    progress: Option<&Progress>,
) -> ChurnStats {
    phase(progress, "churn");
    let (mutating_before, describe_before) = ec2_calls(world);
    let events_before = world.cluster.pod_events_delivered();
    let cpu_before = measure::thread_cpu();
    let start = Instant::now();
    let start_ms = world.cluster.elapsed().as_millis() as u64;
    let period = Duration::from_secs_f64(1.0 / per_sec.max(0.001));
    let total = (per_sec * duration.as_secs_f64()).round() as u64;
    let mut done = 0;
    for k in 0..total {
        tokio::time::sleep_until(start + period.mul_f64(k as f64)).await;
        let n = world.rng.below(placed.nodes.len() as u64) as usize;
        let list = &mut placed.pods[n];
        if list.is_empty() {
            continue;
        }
        let old = list.swap_remove(world.rng.below(list.len() as u64) as usize);
        world.cluster.delete_pod(NAMESPACE, &old);
        let name = format!("app-{n:05}-r{k:07}");
        world.cluster.bind_pod(NAMESPACE, &name, &placed.nodes[n]);
        list.push(name);
        done += 1;
        if k % 200 == 0 {
            progress_pods(world, progress);
        }
    }
    tokio::time::sleep_until(start + duration).await;
    let cpu_after = measure::thread_cpu();
    let events = world.cluster.pod_events_delivered() - events_before;
    let (mutating_after, describe_after) = ec2_calls(world);
    phase(progress, "waiting for addresses");
    wait_annotated(world, deadline, progress).await;
    let end_ms = start_ms + duration.as_millis() as u64;
    let delays: Vec<u32> = world
        .cluster
        .time_to_ip()
        .iter()
        .filter(|(bound, _)| (start_ms..end_ms).contains(&u64::from(*bound)))
        .map(|(_, d)| *d)
        .collect();
    let mutating = mutating_after - mutating_before;
    ChurnStats {
        seconds: duration.as_secs_f64(),
        replacements: done,
        mutating_calls: mutating,
        describe_calls: describe_after - describe_before,
        mutating_per_replacement: mutating as f64 / done.max(1) as f64,
        pod_events: events,
        cpu_us_per_pod_event: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) if events > 0 => Some((b - a).as_secs_f64() * 1e6 / events as f64),
            _ => None,
        },
        time_to_ip: Distribution::from_ms(delays),
    }
}

/// Stops the policy and starts it again (a new process), timing the rebuild.
async fn restart(
    run: Running,
    world: &World,
    policy: PolicyKind,
    seed: u64,
    deadline: Instant,
    progress: Option<&Progress>,
) -> (Running, RebuildStats) {
    phase(progress, "restart");
    run.stop().await;
    let counts_before = world.ec2.all_counts();
    let annotations_before = world.cluster.request_counts().annotate;
    let real_start = std::time::Instant::now();
    let start = Instant::now();
    let run = Running::start(policy, world, seed);
    phase(progress, "rebuilding");
    while !run.ready() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Some(p) = progress {
            p.set_sim_time(world.cluster.elapsed());
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let real_seconds = real_start.elapsed().as_secs_f64();
    let mut describe_instances = 0;
    let mut other = 0;
    for ((op, after), (_, before)) in world.ec2.all_counts().iter().zip(&counts_before) {
        let d = after.calls - before.calls;
        if *op == Operation::DescribeInstances {
            describe_instances += d;
        } else {
            other += d;
        }
    }
    let stats = RebuildStats {
        seconds,
        real_seconds,
        describe_instances,
        other_ec2_calls: other,
        annotation_writes: world.cluster.request_counts().annotate - annotations_before,
    };
    (run, stats)
}

/// Plays the scenario with `policy` and measures.
pub(super) async fn play(
    scenario: &Scenario,
    policy: PolicyKind,
    seed: u64,
    progress: Option<&Progress>,
) -> RunResult {
    let real_start = std::time::Instant::now();
    measure::reset_peak_rss();
    let cpu_start = measure::thread_cpu();
    let mut world = World::new(seed, expected_nodes(&scenario.workload));
    configure(&world, scenario, policy);
    let sampler = world.start_sampler(Duration::from_secs(1));
    let mut run = Running::start(policy, &world, seed);
    let deadline = Instant::now() + scenario.timeout;
    let (mut wave_stats, mut churn_stats, mut rebuild_stats) = (None, None, None);
    // Every workload but the demo starts with the same wave of nodes and pods.
    let mut placed = None;
    if let Workload::Wave {
        instance_type,
        nodes,
        pods_per_node,
    }
    | Workload::Churn {
        instance_type,
        nodes,
        pods_per_node,
        ..
    }
    | Workload::Restart {
        instance_type,
        nodes,
        pods_per_node,
    } = &scenario.workload
    {
        let (stats, pods) = wave(
            &mut world,
            instance_type,
            *nodes,
            *pods_per_node,
            deadline,
            progress,
        )
        .await;
        wave_stats = Some(stats);
        placed = Some(pods);
    }
    match &scenario.workload {
        Workload::Wave { .. } => {}
        Workload::Churn {
            per_sec, duration, ..
        } => {
            phase(progress, "settling before churn");
            pass(&world, Duration::from_secs(60), progress).await;
            let mut placed = placed.unwrap_or_default();
            churn_stats = Some(
                churn(
                    &mut world,
                    &mut placed,
                    *per_sec,
                    *duration,
                    deadline,
                    progress,
                )
                .await,
            );
        }
        Workload::Restart { .. } => {
            phase(progress, "settling before restart");
            pass(&world, Duration::from_secs(60), progress).await;
            let (again, stats) = restart(run, &world, policy, seed, deadline, progress).await;
            run = again;
            rebuild_stats = Some(stats);
        }
        Workload::Demo { .. } => {
            super::demo::play(&mut world, &scenario.workload, deadline, progress).await;
        }
    }
    phase(progress, "settling");
    pass(&world, scenario.settle, progress).await;
    let config = Config {
        prefix_delegation: scenario.prefix_delegation,
        ..Config::default()
    };
    let checks = check(&world, &config);
    let sim_seconds = world.cluster.elapsed().as_secs_f64();
    run.stop().await;
    sampler.abort();
    let cpu = match (cpu_start, measure::thread_cpu()) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
        _ => None,
    };
    result(
        scenario,
        policy,
        seed,
        &world,
        checks,
        cpu,
        (wave_stats, churn_stats, rebuild_stats),
        sim_seconds,
        real_start.elapsed().as_secs_f64(),
    )
}

#[allow(clippy::too_many_arguments)]
fn result(
    scenario: &Scenario,
    policy: PolicyKind,
    seed: u64,
    world: &World,
    checks: super::Checks,
    cpu_seconds: Option<f64>,
    (wave, churn, rebuild): (Option<WaveStats>, Option<ChurnStats>, Option<RebuildStats>),
    sim_seconds: f64,
    real_seconds: f64,
) -> RunResult {
    let counts = world.ec2.all_counts();
    let ec2: Vec<Ec2Line> = counts
        .iter()
        .map(|(op, c)| Ec2Line {
            operation: op.name().to_string(),
            calls: c.calls,
            throttled: c.throttled,
        })
        .collect();
    let (mutating, describe) = ec2_calls(world);
    let samples = world
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let stride = samples.len().div_ceil(400).max(1);
    let pod_events = world.cluster.pod_events_delivered();
    RunResult {
        scenario: scenario.kind,
        title: scenario.title.clone(),
        policy,
        seed,
        nodes: world.nodes.len() as u64,
        pods: world.cluster.pods_created(),
        time_to_ip: Distribution::from_ms(
            world
                .cluster
                .time_to_ip()
                .into_iter()
                .map(|(_, d)| d)
                .collect(),
        ),
        throttled: counts.iter().map(|(_, c)| c.throttled).sum(),
        ec2,
        ec2_mutating: mutating,
        ec2_describe: describe,
        held_end: world.held(),
        used_end: world.cluster.pod_counts().1,
        held_peak: samples.iter().map(|s| s.held).max().unwrap_or(0),
        series: samples.iter().step_by(stride).copied().collect(),
        api: world.cluster.request_counts(),
        pod_events,
        cpu_seconds,
        cpu_us_per_pod_event: cpu_seconds
            .filter(|_| pod_events > 0)
            .map(|s| s * 1e6 / pod_events as f64),
        peak_rss_mb: measure::peak_rss_bytes().map(|b| b as f64 / 1_048_576.0),
        sim_seconds,
        real_seconds,
        wave,
        churn,
        rebuild,
        checks,
    }
}
