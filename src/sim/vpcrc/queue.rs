//! A work queue as client-go's: items are handed to a fixed number of workers in FIFO order; an
//! item already waiting is not queued twice, and one being processed is queued again only after
//! it is done; `add_after` delays an item (requeue with a delay).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

struct State<T> {
    queue: VecDeque<T>,
    /// Waiting in `queue`, or to be queued again when done.
    dirty: BTreeSet<T>,
    processing: BTreeSet<T>,
    delayed: BTreeMap<(Instant, u64), T>,
    seq: u64,
}

pub(super) struct WorkQueue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    delayed_changed: Notify,
}

impl<T: Ord + Clone> WorkQueue<T> {
    pub fn new() -> Self {
        WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: BTreeSet::new(),
                processing: BTreeSet::new(),
                delayed: BTreeMap::new(),
                seq: 0,
            }),
            ready: Notify::new(),
            delayed_changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, item: T) {
        let mut st = self.lock();
        if !st.dirty.insert(item.clone()) {
            return;
        }
        if st.processing.contains(&item) {
            return;
        }
        st.queue.push_back(item);
        drop(st);
        self.ready.notify_one();
    }

    pub fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        let mut st = self.lock();
        st.seq += 1;
        let key = (Instant::now() + delay, st.seq);
        st.delayed.insert(key, item);
        drop(st);
        self.delayed_changed.notify_one();
    }

    /// The next item; waits while there is none.
    pub async fn get(&self) -> T {
        loop {
            {
                let mut st = self.lock();
                if let Some(item) = st.queue.pop_front() {
                    st.dirty.remove(&item);
                    st.processing.insert(item.clone());
                    return item;
                }
            }
            self.ready.notified().await;
        }
    }

    /// The worker is done with `item`: if it was added meanwhile, it is queued again.
    pub fn done(&self, item: &T) {
        let mut st = self.lock();
        st.processing.remove(item);
        if st.dirty.contains(item) {
            st.queue.push_back(item.clone());
            drop(st);
            self.ready.notify_one();
        }
    }

    /// Moves delayed items into the queue when they are due. Runs until aborted.
    pub async fn pump_delayed(&self) {
        loop {
            let next = {
                let mut st = self.lock();
                let now = Instant::now();
                let mut due = Vec::new();
                while let Some(entry) = st.delayed.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    due.push(entry.remove());
                }
                let next = st.delayed.first_key_value().map(|(k, _)| k.0);
                drop(st);
                for item in due {
                    self.add(item);
                }
                next
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        biased;
                        _ = self.delayed_changed.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.delayed_changed.notified().await,
            }
        }
    }

    /// Items waiting or delayed (not those being processed).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let st = self.lock();
        st.queue.len() + st.delayed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn dedupes_waiting_items_and_requeues_items_added_while_processing() {
        let q = WorkQueue::new();
        q.add(1);
        q.add(2);
        q.add(1);
        assert_eq!(q.len(), 2);
        let first = q.get().await;
        assert_eq!(first, 1);
        // Added again while processed: queued once it is done.
        q.add(1);
        assert_eq!(q.len(), 1);
        q.done(&first);
        assert_eq!(q.get().await, 2);
        assert_eq!(q.get().await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_items_arrive_when_due() {
        let q = Arc::new(WorkQueue::new());
        let pump = tokio::spawn({
            let q = q.clone();
            async move { q.pump_delayed().await }
        });
        let start = Instant::now();
        q.add_after(7, Duration::from_millis(600));
        q.add_after(8, Duration::from_millis(300));
        assert_eq!(q.get().await, 8);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(q.get().await, 7);
        assert_eq!(start.elapsed(), Duration::from_millis(600));
        pump.abort();
    }
}
