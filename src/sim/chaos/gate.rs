//! One simulated process's door to the world. The controller spawns tasks everywhere (node
//! workers, the EC2 client's batchers and rate limiters), so aborting one task does not kill a
//! process; instead every call a process makes goes through its [`Gate`], and once the gate is
//! shut (the process crashed) no call returns and no watch yields again: orphaned tasks can no
//! longer touch the world. A call in flight when the gate shuts may already have taken effect
//! (an EC2 assign, an annotation write): that is exactly a crash between the effect and the
//! bookkeeping after it.
//!
//! Targeted crash points are counted here: "die right after the Nth applied Assign/Unassign" and
//! "right after the Nth annotation written".

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::{Stream, StreamExt};
use ipnet::Ipv4Net;

use crate::crd::NodeAddressPoolStatus;
use crate::ec2::{Ec2Backend, Ec2Error, ThrottleSink};
use crate::ipam::{Config, InstanceInfo, InstanceTypeLimits, SubnetInfo, Timestamp};
use crate::k8s::{
    AnnotateOutcome, Cluster, ClusterError, ConfigMapView, EnsureOutcome, EventSeverity, NodeView,
    ObjectRef, PodView, PoolRead, WatchEvent,
};
use crate::sim::cluster::SimCluster;
use crate::sim::ec2::SimEc2;

/// An annotation some process wrote (the cool-down invariant reads these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub process: u32,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub value: String,
    pub at: Timestamp,
    /// The pod's node's stored NodeAddressPool status listed the address, as used or ahead,
    /// when the annotation was sent: what a new leader would rebuild from (`unrecorded`).
    pub recorded: bool,
}

/// Where the crash points stand; shared by every process (numbers count across processes).
#[derive(Default)]
pub struct Tally {
    pub mutations: AtomicU64,
    pub annotations: AtomicU64,
    pub log: Mutex<Vec<Written>>,
    /// Every Event a live process tried to record, as (object UID, reason): an Event the
    /// apiserver refused (an injected fault) was still reported as far as the controller can.
    pub events: Mutex<Vec<(String, String)>>,
    /// Invalid ConfigMaps a live process received (each must be answered by a ConfigRejected
    /// Event: the controller records it as it reads the ConfigMap, with no wait in between).
    pub invalid_configs: AtomicU64,
    /// Each ConfigMap a live process received, with the cool-down in force for that process
    /// after it, in the order received.
    pub configs: Mutex<Vec<ConfigRead>>,
}

/// A ConfigMap a process received, and the cool-down in force for it from then on: the
/// ConfigMap's if valid, the defaults if there is none, else (rejected) the one before, which is
/// the defaults if this was the first it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigRead {
    pub process: u32,
    pub at: Timestamp,
    pub cooldown: Duration,
}

/// The life of one process.
pub struct Gate {
    pub id: u32,
    alive: AtomicBool,
    /// Die right after the mutation/annotation whose global number is this (0: never).
    die_at_mutation: AtomicU64,
    die_at_annotation: AtomicU64,
    /// The cool-down in force for this process (`None` until it read a ConfigMap).
    cooldown: Mutex<Option<Duration>>,
    tally: Arc<Tally>,
    clock: crate::clock::TokioClock,
}

impl Gate {
    pub fn new(id: u32, tally: Arc<Tally>, clock: crate::clock::TokioClock) -> Arc<Gate> {
        Arc::new(Gate {
            id,
            alive: AtomicBool::new(true),
            die_at_mutation: AtomicU64::new(0),
            die_at_annotation: AtomicU64::new(0),
            cooldown: Mutex::new(None),
            tally,
            clock,
        })
    }

    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    pub fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }

    /// Dies right after the `n`th EC2 Assign/Unassign applied from now (counted over every
    /// process).
    pub fn die_after_mutations(&self, n: u64) {
        let at = self.tally.mutations.load(Ordering::SeqCst) + n.max(1);
        self.die_at_mutation.store(at, Ordering::SeqCst);
    }

    /// Dies right after the `n`th annotation written from now.
    pub fn die_after_annotations(&self, n: u64) {
        let at = self.tally.annotations.load(Ordering::SeqCst) + n.max(1);
        self.die_at_annotation.store(at, Ordering::SeqCst);
    }

    /// No targeted crash pending any more (quiescence).
    pub fn disarm(&self) {
        self.die_at_mutation.store(0, Ordering::SeqCst);
        self.die_at_annotation.store(0, Ordering::SeqCst);
    }

    /// Waits forever once the process is dead.
    async fn check(&self) {
        if !self.alive() {
            std::future::pending::<()>().await;
        }
    }

    /// Counts one applied effect; the process dies here if this is its crash point.
    fn count(&self, counter: &AtomicU64, die_at: &AtomicU64) {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if die_at.load(Ordering::SeqCst) == n {
            self.kill();
        }
    }

    /// Runs `call` unless the process is dead; its answer is never seen by a dead process.
    async fn pass<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.check().await;
        let out = call.await;
        self.check().await;
        out
    }

    /// Runs a mutating EC2 call: an applied one (success, or an answer lost after the change)
    /// counts towards the crash point.
    async fn mutate<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Ec2Error>>,
    ) -> Result<T, Ec2Error> {
        self.check().await;
        let out = call.await;
        if out.is_ok() {
            self.count(&self.tally.mutations, &self.die_at_mutation);
        }
        self.check().await;
        out
    }

    /// Notes a ConfigMap the process received (the controller applies it as it reads it): the
    /// configuration in force for it follows as SPEC 3.1 says, and an invalid one is counted.
    fn config_read(&self, cm: Option<&ConfigMapView>) {
        let parsed = cm.map(|cm| Config::parse(&cm.data).map(|p| p.config.cooldown));
        let mut cooldown = self.cooldown.lock().unwrap_or_else(|e| e.into_inner());
        let now = match parsed {
            None => Config::default().cooldown,
            Some(Ok(c)) => c,
            Some(Err(_)) => {
                self.tally.invalid_configs.fetch_add(1, Ordering::SeqCst);
                cooldown.unwrap_or(Config::default().cooldown)
            }
        };
        *cooldown = Some(now);
        let read = ConfigRead {
            process: self.id,
            at: crate::clock::Clock::now(&self.clock),
            cooldown: now,
        };
        drop(cooldown);
        let mut configs = self.tally.configs.lock().unwrap_or_else(|e| e.into_inner());
        configs.push(read);
    }

    /// A watch stream that stops yielding (without ending) once the process is dead.
    fn stream<T: Send + 'static>(
        self: &Arc<Self>,
        inner: impl Stream<Item = T> + Send + 'static,
    ) -> impl Stream<Item = T> + Send + 'static {
        let gate = Arc::clone(self);
        let mut inner = inner.boxed();
        futures::stream::poll_fn(move |cx| {
            if !gate.alive() {
                return Poll::Pending;
            }
            inner.poll_next_unpin(cx)
        })
    }
}

/// The cluster as one process sees it.
pub struct GatedCluster {
    pub gate: Arc<Gate>,
    pub inner: SimCluster,
}

impl GatedCluster {
    /// The stored status of the pod's node lists the address `value` names, as used or ahead
    /// (read from the object's fields, not through the controller's own parsing).
    fn status_lists(&self, namespace: &str, name: &str, value: &str) -> bool {
        let Some(addr) = crate::ipam::parse_annotation(value) else {
            return false;
        };
        let addr = addr.to_string();
        self.inner
            .pod_node(namespace, name)
            .and_then(|node| self.inner.pool_status(&node))
            .is_some_and(|status| {
                (status.used_addresses.iter())
                    .chain(&status.ahead_addresses)
                    .any(|a| *a == addr)
            })
    }
}

impl Cluster for GatedCluster {
    async fn annotate_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        value: &str,
        has_annotations: bool,
    ) -> Result<AnnotateOutcome, ClusterError> {
        let gate = &self.gate;
        gate.check().await;
        // Read as the request goes: the worker writes its status before, never during, an
        // annotation, so a later status (another process's) cannot be taken for its cover.
        let recorded = self.status_lists(namespace, name, value);
        let out = self
            .inner
            .annotate_pod(namespace, name, uid, value, has_annotations)
            .await;
        // Only a change the cluster made counts (a lost answer after the write shows as an
        // error here, and its annotation is read back from the cluster by the invariants).
        if matches!(out, Ok(AnnotateOutcome::Written)) {
            let mut log = gate.tally.log.lock().unwrap_or_else(|e| e.into_inner());
            log.push(Written {
                process: gate.id,
                namespace: namespace.to_string(),
                name: name.to_string(),
                uid: uid.to_string(),
                value: value.to_string(),
                at: crate::clock::Clock::now(&gate.clock),
                recorded,
            });
            drop(log);
            gate.count(&gate.tally.annotations, &gate.die_at_annotation);
        }
        gate.check().await;
        out
    }

    async fn set_node_capacity(
        &self,
        node: &str,
        capacity: Option<u32>,
    ) -> Result<(), ClusterError> {
        self.gate
            .pass(self.inner.set_node_capacity(node, capacity))
            .await
    }

    async fn ensure_pool_object(
        &self,
        node_name: &str,
        node_uid: &str,
    ) -> Result<EnsureOutcome, ClusterError> {
        self.gate
            .pass(self.inner.ensure_pool_object(node_name, node_uid))
            .await
    }

    async fn write_pool_status(
        &self,
        node_name: &str,
        status: &NodeAddressPoolStatus,
    ) -> Result<(), ClusterError> {
        self.gate
            .pass(self.inner.write_pool_status(node_name, status))
            .await
    }

    async fn read_pool_statuses(&self) -> Result<Vec<PoolRead>, ClusterError> {
        self.gate.pass(self.inner.read_pool_statuses()).await
    }

    async fn read_pool_status(
        &self,
        node_name: &str,
    ) -> Result<Option<NodeAddressPoolStatus>, ClusterError> {
        self.gate.pass(self.inner.read_pool_status(node_name)).await
    }

    async fn publish_event(
        &self,
        object: &ObjectRef,
        severity: EventSeverity,
        reason: &str,
        note: &str,
    ) -> Result<(), ClusterError> {
        if self.gate.alive() {
            let mut events = self
                .gate
                .tally
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            events.push((object.uid.clone(), reason.to_string()));
        }
        self.gate
            .pass(self.inner.publish_event(object, severity, reason, note))
            .await
    }

    fn watch_nodes(&self) -> impl Stream<Item = WatchEvent<NodeView>> + Send + 'static {
        self.gate.stream(self.inner.watch_nodes())
    }

    fn watch_pods(&self) -> impl Stream<Item = WatchEvent<PodView>> + Send + 'static {
        self.gate.stream(self.inner.watch_pods())
    }

    fn watch_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Stream<Item = Option<ConfigMapView>> + Send + 'static {
        let gate = Arc::clone(&self.gate);
        self.gate
            .stream(self.inner.watch_config(namespace, name))
            .inspect(move |cm| gate.config_read(cm.as_ref()))
    }

    fn watch_foreign_ipam(&self) -> impl Stream<Item = Option<ConfigMapView>> + Send + 'static {
        self.gate.stream(self.inner.watch_foreign_ipam())
    }
}

/// EC2 as one process sees it.
pub struct GatedEc2 {
    pub gate: Arc<Gate>,
    pub inner: SimEc2,
}

impl Ec2Backend for GatedEc2 {
    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<InstanceInfo>, Ec2Error> {
        self.gate.pass(self.inner.describe_instances(ids)).await
    }

    async fn describe_subnets(&self, ids: &[String]) -> Result<Vec<SubnetInfo>, Ec2Error> {
        self.gate.pass(self.inner.describe_subnets(ids)).await
    }

    async fn describe_instance_types(
        &self,
        types: &[String],
    ) -> Result<Vec<InstanceTypeLimits>, Ec2Error> {
        self.gate
            .pass(self.inner.describe_instance_types(types))
            .await
    }

    async fn assign_private_ips(&self, eni: &str, count: u32) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        self.gate
            .mutate(self.inner.assign_private_ips(eni, count))
            .await
    }

    async fn assign_prefixes(&self, eni: &str, count: u32) -> Result<Vec<Ipv4Net>, Ec2Error> {
        self.gate
            .mutate(self.inner.assign_prefixes(eni, count))
            .await
    }

    async fn unassign_private_ips(&self, eni: &str, ips: &[Ipv4Addr]) -> Result<(), Ec2Error> {
        self.gate
            .mutate(self.inner.unassign_private_ips(eni, ips))
            .await
    }

    async fn unassign_prefixes(&self, eni: &str, prefixes: &[Ipv4Net]) -> Result<(), Ec2Error> {
        self.gate
            .mutate(self.inner.unassign_prefixes(eni, prefixes))
            .await
    }

    fn report_throttles_to(&self, sink: ThrottleSink) -> bool {
        self.inner.report_throttles_to(sink)
    }
}
