//! What the benchmark against the real VPC Resource Controller measures, from outside both
//! controllers (issue 17, item 4):
//!
//! - [`PodClock`]: pod created -> annotated, the creation time taken by the harness just before
//!   its create request and the annotation time when the harness's own watch first sees it;
//! - [`EniSampler`]: secondary addresses on the nodes' ENIs, read from moto directly (not through
//!   the proxy, so not counted as the controller's calls) every second: peak and last;
//! - [`LoadSampler`]: the machine's 1-minute load (`/proc/loadavg`) during the run;
//! - [`api_writes`]: the controllers' API writes, from the apiserver's audit log
//!   (`WINIPAM_APISERVER_AUDIT=1`, scripts/controlplane.sh), by user and resource.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};

use super::e2e::{Env, pod_state};
use super::lock;
use super::observe::quantile;

/// Creation and first annotation of each pod, by name.
#[derive(Default)]
struct Times {
    created: BTreeMap<String, Instant>,
    annotated: BTreeMap<String, Instant>,
}

/// Pod created -> annotated, as the harness sees it.
pub struct PodClock {
    times: Arc<Mutex<Times>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodClock {
    /// Watches the test's pods; returns once the watch has listed them.
    pub async fn start(env: &Env) -> PodClock {
        let times = Arc::new(Mutex::new(Times::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let api = env.pods_api();
        let shared = times.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                let pod = match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    Ok(
                        watcher::Event::Apply(pod)
                        | watcher::Event::InitApply(pod)
                        | watcher::Event::Delete(pod),
                    ) => pod,
                    _ => continue,
                };
                if let Some(state) = pod_state(&pod)
                    && state.annotation.is_some()
                {
                    let now = Instant::now();
                    lock(&shared).annotated.entry(state.name).or_insert(now);
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        PodClock { times, task }
    }

    /// Call just before the pod's create request.
    pub fn created(&self, name: &str) {
        lock(&self.times)
            .created
            .insert(name.to_owned(), Instant::now());
    }

    /// Of the pods named: how many have no annotation yet.
    pub fn waiting(&self, names: &[String]) -> usize {
        let times = lock(&self.times);
        names
            .iter()
            .filter(|n| !times.annotated.contains_key(*n))
            .count()
    }

    /// Waits until every pod named is annotated or `timeout` passed; returns how many are not.
    pub async fn wait_all(&self, names: &[String], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let waiting = self.waiting(names);
            if waiting == 0 || Instant::now() >= deadline {
                return waiting;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Created -> annotated of the pods named that were annotated.
    pub fn latencies(&self, names: &[String]) -> Vec<Duration> {
        let times = lock(&self.times);
        names
            .iter()
            .filter_map(|n| {
                Some(
                    times
                        .annotated
                        .get(n)?
                        .duration_since(*times.created.get(n)?),
                )
            })
            .collect()
    }
}

impl Drop for PodClock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Latency figures in seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub pods: usize,
    pub not_annotated: usize,
    pub p50_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
}

impl Latency {
    pub fn of(latencies: &[Duration], not_annotated: usize) -> Latency {
        let max = latencies.iter().max().copied().unwrap_or_default();
        Latency {
            pods: latencies.len() + not_annotated,
            not_annotated,
            p50_s: quantile(latencies, 0.50).as_secs_f64(),
            p99_s: quantile(latencies, 0.99).as_secs_f64(),
            max_s: max.as_secs_f64(),
        }
    }
}

#[derive(Default)]
struct Held {
    peak: usize,
    last: usize,
}

/// Secondary addresses on the ENIs, sampled from moto every second.
pub struct EniSampler {
    held: Arc<Mutex<Held>>,
    task: tokio::task::JoinHandle<()>,
}

impl EniSampler {
    pub fn start(ec2: aws_sdk_ec2::Client, enis: Vec<String>) -> EniSampler {
        let held = Arc::new(Mutex::new(Held::default()));
        let shared = held.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(count) = secondary_addresses(&ec2, &enis).await {
                    let mut held = lock(&shared);
                    held.last = count;
                    held.peak = held.peak.max(count);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        EniSampler { held, task }
    }

    /// (peak, last sample).
    pub fn held(&self) -> (usize, usize) {
        let held = lock(&self.held);
        (held.peak, held.last)
    }
}

impl Drop for EniSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Secondary addresses on `enis` now; None when moto did not answer.
pub async fn secondary_addresses(ec2: &aws_sdk_ec2::Client, enis: &[String]) -> Option<usize> {
    let out = ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(enis.to_vec()))
        .send()
        .await
        .ok()?;
    Some(
        out.network_interfaces()
            .iter()
            .flat_map(|n| n.private_ip_addresses())
            .filter(|a| a.primary() != Some(true))
            .count(),
    )
}

/// The 1-minute load average, sampled every 5 s.
pub struct LoadSampler {
    loads: Arc<Mutex<Vec<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoadSampler {
    pub fn start() -> LoadSampler {
        let loads = Arc::new(Mutex::new(Vec::new()));
        let shared = loads.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(load) = load_1min() {
                    lock(&shared).push(load);
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        LoadSampler { loads, task }
    }

    /// (first, mean, max) of the samples.
    pub fn summary(&self) -> Load {
        let loads = lock(&self.loads);
        let first = loads.first().copied().unwrap_or_default();
        let max = loads.iter().copied().fold(0.0, f64::max);
        let mean = if loads.is_empty() {
            0.0
        } else {
            loads.iter().sum::<f64>() / loads.len() as f64
        };
        Load {
            at_start: first,
            mean,
            max,
            uptime_at_end: std::process::Command::new("uptime")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

impl Drop for LoadSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Load {
    pub at_start: f64,
    pub mean: f64,
    pub max: f64,
    pub uptime_at_end: String,
}

fn load_1min() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Writes (create, update, patch, delete) in the apiserver's audit log by `user`, by resource
/// (`pods`, `nodes/status`, `events`, ...). Panics when the log is missing: the control plane
/// must be started with `WINIPAM_APISERVER_AUDIT=1`.
pub fn api_writes(audit_log: &Path, user: &str) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(audit_log).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run the benchmark with WINIPAM_APISERVER_AUDIT=1, as scripts/bench-vpcrc.sh does)",
            audit_log.display()
        )
    });
    let mut out = BTreeMap::new();
    for event in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let field = |path: &[&str]| {
            path.iter()
                .try_fold(&event, |v, k| v.get(*k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        if field(&["stage"]).as_deref() != Some("ResponseComplete")
            || field(&["user", "username"]).as_deref() != Some(user)
            || !matches!(
                field(&["verb"]).as_deref(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        {
            continue;
        }
        let resource = field(&["objectRef", "resource"]).unwrap_or_default();
        let key = match field(&["objectRef", "subresource"]) {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_writes_are_counted_by_user_and_resource() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("audit.log");
        let line = |user: &str, verb: &str, resource: &str, sub: Option<&str>, stage: &str| {
            let mut object = serde_json::json!({"resource": resource});
            if let Some(sub) = sub {
                object["subresource"] = sub.into();
            }
            serde_json::json!({"stage": stage, "verb": verb, "user": {"username": user}, "objectRef": object})
                .to_string()
        };
        let lines = [
            line("a", "patch", "pods", None, "ResponseComplete"),
            line("a", "patch", "pods", None, "ResponseComplete"),
            line("a", "patch", "nodes", Some("status"), "ResponseComplete"),
            line("a", "get", "pods", None, "ResponseComplete"),
            line("a", "create", "events", None, "ResponseStarted"),
            line("b", "create", "pods", None, "ResponseComplete"),
        ];
        std::fs::write(&log, lines.join("\n")).expect("write the log");
        assert_eq!(
            api_writes(&log, "a"),
            BTreeMap::from([("nodes/status".to_owned(), 1), ("pods".to_owned(), 2)])
        );
    }
}
