//! End to end, the writes on a pod's path (issue 18, item 3): on a real apiserver, with EC2
//! simulated inside the controller (`--simulated-ec2`), three Nitro nodes in prefix mode take
//! 45 pods, then each is replaced once, one after another (delete one, create another on the
//! same node), at about 3 a second. Every pod that finds a warm address needs one write on its
//! path, its annotation: the status that covers it was written ahead, and a pod's going needs
//! no write of its own. Counted from the controller's own request log: annotation patches and
//! NodeAddressPool status writes of the churn, per new pod. With a status write before each
//! annotation and one at each deletion (the protocol before the addresses listed ahead) it was
//! 3.0 per pod; the bound below fails with that.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::PostParams;

use crate::e2e_prefix_sim::node;
use crate::support::e2e::{Env, assert_distinct, pod_on};
use crate::support::observe::api_writes;
use crate::support::winipam::Winipam;

/// Replacements in the churn phase.
const REPLACED: usize = 45;
/// Status writes plus annotation patches per new pod, at most (3.0 before).
const WRITES_PER_POD_MAX: f64 = 1.5;

/// Status writes and annotation patches in the controller's log so far, and all its writes.
fn counted(log: &str) -> (usize, usize, BTreeMap<&'static str, usize>) {
    let writes = api_writes(log);
    let get = |k: &str| writes.get(k).copied().unwrap_or(0);
    (get("pool status"), get("pod annotation"), writes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_finding_a_warm_address_costs_one_write() {
    let env = Env::new("e2e-writes").await;
    env.set_config(&[("enable-windows-prefix-delegation", "true")])
        .await;
    let mut options = env.options("winipam-writes");
    options.extra_args.push("--simulated-ec2".to_owned());
    let mut controller = Winipam::start(&options);
    controller.wait_ready(Duration::from_secs(30)).await;

    let nodes: Vec<String> = (1..=3).map(|i| format!("wr-{i}")).collect();
    let node_api = Api::<Node>::all(env.client.clone());
    for (i, name) in nodes.iter().enumerate() {
        node_api
            .create(&PostParams::default(), &node(name, 100 + i as u32))
            .await
            .expect("create a node");
    }
    let pods = env.pods_api();
    let mut live: VecDeque<(String, usize)> = VecDeque::new();
    for i in 0..REPLACED {
        let name = format!("w{i:03}");
        pods.create(&PostParams::default(), &pod_on(&name, &nodes[i % 3]))
            .await
            .expect("create a pod");
        live.push_back((name, i % 3));
    }
    let names: Vec<String> = live.iter().map(|(n, _)| n.clone()).collect();
    env.wait_annotated(&names, Duration::from_secs(60)).await;
    // The statuses the first pods left due (counts, addresses to list ahead) are written
    // within the coalescing interval: the churn's count starts after them.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (status_before, annotations_before, _) = counted(&controller.log());

    // Churn: the oldest pod goes, a new one comes on the same node, about 3 a second.
    let started = Instant::now();
    let mut created = Vec::new();
    for i in 0..REPLACED {
        let Some((old, on)) = live.pop_front() else {
            break;
        };
        env.delete_pod(&old).await;
        let name = format!("r{i:03}");
        pods.create(&PostParams::default(), &pod_on(&name, &nodes[on]))
            .await
            .expect("create a pod");
        live.push_back((name.clone(), on));
        created.push(name);
        tokio::time::sleep(Duration::from_millis(330)).await;
    }
    let all = env.wait_annotated(&created, Duration::from_secs(60)).await;
    let churn = started.elapsed();
    let live_names: Vec<&String> = live.iter().map(|(n, _)| n).collect();
    let live_pods: Vec<_> = (all.iter())
        .filter(|(n, _)| live_names.contains(n))
        .map(|(_, p)| p)
        .collect();
    assert_eq!(live_pods.len(), REPLACED);
    assert_distinct(&live_pods);

    let (status_after, annotations_after, writes) = counted(&controller.log());
    let status = status_after - status_before;
    let annotations = annotations_after - annotations_before;
    let per_pod = (status + annotations) as f64 / REPLACED as f64;
    eprintln!(
        "MEASURE e2e_writes: {REPLACED} pods replaced on 3 nodes in {churn:?}: {annotations} \
         annotation patches, {status} status writes, {per_pod:.2} per new pod; the whole run's \
         writes {writes:?}"
    );
    assert_eq!(annotations, REPLACED, "one annotation patch per new pod");
    assert!(
        per_pod <= WRITES_PER_POD_MAX,
        "{per_pod:.2} writes per new pod ({status} status writes, {annotations} annotations)"
    );
    controller.stop().await;
}
