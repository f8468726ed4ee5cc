//! The world of the end-to-end tests: a control plane of their own (the controller watches every
//! Node of a cluster, so it must not see the Nodes of other tests), moto behind the EC2 adapter,
//! and per test a namespace holding the RBAC of `deploy/kustomize/base`, the ServiceAccount the
//! controller runs as, its ConfigMap and Lease.
//!
//! Tests that run a controller take turns ([`Env::new`] holds a lock for the test's life): a
//! controller manages every Windows Node it sees, so two at once would manage each other's.
//! Each test starts by removing what earlier ones left that is cluster-wide (Nodes,
//! NodeAddressPools, `kube-system/amazon-vpc-cni`); everything else lives in its namespace, or
//! in its own VPC in moto (one subnet per node: moto draws addresses at random from a subnet's
//! CIDR without looking at other ENIs, so two nodes sharing a subnet could get the same one).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_ec2::types::{InstanceType, Tenancy};
use ipnet::Ipv4Net;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, NodeSpec, Pod, PodSpec};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard, OnceCell};
use winipam::crd::NodeAddressPool;

use super::controlplane::ControlPlane;
use super::moto::{AMI, Moto};
use super::winipam::{Winipam, WinipamOptions};

pub const ANNOTATION: &str = "vpc.amazonaws.com/PrivateIPv4Address";
pub const AZ: &str = "us-east-1a";
/// Lease timings of the tests' controllers: a replacement leads within 4 s of a crash.
pub const LEASE_SECONDS: u64 = 4;

/// The control plane of the end-to-end tests, started by the first of them.
pub async fn control_plane() -> &'static ControlPlane {
    static CP: OnceCell<ControlPlane> = OnceCell::const_new();
    CP.get_or_init(|| async {
        let cp = ControlPlane::start().await;
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        assert_eq!(
            cp.install_crds(&crds).await,
            ["nodeaddresspools.winipam.dev"]
        );
        cp
    })
    .await
}

pub use crate::common::eventually;

/// A Windows node: a moto instance and its Node object.
#[derive(Debug, Clone)]
pub struct TestNode {
    pub name: String,
    pub instance_id: String,
    pub eni_id: String,
    pub subnet_cidr: Ipv4Net,
}

/// What a test sees of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    pub name: String,
    pub uid: String,
    pub node: String,
    pub annotation: Option<String>,
}

impl PodState {
    /// The address of the annotation (`10.1.2.3/20` -> 10.1.2.3).
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.annotation.as_deref()?.split('/').next()?.parse().ok()
    }
}

pub struct Env {
    pub cp: &'static ControlPlane,
    pub client: Client,
    pub namespace: String,
    /// The `winipam` ServiceAccount's kubeconfig.
    pub kubeconfig: PathBuf,
    pub moto: &'static Moto,
    pub ec2: aws_sdk_ec2::Client,
    vpc: Mutex<Option<(String, u8)>>,
    next_subnet: AtomicU32,
    _turn: MutexGuard<'static, ()>,
}

impl Env {
    /// Waits for this test's turn, clears what earlier tests left cluster-wide, and prepares a
    /// namespace with the controller's RBAC.
    pub async fn new(prefix: &str) -> Env {
        static TURN: Mutex<()> = Mutex::const_new(());
        let turn = TURN.lock().await;
        let cp = control_plane().await;
        let client = cp.admin_client().await;
        clear_cluster(&client).await;
        let namespace = cp.create_namespace(prefix).await;
        super::rbac::apply_rbac(cp, &namespace).await;
        let kubeconfig = cp
            .write_service_account_kubeconfig(&namespace, "winipam")
            .await;
        let moto = Moto::shared();
        Env {
            cp,
            client,
            namespace,
            kubeconfig,
            moto,
            ec2: moto.sdk(),
            vpc: Mutex::new(None),
            next_subnet: AtomicU32::new(0),
            _turn: turn,
        }
    }

    /// Options of a controller replica named `name`, with short test timings.
    pub fn options(&self, name: &str) -> WinipamOptions {
        WinipamOptions {
            namespace: self.namespace.clone(),
            kubeconfig: self.kubeconfig.clone(),
            ec2_endpoint: self.moto.endpoint(),
            region: super::moto::REGION.to_owned(),
            pod_name: name.to_owned(),
            resync_period: "3s".into(),
            lease_duration: format!("{LEASE_SECONDS}s"),
            renew_deadline: "3s".into(),
            retry_period: "1s".into(),
            log_level: "info,winipam=debug,kube_client=debug".into(),
            webhooks: false,
            extra_args: Vec::new(),
            extra_env: Vec::new(),
        }
    }

    /// Starts a controller replica and waits until it is ready.
    pub async fn start(&self, name: &str) -> Winipam {
        let mut winipam = Winipam::start(&self.options(name));
        winipam.wait_ready(Duration::from_secs(30)).await;
        winipam
    }

    // ----- configuration -----

    /// Creates or replaces the controller's ConfigMap (`winipam`) with `data`.
    pub async fn set_config(&self, data: &[(&str, &str)]) {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "winipam"},
            "data": data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        let params = PatchParams::apply("winipam-tests").force();
        api.patch("winipam", &params, &Patch::Apply(&cm))
            .await
            .expect("apply the ConfigMap");
    }

    // ----- nodes -----

    /// A moto instance of `instance_type` in a subnet of its own, and its Windows Node.
    pub async fn add_node(&self, suffix: &str, instance_type: &str) -> TestNode {
        let (subnet_id, subnet_cidr) = self.new_subnet().await;
        let run = self
            .ec2
            .run_instances()
            .image_id(AMI)
            .instance_type(InstanceType::from(instance_type))
            .subnet_id(&subnet_id)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("RunInstances");
        let instance = &run.instances()[0];
        let instance_id = instance.instance_id().expect("instance id").to_owned();
        let eni_id = instance
            .network_interfaces()
            .iter()
            .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
            .and_then(|n| n.network_interface_id())
            .expect("primary ENI")
            .to_owned();
        let name = format!("{}-{suffix}", self.namespace);
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    ("kubernetes.io/os".to_owned(), "windows".to_owned()),
                    (
                        "node.kubernetes.io/instance-type".to_owned(),
                        instance_type.to_owned(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(format!("aws:///{AZ}/{instance_id}")),
                ..NodeSpec::default()
            }),
            ..Node::default()
        };
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create the Node");
        TestNode {
            name,
            instance_id,
            eni_id,
            subnet_cidr,
        }
    }

    /// A /21 in this test's VPC (a /16 of its own): room for the benchmark's 20 nodes.
    async fn new_subnet(&self) -> (String, Ipv4Net) {
        static NEXT_VPC: AtomicU32 = AtomicU32::new(100);
        let mut vpc = self.vpc.lock().await;
        if vpc.is_none() {
            let octet = u8::try_from(NEXT_VPC.fetch_add(1, Ordering::Relaxed))
                .expect("fewer than 156 end-to-end tests");
            let out = self
                .ec2
                .create_vpc()
                .cidr_block(format!("10.{octet}.0.0/16"))
                .instance_tenancy(Tenancy::Default)
                .send()
                .await
                .expect("CreateVpc");
            let id = out.vpc().and_then(|v| v.vpc_id()).expect("vpc id");
            *vpc = Some((id.to_owned(), octet));
        }
        let (vpc_id, octet) = vpc.clone().expect("the VPC");
        let index = self.next_subnet.fetch_add(1, Ordering::Relaxed);
        assert!(index < 32, "at most 32 nodes per test");
        let cidr: Ipv4Net = format!("10.{octet}.{}.0/21", index * 8)
            .parse()
            .expect("a CIDR");
        let out = self
            .ec2
            .create_subnet()
            .vpc_id(vpc_id)
            .cidr_block(cidr.to_string())
            .availability_zone(AZ)
            .send()
            .await
            .expect("CreateSubnet");
        let id = out.subnet().and_then(|s| s.subnet_id()).expect("subnet id");
        (id.to_owned(), cidr)
    }

    /// The id of this test's VPC in moto, once a node made it.
    pub async fn vpc_id(&self) -> Option<String> {
        self.vpc.lock().await.as_ref().map(|(id, _)| id.clone())
    }

    /// Secondary addresses of an ENI, as moto has them now.
    pub async fn eni_ips(&self, eni_id: &str) -> Vec<Ipv4Addr> {
        crate::common::eni_ips(&self.ec2, eni_id).await
    }

    /// Waits until the ENI holds exactly `count` secondary addresses.
    pub async fn wait_eni_len(&self, node: &TestNode, count: usize, timeout: Duration) {
        eventually(
            &format!("{} addresses on {}'s ENI", count, node.name),
            timeout,
            || async {
                let ips = self.eni_ips(&node.eni_id).await;
                if ips.len() == count {
                    Ok(())
                } else {
                    Err(format!("{} addresses: {ips:?}", ips.len()))
                }
            },
        )
        .await
    }

    /// Waits until each node's `status.capacity` of the IP resource is `capacity`.
    pub async fn wait_capacity(&self, nodes: &[TestNode], capacity: &str, timeout: Duration) {
        for node in nodes {
            eventually("capacity", timeout, || async {
                match self.node_capacity(&node.name).await {
                    Some(c) if c == capacity => Ok(()),
                    other => Err(format!("{}: {other:?}", node.name)),
                }
            })
            .await;
        }
    }

    /// Creates `per_node` Windows pods on each node, named `{prefix}-{node index}-{i}`, and
    /// checks that a mutating webhook gave each the IP resource; returns their names.
    pub async fn create_windows_pods(
        &self,
        nodes: &[TestNode],
        prefix: &str,
        per_node: usize,
    ) -> Vec<String> {
        let mut names = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            for i in 0..per_node {
                let name = format!("{prefix}-{n}-{i}");
                let pod = self
                    .pods_api()
                    .create(&PostParams::default(), &windows_pod(&name, &node.name))
                    .await
                    .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
                assert!(
                    crate::webhook_support::has_ip_resource(&pod),
                    "{name} admitted with the IP resource"
                );
                names.push(name);
            }
        }
        names
    }

    /// Waits until every pod named is annotated; returns all pods of the namespace.
    pub async fn wait_annotated(
        &self,
        names: &[String],
        timeout: Duration,
    ) -> BTreeMap<String, PodState> {
        eventually("pods annotated", timeout, || async {
            let pods = self.pods().await;
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| pods.get(*n).is_none_or(|p| p.annotation.is_none()))
                .collect();
            if missing.is_empty() {
                Ok(pods)
            } else {
                Err(format!("not annotated: {missing:?}"))
            }
        })
        .await
    }

    /// Merge-patches the Node (labels, `spec.unschedulable`, taints), as an admin would.
    pub async fn patch_node(&self, node: &str, patch: Value) {
        Api::<Node>::all(self.client.clone())
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patch node {node}: {e}"));
    }

    /// The node's `status.capacity["vpc.amazonaws.com/PrivateIPv4Address"]`.
    pub async fn node_capacity(&self, node: &str) -> Option<String> {
        let node = Api::<Node>::all(self.client.clone())
            .get(node)
            .await
            .expect("get the Node");
        node.status?.capacity?.get(ANNOTATION).map(|q| q.0.clone())
    }

    pub async fn pool(&self, node: &str) -> Option<NodeAddressPool> {
        Api::<NodeAddressPool>::all(self.client.clone())
            .get_opt(node)
            .await
            .expect("get the NodeAddressPool")
    }

    // ----- pods -----

    pub fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A pod bound to `node` (no scheduler runs: `spec.nodeName` is set at creation).
    pub async fn create_pod(&self, name: &str, node: &str) -> PodState {
        let pod = pod_on(name, node);
        let pod = self
            .pods_api()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
        pod_state(&pod).expect("a bound pod")
    }

    /// A bound pod that already carries an address annotation (written by an earlier
    /// controller, or by hand).
    pub async fn create_annotated_pod(&self, name: &str, node: &str, value: &str) -> PodState {
        let mut pod = pod_on(name, node);
        pod.metadata.annotations =
            Some(BTreeMap::from([(ANNOTATION.to_owned(), value.to_owned())]));
        let pod = self
            .pods_api()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
        pod_state(&pod).expect("a bound pod")
    }

    /// Deletes a pod at once (grace 0: what the kubelet does once the containers stopped).
    pub async fn delete_pod(&self, name: &str) {
        match self
            .pods_api()
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("delete pod {name}: {e}"),
        }
    }

    /// Sets a pod's phase through the status subresource (no kubelet runs).
    pub async fn set_pod_phase(&self, name: &str, phase: &str) {
        let patch = json!({"status": {"phase": phase}});
        self.pods_api()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("set the phase of pod {name}: {e}"));
    }

    /// Every pod of the test's namespace, by name.
    pub async fn pods(&self) -> BTreeMap<String, PodState> {
        self.pods_api()
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items
            .iter()
            .filter_map(pod_state)
            .map(|p| (p.name.clone(), p))
            .collect()
    }

    /// Waits for an Event of `reason` about the object named `name` in `namespace`.
    pub async fn wait_event(
        &self,
        namespace: &str,
        name: &str,
        reason: &str,
        timeout: Duration,
    ) -> Event {
        eventually(&format!("a {reason} Event"), timeout, || async {
            self.events_about(namespace, name)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
                .ok_or_else(|| "none yet".to_string())
        })
        .await
    }

    /// Events (events.k8s.io) in `namespace` about the object named `name`.
    pub async fn events_about(&self, namespace: &str, name: &str) -> Vec<Event> {
        Api::<Event>::namespaced(self.client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }
}

pub fn pod_on(name: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_owned()),
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

/// A bound pod that selects Windows nodes, as a Windows workload does (the mutating webhooks,
/// winipam's and the VPC Resource Controller's, key on the node selector).
pub fn windows_pod(name: &str, node: &str) -> Pod {
    let mut pod = pod_on(name, node);
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_selector = Some([("kubernetes.io/os".to_owned(), "windows".to_owned())].into());
    }
    pod
}

pub fn pod_state(pod: &Pod) -> Option<PodState> {
    Some(PodState {
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        node: pod.spec.as_ref()?.node_name.clone()?,
        annotation: pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
            .cloned(),
    })
}

/// Removes the cluster-wide objects earlier tests left: Nodes, NodeAddressPools (no garbage
/// collector runs here) and the VPC CNI's ConfigMap.
async fn clear_cluster(client: &Client) {
    let nodes = Api::<Node>::all(client.clone());
    for node in nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes")
    {
        if let Some(name) = node.metadata.name {
            let _ = nodes.delete(&name, &DeleteParams::default()).await;
        }
    }
    let pools = Api::<NodeAddressPool>::all(client.clone());
    for pool in pools
        .list(&ListParams::default())
        .await
        .expect("list pools")
    {
        if let Some(name) = pool.metadata.name {
            let _ = pools.delete(&name, &DeleteParams::default()).await;
        }
    }
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "kube-system");
    let _ = cms.delete("amazon-vpc-cni", &DeleteParams::default()).await;
    // Webhooks an earlier test registered would judge this test's pods.
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete("winipam", &DeleteParams::default())
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .delete("winipam", &DeleteParams::default())
        .await;
    super::vpcrc::unregister_webhooks(client).await;
}

/// Distinct addresses: panics naming the pods that share one.
pub fn assert_distinct(pods: &[&PodState]) {
    let mut seen: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for p in pods {
        if let Some(addr) = p.address()
            && let Some(other) = seen.insert(addr, &p.name)
        {
            panic!("{addr} is on two live pods: {other} and {}", p.name);
        }
    }
}
