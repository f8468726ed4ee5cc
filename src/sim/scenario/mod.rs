//! Scenarios (SPEC 12): a workload played against the simulated cluster and EC2 with one IPAM
//! policy in charge (winipam, or the model of the VPC Resource Controller), on a current-thread
//! runtime with tokio's clock paused, so simulated minutes take real seconds and a seed
//! reproduces a run.
//!
//! - [`Scenario`]: what is played (the standard S1-S4 and demo, or scaled-down versions).
//! - [`run`]: plays one scenario with one policy and returns what was measured.

pub(crate) mod checks;
mod demo;
pub mod measure;
pub(crate) mod policy;
mod workload;
pub(crate) mod world;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use checks::Checks;
pub use policy::PolicyKind;
pub use world::Sample;

use crate::sim::progress::Progress;
use crate::sim::report::RunResult;

/// Which scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioKind {
    /// ~20 Windows nodes of mixed types, both modes, a few hundred pods arriving and leaving.
    Demo,
    /// Scale-out: nodes join at once, 30 pods bound on each as it appears.
    S1,
    /// Steady churn: pods replaced at a steady rate on a full cluster.
    S2,
    /// Burst: 100 pods on one empty c5.4xlarge in prefix mode.
    S3,
    /// Scale: thousands of nodes and pods, then a controller restart.
    S4,
    /// The rig's burst against the real VPC Resource Controller (docs/benchmarks.md): 20
    /// m5.large nodes, 8 pods each at once, secondary mode.
    W1,
    /// The rig's churn: 20 m5.large nodes with 4 pods each, then 1 replacement/s for 2 min.
    W2,
}

impl ScenarioKind {
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Demo => "demo",
            ScenarioKind::S1 => "s1",
            ScenarioKind::S2 => "s2",
            ScenarioKind::S3 => "s3",
            ScenarioKind::S4 => "s4",
            ScenarioKind::W1 => "w1",
            ScenarioKind::W2 => "w2",
        }
    }
}

/// What the workload does.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Nodes join over `join_over`; pods arrive at `pods_per_sec` for `arrivals` and live
    /// between `lifetime.0` and `lifetime.1`; a pod is bound to the node with the most room
    /// left under its advertised capacity (as the scheduler would).
    Demo {
        instance_types: Vec<&'static str>,
        nodes: u32,
        join_over: Duration,
        pods_per_sec: f64,
        arrivals: Duration,
        lifetime: (Duration, Duration),
    },
    /// Every node joins at once with `pods_per_node` pods bound as it appears.
    Wave {
        instance_type: &'static str,
        nodes: u32,
        pods_per_node: u32,
    },
    /// A wave, then `per_sec` pod replacements (delete one, bind a new one on the same node)
    /// for `duration`.
    Churn {
        instance_type: &'static str,
        nodes: u32,
        pods_per_node: u32,
        per_sec: f64,
        duration: Duration,
    },
    /// A wave, then the IPAM controller restarts.
    Restart {
        instance_type: &'static str,
        nodes: u32,
        pods_per_node: u32,
    },
}

/// A scenario: a workload and the cluster's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub kind: ScenarioKind,
    pub title: String,
    pub workload: Workload,
    /// `enable-windows-prefix-delegation`.
    pub prefix_delegation: bool,
    /// Time allowed after the workload for everything to settle (cool-downs end, surplus goes
    /// back) before the final checks.
    pub settle: Duration,
    /// Give up waiting for pods after this much simulated time.
    pub timeout: Duration,
}

impl Scenario {
    /// The scenario as SPEC 12 defines it.
    pub fn standard(kind: ScenarioKind) -> Scenario {
        match kind {
            ScenarioKind::Demo => Scenario::demo(20, 4.0),
            ScenarioKind::S1 => Scenario::s1(150),
            ScenarioKind::S2 => Scenario::s2(1000, 200.0, Duration::from_secs(300)),
            ScenarioKind::S3 => Scenario::s3(),
            ScenarioKind::S4 => Scenario::s4(5000),
            ScenarioKind::W1 => Scenario::w1(),
            ScenarioKind::W2 => Scenario::w2(),
        }
    }

    /// Scaled down to run in the test suite in well under a second of real time each.
    pub fn small(kind: ScenarioKind) -> Scenario {
        match kind {
            ScenarioKind::Demo => Scenario::demo(6, 1.5),
            ScenarioKind::S1 => Scenario::s1(60),
            ScenarioKind::S2 => Scenario::s2(20, 4.0, Duration::from_secs(60)),
            ScenarioKind::S3 => Scenario::s3(),
            ScenarioKind::S4 => Scenario::s4(40),
            // Already small.
            ScenarioKind::W1 => Scenario::w1(),
            ScenarioKind::W2 => Scenario::w2(),
        }
    }

    fn demo(nodes: u32, pods_per_sec: f64) -> Scenario {
        Scenario {
            kind: ScenarioKind::Demo,
            title: format!(
                "{nodes} Windows nodes of mixed types (Nitro in prefix mode, others secondary), \
                 pods arriving at {pods_per_sec}/s for 90 s and leaving after 20-120 s"
            ),
            workload: Workload::Demo {
                instance_types: vec![
                    "m5.large",
                    "m5.xlarge",
                    "c5.xlarge",
                    "m4.large",
                    "m5.2xlarge",
                    "c4.xlarge",
                    "t3.large",
                    "m4.xlarge",
                ],
                nodes,
                join_over: Duration::from_secs(10),
                pods_per_sec,
                arrivals: Duration::from_secs(90),
                lifetime: (Duration::from_secs(20), Duration::from_secs(120)),
            },
            prefix_delegation: true,
            settle: Duration::from_secs(120),
            timeout: Duration::from_secs(1800),
        }
    }

    fn s1(nodes: u32) -> Scenario {
        Scenario {
            kind: ScenarioKind::S1,
            title: format!(
                "scale-out: {nodes} m5.xlarge nodes join at once, 30 pods bound on each as it \
                 appears (prefix mode)"
            ),
            workload: Workload::Wave {
                instance_type: "m5.xlarge",
                nodes,
                pods_per_node: 30,
            },
            prefix_delegation: true,
            settle: Duration::from_secs(90),
            timeout: Duration::from_secs(4 * 3600),
        }
    }

    fn s2(nodes: u32, per_sec: f64, duration: Duration) -> Scenario {
        Scenario {
            kind: ScenarioKind::S2,
            title: format!(
                "steady churn: {nodes} m5.xlarge nodes, {} pods, {per_sec} pod replacements/s \
                 for {} s (prefix mode)",
                nodes * 30,
                duration.as_secs()
            ),
            workload: Workload::Churn {
                instance_type: "m5.xlarge",
                nodes,
                pods_per_node: 30,
                per_sec,
                duration,
            },
            prefix_delegation: true,
            settle: Duration::from_secs(120),
            timeout: Duration::from_secs(4 * 3600),
        }
    }

    fn s3() -> Scenario {
        Scenario {
            kind: ScenarioKind::S3,
            title: "burst: 100 pods on one c5.4xlarge with an empty pool (prefix mode)".into(),
            workload: Workload::Wave {
                instance_type: "c5.4xlarge",
                nodes: 1,
                pods_per_node: 100,
            },
            prefix_delegation: true,
            settle: Duration::from_secs(90),
            timeout: Duration::from_secs(3600),
        }
    }

    fn s4(nodes: u32) -> Scenario {
        Scenario {
            kind: ScenarioKind::S4,
            title: format!(
                "scale: {nodes} m5.xlarge nodes, {} pods, then a controller restart (prefix mode)",
                nodes * 30
            ),
            workload: Workload::Restart {
                instance_type: "m5.xlarge",
                nodes,
                pods_per_node: 30,
            },
            prefix_delegation: true,
            settle: Duration::from_secs(60),
            timeout: Duration::from_secs(8 * 3600),
        }
    }
}

impl Scenario {
    /// The workloads of the benchmark against the real controller (scripts/bench-vpcrc.sh),
    /// as close as the simulator plays them: pods bound at once rather than created through
    /// webhooks, and the churn picks a random pod of a random node rather than each node's
    /// oldest in turn.
    fn w1() -> Scenario {
        Scenario {
            kind: ScenarioKind::W1,
            title: "rig burst: 20 m5.large nodes, 8 pods bound on each at once (secondary mode)"
                .into(),
            workload: Workload::Wave {
                instance_type: "m5.large",
                nodes: 20,
                pods_per_node: 8,
            },
            prefix_delegation: false,
            settle: Duration::from_secs(65),
            timeout: Duration::from_secs(3600),
        }
    }

    fn w2() -> Scenario {
        Scenario {
            kind: ScenarioKind::W2,
            title: "rig churn: 20 m5.large nodes with 4 pods each, 1 pod replacement/s for 120 s \
                    (secondary mode)"
                .into(),
            workload: Workload::Churn {
                instance_type: "m5.large",
                nodes: 20,
                pods_per_node: 4,
                per_sec: 1.0,
                duration: Duration::from_secs(120),
            },
            prefix_delegation: false,
            settle: Duration::from_secs(65),
            timeout: Duration::from_secs(3600),
        }
    }
}

/// Plays `scenario` with `policy` on a fresh current-thread runtime with paused time.
pub fn run(
    scenario: &Scenario,
    policy: PolicyKind,
    seed: u64,
    progress: Option<&Progress>,
) -> std::io::Result<RunResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    Ok(runtime.block_on(workload::play(scenario, policy, seed, progress)))
}

#[cfg(test)]
mod leaving_tests;
#[cfg(test)]
mod ordering_tests;
#[cfg(test)]
mod path_tests;
#[cfg(test)]
mod precedence_tests;
#[cfg(test)]
mod stepdown_tests;
#[cfg(test)]
mod takeover_tests;
#[cfg(test)]
mod tests;
