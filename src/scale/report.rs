//! What a scale run on the real apiserver measured, per phase: JSON (serde) and a markdown table
//! in the manner of `winipam simulate`'s.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::sim::report::Distribution;

/// One phase of a run (R1's scale-out, R2's churn, R3's leader kill).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseReport {
    pub name: String,
    /// Pods of the phase (created during it) the watcher saw, and how many of them got an address.
    pub pods: u64,
    pub annotated: u64,
    /// Pod bound -> first seen annotated, seconds, as the probe's own watch saw it.
    pub bound_to_annotated: Distribution,
    pub wall_seconds: f64,
    /// The controller's apiserver writes during the phase, from the audit log (None: no log).
    pub controller_writes: Option<u64>,
    pub writes_per_pod: Option<f64>,
    pub writes_by_kind: BTreeMap<String, u64>,
    /// CPU seconds of the controller processes (all replicas) during the phase.
    pub controller_cpu_seconds: f64,
    /// Controller CPU per pod event, a pod event being one pod of the phase handled (annotated,
    /// or released when it left).
    pub controller_cpu_ms_per_pod_event: Option<f64>,
    pub apiserver_cpu_seconds: Option<f64>,
    pub etcd_cpu_seconds: Option<f64>,
    /// EC2 calls by action during the phase, all replicas.
    pub ec2_calls: BTreeMap<String, u64>,
    /// The controller's NodeAddressPool status writes by why they went when they did
    /// (`winipam_status_writes_total`), all replicas.
    #[serde(default)]
    pub status_writes_by_why: BTreeMap<String, u64>,
    /// The controller's own share of `bound_to_annotated`: `winipam_pod_ip_assign_seconds` (pod
    /// seen bound -> annotation written) over the phase, all replicas, p50 and p99 as the upper
    /// bounds of the buckets they fall in, ms. The rest of the wait is the apiserver's watches
    /// delivering the binding to the controller and the annotation to the probe.
    #[serde(default)]
    pub controller_assign_ms_at_most: Option<(f64, f64)>,
    /// R3: seconds from the leader's SIGKILL until every pod created after it was annotated.
    pub reannotated_after_kill_seconds: Option<f64>,
    /// R3: seconds from the SIGKILL until the new leader had rebuilt every node's pool (its
    /// `/readyz`); the phase's figures run to then, so they hold the whole rebuild's describes.
    #[serde(default)]
    pub rebuilt_after_kill_seconds: Option<f64>,
    /// Addresses seen named by two live pods (must stay empty).
    pub shared_addresses: Vec<String>,
}

/// The run at one moment (the SVG's time panels): the watch's pods, and the controllers' pools.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds from the start of the first phase.
    pub t: f64,
    /// Pods not leaving, and of those annotated (addresses in use), as the watch saw them.
    pub live: u64,
    pub annotated: u64,
    /// Addresses on the nodes' ENIs (used, free and cooling) by the controllers' own gauges,
    /// when a scrape near `t` answered.
    pub held: Option<u64>,
    /// Bound -> annotated of the pods bound in the interval ending at `t`, seconds.
    pub wait_p50: Option<f64>,
    pub wait_max: Option<f64>,
}

/// One run: its parameters, the phases, the controllers' peak RSS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScaleReport {
    pub scenario: String,
    /// The winipam build that ran, "release" or "debug": the probe's own, and scale.sh runs
    /// the controllers and the probe from one binary. CPU and latency figures are a debug
    /// build's several times over, so a figure without it says little.
    #[serde(default)]
    pub build: String,
    pub nodes: u32,
    pub instance_type: String,
    pub pods: u32,
    pub rate_per_sec: f64,
    /// What the controllers used as EC2.
    pub ec2: String,
    /// How writes were counted ("audit log, user ..."), or why they were not.
    pub writes_source: String,
    pub phases: Vec<PhaseReport>,
    /// Peak RSS (VmHWM) of each controller process still alive at the end, MiB.
    pub controller_peak_rss_mib: BTreeMap<String, f64>,
    /// `uptime`'s load averages at the end of the run.
    pub load_average: String,
    /// The run over time, at most a few hundred samples.
    pub series: Vec<Sample>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn calls(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "-".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The markdown table of a run: one column per phase.
pub fn markdown(report: &ScaleReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {}: {} {} KWOK nodes, {} pods at {}/s (real apiserver; EC2 {}; winipam {} build)\n",
        report.scenario.to_uppercase(),
        report.nodes,
        report.instance_type,
        report.pods,
        report.rate_per_sec,
        report.ec2,
        report.build
    );
    let header: Vec<&str> = report.phases.iter().map(|p| p.name.as_str()).collect();
    let _ = writeln!(out, "| | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(header.len()));
    let mut row = |label: &str, f: &dyn Fn(&PhaseReport) -> String| {
        let cells: Vec<String> = report.phases.iter().map(f).collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    };
    row("pods (annotated)", &|p| {
        format!("{} ({})", p.pods, p.annotated)
    });
    row("bound -> annotated p50 / p99 / max (ms)", &|p| {
        let d = &p.bound_to_annotated;
        format!(
            "{:.0} / {:.0} / {:.0}",
            d.p50 * 1e3,
            d.p99 * 1e3,
            d.max * 1e3
        )
    });
    row(
        "controller's own share: seen bound -> written p50 / p99 (ms, at most)",
        &|p| match p.controller_assign_ms_at_most {
            Some((p50, p99)) => format!("{p50:.0} / {p99:.0}"),
            None => "-".to_owned(),
        },
    );
    row("wall time (s)", &|p| format!("{:.1}", p.wall_seconds));
    row(
        "controller writes (per pod)",
        &|p| match (p.controller_writes, p.writes_per_pod) {
            (Some(w), Some(per)) => format!("{w} ({per:.2})"),
            (Some(w), None) => w.to_string(),
            _ => "-".to_owned(),
        },
    );
    row("writes by kind", &|p| calls(&p.writes_by_kind));
    row("controller CPU s (ms per pod event)", &|p| {
        format!(
            "{:.2} ({})",
            p.controller_cpu_seconds,
            opt(p.controller_cpu_ms_per_pod_event, 2)
        )
    });
    row("apiserver / etcd CPU s", &|p| {
        format!(
            "{} / {}",
            opt(p.apiserver_cpu_seconds, 1),
            opt(p.etcd_cpu_seconds, 1)
        )
    });
    row("status writes by why", &|p| calls(&p.status_writes_by_why));
    row("EC2 calls", &|p| calls(&p.ec2_calls));
    if report
        .phases
        .iter()
        .any(|p| p.reannotated_after_kill_seconds.is_some())
    {
        row("kill -> every new pod annotated (s)", &|p| {
            opt(p.reannotated_after_kill_seconds, 1)
        });
        row("kill -> every pool rebuilt (s)", &|p| {
            opt(p.rebuilt_after_kill_seconds, 1)
        });
    }
    row("addresses shared", &|p| {
        p.shared_addresses.len().to_string()
    });
    let rss: Vec<String> = report
        .controller_peak_rss_mib
        .iter()
        .map(|(k, v)| format!("{k} {v:.0} MiB"))
        .collect();
    let _ = writeln!(
        out,
        "\nController peak RSS: {}. Writes: {}. Load average at the end: {}.",
        if rss.is_empty() {
            "-".to_owned()
        } else {
            rss.join(", ")
        },
        report.writes_source,
        report.load_average
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_the_build_and_has_a_column_per_phase_and_the_kill_row_only_for_r3() {
        let mut report = ScaleReport {
            scenario: "r1".into(),
            build: "release".into(),
            nodes: 2,
            instance_type: "m5.xlarge".into(),
            pods: 10,
            rate_per_sec: 5.0,
            phases: vec![PhaseReport {
                name: "scale-out".into(),
                pods: 10,
                annotated: 10,
                controller_writes: Some(25),
                writes_per_pod: Some(2.5),
                controller_assign_ms_at_most: Some((10.0, 50.0)),
                ..PhaseReport::default()
            }],
            ..ScaleReport::default()
        };
        let table = markdown(&report);
        assert!(table.contains("winipam release build)\n"), "{table}");
        assert!(table.contains("| | scale-out |"), "{table}");
        assert!(
            table.contains("| controller writes (per pod) | 25 (2.50) |"),
            "{table}"
        );
        assert!(
            table.contains("seen bound -> written p50 / p99 (ms, at most) | 10 / 50 |"),
            "{table}"
        );
        assert!(!table.contains("kill ->"), "{table}");
        report.phases[0].reannotated_after_kill_seconds = Some(3.0);
        report.phases[0].rebuilt_after_kill_seconds = Some(4.5);
        assert!(markdown(&report).contains("kill -> every new pod annotated (s) | 3.0 |"));
        assert!(markdown(&report).contains("kill -> every pool rebuilt (s) | 4.5 |"));
    }
}
