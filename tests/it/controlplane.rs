//! The real control plane behaves as the controller will see it in a cluster: Windows nodes and
//! pods bound to them are watched, stale writes conflict, invalid objects and missing RBAC are
//! refused, CRDs install, and a control plane of its own leaves nothing behind.

use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Node, NodeSpec, Pod, PodSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::support::controlplane::ControlPlane;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn status_code(result: Result<impl std::fmt::Debug, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn windows_node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            labels: Some(
                [
                    ("kubernetes.io/os", "windows"),
                    ("node.kubernetes.io/instance-type", "m5.large"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ),
            ..meta(name)
        },
        spec: Some(NodeSpec {
            provider_id: Some("aws:///us-west-2a/i-0123456789abcdef0".to_owned()),
            ..NodeSpec::default()
        }),
        ..Node::default()
    }
}

fn pod_on(name: &str, node: &str) -> Pod {
    Pod {
        metadata: meta(name),
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

/// Waits for the first object the watcher reports as applied.
async fn first_applied<K>(api: Api<K>, config: watcher::Config) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stream = watcher(api, config).applied_objects();
    let mut stream = std::pin::pin!(stream);
    tokio::time::timeout(Duration::from_secs(20), stream.try_next())
        .await
        .expect("the watcher reports within 20 s")
        .expect("the watcher does not fail")
        .expect("the watcher stream does not end")
}

#[tokio::test]
async fn watcher_sees_a_windows_node_and_a_pod_bound_to_it() {
    let cp = ControlPlane::shared().await;
    let client = cp.admin_client().await;
    let namespace = cp.create_namespace("cp-watch").await;
    let node_name = format!("{namespace}-node");

    let nodes = Api::<Node>::all(client.clone());
    let pods = Api::<Pod>::namespaced(client, &namespace);
    // Watch before creating, so the watcher's initial list or a later event must carry them.
    let node_seen = tokio::spawn(first_applied(
        nodes.clone(),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
    ));
    let pod_seen = tokio::spawn(first_applied(pods.clone(), watcher::Config::default()));

    nodes
        .create(&PostParams::default(), &windows_node(&node_name))
        .await
        .expect("create the node");
    pods.create(&PostParams::default(), &pod_on("app", &node_name))
        .await
        .expect("create the pod");

    let node = node_seen.await.expect("node watcher task");
    let labels = node.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("kubernetes.io/os").map(String::as_str),
        Some("windows")
    );
    assert_eq!(
        node.spec.and_then(|s| s.provider_id).as_deref(),
        Some("aws:///us-west-2a/i-0123456789abcdef0")
    );
    let pod = pod_seen.await.expect("pod watcher task");
    assert_eq!(pod.metadata.name.as_deref(), Some("app"));
    assert_eq!(
        pod.spec.and_then(|s| s.node_name).as_deref(),
        Some(node_name.as_str())
    );
}

#[tokio::test]
async fn a_replace_with_a_stale_resource_version_conflicts() {
    let cp = ControlPlane::shared().await;
    let namespace = cp.create_namespace("cp-conflict").await;
    let maps = Api::<ConfigMap>::namespaced(cp.admin_client().await, &namespace);
    let created = maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("state"),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("create");

    let mut first = created.clone();
    first.data = Some([("owner".to_owned(), "first".to_owned())].into());
    maps.replace("state", &PostParams::default(), &first)
        .await
        .expect("the first replace carries the current resourceVersion");

    let mut stale = created;
    stale.data = Some([("owner".to_owned(), "second".to_owned())].into());
    assert_eq!(
        status_code(maps.replace("state", &PostParams::default(), &stale).await),
        409
    );
}

#[tokio::test]
async fn an_invalid_object_is_unprocessable() {
    let cp = ControlPlane::shared().await;
    let namespace = cp.create_namespace("cp-invalid").await;
    let pods = Api::<Pod>::namespaced(cp.admin_client().await, &namespace);
    // A pod needs at least one container.
    let mut pod = pod_on("empty", "nowhere");
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.clear();
    }
    assert_eq!(
        status_code(pods.create(&PostParams::default(), &pod).await),
        422
    );
}

#[tokio::test]
async fn a_service_account_has_exactly_the_rights_bound_to_it() {
    let cp = ControlPlane::shared().await;
    let namespace = cp.create_namespace("cp-rbac").await;
    let account = cp.service_account_client(&namespace, "reader").await;
    let pods = Api::<Pod>::namespaced(account, &namespace);
    assert_eq!(status_code(pods.list(&ListParams::default()).await), 403);

    let admin = cp.admin_client().await;
    let role = Role {
        metadata: meta("pod-reader"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".to_owned()]),
            verbs: vec!["list".to_owned()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("create the role");
    let binding = RoleBinding {
        metadata: meta("pod-reader"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: "pod-reader".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: "reader".to_owned(),
            namespace: Some(namespace.clone()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, &namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the binding");

    // RBAC reads bindings from an informer: allow it a moment to see the new one.
    let mut listed = pods.list(&ListParams::default()).await;
    for _ in 0..50 {
        if listed.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        listed = pods.list(&ListParams::default()).await;
    }
    assert!(listed.is_ok(), "the bound role allows listing: {listed:?}");
    // ... and nothing more.
    assert_eq!(
        status_code(pods.delete("any", &Default::default()).await),
        403
    );

    // A process given the account's kubeconfig file acts as the account, in its namespace.
    let kubeconfig = cp
        .write_service_account_kubeconfig(&namespace, "reader")
        .await;
    let whoami = cp
        .kubectl_with(
            &kubeconfig,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        )
        .await;
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        format!("system:serviceaccount:{namespace}:reader")
    );
    let listed = cp.kubectl_with(&kubeconfig, &["get", "pods"]).await;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let denied = cp.kubectl_with(&kubeconfig, &["get", "configmaps"]).await;
    assert!(String::from_utf8_lossy(&denied.stderr).contains("forbidden"));
}

const TEST_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.winipam.io
spec:
  group: test.winipam.io
  scope: Cluster
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"#;

#[tokio::test]
async fn install_crds_establishes_every_crd_of_a_directory() {
    let cp = ControlPlane::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("widget.yaml"), TEST_CRD).expect("write the CRD");
    std::fs::write(dir.path().join("README.md"), "not a manifest").expect("write a non-manifest");
    assert_eq!(
        cp.install_crds(dir.path()).await,
        vec!["widgets.test.winipam.io".to_owned()]
    );

    // Established means served: a custom object can be created at once.
    let resource = ApiResource {
        group: "test.winipam.io".to_owned(),
        version: "v1".to_owned(),
        api_version: "test.winipam.io/v1".to_owned(),
        kind: "Widget".to_owned(),
        plural: "widgets".to_owned(),
    };
    let widgets = Api::<DynamicObject>::all_with(cp.admin_client().await, &resource);
    let widget =
        DynamicObject::new("small", &resource).data(serde_json::json!({ "spec": { "size": 3 } }));
    let created = widgets
        .create(&PostParams::default(), &widget)
        .await
        .expect("create a widget");
    assert_eq!(created.data["spec"]["size"], 3);
}

#[tokio::test]
async fn install_crds_installs_the_crds_of_the_repository() {
    let cp = ControlPlane::shared().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    // Count the CRDs the directory declares, independently of kubectl.
    let declared = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                .map(|text| text.matches("kind: CustomResourceDefinition").count())
                .sum::<usize>()
        })
        .unwrap_or(0);
    assert!(declared >= 1, "crds/ declares the NodeAddressPool CRD");
    let installed = cp.install_crds(&dir).await;
    assert_eq!(installed.len(), declared, "installed {installed:?}");
    assert!(
        installed
            .iter()
            .any(|n| n.contains("nodeaddresspools.winipam.dev")),
        "installed {installed:?}"
    );
    let client: Client = cp.admin_client().await;
    let crds = Api::<CustomResourceDefinition>::all(client);
    for name in &installed {
        let crd = crds.get(name).await.expect("the CRD exists");
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is established");
    }
}

#[tokio::test]
async fn kubectl_and_apply_yaml_file_use_the_admin_credential() {
    let cp = ControlPlane::shared().await;
    let namespace = cp.create_namespace("cp-apply").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: {namespace}\ndata:\n  key: value\n"
    );
    std::fs::write(&file, manifest).expect("write the manifest");
    assert_eq!(
        cp.apply_yaml_file(&file).await,
        vec!["configmap/applied".to_owned()]
    );
    let value = cp
        .kubectl_ok(&[
            "get",
            "configmap",
            "applied",
            "-n",
            &namespace,
            "-o",
            "jsonpath={.data.key}",
        ])
        .await;
    assert_eq!(value, "value");
    let whoami = cp
        .kubectl_ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"])
        .await;
    assert!(whoami.contains("system:masters"), "admin groups: {whoami}");
}

#[tokio::test]
async fn a_control_plane_of_its_own_stops_on_drop() {
    let cp = ControlPlane::start().await;
    let namespace = cp.create_namespace("own").await;
    let readyz = cp.kubectl_ok(&["get", "--raw", "/readyz"]).await;
    assert_eq!(readyz, "ok");
    let namespaces = Api::<Namespace>::all(cp.admin_client().await);
    assert!(namespaces.get_opt(&namespace).await.expect("get").is_some());

    let pids = cp.pids();
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver: {pids:?}");
    let dir = cp.dir().to_owned();
    drop(cp);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is gone"
        );
    }
    assert!(!dir.exists(), "{} is removed", dir.display());
}
