//! The alerts evaluated: `promtool test rules deploy/monitoring/alerts_test.yaml` feeds each alert
//! the series winipam's /metrics exposes, scraped from two replicas, in the situation it is for
//! and in a near miss. The same tests run against the rules of the chart's PrometheusRule, and
//! every alert has both a firing and a quiet case.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::deploy::{documents, helm_template, kind, promtool_bin, repo_root};

fn monitoring_dir() -> std::path::PathBuf {
    repo_root().join("deploy/monitoring")
}

/// Runs promtool with `args` in `dir`; panics with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) {
    let output = Command::new(promtool_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {} in {}:\n{}{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn yaml_file(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

#[test]
fn every_alert_fires_when_it_should_and_only_then() {
    let dir = monitoring_dir();
    promtool(&dir, &["check", "rules", "alerts.yaml"]);
    promtool(&dir, &["test", "rules", "alerts_test.yaml"]);

    let rules = yaml_file(&dir.join("alerts.yaml"));
    let alerts: BTreeSet<&str> = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    let tests = yaml_file(&dir.join("alerts_test.yaml"));
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for test in tests["tests"].as_array().expect("tests") {
        for case in test["alert_rule_test"].as_array().expect("alert_rule_test") {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected == 0 {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    for alert in &alerts {
        assert!(firing.contains(*alert), "no test makes {alert} fire");
        assert!(quiet.contains(*alert), "no test keeps {alert} quiet");
    }
}

#[test]
fn the_chart_prometheus_rule_passes_the_same_tests() {
    let yaml = helm_template(
        "winipam-system",
        &["--set", "monitoring.prometheusRule.enabled=true"],
    );
    let rule = documents(&yaml)
        .into_iter()
        .find(|o| kind(o) == "PrometheusRule")
        .expect("a PrometheusRule");
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let rules = serde_yaml_ng::to_string(&rule["spec"]).expect("the rules as YAML");
    std::fs::write(scratch.path().join("alerts.yaml"), rules).expect("write the rules");
    std::fs::copy(
        monitoring_dir().join("alerts_test.yaml"),
        scratch.path().join("alerts_test.yaml"),
    )
    .expect("copy the tests");
    promtool(scratch.path(), &["test", "rules", "alerts_test.yaml"]);
}
