//! The world a scenario plays in: the simulated cluster and EC2, the VPC's subnets, the nodes
//! launched so far, and the sampler of addresses held and used over time.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::clock::TokioClock;
use crate::ipam::{Timestamp, capacity};
use crate::sim::cluster::{NodeSpec, SimCluster, SimClusterConfig};
use crate::sim::ec2::{SimEc2, SimEc2Config};
use crate::sim::rng::SplitMix64;

/// 2026-11-21T00:00:00Z: the simulated wall clock starts there (cool-down records are absolute).
pub const EPOCH: Timestamp = Timestamp(1_795_219_200_000);

/// Nodes per /16 subnet (each m5.xlarge in prefix mode takes about two /28s).
const NODES_PER_SUBNET: u32 = 1000;
const ZONES: [&str; 3] = ["us-west-2a", "us-west-2b", "us-west-2c"];

/// One point of the addresses-over-time series.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Simulated seconds since the start.
    pub t: f64,
    /// Addresses on ENIs (secondary IPs + 16 per /28).
    pub held: u64,
    /// Live pods with an address.
    pub used: u64,
}

pub(super) struct World {
    pub cluster: SimCluster,
    pub ec2: SimEc2,
    pub clock: TokioClock,
    pub rng: SplitMix64,
    subnets: Vec<String>,
    /// Node name -> (instance id, instance type), in launch order of names.
    pub nodes: BTreeMap<String, (String, String)>,
    launched: u32,
    pub samples: Arc<Mutex<Vec<Sample>>>,
}

impl World {
    pub fn new(seed: u64, expected_nodes: u32) -> World {
        let limits: crate::sim::ec2::LimitsSource = Arc::new(capacity::lookup);
        let ec2 = SimEc2::new(
            SimEc2Config {
                seed,
                ..SimEc2Config::default()
            },
            limits,
        );
        let subnet_count = expected_nodes.div_ceil(NODES_PER_SUBNET).max(1);
        let subnets = (0..subnet_count)
            .filter_map(|i| {
                let cidr = Ipv4Net::new(Ipv4Addr::new(10, 64 + i as u8, 0, 0), 16).ok()?;
                ec2.add_subnet(cidr, ZONES[i as usize % ZONES.len()]).ok()
            })
            .collect();
        World {
            cluster: SimCluster::new(SimClusterConfig {
                seed: seed ^ 0xc105_7e12,
                ..SimClusterConfig::default()
            }),
            ec2,
            clock: TokioClock::starting_at(EPOCH),
            rng: SplitMix64::new(seed ^ 0x3017_10ad),
            subnets,
            nodes: BTreeMap::new(),
            launched: 0,
            samples: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Launches an instance of `instance_type` and registers its Windows node. Returns the
    /// node's name (as EKS names nodes: after the primary address).
    /// Turns on prefix delegation in the controller's ConfigMap (tests).
    #[cfg(test)]
    pub fn enable_prefix_delegation(&self) {
        self.cluster.set_config_map(
            super::policy::CONFIG_NAMESPACE,
            super::policy::CONFIG_NAME,
            std::collections::BTreeMap::from([(
                "enable-windows-prefix-delegation".to_string(),
                "true".to_string(),
            )]),
        );
    }

    pub fn launch_node(&mut self, instance_type: &str) -> Option<String> {
        let subnet =
            &self.subnets[(self.launched / NODES_PER_SUBNET) as usize % self.subnets.len()];
        let info = self.ec2.add_instance(instance_type, subnet).ok()?;
        self.launched += 1;
        let ip = info.primary_eni.primary_ip.octets();
        let name = format!(
            "ip-{}-{}-{}-{}.us-west-2.compute.internal",
            ip[0], ip[1], ip[2], ip[3]
        );
        self.cluster.add_node(NodeSpec {
            name: name.clone(),
            instance_id: Some(info.instance_id.clone()),
            instance_type: Some(instance_type.to_string()),
            windows: true,
        });
        self.nodes
            .insert(name.clone(), (info.instance_id, instance_type.to_string()));
        Some(name)
    }

    /// Samples addresses held and used every `every` until the returned task is aborted.
    pub fn start_sampler(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let cluster = self.cluster.clone();
        let ec2 = self.ec2.clone();
        let samples = Arc::clone(&self.samples);
        tokio::spawn(async move {
            loop {
                let (ips, prefixes) = ec2.address_totals();
                let (_, used) = cluster.pod_counts();
                let sample = Sample {
                    t: cluster.elapsed().as_secs_f64(),
                    held: ips + prefixes * 16,
                    used,
                };
                samples
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(sample);
                tokio::time::sleep(every).await;
            }
        })
    }

    /// Addresses held now (secondary IPs + 16 per /28).
    pub fn held(&self) -> u64 {
        let (ips, prefixes) = self.ec2.address_totals();
        ips + prefixes * 16
    }
}
