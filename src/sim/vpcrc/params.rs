//! Every parameter of the VPC Resource Controller model, with where it comes from. File names
//! are those of github.com/aws/amazon-vpc-resource-controller-k8s; `docs/benchmarks.md` lists
//! them with the same sources and marks what is assumed.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Warm-pool job workers per IP provider for the whole cluster: `IPv4DefaultWinWorkerCount
    /// = 2` (secondary) and `IPv4PDDefaultWorker = 2` (prefix), `pkg/config/loader.go`.
    pub pool_workers: usize,
    /// Node initialisation workers: `--node-mgr-workers`, 20 by default in v1.8.2's `main.go`
    /// (10 in the releases first read); the real controller against the rig's 20 nodes had each
    /// initialised at once.
    pub node_workers: usize,
    /// Pod reconcile workers: `MaxPodConcurrentReconciles = 20`,
    /// `controllers/core/pod_controller.go`.
    pub pod_workers: usize,
    /// EC2 client token bucket: v1.8.2's `main.go` flags `--user-client-qps 24` and
    /// `--user-client-burst 36`, the client of every Windows IPAM call in EKS mode (and of all
    /// calls without `--role-arn`). SPEC 12's 12/s burst 18 is the instance client's, which in
    /// EKS mode only serves branch ENI calls.
    pub client_rate: f64,
    pub client_burst: u32,
    /// Attempts per EC2 request by the SDK (SPEC 12: 3, aws-sdk-go-v2's standard retryer).
    pub sdk_attempts: u32,
    /// The SDK's backoff before retry `n` (1-based): uniform in [0, base * 2^n), capped (the
    /// standard retryer's exponential jitter; assumed, from aws-sdk-go-v2).
    pub sdk_backoff_base: Duration,
    pub sdk_backoff_max: Duration,
    /// Node init: `DescribeInstances` calls and `DescribeSubnets` calls: 2 and 1 in v1.8.2
    /// (`LoadDetails` in `pkg/aws/ec2/instance.go`: the instance and its subnet; `InitResources`
    /// in `pkg/provider/ip/eni/eni.go`: the instance's ENIs), and so measured against the real
    /// controller (40 and 20 for 20 nodes). SPEC 12 says 3.
    pub init_describe_instances: u32,
    pub init_describe_subnets: u32,
    /// Failed node init retried after this (assumed: the worker queue's rate limiter).
    pub init_retry: Duration,
    /// After Assign, poll the ENI until the new addresses show: first at once, then after 250 ms
    /// doubling, 7 steps, 10% jitter (`waitForIPAttachment`, `pkg/aws/ec2/api/helper.go`). Our
    /// simulated EC2 has no DescribeNetworkInterfaces: the poll is a `DescribeInstances` of the
    /// one instance (same describe bucket, same eventual consistency).
    pub poll_first: Duration,
    pub poll_factor: f64,
    pub poll_steps: u32,
    pub poll_jitter: f64,
    /// Pod requeue when the warm pool is empty or being filled: `RequeueAfterWhenWPEmpty =
    /// 600ms`; when everything is cooling: `RequeueAfterWhenResourceCooling = 20s`; on
    /// InsufficientCidrBlocks: `RequeueAfterWhenPrefixNotAvailable = 2m` (`pkg/handler/warm.go`).
    pub requeue_empty: Duration,
    pub requeue_cooling: Duration,
    pub requeue_no_prefix: Duration,
    /// A pod on a node not initialised yet: `PodRequeueRequest = 1s` (`pod_controller.go`).
    pub requeue_node_not_ready: Duration,
    /// Secondary mode: warm 3, minimum 3, max deviation 0 (`IPv4DefaultWinWarmIPTarget`,
    /// `IPv4DefaultWinMinIPTarget`, `IPv4DefaultWinMaxDev`).
    pub secondary_warm: u32,
    pub secondary_minimum: u32,
    pub secondary_max_deviation: u32,
    /// Prefix mode: warm-ip 1, minimum-ip 3, warm-prefix 0 (`IPv4PDDefault*`).
    pub prefix_warm_ip: u32,
    pub prefix_minimum_ip: u32,
    /// `config.CoolDownPeriod = 30s` (`pkg/config/type.go`), checked by a per-node job requeued
    /// every `CoolDownPeriod` (`ProcessDeleteQueue`, `pkg/provider/ip/provider.go`).
    pub cooldown: Duration,
    pub cooldown_check: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            pool_workers: 2,
            node_workers: 20,
            pod_workers: 20,
            client_rate: 24.0,
            client_burst: 36,
            sdk_attempts: 3,
            sdk_backoff_base: Duration::from_secs(1),
            sdk_backoff_max: Duration::from_secs(20),
            init_describe_instances: 2,
            init_describe_subnets: 1,
            init_retry: Duration::from_secs(10),
            poll_first: Duration::from_millis(250),
            poll_factor: 2.0,
            poll_steps: 7,
            poll_jitter: 0.1,
            requeue_empty: Duration::from_millis(600),
            requeue_cooling: Duration::from_secs(20),
            requeue_no_prefix: Duration::from_secs(120),
            requeue_node_not_ready: Duration::from_secs(1),
            secondary_warm: 3,
            secondary_minimum: 3,
            secondary_max_deviation: 0,
            prefix_warm_ip: 1,
            prefix_minimum_ip: 3,
            cooldown: Duration::from_secs(30),
            cooldown_check: Duration::from_secs(30),
        }
    }
}
