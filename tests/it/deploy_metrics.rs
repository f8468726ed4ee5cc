//! Every metric the alerts and the dashboard name exists: a real `winipam run`, with the
//! rendered RBAC's ServiceAccount on a real apiserver and moto as EC2, manages a Windows node
//! backed by a moto instance, and its `/metrics` is compared with the names the monitoring files
//! reference. A proxy refuses the first Assigns (`RequestLimitExceeded`, which the EC2 client
//! retries itself, then `PrivateIpAddressLimitExceeded`, which reaches the controller), so the
//! throttling and allocation-failure series exist too.

mod fault_proxy;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::PostParams;

use crate::support::deploy::{self, NAMESPACE, SERVICE_ACCOUNT, chart_dir};
use crate::support::moto::{self, Moto};
use crate::support::winipam::{Winipam, WinipamOptions};
use fault_proxy::FaultProxy;

/// Every `winipam_*` name in the expressions of the alerts and the dashboard.
fn referenced_metrics() -> BTreeSet<String> {
    let files = chart_dir().join("files");
    let alerts = std::fs::read_to_string(files.join("alerts.yaml")).expect("alerts.yaml");
    let dashboard = std::fs::read_to_string(files.join("dashboard.json")).expect("dashboard");
    let mut exprs: Vec<String> = Vec::new();
    let rules: serde_json::Value = serde_yaml_ng::from_str(&alerts).expect("alerts parse");
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("an expr").to_owned());
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard parses");
    collect_exprs(&dashboard, &mut exprs);
    let mut names = BTreeSet::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(start) = rest.find("winipam_") {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

/// The `expr` of every target and the `query`/`definition` of every template variable.
fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v.as_str()) {
                    ("expr" | "definition", Some(s)) => out.push(s.to_owned()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Names of the series in a Prometheus text exposition.
fn series_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_metric_the_alerts_and_dashboard_use_is_exported() {
    let referenced = referenced_metrics();
    for expected in [
        "winipam_subnet_available_ips",
        "winipam_pods_waiting_for_ip",
        "winipam_ec2_throttled_total",
        "winipam_nodes",
        "winipam_blocked",
        "winipam_leader",
        "winipam_node_capacity_ips",
        "winipam_node_ips",
        "winipam_pod_ip_assign_seconds_bucket",
        "winipam_ec2_requests_total",
    ] {
        assert!(referenced.contains(expected), "{expected} is not monitored");
    }

    let cp = deploy::control_plane().await;
    deploy::apply_base_rbac(cp).await;
    let kubeconfig = cp
        .write_service_account_kubeconfig(NAMESPACE, SERVICE_ACCOUNT)
        .await;

    // A Windows node backed by a moto instance.
    let moto = Moto::shared();
    let sdk = moto.sdk();
    let subnet = moto::create_subnet(&sdk, "10.77.0.0/16", "10.77.0.0/20", "us-east-1a").await;
    let instance = moto::run_instances(&sdk, &subnet, "m5.large", 1)
        .await
        .pop()
        .expect("an instance");
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "deploy-metrics-win",
            "labels": {"kubernetes.io/os": "windows", "node.kubernetes.io/instance-type": "m5.large"},
        },
        "spec": {"providerID": format!("aws:///us-east-1a/{instance}")},
    }))
    .expect("a node");
    Api::<Node>::all(cp.admin_client().await)
        .create(&PostParams::default(), &node)
        .await
        .expect("create the node");

    let upstream: SocketAddr = moto
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("moto's address");
    let faults = vec![
        (503, "RequestLimitExceeded"),
        (400, "PrivateIpAddressLimitExceeded"),
    ];
    let proxy = FaultProxy::start(upstream, "AssignPrivateIpAddresses", faults).await;

    let mut winipam = Winipam::start(&WinipamOptions {
        namespace: NAMESPACE.to_owned(),
        kubeconfig,
        ec2_endpoint: proxy.endpoint(),
        region: moto::REGION.to_owned(),
        pod_name: "winipam-deploy-metrics".to_owned(),
        resync_period: "60s".to_owned(),
        lease_duration: "15s".to_owned(),
        renew_deadline: "10s".to_owned(),
        retry_period: "2s".to_owned(),
        log_level: "info".to_owned(),
        webhooks: false,
        extra_args: Vec::new(),
        extra_env: Vec::new(),
    });
    winipam.wait_ready(Duration::from_secs(60)).await;

    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        let text = winipam.metrics().await;
        let exported = series_names(&text);
        if referenced.is_subset(&exported) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let exported = series_names(&text);
    let missing: Vec<&String> = referenced.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "metrics the monitoring files name but winipam does not export: {missing:?}\n\
         /metrics:\n{text}"
    );
    // Both faults were served.
    assert!(proxy.seen() >= 2, "{} Assign requests", proxy.seen());
    // The node really is managed: its series carry its name.
    assert!(
        text.contains("winipam_node_capacity_ips{node=\"deploy-metrics-win\"} 9"),
        "{text}"
    );
    assert!(text.contains(&format!("subnet=\"{subnet}\"")), "{text}");
    winipam.stop().await;
}
