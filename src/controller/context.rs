//! What every node worker shares: the cluster and EC2 adapters, the clock, metrics, settings,
//! and the few facts that span nodes (subnet-wide holds after `InsufficientFreeAddressesInSubnet`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::SharedClock;
use crate::ec2::{Ec2Backend, Ec2Client};
use crate::ipam::Timestamp;
use crate::k8s::{Cluster, EventSeverity, ObjectRef};
use crate::metrics::Metrics;
use crate::server::Readiness;

/// Tunables of the controller loop (not of the IPAM maths, which the ConfigMap drives).
#[derive(Debug, Clone)]
pub struct Settings {
    /// A pod waiting this long for an address gets an `IPAllocationPending` Event.
    pub pending_event_after: Duration,
    /// Status of a NodeAddressPool is written at most this often, except when it misses what a
    /// restart needs (`record::rules::at_once`). `--status-interval`.
    pub status_min_interval: Duration,
    /// Annotation writes in flight at once for one node.
    pub annotate_concurrency: usize,
    /// Periodic re-describe of every ENI (SPEC 6.4).
    pub resync_period: Duration,
    /// Delay before retrying a node whose first describe failed.
    pub init_retry: Duration,
    /// Ignore `enable-windows-ipam: "true"` in `kube-system/amazon-vpc-cni`.
    pub ignore_foreign_ipam: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pending_event_after: Duration::from_secs(5),
            status_min_interval: Duration::from_secs(30),
            annotate_concurrency: 16,
            resync_period: Duration::from_secs(60),
            init_retry: Duration::from_secs(10),
            ignore_foreign_ipam: false,
        }
    }
}

/// Shared by the dispatcher and every node worker.
pub struct Ctx<C, B: Ec2Backend> {
    pub cluster: Arc<C>,
    pub ec2: Ec2Client<B>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub settings: Settings,
    /// Subnets refusing secondary IPs, until when (one node's `SubnetFull` holds all its peers).
    subnet_holds: Mutex<HashMap<String, Timestamp>>,
    /// Workers that have not finished their first initialisation (readiness: pools rebuilt).
    initialising: AtomicUsize,
}

impl<C: Cluster, B: Ec2Backend> Ctx<C, B> {
    pub fn new(
        cluster: Arc<C>,
        ec2: Ec2Client<B>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        readiness: Readiness,
        settings: Settings,
    ) -> Self {
        Ctx {
            cluster,
            ec2,
            clock,
            metrics,
            readiness,
            settings,
            subnet_holds: Mutex::new(HashMap::new()),
            initialising: AtomicUsize::new(0),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Records an Event; a failure to record one is logged, never fatal.
    pub async fn event(
        &self,
        object: &ObjectRef,
        severity: EventSeverity,
        reason: &str,
        note: &str,
    ) {
        if severity == EventSeverity::Warning {
            tracing::warn!(object = %object.name, reason, "{note}");
        } else {
            tracing::info!(object = %object.name, reason, "{note}");
        }
        if let Err(err) = self
            .cluster
            .publish_event(object, severity, reason, note)
            .await
        {
            tracing::warn!(object = %object.name, reason, error = %err, "could not record Event");
        }
    }

    pub fn hold_subnet(&self, subnet: &str, until: Timestamp) {
        let mut holds = self.subnet_holds.lock().unwrap_or_else(|e| e.into_inner());
        let entry = holds.entry(subnet.to_string()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// The end of a hold on `subnet`, if one is running.
    pub fn subnet_hold(&self, subnet: &str, now: Timestamp) -> Option<Timestamp> {
        let holds = self.subnet_holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.get(subnet).copied().filter(|t| *t > now)
    }

    pub fn init_started(&self) {
        self.initialising.fetch_add(1, Ordering::SeqCst);
        self.readiness.set_pools_rebuilt(false);
    }

    pub fn init_finished(&self) {
        if self.initialising.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.readiness.set_pools_rebuilt(true);
        }
    }
}
