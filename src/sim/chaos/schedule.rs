//! The random schedule of one seed: a small world (nodes of mixed types, the first
//! configuration, the first pods) and a list of steps, each an action and a wait. Actions that
//! name objects carry a random pick resolved when they run (the pod to delete is one of the pods
//! alive then), so a schedule is drawn once, up front, from the seed alone.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ec2::Operation;
use crate::ipam::config::{
    KEY_COOLDOWN, KEY_MINIMUM_IP, KEY_PREFIX_DELEGATION, KEY_WARM_IP, KEY_WARM_PREFIX,
};
use crate::k8s::LEAVING_TAINTS;
use crate::sim::cluster::WriteKind;
use crate::sim::rng::SplitMix64;

/// Instance types the worlds are built from: Nitro and not, small and larger.
const INSTANCE_TYPES: [&str; 7] = [
    "m5.large",
    "m5.xlarge",
    "c5.large",
    "t3.large",
    "m4.large",
    "c4.large",
    "t2.large",
];

/// EC2 error codes a fault may answer with.
pub const EC2_ERROR_CODES: [&str; 4] = [
    "RequestLimitExceeded",
    "InternalError",
    "InsufficientCidrBlocks",
    "InsufficientFreeAddressesInSubnet",
];

/// What goes wrong with EC2 calls.
#[derive(Debug, Clone, PartialEq)]
pub enum Ec2FaultKind {
    /// EC2 answers this error code; nothing applied.
    Error(&'static str),
    /// No answer; nothing applied.
    Timeout,
    /// Applied, the answer lost.
    LostResponse,
}

/// What goes wrong with apiserver writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFaultKind {
    Conflict,
    ServerError,
    /// Applied, then the answer is lost.
    ApplyThenFail,
}

/// One scheduled action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Bind `count` new pods, each to a node with room under its advertised capacity.
    CreatePods {
        count: u32,
        pick: u64,
    },
    DeletePod {
        pick: u64,
    },
    /// Delete a pod and create it again under the same name (new UID) on the same node.
    RecreatePod {
        pick: u64,
    },
    /// A pod finishes (phase Succeeded); it is deleted later by a `DeletePod`.
    PodSucceeded {
        pick: u64,
    },
    /// Delete a node and its pods; its instance terminates; a node of the same name joins on a
    /// new instance of the same type.
    ReplaceNode {
        pick: u64,
    },
    /// A new valid ConfigMap.
    Config(BTreeMap<String, String>),
    /// A ConfigMap with a bad value: rejected with an Event, the last good one stays in force.
    InvalidConfig(BTreeMap<String, String>),
    /// `kube-system/amazon-vpc-cni` says another IPAM manages Windows IPs (or no longer does).
    ForeignIpam(bool),
    /// A person unassigns an address of a node's ENI by hand: one a pod uses, or a free one.
    ManualUnassign {
        used: bool,
        pick: u64,
    },
    /// The next `times` calls of `op` fail so.
    Ec2Fault {
        op: Operation,
        fault: Ec2FaultKind,
        times: u32,
    },
    /// Random faults on every mutating call at `rate` (0: off).
    Ec2RandomFaults {
        rate: f64,
    },
    /// The next `times` writes of `kind` fail so.
    ApiFault {
        kind: WriteKind,
        fault: ApiFaultKind,
        times: u32,
    },
    /// A watch restarts (410 Gone): the full set again.
    Relist,
    /// The process dies now; it restarts `restart_after` later.
    Crash {
        restart_after: Duration,
    },
    /// The process dies right after the `n`th EC2 Assign/Unassign applied from now.
    CrashAfterMutations {
        n: u64,
        restart_after: Duration,
    },
    /// The process dies right after the `n`th annotation written from now.
    CrashAfterAnnotations {
        n: u64,
        restart_after: Duration,
    },
}

impl Action {
    /// The kind, for the summary's count of faults by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::CreatePods { .. } => "create-pods",
            Action::DeletePod { .. } => "delete-pod",
            Action::RecreatePod { .. } => "recreate-pod",
            Action::PodSucceeded { .. } => "pod-succeeded",
            Action::ReplaceNode { .. } => "replace-node",
            Action::Config(_) => "config",
            Action::InvalidConfig(_) => "invalid-config",
            Action::ForeignIpam(_) => "foreign-ipam",
            Action::ManualUnassign { .. } => "manual-unassign",
            Action::Ec2Fault { .. } => "ec2-fault",
            Action::Ec2RandomFaults { .. } => "ec2-random-faults",
            Action::ApiFault { .. } => "api-fault",
            Action::Relist => "relist",
            Action::Crash { .. } => "crash",
            Action::CrashAfterMutations { .. } => "crash-after-ec2-change",
            Action::CrashAfterAnnotations { .. } => "crash-after-annotation",
        }
    }
}

/// Apiserver trouble laid over a step, drawn from a stream of its own so the workload and the
/// other faults of a seed do not depend on whether it is on.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiChaos {
    /// Every write of any kind meets these random faults from now on (zero: off).
    RandomWriteFaults {
        conflict: f64,
        server_error: f64,
        apply_then_fail: f64,
    },
    /// Every watch misses everything for this long, then relists.
    CutWatches(Duration),
    /// 410 Gone on every watch: the full set again.
    RelistAll,
}

impl ApiChaos {
    pub fn kind(&self) -> &'static str {
        match self {
            ApiChaos::RandomWriteFaults { .. } => "api-random-faults",
            ApiChaos::CutWatches(_) => "watch-cut",
            ApiChaos::RelistAll => "relist-all",
        }
    }
}

/// What happens to the replicas of a two-replica run, drawn from a stream of its own (see
/// [`Schedule::with_failover`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Failover {
    /// The leader can no longer reach the Lease: it keeps running (and writing) until its renew
    /// deadline; the other takes over once the lease expires. Healed `heal_after` later.
    PartitionLeader { heal_after: Duration },
    /// The leader dies; the other takes over once the lease expires; a new process takes the
    /// dead one's place `restart_after` later and campaigns.
    KillLeader { restart_after: Duration },
    /// The replica not leading dies; a new one takes its place `restart_after` later.
    KillFollower { restart_after: Duration },
    /// Both die; new ones start `restart_after` later.
    KillBoth { restart_after: Duration },
}

impl Failover {
    pub fn kind(&self) -> &'static str {
        match self {
            Failover::PartitionLeader { .. } => "partition-leader",
            Failover::KillLeader { .. } => "kill-leader",
            Failover::KillFollower { .. } => "kill-follower",
            Failover::KillBoth { .. } => "kill-both",
        }
    }
}

/// A node on its way out, or back (issue 16), drawn from a stream of its own (see
/// [`Schedule::with_node_exits`]). The node is the `pick`th by name.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeExit {
    /// `kubectl cordon`: `spec.unschedulable` and the taint the node controller adds.
    Cordon { pick: u64 },
    /// The taint of a tool taking the node away (Karpenter, the Cluster Autoscaler), alone.
    Taint { pick: u64, key: &'static str },
    /// `kubectl uncordon`: every signal gone.
    Uncordon { pick: u64 },
}

impl NodeExit {
    pub fn kind(&self) -> &'static str {
        match self {
            NodeExit::Cordon { .. } => "cordon",
            NodeExit::Taint { .. } => "leaving-taint",
            NodeExit::Uncordon { .. } => "uncordon",
        }
    }
}

/// One step: the action, then this much virtual time passes.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub action: Action,
    /// Apiserver trouble starting with the step (see [`Schedule::with_api_chaos`]).
    pub api: Option<ApiChaos>,
    /// A failover starting with the step (two replicas only).
    pub failover: Option<Failover>,
    /// A node cordoned, tainted or uncordoned with the step.
    pub exit: Option<NodeExit>,
    pub wait: Duration,
}

/// The world of a seed and what happens to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub seed: u64,
    pub instance_types: Vec<&'static str>,
    pub config: BTreeMap<String, String>,
    pub initial_pods: u32,
    /// EC2 answers after a realistic latency (else at once).
    pub ec2_latency: bool,
    /// Some describes show the ENI as it was up to a few seconds ago.
    pub stale_describes: bool,
    /// Two replicas campaign on one lease (else one process leads throughout).
    pub two_replicas: bool,
    pub steps: Vec<Step>,
}

fn pick<T: Copy>(rng: &mut SplitMix64, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize]
}

fn secs(rng: &mut SplitMix64, lo: f64, hi: f64) -> Duration {
    Duration::from_secs_f64(lo + (hi - lo) * rng.next_f64())
}

/// A valid configuration: prefix delegation on or off, targets and cool-down drawn small.
fn config(rng: &mut SplitMix64) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    data.insert(
        KEY_PREFIX_DELEGATION.to_string(),
        rng.chance(0.5).to_string(),
    );
    if rng.chance(0.5) {
        data.insert(KEY_WARM_IP.to_string(), rng.below(6).to_string());
    }
    if rng.chance(0.4) {
        data.insert(KEY_MINIMUM_IP.to_string(), rng.below(8).to_string());
    }
    if rng.chance(0.2) {
        data.insert(KEY_WARM_PREFIX.to_string(), rng.below(3).to_string());
    }
    if rng.chance(0.6) {
        data.insert(
            KEY_COOLDOWN.to_string(),
            pick(rng, &[0u32, 5, 10, 30, 45]).to_string(),
        );
    }
    data
}

/// A configuration with one bad value (a valid one with a key spoiled).
fn invalid_config(rng: &mut SplitMix64) -> BTreeMap<String, String> {
    let mut data = config(rng);
    let (key, value) = pick(
        rng,
        &[
            (KEY_PREFIX_DELEGATION, "yes"),
            (KEY_WARM_IP, "-1"),
            (KEY_MINIMUM_IP, "three"),
            (KEY_COOLDOWN, "1.5"),
        ],
    );
    data.insert(key.to_string(), value.to_string());
    data
}

fn restart_after(rng: &mut SplitMix64) -> Duration {
    secs(rng, 0.0, 20.0)
}

fn action(rng: &mut SplitMix64) -> Action {
    let roll = rng.below(100);
    let p = rng.next_u64();
    match roll {
        0..=17 => Action::CreatePods {
            count: 1 + rng.below(8) as u32,
            pick: p,
        },
        18..=29 => Action::DeletePod { pick: p },
        30..=35 => Action::RecreatePod { pick: p },
        36..=40 => Action::PodSucceeded { pick: p },
        41..=43 => Action::ReplaceNode { pick: p },
        44..=49 => Action::Config(config(rng)),
        50..=51 => Action::InvalidConfig(invalid_config(rng)),
        52..=53 => Action::ForeignIpam(rng.chance(0.5)),
        54..=58 => Action::ManualUnassign {
            used: rng.chance(0.5),
            pick: p,
        },
        59..=68 => {
            let op = pick(
                rng,
                &[
                    Operation::AssignPrivateIpAddresses,
                    Operation::AssignPrivateIpAddresses,
                    Operation::UnassignPrivateIpAddresses,
                    Operation::DescribeInstances,
                ],
            );
            // The codes EC2 answers for that action: only an Assign meets a full subnet.
            let codes: &[&'static str] = if op == Operation::AssignPrivateIpAddresses {
                &EC2_ERROR_CODES
            } else {
                &EC2_ERROR_CODES[..2]
            };
            let fault = match rng.below(4) {
                0 => Ec2FaultKind::Timeout,
                1 if op.is_mutating() => Ec2FaultKind::LostResponse,
                1 => Ec2FaultKind::Error("InternalError"),
                _ => Ec2FaultKind::Error(pick(rng, codes)),
            };
            Action::Ec2Fault {
                op,
                fault,
                times: 1 + rng.below(3) as u32,
            }
        }
        69..=71 => Action::Ec2RandomFaults {
            rate: pick(rng, &[0.0, 0.05, 0.2]),
        },
        72..=79 => Action::ApiFault {
            kind: pick(
                rng,
                &[
                    WriteKind::Annotate,
                    WriteKind::Annotate,
                    WriteKind::PoolStatus,
                    WriteKind::NodeCapacity,
                    WriteKind::PoolCreate,
                    WriteKind::Event,
                ],
            ),
            fault: pick(
                rng,
                &[
                    ApiFaultKind::Conflict,
                    ApiFaultKind::ServerError,
                    ApiFaultKind::ApplyThenFail,
                ],
            ),
            times: 1 + rng.below(3) as u32,
        },
        80..=83 => Action::Relist,
        84..=89 => Action::Crash {
            restart_after: restart_after(rng),
        },
        90..=94 => Action::CrashAfterMutations {
            n: 1 + rng.below(3),
            restart_after: restart_after(rng),
        },
        _ => Action::CrashAfterAnnotations {
            n: 1 + rng.below(4),
            restart_after: restart_after(rng),
        },
    }
}

impl Schedule {
    pub fn from_seed(seed: u64) -> Schedule {
        let mut rng = SplitMix64::new(seed ^ 0xc4a0_5eed);
        let nodes = 1 + rng.below(4) as usize;
        let instance_types = (0..nodes)
            .map(|_| pick(&mut rng, &INSTANCE_TYPES))
            .collect();
        let config = config(&mut rng);
        let initial_pods = rng.below(21) as u32;
        let ec2_latency = rng.chance(0.5);
        let stale_describes = rng.chance(0.5);
        let count = 20 + rng.below(41) as usize;
        let steps = (0..count)
            .map(|_| Step {
                action: action(&mut rng),
                api: None,
                failover: None,
                exit: None,
                wait: secs(&mut rng, 0.05, 8.0),
            })
            .collect();
        Schedule {
            seed,
            instance_types,
            config,
            initial_pods,
            ec2_latency,
            stale_describes,
            two_replicas: false,
            steps,
        }
    }
}

impl Schedule {
    /// The schedule with apiserver trouble laid over some steps (random write faults, watch
    /// outages, relists), drawn from a stream of its own: the steps themselves are unchanged.
    pub fn with_api_chaos(mut self) -> Schedule {
        let mut rng = SplitMix64::new(self.seed ^ 0x0a91_c4a0);
        if !rng.chance(0.6) {
            return self;
        }
        for step in &mut self.steps {
            step.api = match rng.below(100) {
                0..=5 => {
                    let rate = pick(&mut rng, &[0.0, 0.02, 0.1, 0.3]);
                    Some(ApiChaos::RandomWriteFaults {
                        conflict: rate / 3.0,
                        server_error: rate / 3.0,
                        apply_then_fail: rate / 3.0,
                    })
                }
                6..=9 => Some(ApiChaos::CutWatches(secs(&mut rng, 0.5, 10.0))),
                10..=12 => Some(ApiChaos::RelistAll),
                _ => None,
            };
        }
        self
    }
}

impl Schedule {
    /// For half the seeds: two replicas on one lease, with failovers laid over some steps,
    /// drawn from a stream of their own: the steps themselves are unchanged (a seed's
    /// workload and faults are the same with one replica or two).
    pub fn with_failover(mut self) -> Schedule {
        let mut rng = SplitMix64::new(self.seed ^ 0xfa11_0ae5);
        if !rng.chance(0.5) {
            return self;
        }
        self.two_replicas = true;
        for step in &mut self.steps {
            step.failover = match rng.below(100) {
                0..=5 => Some(Failover::PartitionLeader {
                    heal_after: secs(&mut rng, 1.0, 15.0),
                }),
                6..=9 => Some(Failover::KillLeader {
                    restart_after: restart_after(&mut rng),
                }),
                10..=12 => Some(Failover::KillFollower {
                    restart_after: restart_after(&mut rng),
                }),
                13..=14 => Some(Failover::KillBoth {
                    restart_after: restart_after(&mut rng),
                }),
                _ => None,
            };
        }
        self
    }
}

impl Schedule {
    /// For half the seeds: nodes cordoned, tainted as leaving and uncordoned with some steps,
    /// drawn from a stream of their own: the steps themselves are unchanged. A node still
    /// leaving at quiescence must hold nothing beyond its pods' addresses.
    pub fn with_node_exits(mut self) -> Schedule {
        let mut rng = SplitMix64::new(self.seed ^ 0x0de9_a27e);
        if !rng.chance(0.5) {
            return self;
        }
        for step in &mut self.steps {
            let p = rng.next_u64();
            step.exit = match rng.below(100) {
                0..=4 => Some(NodeExit::Cordon { pick: p }),
                5..=7 => Some(NodeExit::Taint {
                    pick: p,
                    key: pick(&mut rng, &LEAVING_TAINTS[1..]),
                }),
                8..=13 => Some(NodeExit::Uncordon { pick: p }),
                _ => None,
            };
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_a_function_of_its_seed() {
        assert_eq!(Schedule::from_seed(7), Schedule::from_seed(7));
        assert_ne!(Schedule::from_seed(7), Schedule::from_seed(8));
        for seed in 0..200 {
            let s = Schedule::from_seed(seed);
            assert!((1..=4).contains(&s.instance_types.len()));
            assert!((20..=60).contains(&s.steps.len()));
            assert!(s.initial_pods <= 20);
        }
    }

    #[test]
    fn failovers_leave_the_steps_unchanged() {
        let mut two = 0;
        for seed in 0..200 {
            let plain = Schedule::from_seed(seed).with_api_chaos();
            let failover = plain.clone().with_failover();
            two += u32::from(failover.two_replicas);
            assert_eq!(plain.steps.len(), failover.steps.len());
            for (a, b) in plain.steps.iter().zip(&failover.steps) {
                assert_eq!((&a.action, &a.api, a.wait), (&b.action, &b.api, b.wait));
            }
            if !failover.two_replicas {
                assert_eq!(plain, failover);
            }
        }
        assert!(
            (60..140).contains(&two),
            "{two} of 200 seeds with two replicas"
        );
    }

    #[test]
    fn node_exits_leave_the_steps_unchanged() {
        let mut with_exits = 0;
        for seed in 0..200 {
            let plain = Schedule::from_seed(seed).with_api_chaos().with_failover();
            let exits = plain.clone().with_node_exits();
            assert_eq!(plain.steps.len(), exits.steps.len());
            for (a, b) in plain.steps.iter().zip(&exits.steps) {
                assert_eq!(
                    (&a.action, &a.api, &a.failover, a.wait),
                    (&b.action, &b.api, &b.failover, b.wait)
                );
            }
            with_exits += u32::from(exits.steps.iter().any(|s| s.exit.is_some()));
        }
        assert!((60..140).contains(&with_exits), "{with_exits} of 200 seeds");
    }
}
