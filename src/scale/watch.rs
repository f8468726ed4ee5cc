//! What a watcher of the harness (the scale probe, the cluster tests) sees of the workload's
//! pods, independent of the controller: when each was created, bound and first seen annotated,
//! and each address's holders over time. It checks, at every event, that no two live pods name
//! the same address, and afterwards that no address went to a new pod inside its cool-down.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;

pub use crate::k8s::views::PRIVATE_IPV4_ADDRESS as ANNOTATION;

#[derive(Debug, Clone)]
pub struct PodRecord {
    pub name: String,
    pub node: Option<String>,
    pub created: Instant,
    pub bound: Option<Instant>,
    pub annotated: Option<Instant>,
    pub address: Option<Ipv4Addr>,
    /// First seen terminating, or gone.
    pub leaving: Option<Instant>,
    pub gone: bool,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, PodRecord>,
    violations: Vec<String>,
}

#[derive(Clone)]
pub struct PodWatch {
    state: Arc<Mutex<State>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl PodWatch {
    /// Watches the pods of `namespace` and waits until the first list is in.
    pub async fn start(client: kube::Client, namespace: &str) -> PodWatch {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let state = Arc::new(Mutex::new(State::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod)) => {
                        observe(&shared, &pod, false)
                    }
                    Ok(watcher::Event::Delete(pod)) => observe(&shared, &pod, true),
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Init) => {}
                    // The watcher retries on its own; errors here are transient.
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let _ = ready_rx.await;
        PodWatch {
            state,
            task: Arc::new(task),
        }
    }

    pub fn pods(&self) -> Vec<PodRecord> {
        let state = self.state.lock().expect("watch state");
        state.pods.values().cloned().collect()
    }

    pub fn live(&self) -> Vec<PodRecord> {
        self.pods().into_iter().filter(|p| !p.gone).collect()
    }

    /// Every violation seen so far (two live pods naming one address, an address changed).
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().expect("watch state").violations.clone()
    }

    /// Fails the test with every violation seen so far.
    pub fn assert_no_shared_address(&self) {
        let state = self.state.lock().expect("watch state");
        assert!(
            state.violations.is_empty(),
            "addresses named by two live pods at once:\n{}",
            state.violations.join("\n")
        );
    }

    /// Every address that went from one pod to a later one did so at least `cool_down` after
    /// the first began to leave (less `slack` for the two watches' lag).
    pub fn assert_cool_downs(&self, cool_down: Duration, slack: Duration) {
        let mut by_address: BTreeMap<Ipv4Addr, Vec<PodRecord>> = BTreeMap::new();
        for pod in self.pods() {
            if let Some(address) = pod.address {
                by_address.entry(address).or_default().push(pod);
            }
        }
        let mut broken = Vec::new();
        for (address, mut holders) in by_address {
            holders.sort_by_key(|p| p.annotated);
            for pair in holders.windows(2) {
                let (before, after) = (&pair[0], &pair[1]);
                let (Some(left), Some(taken)) = (before.leaving, after.annotated) else {
                    continue;
                };
                let gap = taken.saturating_duration_since(left);
                if gap + slack < cool_down {
                    broken.push(format!(
                        "{address}: {} left, {} had it {gap:?} later",
                        before.name, after.name
                    ));
                }
            }
        }
        assert!(
            broken.is_empty(),
            "cool-downs not kept:\n{}",
            broken.join("\n")
        );
    }

    /// Time from creation to the annotation, of the pods annotated so far.
    pub fn waits(&self) -> Vec<Duration> {
        let mut waits: Vec<Duration> = self
            .pods()
            .iter()
            .filter_map(|p| Some(p.annotated?.saturating_duration_since(p.created)))
            .collect();
        waits.sort();
        waits
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

fn observe(state: &Mutex<State>, pod: &Pod, deleted: bool) {
    let now = Instant::now();
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let mut state = state.lock().expect("watch state");
    let address = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .and_then(|v| v.split('/').next()?.parse::<Ipv4Addr>().ok());
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let record = state.pods.entry(uid.clone()).or_insert_with(|| PodRecord {
        name: pod.metadata.name.clone().unwrap_or_default(),
        node: None,
        created: now,
        bound: None,
        annotated: None,
        address: None,
        leaving: None,
        gone: false,
    });
    if record.node.is_none() && node.is_some() {
        record.node = node;
        record.bound = Some(now);
    }
    if record.annotated.is_none() && address.is_some() {
        record.annotated = Some(now);
    }
    if let (Some(before), Some(after)) = (record.address, address)
        && before != after
    {
        let message = format!(
            "{} changed its address from {before} to {after}",
            record.name
        );
        state.violations.push(message);
        return;
    }
    let record = state.pods.get_mut(&uid).expect("just inserted");
    if address.is_some() {
        record.address = address;
    }
    if (deleted || pod.metadata.deletion_timestamp.is_some()) && record.leaving.is_none() {
        record.leaving = Some(now);
    }
    if deleted {
        record.gone = true;
    }
    if let Some(address) = address.filter(|_| !deleted) {
        let name = record.name.clone();
        let others: Vec<String> = state
            .pods
            .iter()
            .filter(|(other, p)| **other != uid && !p.gone && p.address == Some(address))
            .map(|(_, p)| p.name.clone())
            .collect();
        if !others.is_empty() {
            state
                .violations
                .push(format!("{address}: {name} and {}", others.join(", ")));
        }
    }
}
