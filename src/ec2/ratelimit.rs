//! The client's token buckets, on tokio time so that under a paused runtime (the simulator, the
//! tests) they run on the virtual clock. governor keeps its own clock, so this small bucket is
//! ours: a reservation bucket (waiters queue up behind each other instead of polling) whose rate
//! drops for a while after EC2 says `RequestLimitExceeded`.

use std::sync::Mutex;
use std::time::Duration;

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

#[derive(Debug)]
struct State {
    /// May go negative: that is the queue of reservations not yet due.
    tokens: f64,
    last: Instant,
    rate: f64,
    lowered_until: Option<Instant>,
    last_lowered: Option<Instant>,
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
            }),
        }
    }

    pub fn config(&self) -> BucketConfig {
        self.config
    }

    /// Waits until a token is available and takes it. Cancel-safe: a waiter dropped before its
    /// turn gives its reservation back.
    pub async fn acquire(&self) {
        let wait = {
            let mut s = self.lock();
            self.refill(&mut s, Instant::now());
            s.tokens -= 1.0;
            if s.tokens >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-s.tokens / s.rate)
        };
        let mut refund = Refund {
            bucket: self,
            armed: true,
        };
        tokio::time::sleep(wait).await;
        refund.armed = false;
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
        // The state stays consistent even if a holder panicked (plain arithmetic).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Gives a reservation back if its waiter is dropped before its turn.
struct Refund<'a> {
    bucket: &'a TokenBucket,
    armed: bool,
}

impl Drop for Refund<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut s = self.bucket.lock();
            s.tokens += 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        // Due at 1 s after the first take, not 2 s (the abandoned reservation was returned).
        assert!(
            start.elapsed() <= Duration::from_millis(950),
            "{:?}",
            start.elapsed()
        );
    }
}
