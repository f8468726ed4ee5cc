//! End to end, restart and failover (SPEC 6.3): the controller keeps no state of its own, so a
//! SIGKILL in the middle of churn, or the loss of the leader, must leave no address on two
//! live pods, no pod without one, no address leaked, and no cool-down cut short.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use crate::support::e2e::{Env, LEASE_SECONDS, TestNode, assert_distinct, eventually};
use crate::support::observe::{AnnotationWatch, api_writes};
use crate::support::winipam::{Winipam, samples};

const COOLDOWN: Duration = Duration::from_secs(5);
const WARM: usize = 3;
const CAPACITY: usize = 9;

/// Once churn is over: every pod annotated with an address of its node's ENI, none shared,
/// and each ENI back to exactly what the targets ask for (nothing leaked).
async fn assert_settled(env: &Env, nodes: &[TestNode]) {
    let pods = eventually("all pods annotated", Duration::from_secs(40), || async {
        let pods = env.pods().await;
        let missing = pods.values().filter(|p| p.annotation.is_none()).count();
        if missing == 0 {
            Ok(pods)
        } else {
            Err(format!("{missing} of {} unannotated", pods.len()))
        }
    })
    .await;
    assert_distinct(&pods.values().collect::<Vec<_>>());
    for node in nodes {
        let used = pods.values().filter(|p| p.node == node.name).count();
        let want = (used + WARM).min(CAPACITY);
        // Addresses the first controller listed as used and whose pods went while no
        // controller ran are held for the orphan hold (60 s) from the restart.
        eventually(
            &format!("{}: {used} used, ENI back to {want}", node.name),
            Duration::from_secs(30) + winipam::ipam::pool::ORPHAN_HOLD,
            || async {
                let ips = env.eni_ips(&node.eni_id).await;
                let status = env.pool(&node.name).await.and_then(|p| p.status);
                let counts = status.map(|s| s.counts).unwrap_or_default();
                if ips.len() == want && counts.used as usize == used && counts.cooling == 0 {
                    Ok(())
                } else {
                    Err(format!("{} on the ENI, status {counts:?}", ips.len()))
                }
            },
        )
        .await;
        let ips = env.eni_ips(&node.eni_id).await;
        for pod in pods.values().filter(|p| p.node == node.name) {
            let addr = pod.address().expect("an address");
            assert!(ips.contains(&addr), "{}: {addr} not on the ENI", pod.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_churn_loses_nothing() {
    let env = Env::new("e2e-restart").await;
    env.set_config(&[("ip-cooldown-seconds", "5")]).await;
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(env.add_node(&format!("n{i}"), "m5.large").await);
    }
    let watch = AnnotationWatch::start(&env).await;
    let mut first = env.start("winipam-0").await;
    let mut second: Option<Winipam> = None;

    // 200 operations: a pod created on each step, the oldest deleted once 16 live, so 110
    // creates and 90 deletes; the controller is killed at step 40 and started again at once
    // (it leads once the dead one's lease expires), with churn going on all along.
    let mut live: VecDeque<(String, String)> = VecDeque::new();
    let mut deleted: Vec<(String, Instant)> = Vec::new();
    let mut ops = 0;
    let mut step = 0;
    while ops < 200 {
        if step == 40 {
            first.kill().await;
            second = Some(Winipam::start(&env.options("winipam-1")));
        }
        let node = &nodes[step % nodes.len()];
        let name = format!("churn-{step}");
        let pod = env.create_pod(&name, &node.name).await;
        live.push_back((name, pod.uid));
        ops += 1;
        if live.len() > 16 && ops < 200 {
            let (name, uid) = live.pop_front().expect("a live pod");
            deleted.push((uid, Instant::now()));
            env.delete_pod(&name).await;
            ops += 1;
        }
        step += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut second = second.expect("the second controller");
    second.wait_ready(Duration::from_secs(30)).await;
    assert_settled(&env, &nodes).await;

    watch.with(|log| {
        assert!(
            log.changed.is_empty(),
            "annotations changed: {:?}",
            log.changed
        );
        assert!(log.shared.is_empty(), "addresses shared: {:?}", log.shared);
        // Cool-down: no address was seen on a new pod earlier than `COOLDOWN` after the pod
        // that had it was deleted (the deletion time is taken before the delete call, so this
        // only ever errs on the lenient side).
        let mut freed: BTreeMap<Ipv4Addr, Vec<Instant>> = BTreeMap::new();
        for (uid, at) in &deleted {
            if let Some((_, value)) = log.first.get(uid)
                && let Some(addr) = value.split('/').next().and_then(|a| a.parse().ok())
            {
                freed.entry(addr).or_default().push(*at);
            }
        }
        let mut early = Vec::new();
        for (uid, (seen, value)) in &log.first {
            let Some(addr) = value
                .split('/')
                .next()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            for at in freed.get(&addr).into_iter().flatten() {
                if *seen > *at && *seen < *at + COOLDOWN {
                    early.push(format!(
                        "{addr} on {uid} {:?} after its release",
                        seen.duration_since(*at)
                    ));
                }
            }
        }
        assert!(early.is_empty(), "cool-down cut short: {early:?}");
    });
    assert!(
        second.log().contains("leading: rebuilding node pools"),
        "the restarted controller took over"
    );

    // Measurements: API writes of both lives, EC2 calls and memory of the second.
    let mut writes = api_writes(&first.log());
    for (kind, n) in api_writes(&second.log()) {
        *writes.entry(kind).or_insert(0) += n;
    }
    let total: usize = writes
        .iter()
        .filter(|(k, _)| **k != "lease")
        .map(|(_, n)| n)
        .sum();
    let metrics = second.metrics().await;
    let ec2: Vec<String> = samples(&metrics, "winipam_ec2_requests_total")
        .into_iter()
        .map(|(labels, n)| format!("{labels:?}={n}"))
        .collect();
    eprintln!(
        "MEASURE e2e_restart: {step} pods created, {} deleted: API writes {writes:?} ({:.2} per \
         pod created, lease renewals aside); second life's EC2 calls {ec2:?}; RSS {} KiB",
        deleted.len(),
        total as f64 / step as f64,
        second.rss_kib().unwrap_or(0)
    );
}

/// Which of two replicas leads, by their `winipam_leader` gauges.
async fn leader_of<'a>(
    a: &'a Winipam,
    b: &'a Winipam,
) -> Result<(&'a Winipam, &'a Winipam), String> {
    let la = a.metric("winipam_leader", &[]).await;
    let lb = b.metric("winipam_leader", &[]).await;
    match (la, lb) {
        (Some(x), Some(y)) if x == 1.0 && y == 0.0 => Ok((a, b)),
        (Some(x), Some(y)) if x == 0.0 && y == 1.0 => Ok((b, a)),
        other => Err(format!("leader gauges {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_within_the_lease_duration() {
    let env = Env::new("e2e-failover").await;
    let nodes = vec![
        env.add_node("n0", "m5.large").await,
        env.add_node("n1", "m5.large").await,
    ];
    let watch = AnnotationWatch::start(&env).await;
    let mut a = env.start("winipam-a").await;
    let mut b = env.start("winipam-b").await;
    let (leader, _) = eventually("one leader", Duration::from_secs(15), || async {
        leader_of(&a, &b).await
    })
    .await;
    let leader_name = leader.name().to_owned();
    for i in 0..6 {
        env.create_pod(&format!("before-{i}"), &nodes[i % 2].name)
            .await;
    }
    let names: Vec<String> = (0..6).map(|i| format!("before-{i}")).collect();
    env.wait_annotated(&names, Duration::from_secs(20)).await;

    // Kill the leader; pods keep coming.
    let (dead, standby) = if a.name() == leader_name {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let leases = Api::<Lease>::namespaced(env.client.clone(), &env.namespace);
    let renewed = |lease: Lease| -> std::time::SystemTime {
        lease
            .spec
            .and_then(|s| s.renew_time)
            .map(|t| t.0.into())
            .expect("a renewed Lease")
    };
    dead.kill().await;
    let killed = Instant::now();
    let killed_at = std::time::SystemTime::now();
    // The dead leader's last renewal: its lease ends one lease duration later.
    let last_renewal = renewed(leases.get("winipam").await.expect("the Lease"));
    for i in 0..6 {
        env.create_pod(&format!("after-{i}"), &nodes[i % 2].name)
            .await;
    }
    eventually("the standby leads", Duration::from_secs(20), || async {
        match standby.metric("winipam_leader", &[]).await {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let takeover = killed.elapsed();
    let lease = leases.get("winipam").await.expect("the Lease");
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    assert!(
        holder.starts_with(standby.name()),
        "the Lease is held by {holder}"
    );
    // Nobody may take a lease before it expires, one lease duration after its last renewal,
    // which can come just before the kill: no lease election leads again within the lease
    // duration of the kill every time. What it can do is take over as soon as the lease
    // expires. The elector waits a random 0.1-1 s after forcing an expired lease free (so two
    // standbys do not collide); with the API calls (on a loaded 2-core test machine) and this
    // test's polling, the standby must lead within 2 s of the expiry.
    let expiry = last_renewal + Duration::from_secs(LEASE_SECONDS);
    let after_expiry = (killed_at + takeover)
        .duration_since(expiry)
        .unwrap_or_default();
    eprintln!(
        "MEASURE e2e_failover: leader killed -> standby leads in {takeover:?} (lease \
         {LEASE_SECONDS} s; {after_expiry:?} after the dead leader's lease expired)"
    );
    assert!(
        after_expiry <= Duration::from_secs(2),
        "took over {after_expiry:?} after the lease expired ({takeover:?} after the kill)"
    );
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 2),
        "took over after {takeover:?}"
    );

    let after: Vec<String> = (0..6).map(|i| format!("after-{i}")).collect();
    env.wait_annotated(&after, Duration::from_secs(20)).await;
    assert_settled(&env, &nodes).await;
    watch.with(|log| {
        assert!(
            log.changed.is_empty(),
            "annotations changed: {:?}",
            log.changed
        );
        assert!(log.shared.is_empty(), "addresses shared: {:?}", log.shared);
        assert_eq!(log.first.len(), 12);
    });
}
