//! Eventual consistency of describes: EC2 may show an ENI as it was a few seconds ago. Each ENI
//! keeps the views that stopped being current within the last `max_lag` (usually none or one),
//! and a describe reads the view that was current `lag` ago.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::sim::rng::SplitMix64;

/// How stale a describe may be.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsistencyModel {
    /// The oldest view a describe may show.
    pub max_lag: Duration,
    /// Share of describes that are stale; a stale one lags uniformly in (0, max_lag].
    pub stale_probability: f64,
}

impl Default for ConsistencyModel {
    fn default() -> Self {
        ConsistencyModel {
            max_lag: Duration::from_secs(3),
            stale_probability: 0.2,
        }
    }
}

impl ConsistencyModel {
    /// Every describe is current.
    pub fn strong() -> Self {
        ConsistencyModel {
            max_lag: Duration::ZERO,
            stale_probability: 0.0,
        }
    }

    /// The lag of one describe.
    pub fn sample(&self, rng: &mut SplitMix64) -> Duration {
        if self.max_lag.is_zero() || !rng.chance(self.stale_probability) {
            return Duration::ZERO;
        }
        // (0, 1]: a stale describe is never current.
        self.max_lag.mul_f64(1.0 - rng.next_f64())
    }
}

/// Past views of one ENI's addresses: `(until, view)`, oldest first, `until` being the moment
/// the view stopped being current.
#[derive(Debug, Clone, Default)]
pub struct History<V> {
    past: VecDeque<(Instant, V)>,
}

impl<V: Clone> History<V> {
    /// `old` stops being current at `now`. Views older than `keep` are forgotten.
    pub fn record(&mut self, now: Instant, old: V, keep: Duration) {
        if keep.is_zero() {
            self.past.clear();
            return;
        }
        self.past.push_back((now, old));
        self.prune(now, keep);
    }

    /// The view that was current at `now - lag`; `current` if nothing changed since then.
    pub fn view_at<'a>(&'a self, current: &'a V, now: Instant, lag: Duration) -> &'a V {
        if lag.is_zero() {
            return current;
        }
        let at = now.checked_sub(lag).unwrap_or(now);
        self.past
            .iter()
            .find(|(until, _)| *until > at)
            .map(|(_, v)| v)
            .unwrap_or(current)
    }

    fn prune(&mut self, now: Instant, keep: Duration) {
        while let Some((until, _)) = self.past.front() {
            if now.saturating_duration_since(*until) > keep {
                self.past.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn describe_sees_the_view_current_lag_ago() {
        let keep = Duration::from_secs(3);
        let mut h = History::default();
        let mut current = vec![1];
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // At t0+1: [1] -> [1, 2]
        h.record(Instant::now(), current.clone(), keep);
        current.push(2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        // At t0+2: [1, 2] -> [1, 2, 3]
        h.record(Instant::now(), current.clone(), keep);
        current.push(3);
        let now = Instant::now();
        assert_eq!(now - t0, Duration::from_secs(2));
        assert_eq!(h.view_at(&current, now, Duration::ZERO), &vec![1, 2, 3]);
        assert_eq!(
            h.view_at(&current, now, Duration::from_millis(500)),
            &vec![1, 2]
        );
        assert_eq!(
            h.view_at(&current, now, Duration::from_millis(1500)),
            &vec![1]
        );
        assert_eq!(h.view_at(&current, now, Duration::from_secs(10)), &vec![1]);
        // Views older than `keep` are forgotten on the next change.
        tokio::time::sleep(Duration::from_secs(5)).await;
        h.record(Instant::now(), current.clone(), keep);
        current.push(4);
        assert_eq!(h.past.len(), 1);
        assert_eq!(
            h.view_at(&current, Instant::now(), Duration::from_secs(1)),
            &vec![1, 2, 3]
        );
    }

    #[test]
    fn strong_model_is_never_stale() {
        let mut rng = SplitMix64::new(5);
        let m = ConsistencyModel::strong();
        assert!((0..1000).all(|_| m.sample(&mut rng).is_zero()));
    }

    #[test]
    fn stale_share_and_bound() {
        let mut rng = SplitMix64::new(5);
        let m = ConsistencyModel {
            max_lag: Duration::from_secs(2),
            stale_probability: 0.25,
        };
        let lags: Vec<Duration> = (0..10_000).map(|_| m.sample(&mut rng)).collect();
        let stale = lags.iter().filter(|l| !l.is_zero()).count();
        assert!((2_300..2_700).contains(&stale), "{stale}");
        assert!(lags.iter().all(|l| *l <= Duration::from_secs(2)));
    }
}
