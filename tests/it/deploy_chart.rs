//! What the chart promises, read from its rendered objects: the Deployment's security and
//! scheduling, the ConfigMap (only the keys set), RBAC without wildcards or foreign secrets; and
//! the IAM policy and the Dockerfile beside it.

use serde_json::{Value, json};
use winipam::webhook::vpcrc::VPC_RESOURCE_CONTROLLER_USERS;

use crate::support::deploy::{
    chart_dir, documents, helm_bin, helm_template, kind, name, repo_root,
};

fn find<'a>(objects: &'a [Value], kind_: &str, name_: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == kind_ && name(o) == name_)
        .unwrap_or_else(|| panic!("no {kind_} {name_}"))
}

fn env_of(container: &Value) -> Vec<(String, Value)> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let value = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"].clone());
            (e["name"].as_str().expect("a name").to_owned(), value)
        })
        .collect()
}

#[test]
fn the_deployment_is_locked_down_and_spread() {
    let objects = documents(&helm_template("winipam-system", &[]));
    let deployment = find(&objects, "Deployment", "winipam");
    assert_eq!(deployment["metadata"]["namespace"], "winipam-system");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "winipam");
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let spread = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        spread["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        c["ports"],
        json!([
            {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
            {"name": "webhook", "containerPort": 9443, "protocol": "TCP"},
        ])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );

    let env = env_of(c);
    let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(
        get("POD_NAMESPACE"),
        Some(json!({"fieldRef": {"fieldPath": "metadata.namespace"}}))
    );
    assert_eq!(
        get("POD_NAME"),
        Some(json!({"fieldRef": {"fieldPath": "metadata.name"}}))
    );
    assert_eq!(
        get("WINIPAM_WEBHOOK_CERT_MODE"),
        Some(json!("self-managed"))
    );
    assert_eq!(get("WINIPAM_LOG_FORMAT"), Some(json!("json")));
    // Rate limits left to the controller's defaults unless set.
    assert_eq!(get("WINIPAM_EC2_MUTATING_RATE"), None);
    // Two threads, not one per core of a large node.
    assert_eq!(get("WINIPAM_WORKER_THREADS"), Some(json!("2")));

    let pdb = find(&objects, "PodDisruptionBudget", "winipam");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let webhook = find(&objects, "Service", "winipam-webhook");
    assert_eq!(webhook["spec"]["ports"][0]["port"], 443);
    assert_eq!(webhook["spec"]["ports"][0]["targetPort"], "webhook");
}

#[test]
fn values_reach_the_container_and_the_config_map() {
    let objects = documents(&helm_template(
        "ops",
        &[
            "--set",
            "config.windows-warm-ip-target=5",
            "--set",
            "config.enable-windows-prefix-delegation=true",
            "--set",
            "ec2.mutatingRate=2.5",
            "--set",
            "ec2.describeBurst=10",
            "--set",
            "logLevel=winipam=debug",
            "--set",
            "webhook.certMode=certManager",
            "--set",
            "image.tag=1.2.3",
            "--set",
            "workerThreads=1",
        ],
    ));
    let config = find(&objects, "ConfigMap", "winipam");
    // Only the keys set: every other key keeps the controller's default.
    assert_eq!(
        config["data"],
        json!({"windows-warm-ip-target": "5", "enable-windows-prefix-delegation": "true"})
    );
    let deployment = find(&objects, "Deployment", "winipam");
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/winipam/winipam:1.2.3");
    let env = env_of(c);
    let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("WINIPAM_EC2_MUTATING_RATE"), Some(json!("2.5")));
    assert_eq!(get("WINIPAM_EC2_DESCRIBE_BURST"), Some(json!("10")));
    assert_eq!(get("WINIPAM_LOG_LEVEL"), Some(json!("winipam=debug")));
    assert_eq!(get("WINIPAM_WORKER_THREADS"), Some(json!("1")));
    assert_eq!(get("WINIPAM_WEBHOOK_CERT_MODE"), Some(json!("files")));
    assert_eq!(
        get("WINIPAM_WEBHOOK_CERT_DIR"),
        Some(json!("/etc/winipam/webhook-certs"))
    );
    let volume = &deployment["spec"]["template"]["spec"]["volumes"][0];
    let certificate = find(&objects, "Certificate", "winipam-webhook");
    assert_eq!(
        volume["secret"]["secretName"],
        certificate["spec"]["secretName"]
    );
    assert_eq!(
        certificate["spec"]["dnsNames"][0],
        "winipam-webhook.ops.svc"
    );
    let mutating = find(&objects, "MutatingWebhookConfiguration", "winipam");
    assert_eq!(
        mutating["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "ops/winipam-webhook"
    );

    // The values schema refuses what the controller would refuse.
    for bad in [
        "config.windows-warm-ip-target=-1",
        "config.no-such-key=1",
        "webhook.certMode=manual",
        "annotationGuard=both",
        "logFormat=xml",
        "ec2.mutatingBurst=0",
        "workerThreads=0",
        "workerThreads=300",
    ] {
        let output = std::process::Command::new(helm_bin())
            .args(["template", "winipam"])
            .arg(chart_dir())
            .args(["--set", bad])
            .output()
            .expect("run helm");
        assert!(!output.status.success(), "helm accepted {bad}");
    }
}

#[test]
fn the_annotation_guard_is_the_policy_or_the_webhook() {
    let guard = |objects: &[Value]| -> Vec<String> {
        let mut kinds: Vec<String> = objects
            .iter()
            .map(|o| kind(o).to_owned())
            .filter(|k| k.starts_with("Validating"))
            .collect();
        kinds.sort();
        kinds
    };
    let policy = documents(&helm_template("ops", &[]));
    assert_eq!(
        guard(&policy),
        [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingWebhookConfiguration",
        ]
    );
    // With the policy, the webhook is the hand-back guard alone: called only for the VPC
    // Resource Controller's identities setting or changing the address, never failing a write.
    let hand_back = find(&policy, "ValidatingWebhookConfiguration", "winipam");
    let hooks = hand_back["webhooks"].as_array().expect("webhooks");
    assert_eq!(hooks.len(), 1, "{hand_back}");
    assert_eq!(hooks[0]["name"], "vpc-rc-hand-back.winipam.dev");
    assert_eq!(hooks[0]["failurePolicy"], "Ignore");
    assert_eq!(
        hooks[0]["clientConfig"]["service"]["path"],
        "/validate-pods"
    );
    let conditions = hooks[0]["matchConditions"]
        .as_array()
        .expect("matchConditions");
    let names: Vec<&str> = conditions
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["vpc-resource-controller", "sets-or-changes-the-address"]
    );
    for user in VPC_RESOURCE_CONTROLLER_USERS {
        assert!(
            conditions[0]["expression"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("'{user}'"))),
            "{user} missing from {}",
            conditions[0]
        );
    }
    // The policy names the ServiceAccount of the release namespace.
    let everyone = find(
        &policy,
        "ValidatingAdmissionPolicy",
        "winipam-address-annotation",
    );
    let writers = everyone["spec"]["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["name"] == "writers")
        .expect("the writers variable");
    assert!(
        writers["expression"]
            .as_str()
            .is_some_and(|e| e.contains("'system:serviceaccount:ops:winipam'")),
        "{writers}"
    );
    // The identities the webhook allows while the VPC Resource Controller's IPAM is on.
    for user in VPC_RESOURCE_CONTROLLER_USERS {
        assert!(
            writers["expression"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("'{user}'"))),
            "{user} missing from {writers}"
        );
    }
    assert!(everyone["spec"].get("paramKind").is_none());
    let binding = find(
        &policy,
        "ValidatingAdmissionPolicyBinding",
        "winipam-address-annotation-vpc-rc",
    );
    assert_eq!(
        binding["spec"]["paramRef"],
        json!({"name": "amazon-vpc-cni", "namespace": "kube-system", "parameterNotFoundAction": "Allow"})
    );

    let webhook = documents(&helm_template("ops", &["--set", "annotationGuard=webhook"]));
    assert_eq!(guard(&webhook), ["ValidatingWebhookConfiguration"]);
    // The full guard judges every pod write, the VPC Resource Controller's included.
    let full = find(&webhook, "ValidatingWebhookConfiguration", "winipam");
    assert_eq!(full["webhooks"][0]["name"], "ip-annotation.winipam.dev");
    assert!(
        full["webhooks"][0].get("matchConditions").is_none(),
        "{full}"
    );
}

/// Every RBAC rule of a render, as (kind, namespace, rule).
fn rules(objects: &[Value]) -> Vec<(String, String, Value)> {
    objects
        .iter()
        .filter(|o| kind(o) == "ClusterRole" || kind(o) == "Role")
        .flat_map(|o| {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
            o["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .map(move |r| (kind(o).to_owned(), ns.clone(), r.clone()))
        })
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn rbac_has_no_wildcards_and_no_foreign_secrets() {
    let self_managed = documents(&helm_template("winipam-system", &[]));
    let cert_manager = documents(&helm_template(
        "winipam-system",
        &["--set", "webhook.certMode=certManager"],
    ));
    for (label, objects) in [
        ("selfManaged", &self_managed),
        ("certManager", &cert_manager),
    ] {
        for (_, _, rule) in rules(objects) {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                assert!(
                    !strings(&rule[field]).iter().any(|s| s.contains('*')),
                    "{label}: wildcard in {rule}"
                );
            }
        }
        // Bindings name only winipam's ServiceAccount.
        for binding in objects
            .iter()
            .filter(|o| kind(o) == "ClusterRoleBinding" || kind(o) == "RoleBinding")
        {
            assert_eq!(
                binding["subjects"],
                json!([{"kind": "ServiceAccount", "name": "winipam", "namespace": "winipam-system"}]),
                "{label}: {}",
                name(binding)
            );
        }
    }
    let secret_rules = |objects: &[Value]| -> Vec<(String, String, Value)> {
        rules(objects)
            .into_iter()
            .filter(|(_, _, r)| strings(&r["resources"]).contains(&"secrets"))
            .collect()
    };
    assert!(secret_rules(&cert_manager).is_empty());
    assert!(
        !rules(&cert_manager)
            .iter()
            .any(|(_, _, r)| strings(&r["apiGroups"]).contains(&"admissionregistration.k8s.io"))
    );
    // Self-managed: the one Secret in the own namespace (create cannot be limited by name).
    let secret_rules = secret_rules(&self_managed);
    assert_eq!(secret_rules.len(), 2, "{secret_rules:?}");
    for (kind_, ns, rule) in secret_rules {
        assert_eq!((kind_.as_str(), ns.as_str()), ("Role", "winipam-system"));
        if strings(&rule["verbs"]) != ["create"] {
            assert_eq!(strings(&rule["resourceNames"]), ["winipam-webhook-tls"]);
        }
    }
}

#[test]
fn the_iam_policy_allows_exactly_the_five_ec2_actions() {
    let text = std::fs::read_to_string(repo_root().join("deploy/iam-policy.json"))
        .expect("deploy/iam-policy.json");
    let policy: Value = serde_json::from_str(&text).expect("the policy parses");
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().expect("statements");
    let mut actions: Vec<&str> = Vec::new();
    for statement in statements {
        assert_eq!(statement["Effect"], "Allow");
        actions.extend(strings(&statement["Action"]));
    }
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            "ec2:AssignPrivateIpAddresses",
            "ec2:DescribeInstanceTypes",
            "ec2:DescribeInstances",
            "ec2:DescribeSubnets",
            "ec2:UnassignPrivateIpAddresses",
        ]
    );
}

#[test]
fn the_dockerfile_builds_a_release_and_runs_it_as_nonroot_on_distroless() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    // Instructions only (continuation lines joined, comments dropped).
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(' ').unwrap_or((l, ""));
            (op.to_uppercase(), rest.trim().to_owned())
        })
        .collect();
    let stages: Vec<&String> = instructions
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, rest)| rest)
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].starts_with("rust:") && stages[0].ends_with(" AS builder"));
    assert!(stages[1].starts_with("gcr.io/distroless/cc-debian12:nonroot"));
    let runtime: Vec<&(String, String)> = instructions
        .iter()
        .skip_while(|(op, rest)| !(op == "FROM" && rest.starts_with("gcr.io/distroless")))
        .collect();
    assert!(
        instructions
            .iter()
            .any(|(op, rest)| op == "RUN" && rest.contains("cargo build --release --locked"))
    );
    // The runtime stage copies the binary and nothing else, and runs it as nonroot.
    let copies: Vec<&&(String, String)> = runtime.iter().filter(|(op, _)| op == "COPY").collect();
    assert_eq!(copies.len(), 1);
    assert!(copies[0].1.starts_with("--from=builder /winipam "));
    assert!(
        runtime
            .iter()
            .any(|(op, rest)| op == "USER" && rest == "nonroot")
    );
    assert!(runtime.iter().any(|(op, rest)| {
        op == "ENTRYPOINT" && rest == r#"["/usr/local/bin/winipam", "run"]"#
    }));
    assert!(
        !runtime.iter().any(|(op, _)| op == "RUN"),
        "no shell in distroless"
    );
}

#[test]
fn helm_lint_passes_strictly() {
    for args in [
        &[][..],
        &[
            "--set",
            "webhook.certMode=certManager",
            "--set",
            "annotationGuard=webhook",
            "--set",
            "monitoring.serviceMonitor.enabled=true",
            "--set",
            "monitoring.prometheusRule.enabled=true",
            "--set",
            "monitoring.dashboard.enabled=true",
        ][..],
    ] {
        let output = std::process::Command::new(helm_bin())
            .args(["lint", "--strict"])
            .arg(chart_dir())
            .args(args)
            .output()
            .expect("run helm");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("0 chart(s) failed"),
            "helm lint --strict {}: {stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_readme_explains_every_event_reason() {
    let reasons = std::fs::read_to_string(repo_root().join("src/controller/reasons.rs"))
        .expect("src/controller/reasons.rs");
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    // (constant, reason)
    let consts: Vec<(&str, &str)> = reasons
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \""))
        .filter_map(|l| {
            let name = l.strip_prefix("pub const ")?.split(':').next()?;
            Some((name, l.split('"').nth(1)?))
        })
        .collect();
    assert!(consts.len() >= 10, "{consts:?}");
    // Production code only: the simulator and tests naming a reason do not emit it.
    let code = production_sources(&repo_root().join("src"));
    for (constant, name) in consts {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README's troubleshooting table lacks the Event reason {name}"
        );
        assert!(
            emits(&code, constant),
            "no production code emits the Event reason {name} (reasons::{constant} in a \
             file that records Events)"
        );
    }
}

/// `reasons::{constant}` is used in a source file that records Events (calls `.event(` or a
/// cluster's `publish_event(`). A reason only the simulator or a test names, or one nothing
/// records, does not count.
fn emits(files: &[String], constant: &str) -> bool {
    let needle = format!("reasons::{constant}");
    files
        .iter()
        .any(|f| f.contains(&needle) && (f.contains(".event(") || f.contains("publish_event(")))
}

/// The text of each `.rs` file under `dir` that ships: not the simulator (`src/sim`), not test
/// files (`tests.rs`, `*_tests.rs`), and without a file's trailing `mod tests`.
fn production_sources(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "sim" {
                files.extend(production_sources(&path));
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs") {
            let source = std::fs::read_to_string(&path).expect("a source file");
            let shipped = source.split("#[cfg(test)]\nmod tests {").next();
            files.extend(shipped.map(str::to_owned));
        }
    }
    files
}
