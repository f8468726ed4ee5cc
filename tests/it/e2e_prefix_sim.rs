//! End to end on a real control plane, with EC2 simulated inside the controller process
//! (`winipam run --simulated-ec2`): three Nitro nodes in prefix mode and 60 pods. Every pod gets
//! a `<ip>/32` annotation inside a /28 that its node's NodeAddressPool lists, no address twice,
//! and each node advertises `(ipv4_per_interface - 1) * 16`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, NodeSpec, Pod, PodSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::process::{Child, Command};
use winipam::crd::NodeAddressPool;

use crate::support::controlplane::ControlPlane;

const ANNOTATION: &str = "vpc.amazonaws.com/PrivateIPv4Address";
const INSTANCE_TYPE: &str = "m5.large";
/// m5.large: 10 IPv4 addresses per ENI, so 9 /28s.
const PREFIX_CAPACITY: &str = "144";

// ----- the controller as a process, on a control plane of its own -----

struct Controller {
    child: Child,
    log: PathBuf,
}

/// The controller's namespace in `deploy/rbac`.
const NAMESPACE: &str = "winipam-system";

impl Controller {
    /// Creates the controller's namespace, applies `deploy/rbac` and the CRDs, and starts
    /// `winipam run` with `args` (after `--namespace` and a free metrics port).
    async fn start(cp: &ControlPlane, args: &[&str]) -> Controller {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let existing = cp.kubectl(&["get", "namespace", NAMESPACE]).await;
        if !existing.status.success() {
            cp.kubectl_ok(&["create", "namespace", NAMESPACE]).await;
        }
        cp.install_crds(&root.join("crds")).await;
        cp.kubectl_ok(&[
            "apply",
            "-f",
            root.join("deploy/rbac").to_str().expect("utf-8"),
        ])
        .await;
        let kubeconfig = cp
            .write_service_account_kubeconfig(NAMESPACE, "winipam")
            .await;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let log = cp.dir().join(format!(
            "winipam-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).expect("create the controller's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_winipam"))
            .arg("run")
            .args(["--namespace", NAMESPACE, "--metrics-addr", "127.0.0.1:0"])
            .args(["--log-format", "text", "--log-level", "info,winipam=debug"])
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start winipam run");
        Controller { child, log }
    }

    /// What the controller has logged so far (for failure messages).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running?
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn node(name: &str, instance: u32) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: labels(&[
                ("kubernetes.io/os", "windows"),
                ("node.kubernetes.io/instance-type", INSTANCE_TYPE),
            ]),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(format!("aws:///us-west-2a/i-{instance:017x}")),
            ..NodeSpec::default()
        }),
        ..Node::default()
    }
}

fn pod(name: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_string()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("mcr.microsoft.com/windows/nanoserver:ltsc2022".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

#[tokio::test]
async fn prefix_mode_with_simulated_ec2_gives_every_pod_a_32_in_its_nodes_prefixes() {
    // A control plane of its own: the controller manages every Windows node it sees.
    let cp = ControlPlane::start().await;
    let client = cp.admin_client().await;
    let mut controller = Controller::start(&cp, &["--simulated-ec2"]).await;
    Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("winipam".into()),
                    ..ObjectMeta::default()
                },
                data: labels(&[("enable-windows-prefix-delegation", "true")]),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("create the winipam ConfigMap");

    let nodes: Vec<String> = (1..=3).map(|i| format!("win-{i}")).collect();
    let node_api = Api::<Node>::all(client.clone());
    for (i, name) in nodes.iter().enumerate() {
        node_api
            .create(&PostParams::default(), &node(name, i as u32 + 1))
            .await
            .expect("create a node");
    }
    let namespace = cp.create_namespace("e2e-prefix").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    for i in 0..60 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("p{i:02}"), &nodes[i % 3]),
        )
        .await
        .expect("create a pod");
    }

    // Every pod annotated, and every node's pool status listing the /28s its pods use.
    let pools = Api::<NodeAddressPool>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    let (annotations, prefixes) = loop {
        assert!(
            controller.running(),
            "the controller exited:\n{}",
            controller.log()
        );
        let listed = pods.list(&Default::default()).await.expect("list pods");
        let annotations: Vec<(String, String)> = listed
            .items
            .iter()
            .filter_map(|p| {
                let value = p.metadata.annotations.as_ref()?.get(ANNOTATION)?;
                Some((p.spec.as_ref()?.node_name.clone()?, value.clone()))
            })
            .collect();
        let mut prefixes: BTreeMap<String, Vec<Ipv4Net>> = BTreeMap::new();
        for name in &nodes {
            if let Ok(pool) = pools.get(name).await {
                let listed = pool
                    .status
                    .map(|s| s.prefixes)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                prefixes.insert(name.clone(), listed);
            }
        }
        let covered = annotations.iter().all(|(node, value)| {
            let ip: Option<Ipv4Addr> = value.strip_suffix("/32").and_then(|v| v.parse().ok());
            ip.is_some_and(|ip| {
                prefixes
                    .get(node)
                    .is_some_and(|nets| nets.iter().any(|n| n.contains(&ip)))
            })
        });
        if annotations.len() == 60 && covered {
            break (annotations, prefixes);
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s: {} of 60 pods annotated, prefixes {prefixes:?}; controller log:\n{}",
            annotations.len(),
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let distinct: BTreeSet<&String> = annotations.iter().map(|(_, v)| v).collect();
    assert_eq!(
        distinct.len(),
        60,
        "an address given twice: {annotations:?}"
    );
    for (node, value) in &annotations {
        assert!(value.ends_with("/32"), "{node}: {value}");
    }
    for name in &nodes {
        let nets = &prefixes[name];
        assert!(!nets.is_empty(), "{name} has no /28");
        assert!(
            nets.iter().all(|n| n.prefix_len() == 28),
            "{name}: {nets:?}"
        );
        // 20 pods + warm 1 on each node: two /28s.
        assert_eq!(nets.len(), 2, "{name}: {nets:?}");
        let capacity = node_api
            .get(name)
            .await
            .expect("get node")
            .status
            .and_then(|s| s.capacity)
            .and_then(|c| c.get(ANNOTATION).map(|q| q.0.clone()));
        assert_eq!(capacity.as_deref(), Some(PREFIX_CAPACITY), "{name}");
    }
    // The /28s of different nodes never overlap.
    let all: Vec<Ipv4Net> = prefixes.values().flatten().copied().collect();
    let unique: BTreeSet<Ipv4Net> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "{prefixes:?}");
}
