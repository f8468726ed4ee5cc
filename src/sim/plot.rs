//! The `--plot` picture, as hand-written SVG: the distribution of time-to-IP per policy (how
//! many pods had their address within a given time), and addresses held and used over time.
//! The real-apiserver harness draws its runs with the same panels (`scale::plot`).

use std::fmt::Write as _;

use crate::sim::report::RunResult;

pub(crate) const WIDTH: f64 = 900.0;
pub(crate) const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_R: f64 = 20.0;
pub(crate) const TOP: f64 = 40.0;
pub(crate) const GAP: f64 = 80.0;
pub(crate) const COLORS: [&str; 2] = ["#1f77b4", "#d62728"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" upper bound for an axis (1, 2 or 5 times a power of ten).
pub(crate) fn nice(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * p)
}

pub(crate) struct Panel {
    pub(crate) top: f64,
    pub(crate) x_max: f64,
    pub(crate) y_max: f64,
}

impl Panel {
    fn x(&self, v: f64) -> f64 {
        MARGIN_L + v / self.x_max * (WIDTH - MARGIN_L - MARGIN_R)
    }
    fn y(&self, v: f64) -> f64 {
        self.top + PANEL_H - v / self.y_max * PANEL_H
    }

    pub(crate) fn axes(&self, out: &mut String, title: &str, x_label: &str, y_label: &str) {
        let (x0, x1) = (self.x(0.0), self.x(self.x_max));
        let (y0, y1) = (self.y(0.0), self.y(self.y_max));
        let _ = writeln!(
            out,
            r#"<text x="{x0}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
            self.top - 12.0,
            escape(title)
        );
        let _ = writeln!(
            out,
            r##"<path d="M{x0},{y1} L{x0},{y0} L{x1},{y0}" fill="none" stroke="#333"/>"##
        );
        for i in 0..=5 {
            let xv = self.x_max * f64::from(i) / 5.0;
            let yv = self.y_max * f64::from(i) / 5.0;
            let (xp, yp) = (self.x(xv), self.y(yv));
            let _ = writeln!(
                out,
                r##"<line x1="{xp}" y1="{y0}" x2="{xp}" y2="{}" stroke="#333"/><text x="{xp}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
                y0 + 4.0,
                y0 + 17.0,
                short(xv)
            );
            let _ = writeln!(
                out,
                r##"<line x1="{x0}" y1="{yp}" x2="{x1}" y2="{yp}" stroke="#eee"/><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"##,
                x0 - 6.0,
                yp + 4.0,
                short(yv)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
            (x0 + x1) / 2.0,
            y0 + 34.0,
            escape(x_label)
        );
        let _ = writeln!(
            out,
            r#"<text x="16" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
            (y0 + y1) / 2.0,
            (y0 + y1) / 2.0,
            escape(y_label)
        );
    }

    pub(crate) fn line(&self, out: &mut String, points: &[(f64, f64)], color: &str, dashed: bool) {
        if points.is_empty() {
            return;
        }
        let d: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.x(*x), self.y(*y)))
            .collect();
        let dash = if dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            d.join(" ")
        );
    }
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub(crate) fn legend(out: &mut String, y: f64, entries: &[(String, &str, bool)]) {
    let mut x = WIDTH - MARGIN_R - 240.0;
    let mut y = y;
    for (label, color, dashed) in entries {
        let dash = if *dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}" font-size="12">{}</text>"#,
            x + 28.0,
            x + 34.0,
            y + 4.0,
            escape(label)
        );
        y += 18.0;
        if y > TOP + PANEL_H {
            x -= 200.0;
        }
    }
}

/// The SVG document for the runs of one scenario.
pub fn svg(runs: &[RunResult]) -> String {
    let height = TOP + PANEL_H * 2.0 + GAP + 60.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);

    let t_max = runs
        .iter()
        .filter_map(|r| r.time_to_ip.percentiles.last().copied())
        .fold(0.0, f64::max);
    let ttip = Panel {
        top: TOP,
        x_max: nice(t_max),
        y_max: 100.0,
    };
    let scenario = runs.first().map(|r| r.scenario.name()).unwrap_or("");
    ttip.axes(
        &mut out,
        &format!("{scenario}: pods with an address within t (time-to-IP)"),
        "seconds from bound to annotated",
        "% of pods",
    );
    let mut entries = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = r
            .time_to_ip
            .percentiles
            .iter()
            .enumerate()
            .map(|(p, s)| (*s, p as f64))
            .collect();
        ttip.line(&mut out, &points, color, false);
        entries.push((
            format!("{} (p99 {:.1} s)", r.policy.name(), r.time_to_ip.p99),
            color,
            false,
        ));
    }
    legend(&mut out, TOP + PANEL_H - 50.0, &entries);

    let top = TOP + PANEL_H + GAP;
    let x_max = runs
        .iter()
        .filter_map(|r| r.series.last().map(|s| s.t))
        .fold(0.0, f64::max);
    let y_max = runs
        .iter()
        .flat_map(|r| r.series.iter().map(|s| s.held.max(s.used)))
        .max()
        .unwrap_or(0) as f64;
    let held = Panel {
        top,
        x_max: nice(x_max),
        y_max: nice(y_max),
    };
    held.axes(
        &mut out,
        "addresses held on ENIs (solid) and used by pods (dashed)",
        "simulated seconds",
        "addresses",
    );
    let mut entries = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let h: Vec<(f64, f64)> = r.series.iter().map(|s| (s.t, s.held as f64)).collect();
        let u: Vec<(f64, f64)> = r.series.iter().map(|s| (s.t, s.used as f64)).collect();
        held.line(&mut out, &h, color, false);
        held.line(&mut out, &u, color, true);
        entries.push((format!("{} held", r.policy.name()), color, false));
        entries.push((format!("{} used", r.policy.name()), color, true));
    }
    legend(&mut out, top + 10.0, &entries);
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(3.2), 5.0);
        assert_eq!(nice(17.0), 20.0);
        assert_eq!(nice(100.0), 100.0);
        assert_eq!(nice(101.0), 200.0);
    }

    #[test]
    fn escapes_text() {
        assert_eq!(escape("a<b & c>"), "a&lt;b &amp; c&gt;");
    }
}
