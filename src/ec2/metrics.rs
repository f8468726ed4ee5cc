//! The EC2 metrics of SPEC section 10, registered into the process registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::Operation;
use crate::ipam::SubnetInfo;

/// Handles on the EC2 metrics. Cheap to clone (the prometheus types are shared handles).
#[derive(Clone, Debug)]
pub struct Ec2Metrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
    queued: HistogramVec,
    throttled: IntCounterVec,
    subnet_available: IntGaugeVec,
}

impl Ec2Metrics {
    /// Creates the metrics and registers them into `registry`. Fails if they are already there
    /// (one `Ec2Client` per registry).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "winipam_ec2_requests_total",
                "EC2 requests made, by EC2 action and outcome (success or the error class); SDK-internal retries of a describe are not counted again",
            ),
            &["operation", "outcome"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "winipam_ec2_request_seconds",
                "Duration of EC2 requests (time waiting for a rate-limit token excluded)",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
            ]),
            &["operation"],
        )?;
        let queued = HistogramVec::new(
            HistogramOpts::new(
                "winipam_ec2_rate_limit_wait_seconds",
                "Time an EC2 request attempt waited for a token of winipam's own rate limit, by EC2 action and whether pods were waiting for it (those go first)",
            )
            .buckets(vec![
                0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            &["operation", "pods_waiting"],
        )?;
        let throttled = IntCounterVec::new(
            Opts::new(
                "winipam_ec2_throttled_total",
                "EC2 request attempts refused with RequestLimitExceeded, SDK retries included",
            ),
            &["operation"],
        )?;
        let subnet_available = IntGaugeVec::new(
            Opts::new(
                "winipam_subnet_available_ips",
                "Free IPv4 addresses of a subnet, from DescribeSubnets (refreshed with resync)",
            ),
            &["subnet", "az"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        registry.register(Box::new(subnet_available.clone()))?;
        Ok(Ec2Metrics {
            requests,
            seconds,
            queued,
            throttled,
            subnet_available,
        })
    }

    pub(crate) fn observe(&self, op: Operation, outcome: &str, seconds: f64) {
        self.requests.with_label_values(&[op.name(), outcome]).inc();
        self.seconds
            .with_label_values(&[op.name()])
            .observe(seconds);
    }

    pub(crate) fn queued(&self, op: Operation, pods_waiting: bool, seconds: f64) {
        let waiting = if pods_waiting { "true" } else { "false" };
        self.queued
            .with_label_values(&[op.name(), waiting])
            .observe(seconds);
    }

    pub(crate) fn throttled(&self, op: Operation) {
        self.throttled.with_label_values(&[op.name()]).inc();
    }

    pub(crate) fn subnet(&self, subnet: &SubnetInfo) {
        let value = i64::try_from(subnet.available_ips).unwrap_or(i64::MAX);
        self.subnet_available
            .with_label_values(&[subnet.subnet_id.as_str(), subnet.availability_zone.as_str()])
            .set(value);
    }

    /// Requests sent for `op` with `outcome` so far (for reports and tests).
    pub fn requests(&self, op: Operation, outcome: &str) -> u64 {
        self.requests.with_label_values(&[op.name(), outcome]).get()
    }

    /// Requests sent for `op`, whatever their outcome.
    pub fn requests_any(&self, op: Operation) -> u64 {
        const OUTCOMES: [&str; 8] = [
            "success",
            "throttled",
            "insufficient_cidr_blocks",
            "subnet_full",
            "eni_limit",
            "not_found",
            "unknown_outcome",
            "other",
        ];
        OUTCOMES.iter().map(|o| self.requests(op, o)).sum()
    }

    /// Throttled attempts of `op` so far.
    pub fn throttled_count(&self, op: Operation) -> u64 {
        self.throttled.with_label_values(&[op.name()]).get()
    }
}
