//! A model of the VPC Resource Controller's Windows IPAM, the baseline of `winipam simulate
//! --policy vpc-rc-model`. It runs on the same simulated cluster and EC2 as winipam and follows
//! the published controller parameter for parameter (see [`params::Params`] and
//! `docs/benchmarks.md`):
//! - node init by 10 workers: 3 DescribeInstances + 1 DescribeSubnets, a static capacity table,
//!   a pool rebuilt from the ENI and the pods' annotations, capacity advertised;
//! - one warm pool per node ([`pool`]), sized by its targets alone (no surge), refilled by jobs
//!   that 2 workers per IP provider run for the whole cluster: Assign, then poll the ENI until
//!   the addresses show;
//! - pods reconciled by 20 workers, requeued after 600 ms (pool empty), 20 s (all cooling) or
//!   2 min (no /28 in the subnet) when they get nothing;
//! - a 30 s cool-down, checked per node every 30 s;
//! - one EC2 client: 12 requests/s, burst 18, 3 SDK attempts.
//!
//! Requeues of a pod that would find the pool unchanged are not played: the pod is parked and
//! woken at the first of its requeue times after the pool gains something, which is when the
//! real controller's retry would first succeed (same timing, far fewer simulated events).

mod client;
mod jobs;
mod nodes;
pub mod params;
mod pods;
mod pool;
mod queue;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ec2::Ec2Backend;
use crate::k8s::{
    Cluster, FOREIGN_IPAM_CONFIG_MAP, FOREIGN_IPAM_NAMESPACE, NodeView, PodPhase, PodView,
    WatchEvent,
};
use crate::sim::rng::SplitMix64;

use client::Client;
use params::Params;
use pool::{PoolJob, WarmPool};
use queue::WorkQueue;

/// A pod's (namespace, name).
pub(crate) type PodKey = (String, String);

/// What the pod reconciler is asked to look at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PodItem {
    Sync(PodKey),
    /// Deleted: the last state seen (uid, node, annotation).
    Deleted(PodKey, String, String, Option<String>),
}

/// A warm-pool job of one node. The sequence number makes every job distinct (the Go worker
/// queue holds pointers, so nothing is merged).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct JobItem {
    seq: u64,
    node: String,
    job: Job,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    Pool(PoolJob),
    /// `ProcessDeleteQueue`: cool-down check, requeued every 30 s while the node lives.
    Cooldown,
}

struct PodRec {
    uid: String,
    node: String,
    phase: PodPhase,
    host_network: bool,
    annotation: Option<String>,
}

struct ReadyNode {
    instance_id: String,
    eni_id: String,
    prefix: bool,
    subnet_len: u8,
    pool: WarmPool,
    /// Pods that got nothing: when they failed and their requeue delay.
    parked: BTreeMap<PodKey, (Instant, Duration)>,
}

enum NodePhase {
    Pending { waiting: BTreeMap<PodKey, Instant> },
    Ready(Box<ReadyNode>),
    Unmanaged,
}

struct ModelNode {
    view: NodeView,
    phase: NodePhase,
}

struct ModelState {
    rng: SplitMix64,
    prefix_delegation: bool,
    nodes: BTreeMap<String, ModelNode>,
    pods: BTreeMap<PodKey, PodRec>,
    job_seq: u64,
}

/// Whether every Windows node the model knows has been initialised.
#[derive(Clone, Default)]
pub struct VpcRcReady(Arc<ReadyFlags>);

#[derive(Default)]
struct ReadyFlags {
    listed: AtomicBool,
    pending: AtomicUsize,
}

impl VpcRcReady {
    pub fn all_nodes_ready(&self) -> bool {
        self.0.listed.load(Ordering::SeqCst) && self.0.pending.load(Ordering::SeqCst) == 0
    }
}

struct Shared<C, B> {
    params: Params,
    cluster: C,
    client: Client<B>,
    state: Mutex<ModelState>,
    pods_q: WorkQueue<PodItem>,
    /// Job queues of the secondary-IP provider and of the prefix provider.
    jobs_q: [WorkQueue<JobItem>; 2],
    nodes_q: WorkQueue<String>,
    ready: VpcRcReady,
}

impl<C, B> Shared<C, B> {
    fn lock(&self) -> MutexGuard<'_, ModelState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The model, ready to run.
pub struct VpcRcModel<C, B> {
    shared: Arc<Shared<C, B>>,
}

impl<C: Cluster + Clone, B: Ec2Backend + Clone> VpcRcModel<C, B> {
    pub fn new(cluster: C, ec2: B, seed: u64) -> Self {
        Self::with_params(cluster, ec2, seed, Params::default())
    }

    pub fn with_params(cluster: C, ec2: B, seed: u64, params: Params) -> Self {
        let client = Client::new(ec2, &params, seed ^ 0x5d4);
        VpcRcModel {
            shared: Arc::new(Shared {
                client,
                cluster,
                state: Mutex::new(ModelState {
                    rng: SplitMix64::new(seed ^ 0x7c),
                    prefix_delegation: false,
                    nodes: BTreeMap::new(),
                    pods: BTreeMap::new(),
                    job_seq: 0,
                }),
                pods_q: WorkQueue::new(),
                jobs_q: [WorkQueue::new(), WorkQueue::new()],
                nodes_q: WorkQueue::new(),
                ready: VpcRcReady::default(),
                params,
            }),
        }
    }

    pub fn readiness(&self) -> VpcRcReady {
        self.shared.ready.clone()
    }

    /// Runs until `stopped` resolves; then every worker stops where it is (the process ends).
    pub async fn run(self, stopped: impl std::future::Future<Output = ()> + Send) {
        let s = self.shared;
        let mut tasks = JoinSet::new();
        // The ConfigMap first, so node init knows the mode.
        let mut config = s
            .cluster
            .watch_config(FOREIGN_IPAM_NAMESPACE, FOREIGN_IPAM_CONFIG_MAP)
            .boxed();
        if let Some(cm) = config.next().await {
            s.lock().prefix_delegation = prefix_delegation(cm.as_ref().map(|c| &c.data));
        }
        tasks.spawn({
            let s = s.clone();
            async move {
                while let Some(cm) = config.next().await {
                    s.lock().prefix_delegation = prefix_delegation(cm.as_ref().map(|c| &c.data));
                }
            }
        });
        tasks.spawn(watch_nodes(s.clone()));
        tasks.spawn(watch_pods(s.clone()));
        for q in 0..3 {
            let s = s.clone();
            tasks.spawn(async move {
                match q {
                    0 => s.pods_q.pump_delayed().await,
                    1 => s.jobs_q[0].pump_delayed().await,
                    _ => s.jobs_q[1].pump_delayed().await,
                }
            });
        }
        tasks.spawn({
            let s = s.clone();
            async move { s.nodes_q.pump_delayed().await }
        });
        for _ in 0..s.params.node_workers {
            tasks.spawn(nodes::worker(s.clone()));
        }
        for provider in 0..2 {
            for _ in 0..s.params.pool_workers {
                tasks.spawn(jobs::worker(s.clone(), provider));
            }
        }
        for _ in 0..s.params.pod_workers {
            tasks.spawn(pods::worker(s.clone()));
        }
        stopped.await;
        tasks.shutdown().await;
    }
}

fn prefix_delegation(data: Option<&BTreeMap<String, String>>) -> bool {
    // Go's strconv.ParseBool, as the VPC RC reads its flags.
    data.and_then(|d| d.get("enable-windows-prefix-delegation"))
        .is_some_and(|v| matches!(v.trim(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

async fn watch_nodes<C: Cluster, B: Ec2Backend + Clone>(s: Arc<Shared<C, B>>) {
    let mut stream = s.cluster.watch_nodes().boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            WatchEvent::Applied(view) => node_applied(&s, view),
            WatchEvent::Deleted(view) => node_deleted(&s, &view.name),
            WatchEvent::Resynced(views) => {
                let names: Vec<String> = s.lock().nodes.keys().cloned().collect();
                for name in names {
                    if !views.iter().any(|v| v.name == name) {
                        node_deleted(&s, &name);
                    }
                }
                for view in views {
                    node_applied(&s, view);
                }
                s.ready.0.listed.store(true, Ordering::SeqCst);
            }
        }
    }
}

fn node_applied<C, B>(s: &Shared<C, B>, view: NodeView) {
    if !view.windows {
        return;
    }
    let mut st = s.lock();
    if let Some(node) = st.nodes.get_mut(&view.name) {
        node.view = view;
        return;
    }
    let name = view.name.clone();
    st.nodes.insert(
        name.clone(),
        ModelNode {
            view,
            phase: NodePhase::Pending {
                waiting: BTreeMap::new(),
            },
        },
    );
    drop(st);
    s.ready.0.pending.fetch_add(1, Ordering::SeqCst);
    s.nodes_q.add(name);
}

fn node_deleted<C, B>(s: &Shared<C, B>, name: &str) {
    let removed = s.lock().nodes.remove(name);
    if let Some(ModelNode {
        phase: NodePhase::Pending { .. },
        ..
    }) = removed
    {
        s.ready.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn watch_pods<C: Cluster, B: Ec2Backend + Clone>(s: Arc<Shared<C, B>>) {
    let mut stream = s.cluster.watch_pods().boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            WatchEvent::Applied(view) => pod_applied(&s, view),
            WatchEvent::Deleted(view) => pod_deleted(&s, view),
            WatchEvent::Resynced(views) => {
                let keys: Vec<PodKey> = s.lock().pods.keys().cloned().collect();
                for key in keys {
                    if !views
                        .iter()
                        .any(|v| *v.namespace == *key.0 && *v.name == *key.1)
                    {
                        let rec = s.lock().pods.remove(&key);
                        if let Some(rec) = rec {
                            s.pods_q
                                .add(PodItem::Deleted(key, rec.uid, rec.node, rec.annotation));
                        }
                    }
                }
                for view in views {
                    pod_applied(&s, view);
                }
            }
        }
    }
}

fn pod_applied<C, B>(s: &Shared<C, B>, view: PodView) {
    let key = pod_key(&view);
    let mut st = s.lock();
    unpark(&mut st, &view.node_name, &key);
    st.pods.insert(
        key.clone(),
        PodRec {
            uid: view.uid.to_string(),
            node: view.node_name.to_string(),
            phase: view.phase,
            host_network: view.host_network,
            annotation: view.ip_annotation.map(String::from),
        },
    );
    drop(st);
    s.pods_q.add(PodItem::Sync(key));
}

fn pod_deleted<C, B>(s: &Shared<C, B>, view: PodView) {
    let key = pod_key(&view);
    let mut st = s.lock();
    unpark(&mut st, &view.node_name, &key);
    st.pods.remove(&key);
    drop(st);
    s.pods_q.add(PodItem::Deleted(
        key,
        view.uid.to_string(),
        view.node_name.to_string(),
        view.ip_annotation.map(String::from),
    ));
}

/// The model keys its pods by (namespace, name), as plain strings.
fn pod_key(view: &PodView) -> PodKey {
    (view.namespace.to_string(), view.name.to_string())
}

fn unpark(st: &mut ModelState, node: &str, key: &PodKey) {
    match st.nodes.get_mut(node).map(|n| &mut n.phase) {
        Some(NodePhase::Ready(r)) => {
            r.parked.remove(key);
        }
        Some(NodePhase::Pending { waiting }) => {
            waiting.remove(key);
        }
        _ => {}
    }
}

/// The first requeue time at or after now of a pod that failed at `since` with `delay`.
fn requeue_at(since: Instant, delay: Duration, now: Instant) -> Instant {
    let delay = delay.max(Duration::from_millis(1));
    let waited = now.saturating_duration_since(since);
    let periods = (waited.as_nanos() / delay.as_nanos()).max(1) as u32;
    let mut at = since + delay * periods;
    if at < now {
        at += delay;
    }
    at
}

/// The node's pool gained something: its parked pods retry at their next requeue time.
fn wake_parked<C, B>(s: &Shared<C, B>, st: &mut ModelState, node: &str) {
    let Some(NodePhase::Ready(r)) = st.nodes.get_mut(node).map(|n| &mut n.phase) else {
        return;
    };
    let now = Instant::now();
    for (key, (since, delay)) in std::mem::take(&mut r.parked) {
        let at = requeue_at(since, delay, now);
        s.pods_q.add_after(PodItem::Sync(key), at - now);
    }
}

/// Submits a pool job to the provider's queue.
fn submit<C, B>(s: &Shared<C, B>, st: &mut ModelState, node: &str, prefix: bool, job: Job) {
    st.job_seq += 1;
    let item = JobItem {
        seq: st.job_seq,
        node: node.to_string(),
        job,
    };
    s.jobs_q[usize::from(prefix)].add(item);
}

#[cfg(test)]
mod tests;
