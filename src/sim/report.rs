//! What a run measured ([`RunResult`], also the JSON of `--json`) and the table printed for one
//! policy, or for both side by side with the ratio.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::sim::cluster::RequestCounts;
use crate::sim::scenario::{Checks, PolicyKind, Sample, ScenarioKind};

/// A distribution of durations, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    /// Seconds at the 0th, 1st, ..., 100th percentile (for the plot).
    pub percentiles: Vec<f64>,
}

impl Distribution {
    /// From millisecond samples (nearest-rank percentiles).
    pub fn from_ms(mut ms: Vec<u32>) -> Distribution {
        if ms.is_empty() {
            return Distribution::default();
        }
        ms.sort_unstable();
        let n = ms.len();
        let at = |q: f64| {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            f64::from(ms[rank - 1]) / 1000.0
        };
        Distribution {
            count: n as u64,
            p50: at(0.50),
            p99: at(0.99),
            max: f64::from(ms[n - 1]) / 1000.0,
            mean: ms.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64 / 1000.0,
            percentiles: (0..=100).map(|p| at(f64::from(p) / 100.0)).collect(),
        }
    }
}

/// Calls of one EC2 operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ec2Line {
    pub operation: String,
    pub calls: u64,
    /// Refused with `RequestLimitExceeded`.
    pub throttled: u64,
}

/// The first wave of pods (every scenario but the demo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveStats {
    pub nodes: u64,
    pub pods: u64,
    /// From the first node to the last pod of the wave annotated.
    pub all_annotated_s: f64,
    /// The least time EC2's mutating bucket (50, refill 5/s) allows for one Assign per node.
    pub floor_s: Option<f64>,
    /// Assign and Unassign calls until the wave was annotated, per node.
    pub mutating_per_node: f64,
}

/// The churn window of S2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnStats {
    pub seconds: f64,
    pub replacements: u64,
    pub mutating_calls: u64,
    pub describe_calls: u64,
    pub mutating_per_replacement: f64,
    pub pod_events: u64,
    pub cpu_us_per_pod_event: Option<f64>,
    pub time_to_ip: Distribution,
}

/// The restart of S4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebuildStats {
    /// Simulated seconds from the new start to every node's pool rebuilt.
    pub seconds: f64,
    /// Real seconds the process spent on it.
    pub real_seconds: f64,
    pub describe_instances: u64,
    pub other_ec2_calls: u64,
    /// Annotation writes during the rebuild (every pod already had one: 0 expected).
    pub annotation_writes: u64,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub scenario: ScenarioKind,
    pub title: String,
    pub policy: PolicyKind,
    pub seed: u64,
    pub nodes: u64,
    /// Pods created over the run.
    pub pods: u64,
    /// Bound -> annotation written, simulated time.
    pub time_to_ip: Distribution,
    pub ec2: Vec<Ec2Line>,
    pub ec2_mutating: u64,
    pub ec2_describe: u64,
    pub throttled: u64,
    pub held_end: u64,
    pub used_end: u64,
    pub held_peak: u64,
    /// Addresses held and used over time (at most a few hundred points).
    pub series: Vec<Sample>,
    pub api: RequestCounts,
    pub pod_events: u64,
    /// CPU of the process's simulation thread (controller and simulator) over the run.
    pub cpu_seconds: Option<f64>,
    pub cpu_us_per_pod_event: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub sim_seconds: f64,
    pub real_seconds: f64,
    pub wave: Option<WaveStats>,
    pub churn: Option<ChurnStats>,
    pub rebuild: Option<RebuildStats>,
    pub checks: Checks,
}

/// Which direction is better for a row (decides the ratio's wording).
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Lower,
    Neither,
}

struct Row {
    label: String,
    values: Vec<Option<f64>>,
    decimals: usize,
    better: Better,
}

fn row(label: &str, values: Vec<Option<f64>>, decimals: usize, better: Better) -> Row {
    Row {
        label: label.to_string(),
        values,
        decimals,
        better,
    }
}

fn rows(runs: &[RunResult]) -> Vec<Row> {
    let all = |f: &dyn Fn(&RunResult) -> Option<f64>| runs.iter().map(f).collect::<Vec<_>>();
    let n = |v: u64| Some(v as f64);
    let mut out = vec![
        row("nodes", all(&|r| n(r.nodes)), 0, Better::Neither),
        row("pods", all(&|r| n(r.pods)), 0, Better::Neither),
    ];
    if runs.iter().any(|r| r.wave.is_some()) {
        let wave = |f: fn(&WaveStats) -> Option<f64>| all(&|r| r.wave.as_ref().and_then(f));
        out.push(row(
            "wave: all pods annotated (s)",
            wave(|w| Some(w.all_annotated_s)),
            1,
            Better::Lower,
        ));
        if runs
            .iter()
            .any(|r| r.wave.as_ref().is_some_and(|w| w.floor_s.is_some()))
        {
            out.push(row(
                "  floor of EC2's mutating bucket (s)",
                wave(|w| w.floor_s),
                1,
                Better::Neither,
            ));
            out.push(row(
                "  wave time / floor",
                wave(|w| Some(w.all_annotated_s / w.floor_s?)),
                2,
                Better::Lower,
            ));
        }
        out.push(row(
            "  Assign+Unassign calls per node",
            wave(|w| Some(w.mutating_per_node)),
            2,
            Better::Lower,
        ));
    }
    for (label, f) in [
        (
            "time-to-IP p50 (s)",
            (|d: &Distribution| d.p50) as fn(&Distribution) -> f64,
        ),
        ("time-to-IP p99 (s)", |d| d.p99),
        ("time-to-IP max (s)", |d| d.max),
    ] {
        out.push(row(
            label,
            all(&|r| (r.time_to_ip.count > 0).then(|| f(&r.time_to_ip))),
            2,
            Better::Lower,
        ));
    }
    let ops: Vec<String> = runs
        .first()
        .map(|r| r.ec2.iter().map(|l| l.operation.clone()).collect())
        .unwrap_or_default();
    for op in ops {
        out.push(row(
            &format!("EC2 {op}"),
            all(&|r| n(r.ec2.iter().find(|l| l.operation == op)?.calls)),
            0,
            Better::Lower,
        ));
    }
    out.push(row(
        "EC2 throttled (RequestLimitExceeded)",
        all(&|r| n(r.throttled)),
        0,
        Better::Lower,
    ));
    out.push(row(
        "addresses held at end",
        all(&|r| n(r.held_end)),
        0,
        Better::Lower,
    ));
    out.push(row(
        "addresses used at end",
        all(&|r| n(r.used_end)),
        0,
        Better::Neither,
    ));
    out.push(row(
        "addresses held, peak",
        all(&|r| n(r.held_peak)),
        0,
        Better::Lower,
    ));
    out.push(row(
        "API writes (annotations, status, Events)",
        all(&|r| n(r.api.writes())),
        0,
        Better::Lower,
    ));
    out.push(row(
        "pod watch events",
        all(&|r| n(r.pod_events)),
        0,
        Better::Neither,
    ));
    out.push(row(
        "CPU per pod event (us, whole process)",
        all(&|r| r.cpu_us_per_pod_event),
        1,
        Better::Lower,
    ));
    if runs.iter().any(|r| r.churn.is_some()) {
        let churn = |f: fn(&ChurnStats) -> Option<f64>| all(&|r| r.churn.as_ref().and_then(f));
        out.push(row(
            "churn: pod replacements",
            churn(|c| Some(c.replacements as f64)),
            0,
            Better::Neither,
        ));
        out.push(row(
            "  EC2 Assign+Unassign during churn",
            churn(|c| Some(c.mutating_calls as f64)),
            0,
            Better::Lower,
        ));
        out.push(row(
            "  EC2 describes during churn",
            churn(|c| Some(c.describe_calls as f64)),
            0,
            Better::Lower,
        ));
        out.push(row(
            "  mutating calls per replacement",
            churn(|c| Some(c.mutating_per_replacement)),
            3,
            Better::Lower,
        ));
        out.push(row(
            "  CPU per pod event (us)",
            churn(|c| c.cpu_us_per_pod_event),
            1,
            Better::Lower,
        ));
        out.push(row(
            "  time-to-IP p99 (s)",
            churn(|c| Some(c.time_to_ip.p99)),
            2,
            Better::Lower,
        ));
    }
    if runs.iter().any(|r| r.rebuild.is_some()) {
        let rb = |f: fn(&RebuildStats) -> Option<f64>| all(&|r| r.rebuild.as_ref().and_then(f));
        out.push(row(
            "restart: rebuild time (s simulated)",
            rb(|b| Some(b.seconds)),
            1,
            Better::Lower,
        ));
        out.push(row(
            "  rebuild real time (s)",
            rb(|b| Some(b.real_seconds)),
            2,
            Better::Lower,
        ));
        out.push(row(
            "  DescribeInstances during rebuild",
            rb(|b| Some(b.describe_instances as f64)),
            0,
            Better::Lower,
        ));
        out.push(row(
            "  other EC2 calls during rebuild",
            rb(|b| Some(b.other_ec2_calls as f64)),
            0,
            Better::Lower,
        ));
        out.push(row(
            "  annotation writes during rebuild",
            rb(|b| Some(b.annotation_writes as f64)),
            0,
            Better::Lower,
        ));
    }
    out.push(row(
        "peak RSS (MB)",
        all(&|r| r.peak_rss_mb),
        0,
        Better::Lower,
    ));
    out.push(row(
        "simulated time (s)",
        all(&|r| Some(r.sim_seconds)),
        0,
        Better::Neither,
    ));
    out.push(row(
        "real time (s)",
        all(&|r| Some(r.real_seconds)),
        1,
        Better::Neither,
    ));
    out
}

fn fmt_value(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "-".to_string(),
    }
}

/// The ratio column: how many times the baseline's value is winipam's (lower is better).
fn fmt_ratio(row: &Row) -> String {
    let (Some(Some(ours)), Some(Some(theirs))) = (row.values.first(), row.values.get(1)) else {
        return String::new();
    };
    if row.better != Better::Lower {
        return String::new();
    }
    match (*ours, *theirs) {
        (a, b) if a > 0.0 => format!("{:.1}x", b / a),
        (a, b) if a == 0.0 && b > 0.0 => "0 vs >0".to_string(),
        _ => String::new(),
    }
}

/// The table for one run, or two runs of the same scenario side by side (winipam first).
pub fn render(runs: &[RunResult]) -> String {
    let mut out = String::new();
    let Some(first) = runs.first() else {
        return out;
    };
    let _ = writeln!(
        out,
        "winipam simulate --scenario {} --seed {}\n{}\n",
        first.scenario.name(),
        first.seed,
        first.title
    );
    let label_w = 42;
    let col_w = 14;
    let _ = write!(out, "{:<label_w$}", "");
    for r in runs {
        let _ = write!(out, "{:>col_w$}", r.policy.name());
    }
    if runs.len() == 2 {
        let _ = write!(out, "{:>12}", "vpc-rc/ours");
    }
    let _ = writeln!(out);
    for row in rows(runs) {
        let _ = write!(out, "{:<label_w$}", row.label);
        for v in &row.values {
            let _ = write!(out, "{:>col_w$}", fmt_value(*v, row.decimals));
        }
        if runs.len() == 2 {
            let _ = write!(out, "{:>12}", fmt_ratio(&row));
        }
        let _ = writeln!(out);
    }
    for r in runs {
        let c = &r.checks;
        let verdict = if c.ok() {
            "ok".to_string()
        } else {
            format!(
                "{} unannotated, {} duplicate, {} off-ENI, {} addresses over target on {} nodes",
                c.unannotated,
                c.duplicate_addresses,
                c.off_eni,
                c.excess_addresses,
                c.nodes_over_target
            )
        };
        let _ = writeln!(
            out,
            "checks ({}): {} live pods; {verdict}",
            r.policy.name(),
            c.live_pods
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = Distribution::from_ms((1..=100).collect());
        assert_eq!(d.count, 100);
        assert_eq!(d.p50, 0.050);
        assert_eq!(d.p99, 0.099);
        assert_eq!(d.max, 0.100);
        assert_eq!(d.percentiles.len(), 101);
        assert_eq!(d.percentiles[0], 0.001);
        assert_eq!(Distribution::from_ms(vec![]).count, 0);
    }
}
