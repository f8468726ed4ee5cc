//! Leader election on a real Lease: one leader at a time, hand-over on release, stepping down
//! when deposed, and stopping before the lease can be taken when the apiserver goes away.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;
use winipam::leader::{LeaderElector, LeaseElector, LeaseTimings};
use winipam::run::shutdown::{ShutdownTrigger, shutdown_channel};

use crate::k8s_support::K8sEnv;
use crate::support::controlplane::ControlPlane;

/// Short timings so the tests take seconds: renew every second, stop after 3 s without a
/// renewal, lease valid 6 s.
const TIMINGS: LeaseTimings = LeaseTimings {
    lease_duration: Duration::from_secs(6),
    renew_deadline: Duration::from_secs(3),
    retry_period: Duration::from_secs(1),
};

struct Running {
    leader: watch::Receiver<bool>,
    stop: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

fn start(elector: LeaseElector) -> Running {
    let (tx, leader) = watch::channel(false);
    let (stop, shutdown) = shutdown_channel();
    let task = tokio::spawn(elector.run(tx, shutdown));
    Running { leader, stop, task }
}

async fn wait_for(rx: &mut watch::Receiver<bool>, value: bool, secs: u64) -> Duration {
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(secs), rx.wait_for(|v| *v == value))
        .await
        .unwrap_or_else(|_| panic!("leadership did not become {value} within {secs} s"))
        .expect("the elector is running");
    started.elapsed()
}

/// A replica named `id` campaigning for the test's Lease `winipam`.
fn elector(env: &K8sEnv, id: &str) -> LeaseElector {
    LeaseElector::new(
        env.controller.clone(),
        env.ns.clone(),
        "winipam",
        id,
        TIMINGS,
    )
    .unwrap()
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get("winipam")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn one_leader_at_a_time_and_hand_over_on_release() {
    let env = K8sEnv::new("k8s-leader").await;
    let elector = |id: &str| elector(&env, id);
    let leases: Api<Lease> = Api::namespaced(env.admin.clone(), &env.ns);

    let mut a = start(elector("replica-a"));
    wait_for(&mut a.leader, true, 15).await;
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-a"));
    let spec = leases.get("winipam").await.unwrap().spec.unwrap();
    assert_eq!(spec.lease_duration_seconds, Some(6));

    let mut b = start(elector("replica-b"));
    // b stays a follower while a renews, well past a lease duration.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(*a.leader.borrow());
    assert!(!*b.leader.borrow());
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-a"));

    // a shuts down: it stops leading at once and gives the lease up; b takes over.
    a.stop.trigger();
    wait_for(&mut a.leader, false, 1).await;
    tokio::time::timeout(Duration::from_secs(10), a.task)
        .await
        .expect("a finishes")
        .unwrap();
    assert_ne!(holder(&leases).await.as_deref(), Some("replica-a"));
    let took = wait_for(&mut b.leader, true, 15).await;
    eprintln!("replica-b took over {took:?} after replica-a released the lease");
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-b"));

    b.stop.trigger();
    b.task.await.unwrap();
}

#[tokio::test]
async fn a_deposed_leader_stops_leading() {
    let env = K8sEnv::new("k8s-leader-deposed").await;
    let elector = LeaseElector::new(
        env.controller.clone(),
        env.ns.clone(),
        "winipam",
        "replica-a",
        TIMINGS,
    )
    .unwrap();
    let mut a = start(elector);
    wait_for(&mut a.leader, true, 15).await;

    // Someone else takes the lease (as an admin would, or a replica with a skewed clock).
    let leases: Api<Lease> = Api::namespaced(env.admin.clone(), &env.ns);
    let patch = json!({"spec": {
        "holderIdentity": "intruder",
        "renewTime": MicroTime(Timestamp::now()),
        "acquireTime": MicroTime(Timestamp::now()),
        "leaseDurationSeconds": 60,
    }});
    leases
        .patch("winipam", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let took = wait_for(&mut a.leader, false, 5).await;
    eprintln!("deposed leader stopped after {took:?}");
    assert_eq!(holder(&leases).await.as_deref(), Some("intruder"));
    a.stop.trigger();
    a.task.await.unwrap();
}

/// With the apiserver gone no renewal succeeds: the leader must stop within the renew deadline,
/// before the lease duration runs out and another replica could take over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_stops_before_its_lease_can_be_taken_when_the_apiserver_is_gone() {
    let cp = ControlPlane::start().await;
    let client = cp.admin_client().await;
    let elector = LeaseElector::new(client, "default", "winipam", "replica-a", TIMINGS).unwrap();
    let mut a = start(elector);
    wait_for(&mut a.leader, true, 15).await;
    // Let a few renewals happen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(*a.leader.borrow());

    let stopped_at = Instant::now();
    tokio::task::spawn_blocking(move || drop(cp)).await.unwrap();
    tokio::time::timeout(TIMINGS.lease_duration, a.leader.wait_for(|v| !*v))
        .await
        .expect("the leader stops before the lease expires")
        .unwrap();
    let after = stopped_at.elapsed();
    eprintln!("leader stopped {after:?} after the apiserver went away");
    // The last renewal was at most a retry period before the stop.
    assert!(
        after <= TIMINGS.renew_deadline + Duration::from_millis(500),
        "{after:?}"
    );
    a.stop.trigger();
    tokio::time::timeout(Duration::from_secs(10), a.task)
        .await
        .expect("shutdown does not hang on a dead apiserver")
        .unwrap();
}

/// A rolling upgrade: the leader gives the lease up while an old follower still waits for the
/// lease it last saw to expire, and a replica started after the release takes it at once. When
/// the old follower's wait ends it must find the new holder's fresh lease and leave it alone:
/// the new leader keeps leading and the Lease keeps naming it. (A follower that empties a lease
/// it last saw expiring, without checking what it now holds, left the Lease without a holder for
/// most of a minute in a chart upgrade.)
#[tokio::test]
async fn a_follower_leaves_alone_a_lease_taken_while_it_waited() {
    let env = K8sEnv::new("k8s-leader-upgrade").await;
    let elector = |id: &str| elector(&env, id);
    let leases: Api<Lease> = Api::namespaced(env.admin.clone(), &env.ns);

    let mut old = start(elector("old-leader"));
    wait_for(&mut old.leader, true, 15).await;
    let waiting = start(elector("old-follower"));
    // The follower has seen the old leader's lease.
    tokio::time::sleep(Duration::from_secs(2)).await;
    old.stop.trigger();
    tokio::time::timeout(Duration::from_secs(10), old.task)
        .await
        .expect("the old leader finishes")
        .unwrap();
    let mut new = start(elector("new-leader"));
    let mut waiting = waiting;
    let started = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(15), async {
        tokio::select! {
            _ = new.leader.wait_for(|l| *l) => "new-leader",
            _ = waiting.leader.wait_for(|l| *l) => "old-follower",
        }
    })
    .await
    .expect("someone takes the released lease within 15 s");
    eprintln!("{first} took the released lease in {:?}", started.elapsed());
    let (leading, other) = if first == "new-leader" {
        (&new, &waiting)
    } else {
        (&waiting, &new)
    };

    // Two lease durations: past the old follower's wait, and its next looks at the Lease.
    let until = Instant::now() + TIMINGS.lease_duration * 2;
    while Instant::now() < until {
        let holder_now = holder(&leases).await;
        assert_eq!(
            holder_now.as_deref(),
            Some(first),
            "the Lease must keep naming the replica that took it"
        );
        assert!(*leading.leader.borrow(), "{first} must keep leading");
        assert!(!*other.leader.borrow(), "only one leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for running in [new, waiting] {
        running.stop.trigger();
        running.task.await.unwrap();
    }
}
