//! `winipam run` serves the admission webhooks (SPEC 9) beside the controller, through the real
//! apiserver: a Windows pod gets the IP resource and then its address (in kube-system too); with
//! winipam stopped a Windows pod is still created (failurePolicy Ignore), and once winipam is
//! back the controller annotates it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use crate::support::e2e::{Env, eventually, pod_state, windows_pod};
use crate::support::winipam::Winipam;
use crate::webhook_support::{FileCerts, has_ip_resource, register};

#[tokio::test]
async fn run_serves_the_webhooks_and_pods_created_while_it_is_down_get_addresses_after() {
    let env = Env::new("e2e-webhooks").await;
    let node = env.add_node("a", "m5.large").await;

    let certs = FileCerts::new();
    let start = |env: &Env, drain: &str| {
        let mut options = env.options("winipam-webhooks");
        certs.serve(&mut options);
        options
            .extra_env
            .push(("WINIPAM_SHUTDOWN_DRAIN".to_owned(), drain.to_owned()));
        Winipam::start(&options)
    };

    let mut winipam = start(&env, "4s");
    winipam.wait_ready(Duration::from_secs(30)).await;
    register(&env, winipam.webhook_addr().port(), &certs.ca).await;

    let pods = env.pods_api();
    let created = pods
        .create(&PostParams::default(), &windows_pod("served", &node.name))
        .await
        .expect("create a Windows pod");
    assert!(
        has_ip_resource(&created),
        "the mutating webhook of `winipam run` injected the resource"
    );
    env.wait_annotated(&["served".to_owned()], Duration::from_secs(30))
        .await;

    // A Windows pod in kube-system: counted by the scheduler (the resource) and given an
    // address, as the VPC Resource Controller does there.
    let system_pods = Api::<Pod>::namespaced(env.client.clone(), "kube-system");
    let name = format!("system-{}", node.name);
    let created = system_pods
        .create(&PostParams::default(), &windows_pod(&name, &node.name))
        .await
        .expect("create a Windows pod in kube-system");
    assert!(
        has_ip_resource(&created),
        "kube-system pods get the resource"
    );
    let annotated = eventually(
        "the kube-system pod gets an address",
        Duration::from_secs(30),
        || async {
            let pod = system_pods.get(&name).await.map_err(|e| e.to_string())?;
            pod_state(&pod)
                .filter(|state| state.annotation.is_some())
                .ok_or_else(|| format!("not annotated yet: {:?}", pod.metadata.annotations))
        },
    )
    .await;
    assert_ne!(
        annotated.address(),
        env.pods().await["served"].address(),
        "one address per pod"
    );
    system_pods
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete the kube-system pod");

    // Terminating: /readyz fails at once (the replica leaves the Service), yet the webhooks serve
    // through the drain, so a pod admitted while the endpoint is on its way out still gets the
    // resource. Without the drain it would not, and the scheduler would overcommit its node
    // (a rolling upgrade in the chart test showed it).
    winipam.terminate();
    eventually(
        "/readyz fails once terminating",
        Duration::from_secs(2),
        || async {
            match winipam.get("/readyz").await {
                Ok((503, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // Well past the controller's own stop (it gives up the lease within a second), inside the
    // 4 s drain.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let created = pods
        .create(&PostParams::default(), &windows_pod("draining", &node.name))
        .await
        .expect("create a Windows pod while winipam drains");
    assert!(
        has_ip_resource(&created),
        "the webhooks serve through the drain"
    );

    // Down: creation still succeeds (Ignore), without the resource and without an address.
    winipam.stop().await;
    let created = pods
        .create(
            &PostParams::default(),
            &windows_pod("while-down", &node.name),
        )
        .await
        .expect("a Windows pod is created while winipam is down");
    assert!(
        !has_ip_resource(&created),
        "nobody could inject the resource"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = env.pods().await;
    assert_eq!(state["while-down"].annotation, None, "no controller ran");

    // Back: the controller annotates it.
    let mut winipam = start(&env, "0s");
    winipam.wait_ready(Duration::from_secs(30)).await;
    let state = env
        .wait_annotated(
            &[
                "served".to_owned(),
                "draining".to_owned(),
                "while-down".to_owned(),
            ],
            Duration::from_secs(30),
        )
        .await;
    assert_ne!(state["served"].address(), state["while-down"].address());
    winipam.stop().await;
}
