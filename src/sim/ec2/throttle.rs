//! EC2's account-level request throttling: a token bucket per class of action that refuses
//! (`RequestLimitExceeded`) instead of waiting. AWS documents the defaults: mutating actions
//! bucket 50, refill 5/s; non-mutating (describe) actions bucket 100, refill 20/s.

use tokio::time::Instant;

/// Size and refill of one account bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccountBucketConfig {
    pub capacity: u32,
    pub refill_per_sec: f64,
}

impl AccountBucketConfig {
    /// No throttling at all.
    pub const UNLIMITED: AccountBucketConfig = AccountBucketConfig {
        capacity: u32::MAX,
        refill_per_sec: f64::INFINITY,
    };
}

/// One account bucket.
#[derive(Debug, Clone)]
pub struct AccountBucket {
    config: AccountBucketConfig,
    tokens: f64,
    last: Instant,
}

impl AccountBucket {
    /// A full bucket.
    pub fn new(config: AccountBucketConfig, now: Instant) -> Self {
        AccountBucket {
            config,
            tokens: f64::from(config.capacity),
            last: now,
        }
    }

    /// Takes a token if there is one; `false` means EC2 answers `RequestLimitExceeded`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.config.refill_per_sec.is_infinite() {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.config.refill_per_sec)
            .min(f64::from(self.config.capacity));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn mutating_bucket_gives_50_then_5_per_second() {
        let mut b = AccountBucket::new(
            AccountBucketConfig {
                capacity: 50,
                refill_per_sec: 5.0,
            },
            Instant::now(),
        );
        let now = Instant::now();
        let ok = (0..60).filter(|_| b.try_take(now)).count();
        assert_eq!(ok, 50);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let later = Instant::now();
        assert_eq!((0..60).filter(|_| b.try_take(later)).count(), 10);
        // It never holds more than its capacity.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let much_later = Instant::now();
        assert_eq!((0..200).filter(|_| b.try_take(much_later)).count(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn describe_bucket_gives_100_then_20_per_second() {
        let mut b = AccountBucket::new(
            AccountBucketConfig {
                capacity: 100,
                refill_per_sec: 20.0,
            },
            Instant::now(),
        );
        let now = Instant::now();
        assert_eq!((0..150).filter(|_| b.try_take(now)).count(), 100);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!((0..150).filter(|_| b.try_take(Instant::now())).count(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_refuses() {
        let mut b = AccountBucket::new(AccountBucketConfig::UNLIMITED, Instant::now());
        assert!((0..100_000).all(|_| b.try_take(Instant::now())));
    }
}
