//! End to end, nodes winipam cannot manage (SPEC 2, 4): an instance type neither EC2 nor the
//! embedded table knows gets a Warning Event and no capacity, and the other nodes carry on.
//!
//! moto runs instances of any type name it is given (its type validation is off by default) and
//! answers `DescribeInstanceTypes` for an unknown one with `InvalidInstanceType`, as EC2 does:
//! so this is the real path, EC2 lookup then table, both missing.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use crate::support::e2e::{Env, eventually};
use crate::support::winipam::sample;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_instance_type_is_reported_and_other_nodes_work() {
    let env = Env::new("e2e-nodes").await;
    let good = env.add_node("good", "m5.large").await;
    let mut winipam = env.start("winipam-0").await;
    winipam.wait_leading(Duration::from_secs(15)).await;
    // Nodes joining later: the leader stays ready all along (only the rebuild on taking the
    // lead holds readiness back).
    let ((odd, late), not_ready) = tokio::join!(
        async {
            let odd = env.add_node("odd", "x9.imaginary").await;
            let late = env.add_node("late", "m5.large").await;
            env.wait_eni_len(&late, 3, Duration::from_secs(15)).await;
            (odd, late)
        },
        async {
            let mut not_ready = Vec::new();
            let until = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < until {
                match winipam.get("/readyz").await {
                    Ok((200, _)) => {}
                    other => not_ready.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            not_ready
        }
    );
    assert!(
        not_ready.is_empty(),
        "/readyz failed while nodes joined: {not_ready:?}"
    );
    assert_eq!(env.node_capacity(&late.name).await.as_deref(), Some("9"));
    env.create_pod("on-good", &good.name).await;
    env.create_pod("on-odd", &odd.name).await;

    let event = eventually(
        "UnsupportedInstanceType Event",
        Duration::from_secs(15),
        || async {
            env.events_about("default", &odd.name)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("UnsupportedInstanceType"))
                .ok_or_else(|| "none yet".to_string())
        },
    )
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        event.note.unwrap_or_default().contains("x9.imaginary"),
        "the note names the type"
    );

    env.wait_annotated(&["on-good".into()], Duration::from_secs(15))
        .await;
    assert_eq!(env.node_capacity(&good.name).await.as_deref(), Some("9"));
    eventually(
        "unsupported node counted",
        Duration::from_secs(10),
        || async {
            match winipam
                .metric("winipam_nodes", &[("state", "unsupported")])
                .await
            {
                Some(1.0) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(
        winipam
            .metric("winipam_nodes", &[("state", "managed")])
            .await,
        Some(2.0)
    );
    eventually("Unsupported condition", Duration::from_secs(15), || async {
        let status = env.pool(&odd.name).await.and_then(|p| p.status);
        let unsupported = status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Unsupported" && c.status == "True")
        });
        if unsupported {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;

    // Nothing for the odd node: no capacity, no address, nothing asked of EC2 for its ENI.
    assert_eq!(env.node_capacity(&odd.name).await, None);
    assert_eq!(env.pods().await["on-odd"].annotation, None);
    assert!(env.eni_ips(&odd.eni_id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_an_instance_id_are_left_alone_and_deleted_nodes_cost_no_ec2_call() {
    let env = Env::new("e2e-nodes-gone").await;
    let node = env.add_node("n0", "m5.large").await;
    let winipam = env.start("winipam-0").await;
    env.wait_eni_len(&node, 3, Duration::from_secs(15)).await;

    // A Windows node whose providerID names no EC2 instance (not on AWS, or misregistered).
    let nodes: Api<Node> = Api::all(env.client.clone());
    let foreign: Node = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{}-nowhere", env.namespace),
            "labels": {"kubernetes.io/os": "windows"},
        },
        "spec": {"providerID": "kind://docker/windows/worker"},
    }))
    .expect("a Node");
    nodes
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create the Node");
    let name = format!("{}-nowhere", env.namespace);
    eventually(
        "MissingProviderID Event",
        Duration::from_secs(10),
        || async {
            env.events_about("default", &name)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("MissingProviderID"))
                .map(|_| ())
                .ok_or_else(|| "none yet".to_string())
        },
    )
    .await;
    eventually("counted unsupported", Duration::from_secs(10), || async {
        match winipam
            .metric("winipam_nodes", &[("state", "unsupported")])
            .await
        {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(env.node_capacity(&name).await, None);

    // A deleted node: its pool is dropped, its ENI left as it is (the instance goes with it).
    let unassigned = |text: &str| {
        sample(
            text,
            "winipam_ec2_requests_total",
            &[("operation", "UnassignPrivateIpAddresses")],
        )
        .unwrap_or(0.0)
    };
    let before = unassigned(&winipam.metrics().await);
    nodes
        .delete(&node.name, &DeleteParams::default())
        .await
        .expect("delete the Node");
    eventually("node series gone", Duration::from_secs(10), || async {
        let text = winipam.metrics().await;
        match sample(&text, "winipam_node_capacity_ips", &[("node", &node.name)]) {
            None => Ok(()),
            Some(v) => Err(format!("still {v}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(unassigned(&winipam.metrics().await), before);
    assert_eq!(env.eni_ips(&node.eni_id).await.len(), 3);
    assert_eq!(
        winipam
            .metric("winipam_nodes", &[("state", "managed")])
            .await,
        Some(0.0)
    );
}
