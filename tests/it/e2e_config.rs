//! End to end, configuration and the safety check (SPEC 3.1, 3.2): a bad ConfigMap value is
//! refused with an Event and the last good configuration stays; the VPC CNI's
//! `enable-windows-ipam: "true"` stops every assignment until it goes.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use crate::support::e2e::{Env, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_is_rejected_and_the_last_good_configuration_stays() {
    let env = Env::new("e2e-config").await;
    env.set_config(&[("windows-warm-ip-target", "5")]).await;
    let node = env.add_node("n0", "m5.large").await;
    let winipam = env.start("winipam-0").await;
    env.create_pod("pod-0", &node.name).await;
    env.wait_eni_len(&node, 6, Duration::from_secs(20)).await;

    env.set_config(&[("windows-warm-ip-target", "abc")]).await;
    let event = eventually(
        "a ConfigRejected Event",
        Duration::from_secs(10),
        || async {
            env.events_about(&env.namespace, "winipam")
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("ConfigRejected"))
                .ok_or_else(|| "none yet".to_string())
        },
    )
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("windows-warm-ip-target") && note.contains("abc"),
        "{note}"
    );
    let regarding = event.regarding.expect("regarding");
    assert_eq!(regarding.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(
        winipam.metric("winipam_config_errors_total", &[]).await,
        Some(1.0)
    );

    // Warm 5 is still in force: two more pods make it 3 used + 5 free (the default warm 3
    // would stop at 6, and "abc" read as 0 would stop at 4).
    env.create_pod("pod-1", &node.name).await;
    env.create_pod("pod-2", &node.name).await;
    env.wait_annotated(&["pod-1".into(), "pod-2".into()], Duration::from_secs(10))
        .await;
    env.wait_eni_len(&node, 8, Duration::from_secs(20)).await;

    // A good value again is taken.
    env.set_config(&[("windows-warm-ip-target", "2")]).await;
    env.wait_eni_len(&node, 5, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vpc_resource_controller_switch_blocks_everything_until_removed() {
    let env = Env::new("e2e-foreign").await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "kube-system");
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "amazon-vpc-cni"},
        "data": {"enable-windows-ipam": "true"},
    }))
    .expect("a ConfigMap");
    cms.create(&PostParams::default(), &foreign)
        .await
        .expect("create kube-system/amazon-vpc-cni");

    let node = env.add_node("n0", "m5.large").await;
    let winipam = env.start("winipam-0").await;
    env.create_pod("pod-0", &node.name).await;
    env.create_pod("pod-1", &node.name).await;
    eventually("winipam_blocked 1", Duration::from_secs(10), || async {
        match winipam.metric("winipam_blocked", &[]).await {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eventually("Blocked condition", Duration::from_secs(10), || async {
        let status = env.pool(&node.name).await.and_then(|p| p.status);
        let blocked = status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Blocked" && c.status == "True")
        });
        if blocked {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    let event = eventually(
        "a ForeignIPAMEnabled Event",
        Duration::from_secs(10),
        || async {
            env.events_about("kube-system", "amazon-vpc-cni")
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("ForeignIPAMEnabled"))
                .ok_or_else(|| "none yet".to_string())
        },
    )
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        event
            .note
            .unwrap_or_default()
            .contains("enable-windows-ipam")
    );
    // A resync period and more: still nothing assigned, nothing on the ENI, and the extended
    // resource left to the other controller.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(env.node_capacity(&node.name).await, None);
    assert!(
        env.pods().await.values().all(|p| p.annotation.is_none()),
        "a pod got an address while blocked"
    );
    assert!(env.eni_ips(&node.eni_id).await.is_empty());
    assert_eq!(
        winipam.metric("winipam_pods_waiting_for_ip", &[]).await,
        Some(2.0)
    );

    cms.delete("amazon-vpc-cni", &DeleteParams::default())
        .await
        .expect("delete kube-system/amazon-vpc-cni");
    env.wait_annotated(&["pod-0".into(), "pod-1".into()], Duration::from_secs(15))
        .await;
    env.wait_eni_len(&node, 5, Duration::from_secs(10)).await;
    assert_eq!(winipam.metric("winipam_blocked", &[]).await, Some(0.0));
    assert_eq!(env.node_capacity(&node.name).await.as_deref(), Some("9"));
}
