//! The real VPC Resource Controller (`github.com/aws/amazon-vpc-resource-controller-k8s`, built
//! by `scripts/vpcrc.sh`) against the end-to-end tests' apiserver and moto, set up as on EKS so
//! far as the Windows IPAM goes (../shared/VPC-RC.md has the facts behind each step):
//!
//! - its CRDs (CNINode, SecurityGroupPolicy) and the VPC CNI's ENIConfig CRD installed;
//! - a ServiceAccount `kube-system/eks-vpc-resource-controller` (one of the identities it writes
//!   the annotation as on a self-managed install), bound to cluster-admin;
//! - an IMDSv2 stand-in on loopback (it asks the instance metadata for its region and account
//!   and refuses to start without them), and EC2 through [`Ec2Proxy`] to moto;
//! - no `--role-arn` (its STS endpoint cannot be redirected), `AWS_CA_BUNDLE` not passed (its
//!   SDK set-up fails with it);
//! - its webhooks' serving certificate in `$TMPDIR/k8s-webhook-server/serving-certs`, and its
//!   mutating and validating webhooks registered with the apiserver under EKS's names, with a
//!   URL to 127.0.0.1:9443 and the CA.
//!
//! Its webhook (9443) and health (61779) ports are fixed in its code: one runs at a time, which
//! the end-to-end tests' turn ([`Env::new`]) already ensures. The process runs under the same
//! watchdog as winipam's, so it stops with the test however the test ends.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use winipam::webhook::ca::{ServingNames, issue_serving, new_ca};

use super::e2e::Env;
use super::ec2_proxy::Ec2Proxy;
use super::loopback_http::{LoopbackServer, Request, Response};
use super::moto::REGION;
use super::winipam::{Watched, free_port, http_get, spawn_watched, watched_command};

pub const WEBHOOK_PORT: u16 = 9443;
pub const HEALTH_PORT: u16 = 61779;
/// The ServiceAccount it runs as: `system:serviceaccount:kube-system:eks-vpc-resource-controller`.
pub const SERVICE_ACCOUNT: &str = "eks-vpc-resource-controller";
pub const CLUSTER_NAME: &str = "winipam-e2e";
/// The names EKS gives its webhook configurations.
const MUTATING: &str = "vpc-resource-mutating-webhook";
const VALIDATING: &str = "vpc-resource-validating-webhook";
/// The account moto's resources belong to.
const ACCOUNT: &str = "123456789012";

pub struct VpcRc {
    watchdog: Child,
    lifeline: Option<std::process::ChildStdin>,
    pid: u32,
    log_path: PathBuf,
    exited: bool,
    /// Its `TMPDIR` (webhook certificates) and `HOME`.
    _dir: tempfile::TempDir,
    _imds: LoopbackServer,
    pub proxy: Ec2Proxy,
    /// From the start of the process until its health endpoint and webhook port answered.
    pub startup: Duration,
}

impl VpcRc {
    /// Installs what it needs, starts it for the VPC of `env` (a node must exist, which made the
    /// VPC) and waits until its health endpoint and webhook server answer. Panics with what to
    /// run when the binary is not built.
    pub async fn start(env: &Env) -> VpcRc {
        Self::start_with(env, Ec2Proxy::start(env.moto)).await
    }

    /// As [`Self::start`], with EC2 reached through `proxy`.
    pub async fn start_with(env: &Env, proxy: Ec2Proxy) -> VpcRc {
        let (bin, crds) = built();
        for port in [WEBHOOK_PORT, HEALTH_PORT] {
            assert!(
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok(),
                "port {port} is taken: the VPC Resource Controller needs it (another one running?)"
            );
        }
        let vpc_id = env
            .vpc_id()
            .await
            .expect("add a node before starting the VPC Resource Controller (it needs the VPC id)");
        install_crds(env, &crds).await;
        let kubeconfig = service_account(env).await;

        let dir = tempfile::Builder::new()
            .prefix("winipam-vpcrc-")
            .tempdir()
            .expect("create the VPC Resource Controller's directory");
        let ca = new_ca(SystemTime::now()).expect("a webhook CA");
        let names = ServingNames {
            dns: vec!["localhost".to_owned()],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        };
        let serving = issue_serving(&ca, &names, SystemTime::now()).expect("a serving certificate");
        let certs = dir.path().join("k8s-webhook-server/serving-certs");
        std::fs::create_dir_all(&certs).expect("create the serving-certs directory");
        std::fs::write(certs.join("tls.crt"), &serving.cert).expect("write tls.crt");
        std::fs::write(certs.join("tls.key"), &serving.key).expect("write tls.key");

        let imds = LoopbackServer::start("imds", Arc::new(imds_answer));
        let logs = std::env::temp_dir().join("winipam-e2e-logs");
        std::fs::create_dir_all(&logs).expect("create the log directory");
        let log_path = logs.join(format!("{}-vpc-resource-controller.log", env.namespace));
        let _ = std::fs::remove_file(&log_path);
        let mut command = watched_command(&log_path, &bin);
        command
            .args(["--cluster-name", CLUSTER_NAME, "--vpc-id", &vpc_id])
            .args(["--aws-region", REGION, "--metrics-bind-address", "0"])
            // Its default introspection address is a fixed port on every interface.
            .arg("--introspect-bind-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .env("TMPDIR", dir.path())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_ENDPOINT_URL_EC2", proxy.endpoint())
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url());
        let started = Instant::now();
        let Watched {
            watchdog,
            lifeline,
            pid,
        } = spawn_watched(command, "VPC Resource Controller");
        let mut vpcrc = VpcRc {
            watchdog,
            lifeline,
            pid,
            log_path,
            exited: false,
            _dir: dir,
            _imds: imds,
            proxy,
            startup: Duration::ZERO,
        };
        vpcrc.wait_serving(Duration::from_secs(60)).await;
        vpcrc.startup = started.elapsed();
        register_webhooks(&env.client, &ca.cert).await;
        vpcrc
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn wait_serving(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let health = SocketAddr::from((Ipv4Addr::LOCALHOST, HEALTH_PORT));
        let webhook = SocketAddr::from((Ipv4Addr::LOCALHOST, WEBHOOK_PORT));
        loop {
            let healthy = tokio::task::spawn_blocking(move || http_get(health, "/healthz"))
                .await
                .ok()
                .and_then(Result::ok)
                .is_some_and(|(status, _)| status == 200);
            if healthy && TcpStream::connect_timeout(&webhook, Duration::from_secs(1)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.watchdog.try_wait() {
                self.exited = true;
                panic!(
                    "the VPC Resource Controller exited ({status}) during startup; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the VPC Resource Controller does not serve within {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops it (SIGKILL: nothing to hand over) and unregisters its webhooks.
    pub async fn stop(&mut self, client: &Client) {
        self.kill();
        unregister_webhooks(client).await;
    }

    fn kill(&mut self) {
        if self.exited {
            return;
        }
        drop(self.lifeline.take());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.watchdog.wait();
        self.exited = true;
    }
}

impl Drop for VpcRc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "---- VPC Resource Controller log ({}), last 200 lines ----\n{}\n---- end ----",
                self.log_path.display(),
                lines[lines.len().saturating_sub(200)..].join("\n")
            );
        }
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// The binary and CRD directory `scripts/vpcrc.sh env` exports.
fn built() -> (PathBuf, PathBuf) {
    const HOW: &str = "run `scripts/vpcrc.sh build` and `eval \"$(scripts/vpcrc.sh env)\"` \
                       (scripts/test.sh does both)";
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{name} is not set: {HOW}"))
    };
    let (bin, crds) = (var("WINIPAM_VPCRC_BIN"), var("WINIPAM_VPCRC_CRDS"));
    assert!(
        bin.is_file(),
        "{} (the VPC Resource Controller) is missing: {HOW}",
        bin.display()
    );
    assert!(crds.is_dir(), "{} is missing: {HOW}", crds.display());
    (bin, crds)
}

/// Its own CRDs and the VPC CNI's ENIConfig, which it watches.
async fn install_crds(env: &Env, crds: &Path) {
    let installed = env.cp.install_crds(crds).await;
    assert!(
        installed
            .iter()
            .any(|c| c == "cninodes.vpcresources.k8s.aws"),
        "the VPC Resource Controller's CRDs: {installed:?}"
    );
    let dir = env.cp.dir().join("eniconfig-crd");
    std::fs::create_dir_all(&dir).expect("create the ENIConfig CRD directory");
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "eniconfigs.crd.k8s.amazonaws.com"},
        "spec": {
            "group": "crd.k8s.amazonaws.com",
            "scope": "Cluster",
            "names": {"kind": "ENIConfig", "listKind": "ENIConfigList", "plural": "eniconfigs", "singular": "eniconfig"},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    });
    std::fs::write(
        dir.join("eniconfig.json"),
        serde_json::to_vec_pretty(&crd).expect("JSON"),
    )
    .expect("write the ENIConfig CRD");
    assert_eq!(
        env.cp.install_crds(&dir).await,
        ["eniconfigs.crd.k8s.amazonaws.com"]
    );
}

/// Its ServiceAccount, bound to cluster-admin; returns a kubeconfig acting as it.
async fn service_account(env: &Env) -> PathBuf {
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": SERVICE_ACCOUNT},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": "kube-system"}],
    });
    let path = env.cp.dir().join("vpcrc-rbac.json");
    std::fs::write(&path, serde_json::to_vec(&binding).expect("JSON")).expect("write the binding");
    env.cp.apply_yaml_file(&path).await;
    env.cp
        .write_service_account_kubeconfig("kube-system", SERVICE_ACCOUNT)
        .await
}

/// IMDSv2 as the SDK asks it: a session token, the region, the identity document.
fn imds_answer(request: Request) -> Response {
    match (request.method.as_str(), request.path.as_str()) {
        ("PUT", "/latest/api/token") => Response::new(200, "text/plain", "winipam-imds-token"),
        ("GET", "/latest/meta-data/placement/region") => Response::new(200, "text/plain", REGION),
        ("GET", "/latest/dynamic/instance-identity/document") => {
            let document = json!({
                "accountId": ACCOUNT,
                "region": REGION,
                "availabilityZone": super::e2e::AZ,
                "instanceId": "i-0000000000vpcrc",
                "instanceType": "m5.large",
                "imageId": super::moto::AMI,
                "privateIp": "10.255.0.10",
                "architecture": "x86_64",
                "version": "2017-09-30",
            });
            Response::new(200, "application/json", document.to_string())
        }
        _ => Response::new(404, "text/plain", "not found"),
    }
}

/// Its webhooks as EKS registers them (rules of its config/webhook/manifests.yaml, failure
/// policy Ignore), pointing at 127.0.0.1:9443.
async fn register_webhooks(client: &Client, ca: &[u8]) {
    // ByteString serializes as base64, as the API wants `caBundle`.
    let ca = serde_json::to_value(k8s_openapi::ByteString(ca.to_vec())).expect("JSON");
    let hook = |name: &str, path: &str, resource: &str, operations: &[&str]| -> Value {
        json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": format!("https://127.0.0.1:{WEBHOOK_PORT}{path}"), "caBundle": ca},
            "failurePolicy": "Ignore",
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": 10,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": operations, "resources": [resource]}],
        })
    };
    let mutating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": MUTATING},
        "webhooks": [hook("mpod.vpc.k8s.aws", "/mutate-v1-pod", "pods", &["CREATE"])],
    });
    let validating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": VALIDATING},
        "webhooks": [
            hook("vnode.vpc.k8s.aws", "/validate-v1-node", "nodes", &["UPDATE"]),
            hook("vpod.vpc.k8s.aws", "/validate-v1-pod", "pods", &["CREATE", "UPDATE"]),
        ],
    });
    let params = PatchParams::apply("winipam-tests").force();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(MUTATING, &params, &Patch::Apply(&mutating))
        .await
        .expect("register the VPC Resource Controller's mutating webhook");
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(VALIDATING, &params, &Patch::Apply(&validating))
        .await
        .expect("register the VPC Resource Controller's validating webhooks");
}

/// Removes its webhook registrations (a stopped one would still be called, and time out).
pub async fn unregister_webhooks(client: &Client) {
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(MUTATING, &DeleteParams::default())
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .delete(VALIDATING, &DeleteParams::default())
        .await;
}

/// Sets `kube-system/amazon-vpc-cni`'s `enable-windows-ipam` (the README's switch).
pub async fn set_windows_ipam(client: &Client, enabled: bool) {
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "amazon-vpc-cni", "namespace": "kube-system"},
        "data": {"enable-windows-ipam": enabled.to_string()},
    });
    Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .patch(
            "amazon-vpc-cni",
            &PatchParams::apply("winipam-tests").force(),
            &Patch::Apply(&cm),
        )
        .await
        .expect("apply kube-system/amazon-vpc-cni");
}

/// A kubelet-like status (capacity, allocatable, Ready): the VPC Resource Controller advertises
/// its resource only into a Node whose `status.capacity` exists.
pub async fn give_kubelet_status(client: &Client, node: &str) {
    let resources = json!({"cpu": "2", "memory": "8Gi", "pods": "110"});
    let patch = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test node"}],
    }});
    Api::<Node>::all(client.clone())
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("set the status of node {node}: {e}"));
}
