//! The webhooks as the real kube-apiserver calls them: Windows pods (by nodeSelector, node
//! affinity, RuntimeClass; in kube-system too) get the IP resource and others do not; the
//! address annotation is refused to everyone but the controller's ServiceAccount (and the VPC
//! Resource Controller while its Windows IPAM is on), with a message that says why.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use winipam::webhook::validate::IP_ANNOTATION;
use winipam::webhook::vpcrc::VPC_RESOURCE_CONTROLLER_USERS;

use crate::support::controlplane::ControlPlane;
use crate::support::deploy::write_temp;
use crate::support::e2e::eventually;
use crate::webhook_support::*;

/// Lets the controller's ServiceAccount create, read and patch pods in `namespace`.
async fn grant_pod_writes(admin: &Client, controller: &Client, namespace: &str) {
    let meta = ObjectMeta {
        name: Some("winipam-pods".to_owned()),
        namespace: Some(namespace.to_owned()),
        ..ObjectMeta::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".to_owned()]),
            verbs: ["create", "get", "patch"].map(String::from).to_vec(),
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: "winipam-pods".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: SERVICE_ACCOUNT.to_owned(),
            namespace: Some(NAMESPACE.to_owned()),
            ..Subject::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("create the Role");
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the RoleBinding");
    // The apiserver's RBAC authorizer sees a new binding through its informer, a moment later:
    // wait until a get of a missing pod is answered 404 rather than 403.
    let pods = Api::<Pod>::namespaced(controller.clone(), namespace);
    eventually(
        "the RoleBinding takes effect",
        Duration::from_secs(10),
        || async {
            match pods.get("no-such-pod").await {
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

fn annotation_patch(value: Option<&str>) -> Patch<serde_json::Value> {
    Patch::Merge(json!({ "metadata": { "annotations": { IP_ANNOTATION: value } } }))
}

fn annotation(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(IP_ANNOTATION)
        .cloned()
}

#[tokio::test]
async fn webhooks_through_the_apiserver() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin_client().await;
    install_controller_rbac(&cp).await;
    // The server runs with exactly the RBAC of the rendered base.
    let controller = cp.service_account_client(NAMESPACE, SERVICE_ACCOUNT).await;
    let server =
        RunningServer::start(controller.clone(), 0, self_managed(), &[CONTROLLER_USER]).await;
    register_configurations(&admin, server.addr.port()).await;

    let namespace = cp.create_namespace("webhook").await;
    let pods = Api::<Pod>::namespaced(admin.clone(), &namespace);
    wait_until_injecting(&pods).await;
    wait_until_guarding(&pods).await;

    // --- the IP resource -----------------------------------------------------------------
    let runtime_class: RuntimeClass = serde_json::from_value(json!({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": { "name": "windows-2022" },
        "handler": "runhcs-wcow-process",
        "scheduling": { "nodeSelector": { "kubernetes.io/os": "windows" } }
    }))
    .expect("a RuntimeClass");
    Api::<RuntimeClass>::all(admin.clone())
        .create(&PostParams::default(), &runtime_class)
        .await
        .expect("create the RuntimeClass");

    let windows = [
        ("by-selector", windows_spec()),
        (
            "by-beta-selector",
            json!({ "nodeSelector": { "beta.kubernetes.io/os": "windows" } }),
        ),
        (
            "by-affinity",
            json!({ "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{ "matchExpressions": [
                    { "key": "kubernetes.io/os", "operator": "In", "values": ["windows"] }
                ]}]
            }}}}),
        ),
        (
            "by-runtime-class",
            json!({ "runtimeClassName": "windows-2022" }),
        ),
        (
            "with-resources",
            json!({ "nodeSelector": { "kubernetes.io/os": "windows" }, "containers": [
                { "name": "app", "image": "app", "resources": { "requests": { "cpu": "100m" }, "limits": { "memory": "1Gi" } } },
                { "name": "sidecar", "image": "sidecar" }
            ]}),
        ),
    ];
    for (name, spec) in windows {
        let created = pods
            .create(&PostParams::default(), &pod(name, spec))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        assert!(
            has_ip_resource(&created),
            "{name}: {:?}",
            ip_resource(&created)
        );
        if name == "with-resources" {
            let spec = created.spec.as_ref().expect("a spec");
            let first = spec.containers[0].resources.as_ref().expect("resources");
            assert_eq!(first.requests.as_ref().expect("requests")["cpu"].0, "100m");
            assert_eq!(first.limits.as_ref().expect("limits")["memory"].0, "1Gi");
            assert_eq!(
                spec.containers[1]
                    .resources
                    .as_ref()
                    .and_then(|r| r.limits.clone()),
                None
            );
        }
    }

    // kube-system too, as the VPC Resource Controller's webhooks: the controller gives Windows
    // pods there an address, so the scheduler must count them against the node's capacity.
    let system_pods = Api::<Pod>::namespaced(admin.clone(), "kube-system");
    let created = system_pods
        .create(
            &PostParams::default(),
            &pod("windows-system", windows_spec()),
        )
        .await
        .expect("create a Windows pod in kube-system");
    assert!(has_ip_resource(&created), "{:?}", ip_resource(&created));
    let message = api_error_message(
        system_pods
            .patch(
                "windows-system",
                &PatchParams::default(),
                &annotation_patch(Some("10.0.37.17/19")),
            )
            .await,
    );
    assert!(message.contains("is managed by winipam"), "{message}");

    let left_alone = [
        (
            "linux",
            json!({ "nodeSelector": { "kubernetes.io/os": "linux" } }),
        ),
        ("no-placement", json!({})),
        (
            "mixed-affinity",
            json!({ "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{ "matchExpressions": [
                    { "key": "kubernetes.io/os", "operator": "In", "values": ["windows", "linux"] }
                ]}]
            }}}}),
        ),
        (
            "host-network",
            json!({ "hostNetwork": true, "nodeSelector": { "kubernetes.io/os": "windows" } }),
        ),
    ];
    for (name, spec) in left_alone {
        let created = pods
            .create(&PostParams::default(), &pod(name, spec))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        assert_eq!(ip_resource(&created), (None, None), "{name}");
    }

    // --- the address annotation --------------------------------------------------------------
    let mut annotated = pod("user-annotated", windows_spec());
    annotated.metadata.annotations =
        Some([(IP_ANNOTATION.to_owned(), "10.0.37.15/19".to_owned())].into());
    let message = api_error_message(pods.create(&PostParams::default(), &annotated).await);
    assert!(
        message.contains(
            "annotation vpc.amazonaws.com/PrivateIPv4Address is managed by winipam: only \
             system:serviceaccount:winipam-system:winipam may set or change it (the Windows CNI \
             wires the pod with this address)"
        ),
        "{message}"
    );

    let params = PatchParams::default();
    let message = api_error_message(
        pods.patch(
            "by-selector",
            &params,
            &annotation_patch(Some("10.0.37.15/19")),
        )
        .await,
    );
    assert!(message.contains("is managed by winipam"), "{message}");
    assert!(
        message.contains("this request sets it to \"10.0.37.15/19\""),
        "{message}"
    );

    // The controller's ServiceAccount may create a pod with it, and set it on a pod.
    grant_pod_writes(&admin, &controller, &namespace).await;
    let as_controller = Api::<Pod>::namespaced(controller.clone(), &namespace);
    annotated.metadata.name = Some("controller-annotated".to_owned());
    let created = as_controller
        .create(&PostParams::default(), &annotated)
        .await
        .expect("the controller creates a pod with the annotation");
    assert_eq!(annotation(&created).as_deref(), Some("10.0.37.15/19"));
    let patched = as_controller
        .patch(
            "by-affinity",
            &params,
            &annotation_patch(Some("10.0.37.16/19")),
        )
        .await
        .expect("the controller sets the annotation");
    assert_eq!(annotation(&patched).as_deref(), Some("10.0.37.16/19"));

    // Nobody else may change or remove it; other changes to the pod stay allowed.
    let message = api_error_message(
        pods.patch(
            "by-affinity",
            &params,
            &annotation_patch(Some("10.0.37.99/19")),
        )
        .await,
    );
    assert!(
        message.contains("changes it from \"10.0.37.16/19\" to \"10.0.37.99/19\""),
        "{message}"
    );
    let message = api_error_message(
        pods.patch("by-affinity", &params, &annotation_patch(None))
            .await,
    );
    assert!(message.contains("removes it"), "{message}");
    let labelled = pods
        .patch(
            "by-affinity",
            &params,
            &Patch::Merge(json!({ "metadata": { "labels": { "team": "a" } } })),
        )
        .await
        .expect("an unrelated change is allowed");
    assert_eq!(annotation(&labelled).as_deref(), Some("10.0.37.16/19"));

    // The VPC Resource Controller writes it while kube-system/amazon-vpc-cni says
    // enable-windows-ipam: "true" (winipam is paused then), and only then.
    let vpc_rc = VPC_RESOURCE_CONTROLLER_USERS[0];
    let as_vpc_rc = |address: String| {
        let change = format!("{IP_ANNOTATION}={address}");
        let namespace = namespace.clone();
        let cp = &cp;
        async move {
            let args = [
                "--as",
                vpc_rc,
                "--as-group",
                "system:masters",
                "-n",
                namespace.as_str(),
                "annotate",
                "pod",
                "by-affinity",
                change.as_str(),
                "--overwrite",
            ];
            let output = cp.kubectl(&args).await;
            if output.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&output.stderr).into_owned())
            }
        }
    };
    let denied = as_vpc_rc("10.0.37.20/19".to_owned()).await;
    assert!(
        denied
            .as_ref()
            .is_err_and(|e| e.contains("is managed by winipam")),
        "{denied:?}"
    );
    let vpc_cni = |value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: amazon-vpc-cni\n  \
             namespace: kube-system\ndata:\n  enable-windows-ipam: {value:?}\n"
        )
    };
    cp.apply_yaml_file(&write_temp("vpc-cni-on.yaml", &vpc_cni("true")))
        .await;
    let step = std::sync::atomic::AtomicU32::new(21);
    eventually(
        "the VPC Resource Controller may write while its IPAM is on",
        Duration::from_secs(30),
        || {
            as_vpc_rc(format!(
                "10.0.37.{}/19",
                step.fetch_add(1, Ordering::Relaxed)
            ))
        },
    )
    .await;
    cp.apply_yaml_file(&write_temp("vpc-cni-off.yaml", &vpc_cni("false")))
        .await;
    eventually(
        "and not once it is off",
        Duration::from_secs(30),
        || async {
            match as_vpc_rc("10.0.37.99/19".to_owned()).await {
                Err(e) if e.contains("is managed by winipam") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    server.stop().await;
}
