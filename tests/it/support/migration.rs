//! What the migration tests between the real VPC Resource Controller and winipam share: the
//! VPC Resource Controller serving m5.large nodes, winipam installed beside it, the README's
//! switch, and the checks of the pods' addresses.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::e2e::{Env, PodState, TestNode, assert_distinct, eventually};
use super::vpcrc::{VpcRc, give_kubelet_status, set_windows_ipam};
use super::winipam::{Winipam, samples};
use crate::webhook_support::{FileCerts, register, register_default_chart, wait_until_injecting};

/// The IP resource of an m5.large (10 addresses per ENI, the primary one not a pod's), as both
/// controllers advertise it.
pub const CAPACITY_M5_LARGE: &str = "9";

/// Windows pods on every node (see [`Env::create_windows_pods`]), waited for their addresses.
pub async fn create_and_wait(
    env: &Env,
    nodes: &[TestNode],
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let names = env.create_windows_pods(nodes, prefix, count).await;
    env.wait_annotated(&names, Duration::from_secs(60)).await;
    names
}

/// Every live pod's address is distinct and a secondary address of its node's ENI.
pub async fn assert_addresses(env: &Env, nodes: &[TestNode]) -> BTreeMap<String, PodState> {
    let pods = env.pods().await;
    let live: Vec<&PodState> = pods.values().collect();
    assert_distinct(&live);
    for node in nodes {
        let on_eni = env.eni_ips(&node.eni_id).await;
        for pod in live.iter().filter(|p| p.node == node.name) {
            if let Some(addr) = pod.address() {
                assert!(
                    on_eni.contains(&addr),
                    "{} has {addr}, not on {}'s ENI: {on_eni:?}",
                    pod.name,
                    node.name
                );
            }
        }
    }
    pods
}

/// The VPC Resource Controller serving `count` m5.large nodes (with its IPAM on), capacity
/// advertised and its mutating webhook called.
pub async fn vpcrc_serving(env: &Env, count: usize) -> (VpcRc, Vec<TestNode>) {
    set_windows_ipam(&env.client, true).await;
    let mut nodes = Vec::new();
    for i in 0..count {
        let node = env.add_node(&format!("n{i}"), "m5.large").await;
        give_kubelet_status(&env.client, &node.name).await;
        nodes.push(node);
    }
    let vpcrc = VpcRc::start(env).await;
    env.wait_capacity(&nodes, CAPACITY_M5_LARGE, Duration::from_secs(60))
        .await;
    wait_until_injecting(&env.pods_api()).await;
    (vpcrc, nodes)
}

/// winipam installed beside it, webhooks served and registered; returns once it waits
/// (`winipam_blocked` 1). Keep the certificates as long as winipam runs.
pub async fn install_winipam(env: &Env) -> (Winipam, FileCerts) {
    let installed = start_winipam(env).await;
    wait_blocked(&installed.0, 1.0).await;
    installed
}

/// winipam started with its webhooks served and registered, as the chart installs it.
pub async fn start_winipam(env: &Env) -> (Winipam, FileCerts) {
    let (winipam, certs) = start_serving(env).await;
    register(env, winipam.webhook_addr().port(), &certs.ca).await;
    (winipam, certs)
}

/// winipam started with its webhooks served and registered as the default chart renders them
/// (`annotationGuard=policy`: its validating webhook is the hand-back guard alone).
pub async fn start_winipam_default_chart(env: &Env) -> (Winipam, FileCerts) {
    let (winipam, certs) = start_serving(env).await;
    register_default_chart(env, winipam.webhook_addr().port(), &certs.ca).await;
    (winipam, certs)
}

/// winipam running with its webhooks served on a port of its own, not yet registered.
async fn start_serving(env: &Env) -> (Winipam, FileCerts) {
    let certs = FileCerts::new();
    let mut options = env.options("winipam-0");
    certs.serve(&mut options);
    let mut winipam = Winipam::start(&options);
    winipam.wait_ready(Duration::from_secs(30)).await;
    (winipam, certs)
}

/// `helm uninstall`: the process stops and its webhook configurations go.
pub async fn uninstall_winipam(env: &Env, winipam: &mut Winipam) {
    winipam.stop().await;
    let _ = Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .delete("winipam", &DeleteParams::default())
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .delete("winipam", &DeleteParams::default())
        .await;
}

pub async fn wait_blocked(winipam: &Winipam, value: f64) {
    eventually("winipam_blocked", Duration::from_secs(20), || async {
        match winipam.metric("winipam_blocked", &[]).await {
            Some(v) if v == value => Ok(()),
            other => Err(format!("winipam_blocked {other:?}, want {value}")),
        }
    })
    .await;
}

/// The switch, exactly as the README says; returns once winipam resumed.
pub async fn switch_off(env: &Env, winipam: &Winipam) {
    patch_windows_ipam(env, false).await;
    wait_blocked(winipam, 0.0).await;
}

/// `kubectl -n kube-system patch configmap amazon-vpc-cni --type merge` of
/// `enable-windows-ipam`, as the README has it.
pub async fn patch_windows_ipam(env: &Env, enabled: bool) {
    let patch = json!({"data": {"enable-windows-ipam": enabled.to_string()}});
    Api::<ConfigMap>::namespaced(env.client.clone(), "kube-system")
        .patch(
            "amazon-vpc-cni",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("patch kube-system/amazon-vpc-cni");
}

/// How often the apiserver called the webhooks named `hooks` for `operation`, by outcome
/// (`rejected` "false" / "true"), from its own metrics.
pub async fn webhook_calls(env: &Env, hooks: &[String], operation: &str) -> BTreeMap<String, f64> {
    let text = env.cp.kubectl_ok(&["get", "--raw", "/metrics"]).await;
    let mut out = BTreeMap::new();
    for (labels, value) in samples(
        &text,
        "apiserver_admission_webhook_admission_duration_seconds_count",
    ) {
        let label = |k: &str| {
            labels
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if hooks.contains(&label("name")) && label("operation") == operation {
            *out.entry(label("rejected")).or_default() += value;
        }
    }
    out
}
