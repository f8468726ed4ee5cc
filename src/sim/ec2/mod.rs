//! A simulated EC2 behind the same [`Ec2Backend`] trait as the real one, deterministic from a
//! seed and running on tokio time (so on the virtual clock under a paused runtime). It enforces
//! what matters to an IPAM (SPEC 12): per-ENI limits from the instance table, subnet exhaustion,
//! /28 alignment and fragmentation, EC2's account-level throttling, latency with a tail,
//! eventually consistent describes, and injected faults.
//!
//! Every call is counted per operation (for benchmark tables and assertions).

mod consistency;
mod faults;
mod latency;
mod state;
mod subnet;
mod throttle;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::time::Instant;

use crate::ec2::{Ec2Backend, Ec2Error, Operation};
use crate::ipam::{InstanceInfo, InstanceTypeLimits, SubnetInfo};
use crate::sim::rng::SplitMix64;

pub use consistency::ConsistencyModel;
pub use faults::{Fault, RandomFaults};
pub use latency::LatencyModel;
pub use subnet::SubnetAlloc;
pub use throttle::AccountBucketConfig;

use faults::FaultPlan;
use state::Vpc;
use throttle::AccountBucket;

/// Where the simulated EC2 reads an instance type's network limits (the embedded table).
pub type LimitsSource = Arc<dyn Fn(&str) -> Option<InstanceTypeLimits> + Send + Sync>;

/// Behaviour of the simulated EC2.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEc2Config {
    pub seed: u64,
    /// EC2's account bucket for mutating actions: 50, refill 5/s.
    pub account_mutating: AccountBucketConfig,
    /// EC2's account bucket for describes: 100, refill 20/s.
    pub account_describe: AccountBucketConfig,
    pub latency: LatencyModel,
    pub consistency: ConsistencyModel,
    /// How long a call that times out takes before the caller gives up (the real backend's
    /// operation timeout).
    pub timeout: Duration,
    pub random_faults: RandomFaults,
}

impl Default for SimEc2Config {
    fn default() -> Self {
        SimEc2Config {
            seed: 1,
            account_mutating: AccountBucketConfig {
                capacity: 50,
                refill_per_sec: 5.0,
            },
            account_describe: AccountBucketConfig {
                capacity: 100,
                refill_per_sec: 20.0,
            },
            latency: LatencyModel::default(),
            consistency: ConsistencyModel::default(),
            timeout: Duration::from_secs(10),
            random_faults: RandomFaults::default(),
        }
    }
}

impl SimEc2Config {
    /// An EC2 without latency, staleness or throttling (unit tests of other parts).
    pub fn instant(seed: u64) -> Self {
        SimEc2Config {
            seed,
            account_mutating: AccountBucketConfig::UNLIMITED,
            account_describe: AccountBucketConfig::UNLIMITED,
            latency: LatencyModel::zero(),
            consistency: ConsistencyModel::strong(),
            timeout: Duration::from_secs(10),
            random_faults: RandomFaults::default(),
        }
    }
}

/// Counters of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Requests received.
    pub calls: u64,
    /// Refused by the account bucket (`RequestLimitExceeded`).
    pub throttled: u64,
    /// Failed with an injected fault.
    pub faults: u64,
}

struct World {
    vpc: Vpc,
    rng: SplitMix64,
    mutating: AccountBucket,
    describe: AccountBucket,
    faults: FaultPlan,
    counts: BTreeMap<Operation, OpCounts>,
}

struct SimInner {
    config: SimEc2Config,
    limits: LimitsSource,
    world: Mutex<World>,
}

/// The simulated EC2. Cheap to clone; clones share one VPC.
#[derive(Clone)]
pub struct SimEc2 {
    inner: Arc<SimInner>,
}

/// What a call does once its latency has passed.
enum Plan {
    Throttled,
    Fail(Ec2Error),
    Timeout,
    Apply { lose_answer: bool },
}

impl SimEc2 {
    pub fn new(config: SimEc2Config, limits: LimitsSource) -> Self {
        let now = Instant::now();
        let mut vpc = Vpc::default();
        vpc.keep_history = config.consistency.max_lag;
        let mut faults = FaultPlan::default();
        faults.set_random(config.random_faults.clone());
        let world = World {
            vpc,
            rng: SplitMix64::new(config.seed),
            mutating: AccountBucket::new(config.account_mutating, now),
            describe: AccountBucket::new(config.account_describe, now),
            faults,
            counts: BTreeMap::new(),
        };
        SimEc2 {
            inner: Arc::new(SimInner {
                config,
                limits,
                world: Mutex::new(world),
            }),
        }
    }

    pub fn config(&self) -> &SimEc2Config {
        &self.inner.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.inner.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A subnet of the VPC (/16 to /28, not overlapping another). Returns its id.
    pub fn add_subnet(&self, cidr: Ipv4Net, az: &str) -> Result<String, Ec2Error> {
        self.lock().vpc.add_subnet(cidr, az)
    }

    /// Launches an instance in `subnet_id` with a primary ENI and primary address. Its type's
    /// limits come from the limits source; an unknown type is refused.
    pub fn add_instance(
        &self,
        instance_type: &str,
        subnet_id: &str,
    ) -> Result<InstanceInfo, Ec2Error> {
        self.launch(instance_type, subnet_id, None)
    }

    /// Like [`SimEc2::add_instance`], with the instance id chosen by the caller (an instance
    /// that a real Node names in its providerID). A duplicate id is refused.
    pub fn add_instance_with_id(
        &self,
        instance_id: &str,
        instance_type: &str,
        subnet_id: &str,
    ) -> Result<InstanceInfo, Ec2Error> {
        self.launch(instance_type, subnet_id, Some(instance_id))
    }

    fn launch(
        &self,
        instance_type: &str,
        subnet_id: &str,
        instance_id: Option<&str>,
    ) -> Result<InstanceInfo, Ec2Error> {
        let limits = (self.inner.limits)(instance_type).ok_or_else(|| {
            Ec2Error::from_code(
                "InvalidParameterValue",
                format!("Invalid value '{instance_type}' for InstanceType."),
            )
        })?;
        self.lock().vpc.add_instance(limits, subnet_id, instance_id)
    }

    /// Whether EC2 knows the instance (not counted).
    pub fn has_instance(&self, instance_id: &str) -> bool {
        self.lock().vpc.has_instance(instance_id)
    }

    /// Addresses on every ENI now, as (secondary IPs, /28 prefixes); not counted.
    pub fn address_totals(&self) -> (u64, u64) {
        self.lock().vpc.address_totals()
    }

    /// Terminates an instance (its addresses go back to the subnet). False if unknown.
    pub fn remove_instance(&self, instance_id: &str) -> bool {
        self.lock().vpc.remove_instance(instance_id)
    }

    /// The instance as it is now (no lag, no latency, not counted): for assertions.
    pub fn instance(&self, instance_id: &str) -> Option<InstanceInfo> {
        self.lock()
            .vpc
            .instance_info(instance_id, Instant::now(), Duration::ZERO)
    }

    /// The subnet as it is now (not counted).
    pub fn subnet(&self, subnet_id: &str) -> Option<SubnetInfo> {
        self.lock().vpc.subnet_info(subnet_id)
    }

    pub fn instance_count(&self) -> usize {
        self.lock().vpc.instance_count()
    }

    /// Marks addresses of a subnet as used by something else in the VPC (to make a subnet full
    /// or fragmented).
    pub fn occupy(&self, subnet_id: &str, addrs: &[Ipv4Addr]) -> Result<(), Ec2Error> {
        self.lock().vpc.occupy(subnet_id, addrs)
    }

    /// A person removes addresses from an ENI by hand (not counted as an API call of ours).
    pub fn manual_unassign(&self, eni: &str, ips: &[Ipv4Addr]) -> Result<(), Ec2Error> {
        self.lock().vpc.unassign_ips(eni, ips, Instant::now())
    }

    /// A person adds addresses to an ENI by hand.
    pub fn manual_assign(&self, eni: &str, count: u32) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        self.lock().vpc.assign_ips(eni, count, Instant::now())
    }

    /// The next `times` calls of `op` get `fault`.
    pub fn inject(&self, op: Operation, fault: Fault, times: u32) {
        self.lock().faults.inject(Some(op), fault, times);
    }

    /// The next `times` calls of any operation get `fault`.
    pub fn inject_any(&self, fault: Fault, times: u32) {
        self.lock().faults.inject(None, fault, times);
    }

    pub fn set_random_faults(&self, faults: RandomFaults) {
        self.lock().faults.set_random(faults);
    }

    /// No more faults: planned ones are dropped, random ones turned off.
    pub fn clear_faults(&self) {
        self.lock().faults = FaultPlan::default();
    }

    /// Planned faults not yet handed out.
    pub fn pending_faults(&self) -> u32 {
        self.lock().faults.pending()
    }

    /// Counters of `op`.
    pub fn counts(&self, op: Operation) -> OpCounts {
        self.lock().counts.get(&op).copied().unwrap_or_default()
    }

    /// Requests received for `op`.
    pub fn calls(&self, op: Operation) -> u64 {
        self.counts(op).calls
    }

    /// Counters of every operation, in a stable order.
    pub fn all_counts(&self) -> Vec<(Operation, OpCounts)> {
        let w = self.lock();
        Operation::ALL
            .iter()
            .map(|op| (*op, w.counts.get(op).copied().unwrap_or_default()))
            .collect()
    }

    /// Admission of one call: counted, throttled by the account bucket, maybe faulted. Returns
    /// what to do and how long the answer takes.
    fn admit(&self, op: Operation) -> (Plan, Duration) {
        let cfg = &self.inner.config;
        let now = Instant::now();
        let mut w = self.lock();
        let w = &mut *w;
        w.counts.entry(op).or_default().calls += 1;
        let bucket = if op.is_mutating() {
            &mut w.mutating
        } else {
            &mut w.describe
        };
        if !bucket.try_take(now) {
            w.counts.entry(op).or_default().throttled += 1;
            return (Plan::Throttled, cfg.latency.throttled);
        }
        let latency = cfg.latency.sample(op, &mut w.rng);
        let plan = match w.faults.next(op, &mut w.rng) {
            None => Plan::Apply { lose_answer: false },
            Some(fault) => {
                w.counts.entry(op).or_default().faults += 1;
                match fault {
                    Fault::Error { code, message } => {
                        Plan::Fail(Ec2Error::from_code(&code, message))
                    }
                    Fault::Timeout => return (Plan::Timeout, cfg.timeout),
                    Fault::LostResponse => Plan::Apply { lose_answer: true },
                }
            }
        };
        (plan, latency)
    }

    /// Runs one call: admission, latency, then `apply` on the VPC (unless refused).
    async fn run<T>(
        &self,
        op: Operation,
        apply: impl FnOnce(&mut World, Instant) -> Result<T, Ec2Error>,
    ) -> Result<T, Ec2Error> {
        let (plan, delay) = self.admit(op);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match plan {
            Plan::Throttled => Err(Ec2Error::from_code(
                "RequestLimitExceeded",
                "Request limit exceeded.",
            )),
            Plan::Fail(e) => Err(e),
            Plan::Timeout => Err(Ec2Error::no_answer(
                op,
                "Timeout",
                format!(
                    "{op}: no answer within {:?} (simulated)",
                    self.inner.config.timeout
                ),
            )),
            Plan::Apply { lose_answer } => {
                let result = {
                    let mut w = self.lock();
                    apply(&mut w, Instant::now())
                };
                if lose_answer {
                    // The change happened; the caller cannot know. Its wait ends at the timeout.
                    let rest = self.inner.config.timeout.saturating_sub(delay);
                    tokio::time::sleep(rest).await;
                    return Err(Ec2Error::no_answer(
                        op,
                        "Timeout",
                        format!("{op}: answer lost (simulated)"),
                    ));
                }
                result
            }
        }
    }
}

impl Ec2Backend for SimEc2 {
    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<InstanceInfo>, Ec2Error> {
        let consistency = self.inner.config.consistency.clone();
        self.run(Operation::DescribeInstances, |w, now| {
            let lag = consistency.sample(&mut w.rng);
            w.vpc.describe_instances(ids, now, lag)
        })
        .await
    }

    async fn describe_subnets(&self, ids: &[String]) -> Result<Vec<SubnetInfo>, Ec2Error> {
        self.run(Operation::DescribeSubnets, |w, _| {
            w.vpc.describe_subnets(ids)
        })
        .await
    }

    async fn describe_instance_types(
        &self,
        types: &[String],
    ) -> Result<Vec<InstanceTypeLimits>, Ec2Error> {
        let limits = Arc::clone(&self.inner.limits);
        self.run(Operation::DescribeInstanceTypes, move |_, _| {
            let unknown: Vec<&str> = types
                .iter()
                .filter(|t| limits(t).is_none())
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                return Err(Ec2Error::from_code(
                    "InvalidInstanceType",
                    format!(
                        "The following supplied instance types do not exist: [{}]",
                        unknown.join(", ")
                    ),
                ));
            }
            Ok(types.iter().filter_map(|t| limits(t)).collect())
        })
        .await
    }

    async fn assign_private_ips(&self, eni: &str, count: u32) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        self.run(Operation::AssignPrivateIpAddresses, |w, now| {
            w.vpc.assign_ips(eni, count, now)
        })
        .await
    }

    async fn assign_prefixes(&self, eni: &str, count: u32) -> Result<Vec<Ipv4Net>, Ec2Error> {
        self.run(Operation::AssignPrivateIpAddresses, |w, now| {
            w.vpc.assign_prefixes(eni, count, now)
        })
        .await
    }

    async fn unassign_private_ips(&self, eni: &str, ips: &[Ipv4Addr]) -> Result<(), Ec2Error> {
        self.run(Operation::UnassignPrivateIpAddresses, |w, now| {
            w.vpc.unassign_ips(eni, ips, now)
        })
        .await
    }

    async fn unassign_prefixes(&self, eni: &str, prefixes: &[Ipv4Net]) -> Result<(), Ec2Error> {
        self.run(Operation::UnassignPrivateIpAddresses, |w, now| {
            w.vpc.unassign_prefixes(eni, prefixes, now)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
