//! One task per managed node: it owns the node's pool and pods, so a node is reconciled by one
//! thing at a time and needs no locks; nodes run in parallel, bounded only by the EC2 client's
//! rate limiters. The loop: apply queued messages, run a pass (`pass`), wait for a message, the
//! EC2 call in flight, or the pool's next wake-up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
#[cfg(test)]
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::context::Ctx;
use super::record::Restored;
use super::state::{Ec2Done, NodeMsg, NodeWorker, Phase, StatusState, WorkerHandle};
use crate::ec2::Ec2Backend;
use crate::ipam::{Config, PodUid, Timestamp};
use crate::k8s::{Cluster, NodeView, PodView};

/// The largest node worker task's future built so far (its state, without the worker it
/// points to): the S4 test holds it small.
#[cfg(test)]
pub(crate) static RUN_FUTURE_BYTES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

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

impl<C: Cluster, B: Ec2Backend> NodeWorker<C, B> {
    pub(crate) fn spawn(
        ctx: Arc<Ctx<C, B>>,
        node: NodeView,
        pods: Vec<Arc<PodView>>,
        config: Arc<Config>,
        blocked: bool,
        restored: Option<Restored>,
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
        let object_read = (restored.as_ref())
            .and_then(|r| r.owner_uid.as_deref())
            .is_some_and(|owner| owner == node_uid);
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
            record_unread: restored.is_none(),
            restored: restored.unwrap_or_default(),
            ec2_task: None,
            ec2_urgency: Default::default(),
            status: StatusState {
                object_read,
                ..Default::default()
            },
            gauges: Default::default(),
            init_reported: !holds_readiness,
            pending_lost: Vec::new(),
            annotate_failures: 0,
            annotate_retry_at: None,
            retired: Arc::new(AtomicBool::new(false)),
            max_pods_checked: None,
            handover_pending: false,
        };
        let retired = Arc::clone(&worker.retired);
        for pod in pods {
            worker.pod_applied(pod, now);
        }
        // The worker goes to the heap and the task holds a pointer to it: an `async fn` taking
        // the worker (1.5 KB) by value kept it in its state twice (the argument, and the local
        // the awaits borrow), 3.2 KB per node's task against 264 bytes now; S4's peak RSS, 5,000
        // nodes, fell from 257 to 250-251 MB.
        let run = Box::new(worker).run(rx);
        #[cfg(test)]
        RUN_FUTURE_BYTES.fetch_max(std::mem::size_of_val(&run), Ordering::Relaxed);
        let task = tokio::spawn(run);
        WorkerHandle {
            node_uid,
            tx,
            task,
            retired,
        }
    }

    async fn run(mut self: Box<Self>, mut rx: mpsc::UnboundedReceiver<NodeMsg>) {
        'run: loop {
            // What is queued is applied before deciding: pods bound while the first describe ran
            // are in the first plan, so a burst gets one Assign sized for all of them.
            loop {
                if self.status.stepping_down {
                    break 'run;
                }
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
                    if self.status.stepping_down {
                        break;
                    }
                }
                Woke::Timer => self.ec2_task = task,
            }
        }
        Box::pin((*self).finish()).await;
    }

    /// On the way out: an EC2 call in flight is allowed to finish so its outcome is not lost
    /// from the status (the next leader re-describes anyway). A leader stepping down then
    /// writes the last status, listing nothing ahead: no pass runs any more, so no annotation
    /// can follow it, and the next leader need not hold the listed addresses for a cool-down
    /// (in a rolling upgrade, every new pod on a full node waited 60 s for them).
    async fn finish(mut self) {
        if let Some(task) = self.ec2_task.take()
            && let Ok(Ok(done)) = tokio::time::timeout(Duration::from_secs(15), task).await
        {
            self.apply_ec2(done).await;
        }
        if self.status.stepping_down {
            self.write_status(self.ctx.now()).await;
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
                if self.blocked && !blocked {
                    self.handover_pending = true;
                }
                self.blocked = blocked;
                self.take_over(now);
                self.release_gone(now);
            }
            NodeMsg::Resync(info) => {
                self.apply_resync(*info, now);
                self.release_gone(now);
            }
            NodeMsg::StepDown => self.status.stepping_down = true,
        }
    }

    /// The foreign IPAM let go of the node: what it left on the ENI is held until its late
    /// calls are over and a describe confirms it (`winipam_core::handover`). A pool still being
    /// built takes the hold as soon as it is ready.
    pub(crate) fn take_over(&mut self, now: Timestamp) {
        if !self.handover_pending || self.blocked {
            return;
        }
        if let Phase::Ready(ready) = &mut self.phase {
            self.handover_pending = false;
            let held = ready.pool.foreign_let_go(now);
            tracing::info!(node = %self.node.name, held,
                "the foreign IPAM let go: the addresses no pod names are held until its late calls are over and a describe confirms them");
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
}
