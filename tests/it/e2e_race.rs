//! End to end, the name-reuse race (SPEC 6.2): a pod deleted and re-created under the same name
//! while its address is being written never receives the old pod's address. The annotation
//! write carries a test of the pod's UID, so it cannot land on the new pod.
//!
//! The window is opened with the controller's test-only `--test-annotate-delay` (every
//! annotation write waits that long first), so the deletion and re-creation fall inside it
//! every time instead of by luck; a second test races without the hook, many times.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::support::e2e::{Env, TestNode, assert_distinct, eventually};
use crate::support::winipam::Winipam;

/// The address the controller chose for pod UID `uid`, from its debug log.
fn chosen_for(log: &str, uid: &str) -> Option<Ipv4Addr> {
    log.lines()
        .filter(|l| l.contains("address chosen") && l.contains(&format!("uid={uid}")))
        .find_map(|l| {
            l.split("address=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_pod_never_gets_the_address_written_for_its_predecessor() {
    let env = Env::new("e2e-race").await;
    let first = env.add_node("first", "m5.large").await;
    let second = env.add_node("second", "m5.large").await;
    let mut options = env.options("winipam-0");
    options.extra_args = vec!["--test-annotate-delay".into(), "1500ms".into()];
    let mut winipam = Winipam::start(&options);
    winipam.wait_ready(Duration::from_secs(30)).await;
    // Warm pools first, so the addresses are chosen the moment the pods are seen.
    env.wait_eni_len(&first, 3, Duration::from_secs(20)).await;
    env.wait_eni_len(&second, 3, Duration::from_secs(20)).await;

    for round in 0..4 {
        // The new pod lands on the other node in even rounds (its address must come from that
        // node's ENI: the old one would be plainly wrong) and on the same node in odd ones.
        let (old_node, new_node): (&TestNode, &TestNode) = if round % 2 == 0 {
            (&first, &second)
        } else {
            (&second, &second)
        };
        let name = format!("reused-{round}");
        let old = env.create_pod(&name, &old_node.name).await;
        // The controller has chosen the address and is waiting to write it.
        let old_addr = eventually("address chosen", Duration::from_secs(5), || async {
            chosen_for(&winipam.log(), &old.uid).ok_or_else(|| "not yet".to_string())
        })
        .await;
        env.delete_pod(&name).await;
        let new = env.create_pod(&name, &new_node.name).await;
        assert_ne!(old.uid, new.uid);

        let pods = env
            .wait_annotated(std::slice::from_ref(&name), Duration::from_secs(15))
            .await;
        let got = &pods[&name];
        assert_eq!(got.uid, new.uid);
        let addr = got.address().expect("an address");
        let on_eni: BTreeSet<Ipv4Addr> = env.eni_ips(&new_node.eni_id).await.into_iter().collect();
        assert!(
            on_eni.contains(&addr),
            "round {round}: {addr} is not on {}'s ENI",
            new_node.name
        );
        if old_node.name != new_node.name {
            assert_ne!(addr, old_addr, "round {round}: the old pod's address");
        }
        // The old write was refused (UID test), seen as "pod gone".
        let log = winipam.log();
        assert!(
            log.lines()
                .any(|l| l.contains("taken back") && l.contains(&format!("uid={}", old.uid))),
            "round {round}: the old pod's write did not meet the new pod"
        );
        // Exactly one pod holds an address on the new node's ENI per pod there.
        let status = eventually("pool counts", Duration::from_secs(15), || async {
            let status = env.pool(&new_node.name).await.and_then(|p| p.status);
            let status = status.ok_or("no status")?;
            let live = env
                .pods()
                .await
                .values()
                .filter(|p| p.node == new_node.name)
                .count() as u32;
            if status.counts.used == live {
                Ok(status)
            } else {
                Err(format!("used {} for {live} pods", status.counts.used))
            }
        })
        .await;
        assert_eq!(
            status.counts.cooling, 0,
            "nothing was written, nothing cools"
        );
    }
    let pods = env.pods().await;
    assert_distinct(&pods.values().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_recreate_at_full_speed_never_shares_an_address() {
    let env = Env::new("e2e-race-fast").await;
    env.set_config(&[("ip-cooldown-seconds", "2")]).await;
    let a = env.add_node("a", "m5.large").await;
    let b = env.add_node("b", "m5.large").await;
    let _winipam = env.start("winipam-0").await;

    let names: Vec<String> = (0..4).map(|i| format!("p{i}")).collect();
    for round in 0..15 {
        for (i, name) in names.iter().enumerate() {
            let node = if (round + i) % 2 == 0 { &a } else { &b };
            env.delete_pod(name).await;
            env.create_pod(name, &node.name).await;
        }
    }
    let pods = env.wait_annotated(&names, Duration::from_secs(30)).await;
    assert_distinct(&pods.values().collect::<Vec<_>>());
    for pod in pods.values() {
        let node = if pod.node == a.name { &a } else { &b };
        let addr = pod.address().expect("an address");
        assert!(
            env.eni_ips(&node.eni_id).await.contains(&addr),
            "{} has {addr}, not on {}'s ENI",
            pod.name,
            node.name
        );
    }
}
