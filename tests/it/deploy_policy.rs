//! The address-annotation guard of the chart's default (`annotationGuard=policy`), as the real
//! kube-apiserver enforces it with no winipam running: the ValidatingAdmissionPolicies and
//! bindings of the rendered base are applied alone, then users act through impersonation.
//! Anyone but winipam's ServiceAccount is refused to set, change or remove the annotation (on
//! create, update and the status subresource); the VPC Resource Controller's identities may
//! write it only while kube-system/amazon-vpc-cni says `enable-windows-ipam: "true"`. The
//! base's hand-back webhook is registered too, pointed at nothing (winipam down): the apiserver
//! evaluates its matchConditions, calls it only for the VPC Resource Controller's writes that
//! set or change the address, and lets those through (failurePolicy Ignore).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;
use winipam::webhook::validate::IP_ANNOTATION;
use winipam::webhook::vpcrc::VPC_RESOURCE_CONTROLLER_USERS;

use crate::support::controlplane::ControlPlane;
use crate::support::deploy::{base_dir, write_temp};
use crate::support::e2e::eventually;
use crate::support::winipam::samples;

/// The hand-back guard of the base's ValidatingWebhookConfiguration.
const HAND_BACK_HOOK: &str = "vpc-rc-hand-back.winipam.dev";

const WINIPAM: &str = "system:serviceaccount:winipam-system:winipam";
/// The identities the webhook allows too, while the VPC Resource Controller's IPAM is on.
const VPC_RC: [&str; 3] = VPC_RESOURCE_CONTROLLER_USERS;
const ALICE: &str = "alice";
/// What the policy's denial says.
const DENIED: &str = "is managed by winipam";
/// Policy changes and ConfigMap edits reach the apiserver's admission through informers.
const SETTLE: Duration = Duration::from_secs(30);

/// A fresh address for each write, so that every write is a change.
fn next_address() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("10.0.{}.9/19", NEXT.fetch_add(1, Ordering::Relaxed))
}

struct Cluster<'a> {
    cp: &'a ControlPlane,
    namespace: String,
}

impl Cluster<'_> {
    /// kubectl in the test namespace as `user` (impersonated by the admin): Ok(stdout) or
    /// Err(stderr).
    async fn as_user(&self, user: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["--as", user, "-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        let output = self.cp.kubectl(&all).await;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Creates pod `name` as `user`, with the annotation set to `address` if given.
    async fn create(
        &self,
        user: &str,
        name: &str,
        address: Option<&str>,
    ) -> Result<String, String> {
        let annotation = address.map(|a| format!("--annotations={IP_ANNOTATION}={a}"));
        let mut args = vec!["run", name, "--image=app", "--restart=Never"];
        args.extend(annotation.as_deref());
        self.as_user(user, &args).await
    }

    /// Sets (`Some`) or removes (`None`) the annotation of pod `name` as `user`.
    async fn annotate(
        &self,
        user: &str,
        name: &str,
        address: Option<&str>,
    ) -> Result<String, String> {
        let change = match address {
            Some(a) => format!("{IP_ANNOTATION}={a}"),
            None => format!("{IP_ANNOTATION}-"),
        };
        self.as_user(user, &["annotate", "pod", name, &change, "--overwrite"])
            .await
    }

    /// Sets the annotation through the status subresource (which may change metadata too).
    async fn annotate_status(
        &self,
        user: &str,
        name: &str,
        address: &str,
    ) -> Result<String, String> {
        let patch =
            serde_json::json!({ "metadata": { "annotations": { IP_ANNOTATION: address } } });
        let patch = patch.to_string();
        let args = [
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            patch.as_str(),
        ];
        self.as_user(user, &args).await
    }

    /// Alice still may not change the annotation of pod `app`, winipam still may.
    async fn others_unchanged(&self, when: &str) {
        let alice = self.annotate(ALICE, "app", Some(&next_address())).await;
        denied(alice, &format!("alice, {when}"));
        let winipam = self.annotate(WINIPAM, "app", Some(&next_address())).await;
        allowed(winipam, &format!("winipam, {when}"));
    }

    async fn annotation(&self, name: &str) -> Option<String> {
        let json = self
            .cp
            .kubectl_ok(&["get", "pod", name, "-n", &self.namespace, "-o", "json"])
            .await;
        let pod: Value = serde_json::from_str(&json).expect("a pod as JSON");
        pod["metadata"]["annotations"][IP_ANNOTATION]
            .as_str()
            .map(str::to_owned)
    }

    /// Writes kube-system/amazon-vpc-cni with `enable-windows-ipam: value`, or deletes it.
    async fn vpc_cni(&self, value: Option<&str>) {
        match value {
            Some(value) => {
                let yaml = format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: amazon-vpc-cni\n  \
                     namespace: kube-system\ndata:\n  enable-windows-ipam: {value:?}\n"
                );
                self.cp
                    .apply_yaml_file(&write_temp("amazon-vpc-cni.yaml", &yaml))
                    .await;
            }
            None => {
                self.cp
                    .kubectl_ok(&[
                        "delete",
                        "configmap",
                        "amazon-vpc-cni",
                        "-n",
                        "kube-system",
                        "--ignore-not-found",
                    ])
                    .await;
            }
        }
    }
}

/// The base's ValidatingWebhookConfiguration with its service replaced by a port nothing
/// listens on: winipam is down.
fn hand_back_webhook_to_nowhere() -> String {
    let path = base_dir().join("validatingwebhookconfiguration.yaml");
    let text = std::fs::read_to_string(&path).expect("the base's ValidatingWebhookConfiguration");
    let mut config: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let hooks = config["webhooks"].as_array_mut().expect("webhooks");
    assert_eq!(hooks.len(), 1, "the hand-back guard alone");
    assert_eq!(hooks[0]["name"], HAND_BACK_HOOK);
    hooks[0]["clientConfig"] = serde_json::json!({ "url": "https://127.0.0.1:1/validate-pods" });
    config.to_string()
}

/// How often the apiserver called the hand-back webhook and, failing, let the request through.
async fn hand_back_calls(cp: &ControlPlane) -> f64 {
    let text = cp.kubectl_ok(&["get", "--raw", "/metrics"]).await;
    samples(&text, "apiserver_admission_webhook_fail_open_count")
        .into_iter()
        .filter(|(labels, _)| {
            labels
                .iter()
                .any(|(k, v)| k == "name" && v == HAND_BACK_HOOK)
        })
        .map(|(_, value)| value)
        .sum()
}

fn denied(result: Result<String, String>, what: &str) {
    match result {
        Err(stderr) => assert!(
            stderr.contains(DENIED),
            "{what}: refused otherwise: {stderr}"
        ),
        Ok(stdout) => panic!("{what}: allowed: {stdout}"),
    }
}

fn allowed(result: Result<String, String>, what: &str) {
    if let Err(stderr) = result {
        panic!("{what}: refused: {stderr}");
    }
}

/// Lets `alice`, winipam's ServiceAccount and the VPC Resource Controller's identities create
/// and write pods (and their status) in `namespace`: only the policy stands in their way.
fn rbac(namespace: &str) -> String {
    let mut subjects = format!(
        "  - kind: User\n    apiGroup: rbac.authorization.k8s.io\n    name: {ALICE}\n  \
         - kind: ServiceAccount\n    name: winipam\n    namespace: winipam-system\n"
    );
    for user in VPC_RC {
        subjects.push_str(&format!(
            "  - kind: User\n    apiGroup: rbac.authorization.k8s.io\n    name: {user}\n"
        ));
    }
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: pod-writer\n  \
         namespace: {namespace}\nrules:\n  - apiGroups: [\"\"]\n    resources: [pods, pods/status]\n    \
         verbs: [create, get, update, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\n\
         kind: RoleBinding\nmetadata:\n  name: pod-writer\n  namespace: {namespace}\nroleRef:\n  \
         apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: pod-writer\nsubjects:\n{subjects}"
    )
}

#[tokio::test]
async fn the_apiserver_guards_the_address_annotation_with_winipam_down() {
    // Its own control plane: the policies are cluster-wide and would refuse other tests' writes.
    let cp = ControlPlane::start().await;

    // The pinned kube-apiserver serves admissionregistration.k8s.io/v1 policies by default
    // (GA since 1.30; scripts/controlplane.sh sets no --runtime-config or feature gates).
    let discovery: Value = serde_json::from_str(
        &cp.kubectl_ok(&["get", "--raw", "/apis/admissionregistration.k8s.io/v1"])
            .await,
    )
    .expect("discovery as JSON");
    let resources: Vec<&str> = discovery["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for served in [
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
    ] {
        assert!(
            resources.contains(&served),
            "{served} not served: {resources:?}"
        );
    }

    for file in [
        "validatingadmissionpolicy.yaml",
        "validatingadmissionpolicybinding.yaml",
    ] {
        let applied = cp.apply_yaml_file(&base_dir().join(file)).await;
        assert_eq!(applied.len(), 2, "{file}: {applied:?}");
    }
    let applied = cp
        .apply_yaml_file(&write_temp(
            "hand-back.json",
            &hand_back_webhook_to_nowhere(),
        ))
        .await;
    assert_eq!(applied.len(), 1, "{applied:?}");
    let namespace = cp.create_namespace("policy").await;
    cp.apply_yaml_file(&write_temp("rbac.yaml", &rbac(&namespace)))
        .await;
    let c = Cluster { cp: &cp, namespace };

    // An ordinary user's pod with the annotation: refused once the policy is in force.
    let attempt = AtomicU32::new(0);
    eventually(
        "the policy refuses alice's annotated pod",
        SETTLE,
        || async {
            let name = format!("forged-{}", attempt.fetch_add(1, Ordering::Relaxed));
            match c.create(ALICE, &name, Some(&next_address())).await {
                Err(stderr) if stderr.contains(DENIED) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let message = c
        .create(ALICE, "forged", Some("10.0.0.5/19"))
        .await
        .expect_err("refused");
    assert!(message.contains(WINIPAM), "names who may: {message}");
    assert!(message.contains(ALICE), "names who tried: {message}");

    // Pods without it are alice's to create and change.
    allowed(
        c.create(ALICE, "app", None).await,
        "alice creates a plain pod",
    );
    denied(
        c.annotate(ALICE, "app", Some(&next_address())).await,
        "alice sets",
    );
    denied(
        c.annotate_status(ALICE, "app", &next_address()).await,
        "alice sets through pods/status",
    );
    assert_eq!(c.annotation("app").await, None);

    // winipam's ServiceAccount sets, changes and creates with it.
    let first = next_address();
    allowed(
        c.annotate(WINIPAM, "app", Some(&first)).await,
        "winipam sets",
    );
    assert_eq!(c.annotation("app").await, Some(first.clone()));
    denied(
        c.annotate(ALICE, "app", Some(&next_address())).await,
        "alice changes",
    );
    denied(c.annotate(ALICE, "app", None).await, "alice removes");
    denied(
        c.annotate_status(ALICE, "app", &next_address()).await,
        "alice changes through pods/status",
    );
    assert_eq!(c.annotation("app").await, Some(first));
    // Other writes to an annotated pod go through.
    allowed(
        c.as_user(ALICE, &["label", "pod", "app", "tier=web"]).await,
        "alice labels an annotated pod",
    );
    let second = next_address();
    allowed(
        c.annotate(WINIPAM, "app", Some(&second)).await,
        "winipam changes",
    );
    allowed(
        c.create(WINIPAM, "by-winipam", Some(&next_address())).await,
        "winipam creates an annotated pod",
    );

    // The VPC Resource Controller: only while amazon-vpc-cni says "true".
    c.vpc_cni(Some("false")).await;
    for user in VPC_RC {
        eventually(
            "enable-windows-ipam \"false\" holds the VPC RC back",
            SETTLE,
            || async {
                match c.annotate(user, "app", Some(&next_address())).await {
                    Err(stderr) if stderr.contains("enable-windows-ipam") => Ok(()),
                    other => Err(format!("{user}: {other:?}")),
                }
            },
        )
        .await;
    }
    assert_eq!(c.annotation("app").await, Some(second));
    c.vpc_cni(Some("True")).await;
    for (i, user) in VPC_RC.into_iter().enumerate() {
        eventually(
            "enable-windows-ipam \"True\" lets the VPC RC write",
            SETTLE,
            || async {
                c.annotate(user, "app", Some(&next_address()))
                    .await
                    .map_err(|stderr| format!("{user}: {stderr}"))
            },
        )
        .await;
        allowed(
            c.create(user, &format!("by-vpc-rc-{i}"), Some(&next_address()))
                .await,
            "the VPC RC creates an annotated pod",
        );
    }
    // The switch leaves everyone else where they were.
    c.others_unchanged("VPC RC on").await;

    // The hand-back webhook, winipam down: called for the VPC Resource Controller's writes that
    // set or change the address, and those go through; no other write waits for it.
    let called = hand_back_calls(&cp).await;
    eventually(
        "the VPC RC's change of the address reaches the hand-back webhook",
        SETTLE,
        || async {
            allowed(
                c.annotate(VPC_RC[0], "app", Some(&next_address())).await,
                "the VPC RC changes it, winipam down",
            );
            match hand_back_calls(&cp).await {
                now if now > called => Ok(()),
                now => Err(format!("{now} calls")),
            }
        },
    )
    .await;
    let called = hand_back_calls(&cp).await;
    let quiet = [
        c.as_user(
            VPC_RC[1],
            &["label", "pod", "app", "tier=db", "--overwrite"],
        )
        .await,
        c.annotate(WINIPAM, "app", Some(&next_address())).await,
        c.annotate(ALICE, "app", Some(&next_address())).await,
        c.create(VPC_RC[2], "plain-by-vpc-rc", None).await,
    ];
    assert_eq!(
        hand_back_calls(&cp).await,
        called,
        "no call for a VPC RC write leaving the address, winipam's, alice's, nor a plain \
         create: {quiet:?}"
    );
    for (i, user) in VPC_RC.into_iter().enumerate() {
        allowed(
            c.create(user, &format!("hand-back-{i}"), Some(&next_address()))
                .await,
            "the VPC RC creates an annotated pod, winipam down",
        );
        allowed(
            c.annotate(user, &format!("hand-back-{i}"), Some(&next_address()))
                .await,
            "the VPC RC changes it, winipam down",
        );
    }
    assert_eq!(
        hand_back_calls(&cp).await - called,
        6.0,
        "a call for each VPC RC create and change"
    );

    // Without the ConfigMap the apiserver cannot evaluate the VPC RC's condition without
    // failing every pod write of the cluster (it looks the param up before any
    // matchCondition), so that policy is skipped: the rule for everyone else still holds.
    c.vpc_cni(None).await;
    eventually(
        "a missing amazon-vpc-cni skips the VPC RC's condition",
        SETTLE,
        || async { c.annotate(VPC_RC[0], "app", Some(&next_address())).await },
    )
    .await;
    c.others_unchanged("no ConfigMap").await;
    denied(
        c.create(ALICE, "forged-late", Some(&next_address())).await,
        "alice creates, no ConfigMap",
    );
    allowed(
        c.annotate(WINIPAM, "app", None).await,
        "winipam removes, no ConfigMap",
    );
    allowed(
        c.create(ALICE, "plain-late", None).await,
        "plain pods, no ConfigMap",
    );
}
