//! End to end, the main path: Windows nodes on moto instances get their capacity and a
//! NodeAddressPool, and every pod bound to them gets an address of its node's ENI.
//! Also measures time-to-IP, API writes per pod and the controller's memory.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::support::e2e::{Env, TestNode, assert_distinct, eventually};
use crate::support::observe::{AnnotationWatch, api_writes, quantile};
use crate::support::winipam::histogram_quantile_upper;

const CAPACITY_M5_LARGE: &str = "9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pods_on_five_nodes_get_distinct_addresses_of_their_enis() {
    let env = Env::new("e2e-assign").await;
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..5 {
        nodes.push(env.add_node(&format!("n{i}"), "m5.large").await);
    }
    let winipam = env.start("winipam-0").await;

    // Capacity first: the scheduler needs it before any pod could land.
    for node in &nodes {
        eventually("capacity 9", Duration::from_secs(20), || async {
            match env.node_capacity(&node.name).await {
                Some(c) if c == CAPACITY_M5_LARGE => Ok(()),
                other => Err(format!("{}: {other:?}", node.name)),
            }
        })
        .await;
    }

    let watch = AnnotationWatch::start(&env).await;
    let mut created: Vec<(String, Instant)> = Vec::new();
    for i in 0..20 {
        let node = &nodes[i % nodes.len()];
        let started = Instant::now();
        let pod = env.create_pod(&format!("pod-{i}"), &node.name).await;
        created.push((pod.uid, started));
    }
    let pods = eventually("20 pods annotated", Duration::from_secs(30), || async {
        let pods = env.pods().await;
        let missing: Vec<&str> = pods
            .values()
            .filter(|p| p.annotation.is_none())
            .map(|p| p.name.as_str())
            .collect();
        if pods.len() == 20 && missing.is_empty() {
            Ok(pods)
        } else {
            Err(format!("{} pods, unannotated: {missing:?}", pods.len()))
        }
    })
    .await;

    // Each address is on its node's ENI in EC2, in the subnet's form `<ip>/<subnet length>`.
    assert_distinct(&pods.values().collect::<Vec<_>>());
    for node in &nodes {
        let on_eni: BTreeSet<Ipv4Addr> = env.eni_ips(&node.eni_id).await.into_iter().collect();
        let mine: Vec<_> = pods.values().filter(|p| p.node == node.name).collect();
        assert_eq!(mine.len(), 4, "4 pods per node");
        for pod in mine {
            let addr = pod.address().expect("an IPv4 CIDR");
            assert!(
                on_eni.contains(&addr),
                "{} has {addr}, not on {}'s ENI {on_eni:?}",
                pod.name,
                node.name
            );
            assert!(node.subnet_cidr.contains(&addr));
            assert_eq!(
                pod.annotation.as_deref(),
                Some(format!("{addr}/{}", node.subnet_cidr.prefix_len()).as_str())
            );
        }
    }

    // NodeAddressPool status: 4 used, 3 free (default warm target), capacity 9, secondary mode;
    // and the ENI holds exactly those 7 addresses. The counts follow within the status
    // interval (`--status-interval`, 30 s): the annotations went under an earlier status.
    for node in &nodes {
        eventually("pool status", Duration::from_secs(45), || async {
            let pool = env.pool(&node.name).await.ok_or("no NodeAddressPool")?;
            let status = pool.status.ok_or("no status")?;
            let counts = &status.counts;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let got = (
                status.mode.as_deref(),
                status.capacity,
                counts.used,
                counts.free,
                counts.cooling,
                counts.pending,
                ready,
                status.instance_id.as_deref(),
                status.eni_id.as_deref(),
            );
            let want = (
                Some("secondary"),
                Some(9),
                4,
                3,
                0,
                0,
                true,
                Some(node.instance_id.as_str()),
                Some(node.eni_id.as_str()),
            );
            if got == want {
                Ok(())
            } else {
                Err(format!("{}: {got:?}", node.name))
            }
        })
        .await;
        assert_eq!(env.eni_ips(&node.eni_id).await.len(), 7, "{}", node.name);
    }

    // kubectl get nap: the printer columns.
    let table = env.cp.kubectl_ok(&["get", "nap"]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "MODE", "CAPACITY", "USED", "FREE", "COOLING", "READY", "AGE"
        ]
    );
    for node in &nodes {
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with(&format!("{} ", node.name)))
            .unwrap_or_else(|| panic!("no row for {} in\n{table}", node.name))
            .split_whitespace()
            .collect();
        assert_eq!(
            row[1..7],
            ["secondary", "9", "4", "3", "0", "True"],
            "{table}"
        );
    }

    // Metrics agree.
    let metrics = winipam.metrics().await;
    for node in &nodes {
        let used = crate::support::winipam::sample(
            &metrics,
            "winipam_node_ips",
            &[("node", &node.name), ("state", "used")],
        );
        assert_eq!(used, Some(4.0), "{}", node.name);
    }
    assert_eq!(
        crate::support::winipam::sample(&metrics, "winipam_pod_ip_assign_seconds_count", &[]),
        Some(20.0)
    );

    // Measurements (printed; see the report): time-to-IP, API writes per pod, memory.
    let latencies: Vec<Duration> = watch.with(|log| {
        assert!(
            log.changed.is_empty(),
            "annotations changed: {:?}",
            log.changed
        );
        created
            .iter()
            .filter_map(|(uid, started)| Some(log.first.get(uid)?.0.duration_since(*started)))
            .collect()
    });
    assert_eq!(latencies.len(), 20);
    let writes = api_writes(&winipam.log());
    let total: usize = writes
        .iter()
        .filter(|(k, _)| **k != "lease")
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "MEASURE e2e_assign: pod created -> annotation seen: p50 {:?} p99 {:?} max {:?}; \
         histogram p50 <= {:?} s, p99 <= {:?} s",
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 1.0),
        histogram_quantile_upper(&metrics, "winipam_pod_ip_assign_seconds", 0.5),
        histogram_quantile_upper(&metrics, "winipam_pod_ip_assign_seconds", 0.99),
    );
    eprintln!(
        "MEASURE e2e_assign: API writes (5 nodes, 20 pods): {writes:?}; {:.2} per pod without \
         lease renewals; RSS {} KiB",
        total as f64 / 20.0,
        winipam.rss_kib().unwrap_or(0)
    );
    let ec2: Vec<String> = crate::support::winipam::samples(&metrics, "winipam_ec2_requests_total")
        .into_iter()
        .filter(|(_, n)| *n > 0.0)
        .map(|(labels, n)| {
            let op = labels
                .iter()
                .find(|(k, _)| k == "operation")
                .map(|(_, v)| v.as_str())
                .unwrap_or("?");
            format!("{op}={n}")
        })
        .collect();
    eprintln!("MEASURE e2e_assign: EC2 calls {ec2:?}");
    // One write per annotation: the UID-guarded patch lands the first time.
    assert_eq!(writes.get("pod annotation"), Some(&20), "{writes:?}");
}
