//! The probe's workload and phases: KWOK nodes, a Deployment scaled at a steady rate, churn by
//! deletion, the leader's SIGKILL; each phase measured between two snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher};
use kube::{Api, Client};
use serde_json::json;

use super::Scenario;
use super::report::{PhaseReport, ScaleReport};
use super::watch::PodWatch;
use super::{measure, pace};
use crate::crd::NodeAddressPool;
use crate::sim::report::Distribution;
use crate::webhook::placement::IP_RESOURCE;

/// The namespace of the workload, and its Deployment.
pub const APPS: &str = "scale";
const DEPLOYMENT: &str = "scale";
/// S1/S2's nodes: m5.xlarge in prefix mode (224 pods' addresses each).
pub const INSTANCE_TYPE: &str = "m5.xlarge";
/// The zone `--simulated-ec2` puts its subnet in.
const ZONE: &str = "us-west-2a";
const NODE_LABEL: &str = "winipam-scale";
const TICK: Duration = Duration::from_millis(100);
/// R3: how long after the kill a controller must lead with every pool rebuilt.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Controller {
    pub name: String,
    pub pid: u32,
    pub metrics: SocketAddr,
}

pub struct Probe {
    pub client: Client,
    pub nodes: u32,
    pub pods: u32,
    pub rate: f64,
    pub churn: Duration,
    pub controllers: Vec<Controller>,
    pub controller_namespace: String,
    pub apiserver_pid: Option<u32>,
    pub etcd_pid: Option<u32>,
    pub audit_log: Option<PathBuf>,
    pub controller_user: String,
    /// moto's endpoint, when the controllers talk to moto rather than simulate EC2 (R3).
    pub moto: Option<String>,
}

type HeldSeries = Arc<Mutex<Vec<(f64, u64)>>>;

/// What is read at a phase's start and end.
struct Snapshot {
    at: Instant,
    controller_cpu: BTreeMap<String, f64>,
    apiserver_cpu: Option<f64>,
    etcd_cpu: Option<f64>,
    audit: u64,
    ec2: BTreeMap<String, BTreeMap<String, u64>>,
    status_writes: BTreeMap<String, BTreeMap<String, u64>>,
    assign_buckets: BTreeMap<String, BTreeMap<String, u64>>,
}

fn err(what: &str) -> impl Fn(kube::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn conflict_ok<T>(result: Result<T, kube::Error>, what: &str) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

impl Probe {
    pub async fn run(&self, scenario: Scenario) -> Result<ScaleReport, String> {
        self.prepare().await?;
        let watch = PodWatch::start(self.client.clone(), APPS).await;
        let begun = Instant::now();
        let held = self.sample_held(begun);
        let phases = self.phases(scenario, &watch).await;
        held.0.abort();
        let phases = phases?;
        let held = held.1.lock().map(|h| h.clone()).unwrap_or_default();
        let series = watch.series(begun, Instant::now(), &held);
        let controller_peak_rss_mib = self
            .controllers
            .iter()
            .filter_map(|c| Some((c.name.clone(), measure::peak_rss_mib(c.pid)?)))
            .collect();
        Ok(ScaleReport {
            ec2: match &self.moto {
                Some(_) => "moto, secondary-IP mode (moto ignores /28 prefixes; shared by the \
                            replicas; no latency model, no throttling)"
                    .into(),
                None => {
                    "simulated in the controller process (EC2's latencies and throttling)".into()
                }
            },
            scenario: format!("{scenario:?}").to_lowercase(),
            build: measure::build_profile().to_owned(),
            nodes: self.nodes,
            instance_type: INSTANCE_TYPE.to_owned(),
            pods: self.pods,
            rate_per_sec: self.rate,
            writes_source: match &self.audit_log {
                Some(_) => format!(
                    "apiserver audit log, user {} (create/update/patch/delete)",
                    self.controller_user
                ),
                None => "not counted (no audit log)".to_owned(),
            },
            phases,
            controller_peak_rss_mib,
            load_average: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            series,
        })
    }

    async fn phases(
        &self,
        scenario: Scenario,
        watch: &PodWatch,
    ) -> Result<Vec<PhaseReport>, String> {
        let mut phases = vec![self.scale_out(watch).await?];
        match scenario {
            Scenario::R1 => {}
            Scenario::R2 => phases.push(self.churn(watch).await?),
            Scenario::R3 => phases.push(self.kill_leader(watch).await?),
        }
        Ok(phases)
    }

    /// Every second, the addresses the controllers hold on the ENIs (their gauges), as
    /// (seconds since `begun`, count): the SVG's "held" line. A replica that does not lead
    /// reports none, and a killed one no longer answers.
    fn sample_held(&self, begun: Instant) -> (tokio::task::JoinHandle<()>, HeldSeries) {
        let series = HeldSeries::default();
        let (out, metrics) = (
            series.clone(),
            self.controllers
                .iter()
                .map(|c| c.metrics)
                .collect::<Vec<_>>(),
        );
        let task = tokio::spawn(async move {
            loop {
                let mut held = None;
                for addr in &metrics {
                    if let Ok(page) = measure::scrape(*addr).await {
                        *held.get_or_insert(0) += measure::held_addresses(&page);
                    }
                }
                if let (Some(held), Ok(mut out)) = (held, out.lock()) {
                    out.push((begun.elapsed().as_secs_f64(), held));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        (task, series)
    }

    /// The workload's namespace and Deployment (0 replicas), the nodes, and each node's
    /// capacity advertised (pods ask for the IP resource, so none is placed before) and its
    /// pool warm.
    async fn prepare(&self) -> Result<(), String> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(json!({"metadata": {"name": APPS}}))
            .map_err(|e| e.to_string())?;
        conflict_ok(
            namespaces.create(&PostParams::default(), &ns).await,
            "create namespace",
        )?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let provider_ids: Vec<String> = match &self.moto {
            Some(endpoint) => super::moto::launch(endpoint, self.nodes, INSTANCE_TYPE)
                .await?
                .iter()
                .map(|id| format!("aws:///{}/{id}", super::moto::ZONE))
                .collect(),
            None => (0..self.nodes)
                .map(|i| format!("aws:///{ZONE}/i-{:017x}", 0x5ca1e000 + i))
                .collect(),
        };
        for (i, provider_id) in provider_ids.iter().enumerate() {
            let name = format!("scale-win-{i:04}");
            let node: Node = serde_json::from_value(json!({
                "metadata": {
                    "name": name,
                    "labels": {
                        "type": "kwok", NODE_LABEL: "1",
                        "kubernetes.io/os": "windows", "kubernetes.io/hostname": name,
                        "node.kubernetes.io/instance-type": INSTANCE_TYPE,
                    },
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                },
                "spec": {"providerID": provider_id},
            }))
            .map_err(|e| e.to_string())?;
            conflict_ok(
                nodes.create(&PostParams::default(), &node).await,
                "create node",
            )?;
        }
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), APPS);
        let deployment = serde_json::from_value(json!({
            "metadata": {"name": DEPLOYMENT},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": DEPLOYMENT}},
                "template": {
                    "metadata": {"labels": {"app": DEPLOYMENT}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/os": "windows"},
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{
                            "name": "app", "image": "localhost/winipam-pause:1",
                            // What winipam's webhook injects (it is off for the host-run controller).
                            "resources": {"requests": {IP_RESOURCE: "1"}, "limits": {IP_RESOURCE: "1"}},
                        }],
                    },
                },
            },
        }))
        .map_err(|e| e.to_string())?;
        conflict_ok(
            deployments
                .create(&PostParams::default(), &deployment)
                .await,
            "create deployment",
        )?;
        self.wait_warm(nodes).await
    }

    /// Waits until every node advertises the IP resource and its pool has free addresses:
    /// the phase measures pods that find a free address, as the targets do, not the nodes'
    /// first Assign (the pools' creation fell inside R1 in one run). From two watches, read
    /// in memory: listing every node and pool twice a second cost the apiserver more than the
    /// run at 1,000 nodes.
    async fn wait_warm(&self, nodes: Api<Node>) -> Result<(), String> {
        let (node_store, node_writer) = reflector::store();
        let (pool_store, pool_writer) = reflector::store();
        let labels = format!("{NODE_LABEL}=1");
        let node_watch = reflector(
            node_writer,
            watcher(nodes, watcher::Config::default().labels(&labels)),
        );
        let pools: Api<NodeAddressPool> = Api::all(self.client.clone());
        let pool_watch = reflector(pool_writer, watcher(pools, watcher::Config::default()));
        let tasks = [
            tokio::spawn(node_watch.for_each(|_| async {})),
            tokio::spawn(pool_watch.for_each(|_| async {})),
        ];
        let deadline =
            Instant::now() + Duration::from_secs(120) + self.nodes * Duration::from_millis(500);
        let result = loop {
            let warm: BTreeSet<String> = pool_store
                .state()
                .iter()
                .filter(|p| p.status.as_ref().is_some_and(|s| s.counts.free > 0))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            let ready = node_store
                .state()
                .iter()
                .filter(|n| {
                    n.metadata
                        .name
                        .as_ref()
                        .is_some_and(|name| warm.contains(name))
                })
                .filter(|n| {
                    let allocatable = n.status.as_ref().and_then(|s| s.allocatable.as_ref());
                    allocatable
                        .and_then(|a| a.get(IP_RESOURCE))
                        .and_then(|q| q.0.parse::<u64>().ok())
                        .is_some_and(|v| v > 0)
                })
                .count();
            if ready as u32 >= self.nodes {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err(format!(
                    "{ready} of {} nodes advertise the IP resource with warm addresses",
                    self.nodes
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        for task in tasks {
            task.abort();
        }
        result
    }

    async fn snapshot(&self) -> Snapshot {
        let (mut ec2, mut status_writes) = (BTreeMap::new(), BTreeMap::new());
        let mut assign_buckets = BTreeMap::new();
        for c in &self.controllers {
            if let Ok(page) = measure::scrape(c.metrics).await {
                ec2.insert(c.name.clone(), measure::ec2_calls(&page));
                status_writes.insert(c.name.clone(), measure::status_writes(&page));
                assign_buckets.insert(c.name.clone(), measure::assign_buckets(&page));
            }
        }
        Snapshot {
            at: Instant::now(),
            controller_cpu: self
                .controllers
                .iter()
                .filter_map(|c| Some((c.name.clone(), measure::cpu_seconds(c.pid)?)))
                .collect(),
            apiserver_cpu: self.apiserver_pid.and_then(measure::cpu_seconds),
            etcd_cpu: self.etcd_pid.and_then(measure::cpu_seconds),
            audit: self.audit_log.as_deref().map_or(0, measure::audit_offset),
            ec2,
            status_writes,
            assign_buckets,
        }
    }

    /// The phase's figures: its pods are those the watch first saw after `start`.
    async fn finish(
        &self,
        name: &str,
        start: Snapshot,
        watch: &PodWatch,
        extra_events: u64,
    ) -> Result<PhaseReport, String> {
        // The audit backend writes as requests complete; a moment for the last lines.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let end = self.snapshot().await;
        let pods: Vec<_> = watch
            .pods()
            .into_iter()
            .filter(|p| p.created >= start.at)
            .collect();
        let annotated = pods.iter().filter(|p| p.annotated.is_some()).count() as u64;
        let waits: Vec<u32> = pods
            .iter()
            .filter_map(|p| {
                let wait = p.annotated?.saturating_duration_since(p.bound?);
                Some(wait.as_millis().min(u128::from(u32::MAX)) as u32)
            })
            .collect();
        let (writes, writes_by_kind) = match &self.audit_log {
            Some(path) => {
                let by = measure::audit_writes(path, start.audit, &self.controller_user)?;
                (Some(by.values().sum::<u64>()), by)
            }
            None => (None, BTreeMap::new()),
        };
        let cpu: f64 = end
            .controller_cpu
            .iter()
            .filter_map(|(k, v)| Some(v - start.controller_cpu.get(k)?))
            .sum();
        let summed = |end: &BTreeMap<String, BTreeMap<String, u64>>,
                      start: &BTreeMap<String, BTreeMap<String, u64>>| {
            let mut sum = BTreeMap::new();
            for (k, after) in end {
                let before = start.get(k).cloned().unwrap_or_default();
                for (op, n) in measure::delta(after, &before) {
                    *sum.entry(op).or_insert(0) += n;
                }
            }
            sum
        };
        let ec2 = summed(&end.ec2, &start.ec2);
        let status_writes = summed(&end.status_writes, &start.status_writes);
        let assigned = summed(&end.assign_buckets, &start.assign_buckets);
        let assign_ms = |q| measure::quantile_at_most(&assigned, q).map(|s| s * 1e3);
        let events = pods.len() as u64 + extra_events;
        let per_pod = |v: f64| (!pods.is_empty()).then(|| v / pods.len() as f64);
        Ok(PhaseReport {
            name: name.to_owned(),
            pods: pods.len() as u64,
            annotated,
            bound_to_annotated: Distribution::from_ms(waits),
            wall_seconds: end.at.duration_since(start.at).as_secs_f64(),
            controller_writes: writes,
            writes_per_pod: writes.and_then(|w| per_pod(w as f64)),
            writes_by_kind,
            controller_cpu_seconds: cpu,
            controller_cpu_ms_per_pod_event: (events > 0).then(|| cpu * 1e3 / events as f64),
            apiserver_cpu_seconds: end
                .apiserver_cpu
                .zip(start.apiserver_cpu)
                .map(|(a, b)| a - b),
            etcd_cpu_seconds: end.etcd_cpu.zip(start.etcd_cpu).map(|(a, b)| a - b),
            ec2_calls: ec2,
            status_writes_by_why: status_writes,
            controller_assign_ms_at_most: assign_ms(0.5).zip(assign_ms(0.99)),
            reannotated_after_kill_seconds: None,
            rebuilt_after_kill_seconds: None,
            shared_addresses: watch.violations(),
        })
    }

    /// Scales the Deployment from `from` to `to` replicas at `rate` pods/s.
    async fn ramp(&self, from: u32, to: u32) -> Result<(), String> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), APPS);
        let started = Instant::now();
        let mut current = from;
        while current < to {
            tokio::time::sleep(TICK).await;
            let due = from + (self.rate * started.elapsed().as_secs_f64()) as u32;
            let target = due.min(to);
            if target > current {
                let patch = json!({"spec": {"replicas": target}});
                deployments
                    .patch(DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(err("scale the deployment"))?;
                current = target;
            }
        }
        Ok(())
    }

    /// Waits until `count` pods live and every one has its address.
    async fn wait_annotated(&self, watch: &PodWatch, count: u32) -> Result<(), String> {
        // Fails only once nothing moved for STALL: the pace is the cluster's, not the rate asked
        // (the controller-manager's client limit of 20 requests/s creates the pods, and a
        // deadline from the rate asked failed R2 at 100/s with 2,995 of 3,000 pods annotated).
        const STALL: Duration = Duration::from_secs(120);
        let mut last = watch.counts();
        let mut moved = Instant::now();
        loop {
            let now = watch.counts();
            if now.live as u32 == count && now.annotated == now.live {
                return Ok(());
            }
            if now != last {
                (last, moved) = (now, Instant::now());
            }
            if moved.elapsed() > STALL {
                return Err(format!(
                    "nothing moved for {STALL:?}: {} of {} live pods annotated (want {count})",
                    now.annotated, now.live
                ));
            }
            tokio::time::sleep(TICK).await;
        }
    }

    async fn scale_out(&self, watch: &PodWatch) -> Result<PhaseReport, String> {
        let start = self.snapshot().await;
        self.ramp(0, self.pods).await?;
        self.wait_annotated(watch, self.pods).await?;
        self.finish("R1 scale-out", start, watch, 0).await
    }

    /// Deletes the oldest pods at `rate`/s for the churn duration; the Deployment replaces them.
    async fn churn(&self, watch: &PodWatch) -> Result<PhaseReport, String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), APPS);
        let start = self.snapshot().await;
        let mut deleted = BTreeSet::new();
        let mut owed = 0.0;
        let mut last = Instant::now();
        while start.at.elapsed() < self.churn {
            tokio::time::sleep(TICK).await;
            let now = Instant::now();
            owed = pace::accrue(owed, self.rate, now.duration_since(last));
            last = now;
            let live = watch.live_outside(&deleted);
            let n = pace::deletable(owed, live, self.pods as usize, self.rate);
            let batch = watch.oldest_annotated(n, &deleted);
            owed -= batch.len() as f64;
            // At once: one delete after another kept the first R2 run at 18/s of the 50 asked.
            let params = DeleteParams::default();
            let results =
                futures::future::join_all(batch.iter().map(|n| pods.delete(n, &params))).await;
            for (name, result) in batch.into_iter().zip(results) {
                match result {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(format!("delete pod {name}: {e}")),
                }
                deleted.insert(name);
            }
        }
        self.wait_annotated(watch, self.pods).await?;
        // Each replacement is two pod events: the old pod leaving, the new one arriving.
        self.finish("R2 churn", start, watch, deleted.len() as u64)
            .await
    }

    /// SIGKILLs the Lease holder at full size, then adds a tenth more pods: how long until
    /// every one is annotated, and what the new leader's rebuild spent on EC2.
    async fn kill_leader(&self, watch: &PodWatch) -> Result<PhaseReport, String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.controller_namespace);
        let lease = leases.get("winipam").await.map_err(err("get the lease"))?;
        let holder = lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        let leader = self
            .controllers
            .iter()
            .find(|c| holder.starts_with(&format!("{}_", c.name)))
            .ok_or_else(|| format!("the lease holder {holder:?} is none of the controllers"))?;
        let extra = (self.pods / 10).max(1);
        // At full size and at rest: every pool warm again, as before R1. Killed right after
        // R1, the new leader inherits the scale-out's backlog of Assigns (on 1,000 moto nodes,
        // about 940 at the default 5 mutating calls/s), and the figure is that backlog's (197 s)
        // rather than the rebuild's.
        self.wait_warm(Api::all(self.client.clone())).await?;
        let start = self.snapshot().await;
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &leader.pid.to_string()])
            .status()
            .map_err(|e| format!("kill {}: {e}", leader.pid))?;
        if !killed.success() {
            return Err(format!("kill -KILL {} failed", leader.pid));
        }
        let killed_at = Instant::now();
        self.ramp(self.pods, self.pods + extra).await?;
        self.wait_annotated(watch, self.pods + extra).await?;
        let last = watch
            .pods()
            .into_iter()
            .filter(|p| p.created >= killed_at)
            .filter_map(|p| p.annotated)
            .max()
            .unwrap_or(killed_at);
        // The new pods may be annotated before the leader has described the rest of the fleet
        // (nodes with waiting pods go first): the phase runs on until every pool is rebuilt, so
        // its EC2 calls are the whole rebuild's.
        let survivors: Vec<SocketAddr> = (self.controllers.iter())
            .filter(|c| c.pid != leader.pid)
            .map(|c| c.metrics)
            .collect();
        let rebuilt = loop {
            if futures::future::join_all(survivors.iter().map(|a| measure::leads_and_ready(*a)))
                .await
                .contains(&true)
            {
                break Instant::now();
            }
            if killed_at.elapsed() > REBUILD_TIMEOUT {
                return Err(format!(
                    "no controller led with every pool rebuilt {REBUILD_TIMEOUT:?} after the kill"
                ));
            }
            tokio::time::sleep(TICK).await;
        };
        let mut phase = self.finish("R3 leader killed", start, watch, 0).await?;
        phase.reannotated_after_kill_seconds = Some(last.duration_since(killed_at).as_secs_f64());
        phase.rebuilt_after_kill_seconds = Some(rebuilt.duration_since(killed_at).as_secs_f64());
        Ok(phase)
    }
}
