//! What the deployment tests share: helm (built by `scripts/helm.sh`), the chart and the rendered
//! kustomize base, YAML documents, and a control plane of their own.
//!
//! The deployment tests get their own control plane because what they install is cluster-wide
//! and fixed by name (ClusterRole `winipam`, the webhook configurations, the Lease) and because
//! the winipam they run manages every Windows node it sees: sharing would make them and other
//! tests step on each other.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::controlplane::ControlPlane;

/// The namespace of the rendered base (and of the chart's README install command).
pub const NAMESPACE: &str = "winipam-system";
/// The ServiceAccount the chart creates.
pub const SERVICE_ACCOUNT: &str = "winipam";

/// The files of the rendered base that make winipam's identity and permissions (in namespace
/// `winipam-system`): apply them to run winipam, or a test standing in for it, with exactly the
/// RBAC of an installation.
pub const BASE_RBAC_FILES: [&str; 5] = [
    "serviceaccount.yaml",
    "clusterrole.yaml",
    "clusterrolebinding.yaml",
    "role.yaml",
    "rolebinding.yaml",
];

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("deploy/helm/winipam")
}

pub fn base_dir() -> PathBuf {
    repo_root().join("deploy/kustomize/base")
}

/// The tool at `$var`, which `scripts/SCRIPT env` exports.
fn tool_bin(var: &str, script: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "{var} is not set: run the tests with scripts/test.sh, or first \
             `eval \"$(scripts/{script} env)\"`"
        ),
    }
}

pub fn helm_bin() -> PathBuf {
    tool_bin("WINIPAM_HELM_BIN", "helm.sh")
}

pub fn promtool_bin() -> PathBuf {
    tool_bin("WINIPAM_PROMTOOL_BIN", "promtool.sh")
}

/// `helm template winipam deploy/helm/winipam --namespace NAMESPACE ARGS...`; panics with helm's
/// errors unless it succeeds.
pub fn helm_template(namespace: &str, args: &[&str]) -> String {
    let output = Command::new(helm_bin())
        .arg("template")
        .arg("winipam")
        .arg(chart_dir())
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .expect("run helm");
    assert!(
        output.status.success(),
        "helm template {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("helm prints UTF-8")
}

/// The objects of a multi-document YAML stream (empty documents skipped).
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .filter(|doc| !doc.is_null())
        .collect()
}

pub fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// A manifest written for `kubectl -f`: its path (`Deref`), in a temporary directory of its own
/// that goes when this does, so the tests leave nothing in the temporary directory.
pub struct TempManifest {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TempManifest {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

/// Writes `yaml` to a file of its own in a fresh temporary directory, for `kubectl -f`.
pub fn write_temp(file_name: &str, yaml: &str) -> TempManifest {
    let dir = tempfile::Builder::new()
        .prefix("winipam-deploy-")
        .tempdir()
        .expect("create a temporary directory");
    let path = dir.path().join(file_name);
    std::fs::write(&path, yaml).expect("write the manifest");
    TempManifest { path, _dir: dir }
}

/// The control plane of the deployment tests, started once: the NodeAddressPool CRD and the
/// minimal CRDs of the optional kinds the chart renders (cert-manager, prometheus-operator)
/// are installed, and the base's namespace exists.
pub async fn control_plane() -> &'static ControlPlane {
    static CP: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();
    CP.get_or_init(|| async {
        let cp = ControlPlane::start().await;
        let ours = cp.install_crds(&repo_root().join("crds")).await;
        assert_eq!(ours, ["nodeaddresspools.winipam.dev"]);
        let fixtures = cp
            .install_crds(&repo_root().join("tests/fixtures/deploy/crds"))
            .await;
        assert_eq!(fixtures.len(), 4, "fixture CRDs: {fixtures:?}");
        cp.apply_yaml_file(&base_dir().join("namespace.yaml")).await;
        cp
    })
    .await
}

/// Applies the RBAC of the rendered base ([`BASE_RBAC_FILES`]) and its namespace: winipam's
/// ServiceAccount in `winipam-system` and everything bound to it.
pub async fn apply_base_rbac(cp: &ControlPlane) {
    cp.apply_yaml_file(&base_dir().join("namespace.yaml")).await;
    for file in BASE_RBAC_FILES {
        cp.apply_yaml_file(&base_dir().join(file)).await;
    }
}
