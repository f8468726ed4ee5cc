//! How long simulated EC2 takes to answer: a log-normal around an assumed median per kind of
//! request (SPEC 12: describe 120 ms, assign 200 ms, unassign 150 ms), which gives a tail
//! (sigma 0.5: p99 about 3.2 times the median), capped so one unlucky draw cannot stall a run.

use std::time::Duration;

use crate::ec2::Operation;
use crate::sim::rng::SplitMix64;

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyModel {
    pub describe_median: Duration,
    pub assign_median: Duration,
    pub unassign_median: Duration,
    /// Shape of the log-normal; 0 makes every answer take exactly the median.
    pub sigma: f64,
    /// No answer takes longer than this many medians.
    pub max_factor: f64,
    /// A refusal (`RequestLimitExceeded`) comes back quickly.
    pub throttled: Duration,
}

impl Default for LatencyModel {
    fn default() -> Self {
        LatencyModel {
            describe_median: Duration::from_millis(120),
            assign_median: Duration::from_millis(200),
            unassign_median: Duration::from_millis(150),
            sigma: 0.5,
            max_factor: 20.0,
            throttled: Duration::from_millis(20),
        }
    }
}

impl LatencyModel {
    /// Answers at once (unit tests).
    pub fn zero() -> Self {
        LatencyModel {
            describe_median: Duration::ZERO,
            assign_median: Duration::ZERO,
            unassign_median: Duration::ZERO,
            sigma: 0.0,
            max_factor: 1.0,
            throttled: Duration::ZERO,
        }
    }

    pub fn median(&self, op: Operation) -> Duration {
        match op {
            Operation::AssignPrivateIpAddresses => self.assign_median,
            Operation::UnassignPrivateIpAddresses => self.unassign_median,
            Operation::DescribeInstances
            | Operation::DescribeSubnets
            | Operation::DescribeInstanceTypes => self.describe_median,
        }
    }

    /// One draw for `op`.
    pub fn sample(&self, op: Operation, rng: &mut SplitMix64) -> Duration {
        let median = self.median(op).as_secs_f64();
        if median == 0.0 || self.sigma == 0.0 {
            return self.median(op);
        }
        let secs = rng
            .log_normal(median, self.sigma)
            .min(median * self.max_factor);
        Duration::from_secs_f64(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_follow_the_spec() {
        let model = LatencyModel::default();
        let mut rng = SplitMix64::new(9);
        for (op, expected_ms) in [
            (Operation::DescribeInstances, 120.0),
            (Operation::AssignPrivateIpAddresses, 200.0),
            (Operation::UnassignPrivateIpAddresses, 150.0),
        ] {
            let mut xs: Vec<f64> = (0..5001)
                .map(|_| model.sample(op, &mut rng).as_secs_f64() * 1000.0)
                .collect();
            xs.sort_by(f64::total_cmp);
            let median = xs[2500];
            assert!(
                (expected_ms * 0.93..expected_ms * 1.07).contains(&median),
                "{op}: median {median}"
            );
            // A tail, but capped.
            assert!(xs[4990] > expected_ms * 2.0);
            assert!(xs[5000] <= expected_ms * 20.0 + 1e-6);
        }
    }

    #[test]
    fn zero_model_answers_at_once() {
        let mut rng = SplitMix64::new(1);
        let model = LatencyModel::zero();
        assert_eq!(
            model.sample(Operation::DescribeSubnets, &mut rng),
            Duration::ZERO
        );
    }
}
