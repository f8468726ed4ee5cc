//! Shared setup of the Kubernetes adapter tests: a namespace of their own on the shared control
//! plane, the CRDs of `crds/`, and the RBAC of the rendered base (`deploy/kustomize/base`) bound
//! to a ServiceAccount that the code under test acts as.
//!
//! The RBAC files name namespace `winipam-system` and objects `winipam`; each test environment
//! applies them with its own namespace and object names substituted, so tests running in
//! parallel on one control plane do not share a ServiceAccount or a binding. Resource names inside
//! the rules (`resourceNames`: the Lease, the ConfigMaps) are kept as written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, NodeSpec, Pod, PodSpec};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::support::controlplane::ControlPlane;

pub struct K8sEnv {
    /// The controller's namespace for this test.
    pub ns: String,
    pub admin: Client,
    /// Acts as the ServiceAccount: exactly the RBAC of the rendered base.
    pub controller: Client,
}

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The base's RBAC with `winipam-system` replaced by `ns` and every object named `winipam` (or
/// `winipam-webhook-certs`) renamed `account` (or `account-webhook-certs`): the ServiceAccount,
/// the roles, the bindings and their references.
fn rbac_for(ns: &str, account: &str) -> String {
    let base = repo_path("deploy/kustomize/base");
    let files: Vec<PathBuf> = crate::support::deploy::BASE_RBAC_FILES
        .iter()
        .map(|f| base.join(f))
        .collect();
    let mut out = String::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read an RBAC file");
        let text = text.replace("winipam-system", ns);
        for line in text.lines() {
            let renamed = match line.trim_end().split_once("name: winipam") {
                Some((prefix, rest))
                    if (prefix.trim().is_empty() || prefix.trim() == "-")
                        && (rest.is_empty() || rest == "-webhook-certs") =>
                {
                    format!("{prefix}name: {account}{rest}")
                }
                _ => line.to_string(),
            };
            out.push_str(&renamed);
            out.push('\n');
        }
        out.push_str("---\n");
    }
    out
}

impl K8sEnv {
    pub async fn new(prefix: &str) -> K8sEnv {
        let cp = ControlPlane::shared().await;
        cp.install_crds(&repo_path("crds")).await;
        let ns = cp.create_namespace(prefix).await;
        let service_account = format!("winipam-{ns}");
        let rbac = rbac_for(&ns, &service_account);
        let file = cp.dir().join(format!("rbac-{ns}.yaml"));
        std::fs::write(&file, rbac).expect("write the RBAC file");
        let applied = cp.apply_yaml_file(&file).await;
        assert!(
            applied.iter().any(|o| o.starts_with("clusterrole.")),
            "{applied:?}"
        );
        let admin = cp.admin_client().await;
        let controller = cp.service_account_client(&ns, &service_account).await;
        let env = K8sEnv {
            ns,
            admin,
            controller,
        };
        env.wait_for_rbac().await;
        env
    }

    /// The authorizer learns new bindings from a watch: wait until they apply.
    async fn wait_for_rbac(&self) {
        let nodes: Api<Node> = Api::all(self.controller.clone());
        let config: Api<ConfigMap> = Api::namespaced(self.controller.clone(), &self.ns);
        for _ in 0..100 {
            let cluster_wide = nodes.list(&ListParams::default().limit(1)).await.is_ok();
            let namespaced = match config.get("winipam").await {
                Ok(_) => true,
                Err(kube::Error::Api(s)) => s.code == 404,
                Err(_) => false,
            };
            if cluster_wide && namespaced {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the RBAC of the rendered base did not take effect within 10 s");
    }

    pub fn unique(&self, what: &str) -> String {
        format!("{}-{what}", self.ns)
    }

    pub async fn create_pod(&self, pod: Pod) -> Pod {
        Api::<Pod>::namespaced(self.admin.clone(), &self.ns)
            .create(&PostParams::default(), &pod)
            .await
            .expect("create a pod")
    }

    pub async fn create_node(&self, node: Node) -> Node {
        Api::<Node>::all(self.admin.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create a node")
    }
}

pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

pub fn string_map(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn node(name: &str, labels: &[(&str, &str)], provider_id: Option<&str>) -> Node {
    Node {
        metadata: ObjectMeta {
            labels: Some(string_map(labels)),
            ..meta(name)
        },
        spec: Some(NodeSpec {
            provider_id: provider_id.map(String::from),
            ..NodeSpec::default()
        }),
        ..Node::default()
    }
}

/// A pod bound to `node` (or unbound), with the given annotations (`None`: no map at all).
pub fn pod(name: &str, node: Option<&str>, annotations: Option<&[(&str, &str)]>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            annotations: annotations.map(string_map),
            ..meta(name)
        },
        spec: Some(PodSpec {
            node_name: node.map(String::from),
            containers: vec![Container {
                name: "app".to_owned(),
                image: Some("mcr.microsoft.com/windows/nanoserver:ltsc2022".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// Waits up to `secs` for the next item of a stream.
pub async fn next_within<S: futures::Stream + Unpin>(stream: &mut S, secs: u64) -> S::Item {
    tokio::time::timeout(Duration::from_secs(secs), futures::StreamExt::next(stream))
        .await
        .unwrap_or_else(|_| panic!("nothing within {secs} s"))
        .expect("the stream does not end")
}

#[test]
fn rbac_rewrite_renames_objects_but_not_resource_names() {
    let text = rbac_for("t-1", "winipam-t-1");
    assert!(!text.contains("winipam-system"));
    // Object names only: the label app.kubernetes.io/name keeps its value.
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().trim_start_matches("- ") == "name: winipam")
    );
    assert!(text.contains("name: winipam-t-1\n"));
    assert!(text.contains("namespace: t-1\n"));
    assert!(text.contains("resourceNames: [\"winipam\"]"));
    assert!(text.contains("resourceNames: [\"amazon-vpc-cni\"]"));
}
