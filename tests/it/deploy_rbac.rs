//! The rendered RBAC, applied to a real apiserver, gives winipam's ServiceAccount exactly what it
//! uses (SPEC section 11 and the code): `kubectl auth can-i` as that ServiceAccount says yes to
//! every verb winipam needs and no to the neighbours it must not have.

use std::path::Path;

use crate::support::deploy::{self, NAMESPACE, SERVICE_ACCOUNT};

/// `kubectl auth can-i ARGS` with the ServiceAccount's own token: true for "yes".
async fn can_i(kubeconfig: &Path, args: &[&str]) -> bool {
    let cp = deploy::control_plane().await;
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    let output = cp.kubectl_with(kubeconfig, &full).await;
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        _ => panic!(
            "kubectl auth can-i {}: {answer} {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

const OWN: &str = NAMESPACE;

/// (arguments of `kubectl auth can-i`, expected answer).
fn expectations() -> Vec<(Vec<&'static str>, bool)> {
    let mut cases: Vec<(Vec<&str>, bool)> = Vec::new();
    let mut yes = |args: &[&'static str]| cases.push((args.to_vec(), true));
    // Nodes: read, and the extended resource in their status.
    for verb in ["get", "list", "watch"] {
        yes(&[verb, "nodes"]);
    }
    yes(&["patch", "nodes", "--subresource=status"]);
    // Pods in every namespace; patch writes the annotation.
    for verb in ["get", "list", "watch", "patch"] {
        yes(&[verb, "pods", "--all-namespaces"]);
    }
    // Events, both APIs.
    for verb in ["create", "patch"] {
        yes(&[verb, "events", "--all-namespaces"]);
        yes(&[verb, "events.events.k8s.io", "--all-namespaces"]);
    }
    // NodeAddressPools and their status.
    for verb in ["create", "get", "list", "watch", "patch"] {
        yes(&[verb, "nodeaddresspools.winipam.dev"]);
    }
    for verb in ["get", "patch", "update"] {
        yes(&[verb, "nodeaddresspools.winipam.dev", "--subresource=status"]);
    }
    // Leader election in the own namespace.
    yes(&["create", "leases.coordination.k8s.io", "-n", OWN]);
    for verb in ["get", "update", "patch"] {
        yes(&[verb, "leases.coordination.k8s.io/winipam", "-n", OWN]);
    }
    // The own ConfigMap, and the VPC CNI's for the safety check.
    for verb in ["get", "list", "watch"] {
        yes(&[verb, "configmaps/winipam", "-n", OWN]);
        yes(&[verb, "configmaps/amazon-vpc-cni", "-n", "kube-system"]);
    }
    // The mutating webhook's RuntimeClass cache.
    for verb in ["get", "list", "watch"] {
        yes(&[verb, "runtimeclasses.node.k8s.io"]);
    }
    // Self-managed webhook certificates (the default): the one Secret, the two configurations.
    yes(&["create", "secrets", "-n", OWN]);
    for verb in ["get", "update", "patch"] {
        yes(&[verb, "secrets/winipam-webhook-tls", "-n", OWN]);
    }
    for verb in ["get", "patch"] {
        yes(&[
            verb,
            "mutatingwebhookconfigurations.admissionregistration.k8s.io/winipam",
        ]);
        yes(&[
            verb,
            "validatingwebhookconfigurations.admissionregistration.k8s.io/winipam",
        ]);
    }

    let mut no = |args: &[&'static str]| cases.push((args.to_vec(), false));
    // No other secrets, here or elsewhere.
    no(&["get", "secrets", "-n", "default"]);
    no(&["get", "secrets", "-n", "kube-system"]);
    no(&["list", "secrets", "--all-namespaces"]);
    no(&["list", "secrets", "-n", OWN]);
    no(&["get", "secrets/other", "-n", OWN]);
    no(&["create", "secrets", "-n", "default"]);
    // Nothing destructive on pods and nodes.
    no(&["delete", "pods", "--all-namespaces"]);
    no(&["create", "pods", "-n", "default"]);
    no(&["update", "pods", "-n", "default"]);
    no(&["delete", "nodes"]);
    no(&["patch", "nodes"]);
    no(&["update", "nodes", "--subresource=status"]);
    no(&["delete", "nodeaddresspools.winipam.dev"]);
    // Only the named objects.
    no(&["get", "configmaps", "-n", "kube-system"]);
    no(&["get", "configmaps/other", "-n", OWN]);
    no(&["get", "leases.coordination.k8s.io/other", "-n", OWN]);
    no(&["create", "leases.coordination.k8s.io", "-n", "default"]);
    no(&[
        "patch",
        "mutatingwebhookconfigurations.admissionregistration.k8s.io/other",
    ]);
    no(&[
        "delete",
        "validatingwebhookconfigurations.admissionregistration.k8s.io/winipam",
    ]);
    no(&["*", "*"]);
    cases
}

#[tokio::test]
async fn winipam_can_do_what_it_uses_and_nothing_more() {
    let cp = deploy::control_plane().await;
    deploy::apply_base_rbac(cp).await;
    let kubeconfig = cp
        .write_service_account_kubeconfig(NAMESPACE, SERVICE_ACCOUNT)
        .await;
    let cases = expectations();
    let answers = futures::future::join_all(
        cases
            .iter()
            .map(|(args, _)| can_i(&kubeconfig, args.as_slice())),
    )
    .await;
    let wrong: Vec<String> = cases
        .iter()
        .zip(&answers)
        .filter(|((_, expected), answer)| *expected != **answer)
        .map(|((args, expected), _)| {
            format!(
                "can-i {} should be {}",
                args.join(" "),
                if *expected { "yes" } else { "no" }
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(cases.len() > 60, "{} cases", cases.len());
}
