//! Merging single-key lookups into batched describe calls: every request arriving within a short
//! window joins one batch (at most `max` keys; a full batch goes at once), and each caller gets
//! its own answer. Used for instances, subnets and instance types (SPEC 6.1: "shared by all nodes
//! seen in a short window").
//!
//! A batcher may also be single-flight: a lookup of a key whose batch is already running joins
//! that batch instead of opening the next one. Right for answers that do not change (an instance
//! type's limits); wrong where the caller needs a describe younger than its own last change (an
//! instance after an assign), so it is a choice per batcher.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::Ec2Error;

/// What a batch run returns: the value per key found; keys absent from the map were not found.
pub(crate) type BatchOutcome<V> = Result<HashMap<String, V>, Ec2Error>;

type Reply<V> = oneshot::Sender<Result<Option<V>, Ec2Error>>;

struct Pending<V> {
    /// Distinguishes this batch from a later one, so a window timer never flushes a batch it did
    /// not open.
    generation: u64,
    keys: Vec<String>,
    waiters: HashMap<String, Vec<Reply<V>>>,
}

struct State<V> {
    next_generation: u64,
    pending: Option<Pending<V>>,
    /// Single-flight only: the keys of the batches running, with the callers that joined them
    /// after they left.
    running: HashMap<String, Vec<Reply<V>>>,
}

/// Batches keyed lookups. Cheap to share (`Arc`).
pub(crate) struct Batcher<V> {
    window: Duration,
    max: usize,
    single_flight: bool,
    state: Mutex<State<V>>,
}

impl<V: Clone + Send + 'static> Batcher<V> {
    pub(crate) fn new(window: Duration, max: usize) -> Self {
        Batcher {
            window,
            max: max.max(1),
            single_flight: false,
            state: Mutex::new(State {
                next_generation: 0,
                pending: None,
                running: HashMap::new(),
            }),
        }
    }

    /// Lookups of a key already being asked join the request in flight (see the module docs).
    pub(crate) fn single_flight(mut self) -> Self {
        self.single_flight = true;
        self
    }

    /// Looks `key` up in the current batch: `Ok(None)` when the batch's answer does not contain
    /// it. `run` executes a batch; it is used only if this caller opens or fills the batch. The
    /// batch runs in a task of its own, so a caller that gives up does not cancel it for others.
    pub(crate) async fn get<F, Fut>(
        self: &Arc<Self>,
        key: &str,
        run: F,
    ) -> Result<Option<V>, Ec2Error>
    where
        F: FnOnce(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = BatchOutcome<V>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let action = 'action: {
            let mut st = self.lock();
            if let Some(joined) = st.running.get_mut(key) {
                joined.push(tx);
                break 'action Action::Wait;
            }
            let opened = st.pending.is_none();
            if opened {
                st.next_generation += 1;
                st.pending = Some(Pending {
                    generation: st.next_generation,
                    keys: Vec::new(),
                    waiters: HashMap::new(),
                });
            }
            let generation = st.next_generation;
            let full = match st.pending.as_mut() {
                Some(p) => {
                    let waiters = p.waiters.entry(key.to_string()).or_default();
                    if waiters.is_empty() {
                        p.keys.push(key.to_string());
                    }
                    waiters.push(tx);
                    p.keys.len() >= self.max
                }
                None => false,
            };
            if full {
                let batch = st.pending.take();
                self.mark_running(&mut st, batch.as_ref());
                Action::RunNow(batch)
            } else if opened {
                Action::StartTimer(generation)
            } else {
                Action::Wait
            }
        };
        match action {
            Action::RunNow(Some(batch)) => {
                tokio::spawn(Arc::clone(self).execute(batch, run));
            }
            Action::StartTimer(generation) => {
                let me = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep(me.window).await;
                    let batch = {
                        let mut st = me.lock();
                        let batch = match &st.pending {
                            Some(p) if p.generation == generation => st.pending.take(),
                            _ => None,
                        };
                        me.mark_running(&mut st, batch.as_ref());
                        batch
                    };
                    if let Some(batch) = batch {
                        me.execute(batch, run).await;
                    }
                });
            }
            Action::RunNow(None) | Action::Wait => {}
        }
        rx.await.unwrap_or_else(|_| {
            Err(Ec2Error::local(
                "BatchAborted",
                "the batched request was dropped",
            ))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<V>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The batch leaves for EC2: later lookups of its keys join it (single-flight only).
    fn mark_running(&self, st: &mut State<V>, batch: Option<&Pending<V>>) {
        if let (true, Some(batch)) = (self.single_flight, batch) {
            for key in &batch.keys {
                st.running.entry(key.clone()).or_default();
            }
        }
    }

    async fn execute<F, Fut>(self: Arc<Self>, batch: Pending<V>, run: F)
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = BatchOutcome<V>>,
    {
        let Pending {
            keys, mut waiters, ..
        } = batch;
        // Answers go out in the order the keys joined (not the map's random order), so the
        // callers wake in a reproducible order under the simulator.
        let order = keys.clone();
        let _guard = RunningGuard {
            batcher: &self,
            keys: &order,
        };
        let outcome = run(keys).await;
        for key in &order {
            let mut replies = waiters.remove(key).unwrap_or_default();
            if self.single_flight
                && let Some(joined) = self.lock().running.remove(key)
            {
                replies.extend(joined);
            }
            let answer = match &outcome {
                Ok(found) => Ok(found.get(key).cloned()),
                Err(e) => Err(e.clone()),
            };
            for reply in replies {
                // A caller that gave up has dropped its receiver; nothing to do.
                let _ = reply.send(answer.clone());
            }
        }
    }
}

/// Forgets a batch's keys as running however its run ends (its task dropped included): a caller
/// that joined it then gets an error rather than waiting for ever.
struct RunningGuard<'a, V> {
    batcher: &'a Batcher<V>,
    keys: &'a [String],
}

impl<V> Drop for RunningGuard<'_, V> {
    fn drop(&mut self) {
        if self.batcher.single_flight {
            let mut st = self.batcher.state.lock().unwrap_or_else(|e| e.into_inner());
            for key in self.keys {
                st.running.remove(key);
            }
        }
    }
}

enum Action<V> {
    RunNow(Option<Pending<V>>),
    StartTimer(u64),
    Wait,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::Ec2ErrorClass;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type BoxedRun = std::pin::Pin<Box<dyn Future<Output = BatchOutcome<String>> + Send>>;

    fn echo_run(
        calls: Arc<AtomicUsize>,
        sizes: Arc<Mutex<Vec<usize>>>,
    ) -> impl FnOnce(Vec<String>) -> BoxedRun + Send + 'static {
        move |keys| {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                sizes.lock().unwrap().push(keys.len());
                // "missing-*" keys are not found.
                Ok(keys
                    .into_iter()
                    .filter(|k| !k.starts_with("missing"))
                    .map(|k| (k.clone(), format!("value of {k}")))
                    .collect())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_share_one_batch() {
        let b = Arc::new(Batcher::<String>::new(Duration::from_millis(50), 1000));
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let (b, c, s) = (b.clone(), calls.clone(), sizes.clone());
                tokio::spawn(async move {
                    let key = if i == 7 {
                        "missing-7".to_string()
                    } else {
                        format!("k{}", i % 150)
                    };
                    (key.clone(), b.get(&key, echo_run(c, s)).await)
                })
            })
            .collect();
        for t in tasks {
            let (key, got) = t.await.unwrap();
            let got = got.unwrap();
            if key.starts_with("missing") {
                assert_eq!(got, None);
            } else {
                assert_eq!(got, Some(format!("value of {key}")));
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Duplicates are asked once: 150 distinct keys plus the missing one.
        assert_eq!(*sizes.lock().unwrap(), vec![151]);
    }

    #[tokio::test(start_paused = true)]
    async fn full_batch_goes_at_once_and_the_rest_waits_for_the_window() {
        let b = Arc::new(Batcher::<String>::new(Duration::from_millis(50), 100));
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..250)
            .map(|i| {
                let (b, c, s) = (b.clone(), calls.clone(), sizes.clone());
                tokio::spawn(async move {
                    b.get(&format!("k{i}"), echo_run(c, s)).await.unwrap();
                    start.elapsed()
                })
            })
            .collect();
        let mut elapsed = Vec::new();
        for t in tasks {
            elapsed.push(t.await.unwrap());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let mut s = sizes.lock().unwrap().clone();
        s.sort();
        assert_eq!(s, vec![50, 100, 100]);
        // The two full batches did not wait for the window.
        assert_eq!(elapsed.iter().filter(|d| d.is_zero()).count(), 200);
        assert_eq!(
            elapsed
                .iter()
                .filter(|d| **d == Duration::from_millis(50))
                .count(),
            50
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_in_separate_windows_make_separate_batches() {
        let b = Arc::new(Batcher::<String>::new(Duration::from_millis(50), 1000));
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        b.get("a", echo_run(calls.clone(), sizes.clone()))
            .await
            .unwrap();
        b.get("b", echo_run(calls.clone(), sizes.clone()))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A run that takes `latency`, counting its calls.
    fn slow_run(
        calls: Arc<AtomicUsize>,
        latency: Duration,
    ) -> impl FnOnce(Vec<String>) -> BoxedRun + Send + 'static {
        move |keys| {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(latency).await;
                Ok(keys.into_iter().map(|k| (k.clone(), k)).collect())
            })
        }
    }

    /// Two lookups of one key, the second made while the first one's batch is in flight;
    /// returns the number of requests made.
    async fn lookup_during_flight(b: Arc<Batcher<String>>) -> usize {
        let calls = Arc::new(AtomicUsize::new(0));
        let latency = Duration::from_millis(120);
        let first = {
            let (b, c) = (b.clone(), calls.clone());
            tokio::spawn(async move { b.get("m5.xlarge", slow_run(c, latency)).await })
        };
        // Past the window: the first batch has left and is waiting for EC2.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let second = b.get("m5.xlarge", slow_run(calls.clone(), latency)).await;
        assert_eq!(second.unwrap().as_deref(), Some("m5.xlarge"));
        assert_eq!(first.await.unwrap().unwrap().as_deref(), Some("m5.xlarge"));
        calls.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn single_flight_lookup_joins_the_request_in_flight() {
        let b = Batcher::new(Duration::from_millis(50), 100).single_flight();
        assert_eq!(lookup_during_flight(Arc::new(b)).await, 1);
        // Once answered, the key is no longer in flight: a new lookup asks again.
        let b = Arc::new(Batcher::new(Duration::from_millis(50), 100).single_flight());
        let calls = Arc::new(AtomicUsize::new(0));
        let ms = Duration::from_millis(10);
        b.get("a", slow_run(calls.clone(), ms)).await.unwrap();
        b.get("a", slow_run(calls.clone(), ms)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn without_single_flight_a_lookup_in_flight_is_asked_again() {
        let b = Batcher::new(Duration::from_millis(50), 100);
        assert_eq!(lookup_during_flight(Arc::new(b)).await, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_joining_a_batch_that_dies_gets_an_error() {
        let b = Arc::new(Batcher::<String>::new(Duration::from_millis(50), 100).single_flight());
        let dies = |_keys: Vec<String>| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!("batch task dies");
        };
        let first = {
            let b = b.clone();
            tokio::spawn(async move { b.get("a", dies).await })
        };
        tokio::time::sleep(Duration::from_millis(60)).await;
        let joined = b.get("a", dies).await;
        assert!(
            matches!(&joined.unwrap_err().class, Ec2ErrorClass::Other { code, .. } if code == "BatchAborted")
        );
        assert!(first.await.unwrap().is_err());
        assert!(b.lock().running.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_error_reaches_every_caller() {
        let b = Arc::new(Batcher::<String>::new(Duration::from_millis(50), 1000));
        let fail = |_keys: Vec<String>| async {
            Err::<HashMap<String, String>, _>(Ec2Error::from_code(
                "RequestLimitExceeded",
                "slow down",
            ))
        };
        let (x, y) = tokio::join!(b.get("a", fail), b.get("b", fail));
        assert!(x.unwrap_err().is_throttled());
        assert!(y.unwrap_err().is_throttled());
    }
}
