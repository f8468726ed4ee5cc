//! The VPC Resource Controller's EC2 client: one token bucket for every request (24/s, burst
//! 36 in v1.8.2, rate never adapted), and the SDK's retries (3 attempts, exponential jitter)
//! on throttling and on describes that got no answer. Every attempt takes a token, as the
//! rate-limited HTTP client sits under the SDK.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use super::params::Params;
use crate::ec2::ratelimit::{BucketConfig, ThrottleBackoff, TokenBucket};
use crate::ec2::{Ec2Backend, Ec2Error};
use crate::ipam::Ec2ErrorClass;
use crate::sim::rng::SplitMix64;

pub(super) struct Client<B> {
    backend: B,
    bucket: TokenBucket,
    attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    rng: Mutex<SplitMix64>,
}

fn retryable(e: &Ec2Error) -> bool {
    match &e.class {
        Ec2ErrorClass::Throttled => true,
        // A describe without an answer changed nothing; the SDK retries it.
        Ec2ErrorClass::Other { .. } => e.code.is_none(),
        _ => false,
    }
}

impl<B: Ec2Backend> Client<B> {
    pub fn new(backend: B, params: &Params, seed: u64) -> Self {
        Client {
            backend,
            bucket: TokenBucket::new(
                BucketConfig {
                    rate: params.client_rate,
                    burst: params.client_burst,
                },
                // Never lowered: the VPC RC does not adapt its rate to throttling.
                ThrottleBackoff {
                    factor: 1.0,
                    ..ThrottleBackoff::default()
                },
            ),
            attempts: params.sdk_attempts.max(1),
            backoff_base: params.sdk_backoff_base,
            backoff_max: params.sdk_backoff_max,
            rng: Mutex::new(SplitMix64::new(seed)),
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .backoff_base
            .saturating_mul(1 << retry.min(16))
            .min(self.backoff_max);
        let r = self
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_f64();
        cap.mul_f64(r)
    }

    /// One request with the SDK's retries; every attempt waits for a token.
    pub async fn call<T, F, Fut>(&self, mut request: F) -> Result<T, Ec2Error>
    where
        B: Clone,
        F: FnMut(B) -> Fut,
        Fut: Future<Output = Result<T, Ec2Error>>,
    {
        let mut attempt = 1;
        loop {
            self.bucket.acquire().await;
            match request(self.backend.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && attempt < self.attempts => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
