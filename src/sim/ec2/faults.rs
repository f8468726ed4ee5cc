//! Fault injection: a programmable plan (the next N matching calls fail in a given way) and
//! random faults drawn from the seed.

use std::collections::VecDeque;

use crate::ec2::Operation;
use crate::sim::rng::SplitMix64;

/// What goes wrong with one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// EC2 answers with this error code (and message); nothing is applied.
    Error { code: String, message: String },
    /// No answer within the timeout; nothing is applied. The caller sees an unknown outcome
    /// (mutating call) or a timeout (describe).
    Timeout,
    /// EC2 applies the call but the answer is lost: the caller sees the same as a timeout.
    LostResponse,
}

impl Fault {
    pub fn error(code: &str) -> Fault {
        Fault::Error {
            code: code.to_string(),
            message: format!("injected {code}"),
        }
    }
}

/// Random faults, per call. Zero everywhere by default.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RandomFaults {
    /// Chance that a mutating call fails with `error_code`.
    pub error_rate: f64,
    pub error_code: String,
    /// Chance that a mutating call times out (not applied).
    pub timeout_rate: f64,
    /// Chance that a mutating call is applied but its answer lost.
    pub lost_response_rate: f64,
    /// Chance that a describe times out.
    pub describe_timeout_rate: f64,
}

#[derive(Debug, Clone)]
struct Planned {
    op: Option<Operation>,
    fault: Fault,
    remaining: u32,
}

/// Planned and random faults.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    planned: VecDeque<Planned>,
    random: RandomFaults,
}

impl FaultPlan {
    /// The next `times` calls of `op` (of any operation if `None`) get `fault`. Plans are served
    /// in the order they were made.
    pub fn inject(&mut self, op: Option<Operation>, fault: Fault, times: u32) {
        if times > 0 {
            self.planned.push_back(Planned {
                op,
                fault,
                remaining: times,
            });
        }
    }

    pub fn set_random(&mut self, random: RandomFaults) {
        self.random = random;
    }

    /// Planned faults not yet handed out.
    pub fn pending(&self) -> u32 {
        self.planned.iter().map(|p| p.remaining).sum()
    }

    /// The fault for this call of `op`, if any.
    pub fn next(&mut self, op: Operation, rng: &mut SplitMix64) -> Option<Fault> {
        self.planned_fault(op)
            .or_else(|| self.random_fault(op, rng))
    }

    fn planned_fault(&mut self, op: Operation) -> Option<Fault> {
        let idx = self
            .planned
            .iter()
            .position(|p| p.op.is_none_or(|o| o == op))?;
        let p = &mut self.planned[idx];
        p.remaining -= 1;
        let fault = p.fault.clone();
        if p.remaining == 0 {
            self.planned.remove(idx);
        }
        Some(fault)
    }

    fn random_fault(&self, op: Operation, rng: &mut SplitMix64) -> Option<Fault> {
        let r = &self.random;
        if !op.is_mutating() {
            return rng
                .chance(r.describe_timeout_rate)
                .then_some(Fault::Timeout);
        }
        let total = r.error_rate + r.timeout_rate + r.lost_response_rate;
        if total <= 0.0 {
            return None;
        }
        // One draw decides both whether and which, so the rates add up as given.
        let x = rng.next_f64();
        if x < r.error_rate {
            Some(Fault::error(&r.error_code))
        } else if x < r.error_rate + r.timeout_rate {
            Some(Fault::Timeout)
        } else if x < total {
            Some(Fault::LostResponse)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_faults_match_their_operation_and_count() {
        let mut plan = FaultPlan::default();
        let mut rng = SplitMix64::new(1);
        plan.inject(Some(Operation::AssignPrivateIpAddresses), Fault::Timeout, 2);
        plan.inject(None, Fault::error("InternalError"), 1);
        assert_eq!(plan.pending(), 3);
        // A describe does not match the first plan; it takes the catch-all one.
        assert_eq!(
            plan.next(Operation::DescribeInstances, &mut rng),
            Some(Fault::error("InternalError"))
        );
        assert_eq!(plan.next(Operation::DescribeInstances, &mut rng), None);
        assert_eq!(
            plan.next(Operation::AssignPrivateIpAddresses, &mut rng),
            Some(Fault::Timeout)
        );
        assert_eq!(
            plan.next(Operation::AssignPrivateIpAddresses, &mut rng),
            Some(Fault::Timeout)
        );
        assert_eq!(
            plan.next(Operation::AssignPrivateIpAddresses, &mut rng),
            None
        );
        assert_eq!(plan.pending(), 0);
    }

    #[test]
    fn random_faults_follow_their_rates_and_the_seed() {
        let run = |seed| {
            let mut plan = FaultPlan::default();
            plan.set_random(RandomFaults {
                error_rate: 0.1,
                error_code: "InternalError".into(),
                timeout_rate: 0.05,
                lost_response_rate: 0.05,
                describe_timeout_rate: 0.0,
            });
            let mut rng = SplitMix64::new(seed);
            (0..10_000)
                .map(|_| plan.next(Operation::UnassignPrivateIpAddresses, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = run(11);
        assert_eq!(a, run(11));
        assert_ne!(a, run(12));
        let count = |f: &Fault| a.iter().filter(|x| x.as_ref() == Some(f)).count();
        let errors = count(&Fault::error("InternalError"));
        let timeouts = count(&Fault::Timeout);
        let lost = count(&Fault::LostResponse);
        assert!((900..1100).contains(&errors), "{errors}");
        assert!((420..580).contains(&timeouts), "{timeouts}");
        assert!((420..580).contains(&lost), "{lost}");
        // Describes only get describe timeouts (rate 0 here).
        let mut plan = FaultPlan::default();
        plan.set_random(RandomFaults {
            error_rate: 1.0,
            error_code: "X".into(),
            ..Default::default()
        });
        let mut rng = SplitMix64::new(1);
        assert_eq!(plan.next(Operation::DescribeSubnets, &mut rng), None);
    }
}
