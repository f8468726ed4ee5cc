//! End to end, rebuilding from what the cluster says (SPEC 6.3): annotations written before
//! the controller started are adopted as they are; two live pods naming one address both get
//! an Event and the address is never handed out while either lives; an annotation naming an
//! address that is not on the ENI gets an Event and that address is never handed out either.

use std::time::Duration;

use crate::support::e2e::{Env, eventually};
use crate::support::observe::AnnotationWatch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_found_on_start_are_adopted_and_conflicts_reported() {
    let env = Env::new("e2e-adopt").await;
    env.set_config(&[("ip-cooldown-seconds", "2")]).await;
    let node = env.add_node("n0", "m5.large").await;
    // Three addresses already on the ENI, as an earlier controller would have left them.
    env.ec2
        .assign_private_ip_addresses()
        .network_interface_id(&node.eni_id)
        .secondary_private_ip_address_count(3)
        .send()
        .await
        .expect("AssignPrivateIpAddresses");
    let on_eni = env.eni_ips(&node.eni_id).await;
    assert_eq!(on_eni.len(), 3);
    let len = node.subnet_cidr.prefix_len();
    let (kept, shared) = (on_eni[0], on_eni[1]);
    // An address of the subnet that is not on the ENI.
    let stray = node
        .subnet_cidr
        .hosts()
        .find(|a| !on_eni.contains(a) && u32::from(*a) % 256 == 200)
        .expect("a free host address");
    env.create_annotated_pod("kept", &node.name, &format!("{kept}/{len}"))
        .await;
    env.create_annotated_pod("dup-1", &node.name, &format!("{shared}/{len}"))
        .await;
    env.create_annotated_pod("dup-2", &node.name, &format!("{shared}/{len}"))
        .await;
    env.create_annotated_pod("stray", &node.name, &format!("{stray}/{len}"))
        .await;
    env.create_pod("fresh", &node.name).await;

    let watch = AnnotationWatch::start(&env).await;
    let winipam = env.start("winipam-0").await;
    for (pod, reason) in [
        ("dup-1", "DuplicateIPAnnotation"),
        ("dup-2", "DuplicateIPAnnotation"),
        ("stray", "IPNotOnENI"),
    ] {
        eventually(
            &format!("{reason} on {pod}"),
            Duration::from_secs(15),
            || async {
                env.events_about(&env.namespace, pod)
                    .await
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some(reason))
                    .map(|_| ())
                    .ok_or_else(|| "none yet".to_string())
            },
        )
        .await;
    }
    assert_eq!(
        winipam
            .metric("winipam_duplicate_ip_annotations", &[])
            .await,
        Some(1.0)
    );

    // The new pod gets an address none of the others names; theirs are left as they were.
    let pods = env
        .wait_annotated(&["fresh".into()], Duration::from_secs(15))
        .await;
    let fresh = pods["fresh"].address().expect("an address");
    assert!(![kept, shared, stray].contains(&fresh), "fresh got {fresh}");
    assert!(env.eni_ips(&node.eni_id).await.contains(&fresh));

    // One of the two goes: the other still holds the address, which stays out of reach.
    env.delete_pod("dup-1").await;
    eventually("no duplicate left", Duration::from_secs(10), || async {
        match winipam
            .metric("winipam_duplicate_ip_annotations", &[])
            .await
        {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Fill the node: 9 addresses, 4 named by live pods (kept, dup-2, stray is off the ENI,
    // fresh), so 6 more pods may come; none of them gets a named address.
    let more: Vec<String> = (0..6).map(|i| format!("more-{i}")).collect();
    for name in &more {
        env.create_pod(name, &node.name).await;
    }
    let pods = env.wait_annotated(&more, Duration::from_secs(20)).await;
    for name in &more {
        let addr = pods[name].address().expect("an address");
        assert!(![kept, shared, stray].contains(&addr), "{name} got {addr}");
    }
    watch.with(|log| {
        assert!(
            log.changed.is_empty(),
            "annotations changed: {:?}",
            log.changed
        );
    });
}
