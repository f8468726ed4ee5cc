//! `winipam run --simulated-ec2`: the real controller against a real apiserver, with a simulated
//! EC2 inside the process instead of AWS. The instances behind the nodes appear from the nodes
//! themselves: a watch registers each Windows node's instance (id from its providerID, type from
//! `node.kubernetes.io/instance-type`) in the simulated VPC; a describe of an instance not yet
//! registered waits a moment for the watch to see its node, so the controller never races it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use tokio::sync::Notify;

use crate::ec2::{Ec2Backend, Ec2Error};
use crate::ipam::{InstanceInfo, InstanceTypeLimits, SubnetInfo, capacity};
use crate::k8s::{Cluster, WatchEvent};
use crate::sim::ec2::{SimEc2, SimEc2Config};

/// How long a describe waits for the node watch to register an instance it names.
const REGISTRATION_WAIT: Duration = Duration::from_secs(5);

/// The VPC's one subnet: room for about 4,000 /28s.
pub const SUBNET: &str = "10.80.0.0/16";
const ZONE: &str = "us-west-2a";

struct Registry {
    /// Instance id -> instance type, as the nodes name them.
    seen: Mutex<BTreeMap<String, String>>,
    learned: Notify,
}

/// A simulated EC2 whose instances are the cluster's nodes. Cheap to clone.
#[derive(Clone)]
pub struct NodeBackedEc2 {
    sim: SimEc2,
    subnet: String,
    registry: Arc<Registry>,
}

impl NodeBackedEc2 {
    /// A simulated EC2 with EC2's latencies, throttling and eventual consistency (seeded).
    pub fn new(seed: u64) -> Result<Self, Ec2Error> {
        let sim = SimEc2::new(
            SimEc2Config {
                seed,
                ..SimEc2Config::default()
            },
            Arc::new(capacity::lookup),
        );
        let cidr: Ipv4Net = SUBNET
            .parse()
            .map_err(|_| Ec2Error::local("SimSubnet", "bad subnet CIDR"))?;
        let subnet = sim.add_subnet(cidr, ZONE)?;
        Ok(NodeBackedEc2 {
            sim,
            subnet,
            registry: Arc::new(Registry {
                seen: Mutex::new(BTreeMap::new()),
                learned: Notify::new(),
            }),
        })
    }

    /// Simulation knob (`--simulated-ec2-fragmented-subnet`): another ENI of the VPC takes one
    /// address of every aligned /28 of the subnet, so a prefix assign fails with
    /// `InsufficientCidrBlocks` while single addresses stay free, as in a long-lived subnet
    /// whose /32s are scattered: the path to the `/32` fallback, end to end.
    pub fn fragment_subnet(&self) -> Result<(), Ec2Error> {
        let cidr: Ipv4Net = SUBNET
            .parse()
            .map_err(|_| Ec2Error::local("SimSubnet", "bad subnet CIDR"))?;
        let base = u32::from(cidr.network());
        let size = 1u32 << (32 - u32::from(cidr.prefix_len()));
        // Offset 5 of each /28: past the four addresses AWS reserves at the subnet's start.
        let taken: Vec<Ipv4Addr> = (0..size / 16)
            .map(|block| Ipv4Addr::from(base + block * 16 + 5))
            .collect();
        self.sim.occupy(&self.subnet, &taken)
    }

    pub fn sim(&self) -> &SimEc2 {
        &self.sim
    }

    /// Registers the instance behind a node and launches it (once).
    pub fn learn(&self, instance_id: &str, instance_type: &str) {
        let new = self
            .registry
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(instance_id.to_string(), instance_type.to_string())
            .is_none();
        if new && !self.sim.has_instance(instance_id) {
            match self
                .sim
                .add_instance_with_id(instance_id, instance_type, &self.subnet)
            {
                Ok(info) => tracing::info!(
                    instance = instance_id,
                    instance_type,
                    primary_ip = %info.primary_eni.primary_ip,
                    "simulated EC2: instance launched for a node"
                ),
                Err(err) => tracing::warn!(
                    instance = instance_id,
                    instance_type,
                    error = %err,
                    "simulated EC2: cannot launch the node's instance"
                ),
            }
        }
        self.registry.learned.notify_waiters();
    }

    /// Registers every Windows node's instance as the node is seen. Runs until the watch ends.
    pub async fn follow_nodes<C: Cluster>(self, cluster: Arc<C>) {
        let mut nodes = cluster.watch_nodes().boxed();
        while let Some(event) = nodes.next().await {
            let views = match event {
                WatchEvent::Applied(view) => vec![view],
                WatchEvent::Resynced(views) => views,
                WatchEvent::Deleted(_) => continue,
            };
            for view in views.into_iter().filter(|v| v.windows) {
                if let (Some(id), Some(t)) = (&view.instance_id, &view.instance_type) {
                    self.learn(id, t);
                }
            }
        }
    }

    /// Waits (briefly) until every id is registered.
    async fn await_registered(&self, ids: &[String]) {
        let deadline = tokio::time::Instant::now() + REGISTRATION_WAIT;
        loop {
            let learned = self.registry.learned.notified();
            let missing = {
                let seen = self.registry.seen.lock().unwrap_or_else(|e| e.into_inner());
                ids.iter().any(|id| !seen.contains_key(id))
            };
            if !missing {
                return;
            }
            if tokio::time::timeout_at(deadline, learned).await.is_err() {
                return;
            }
        }
    }

    /// The instance's primary address (tests).
    pub fn primary_ip(&self, instance_id: &str) -> Option<Ipv4Addr> {
        Some(self.sim.instance(instance_id)?.primary_eni.primary_ip)
    }
}

impl Ec2Backend for NodeBackedEc2 {
    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<InstanceInfo>, Ec2Error> {
        self.await_registered(ids).await;
        self.sim.describe_instances(ids).await
    }

    async fn describe_subnets(&self, ids: &[String]) -> Result<Vec<SubnetInfo>, Ec2Error> {
        self.sim.describe_subnets(ids).await
    }

    async fn describe_instance_types(
        &self,
        types: &[String],
    ) -> Result<Vec<InstanceTypeLimits>, Ec2Error> {
        self.sim.describe_instance_types(types).await
    }

    async fn assign_private_ips(&self, eni: &str, count: u32) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        self.sim.assign_private_ips(eni, count).await
    }

    async fn assign_prefixes(&self, eni: &str, count: u32) -> Result<Vec<Ipv4Net>, Ec2Error> {
        self.sim.assign_prefixes(eni, count).await
    }

    async fn unassign_private_ips(&self, eni: &str, ips: &[Ipv4Addr]) -> Result<(), Ec2Error> {
        self.sim.unassign_private_ips(eni, ips).await
    }

    async fn unassign_prefixes(&self, eni: &str, prefixes: &[Ipv4Net]) -> Result<(), Ec2Error> {
        self.sim.unassign_prefixes(eni, prefixes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::cluster::{NodeSpec, SimCluster, SimClusterConfig};

    #[tokio::test(start_paused = true)]
    async fn nodes_become_instances_with_their_ids() {
        let ec2 = NodeBackedEc2::new(1).unwrap();
        let cluster = Arc::new(SimCluster::new(SimClusterConfig::instant(1)));
        tokio::spawn(ec2.clone().follow_nodes(cluster.clone()));
        let id = "i-0123456789abcdef0".to_string();
        // The describe comes first: it waits for the node to be seen.
        let describe = tokio::spawn({
            let ec2 = ec2.clone();
            let id = id.clone();
            async move { ec2.describe_instances(&[id]).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.add_node(NodeSpec {
            name: "ip-10-80-0-4".into(),
            instance_id: Some(id.clone()),
            instance_type: Some("m5.xlarge".into()),
            windows: true,
        });
        let found = describe.await.unwrap().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].instance_id, id);
        assert_eq!(found[0].instance_type, "m5.xlarge");
        let subnet: Ipv4Net = SUBNET.parse().unwrap();
        assert!(subnet.contains(&ec2.primary_ip(&id).unwrap()));
        // An instance no node names is unknown to EC2, after the wait.
        let err = ec2
            .describe_instances(&["i-00000000000000bad".to_string()])
            .await
            .unwrap_err();
        assert_eq!(err.code.as_deref(), Some("InvalidInstanceID.NotFound"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fragmented_subnet_refuses_prefixes_and_gives_single_addresses() {
        let ec2 = NodeBackedEc2::new(1).unwrap();
        ec2.fragment_subnet().unwrap();
        let id = "i-0123456789abcdef0";
        ec2.learn(id, "m5.large");
        let eni = ec2.sim().instance(id).unwrap().primary_eni.eni_id;
        let err = ec2.assign_prefixes(&eni, 1).await.unwrap_err();
        assert_eq!(err.code.as_deref(), Some("InsufficientCidrBlocks"));
        assert_eq!(ec2.assign_private_ips(&eni, 3).await.unwrap().len(), 3);
    }
}
