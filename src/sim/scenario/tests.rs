//! Scaled-down S1-S4 and demo, asserting what a seed makes deterministic: EC2 call counts, every
//! pod annotated, no duplicate among live pods, nothing held beyond targets once settled.

use super::*;
use crate::sim::report::RunResult;

fn play(kind: ScenarioKind, policy: PolicyKind, seed: u64) -> RunResult {
    run(&Scenario::small(kind), policy, seed, None).expect("runtime")
}

fn calls(r: &RunResult, op: &str) -> u64 {
    r.ec2
        .iter()
        .find(|l| l.operation == op)
        .map_or(0, |l| l.calls)
}

fn assert_clean(r: &RunResult) {
    assert!(
        r.checks.ok(),
        "{} {}: {:?}",
        r.scenario.name(),
        r.policy.name(),
        r.checks
    );
    assert_eq!(r.checks.unannotated, 0);
    assert_eq!(r.checks.duplicate_addresses, 0);
}

#[test]
fn s1_small_one_assign_per_node_near_the_bucket_floor() {
    let r = play(ScenarioKind::S1, PolicyKind::Winipam, 1);
    assert_clean(&r);
    let wave = r.wave.as_ref().expect("wave");
    assert_eq!(wave.pods, 60 * 30);
    assert_eq!(r.checks.live_pods, 1800);
    assert!(wave.mutating_per_node <= 1.1, "{wave:?}");
    assert_eq!(calls(&r, "AssignPrivateIpAddresses"), 60);
    assert_eq!(calls(&r, "UnassignPrivateIpAddresses"), 0);
    assert_eq!(r.throttled, 0);
    // 60 Assigns: 50 at once from EC2's bucket, then 5/s: a 2 s floor; ours starts at 40, so
    // about 4 s plus latency.
    assert!(wave.all_annotated_s < 6.0, "{wave:?}");
    // Two /28s per node (30 pods + warm 1).
    assert_eq!(r.held_end, 60 * 32);
}

#[test]
fn s1_small_baseline_is_slower_and_calls_more() {
    let ours = play(ScenarioKind::S1, PolicyKind::Winipam, 1);
    let theirs = play(ScenarioKind::S1, PolicyKind::VpcRcModel, 1);
    assert_clean(&theirs);
    let (a, b) = (ours.wave.clone().unwrap(), theirs.wave.clone().unwrap());
    assert!(
        b.all_annotated_s > 3.0 * a.all_annotated_s,
        "{a:?} vs {b:?}"
    );
    // 2 DescribeInstances and 1 DescribeSubnets per node init (v1.8.2, measured against the
    // real controller), then a poll after each Assign.
    assert_eq!(calls(&theirs, "DescribeSubnets"), 60);
    assert!(
        calls(&theirs, "DescribeInstances") >= 2 * 60 + calls(&theirs, "AssignPrivateIpAddresses")
    );
    // No surge: the minimum's /28 first, then one more when warm runs out.
    assert_eq!(calls(&theirs, "AssignPrivateIpAddresses"), 120);
}

#[test]
fn s2_small_churn_reuses_addresses() {
    let r = play(ScenarioKind::S2, PolicyKind::Winipam, 1);
    assert_clean(&r);
    let churn = r.churn.as_ref().expect("churn");
    assert_eq!(churn.replacements, 240);
    // At most one /28 more per node while cooling addresses count (a target refill), never an
    // EC2 call per replaced pod.
    assert!(
        churn.mutating_calls <= 20,
        "{} mutating calls for {} replacements",
        churn.mutating_calls,
        churn.replacements
    );
    assert!(churn.time_to_ip.p99 < 1.0, "{:?}", churn.time_to_ip);
}

#[test]
fn s3_burst_gets_exactly_one_assign() {
    let r = play(ScenarioKind::S3, PolicyKind::Winipam, 1);
    assert_clean(&r);
    assert_eq!(r.checks.live_pods, 100);
    assert_eq!(calls(&r, "AssignPrivateIpAddresses"), 1);
    assert_eq!(calls(&r, "UnassignPrivateIpAddresses"), 0);
    // 100 pods + warm 1: seven /28s in that one call.
    assert_eq!(r.held_end, 7 * 16);
}

#[test]
fn s4_small_restart_rebuilds_from_one_describe() {
    let r = play(ScenarioKind::S4, PolicyKind::Winipam, 1);
    assert_clean(&r);
    let rebuild = r.rebuild.as_ref().expect("rebuild");
    assert!(rebuild.describe_instances <= 5, "{rebuild:?}");
    assert_eq!(rebuild.describe_instances, 1);
    assert_eq!(rebuild.annotation_writes, 0);
    assert!(rebuild.seconds < 5.0, "{rebuild:?}");
    // Each node's task: its loop's state and a pointer to the worker (264 bytes), not the
    // worker twice over (3,240 bytes, debug build; 7 MB of the full S4's peak RSS).
    let task = crate::controller::RUN_FUTURE_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=1024).contains(&task),
        "a node worker's task holds {task} bytes"
    );
}

#[test]
fn demo_small_serves_both_modes_and_gives_everything_back() {
    let r = play(ScenarioKind::Demo, PolicyKind::Winipam, 1);
    assert_clean(&r);
    assert!(r.pods > 50, "{} pods", r.pods);
    assert_eq!(r.time_to_ip.count, r.pods);
    // Every pod has left; each node keeps its minimum only (3 secondary IPs, or one /28).
    assert_eq!(r.used_end, 0);
    assert!(r.held_end <= r.nodes * 16, "{} held", r.held_end);
}

#[test]
fn a_seed_replays_the_same_run() {
    let strip = |mut r: RunResult| {
        r.real_seconds = 0.0;
        r.cpu_seconds = None;
        r.cpu_us_per_pod_event = None;
        r.peak_rss_mb = None;
        r
    };
    let a = strip(play(ScenarioKind::Demo, PolicyKind::Winipam, 7));
    let b = strip(play(ScenarioKind::Demo, PolicyKind::Winipam, 7));
    assert_eq!(a, b);
    let c = strip(play(ScenarioKind::Demo, PolicyKind::Winipam, 8));
    assert_ne!(a.time_to_ip, c.time_to_ip);
}
