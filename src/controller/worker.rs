//! One task per managed node: it owns the node's pool and pods, so a node is reconciled by one
//! thing at a time and needs no locks; nodes run in parallel, bounded only by the EC2 client's
//! rate limiters. The loop: apply queued messages, reconcile, wait for a message, the EC2 call
//! in flight, or the pool's next wake-up.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::context::Ctx;
use super::ec2_ops::Ec2Done;
use crate::ec2::Ec2Backend;
use crate::ipam::{Config, InstanceInfo, NodePool, PodUid, SubnetInfo, Timestamp};
use crate::k8s::{Cluster, NodeView, PodView};

enum Woke {
    Message(Option<NodeMsg>),
    Ec2(Result<Box<Ec2Done>, tokio::task::JoinError>),
    Timer,
}

/// Waits for the EC2 call in flight; never resolves when there is none. The answer comes boxed:
/// the loop's state keeps room for what it waits for, in every idle worker.
async fn wait_for(
    task: &mut Option<JoinHandle<Ec2Done>>,
) -> Result<Box<Ec2Done>, tokio::task::JoinError> {
    match task {
        Some(task) => task.await.map(Box::new),
        None => std::future::pending().await,
    }
}

/// What the dispatcher tells a worker. Payloads are behind one pointer (16 bytes a message):
/// every worker's channel keeps blocks of 32 messages allocated, which for thousands of nodes
/// adds up. Pod views are shared with the dispatcher's index, which keeps the same view.
#[derive(Debug)]
pub(crate) enum NodeMsg {
    Node(Box<NodeView>),
    PodApplied(Arc<PodView>),
    PodDeleted(Box<PodUid>),
    /// The complete set of the node's bound pods (after a relist).
    #[allow(
        clippy::box_collection,
        reason = "one pointer keeps every message, queued or not, at 16 bytes"
    )]
    PodsResynced(Box<Vec<Arc<PodView>>>),
    Config(Arc<Config>),
    Blocked(bool),
    /// The periodic re-describe of the instance (SPEC 6.4).
    Resync(Box<InstanceInfo>),
}

/// What the previous leader left in the node's NodeAddressPool status (SPEC 5.3, 6.3).
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// Cool-down records: (address, end).
    pub(crate) cooldowns: Vec<(Ipv4Addr, Timestamp)>,
    /// Addresses pods held.
    pub(crate) used: Vec<Ipv4Addr>,
    /// Slots being given back to EC2 (/32s and /28s).
    pub(crate) releasing: Vec<ipnet::Ipv4Net>,
}

/// The dispatcher's handle on a worker.
pub(crate) struct WorkerHandle {
    pub(crate) node_uid: String,
    pub(crate) tx: mpsc::UnboundedSender<NodeMsg>,
    pub(crate) task: JoinHandle<()>,
    /// Set when the dispatcher stops the worker (node deleted or re-created).
    pub(crate) retired: Arc<AtomicBool>,
}

/// Where a node stands.
pub(crate) enum Phase {
    /// Not yet described (or the last try failed): retry at the given time.
    Init {
        retry_at: Timestamp,
        failures: u32,
    },
    Ready(Box<ReadyNode>),
    /// Not manageable until the Node object changes (no instance id, unknown type, instance gone).
    Parked {
        state: &'static str,
    },
}

/// A node whose pool is built.
pub(crate) struct ReadyNode {
    pub(crate) pool: NodePool,
    pub(crate) instance: InstanceInfo,
    pub(crate) subnet: SubnetInfo,
}

/// What the worker remembers of a pod beyond its view.
pub(crate) struct PodEntry {
    /// Shared with the dispatcher's index while the two agree (one copy per pod).
    pub(crate) view: Arc<PodView>,
    /// When the worker first saw it bound (start of time-to-IP).
    pub(crate) seen: Timestamp,
    /// The annotation value we wrote, kept across stale watch views.
    pub(crate) written: Option<Box<str>>,
    pub(crate) pending_reported: bool,
    pub(crate) annotation_reported: bool,
    /// An annotation write for this pod failed in a way that may have applied it: the
    /// address may have been seen, so it is never taken back without a cool-down.
    pub(crate) maybe_written: bool,
    /// An address we adopted from its annotation (so a changed view is noticed).
    pub(crate) adopted: Option<Ipv4Addr>,
}

pub(crate) struct NodeWorker<C, B: Ec2Backend> {
    pub(crate) ctx: Arc<Ctx<C, B>>,
    pub(crate) node: NodeView,
    pub(crate) pods: BTreeMap<PodUid, PodEntry>,
    pub(crate) phase: Phase,
    pub(crate) config: Arc<Config>,
    pub(crate) blocked: bool,
    /// What the NodeAddressPool status said at leadership start.
    pub(crate) restored: Restored,
    pub(crate) ec2_task: Option<JoinHandle<Ec2Done>>,
    pub(crate) status: super::status::StatusState,
    /// Gauge contributions of this node, to keep global gauges right as they change.
    pub(crate) gauges: super::status::NodeGauges,
    /// This worker does not (or no longer) hold readiness back.
    pub(crate) init_reported: bool,
    /// Addresses a resync found gone while pods held them, to report on the next pass.
    pub(crate) pending_lost: Vec<crate::ipam::LostAddress>,
    /// Annotation writes that failed in a row, and when the next pass retries them (nothing
    /// else may wake the worker: the pods are already known).
    pub(crate) annotate_failures: u32,
    pub(crate) annotate_retry_at: Option<Timestamp>,
    /// The dispatcher stopped this worker: a pass still running (a describe taking its time)
    /// writes no status, which would replace the records of the worker that took its place
    /// (chaos seed 173059).
    pub(crate) retired: Arc<AtomicBool>,
}

impl<C: Cluster, B: Ec2Backend> NodeWorker<C, B> {
    pub(crate) fn spawn(
        ctx: Arc<Ctx<C, B>>,
        node: NodeView,
        pods: Vec<Arc<PodView>>,
        config: Arc<Config>,
        blocked: bool,
        restored: Restored,
        holds_readiness: bool,
    ) -> WorkerHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let now = ctx.now();
        // Only the pools rebuilt on taking the lead hold readiness back; a node joining later
        // must not make the leader unready (its Service endpoint, the webhooks', would flap).
        if holds_readiness {
            ctx.init_started();
        }
        let node_uid = node.uid.clone();
        let mut worker = NodeWorker {
            ctx,
            node,
            pods: BTreeMap::new(),
            phase: Phase::Init {
                retry_at: now,
                failures: 0,
            },
            config,
            blocked,
            restored,
            ec2_task: None,
            status: Default::default(),
            gauges: Default::default(),
            init_reported: !holds_readiness,
            pending_lost: Vec::new(),
            annotate_failures: 0,
            annotate_retry_at: None,
            retired: Arc::new(AtomicBool::new(false)),
        };
        let retired = Arc::clone(&worker.retired);
        for pod in pods {
            worker.pod_applied(pod, now);
        }
        let task = tokio::spawn(worker.run(rx));
        WorkerHandle {
            node_uid,
            tx,
            task,
            retired,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<NodeMsg>) {
        'run: loop {
            // What is queued is applied before deciding: pods bound while the first describe ran
            // are in the first plan, so a burst gets one Assign sized for all of them.
            loop {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    // The dispatcher dropped us: node deleted, leadership lost or shutdown.
                    Err(mpsc::error::TryRecvError::Disconnected) => break 'run,
                }
            }
            let initialising = matches!(self.phase, Phase::Init { .. });
            // Boxed, like the EC2 answer and the finish below: the state of a pass (every await
            // in it) would otherwise be part of each idle worker's task, thousands of them.
            let wake = Box::pin(self.step()).await;
            if initialising && matches!(self.phase, Phase::Ready(_)) {
                // Just initialised: take in what arrived meanwhile, then reconcile.
                continue;
            }
            let sleep = self.sleep_for(wake);
            // The task is moved out for the wait so the handlers below may borrow `self`.
            let mut task = self.ec2_task.take();
            let woke = tokio::select! {
                // Fixed order (a simulated run is reproducible from its seed): an EC2 answer is
                // applied before more messages.
                biased;
                done = wait_for(&mut task) => Woke::Ec2(done),
                msg = rx.recv() => Woke::Message(msg),
                _ = tokio::time::sleep(sleep) => Woke::Timer,
            };
            match woke {
                Woke::Ec2(done) => match done {
                    Ok(done) => Box::pin(self.apply_ec2(*done)).await,
                    Err(err) => {
                        tracing::error!(node = %self.node.name, error = %err, "EC2 call task failed")
                    }
                },
                Woke::Message(msg) => {
                    self.ec2_task = task;
                    // The dispatcher dropped us: node deleted, leadership lost or shutdown.
                    let Some(msg) = msg else { break };
                    self.handle(msg);
                    while let Ok(msg) = rx.try_recv() {
                        self.handle(msg);
                    }
                }
                Woke::Timer => self.ec2_task = task,
            }
        }
        Box::pin(self.finish()).await;
    }

    /// On the way out: an EC2 call in flight is allowed to finish so its outcome is not lost
    /// from the status (the next leader re-describes anyway).
    async fn finish(mut self) {
        if let Some(task) = self.ec2_task.take()
            && let Ok(Ok(done)) = tokio::time::timeout(Duration::from_secs(15), task).await
        {
            self.apply_ec2(done).await;
        }
        if !self.init_reported {
            self.ctx.init_finished();
        }
        self.gauges.clear(&self.ctx.metrics);
        if self.gauges.had_series() {
            self.ctx.metrics.remove_node(&self.node.name);
        }
    }

    fn sleep_for(&self, wake: Option<Timestamp>) -> Duration {
        let now = self.ctx.now();
        match wake {
            Some(at) => at.since(now).max(Duration::from_millis(10)),
            // Nothing scheduled: sleep long, a message wakes us.
            None => Duration::from_secs(3600),
        }
    }

    fn handle(&mut self, msg: NodeMsg) {
        let now = self.ctx.now();
        match msg {
            NodeMsg::Node(view) => {
                let retry = matches!(self.phase, Phase::Parked { .. })
                    && (view.instance_id != self.node.instance_id
                        || view.instance_type != self.node.instance_type);
                self.node = *view;
                if retry {
                    self.phase = Phase::Init {
                        retry_at: now,
                        failures: 0,
                    };
                }
            }
            NodeMsg::PodApplied(view) => self.pod_applied(view, now),
            NodeMsg::PodDeleted(uid) => self.pod_deleted(&uid, now),
            NodeMsg::PodsResynced(views) => {
                let views = *views;
                let keep: std::collections::BTreeSet<&PodUid> =
                    views.iter().map(|v| &v.uid).collect();
                let gone: Vec<PodUid> = self
                    .pods
                    .keys()
                    .filter(|uid| !keep.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.pod_deleted(&uid, now);
                }
                for view in views {
                    self.pod_applied(view, now);
                }
            }
            NodeMsg::Config(config) => {
                if let Phase::Ready(ready) = &mut self.phase {
                    ready.pool.set_config((*config).clone());
                }
                self.config = config;
            }
            NodeMsg::Blocked(blocked) => {
                self.blocked = blocked;
                self.release_gone(now);
            }
            NodeMsg::Resync(info) => {
                self.apply_resync(*info, now);
                self.release_gone(now);
            }
        }
    }

    /// Pods deleted while releases were paused (foreign IPAM) still hold their address in the
    /// pool: they go to cool-down once releases resume (SPEC 6.4).
    fn release_gone(&mut self, now: Timestamp) {
        if self.blocked {
            return;
        }
        if let Phase::Ready(ready) = &mut self.phase {
            let pods = &self.pods;
            let freed = ready.pool.release_gone(|uid| pods.contains_key(uid), now);
            if freed > 0 {
                tracing::info!(node = %self.node.name, freed, "addresses of pods deleted while releases were paused cool down");
            }
        }
    }

    /// One pass: initialise if needed, then reconcile. Returns when to run again by itself.
    async fn step(&mut self) -> Option<Timestamp> {
        let now = self.ctx.now();
        let wake = match &self.phase {
            Phase::Init { retry_at, .. } if *retry_at > now => Some(*retry_at),
            Phase::Init { .. } => {
                self.init().await;
                match &self.phase {
                    Phase::Init { retry_at, .. } => Some(*retry_at),
                    // The caller applies queued messages, then reconciles on the next step.
                    _ => Some(now),
                }
            }
            Phase::Ready(_) => self.reconcile().await,
            Phase::Parked { .. } => None,
        };
        // Nodes not (yet) ready still say so in their NodeAddressPool.
        let wake = match self.phase {
            Phase::Ready(_) => wake,
            _ => {
                let due = self.write_status(self.ctx.now()).await;
                [wake, due].into_iter().flatten().min()
            }
        };
        if !self.init_reported && !matches!(self.phase, Phase::Init { failures: 0, .. }) {
            // Ready, parked, or failed once: this node no longer holds readiness back.
            self.init_reported = true;
            self.ctx.init_finished();
        }
        self.update_gauges();
        wake
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_small() {
        // Each worker's channel allocates blocks of 32 messages: one pointer and a tag each.
        assert_eq!(std::mem::size_of::<NodeMsg>(), 16);
    }
}
