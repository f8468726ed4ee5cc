//! EC2's account as the benchmark against the real VPC Resource Controller plays it in the EC2
//! proxy (SPEC 12, the same figures as the simulator's EC2): a latency per action, and the
//! account's token buckets, answering `RequestLimitExceeded` (HTTP 503, EC2's XML error body)
//! when a bucket is empty.
//!
//! - Buckets: `Describe*` calls take from the describe bucket (100, refill 20/s), every other call
//!   from the mutating bucket (50, refill 5/s), as EC2 sorts non-mutating and mutating actions.
//!   A throttled call takes no token and is answered at once, as EC2 does.
//! - Latency: log-normal around the action's median (describe 120 ms, assign 200 ms, unassign
//!   150 ms, other calls 200 ms), sigma 0.5, capped at 20x the median, as the simulator draws it;
//!   slept in the connection's own thread, so calls of other clients overlap as on EC2.
//! - Throttles are counted by action.
//!
//! Prefix delegation is not emulated: moto ignores `Ipv4PrefixCount`, and faking /28s would
//! mean keeping the proxy's own view of every ENI; the benchmark plays secondary mode only.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;
use super::loopback_http::Response;

/// One token bucket's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketSpec {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

/// The knobs: EC2's latency per action and the account's buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSpec {
    pub mutating: BucketSpec,
    pub describe: BucketSpec,
    /// Median latency by action; `Describe*` actions not listed take `describe_median`, others
    /// `other_median`.
    pub medians: BTreeMap<String, Duration>,
    pub describe_median: Duration,
    pub other_median: Duration,
    /// Spread of the log-normal (0: every call takes its median).
    pub sigma: f64,
    pub seed: u64,
}

impl AccountSpec {
    /// SPEC 12's figures.
    pub fn spec12() -> AccountSpec {
        let ms = Duration::from_millis;
        AccountSpec {
            mutating: BucketSpec {
                capacity: 50.0,
                refill_per_sec: 5.0,
            },
            describe: BucketSpec {
                capacity: 100.0,
                refill_per_sec: 20.0,
            },
            medians: BTreeMap::from([
                ("AssignPrivateIpAddresses".to_owned(), ms(200)),
                ("UnassignPrivateIpAddresses".to_owned(), ms(150)),
            ]),
            describe_median: ms(120),
            other_median: ms(200),
            sigma: 0.5,
            seed: 1,
        }
    }

    fn is_describe(action: &str) -> bool {
        action.starts_with("Describe")
    }

    fn median(&self, action: &str) -> Duration {
        match self.medians.get(action) {
            Some(m) => *m,
            None if Self::is_describe(action) => self.describe_median,
            None => self.other_median,
        }
    }
}

struct Bucket {
    spec: BucketSpec,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(spec: BucketSpec) -> Bucket {
        Bucket {
            spec,
            tokens: spec.capacity,
            at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * self.spec.refill_per_sec;
        self.tokens = (self.tokens + refill).min(self.spec.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The account's state in the proxy.
pub(super) struct Account {
    spec: AccountSpec,
    buckets: Mutex<(Bucket, Bucket)>,
    throttled: Mutex<BTreeMap<String, u64>>,
    rng: Mutex<u64>,
}

impl Account {
    pub(super) fn new(spec: AccountSpec) -> Account {
        Account {
            buckets: Mutex::new((Bucket::new(spec.mutating), Bucket::new(spec.describe))),
            throttled: Mutex::default(),
            rng: Mutex::new(spec.seed),
            spec,
        }
    }

    /// Before a call is forwarded: takes a token and sleeps EC2's latency, or answers
    /// `RequestLimitExceeded` when the action's bucket is empty.
    pub(super) fn admit(&self, action: &str) -> Result<(), Response> {
        let granted = {
            let mut buckets = lock(&self.buckets);
            let bucket = if AccountSpec::is_describe(action) {
                &mut buckets.1
            } else {
                &mut buckets.0
            };
            bucket.take(Instant::now())
        };
        if !granted {
            *lock(&self.throttled).entry(action.to_owned()).or_default() += 1;
            return Err(request_limit_exceeded());
        }
        std::thread::sleep(self.latency(action));
        Ok(())
    }

    pub(super) fn throttled(&self) -> BTreeMap<String, u64> {
        lock(&self.throttled).clone()
    }

    fn latency(&self, action: &str) -> Duration {
        let median = self.spec.median(action);
        let z = {
            let mut state = lock(&self.rng);
            standard_normal(&mut state)
        };
        let factor = (self.spec.sigma * z).exp().min(20.0);
        median.mul_f64(factor)
    }
}

/// EC2's throttling answer.
fn request_limit_exceeded() -> Response {
    Response::new(
        503,
        "text/xml;charset=UTF-8",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
         <Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error>\
         </Errors><RequestID>winipam-ec2-proxy</RequestID></Response>",
    )
}

/// splitmix64: a reproducible stream without a dependency.
pub fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Box-Muller on two uniforms in (0, 1].
fn standard_normal(state: &mut u64) -> f64 {
    let uniform = |s: &mut u64| ((next_u64(s) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let (u1, u2) = (uniform(state), uniform(state));
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_once_empty_and_refills_at_its_rate() {
        let spec = BucketSpec {
            capacity: 2.0,
            refill_per_sec: 5.0,
        };
        let mut bucket = Bucket::new(spec);
        let t0 = bucket.at;
        assert!(bucket.take(t0));
        assert!(bucket.take(t0));
        assert!(!bucket.take(t0), "empty after its capacity");
        assert!(
            !bucket.take(t0 + Duration::from_millis(100)),
            "half a token"
        );
        assert!(
            bucket.take(t0 + Duration::from_millis(200)),
            "one token in 200 ms"
        );
        assert!(!bucket.take(t0 + Duration::from_millis(200)));
    }

    #[test]
    fn throttles_are_counted_by_action_and_answered_as_ec2_does() {
        let mut spec = AccountSpec::spec12();
        spec.mutating.capacity = 1.0;
        spec.mutating.refill_per_sec = 0.0;
        spec.sigma = 0.0;
        spec.other_median = Duration::ZERO;
        spec.medians.clear();
        let account = Account::new(spec);
        assert!(account.admit("AssignPrivateIpAddresses").is_ok());
        let refused = account
            .admit("UnassignPrivateIpAddresses")
            .expect_err("the mutating bucket is empty");
        assert_eq!(refused.status, 503);
        assert!(
            String::from_utf8_lossy(&refused.body).contains("<Code>RequestLimitExceeded</Code>")
        );
        assert_eq!(
            account.throttled(),
            BTreeMap::from([("UnassignPrivateIpAddresses".to_owned(), 1)])
        );
    }

    #[test]
    fn latency_centres_on_the_median_with_a_capped_tail() {
        let account = Account::new(AccountSpec::spec12());
        let mut draws: Vec<Duration> = (0..2001)
            .map(|_| account.latency("DescribeInstances"))
            .collect();
        draws.sort();
        let median = draws[1000].as_secs_f64();
        assert!((0.108..0.132).contains(&median), "median {median}");
        assert!(draws[2000] <= Duration::from_millis(120 * 20));
    }
}
