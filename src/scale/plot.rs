//! A scale run's picture, in the simulator's manner (`sim::plot`'s panels): the distribution of
//! bound -> annotated per phase, that wait over time, and pods and addresses over time.

use std::fmt::Write as _;

use super::report::ScaleReport;
use crate::sim::plot::{COLORS, GAP, PANEL_H, Panel, TOP, WIDTH, legend, nice};

const GREEN: &str = "#2ca02c";

/// The SVG document of one run.
pub fn svg(report: &ScaleReport) -> String {
    let height = TOP + PANEL_H * 3.0 + GAP * 2.0 + 60.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "{} on the real apiserver ({} nodes, {} pods at {}/s)",
        report.scenario.to_uppercase(),
        report.nodes,
        report.pods,
        report.rate_per_sec
    );

    // Pods with their address within t, per phase.
    let t_max = report
        .phases
        .iter()
        .filter_map(|p| p.bound_to_annotated.percentiles.last().copied())
        .fold(0.0, f64::max);
    let cdf = Panel {
        top: TOP,
        x_max: nice(t_max),
        y_max: 100.0,
    };
    cdf.axes(
        &mut out,
        &format!("{title}: pods annotated within t of being bound"),
        "seconds from bound to annotated (the harness's watch)",
        "% of pods",
    );
    let mut entries = Vec::new();
    for (i, phase) in report.phases.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let d = &phase.bound_to_annotated;
        let points: Vec<(f64, f64)> = d
            .percentiles
            .iter()
            .enumerate()
            .map(|(p, s)| (*s, p as f64))
            .collect();
        cdf.line(&mut out, &points, color, false);
        entries.push((format!("{} (p99 {:.2} s)", phase.name, d.p99), color, false));
    }
    legend(&mut out, TOP + PANEL_H - 50.0, &entries);

    let series = &report.series;
    let x_max = nice(series.last().map_or(0.0, |s| s.t));

    // The wait over time.
    let top = TOP + PANEL_H + GAP;
    let wait_max = series.iter().filter_map(|s| s.wait_max).fold(0.0, f64::max);
    let waits = Panel {
        top,
        x_max,
        y_max: nice(wait_max),
    };
    waits.axes(
        &mut out,
        "bound -> annotated of the pods bound in each interval",
        "seconds from the start",
        "seconds",
    );
    let pick = |f: &dyn Fn(&super::report::Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        series.iter().filter_map(|s| Some((s.t, f(s)?))).collect()
    };
    waits.line(&mut out, &pick(&|s| s.wait_max), COLORS[1], false);
    waits.line(&mut out, &pick(&|s| s.wait_p50), COLORS[0], false);
    legend(
        &mut out,
        top + 10.0,
        &[
            ("max".to_owned(), COLORS[1], false),
            ("p50".to_owned(), COLORS[0], false),
        ],
    );

    // Pods and addresses over time.
    let top = TOP + (PANEL_H + GAP) * 2.0;
    let y_max = series
        .iter()
        .map(|s| s.live.max(s.annotated).max(s.held.unwrap_or(0)))
        .max()
        .unwrap_or(0) as f64;
    let counts = Panel {
        top,
        x_max,
        y_max: nice(y_max),
    };
    counts.axes(
        &mut out,
        "pods live and annotated (the watch), addresses held on ENIs (the controller)",
        "seconds from the start",
        "pods / addresses",
    );
    counts.line(&mut out, &pick(&|s| s.held.map(|v| v as f64)), GREEN, false);
    counts.line(&mut out, &pick(&|s| Some(s.live as f64)), COLORS[0], false);
    counts.line(
        &mut out,
        &pick(&|s| Some(s.annotated as f64)),
        COLORS[1],
        true,
    );
    legend(
        &mut out,
        top + PANEL_H - 60.0,
        &[
            ("addresses held".to_owned(), GREEN, false),
            ("pods live".to_owned(), COLORS[0], false),
            ("pods annotated".to_owned(), COLORS[1], true),
        ],
    );
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::report::{PhaseReport, Sample};
    use crate::sim::report::Distribution;

    #[test]
    fn the_picture_draws_each_phase_and_each_series() {
        let report = ScaleReport {
            scenario: "r2".into(),
            phases: vec![
                PhaseReport {
                    name: "R1 scale-out".into(),
                    bound_to_annotated: Distribution::from_ms(vec![10, 20, 300]),
                    ..PhaseReport::default()
                },
                PhaseReport {
                    name: "R2 churn".into(),
                    bound_to_annotated: Distribution::from_ms(vec![15, 40]),
                    ..PhaseReport::default()
                },
            ],
            series: (0u32..10)
                .map(|i| Sample {
                    t: f64::from(i),
                    live: u64::from(i) * 10,
                    annotated: u64::from(i) * 9,
                    held: Some(200),
                    wait_p50: Some(0.02),
                    wait_max: Some(0.3),
                })
                .collect(),
            ..ScaleReport::default()
        };
        let svg = svg(&report);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Two CDFs, two wait lines, three count lines.
        assert_eq!(svg.matches("<polyline").count(), 7, "{svg}");
        assert!(svg.contains("R2 churn (p99 0.04 s)"), "{svg}");
    }
}
