use std::collections::BTreeMap;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};

use super::tests::node;
use super::*;
use crate::k8s::{
    AnnotateOutcome, Cluster, ClusterError, EnsureOutcome, EventSeverity, ObjectKind, ObjectRef,
};

fn event_object() -> ObjectRef {
    ObjectRef {
        kind: ObjectKind::Node,
        name: "n1".into(),
        namespace: None,
        uid: "u1".into(),
    }
}

/// A cluster with node n1 (its pool object created), pod ns/p on it, and n2 without a pool.
async fn populated() -> (SimCluster, String) {
    let c = SimCluster::new(SimClusterConfig::instant(7));
    let n1 = c.add_node(node("n1"));
    c.add_node(node("n2"));
    c.ensure_pool_object("n1", &n1).await.unwrap();
    let pod = c.bind_pod("ns", "p", "n1");
    (c, pod)
}

fn status() -> NodeAddressPoolStatus {
    NodeAddressPoolStatus {
        capacity: Some(9),
        ..Default::default()
    }
}

/// One write of every kind; the results in WriteKind order.
async fn write_each_kind(c: &SimCluster, pod_uid: &str) -> Vec<Result<(), ClusterError>> {
    vec![
        c.annotate_pod("ns", "p", pod_uid, "10.0.0.5/19", false)
            .await
            .map(|o| assert_eq!(o, AnnotateOutcome::Written)),
        c.set_node_capacity("n1", Some(9)).await,
        c.ensure_pool_object("n2", "n2-uid")
            .await
            .map(|o| assert_eq!(o, EnsureOutcome::Created)),
        c.write_pool_status("n1", &status()).await,
        c.publish_event(&event_object(), EventSeverity::Warning, "R", "note")
            .await,
    ]
}

/// Whether each write of [`write_each_kind`] took effect.
fn applied(c: &SimCluster) -> Vec<bool> {
    vec![
        c.pod_annotation("ns", "p").is_some(),
        c.node_capacity("n1").is_some(),
        c.pool_object_exists("n2"),
        c.pool_status("n1").is_some(),
        !c.events().is_empty(),
    ]
}

#[tokio::test(start_paused = true)]
async fn conflicts_at_rate_one_refuse_every_write_as_the_real_adapter_would() {
    let (c, uid) = populated().await;
    c.set_random_write_faults(ApiFaults {
        conflict_rate: 1.0,
        ..Default::default()
    });
    let results = write_each_kind(&c, &uid).await;
    for (r, resource) in results.iter().zip([
        "pods \"p\"",
        "nodes \"n1\"",
        "nodeaddresspools.winipam.dev \"n2\"",
        "nodeaddresspools.winipam.dev \"n1\"",
        "events.events.k8s.io \"n1\"",
    ]) {
        let Err(ClusterError::Conflict(message)) = r else {
            panic!("expected a conflict, got {r:?}");
        };
        assert!(message.contains(resource), "{message}");
        assert!(
            message.contains("the object has been modified"),
            "{message}"
        );
    }
    // The value the real adapter makes of a 409 from the apiserver.
    let status = kube::core::Status::failure("m", "Conflict").with_code(409);
    assert!(matches!(
        ClusterError::from(kube::Error::Api(status.boxed())),
        ClusterError::Conflict(_)
    ));
    assert_eq!(applied(&c), [false; 5]);
    assert_eq!(c.request_counts().faulted, 5);
}

/// Every kind of write under `faults` fails with `code` `reason`, a transient error; returns
/// the cluster to look at what was applied.
async fn every_write_fails_with(faults: ApiFaults, code: u16, reason: &str) -> SimCluster {
    let (c, uid) = populated().await;
    c.set_random_write_faults(faults);
    for r in write_each_kind(&c, &uid).await {
        let Err(
            e @ ClusterError::Rejected {
                code: got,
                reason: why,
                ..
            },
        ) = &r
        else {
            panic!("expected a {code}, got {r:?}");
        };
        assert_eq!((*got, why.as_str()), (code, reason));
        assert!(e.is_transient());
    }
    assert_eq!(c.request_counts().faulted, 5);
    c
}

#[tokio::test(start_paused = true)]
async fn server_errors_at_rate_one_refuse_every_write() {
    let faults = ApiFaults {
        server_error_rate: 1.0,
        ..Default::default()
    };
    let c = every_write_fails_with(faults, 500, "InternalError").await;
    assert_eq!(applied(&c), [false; 5]);
}

#[tokio::test(start_paused = true)]
async fn apply_then_fail_at_rate_one_applies_every_write_and_reports_a_timeout() {
    let faults = ApiFaults {
        apply_then_fail_rate: 1.0,
        ..Default::default()
    };
    let c = every_write_fails_with(faults, 504, "Timeout").await;
    assert_eq!(applied(&c), [true; 5]);
    assert_eq!(c.pod_annotation("ns", "p").as_deref(), Some("10.0.0.5/19"));
    assert_eq!(c.pool_status("n1"), Some(status()));
}

/// The virtual time each of a run of writes completed at, with latencies on.
async fn write_times(faults: Option<ApiFaults>) -> Vec<Duration> {
    let c = SimCluster::new(SimClusterConfig::default());
    c.add_node(node("n1"));
    if let Some(f) = faults {
        c.set_random_write_faults(f);
    }
    let mut times = Vec::new();
    for i in 0..50 {
        c.set_node_capacity("n1", Some(i)).await.unwrap();
        times.push(c.elapsed());
    }
    times
}

#[tokio::test(start_paused = true)]
async fn zero_rates_change_nothing_not_even_the_latency_draws() {
    let (c, uid) = populated().await;
    c.set_random_write_faults(ApiFaults::default());
    assert!(write_each_kind(&c, &uid).await.iter().all(Result::is_ok));
    assert_eq!(c.request_counts().faulted, 0);

    let baseline = write_times(None).await;
    assert_eq!(write_times(Some(ApiFaults::default())).await, baseline);
    // Faults draw from their own stream: the latencies stay those of the seed.
    let some = ApiFaults {
        conflict_rate: 1e-9,
        ..Default::default()
    };
    let with = write_times(Some(some)).await;
    let deltas = |t: &[Duration]| -> Vec<Duration> { t.windows(2).map(|w| w[1] - w[0]).collect() };
    assert_eq!(deltas(&with), deltas(&baseline));
    assert!(deltas(&baseline).windows(2).any(|w| w[0] != w[1]));
}

#[tokio::test(start_paused = true)]
async fn mixed_rates_follow_their_probabilities_and_the_seed() {
    async fn outcomes(seed: u64) -> Vec<Option<u16>> {
        let c = SimCluster::new(SimClusterConfig::instant(seed));
        c.add_node(node("n1"));
        c.set_random_write_faults(ApiFaults {
            conflict_rate: 0.2,
            server_error_rate: 0.1,
            apply_then_fail_rate: 0.1,
        });
        let mut out = Vec::new();
        for _ in 0..2000 {
            out.push(match c.set_node_capacity("n1", Some(1)).await {
                Ok(()) => None,
                Err(ClusterError::Conflict(_)) => Some(409),
                Err(ClusterError::Rejected { code, .. }) => Some(code),
                Err(e) => panic!("{e:?}"),
            });
        }
        out
    }
    let a = outcomes(3).await;
    assert_eq!(a, outcomes(3).await);
    assert_ne!(a, outcomes(4).await);
    let count = |code: Option<u16>| a.iter().filter(|o| **o == code).count();
    assert!(
        (330..470).contains(&count(Some(409))),
        "{}",
        count(Some(409))
    );
    assert!(
        (140..260).contains(&count(Some(500))),
        "{}",
        count(Some(500))
    );
    assert!(
        (140..260).contains(&count(Some(504))),
        "{}",
        count(Some(504))
    );
    assert!((1050..1350).contains(&count(None)), "{}", count(None));
}

#[tokio::test(start_paused = true)]
async fn planned_faults_come_before_random_ones() {
    let (c, uid) = populated().await;
    c.set_random_write_faults(ApiFaults {
        server_error_rate: 1.0,
        ..Default::default()
    });
    let lost = ClusterError::Transport("planned".into());
    c.inject(
        WriteKind::Annotate,
        WriteFault::ApplyThenFail(lost.clone()),
        1,
    );
    assert_eq!(
        c.annotate_pod("ns", "p", &uid, "10.0.0.5/19", true).await,
        Err(lost)
    );
    assert!(matches!(
        c.annotate_pod("ns", "p", &uid, "10.0.0.5/19", true).await,
        Err(ClusterError::Rejected { code: 500, .. })
    ));
}

/// The next item if one is ready now (no time passes).
fn ready<T>(s: &mut (impl Stream<Item = T> + Unpin)) -> Option<T> {
    s.next().now_or_never().flatten()
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| name(i).to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_cut_watch_misses_the_outage_then_sees_the_complete_current_set() {
    let c = SimCluster::new(SimClusterConfig::instant(1));
    c.add_node(node("n1"));
    c.bind_pod("ns", "p1", "n1");
    c.set_config_map("kube-system", "amazon-vpc-cni", BTreeMap::new());
    let mut nodes = c.watch_nodes().boxed();
    let mut pods = c.watch_pods().boxed();
    let mut config = c.watch_config("winipam-system", "winipam").boxed();
    let mut foreign = c.watch_foreign_ipam().boxed();
    assert!(ready(&mut nodes).is_some() && ready(&mut pods).is_some());
    assert_eq!(ready(&mut config), Some(None));
    assert!(matches!(ready(&mut foreign), Some(Some(_))));

    c.cut_watches(Duration::from_secs(10));
    c.add_node(node("n2"));
    c.delete_pod("ns", "p1");
    c.bind_pod("ns", "p2", "n1");
    let data = BTreeMap::from([("warm-ip-target".to_string(), "5".to_string())]);
    c.set_config_map("winipam-system", "winipam", data.clone());
    c.delete_config_map("kube-system", "amazon-vpc-cni");
    // Subscribed during the outage: unaffected.
    let mut late = c.watch_pods().boxed();
    assert!(matches!(ready(&mut late), Some(WatchEvent::Resynced(v)) if v.len() == 1));
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.bind_pod("ns", "p3", "n1");
    assert!(matches!(ready(&mut late), Some(WatchEvent::Applied(p)) if &*p.name == "p3"));
    assert!(ready(&mut nodes).is_none());
    assert!(ready(&mut pods).is_none());
    assert!(ready(&mut config).is_none());
    assert!(ready(&mut foreign).is_none());

    tokio::time::sleep(Duration::from_millis(4_999)).await;
    assert!(ready(&mut pods).is_none(), "still cut");
    // The outage's timer fires at 10 s, in its own task.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let Some(WatchEvent::Resynced(all)) = ready(&mut pods) else {
        panic!("pods: a relist after the outage");
    };
    // p1 is absent: the consumer drops it.
    assert_eq!(names(&all, |p| &p.name), ["p2", "p3"]);
    let Some(WatchEvent::Resynced(all)) = ready(&mut nodes) else {
        panic!("nodes: a relist after the outage");
    };
    assert_eq!(names(&all, |n| &n.name), ["n1", "n2"]);
    assert_eq!(ready(&mut config).flatten().map(|cm| cm.data), Some(data));
    assert_eq!(ready(&mut foreign), Some(None));
    // Connected again: live events flow.
    c.delete_pod("ns", "p2");
    assert!(matches!(ready(&mut pods), Some(WatchEvent::Deleted(p)) if &*p.name == "p2"));
    assert!(matches!(ready(&mut late), Some(WatchEvent::Deleted(p)) if &*p.name == "p2"));
    assert!(ready(&mut pods).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_second_cut_extends_the_outage_of_those_already_cut() {
    let c = SimCluster::new(SimClusterConfig::instant(1));
    let mut pods = c.watch_pods().boxed();
    assert!(ready(&mut pods).is_some());
    c.cut_watches(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.cut_watches(Duration::from_secs(10));
    c.add_node(node("n1"));
    c.bind_pod("ns", "p1", "n1");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(ready(&mut pods).is_none(), "cut until 15 s");
    tokio::time::sleep(Duration::from_millis(4_001)).await;
    assert!(matches!(ready(&mut pods), Some(WatchEvent::Resynced(v)) if v.len() == 1));
    assert!(ready(&mut pods).is_none(), "one relist only");
}

#[tokio::test(start_paused = true)]
async fn relist_all_sends_every_subscriber_the_current_set() {
    let c = SimCluster::new(SimClusterConfig::instant(1));
    c.add_node(node("n1"));
    c.bind_pod("ns", "p1", "n1");
    c.bind_pod("ns", "p2", "n1");
    let mut nodes = c.watch_nodes().boxed();
    let mut pods = [c.watch_pods().boxed(), c.watch_pods().boxed()];
    let mut config = c.watch_config("winipam-system", "winipam").boxed();
    let mut foreign = c.watch_foreign_ipam().boxed();
    ready(&mut nodes);
    ready(&mut config);
    ready(&mut foreign);
    for p in &mut pods {
        ready(p);
    }
    let before = c.pod_events_delivered();
    c.relist_all();
    assert!(matches!(ready(&mut nodes), Some(WatchEvent::Resynced(v)) if v.len() == 1));
    for p in &mut pods {
        assert!(matches!(ready(p), Some(WatchEvent::Resynced(v)) if v.len() == 2));
        assert!(ready(p).is_none());
    }
    assert_eq!(ready(&mut config), Some(None));
    assert_eq!(ready(&mut foreign), Some(None));
    assert_eq!(c.pod_events_delivered() - before, 4);
}
