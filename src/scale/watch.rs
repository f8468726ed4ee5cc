//! What a watcher of the harness (the scale probe, the cluster tests) sees of the workload's
//! pods, independent of the controller: when each was created, bound and first seen annotated,
//! and each address's holders over time. It checks, at every event, that no two live pods name
//! the same address, and afterwards that no address went to a new pod inside its cool-down.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;

use super::report::Sample;

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

impl PodRecord {
    /// Neither gone nor seen terminating: a pod of the Deployment's strength.
    fn is_live(&self) -> bool {
        !self.gone && self.leaving.is_none()
    }
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, PodRecord>,
    /// The pods not yet gone that name each address, by uid: the shared-address check looks
    /// up one address rather than every pod (it ran over all pods at every event, quadratic
    /// in a 30,000-pod run).
    holders: HashMap<Ipv4Addr, BTreeSet<String>>,
    violations: Vec<String>,
}

/// Pods of the workload at a moment, counted under the watch's lock without copying records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Not gone and not leaving.
    pub live: usize,
    /// Of those, annotated.
    pub annotated: usize,
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
        let state = self.state.lock().expect("watch state");
        state.pods.values().filter(|p| !p.gone).cloned().collect()
    }

    /// Live pods and how many of them are annotated, without copying the records (the wait
    /// for a full size asks every 100 ms).
    pub fn counts(&self) -> Counts {
        let state = self.state.lock().expect("watch state");
        let live = state.pods.values().filter(|p| p.is_live());
        let (mut counts, mut annotated) = (0, 0);
        for pod in live {
            counts += 1;
            annotated += usize::from(pod.annotated.is_some());
        }
        Counts {
            live: counts,
            annotated,
        }
    }

    /// Live pods (not gone, not leaving) but those named in `skip` (deleted, and not yet seen
    /// terminating).
    pub fn live_outside(&self, skip: &BTreeSet<String>) -> usize {
        let state = self.state.lock().expect("watch state");
        state
            .pods
            .values()
            .filter(|p| p.is_live() && !skip.contains(&p.name))
            .count()
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

    /// The names of the `n` oldest live pods that are annotated, not leaving and not in `skip`
    /// (R2 deletes them).
    pub fn oldest_annotated(&self, n: usize, skip: &BTreeSet<String>) -> Vec<String> {
        if n == 0 {
            return Vec::new();
        }
        let state = self.state.lock().expect("watch state");
        let mut oldest: Vec<&PodRecord> = state
            .pods
            .values()
            .filter(|p| p.is_live() && p.annotated.is_some())
            .filter(|p| !skip.contains(&p.name))
            .collect();
        oldest.sort_by_key(|p| p.created);
        oldest.into_iter().take(n).map(|p| p.name.clone()).collect()
    }

    /// The run from `start` to `end` in at most `MAX_SAMPLES` intervals: pods live and
    /// annotated at each interval's end, the waits of the pods bound within it, and the
    /// addresses held of the `held` reading (seconds from `start`, count) nearest before it.
    pub fn series(&self, start: Instant, end: Instant, held: &[(f64, u64)]) -> Vec<Sample> {
        const MAX_SAMPLES: f64 = 300.0;
        let pods = self.pods();
        let secs = |at: Instant| at.saturating_duration_since(start).as_secs_f64();
        let total = secs(end);
        let step = (total / MAX_SAMPLES).max(1.0);
        let mut samples = Vec::new();
        let mut t = 0.0;
        while t < total + step {
            let (from, to) = (t - step, t);
            let before = |at: Option<Instant>| at.is_some_and(|at| secs(at) <= to);
            let live = pods
                .iter()
                .filter(|p| secs(p.created) <= to && !before(p.leaving));
            let (mut n_live, mut n_annotated) = (0, 0);
            for pod in live {
                n_live += 1;
                n_annotated += u64::from(before(pod.annotated));
            }
            let mut waits: Vec<f64> = pods
                .iter()
                .filter_map(|p| {
                    let (bound, annotated) = (p.bound?, p.annotated?);
                    let at = secs(bound);
                    (at > from && at <= to)
                        .then(|| annotated.saturating_duration_since(bound).as_secs_f64())
                })
                .collect();
            waits.sort_by(f64::total_cmp);
            samples.push(Sample {
                t,
                live: n_live,
                annotated: n_annotated,
                held: held.iter().rev().find(|(at, _)| *at <= to).map(|(_, n)| *n),
                wait_p50: waits.get(waits.len() / 2).copied(),
                wait_max: waits.last().copied(),
            });
            t += step;
        }
        samples
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
    let (name, held) = (record.name.clone(), record.address);
    let state = &mut *state;
    match (held, address) {
        (Some(held), _) if deleted => {
            if let Some(holders) = state.holders.get_mut(&held) {
                holders.remove(&uid);
                if holders.is_empty() {
                    state.holders.remove(&held);
                }
            }
        }
        (_, Some(address)) if !deleted => {
            let holders = state.holders.entry(address).or_default();
            holders.insert(uid.clone());
            if holders.len() > 1 {
                let others: Vec<String> = holders
                    .iter()
                    .filter(|other| **other != uid)
                    .filter_map(|other| state.pods.get(other).map(|p| p.name.clone()))
                    .collect();
                state
                    .violations
                    .push(format!("{address}: {name} and {}", others.join(", ")));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, address: Option<&str>) -> Pod {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p-{uid}"), "uid": uid},
            "spec": {"containers": [], "nodeName": "n"},
        }))
        .expect("a pod");
        if let Some(a) = address {
            pod.metadata.annotations = Some([(ANNOTATION.to_owned(), a.to_owned())].into());
        }
        pod
    }

    #[test]
    fn an_address_is_shared_only_while_both_holders_are_there() {
        let state = Mutex::new(State::default());
        observe(&state, &pod("a", Some("10.0.0.1/32")), false);
        observe(&state, &pod("a", Some("10.0.0.1/32")), false);
        observe(&state, &pod("b", Some("10.0.0.2/32")), false);
        assert!(state.lock().unwrap().violations.is_empty());
        // a gone: its address may go to c.
        observe(&state, &pod("a", Some("10.0.0.1/32")), true);
        observe(&state, &pod("c", Some("10.0.0.1/32")), false);
        assert!(state.lock().unwrap().violations.is_empty());
        // b still there: d naming its address is a violation, naming both pods.
        observe(&state, &pod("d", Some("10.0.0.2/32")), false);
        let violations = state.lock().unwrap().violations.clone();
        assert_eq!(violations, vec!["10.0.0.2: p-d and p-b".to_owned()]);
        let counts = {
            let state = state.lock().unwrap();
            state.holders.get(&"10.0.0.1".parse().unwrap()).cloned()
        };
        assert_eq!(counts, Some(["c".to_owned()].into()));
    }
}
