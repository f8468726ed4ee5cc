//! The process-wide EC2 client: the one object the controller talks to. It waits for a
//! rate-limit token before every request, merges describes into batches, caches subnets and
//! instance types, retries throttled requests with a jittered exponential backoff, records the
//! EC2 metrics, and reads Assign answers against the addresses the caller already knows.
//!
//! Generic over [`Ec2Backend`]: production uses the SDK backend, the simulator `SimEc2`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipnet::Ipv4Net;
use prometheus::Registry;

use super::batch::{BatchOutcome, Batcher};
use super::cache::Cache;
use super::metrics::Ec2Metrics;
use super::precedence::Precedence;
use super::ratelimit::{BucketConfig, ThrottleBackoff, TokenBucket, Urgency};
use super::{Ec2Backend, Ec2Error, Operation, ThrottleSink};
use crate::ipam::{Ec2ErrorClass, InstanceInfo, InstanceTypeLimits, SubnetInfo};

/// EC2 accepts at most 1,000 instance ids per DescribeInstances (and we use the same chunk for
/// subnets).
pub const MAX_DESCRIBE_IDS: usize = 1000;
/// DescribeInstanceTypes accepts at most 100 types.
pub const MAX_DESCRIBE_TYPES: usize = 100;

/// Settings of the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Ec2ClientConfig {
    /// Assign/Unassign: defaults 5/s, burst 40 (inside EC2's account bucket of 50, refill 5/s).
    pub mutating: BucketConfig,
    /// Describes: defaults 20/s, burst 80 (inside EC2's 100, refill 20/s).
    pub describe: BucketConfig,
    /// How the rate drops after `RequestLimitExceeded`.
    pub throttle_backoff: ThrottleBackoff,
    /// Describes arriving within this window share one request.
    pub batch_window: Duration,
    /// Attempts of a throttled request before `Throttled` is returned to the caller (describes on
    /// a backend that retries them itself get one).
    pub throttle_attempts: u32,
    /// First backoff after a throttle; doubled per attempt, jittered, capped by `retry_max_delay`.
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// Seed of the backoff jitter (reproducible simulations).
    pub jitter_seed: u64,
}

impl Default for Ec2ClientConfig {
    fn default() -> Self {
        Ec2ClientConfig {
            mutating: BucketConfig {
                rate: 5.0,
                burst: 40,
            },
            describe: BucketConfig {
                rate: 20.0,
                burst: 80,
            },
            throttle_backoff: ThrottleBackoff::default(),
            batch_window: Duration::from_millis(50),
            throttle_attempts: 3,
            retry_base_delay: Duration::from_millis(250),
            retry_max_delay: Duration::from_secs(5),
            jitter_seed: 0x5eed,
        }
    }
}

/// The shared EC2 client. Clones share everything (buckets, batches, caches).
pub struct Ec2Client<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Ec2Client<B> {
    fn clone(&self) -> Self {
        Ec2Client {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<B> {
    backend: B,
    config: Ec2ClientConfig,
    throttles: Arc<ThrottleState>,
    /// The backend reports throttled attempts itself (SDK retries); do not count them twice.
    backend_reports_throttles: bool,
    metrics: Ec2Metrics,
    instances: Arc<Batcher<InstanceInfo>>,
    /// Instances of nodes whose pods wait for an address: their own batches, which go before the
    /// ordinary ones asked after them (`precedence`).
    instances_first: Arc<Batcher<InstanceInfo>>,
    first: Precedence,
    subnets: Arc<Batcher<SubnetInfo>>,
    subnet_cache: Cache<SubnetInfo>,
    types: Arc<Batcher<InstanceTypeLimits>>,
    type_cache: Cache<Option<InstanceTypeLimits>>,
    jitter: AtomicU64,
}

/// What a throttle touches: the counter and the bucket's rate. Shared with the backend's sink.
struct ThrottleState {
    mutating: TokenBucket,
    describe: TokenBucket,
    metrics: Ec2Metrics,
}

impl ThrottleState {
    fn bucket(&self, op: Operation) -> &TokenBucket {
        if op.is_mutating() {
            &self.mutating
        } else {
            &self.describe
        }
    }

    fn throttled(&self, op: Operation) {
        self.metrics.throttled(op);
        self.bucket(op).on_throttled();
    }
}

impl<B: Ec2Backend> Ec2Client<B> {
    /// A client over `backend`, with its metrics registered into `registry`.
    pub fn new(
        backend: B,
        config: Ec2ClientConfig,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let metrics = Ec2Metrics::register(registry)?;
        let throttles = Arc::new(ThrottleState {
            mutating: TokenBucket::new(config.mutating, config.throttle_backoff),
            describe: TokenBucket::new(config.describe, config.throttle_backoff),
            metrics: metrics.clone(),
        });
        let sink_state = Arc::clone(&throttles);
        let sink: ThrottleSink = Arc::new(move |op| sink_state.throttled(op));
        let backend_reports_throttles = backend.report_throttles_to(sink);
        let window = config.batch_window;
        Ok(Ec2Client {
            inner: Arc::new(Inner {
                backend,
                throttles,
                backend_reports_throttles,
                metrics,
                instances: Arc::new(Batcher::new(window, MAX_DESCRIBE_IDS)),
                instances_first: Arc::new(Batcher::new(window, MAX_DESCRIBE_IDS)),
                first: Precedence::new(),
                subnets: Arc::new(Batcher::new(window, MAX_DESCRIBE_IDS)),
                subnet_cache: Cache::new(),
                // A type's limits never change: a lookup joins one in flight (S4's 5,000 nodes
                // ask within seconds of each other, across many describe batches).
                types: Arc::new(Batcher::new(window, MAX_DESCRIBE_TYPES).single_flight()),
                type_cache: Cache::new(),
                jitter: AtomicU64::new(config.jitter_seed),
                config,
            }),
        })
    }

    pub fn backend(&self) -> &B {
        &self.inner.backend
    }

    pub fn metrics(&self) -> &Ec2Metrics {
        &self.inner.metrics
    }

    /// The rate (requests per second) in force now for mutating or describe calls: lower than
    /// configured for a while after a throttle.
    pub fn current_rate(&self, mutating: bool) -> f64 {
        if mutating {
            self.inner.throttles.mutating.current_rate()
        } else {
            self.inner.throttles.describe.current_rate()
        }
    }

    /// One instance, through a batched `DescribeInstances` shared with every call in the same
    /// window; the batch leaves after those of `describe_instance_first` asked before it. An
    /// instance EC2 does not know (or without a primary ENI) is a `NotFound` error.
    pub async fn describe_instance(&self, id: &str) -> Result<InstanceInfo, Ec2Error> {
        let inner = Arc::clone(&self.inner);
        let found = self
            .inner
            .instances
            .get(id, move |ids| async move {
                inner.first.after_earlier().await;
                inner.instances_by_id(ids).await
            })
            .await;
        instance_found(id, found)
    }

    /// Like `describe_instance`, for a node whose pods wait for an address: in a batch of its
    /// own that goes before the ordinary batches asked after it (a new leader's rebuild, see
    /// `precedence`).
    pub async fn describe_instance_first(&self, id: &str) -> Result<InstanceInfo, Ec2Error> {
        let _first = self.inner.first.begin();
        let inner = Arc::clone(&self.inner);
        let found = self
            .inner
            .instances_first
            .get(
                id,
                move |ids| async move { inner.instances_by_id(ids).await },
            )
            .await;
        instance_found(id, found)
    }

    /// Many instances (resync), in requests of at most 1,000 ids. Instances EC2 does not know are
    /// left out of the answer.
    pub async fn describe_instances(&self, ids: &[String]) -> Result<Vec<InstanceInfo>, Ec2Error> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_DESCRIBE_IDS) {
            let found = self.inner.instances_by_id(chunk.to_vec()).await?;
            out.extend(found.into_values());
        }
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(out)
    }

    /// A subnet, described once and cached (concurrent first lookups share one request).
    pub async fn subnet(&self, id: &str) -> Result<SubnetInfo, Ec2Error> {
        if let Some(s) = self.inner.subnet_cache.get(id) {
            return Ok(s);
        }
        let inner = Arc::clone(&self.inner);
        let found = self
            .inner
            .subnets
            .get(id, move |ids| async move { inner.subnets_by_id(ids).await })
            .await?;
        found.ok_or_else(|| {
            Ec2Error::from_code(
                "InvalidSubnetID.NotFound",
                format!("subnet {id} is not in EC2's answer"),
            )
        })
    }

    /// Re-describes every known subnet (in one request per 1,000), refreshing the cache and the
    /// free-address metric. Returns the subnets as now known.
    pub async fn refresh_subnets(&self) -> Result<Vec<SubnetInfo>, Ec2Error> {
        let ids = self.inner.subnet_cache.keys();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_DESCRIBE_IDS) {
            out.extend(
                self.inner
                    .subnets_by_id(chunk.to_vec())
                    .await?
                    .into_values(),
            );
        }
        out.sort_by(|a, b| a.subnet_id.cmp(&b.subnet_id));
        Ok(out)
    }

    /// EC2's limits for an instance type: `Ok(None)` if EC2 does not know the type (the caller
    /// falls back to the embedded table). Cached per type; first lookups are batched.
    pub async fn instance_type_limits(
        &self,
        instance_type: &str,
    ) -> Result<Option<InstanceTypeLimits>, Ec2Error> {
        if let Some(known) = self.inner.type_cache.get(instance_type) {
            return Ok(known);
        }
        let inner = Arc::clone(&self.inner);
        let found = self
            .inner
            .types
            .get(instance_type, move |types| async move {
                inner.types_by_name(types).await
            })
            .await?;
        Ok(found)
    }

    /// Assigns `count` secondary addresses to `eni` and returns the new ones: those EC2 returned
    /// that are not in `known`. `known` is every address the caller knows on the ENI, the primary
    /// included (an emulator returns the whole list, primary too). Once `urgency` is raised (pods
    /// wait for these addresses) the call goes before ordinary ones waiting for the rate limit.
    pub async fn assign_ips(
        &self,
        eni: &str,
        known: &[Ipv4Addr],
        count: u32,
        urgency: &Urgency,
    ) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        let returned = self
            .inner
            .call_as(Operation::AssignPrivateIpAddresses, urgency, || {
                self.inner.backend.assign_private_ips(eni, count)
            })
            .await?;
        Ok(only_new(returned, known))
    }

    /// Assigns `count` /28 prefixes to `eni`; returns those not in `known`.
    pub async fn assign_prefixes(
        &self,
        eni: &str,
        known: &[Ipv4Net],
        count: u32,
        urgency: &Urgency,
    ) -> Result<Vec<Ipv4Net>, Ec2Error> {
        let returned = self
            .inner
            .call_as(Operation::AssignPrivateIpAddresses, urgency, || {
                self.inner.backend.assign_prefixes(eni, count)
            })
            .await?;
        Ok(only_new(returned, known))
    }

    /// Unassigns secondary addresses from `eni`.
    pub async fn unassign_ips(&self, eni: &str, ips: &[Ipv4Addr]) -> Result<(), Ec2Error> {
        self.inner
            .call(Operation::UnassignPrivateIpAddresses, || {
                self.inner.backend.unassign_private_ips(eni, ips)
            })
            .await
    }

    /// Unassigns /28 prefixes from `eni`.
    pub async fn unassign_prefixes(&self, eni: &str, prefixes: &[Ipv4Net]) -> Result<(), Ec2Error> {
        self.inner
            .call(Operation::UnassignPrivateIpAddresses, || {
                self.inner.backend.unassign_prefixes(eni, prefixes)
            })
            .await
    }
}

/// The items of `returned` not in `known`, in EC2's order, without duplicates.
fn only_new<T: Copy + Eq + std::hash::Hash>(returned: Vec<T>, known: &[T]) -> Vec<T> {
    let mut seen: HashSet<T> = known.iter().copied().collect();
    returned.into_iter().filter(|x| seen.insert(*x)).collect()
}

impl<B: Ec2Backend> Inner<B> {
    /// One EC2 request under the rate limit, with metrics, retried (after a jittered backoff)
    /// only when throttled: a throttled request was refused, so retrying it cannot double-assign.
    async fn call<T, F, Fut>(&self, op: Operation, request: F) -> Result<T, Ec2Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Ec2Error>>,
    {
        self.call_as(op, &Urgency::default(), request).await
    }

    /// `call`, going before the ordinary calls waiting for a token once `urgency` is raised.
    async fn call_as<T, F, Fut>(
        &self,
        op: Operation,
        urgency: &Urgency,
        request: F,
    ) -> Result<T, Ec2Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Ec2Error>>,
    {
        let bucket = self.throttles.bucket(op);
        // A backend that retries throttled describes itself (the SDK) gets no second layer of
        // retries on top; mutating calls are never retried inside a backend, so they are here.
        let max_attempts = if self.backend_reports_throttles && !op.is_mutating() {
            1
        } else {
            self.config.throttle_attempts.max(1)
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let queued = tokio::time::Instant::now();
            bucket.acquire_as(urgency).await;
            let started = tokio::time::Instant::now();
            self.metrics.queued(
                op,
                urgency.is_raised(),
                started.duration_since(queued).as_secs_f64(),
            );
            let result = request().await;
            let outcome = match &result {
                Ok(_) => "success",
                Err(e) => e.class.label(),
            };
            self.metrics
                .observe(op, outcome, started.elapsed().as_secs_f64());
            match result {
                Err(e) if e.is_throttled() => {
                    if !self.backend_reports_throttles {
                        self.throttles.throttled(op);
                    }
                    if attempt >= max_attempts {
                        tracing::warn!(operation = %op, attempts = attempt, "EC2 throttled; giving up for now");
                        return Err(e);
                    }
                    let delay = self.backoff(attempt);
                    tracing::debug!(operation = %op, attempt, ?delay, "EC2 throttled; backing off");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Full jitter: uniform in [0, min(max, base * 2^(attempt-1))], at least a millisecond.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .config
            .retry_base_delay
            .saturating_mul(1u32 << (attempt - 1).min(16));
        let cap = exp.min(self.config.retry_max_delay);
        let fraction = self.next_jitter();
        cap.mul_f64(fraction).max(Duration::from_millis(1))
    }

    /// The next step of a splitmix64 sequence from the configured seed: a fraction in [0, 1).
    fn next_jitter(&self) -> f64 {
        let x = self
            .jitter
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        crate::ipam::pool_ec2::unit_fraction(x)
    }

    async fn instances_by_id(&self, ids: Vec<String>) -> BatchOutcome<InstanceInfo> {
        let found = self
            .tolerant(
                Operation::DescribeInstances,
                ids,
                is_not_found,
                |chunk| async move { self.backend.describe_instances(&chunk).await },
            )
            .await?;
        Ok(found
            .into_iter()
            .map(|i| (i.instance_id.clone(), i))
            .collect())
    }

    async fn subnets_by_id(&self, ids: Vec<String>) -> BatchOutcome<SubnetInfo> {
        let found = self
            .tolerant(
                Operation::DescribeSubnets,
                ids,
                is_subnet_missing,
                |chunk| async move { self.backend.describe_subnets(&chunk).await },
            )
            .await?;
        for s in &found {
            self.subnet_cache.insert(&s.subnet_id, s.clone());
            self.metrics.subnet(s);
        }
        Ok(found
            .into_iter()
            .map(|s| (s.subnet_id.clone(), s))
            .collect())
    }

    async fn types_by_name(&self, types: Vec<String>) -> BatchOutcome<InstanceTypeLimits> {
        let found: HashMap<String, InstanceTypeLimits> = self
            .tolerant(
                Operation::DescribeInstanceTypes,
                types.clone(),
                is_unknown_type,
                |chunk| async move { self.backend.describe_instance_types(&chunk).await },
            )
            .await?
            .into_iter()
            .map(|t| (t.instance_type.clone(), t))
            .collect();
        // EC2's answer (known or not) is definitive for the life of the process. Cached before
        // the batch answers, so no lookup falls between the answer and the cache.
        for t in &types {
            self.type_cache.insert(t, found.get(t).cloned());
        }
        Ok(found)
    }

    /// A describe by ids that survives ids EC2 does not know. EC2 fails the whole request when
    /// one id is unknown (`InvalidInstanceID.NotFound`...), so on such an error the ids are split
    /// in halves until the unknown ones are isolated (and left out). Rare (a node deleted between
    /// its event and the describe), and costs about 2 log2(n) extra requests when it happens.
    async fn tolerant<T, F, Fut>(
        &self,
        op: Operation,
        ids: Vec<String>,
        missing: fn(&Ec2Error) -> bool,
        request: F,
    ) -> Result<Vec<T>, Ec2Error>
    where
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = Result<Vec<T>, Ec2Error>>,
    {
        let mut found = Vec::new();
        let mut todo = vec![ids];
        while let Some(chunk) = todo.pop() {
            if chunk.is_empty() {
                continue;
            }
            match self.call(op, || request(chunk.clone())).await {
                Ok(items) => found.extend(items),
                Err(e) if missing(&e) => {
                    if chunk.len() > 1 {
                        let mut left = chunk;
                        let right = left.split_off(left.len() / 2);
                        todo.push(right);
                        todo.push(left);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }
}

fn is_not_found(e: &Ec2Error) -> bool {
    e.class == Ec2ErrorClass::NotFound
}

fn is_subnet_missing(e: &Ec2Error) -> bool {
    e.code.as_deref() == Some("InvalidSubnetID.NotFound")
}

fn instance_found(
    id: &str,
    found: Result<Option<InstanceInfo>, Ec2Error>,
) -> Result<InstanceInfo, Ec2Error> {
    found?.ok_or_else(|| {
        Ec2Error::not_found(
            "InvalidInstanceID.NotFound",
            format!("instance {id} is not in EC2's answer"),
        )
    })
}

fn is_unknown_type(e: &Ec2Error) -> bool {
    e.code.as_deref() == Some("InvalidInstanceType")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::ec2::{SimEc2, SimEc2Config};

    #[tokio::test(start_paused = true)]
    async fn lookups_of_one_type_share_the_call_in_flight() {
        let mut config = SimEc2Config::instant(3);
        // Fixed latency: every describe takes 120 ms, longer than the batch window (50 ms).
        config.latency.describe_median = Duration::from_millis(120);
        let sim = SimEc2::new(
            config,
            Arc::new(|t: &str| {
                (t == "m5.xlarge").then(|| InstanceTypeLimits {
                    instance_type: t.to_string(),
                    ipv4_per_interface: 15,
                    nitro: true,
                })
            }),
        );
        let client = Ec2Client::new(sim.clone(), Ec2ClientConfig::default(), &Registry::new())
            .expect("fresh registry");
        // Three waves, as node inits come out of successive describe batches: the first opens
        // a batch, the next two arrive while its request is in flight.
        let mut lookups = Vec::new();
        for _wave in 0..3 {
            for _ in 0..4 {
                let client = client.clone();
                lookups.push(tokio::spawn(async move {
                    client.instance_type_limits("m5.xlarge").await
                }));
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        for lookup in lookups {
            let limits = lookup.await.expect("lookup task").expect("no EC2 error");
            assert_eq!(limits.map(|l| l.ipv4_per_interface), Some(15));
        }
        assert_eq!(sim.calls(Operation::DescribeInstanceTypes), 1);
        // Answered: from the cache from now on, and so is a type EC2 does not know.
        for (t, known) in [
            ("m5.xlarge", true),
            ("x9.unknown", false),
            ("x9.unknown", false),
        ] {
            let limits = client.instance_type_limits(t).await.expect("no EC2 error");
            assert_eq!(limits.is_some(), known, "{t}");
        }
        assert_eq!(sim.calls(Operation::DescribeInstanceTypes), 2);
    }
}
