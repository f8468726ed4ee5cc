//! The client's token buckets, on tokio time so that under a paused runtime (the simulator, the
//! tests) they run on the virtual clock. governor keeps its own clock, so this small bucket is
//! ours: a queue of waiters (served in turn, each woken when its token is due, none polling)
//! whose rate drops for a while after EC2 says `RequestLimitExceeded`.
//!
//! Waiters whose [`Urgency`] is raised go before the others. Invariant: the next token goes to the
//! earliest raised waiter, or else the earliest waiter; within each class the order is arrival.
//! An Assign started as a warm refill is ordinary; once a pod on its node waits for the address
//! the worker raises it. In #18's scale-out of 1,000 moto nodes about 1,000 refills queued at 5/s
//! and a pod behind them waited 120 s for its node's Assign; raised, 0.6 s at most
//! (docs/benchmarks.md).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Rate and burst of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketConfig {
    /// Tokens per second.
    pub rate: f64,
    /// Bucket size: how many requests may go at once after a quiet period.
    pub burst: u32,
}

/// How the rate drops after a throttle, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleBackoff {
    /// The rate is multiplied by this on each throttle (0.5 halves it).
    pub factor: f64,
    /// The configured rate comes back after this long without a throttle.
    pub hold: Duration,
    /// Never below this fraction of the configured rate.
    pub floor_fraction: f64,
    /// Throttles closer together than this count as one signal: a burst of concurrent requests
    /// all throttled at once must not divide the rate by 2^n.
    pub coalesce: Duration,
}

impl Default for ThrottleBackoff {
    fn default() -> Self {
        ThrottleBackoff {
            factor: 0.5,
            hold: Duration::from_secs(60),
            floor_fraction: 0.1,
            coalesce: Duration::from_secs(1),
        }
    }
}

/// Whether a call goes before the ordinary ones in its bucket: raised while pods wait for what
/// it brings. Clones share the flag, so it can be raised while the call waits for its token.
#[derive(Debug, Clone, Default)]
pub struct Urgency(Arc<AtomicBool>);

impl Urgency {
    pub fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A token counted as available when this close to one: float sums of refills must not leave a
/// waiter a nanosecond short (a timer rounds that up to a millisecond).
const EPSILON: f64 = 1e-9;

#[derive(Debug)]
struct Waiter {
    id: u64,
    urgency: Urgency,
    wake: Arc<Notify>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
    rate: f64,
    lowered_until: Option<Instant>,
    last_lowered: Option<Instant>,
    queue: VecDeque<Waiter>,
    next_id: u64,
}

impl State {
    /// The waiter the next token is for: the earliest raised one, or else the earliest.
    fn next(&self) -> Option<&Waiter> {
        self.queue
            .iter()
            .find(|w| w.urgency.is_raised())
            .or_else(|| self.queue.front())
    }

    /// Wakes the waiter the next token is for, so it sets its timer (a permit is kept if it is
    /// not waiting yet).
    fn wake_next(&self) {
        if let Some(w) = self.next() {
            w.wake.notify_one();
        }
    }

    fn remove(&mut self, id: u64) {
        self.queue.retain(|w| w.id != id);
    }
}

/// A token bucket with a rate that can be lowered for a while.
#[derive(Debug)]
pub struct TokenBucket {
    config: BucketConfig,
    backoff: ThrottleBackoff,
    state: Mutex<State>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(config: BucketConfig, backoff: ThrottleBackoff) -> Self {
        let config = BucketConfig {
            // A zero or negative rate would never refill; treat it as a very slow bucket.
            rate: config.rate.max(0.001),
            burst: config.burst.max(1),
        };
        TokenBucket {
            config,
            backoff,
            state: Mutex::new(State {
                tokens: f64::from(config.burst),
                last: Instant::now(),
                rate: config.rate,
                lowered_until: None,
                last_lowered: None,
                queue: VecDeque::new(),
                next_id: 0,
            }),
        }
    }

    pub fn config(&self) -> BucketConfig {
        self.config
    }

    /// Waits for a token in turn (an ordinary waiter) and takes it.
    pub async fn acquire(&self) {
        self.acquire_as(&Urgency::default()).await;
    }

    /// Waits until a token is for this waiter and takes it: raised waiters go before the others
    /// (see the module's invariant). Cancel-safe: a waiter dropped before its turn leaves the
    /// queue and the next one is woken.
    pub async fn acquire_as(&self, urgency: &Urgency) {
        let (id, wake) = {
            let mut s = self.lock();
            self.refill(&mut s, Instant::now());
            if s.queue.is_empty() && s.tokens >= 1.0 - EPSILON {
                s.tokens -= 1.0;
                return;
            }
            let id = s.next_id;
            s.next_id += 1;
            let wake = Arc::new(Notify::new());
            s.queue.push_back(Waiter {
                id,
                urgency: urgency.clone(),
                wake: Arc::clone(&wake),
            });
            (id, wake)
        };
        let mut place = Place {
            bucket: self,
            id,
            armed: true,
        };
        loop {
            let due = {
                let mut s = self.lock();
                let now = Instant::now();
                self.refill(&mut s, now);
                if s.next().map(|w| w.id) == Some(id) {
                    if s.tokens >= 1.0 - EPSILON {
                        s.tokens -= 1.0;
                        s.remove(id);
                        place.armed = false;
                        s.wake_next();
                        return;
                    }
                    Some(now + Duration::from_secs_f64((1.0 - s.tokens) / s.rate))
                } else {
                    // Not this waiter's token: the one it is for may have been raised while
                    // it waited for a wake-up, so make sure it set its timer.
                    s.wake_next();
                    None
                }
            };
            match due {
                Some(due) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = wake.notified() => {}
                    }
                }
                None => wake.notified().await,
            }
        }
    }

    /// EC2 said `RequestLimitExceeded`: the account is busier than assumed. Lower the rate (unless
    /// it was just lowered), drop saved-up burst, and keep it low for `hold`.
    pub fn on_throttled(&self) {
        let now = Instant::now();
        let mut s = self.lock();
        self.refill(&mut s, now);
        let recent = s
            .last_lowered
            .is_some_and(|t| now.saturating_duration_since(t) < self.backoff.coalesce);
        if !recent {
            let floor = self.config.rate * self.backoff.floor_fraction;
            s.rate = (s.rate * self.backoff.factor).max(floor).max(0.001);
            s.last_lowered = Some(now);
            s.tokens = s.tokens.min(0.0);
        }
        s.lowered_until = Some(now + self.backoff.hold);
    }

    /// The rate in force now (tokens per second).
    pub fn current_rate(&self) -> f64 {
        let mut s = self.lock();
        self.refill(&mut s, Instant::now());
        s.rate
    }

    fn refill(&self, s: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * s.rate).min(f64::from(self.config.burst));
        s.last = now;
        if s.lowered_until.is_some_and(|until| now >= until) {
            s.rate = self.config.rate;
            s.lowered_until = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked (plain arithmetic and a queue).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A waiter's place in the queue: given up if the waiter is dropped before its turn.
struct Place<'a> {
    bucket: &'a TokenBucket,
    id: u64,
    armed: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut s = self.bucket.lock();
            s.remove(self.id);
            s.wake_next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn raised() -> Urgency {
        let u = Urgency::default();
        u.raise();
        u
    }

    fn bucket(rate: f64, burst: u32) -> Arc<TokenBucket> {
        Arc::new(TokenBucket::new(
            BucketConfig { rate, burst },
            ThrottleBackoff::default(),
        ))
    }

    /// Fires `n` acquisitions at once and returns when each went through (seconds from start).
    async fn completion_times(b: &Arc<TokenBucket>, n: usize) -> Vec<f64> {
        let start = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.acquire().await;
                    start.elapsed().as_secs_f64()
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort_by(f64::total_cmp);
        times
    }

    #[tokio::test(start_paused = true)]
    async fn burst_of_200_is_held_to_the_rate() {
        let b = bucket(5.0, 40);
        let times = completion_times(&b, 200).await;
        // After virtual time T, at most burst + rate * T requests went through.
        for t in [0.0, 0.5, 1.0, 5.0, 10.0, 20.0, 31.9] {
            let through = times.iter().filter(|&&x| x <= t).count();
            assert!(
                through as f64 <= 40.0 + 5.0 * t + 1e-9,
                "{through} through after {t}s"
            );
        }
        // The burst went at once, and the rest at the rate: the 200th at (200 - 40) / 5 = 32 s.
        assert_eq!(times.iter().filter(|&&x| x == 0.0).count(), 40);
        let last = times[199];
        assert!((31.9..=32.1).contains(&last), "last at {last}");
    }

    #[tokio::test(start_paused = true)]
    async fn describe_defaults_hold_a_burst_of_200() {
        let b = bucket(20.0, 80);
        let times = completion_times(&b, 200).await;
        for t in [0.0, 1.0, 3.0, 5.9] {
            let through = times.iter().filter(|&&x| x <= t).count();
            assert!(through as f64 <= 80.0 + 20.0 * t + 1e-9);
        }
        assert!((5.9..=6.1).contains(&times[199]));
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_halves_the_rate_then_restores_it() {
        let b = bucket(10.0, 10);
        b.on_throttled();
        assert_eq!(b.current_rate(), 5.0);
        // A second throttle within the coalescing window is the same signal.
        b.on_throttled();
        assert_eq!(b.current_rate(), 5.0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        b.on_throttled();
        assert_eq!(b.current_rate(), 2.5);
        // Floor: 10% of the configured rate.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            b.on_throttled();
        }
        assert_eq!(b.current_rate(), 1.0);
        // Hold: 60 s after the last throttle the configured rate is back.
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(b.current_rate(), 1.0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(b.current_rate(), 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn lowered_rate_slows_requests_and_drops_the_burst() {
        let b = bucket(10.0, 10);
        b.on_throttled();
        // No saved burst after a throttle: 10 requests at 5/s take 2 s.
        let times = completion_times(&b, 10).await;
        assert!((1.9..=2.1).contains(&times[9]), "{}", times[9]);
        assert!(times[0] > 0.1);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiter_gives_its_token_back() {
        let b = bucket(1.0, 1);
        b.acquire().await;
        let done = Arc::new(AtomicUsize::new(0));
        // This waiter gives up before its turn.
        let _ = tokio::time::timeout(Duration::from_millis(100), b.acquire()).await;
        let d = done.clone();
        let b2 = b.clone();
        let start = Instant::now();
        tokio::spawn(async move {
            b2.acquire().await;
            d.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 1);
        // Due at 1 s after the first take, not 2 s (the abandoned place was given up).
        assert!(
            start.elapsed() <= Duration::from_millis(950),
            "{:?}",
            start.elapsed()
        );
    }

    /// Takes the one token, then queues `n` ordinary waiters a millisecond apart; each returns
    /// when it went through (seconds from start) and its flag.
    async fn queue_up(
        b: &Arc<TokenBucket>,
        n: usize,
    ) -> Vec<(Urgency, tokio::task::JoinHandle<f64>)> {
        let start = Instant::now();
        b.acquire().await;
        let mut waiters = Vec::new();
        for _ in 0..n {
            let urgency = Urgency::default();
            let (b, u) = (b.clone(), urgency.clone());
            waiters.push((
                urgency,
                tokio::spawn(async move {
                    b.acquire_as(&u).await;
                    start.elapsed().as_secs_f64()
                }),
            ));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        waiters
    }

    async fn times(waiters: Vec<(Urgency, tokio::task::JoinHandle<f64>)>) -> Vec<f64> {
        let mut out = Vec::new();
        for (_, t) in waiters {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_raised_waiter_goes_before_the_ordinary_ones_queued_earlier() {
        let b = bucket(1.0, 1);
        let mut waiters = queue_up(&b, 5).await;
        let (b2, urgent) = (b.clone(), raised());
        let start = Instant::now();
        let late = tokio::spawn(async move {
            b2.acquire_as(&urgent).await;
            start.elapsed().as_secs_f64()
        });
        waiters.push((raised(), late));
        let t = times(waiters).await;
        // The token due at 1 s (after the first take) is the raised waiter's, asked last.
        assert!(t[5] < 1.0, "raised waiter at {}", t[5]);
        // The ordinary ones keep their order, one second apart, after it.
        for (i, pair) in t[..5].windows(2).enumerate() {
            assert!(
                pair[0] < pair[1],
                "waiter {i} at {} after {}",
                pair[0],
                pair[1]
            );
        }
        assert!((1.9..=2.1).contains(&t[0]), "first ordinary at {}", t[0]);
        assert!((5.9..=6.1).contains(&t[4]), "last ordinary at {}", t[4]);
    }

    #[tokio::test(start_paused = true)]
    async fn raising_a_waiter_while_it_waits_moves_it_to_the_front() {
        let b = bucket(1.0, 1);
        let waiters = queue_up(&b, 5).await;
        // Pods start to wait on the fourth waiter's node while it is queued.
        waiters[3].0.raise();
        let t = times(waiters).await;
        assert!((0.9..=1.1).contains(&t[3]), "raised waiter at {}", t[3]);
        assert!((1.9..=2.1).contains(&t[0]), "first ordinary at {}", t[0]);
        assert!((4.9..=5.1).contains(&t[4]), "last ordinary at {}", t[4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_raised_waiter_dropped_before_its_turn_hands_the_token_on() {
        let b = bucket(1.0, 1);
        let waiters = queue_up(&b, 3).await;
        let b2 = b.clone();
        // A raised waiter that gives up (its call was cancelled) after half a second.
        let _ = tokio::time::timeout(Duration::from_millis(500), b2.acquire_as(&raised())).await;
        let t = times(waiters).await;
        assert!((0.9..=1.1).contains(&t[0]), "first ordinary at {}", t[0]);
        assert!((2.9..=3.1).contains(&t[2]), "last ordinary at {}", t[2]);
    }

    #[tokio::test(start_paused = true)]
    async fn raised_waiters_are_still_held_to_the_rate() {
        let b = bucket(5.0, 40);
        let start = Instant::now();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let b = b.clone();
                let urgency = if i % 2 == 0 {
                    raised()
                } else {
                    Urgency::default()
                };
                tokio::spawn(async move {
                    b.acquire_as(&urgency).await;
                    (i % 2 == 0, start.elapsed().as_secs_f64())
                })
            })
            .collect();
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap());
        }
        for t in [0.0, 1.0, 10.0, 31.9] {
            let through = done.iter().filter(|(_, x)| *x <= t).count();
            assert!(through as f64 <= 40.0 + 5.0 * t + 1e-9, "{through} by {t}s");
        }
        // Every raised waiter not served by the burst went before every ordinary one queued.
        let last_raised = done.iter().filter(|(r, _)| *r).map(|(_, x)| *x);
        let last_raised = last_raised.fold(0.0, f64::max);
        let first_queued_ordinary = done
            .iter()
            .filter(|(r, x)| !*r && *x > 0.0)
            .map(|(_, x)| *x)
            .fold(f64::MAX, f64::min);
        assert!(last_raised < first_queued_ordinary);
        let last = done.iter().map(|(_, x)| *x).fold(0.0, f64::max);
        assert!((31.9..=32.1).contains(&last), "last at {last}");
    }
}
