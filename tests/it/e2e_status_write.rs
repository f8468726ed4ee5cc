//! End to end, no silent stall (issue 16, item 1): with the RBAC rule on
//! `nodeaddresspools/status` taken away, a new pod's annotation waits for a status write that
//! fails; winipam says so with a `StatusWriteFailed` Warning on the node (once, not once per
//! retry) and counts the failures; with the rule back, the pod is annotated.
//!
//! The ClusterRole `winipam` is shared by every test namespace (other tests run beside this
//! one), so this test binds its namespace's ServiceAccount to a copy without the rule instead of
//! editing it, then binds it back.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use crate::support::e2e::{Env, eventually};

/// Points the namespace's ClusterRoleBinding at `role` (roleRef is immutable: delete, create).
async fn bind(env: &Env, role: &str) {
    let api: Api<ClusterRoleBinding> = Api::all(env.client.clone());
    let name = format!("winipam-{}", env.namespace);
    let mut binding = api.get(&name).await.expect("the namespace's binding");
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete the binding");
    binding.metadata.resource_version = None;
    binding.metadata.uid = None;
    binding.metadata.creation_timestamp = None;
    binding.metadata.managed_fields = None;
    binding.role_ref.name = role.to_owned();
    eventually("binding re-created", Duration::from_secs(10), || async {
        api.create(&PostParams::default(), &binding)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_write_refused_by_rbac_is_reported_counted_and_mended() {
    let env = Env::new("e2e-statusrbac").await;
    let node = env.add_node("n0", "m5.large").await;
    let winipam = env.start("winipam-0").await;
    env.wait_eni_len(&node, 3, Duration::from_secs(15)).await;
    // The status that creates the pool follows the Assign's answer, not the other way round.
    eventually("the NodeAddressPool", Duration::from_secs(10), || async {
        env.pool(&node.name)
            .await
            .map(|_| ())
            .ok_or_else(|| "not created yet".to_owned())
    })
    .await;

    // A copy of the ClusterRole without the rule on nodeaddresspools/status.
    let roles: Api<ClusterRole> = Api::all(env.client.clone());
    let full = roles.get("winipam").await.expect("the ClusterRole");
    let mut partial = ClusterRole {
        rules: full.rules.clone(),
        ..ClusterRole::default()
    };
    let partial_name = format!("winipam-nostatus-{}", env.namespace);
    partial.metadata.name = Some(partial_name.clone());
    let rules = partial.rules.get_or_insert_default();
    let before = rules.len();
    rules.retain(|r| {
        !r.resources
            .as_ref()
            .is_some_and(|res| res.iter().any(|x| x == "nodeaddresspools/status"))
    });
    assert_eq!(rules.len(), before - 1, "one rule names the status");
    // Left over by an earlier run that failed half-way, if any.
    let _ = roles.delete(&partial_name, &DeleteParams::default()).await;
    roles
        .create(&PostParams::default(), &partial)
        .await
        .expect("create the partial ClusterRole");
    bind(&env, &partial_name).await;

    env.create_pod("waits", &node.name).await;
    let event = env
        .wait_event(
            "default",
            &node.name,
            "StatusWriteFailed",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.clone().unwrap_or_default();
    assert!(note.contains("nodeaddresspools/status"), "{note}");
    let failures = eventually("failures counted", Duration::from_secs(10), || async {
        match winipam
            .metric(
                "winipam_status_write_failures_total",
                &[("reason", "forbidden")],
            )
            .await
        {
            Some(n) if n >= 2.0 => Ok(n),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The retries go on (1 s, doubling, at most 10 s) without a new Event each.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = winipam
        .metric(
            "winipam_status_write_failures_total",
            &[("reason", "forbidden")],
        )
        .await
        .unwrap_or_default();
    assert!(after > failures, "retried: {failures} then {after}");
    let reported: Vec<_> = env
        .events_about("default", &node.name)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("StatusWriteFailed"))
        .collect();
    assert_eq!(reported.len(), 1, "{reported:?}");
    let series = reported[0].series.as_ref().map_or(1, |s| s.count);
    assert_eq!(series, 1, "one report for {after} failures: {reported:?}");
    assert_eq!(env.pods().await["waits"].annotation, None, "status first");

    // The rule back: the next retry writes the status, then the annotation.
    bind(&env, "winipam").await;
    env.wait_annotated(&["waits".into()], Duration::from_secs(30))
        .await;
    roles
        .delete(&partial_name, &DeleteParams::default())
        .await
        .expect("delete the partial ClusterRole");
}
