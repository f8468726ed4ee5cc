//! The manifests against a real apiserver: what the chart renders (default values, cert-manager
//! with monitoring, an existing issuer) and the kustomize base pass `kubectl apply
//! --dry-run=server` (admission, schemas, strict field validation), and the committed base is
//! exactly what `scripts/render-manifests.sh` renders from the chart today.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::controlplane::ControlPlane;
use crate::support::deploy::{
    self, base_dir, chart_dir, documents, helm_template, kind, name, repo_root, write_temp,
};

/// `kubectl apply --dry-run=server` of every object in `yaml`; panics with kubectl's errors
/// unless each object is accepted.
async fn dry_run(cp: &ControlPlane, label: &str, yaml: &str) {
    let objects = documents(yaml);
    assert!(!objects.is_empty(), "{label}: nothing rendered");
    let path = write_temp(&format!("{label}.yaml"), yaml);
    let path = path.to_str().expect("a UTF-8 path");
    let output = cp
        .kubectl(&["apply", "--dry-run=server", "--validate=strict", "-f", path])
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{label}: the apiserver refused the manifests:\n{}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let accepted = stdout
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    assert_eq!(
        accepted,
        objects.len(),
        "{label}: not every object was accepted:\n{stdout}"
    );
}

fn kinds(yaml: &str) -> Vec<String> {
    let mut kinds: Vec<String> = documents(yaml).iter().map(|o| kind(o).to_owned()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

#[tokio::test]
async fn the_default_chart_passes_a_server_dry_run() {
    let cp = deploy::control_plane().await;
    let namespace = cp.create_namespace("deploy-helm-default").await;
    let yaml = helm_template(&namespace, &["--include-crds"]);
    for expected in [
        "ClusterRole",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "MutatingWebhookConfiguration",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        // Only the hand-back guard (the policy guards the annotation itself).
        "ValidatingWebhookConfiguration",
    ] {
        assert!(kinds(&yaml).iter().any(|k| k == expected), "no {expected}");
    }
    // Self-managed certificates by default: no cert-manager, no operator kinds.
    for absent in ["Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"] {
        assert!(
            !kinds(&yaml).iter().any(|k| k == absent),
            "{absent} rendered"
        );
    }
    dry_run(cp, "helm-default", &yaml).await;
}

#[tokio::test]
async fn the_chart_with_cert_manager_and_monitoring_passes_a_server_dry_run() {
    let cp = deploy::control_plane().await;
    let namespace = cp.create_namespace("deploy-helm-cm").await;
    let yaml = helm_template(
        &namespace,
        &[
            "--set",
            "webhook.certMode=certManager",
            "--set",
            "annotationGuard=webhook",
            "--set",
            "monitoring.serviceMonitor.enabled=true",
            "--set",
            "monitoring.serviceMonitor.labels.release=prometheus",
            "--set",
            "monitoring.prometheusRule.enabled=true",
            "--set",
            "monitoring.dashboard.enabled=true",
            "--set",
            "config.enable-windows-prefix-delegation=true",
            "--set",
            "config.windows-warm-prefix-target=1",
            "--set",
            "ec2.mutatingRate=2.5",
            "--set",
            "ec2.describeBurst=40",
            "--set",
            "region=us-west-2",
            "--set",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111122223333:role/winipam",
        ],
    );
    let kinds = kinds(&yaml);
    for expected in [
        "Certificate",
        "Issuer",
        "ServiceMonitor",
        "PrometheusRule",
        "ValidatingWebhookConfiguration",
    ] {
        assert!(kinds.iter().any(|k| k == expected), "no {expected}");
    }
    assert!(!kinds.iter().any(|k| k == "ValidatingAdmissionPolicy"));
    let objects = documents(&yaml);
    let dashboard = objects
        .iter()
        .find(|o| kind(o) == "ConfigMap" && name(o) == "winipam-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = dashboard["data"]["winipam.json"].as_str().expect("JSON");
    let parsed: serde_json::Value = serde_json::from_str(json).expect("the dashboard parses");
    assert_eq!(parsed["uid"], "winipam");
    dry_run(cp, "helm-cert-manager", &yaml).await;
}

#[tokio::test]
async fn the_chart_with_an_existing_issuer_passes_a_server_dry_run() {
    let cp = deploy::control_plane().await;
    let namespace = cp.create_namespace("deploy-helm-issuer").await;
    let yaml = helm_template(
        &namespace,
        &[
            "--set",
            "webhook.certMode=certManager",
            "--set",
            "webhook.certManager.issuerRef.kind=ClusterIssuer",
            "--set",
            "webhook.certManager.issuerRef.name=corp-ca",
        ],
    );
    let objects = documents(&yaml);
    assert!(!objects.iter().any(|o| kind(o) == "Issuer"));
    let certificate = objects
        .iter()
        .find(|o| kind(o) == "Certificate")
        .expect("a Certificate");
    assert_eq!(certificate["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "corp-ca");
    dry_run(cp, "helm-issuer", &yaml).await;
}

#[tokio::test]
async fn the_kustomize_base_passes_a_server_dry_run() {
    let cp = deploy::control_plane().await;
    let base = base_dir();
    let yaml = cp
        .kubectl_ok(&["kustomize", base.to_str().expect("a UTF-8 path")])
        .await;
    let objects = documents(&yaml);
    assert!(objects.iter().any(|o| kind(o) == "Namespace"));
    assert!(
        objects
            .iter()
            .any(|o| kind(o) == "CustomResourceDefinition")
    );
    assert!(objects.iter().any(|o| kind(o) == "Deployment"));
    assert!(
        objects
            .iter()
            .any(|o| kind(o) == "ValidatingWebhookConfiguration"),
        "the hand-back guard"
    );
    dry_run(cp, "kustomize-base", &yaml).await;
}

fn yaml_files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .map(|path| {
            let name = path.file_name().expect("a file name").to_string_lossy();
            let text = std::fs::read_to_string(&path).expect("read a manifest");
            (name.into_owned(), text)
        })
        .collect()
}

#[test]
fn the_committed_kustomize_base_is_a_fresh_render_of_the_chart() {
    let out = tempfile::tempdir().expect("a temporary directory");
    let output = std::process::Command::new(repo_root().join("scripts/render-manifests.sh"))
        .arg(out.path())
        .env("WINIPAM_HELM_BIN", deploy::helm_bin())
        .output()
        .expect("run scripts/render-manifests.sh");
    assert!(
        output.status.success(),
        "render-manifests.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let fresh = yaml_files(out.path());
    let committed = yaml_files(&base_dir());
    assert!(fresh.contains_key("kustomization.yaml"));
    assert_eq!(
        committed.keys().collect::<Vec<_>>(),
        fresh.keys().collect::<Vec<_>>(),
        "the files of deploy/kustomize/base differ from a fresh render: run scripts/render-manifests.sh"
    );
    for (file, text) in &fresh {
        assert!(
            committed[file] == *text,
            "deploy/kustomize/base/{file} differs from a fresh render of the chart: run \
             scripts/render-manifests.sh and commit the result"
        );
    }
}

#[test]
fn the_chart_ships_the_generated_crd_through_a_link() {
    let link = chart_dir().join("crds/nodeaddresspool.yaml");
    let meta = std::fs::symlink_metadata(&link).expect("the chart's CRD");
    assert!(
        meta.file_type().is_symlink(),
        "{} is a copy",
        link.display()
    );
    assert_eq!(
        std::fs::canonicalize(&link).expect("the link resolves"),
        std::fs::canonicalize(repo_root().join("crds/nodeaddresspool.yaml")).expect("the CRD")
    );
}

#[test]
fn the_monitoring_files_exist_once_in_the_chart() {
    for file in ["alerts.yaml", "dashboard.json"] {
        let link = repo_root().join("deploy/monitoring").join(file);
        let meta = std::fs::symlink_metadata(&link).expect("deploy/monitoring file");
        assert!(
            meta.file_type().is_symlink(),
            "{} is a copy",
            link.display()
        );
        assert_eq!(
            std::fs::canonicalize(&link).expect("the link resolves"),
            std::fs::canonicalize(chart_dir().join("files").join(file)).expect("the chart file")
        );
    }
}
