//! What the end-to-end tests observe besides the cluster's state: a watch of the pods'
//! annotations over time (first sight, changes, addresses shared by live pods), the API writes
//! in the controller's request log, and quantiles.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::e2e::{Env, PodState, pod_state};

/// What a watch of the test's pods saw of their annotations: when each UID was first seen
/// annotated, any change of an annotation once written (which must never happen), and any
/// address seen on two live pods at once.
#[derive(Debug, Default)]
pub struct AnnotationLog {
    /// By pod UID: when the annotation was first seen, and its value.
    pub first: BTreeMap<String, (Instant, String)>,
    /// "name (uid): old -> new" for every annotation that changed or vanished on a live pod.
    pub changed: Vec<String>,
    /// "addr: name (uid) and uid" for every address seen on two live pods.
    pub shared: Vec<String>,
    /// Live pods' addresses by UID.
    live: BTreeMap<String, Ipv4Addr>,
}

impl AnnotationLog {
    fn on_apply(&mut self, state: &PodState) {
        match (self.first.get(&state.uid).cloned(), &state.annotation) {
            (None, Some(value)) => {
                self.first
                    .insert(state.uid.clone(), (Instant::now(), value.clone()));
            }
            (Some((_, old)), new) if new.as_ref() != Some(&old) => {
                let change = format!("{} ({}): {old} -> {new:?}", state.name, state.uid);
                self.changed.push(change);
            }
            _ => {}
        }
        if let Some(addr) = state.address()
            && self.live.insert(state.uid.clone(), addr).is_none()
            && let Some((other, _)) = self
                .live
                .iter()
                .find(|(uid, a)| **a == addr && **uid != state.uid)
        {
            let shared = format!("{addr}: {} ({}) and {other}", state.name, state.uid);
            self.shared.push(shared);
        }
    }

    fn on_delete(&mut self, state: &PodState) {
        self.live.remove(&state.uid);
    }
}

/// Watches the test's pods for the life of the value.
pub struct AnnotationWatch {
    log: std::sync::Arc<std::sync::Mutex<AnnotationLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl AnnotationWatch {
    pub async fn start(env: &Env) -> AnnotationWatch {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let log = std::sync::Arc::new(std::sync::Mutex::new(AnnotationLog::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let api = env.pods_api();
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                let (pod, deleted) = match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => (pod, false),
                    Ok(watcher::Event::Delete(pod)) => (pod, true),
                    _ => continue,
                };
                let Some(state) = pod_state(&pod) else {
                    continue;
                };
                let mut log = shared.lock().expect("annotation log");
                // A deleted pod's last state may carry an annotation the watch had not seen.
                log.on_apply(&state);
                if deleted {
                    log.on_delete(&state);
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        AnnotationWatch { log, task }
    }

    pub fn with<T>(&self, f: impl FnOnce(&AnnotationLog) -> T) -> T {
        f(&self.log.lock().expect("annotation log"))
    }
}

impl Drop for AnnotationWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// API writes the controller made, from kube's request log (`kube_client=debug`), by kind.
pub fn api_writes(log: &str) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("requesting")) {
        let Some(method) = ["PATCH", "POST", "PUT", "DELETE"]
            .into_iter()
            .find(|m| line.contains(&format!("http.method={m}")))
        else {
            continue;
        };
        let url = line
            .split("http.url=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        let path = url.split('?').next().unwrap_or_default();
        let kind = if path.contains("/leases") {
            "lease"
        } else if path.contains("/events") {
            "event"
        } else if path.contains("/nodeaddresspools") {
            if path.ends_with("/status") {
                "pool status"
            } else {
                "pool object"
            }
        } else if path.contains("/nodes/") && path.ends_with("/status") {
            "node capacity"
        } else if path.contains("/pods/") {
            "pod annotation"
        } else {
            "other"
        };
        let _ = method;
        *out.entry(kind).or_insert(0) += 1;
    }
    out
}

/// The `q` quantile of `values` (nearest rank).
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
