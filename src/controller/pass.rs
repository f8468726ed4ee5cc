//! A node worker's pass, in order: what it reads, decides and writes. Every write that a restart
//! must not lose goes after the NodeAddressPool status that records it (`record::rules`):
//!
//! 1. Not yet managed: describe the instance and build the pool from the ENI and the previous
//!    leader's records (`init`), record every address annotations name, then cool down what the
//!    previous leader listed as used and no pod holds. Nodes that are not ready still write
//!    their status (saying why, and the previous leader's records, unchanged).
//! 2. Ready: drop the targets of a node on its way out (`leaving`); report addresses a resync
//!    found gone; record annotations (`pods`); hand out addresses to pods that need one (not
//!    while blocked: another controller owns Windows IPs).
//! 3. Status before annotation: a pod takes first an address the written status lists ahead
//!    (written before it arrived), whose annotation needs no status write; write the status
//!    only if it does not cover some address handed out, then write the annotations it covers
//!    (`pods`); the others wait for a later pass.
//! 4. Plan and start the EC2 call (`ec2_ops`), which goes first in the account's rate limit
//!    while pods wait for it; write the extended resource; compare the
//!    kubelet's max-pods with the IP capacity (`max_pods`); write the status
//!    (coalesced, but at once when it misses what a restart needs or the addresses listed
//!    ahead run low: off the pods' path, after their annotations); status before release: a
//!    release begun above goes out only now that a written status lists its slots.
//! 5. `IPAllocationPending` for pods waiting too long; the node's gauges.
//!
//! The pass returns when it wants to run again by itself (status write due, pending Event due,
//! the pool's next wake-up, an annotation retry).

use super::leaving::leaving;
use super::reasons;
use super::record::rules;
use super::state::{AnnotationWrite, NodeWorker, Phase};
use crate::ec2::Ec2Backend;
use crate::ipam::Timestamp;
use crate::k8s::{Cluster, EventSeverity, ObjectRef};

impl<C: Cluster, B: Ec2Backend> NodeWorker<C, B> {
    /// One pass: initialise if needed, then reconcile. Returns when to run again by itself.
    pub(crate) async fn step(&mut self) -> Option<Timestamp> {
        let now = self.ctx.now();
        let wake = match &self.phase {
            Phase::Init { retry_at, .. } if *retry_at > now => Some(*retry_at),
            Phase::Init { .. } => {
                if let Some(built_at) = self.init().await {
                    // Existing annotations are recorded before anything is handed out; then
                    // what the previous leader had in use and no pod holds any more cools down.
                    self.adopt_annotated(built_at).await;
                    self.cool_restored_used(built_at);
                    self.take_over(built_at);
                    let interval = self.ctx.settings.status_min_interval;
                    self.status.first_due = Some(built_at.plus(interval));
                }
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

    /// One reconcile pass of a ready node. Returns when to run again by itself.
    async fn reconcile(&mut self) -> Option<Timestamp> {
        let now = self.ctx.now();
        match &mut self.phase {
            Phase::Ready(ready) => ready.pool.advance(now),
            _ => return None,
        }
        self.follow_leaving().await;
        self.flush_lost().await;
        self.adopt_annotated(now).await;
        let waiting = if self.blocked {
            self.count_needing_address()
        } else {
            let (writes, waiting) = self.assign(now);
            let writes = self.listed_writes(writes, now).await;
            if !writes.is_empty() {
                self.annotate(writes).await;
            }
            waiting
        };
        let now = self.ctx.now();
        if let Phase::Ready(ready) = &mut self.phase {
            ready.pool.set_waiting(waiting);
            ready.pool.advance(now);
        }
        self.start_ec2_op(now);
        if waiting > 0 {
            // These pods wait for the Assign in flight, planned now or as an earlier refill.
            self.ec2_urgency.raise();
        }
        self.write_capacity().await;
        self.check_max_pods().await;
        let status_due = self.write_status(now).await;
        // A release begun above goes out once the status just written lists it.
        self.start_ec2_op(self.ctx.now());
        let pending_due = self.report_pending(now).await;
        let pool_due = match &self.phase {
            Phase::Ready(ready) => ready.pool.next_wakeup(now),
            _ => None,
        };
        // A retry time already past was this pass's (it set a new one if writes failed again).
        let retry_due = self.annotate_retry_at.filter(|at| *at > now);
        [status_due, pending_due, pool_due, retry_due]
            .into_iter()
            .flatten()
            .min()
    }

    /// A node on its way out keeps no target: its pool stops growing for warm or minimum and
    /// gives back what its pods do not use (issue 16). The pass that first sees it leave says
    /// so on the node, naming the signal; its capacity stays advertised (its pods keep theirs).
    /// While another controller owns Windows IPs nothing is released, so nothing is said
    /// either: the first pass after it lets go does both.
    async fn follow_leaving(&mut self) {
        let why = leaving(&self.node);
        let Phase::Ready(ready) = &mut self.phase else {
            return;
        };
        if self.blocked {
            return;
        }
        let was = ready.pool.leaving();
        ready.pool.set_leaving(why.is_some());
        match why {
            Some(why) if !was => {
                let note = format!(
                    "node is on its way out: {}; winipam keeps no warm or minimum addresses \
                     for it and releases the free ones as their cool-down ends (pods on it \
                     keep theirs); uncordoning restores the targets",
                    why.signal()
                );
                let node_ref = ObjectRef::node(&self.node);
                (self.ctx)
                    .event(
                        &node_ref,
                        EventSeverity::Normal,
                        reasons::NODE_LEAVING,
                        &note,
                    )
                    .await;
            }
            None if was => {
                tracing::info!(node = %self.node.name, "node no longer on its way out: its targets apply again");
            }
            _ => {}
        }
    }

    /// Status before annotation: the `writes` whose addresses a written status covers (ahead,
    /// or used by the same pod), after writing one if some are not covered. One status write covers every pod of the
    /// pass. If it fails, the pods keep their addresses in the pool and their annotations wait:
    /// the next pass (a retry of the status write is scheduled, see `write_status`) writes the
    /// status, then them.
    async fn listed_writes(
        &mut self,
        mut writes: Vec<AnnotationWrite>,
        now: Timestamp,
    ) -> Vec<AnnotationWrite> {
        if writes.is_empty() {
            return writes;
        }
        if writes.iter().any(|w| !self.may_annotate(w)) {
            // A pod waits for it: a new leader's first status goes now.
            self.status.first_due = None;
            self.write_status(now).await;
        }
        let before = writes.len();
        writes.retain(|w| self.may_annotate(w));
        if writes.len() < before {
            tracing::debug!(node = %self.node.name, held = before - writes.len(),
                "annotations wait for a status that lists their addresses");
        }
        writes
    }

    fn may_annotate(&self, write: &AnnotationWrite) -> bool {
        matches!(&self.phase, Phase::Ready(ready)
            if rules::may_annotate(self.status.published.as_ref(), &ready.pool, write.addr))
    }

    /// The extended resource, re-written whenever it is missing or differs (SPEC 2), unless
    /// another controller manages Windows IPs.
    async fn write_capacity(&mut self) {
        let Phase::Ready(ready) = &self.phase else {
            return;
        };
        // Blocked, the VPC Resource Controller owns the extended resource: writing ours too
        // would start a tug of war whenever the two values differ.
        if self.blocked {
            return;
        }
        let capacity = ready.pool.capacity(self.ctx.now());
        let wanted = capacity.to_string();
        if self.node.advertised_capacity.as_deref() == Some(wanted.as_str()) {
            return;
        }
        match self
            .ctx
            .cluster
            .set_node_capacity(&self.node.name, Some(capacity))
            .await
        {
            Ok(()) => self.node.advertised_capacity = Some(wanted),
            Err(err) => {
                tracing::warn!(node = %self.node.name, error = %err, "writing node capacity failed")
            }
        }
    }

    /// Per-node series and this node's share of the cluster-wide gauges.
    fn update_gauges(&mut self) {
        let now = self.ctx.now();
        let waiting = self.count_needing_address() as i64;
        let (pool, state) = match &self.phase {
            Phase::Ready(ready) => {
                let state = if self.blocked { "blocked" } else { "managed" };
                (Some(&ready.pool), state)
            }
            Phase::Parked { state } => (None, *state),
            Phase::Init { .. } => (None, "managed"),
        };
        let metrics = &self.ctx.metrics;
        (self.gauges).update(metrics, &self.node.name, pool, state, waiting, now);
    }
}
